//! Unpacking the release tar the controller sends, on a host.
//!
//! The agent often runs as root, and GNU tar run as root restores what the
//! archive says: a setuid or setgid bit from the controller's build (made
//! by any user there, or by a dependency's install script) becomes a
//! root-owned setuid program in the release, and a device entry becomes a
//! device node. So the release is unpacked here, in the agent (the `tar`
//! crate parses; no `tar` process per host), with the setuid and setgid
//! bits cleared and without devices and fifos, which no release needs.
//! Everything else is unpacked as `tar -x --no-same-owner` would: files,
//! directories, symlinks, hard links and long names; the modification
//! times of files, links and directories; the files owned by the user the
//! agent runs as; the permission bits as archived when that is root, and
//! otherwise without the bits its umask clears (and without the sticky
//! bit). A member whose path leaves the release (`..`) is left out, and a
//! leading `/` is dropped, as GNU tar does; one beneath a symlink of the
//! same archive, or at the path of one as a directory, is refused. What
//! was changed is returned, for the host to say so.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// What the unpacking changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    /// Entries whose setuid or setgid bit was cleared.
    pub cleared: Vec<PathBuf>,
    /// Devices and fifos left out.
    pub skipped: Vec<PathBuf>,
    /// Members left out whose path (or hard link target) leaves the
    /// release (`..`), or is longer than any the system takes.
    pub escaping: Vec<PathBuf>,
}

/// How permission bits are restored: GNU tar's rules for the user it runs
/// as (`--same-permissions` for root, the umask for everyone else).
#[derive(Clone, Copy, Debug)]
pub struct Permissions {
    /// Restore the archived bits (root).
    pub as_archived: bool,
    /// Else, the bits to clear.
    pub umask: u32,
}

impl Permissions {
    /// This process's: root restores what is archived; anyone else clears
    /// what the umask says (read from `/proc/self/status`, as setting it to
    /// read it would change it for the agent's other threads; 022 where
    /// the kernel does not say).
    pub fn of_this_process() -> Permissions {
        let umask = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
                u32::from_str_radix(value.trim(), 8).ok()
            })
            .unwrap_or(0o022);
        Permissions {
            as_archived: nix::unistd::geteuid().is_root(),
            umask,
        }
    }

    /// The bits a member archived with `mode` gets, its setuid and setgid
    /// bits cleared.
    fn of(self, mode: u32) -> u32 {
        if self.as_archived {
            mode & 0o7777 & !0o6000
        } else {
            mode & 0o777 & !self.umask
        }
    }
}

/// Unpack the tar on `input` into the directory `dst`, without setuid or
/// setgid bits, devices or fifos.
pub fn unpack(input: impl Read, dst: &Path, permissions: Permissions) -> io::Result<Filtered> {
    let mut archive = tar::Archive::new(input);
    let mut filtered = Filtered::default();
    let mut tree = Tree::new(dst);
    // Directories get their bits and times once everything is in them
    // (one archived read-only still takes its files), deepest first.
    let mut directories: Vec<(PathBuf, u32, Option<u64>)> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        let path = entry.path()?.into_owned();
        match kind {
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                filtered.skipped.push(path);
                continue;
            }
            // Read by the parser into the entries they describe.
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => continue,
            _ => {}
        }
        let Some(target) = inside(dst, &path) else {
            filtered.escaping.push(path);
            continue;
        };
        let archived = entry.header().mode()?;
        if archived & 0o6000 != 0 {
            filtered.cleared.push(path.clone());
        }
        let mode = permissions.of(archived);
        let mtime = entry.header().mtime().ok();
        let located = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if kind == EntryType::Directory {
            tree.directory(&target).map_err(located)?;
            directories.push((target, mode, mtime));
            continue;
        }
        tree.directory(target.parent().unwrap_or(dst))
            .map_err(located)?;
        if kind == EntryType::Link {
            let name = entry.link_name()?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the hard link {} has no target", path.display()),
                )
            })?;
            let Some(source) = inside(dst, &name).filter(|s| *s != dst) else {
                filtered.escaping.push(path);
                continue;
            };
            tree.directory(source.parent().unwrap_or(dst))
                .map_err(located)?;
            fs::hard_link(&source, &target).map_err(located)?;
            continue;
        }
        // Files (any type not named above, as POSIX says) and symlinks; a
        // file's bits as computed, and the time as archived (an mtime of
        // 0 stays 0).
        entry.set_preserve_permissions(true);
        entry.set_mask(0o7777 & !mode);
        entry.set_preserve_mtime(false);
        entry.unpack(&target).map_err(located)?;
        set_time(&target, mtime).map_err(located)?;
    }
    directories.sort_by(|a, b| b.0.cmp(&a.0));
    for (dir, mode, mtime) in directories {
        use std::os::unix::fs::PermissionsExt;
        // Still the directory made or checked above: a later member of its
        // name failed (a directory is never replaced), so this follows no
        // link.
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
        set_time(&dir, mtime)?;
    }
    Ok(filtered)
}

