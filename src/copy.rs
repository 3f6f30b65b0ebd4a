//! Copies of trees that cost nothing where the filesystem allows it.
//!
//! Every file is cloned with `FICLONE` (a reflink: XFS made with reflink,
//! btrfs, bcachefs), so the copy shares the original's data extents until
//! either is written, which then gets blocks of its own: a clone is a
//! copy, and writing into a new release never changes an older one.
//! Where the filesystem cannot clone, `copy_file_range(2)` copies inside
//! the kernel; where that is refused too, a plain read and write. What
//! works is decided once per pair of filesystems (the first file tells)
//! and said once, by the caller, from [`Copier::notes`].
//!
//! Never hardlinks: two releases sharing an inode share its mode and
//! mtime, and an in-place write into one corrupts the other (read-only
//! modes protect nothing from a hook running as root).
//!
//! Modes, symlinks and modification times are kept; sockets, fifos and
//! devices are not part of an app's code and are skipped.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use crate::error::{Error, IoContext, Result};
use crate::interrupt;

/// How one file's bytes are copied, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// `FICLONE`: no data written, extents shared until written.
    Clone,
    /// `copy_file_range(2)`: copied inside the kernel.
    Kernel,
    /// read(2) and write(2).
    Plain,
}

impl Method {
    pub fn describe(self) -> &'static str {
        match self {
            Method::Clone => "cloned (reflink)",
            Method::Kernel => "copied in the kernel (copy_file_range)",
            Method::Plain => "copied",
        }
    }
}

/// The errors that mean "this filesystem cannot do it", not "this copy
/// failed": the next method is tried instead.
fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(|code| {
        matches!(
            Errno::from_raw(code),
            Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::EINVAL | Errno::EXDEV | Errno::ENOSYS
        )
    })
}

/// Copies files and trees, remembering per pair of filesystems (device
/// of the source, device of the destination) which method works.
#[derive(Debug, Default)]
pub struct Copier {
    methods: HashMap<(u64, u64), Method>,
    notes: Vec<String>,
    /// How many files each method copied, best method first.
    pub counts: std::collections::BTreeMap<Method, u64>,
}

impl Copier {
    pub fn new() -> Copier {
        Copier::default()
    }

    /// Copy the tree under `src` into `dest`, an existing empty directory.
    /// Checks for an interrupt as it goes.
    pub fn tree(&mut self, src: &Path, dest: &Path) -> Result<()> {
        let mut checked = Instant::now();
        // Directory times are set last, deepest first: creating an entry
        // in a directory changes its mtime.
        let mut dirs = Vec::new();
        // Every file is created in this fresh tree: on its filesystem.
        let dest_dev = fs::metadata(dest).with_path("could not read", dest)?.dev();
        for entry in walkdir::WalkDir::new(src).min_depth(1).follow_links(false) {
            let entry = entry.map_err(|e| {
                Error::internal(format!("could not read {}", src.display())).cause(e)
            })?;
            let rel = entry
                .path()
                .strip_prefix(src)
                .expect("walkdir stays below its root");
            let to = dest.join(rel);
            let meta = entry.metadata().map_err(|e| {
                Error::internal(format!("could not read {}", entry.path().display())).cause(e)
            })?;
            let kind = entry.file_type();
            if kind.is_symlink() {
                let target =
                    fs::read_link(entry.path()).with_path("could not read link", entry.path())?;
                symlink(&target, &to).with_path("could not create link", &to)?;
                set_times(&to, &meta, UtimensatFlags::NoFollowSymlink)
                    .with_path("could not set the time of", &to)?;
            } else if kind.is_dir() {
                // Writable by its owner while it is filled: a 0555
                // directory gets its mode with its time, at the end.
                fs::create_dir(&to).with_path("could not create", &to)?;
                fs::set_permissions(&to, fs::Permissions::from_mode(0o700))
                    .with_path("could not set permissions on", &to)?;
                dirs.push((to, meta));
            } else if kind.is_file() {
                self.copy(entry.path(), &meta, &to, dest_dev)?;
            }
            if checked.elapsed() > Duration::from_millis(50) {
                checked = Instant::now();
                interrupt::check()?;
            }
        }
        for (dir, meta) in dirs.iter().rev() {
            fs::set_permissions(dir, meta.permissions())
                .with_path("could not set permissions on", dir)?;
            set_times(dir, meta, UtimensatFlags::FollowSymlink)
                .with_path("could not set the time of", dir)?;
        }
        Ok(())
    }

