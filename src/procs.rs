//! Which running processes still live in which release (via `/proc`).
//!
//! Process managers often resolve `current` once, at start, and keep running
//! the old release after a reload; a process whose working directory or
//! executable lies inside `releases/<id>` is still using that release. After
//! a reload shipit names such processes, and prune never deletes a release
//! that one of them uses. A process shipit may not inspect (another
//! user's, when shipit is not root) could be using any release: prune
//! treats that as a reason to keep, never as "not in use".

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};

use crate::layout::{Layout, ReleaseId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub name: String,
    /// How it uses the release: only as its working directory, or by
    /// running an executable from it.
    pub via: Via,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Only its working directory lies in the release: it may run code
    /// from anywhere (a process manager's daemon started from inside a
    /// release serves nothing itself).
    WorkingDirectory,
    /// Its executable lies in the release: it runs that release's code.
    Executable,
}

/// What a look through `/proc` found.
#[derive(Debug, Default)]
pub struct Usage {
    /// Releases in use, with the processes using them.
    pub used: BTreeMap<ReleaseId, Vec<Proc>>,
    /// Processes whose working directory or executable could not be read
    /// (other users' processes, when shipit is not root): any of them may
    /// run from any release.
    pub hidden: Vec<Hidden>,
}

/// A process that could not be inspected, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hidden {
    pub pid: u32,
    pub name: String,
    pub user: String,
    pub error: String,
    /// When it started, if known.
    pub started: Option<DateTime<Utc>>,
}

impl Hidden {
    /// Could this process run from `release`? A process started before the
    /// release existed can get there only by a later chdir or exec, which
    /// app processes do not do (process managers start new processes in
    /// the release); one started after it, or at an unknown time, may.
    /// The release id is the time its deploy began, before its directory
    /// existed, so the comparison errs on the side of keeping.
    pub fn may_use(&self, release: &ReleaseId) -> bool {
        self.started
            .is_none_or(|started| started + chrono::TimeDelta::seconds(2) >= release.time())
    }
}

/// Releases in use, with the processes using them. Processes we may not
/// inspect are not in this map: callers that must not act on a guess (prune)
/// use [`scan`] and look at [`Usage::hidden`].
pub fn releases_in_use(layout: &Layout) -> BTreeMap<ReleaseId, Vec<Proc>> {
    scan(layout).used
}

/// Look at every process in `/proc`.
pub fn scan(layout: &Layout) -> Usage {
    let Ok(releases) = fs::canonicalize(layout.releases()) else {
        return Usage::default();
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return Usage::default();
    };
    let pids = entries.flatten().filter_map(|entry| {
        entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
    });
    scan_with(&releases, pids, &RealProc)
}

/// What [`scan_with`] reads about a process; `/proc` in production, a fake
/// in tests (an unreadable `/proc/<pid>/cwd` needs another user to set up).
trait ProcSource {
    /// `/proc/<pid>/<link>` (`cwd`, `exe`).
    fn link(&self, pid: u32, link: &str) -> io::Result<PathBuf>;
    fn name(&self, pid: u32) -> String;
    fn user(&self, pid: u32) -> String;
    /// Kernel threads have no cwd or exe of their own in a release, and
    /// are unreadable to everyone but root: never a reason to hold back.
    fn is_kernel_thread(&self, pid: u32) -> bool;
    fn started(&self, pid: u32) -> Option<DateTime<Utc>>;
}

struct RealProc;

impl ProcSource for RealProc {
    fn link(&self, pid: u32, link: &str) -> io::Result<PathBuf> {
        fs::read_link(format!("/proc/{pid}/{link}"))
    }

    fn name(&self, pid: u32) -> String {
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    fn user(&self, pid: u32) -> String {
        let uid = fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|ids| ids.split_whitespace().nth(1))
                    .and_then(|euid| euid.parse::<u32>().ok())
            });
        match uid {
            Some(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map_or_else(|| format!("uid {uid}"), |u| u.name),
            None => "an unknown user".into(),
        }
    }

    fn is_kernel_thread(&self, pid: u32) -> bool {
        const PF_KTHREAD: u64 = 0x0020_0000;
        // Field 9 (flags), counted after the parenthesised command name,
        // which may itself contain spaces.
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let (_, rest) = stat.rsplit_once(") ")?;
                rest.split_whitespace().nth(6)?.parse::<u64>().ok()
            })
            .is_some_and(|flags| flags & PF_KTHREAD != 0)
    }

    fn started(&self, pid: u32) -> Option<DateTime<Utc>> {
        // USER_HZ, the unit of starttime, is 100 on every architecture
        // shipit builds for (x86, arm, riscv); it is part of the ABI.
        const TICKS: i64 = 100;
        let boot: i64 = fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let ticks: i64 = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let (_, rest) = stat.rsplit_once(") ")?;
                // Field 22, counted from the field after the name (3).
                rest.split_whitespace().nth(19)?.parse().ok()
            })?;
        DateTime::from_timestamp(boot + ticks / TICKS, 0)
    }
}