/// The directories of the release being unpacked that are known to be
/// directories, not symlinks: every member is written beneath those only,
/// so none is written through a link (a symlink to `/etc`, or a hard link
/// to that symlink, then a member `<it>/passwd`), which GNU tar, making
/// such links last, never does either.
struct Tree {
    root: PathBuf,
    known: HashSet<PathBuf>,
}

impl Tree {
    fn new(dst: &Path) -> Tree {
        Tree {
            root: dst.to_path_buf(),
            known: HashSet::from([dst.to_path_buf()]),
        }
    }

    /// Make `dir` (inside the release) a directory, or find it one, its
    /// parents first; a symlink or a file there is an error.
    fn directory(&mut self, dir: &Path) -> io::Result<()> {
        if self.known.contains(dir) {
            return Ok(());
        }
        let Some(relative) = dir.strip_prefix(&self.root).ok() else {
            return Err(io::Error::other(format!(
                "{} is outside the release",
                dir.display()
            )));
        };
        let mut walked = self.root.clone();
        for part in relative.components() {
            walked.push(part);
            if self.known.contains(&walked) {
                continue;
            }
            match fs::symlink_metadata(&walked) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} is a symlink or a file of the same archive, not a directory: \
                             nothing is written through it",
                            walked.display()
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&walked)?,
                Err(e) => return Err(e),
            }
            self.known.insert(walked.clone());
        }
        Ok(())
    }
}