    /// Copy one regular file to `dest` (which must not exist), keeping its
    /// mode and modification time. The caller already knows the source's
    /// metadata and the destination's device. Mode and times are set
    /// through the open descriptor: a 30,000-file tree is copied with
    /// about five system calls a file, no more than `cp -a` makes.
    fn copy(&mut self, src: &Path, meta: &fs::Metadata, dest: &Path, dest_dev: u64) -> Result<()> {
        let mut from = File::open(src).with_path("could not open", src)?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .with_path("could not create", dest)?;
        let key = (meta.dev(), dest_dev);
        let mut method = self.methods.get(&key).copied().unwrap_or(Method::Clone);
        loop {
            let tried = match method {
                Method::Clone => clone(&from, &to),
                Method::Kernel => kernel_copy(&from, &to, meta.len()),
                Method::Plain => plain_copy(&mut from, &mut to),
            };
            match tried {
                Ok(()) => break,
                Err(e) if method != Method::Plain && unsupported(&e) => {
                    let next = match method {
                        Method::Clone => Method::Kernel,
                        _ => Method::Plain,
                    };
                    self.note(method, &e);
                    self.methods.insert(key, next);
                    method = next;
                }
                Err(e) => return Err(Error::io("could not copy to", dest, e)),
            }
        }
        self.methods.insert(key, method);
        *self.counts.entry(method).or_default() += 1;
        to.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))
            .with_path("could not set permissions on", dest)?;
        let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
        let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
        nix::sys::stat::futimens(&to, &atime, &mtime)
            .map_err(io::Error::from)
            .with_path("could not set the time of", dest)?;
        Ok(())
    }

    fn note(&mut self, failed: Method, why: &io::Error) {
        self.notes.push(format!(
            "{} is not possible there: {why}",
            match failed {
                Method::Clone => "a reflink clone",
                Method::Kernel => "copy_file_range",
                Method::Plain => "a plain copy",
            }
        ));
    }

    /// One line for the whole copy: how many files, how, and why not
    /// better.
    pub fn summary(&self) -> String {
        let total: u64 = self.counts.values().sum();
        let files = if total == 1 { "file" } else { "files" };
        let how = match self.counts.len() {
            0 => String::new(),
            1 => format!(", {}", self.counts.keys().next().unwrap().describe()),
            _ => {
                let parts: Vec<String> = self
                    .counts
                    .iter()
                    .map(|(method, n)| format!("{n} {}", method.describe()))
                    .collect();
                format!(": {}", parts.join(", "))
            }
        };
        let why: String = self.notes.iter().map(|n| format!("; {n}")).collect();
        format!("{total} {files}{how}{why}")
    }
}

/// `FICLONE`: `to` shares `from`'s extents.
fn clone(from: &File, to: &File) -> io::Result<()> {
    // SAFETY: FICLONE reads one int (the source descriptor, open for the
    // whole call) and writes nothing through a pointer.
    let rc = unsafe { nix::libc::ioctl(to.as_raw_fd(), nix::libc::FICLONE, from.as_raw_fd()) };
    Errno::result(rc).map(drop).map_err(io::Error::from)
}

/// `copy_file_range(2)` until `len` bytes (or the end) were copied. Falls
/// back only before the first byte moved.
fn kernel_copy(from: &File, to: &File, len: u64) -> io::Result<()> {
    let mut copied: u64 = 0;
    loop {
        let chunk = (len.saturating_sub(copied)).clamp(1 << 20, 1 << 30) as usize;
        match nix::fcntl::copy_file_range(from, None, to, None, chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => copied += n as u64,
            Err(Errno::EINTR) => continue,
            Err(e) if copied == 0 => return Err(e.into()),
            // Half copied: not a question of support any more.
            Err(e) if unsupported(&e.into()) => return Err(Errno::EIO.into()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// read(2) and write(2), in 256 KiB pieces.
fn plain_copy(from: &mut File, to: &mut File) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

/// Give `path` the access and modification times of `meta`.
fn set_times(path: &Path, meta: &fs::Metadata, follow: UtimensatFlags) -> io::Result<()> {
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(nix::fcntl::AT_FDCWD, path, &atime, &mtime, follow).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_keeps_modes_links_and_times_and_the_copy_is_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/run"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(src.join("bin/run"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(src.join("data"), vec![7u8; 300_000]).unwrap();
        symlink("bin/run", src.join("link")).unwrap();
        fs::set_permissions(src.join("bin"), fs::Permissions::from_mode(0o710)).unwrap();
        let old = TimeSpec::new(1_600_000_000, 0);
        for p in ["data", "bin/run", "bin"] {
            utimensat(
                nix::fcntl::AT_FDCWD,
                &src.join(p),
                &old,
                &old,
                UtimensatFlags::FollowSymlink,
            )
            .unwrap();
        }
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let mut copier = Copier::new();
        copier.tree(&src, &dest).unwrap();

        let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("bin/run"), 0o750);
        assert_eq!(mode("bin"), 0o710);
        assert_eq!(
            fs::read_link(dest.join("link")).unwrap(),
            Path::new("bin/run")
        );
        for p in ["data", "bin/run", "bin"] {
            assert_eq!(
                fs::metadata(dest.join(p)).unwrap().mtime(),
                1_600_000_000,
                "{p}"
            );
        }
        // A copy, whatever the method: writing it leaves the original.
        // (A 0710 directory was filled before it got its mode: see the
        // read-only test below for a user root's powers do not hide.)
        fs::write(dest.join("data"), "changed").unwrap();
        assert_eq!(fs::read(src.join("data")).unwrap(), vec![7u8; 300_000]);
    }

    #[test]
    fn a_method_the_filesystem_refuses_falls_back() {
        for e in [
            Errno::EOPNOTSUPP,
            Errno::ENOTTY,
            Errno::EINVAL,
            Errno::EXDEV,
        ] {
            assert!(unsupported(&e.into()), "{e}");
        }
        assert!(!unsupported(&Errno::ENOSPC.into()));
        assert!(!unsupported(&Errno::EIO.into()));
    }
}