fn scan_with(
    releases: &Path,
    pids: impl IntoIterator<Item = u32>,
    source: &impl ProcSource,
) -> Usage {
    let mut usage = Usage::default();
    for pid in pids {
        let mut ids: Vec<(ReleaseId, Via)> = Vec::new();
        let mut unreadable: Option<(&str, io::Error)> = None;
        for (link, via) in [("cwd", Via::WorkingDirectory), ("exe", Via::Executable)] {
            match source.link(pid, link) {
                Ok(path) => {
                    if let Some(id) = release_of(releases, &path) {
                        // The executable's release wins over the cwd's.
                        ids.retain(|(seen, _)| *seen != id);
                        ids.push((id, via));
                    }
                }
                // Gone since the listing, or no executable (a zombie).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => unreadable = unreadable.or(Some((link, e))),
            }
        }
        if let Some((link, error)) = unreadable
            && !source.is_kernel_thread(pid)
        {
            usage.hidden.push(Hidden {
                pid,
                name: source.name(pid),
                user: source.user(pid),
                error: format!("/proc/{pid}/{link}: {error}"),
                started: source.started(pid),
            });
        }
        if ids.is_empty() {
            continue;
        }
        let name = source.name(pid);
        for (id, via) in ids {
            usage.used.entry(id).or_default().push(Proc {
                pid,
                name: name.clone(),
                via,
            });
        }
    }
    usage
}

/// A file, as the kernel names it: device and inode. A descriptor names the
/// same file however it was opened, and after the path was renamed or
/// removed.
pub type FileId = (u64, u64);

pub fn file_id(meta: &fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// A process that has a file open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opener {
    pub pid: u32,
    pub user: String,
    /// Its command line (`/proc/<pid>/cmdline`), or `[comm]` without one.
    pub command: String,
    /// It runs the same executable as this process (a shipit, or a fork of
    /// one that has not exec'd yet).
    pub is_shipit: bool,
    /// A descriptor it has of the file holds a flock(2) on it: the kernel
    /// lists the locks of an open file in `/proc/<pid>/fdinfo/<fd>`. A
    /// process that opened the file only to wait for the lock has none.
    pub holds_flock: bool,
    pub started: Option<DateTime<Utc>>,
}

/// Every process but this one with one of `files` open, by file: a look at
/// each `/proc/<pid>/fd`, as `lsof` does. `/proc/locks` would not do for a
/// flock: it keeps the pid that took the lock, which may have exited while
/// a child that inherited the descriptor still holds it. Processes whose
/// descriptors cannot be read (another user's, when shipit is not root) are
/// not seen.
pub fn openers(files: &[FileId]) -> BTreeMap<FileId, Vec<Opener>> {
    let mut found: BTreeMap<FileId, Vec<Opener>> = BTreeMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    let me = std::process::id();
    let own_exe = fs::metadata("/proc/self/exe").ok().map(|m| file_id(&m));
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let mut opened: BTreeMap<FileId, bool> = BTreeMap::new();
        for fd in fds.flatten() {
            // metadata() follows the descriptor's link to the open file.
            let Ok(meta) = fs::metadata(fd.path()) else {
                continue;
            };
            let id = file_id(&meta);
            if !files.contains(&id) {
                continue;
            }
            let info = fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            let flock = info
                .lines()
                .any(|l| l.starts_with("lock:") && l.contains("FLOCK"));
            *opened.entry(id).or_default() |= flock;
        }
        if opened.is_empty() {
            continue;
        }
        let exe = fs::metadata(format!("/proc/{pid}/exe")).ok();
        let opener = Opener {
            pid,
            user: RealProc.user(pid),
            command: command_line(pid),
            is_shipit: own_exe.is_some() && exe.map(|m| file_id(&m)) == own_exe,
            holds_flock: false,
            started: RealProc.started(pid),
        };
        for (id, holds_flock) in opened {
            found.entry(id).or_default().push(Opener {
                holds_flock,
                ..opener.clone()
            });
        }
    }
    found
}

/// What `ps -o args` shows: the arguments, or the name in brackets.
fn command_line(pid: u32) -> String {
    const LIMIT: usize = 200;
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let mut line = if args.is_empty() {
        format!("[{}]", RealProc.name(pid))
    } else {
        // A `sh -c` script spans lines; the report has one per holder.
        args.join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    if line.len() > LIMIT {
        let mut end = LIMIT;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str("...");
    }
    line
}

/// The `GIT_*` variables in shipit's environment. In a git hook they point
/// at the pushed repository (and its quarantine) and would silently
/// redirect any git command aimed elsewhere (SPEC §6), so every child that
/// is not meant to read the push starts without them.
pub fn git_env() -> impl Iterator<Item = std::ffi::OsString> {
    std::env::vars_os()
        .map(|(key, _)| key)
        .filter(|key| key.to_string_lossy().starts_with("GIT_"))
}

/// Remove git's hook environment ([`git_env`]) from `command`.
pub fn without_git_env(command: &mut Command) -> &mut Command {
    for key in git_env() {
        command.env_remove(key);
    }
    command
}

/// Make `command`'s process die when shipit dies, even by SIGKILL
/// (prctl PR_SET_PDEATHSIG). Otherwise an orphaned `git fetch` or build
/// keeps writing into a staging directory that the next deploy is clearing.
/// The setting is not inherited by the child's own children, so a daemon
/// that a reload hook starts is unaffected.
pub fn die_with_shipit(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe syscalls (prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // shipit may have died before the prctl took effect.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("shipit exited"));
            }
            Ok(())
        });
    }
}