/// Set the modification (and access) time of `path`, not of what a
/// symlink there points to.
fn set_time(path: &Path, mtime: Option<u64>) -> io::Result<()> {
    let Some(mtime) = mtime else {
        return Ok(());
    };
    let time = nix::sys::time::TimeSpec::new(mtime as i64, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &time,
        &time,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Where member `path` goes under `dst`: `None` when it would leave it
/// (a `..`), or is longer than any path the system takes (4096 bytes); a
/// leading `/` and `.` parts are dropped.
fn inside(dst: &Path, path: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().len() > 4096 {
        return None;
    }
    let mut target = dst.to_path_buf();
    for part in path.components() {
        match part {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return None,
            Component::Normal(part) => target.push(part),
        }
    }
    Some(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::process::Command;

    fn header(kind: EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h
    }

    const ROOT: Permissions = Permissions {
        as_archived: true,
        umask: 0,
    };

    #[test]
    fn setuid_bits_devices_fifos_and_escapes_do_not_pass_the_rest_does() {
        let long = format!("{}/file", "d".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut header(EntryType::Directory, 0o2755, 0), "bin", &[][..])
            .unwrap();
        b.append_data(
            &mut header(EntryType::Regular, 0o4755, 2),
            "bin/su",
            &b"x\n"[..],
        )
        .unwrap();
        b.append_data(
            &mut header(EntryType::Regular, 0o644, 3),
            &long,
            &b"abc"[..],
        )
        .unwrap();
        b.append_data(&mut header(EntryType::Char, 0o666, 0), "null", &[][..])
            .unwrap();
        b.append_data(&mut header(EntryType::Fifo, 0o644, 0), "pipe", &[][..])
            .unwrap();
        b.append_link(&mut header(EntryType::Symlink, 0o777, 0), "link", "bin/su")
            .unwrap();
        // The builder refuses `..` in a path: written into the header.
        let mut escape = header(EntryType::Regular, 0o644, 1);
        escape.as_old_mut().name[..12].copy_from_slice(b"../escape.tx");
        escape.set_cksum();
        b.append(&escape, &b"e"[..]).unwrap();
        // Deeper than any path the system takes: left out, at once.
        let deep = "a/".repeat(2500) + "deep";
        b.append_data(&mut header(EntryType::Regular, 0o644, 1), &deep, &b"d"[..])
            .unwrap();
        let tar = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("release");
        fs::create_dir(&dst).unwrap();
        let filtered = unpack(&tar[..], &dst, ROOT).unwrap();
        assert_eq!(
            filtered.cleared,
            [PathBuf::from("bin"), PathBuf::from("bin/su")]
        );
        assert_eq!(
            filtered.skipped,
            [PathBuf::from("null"), PathBuf::from("pipe")]
        );
        let mode = |p: &str| fs::symlink_metadata(dst.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("bin"), 0o755);
        assert_eq!(mode("bin/su"), 0o755);
        assert_eq!(fs::read_to_string(dst.join("bin/su")).unwrap(), "x\n");
        assert_eq!(fs::read_to_string(dst.join(&long)).unwrap(), "abc");
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            Path::new("bin/su")
        );
        assert_eq!(
            filtered.escaping,
            [PathBuf::from("../escape.tx"), PathBuf::from(&deep)]
        );
        assert!(!dst.join("a").exists());
        for gone in ["null", "pipe", "../escape.tx"] {
            assert!(fs::symlink_metadata(dst.join(gone)).is_err(), "{gone}");
        }
    }

    /// A symlink to a directory outside, then a member beneath it, whether
    /// through the link itself or through a hard link to it; or a
    /// directory member of the link's name, whose bits would be set on
    /// what it points to.
    #[test]
    fn nothing_is_written_through_a_symlink_of_the_same_archive() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
        let dst = dir.path().join("release");
        type Then = fn(&mut tar::Builder<Vec<u8>>);
        let cases: [(&str, Then); 4] = [
            ("s/planted", |b| {
                b.append_data(
                    &mut header(EntryType::Regular, 0o644, 1),
                    "s/planted",
                    &b"p"[..],
                )
                .unwrap();
            }),
            ("s/deeper/planted", |b| {
                b.append_data(
                    &mut header(EntryType::Regular, 0o644, 1),
                    "s/deeper/planted",
                    &b"p"[..],
                )
                .unwrap();
            }),
            ("hard/planted", |b| {
                b.append_link(&mut header(EntryType::Link, 0o777, 0), "hard", "s")
                    .unwrap();
                b.append_data(
                    &mut header(EntryType::Regular, 0o644, 1),
                    "hard/planted",
                    &b"p"[..],
                )
                .unwrap();
            }),
            ("s", |b| {
                b.append_data(&mut header(EntryType::Directory, 0o777, 0), "s", &[][..])
                    .unwrap();
            }),
        ];
        for (member, then) in cases {
            let _ = fs::remove_dir_all(&dst);
            fs::create_dir(&dst).unwrap();
            let mut b = tar::Builder::new(Vec::new());
            b.append_link(&mut header(EntryType::Symlink, 0o777, 0), "s", &outside)
                .unwrap();
            then(&mut b);
            let tar = b.into_inner().unwrap();
            let refused = unpack(&tar[..], &dst, ROOT).unwrap_err();
            assert!(
                refused.to_string().contains(member)
                    && refused
                        .to_string()
                        .contains("nothing is written through it"),
                "{member}: {refused}"
            );
            assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{member}");
            let mode = fs::metadata(&outside).unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o755, "{member}");
        }
    }

    /// Every member of `root`: its path, kind, permission bits, time,
    /// content or target, and which earlier member it is a hard link of.
    fn listing(root: &Path) -> Vec<String> {
        let mut seen: Vec<(u64, String)> = Vec::new();
        let mut out = Vec::new();
        for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
            let entry = entry.unwrap();
            let meta = entry.path().symlink_metadata().unwrap();
            let name = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string();
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(entry.path()).unwrap().display())
            } else if meta.is_dir() {
                format!("dir {:o} {}", meta.mode() & 0o7777, meta.mtime())
            } else {
                let same = seen.iter().find(|(ino, _)| *ino == meta.ino());
                let what = format!(
                    "file {:o} {} {:?} {}",
                    meta.mode() & 0o7777,
                    meta.mtime(),
                    fs::read_to_string(entry.path()).unwrap(),
                    same.map_or("", |(_, first)| first.as_str())
                );
                seen.push((meta.ino(), name.clone()));
                what
            };
            out.push(format!("{name}: {what}"));
        }
        out
    }

    /// As the controller packs a release (`tar -c -f - -C <tree> .`), a tree
    /// with what releases hold; unpacked by GNU tar with `umask`, as root
    /// (`--same-permissions` or not), and here.
    fn against_gnu_tar(gnu_args: &[&str], umask: u32, permissions: Permissions) {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("lib/deep/er")).unwrap();
        fs::create_dir_all(tree.join("private")).unwrap();
        fs::create_dir_all(tree.join("tmp")).unwrap();
        fs::write(tree.join("lib/deep/er/a.js"), "a").unwrap();
        fs::write(tree.join("private/key"), "k").unwrap();
        fs::write(tree.join("run.sh"), "#!/bin/sh").unwrap();
        fs::write(tree.join("config"), "c").unwrap();
        fs::hard_link(tree.join("config"), tree.join("config.link")).unwrap();
        std::os::unix::fs::symlink("lib/deep", tree.join("shortcut")).unwrap();
        std::os::unix::fs::symlink("../outside", tree.join("dangling")).unwrap();
        for (path, mode) in [
            ("run.sh", 0o755),
            ("config", 0o640),
            ("private/key", 0o600),
            ("private", 0o700),
            ("tmp", 0o1777),
            ("lib/deep", 0o750),
            ("", 0o755),
        ] {
            fs::set_permissions(tree.join(path), fs::Permissions::from_mode(mode)).unwrap();
        }
        let touched = Command::new("find")
            .arg(&tree)
            .args([
                "-exec",
                "touch",
                "-h",
                "-d",
                "2021-03-04 05:06:07",
                "{}",
                "+",
            ])
            .status()
            .unwrap();
        assert!(touched.success());
        // A build made reproducible (SOURCE_DATE_EPOCH=0).
        fs::write(tree.join("epoch"), "0").unwrap();
        let touched = Command::new("touch")
            .args(["-d", "@0"])
            .arg(tree.join("epoch"))
            .status()
            .unwrap();
        assert!(touched.success());
        let archive = dir.path().join("release.tar");
        let packed = Command::new("tar")
            .arg("-c")
            .arg("-f")
            .arg(&archive)
            .arg("-C")
            .arg(&tree)
            .arg(".")
            .status()
            .unwrap();
        assert!(packed.success());

        let gnu = dir.path().join("gnu");
        let ours = dir.path().join("ours");
        fs::create_dir(&gnu).unwrap();
        fs::create_dir(&ours).unwrap();
        let unpacked = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask:03o} && exec tar \"$@\""))
            .arg("sh")
            .args(["-x", "-f"])
            .arg(&archive)
            .arg("--no-same-owner")
            .args(gnu_args)
            .arg("-C")
            .arg(&gnu)
            .status()
            .unwrap();
        assert!(unpacked.success());
        let filtered = unpack(fs::File::open(&archive).unwrap(), &ours, permissions).unwrap();
        assert_eq!(filtered, Filtered::default());
        assert_eq!(listing(&ours), listing(&gnu));
    }

    #[test]
    fn as_root_it_unpacks_what_gnu_tar_unpacks() {
        against_gnu_tar(&["--same-permissions"], 0o022, ROOT);
    }

    #[test]
    fn as_another_user_it_clears_what_the_umask_says_as_gnu_tar_does() {
        against_gnu_tar(
            &["--no-same-permissions"],
            0o027,
            Permissions {
                as_archived: false,
                umask: 0o027,
            },
        );
    }

    #[test]
    fn the_umask_is_this_process_s() {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        let umask = u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap();
        assert_eq!(Permissions::of_this_process().umask, umask);
    }
}