/// The release that `path` lies in, if any. A deleted cwd reads as
/// "<path> (deleted)": that release is gone already and needs no keeping.
fn release_of(releases: &Path, path: &Path) -> Option<ReleaseId> {
    let rest: PathBuf = path.strip_prefix(releases).ok()?.to_path_buf();
    let first = rest.components().next()?.as_os_str().to_str()?;
    ReleaseId::parse(first).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_of_paths() {
        let root = Path::new("/srv/app/releases");
        assert_eq!(
            release_of(root, Path::new("/srv/app/releases/20260101000000/bin/node")),
            Some(ReleaseId::parse("20260101000000").unwrap())
        );
        assert_eq!(release_of(root, Path::new("/srv/app/shared/log")), None);
        assert_eq!(
            release_of(
                root,
                Path::new("/srv/app/releases/20260101000000 (deleted)")
            ),
            None
        );
    }

    /// A `/proc` where some links cannot be read.
    struct Fake(Vec<(u32, &'static str, io::Result<PathBuf>)>, Vec<u32>);

    impl ProcSource for Fake {
        fn link(&self, pid: u32, link: &str) -> io::Result<PathBuf> {
            let (_, _, found) = self
                .0
                .iter()
                .find(|(p, l, _)| *p == pid && *l == link)
                .expect("asked only about listed links");
            match found {
                Ok(path) => Ok(path.clone()),
                Err(e) => Err(io::Error::from(e.kind())),
            }
        }
        fn name(&self, pid: u32) -> String {
            format!("proc{pid}")
        }
        fn user(&self, _: u32) -> String {
            "www-data".into()
        }
        fn is_kernel_thread(&self, pid: u32) -> bool {
            self.1.contains(&pid)
        }
        fn started(&self, _: u32) -> Option<DateTime<Utc>> {
            ReleaseId::parse("20260101120000").ok().map(|id| id.time())
        }
    }

    /// Regression: an unreadable process was skipped as if it used no
    /// release, and prune deleted the release it ran from.
    #[test]
    fn an_unreadable_process_is_reported_not_skipped() {
        let root = Path::new("/srv/app/releases");
        let denied = || Err(io::Error::from(io::ErrorKind::PermissionDenied));
        let gone = || Err(io::Error::from(io::ErrorKind::NotFound));
        let fake = Fake(
            vec![
                (10, "cwd", Ok(root.join("20260101000000"))),
                (10, "exe", Ok(PathBuf::from("/usr/bin/node"))),
                (20, "cwd", denied()),
                (20, "exe", denied()),
                (30, "cwd", gone()),
                (30, "exe", gone()),
                (2, "cwd", denied()),
                (2, "exe", gone()),
            ],
            vec![2],
        );
        let usage = scan_with(root, [10, 20, 30, 2], &fake);
        assert_eq!(
            usage.used.keys().map(|id| id.as_str()).collect::<Vec<_>>(),
            ["20260101000000"]
        );
        assert_eq!(
            usage.hidden.iter().map(|h| h.pid).collect::<Vec<_>>(),
            [20],
            "the kernel thread (2) and the vanished process (30) are no reason to worry"
        );
        assert_eq!(usage.hidden[0].user, "www-data");
        assert!(usage.hidden[0].error.contains("/proc/20/cwd"));
        // Started at 12:00: it may run from releases made before then (an
        // app started from an existing release), not from later ones.
        let hidden = &usage.hidden[0];
        assert!(hidden.may_use(&ReleaseId::parse("20260101115959").unwrap()));
        assert!(hidden.may_use(&ReleaseId::parse("20260101000000").unwrap()));
        assert!(!hidden.may_use(&ReleaseId::parse("20260101120100").unwrap()));
        let unknown = Hidden {
            started: None,
            ..hidden.clone()
        };
        assert!(unknown.may_use(&ReleaseId::parse("20990101000000").unwrap()));
    }

    #[test]
    fn the_start_time_of_a_real_process_is_read() {
        let started = RealProc
            .started(std::process::id())
            .expect("our own start time");
        let age = Utc::now() - started;
        assert!(
            age >= chrono::TimeDelta::seconds(-2) && age < chrono::TimeDelta::hours(1),
            "{started}"
        );
    }

    #[test]
    fn finds_a_process_running_in_a_release() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let id = ReleaseId::parse("20260101000000").unwrap();
        fs::create_dir_all(layout.release(&id)).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(layout.release(&id))
            .spawn()
            .unwrap();
        let used = releases_in_use(&layout);
        child.kill().unwrap();
        child.wait().unwrap();
        let procs = used.get(&id).expect("the sleep is found");
        assert!(
            procs
                .iter()
                .any(|p| p.pid == child.id() && p.name == "sleep"),
            "{procs:?}"
        );
    }
}
