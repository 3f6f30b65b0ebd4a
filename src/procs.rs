//! Which running processes still live in which release (via `/proc`).
//!
//! Process managers often resolve `current` once, at start, and keep running
//! the old release after a reload; a process whose working directory or
//! executable lies inside `releases/<id>` is still using that release. After
//! a reload shipit names such processes, and prune never deletes a release
//! that one of them uses.
//!
//! A process shipit may not inspect (another user's, when shipit is not
//! root) is never taken as "not in use", and never as "may use anything"
//! either: every root process started since the last deploy (an ssh
//! session, a cron job) would then keep every release, and a non-root
//! prune would never free a byte. [`Hidden::reach`] says which releases
//! one may run from: those `current` named around the time it started (the
//! history says which), since processes reach a release through `current`
//! when they start (a unit's `ExecStart=`, a process manager's `cwd`), and
//! any release its command line names. Where the history cannot say, the
//! old answer stands: any release that existed when it started.

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
    /// (other users' processes, when shipit is not root): which releases
    /// each may run from is [`Hidden::reach`]'s answer.
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
    /// Releases its command line names (`/proc/<pid>/cmdline` is readable
    /// to everyone): one started from a release directory directly, like a
    /// slot's app given `$SHIPIT_RELEASE_PATH/bin/server`.
    pub named: Vec<ReleaseId>,
}

/// How far a process's start time, as read from `/proc` (to the clock tick,
/// 10 ms: [`start_time`]), may be from the wall clock that stamped the
/// history: a process is taken to have started anywhere in this much either
/// side of what was read.
pub const START_SLACK: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

/// USER_HZ, the unit of a process's starttime in `/proc/<pid>/stat`: 100 on
/// every architecture shipit builds for (x86, arm, riscv); it is part of the
/// ABI.
const TICKS_PER_SECOND: i64 = 100;

/// When a process started on the wall clock: `boot`, the wall clock's time
/// at boot, plus its starttime (`ticks` since boot), to the tick.
fn start_time(boot: DateTime<Utc>, ticks: i64) -> DateTime<Utc> {
    boot + chrono::TimeDelta::milliseconds(ticks * 1000 / TICKS_PER_SECOND)
}

/// The wall clock's time at boot, to the nanosecond: the wall clock now
/// less the time since boot (CLOCK_BOOTTIME, the clock starttime counts
/// in). Not `btime` of `/proc/stat`: it is in whole seconds, and with it
/// (and the ticks cut to whole seconds too) a process seemed to start up to
/// two seconds early, which the slack then stretched to four, into what was
/// live before. The wall clock is read first, so a pause between the two
/// readings can only make a start seem earlier, never later.
fn boot_time() -> Option<DateTime<Utc>> {
    use nix::time::{ClockId, clock_gettime};
    let now = clock_gettime(ClockId::CLOCK_REALTIME).ok()?;
    let up = clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?;
    let nanos = |t: nix::sys::time::TimeSpec| {
        i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
    };
    let boot = i64::try_from(nanos(now) - nanos(up)).ok()?;
    Some(DateTime::from_timestamp_nanos(boot))
}

/// Which releases a process that could not be inspected may run from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Those `current` named around its start, and those its command line
    /// names.
    Releases(std::collections::BTreeSet<ReleaseId>),
    /// The history cannot say what was live when it started: any release
    /// created before then (a process started before a release existed can
    /// get there only by a later chdir or exec).
    CreatedBefore(DateTime<Utc>),
    /// Its start time is unknown: any release.
    Any,
}

impl Reach {
    pub fn includes(&self, release: &ReleaseId) -> bool {
        match self {
            Reach::Releases(ids) => ids.contains(release),
            // The release id is the time its deploy began, before its
            // directory existed, so the comparison errs on the side of keeping.
            Reach::CreatedBefore(started) => release.time() <= *started,
            Reach::Any => true,
        }
    }
}

impl Hidden {
    /// Which releases this process may run from, given what the history
    /// says was live when (`None`: the history could not be read).
    ///
    /// The rule assumes what process managers and unit files do: a process
    /// resolves `current` (its working directory, its executable) as it
    /// starts, so it runs the release live then; a later restart is a new
    /// process with a new start time. A process that stays up and re-execs
    /// itself into `current` later (an in-place hot restart), or one
    /// started from a release directory by a path its command line does not
    /// show, is not seen: run prune as root, or as the app's user, to
    /// inspect such processes instead of inferring.
    pub fn reach(&self, timeline: Option<&crate::history::Timeline>) -> Reach {
        let Some(started) = self.started else {
            return Reach::Any;
        };
        let during =
            timeline.and_then(|t| t.current_during(started - START_SLACK, started + START_SLACK));
        match during {
            Some(mut ids) => {
                ids.extend(self.named.iter().cloned());
                Reach::Releases(ids)
            }
            None => Reach::CreatedBefore(started + START_SLACK),
        }
    }
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
    let configured = layout.releases();
    scan_with(&[&releases, &configured], pids, &RealProc)
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
    /// Its arguments, NUL-separated, as `/proc/<pid>/cmdline` holds them.
    fn command_line(&self, pid: u32) -> Vec<u8>;
}

struct RealProc;

impl ProcSource for RealProc {
    fn command_line(&self, pid: u32) -> Vec<u8> {
        fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
    }

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
        let ticks: i64 = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let (_, rest) = stat.rsplit_once(") ")?;
                // Field 22, counted from the field after the name (3).
                rest.split_whitespace().nth(19)?.parse().ok()
            })?;
        Some(start_time(boot_time()?, ticks))
    }
}

/// `roots`: `releases/` as configured and as resolved; the first is where
/// `/proc` links point.
fn scan_with(
    roots: &[&Path],
    pids: impl IntoIterator<Item = u32>,
    source: &impl ProcSource,
) -> Usage {
    let releases = roots[0];
    let mut usage = Usage::default();
    for pid in pids {
        let mut ids: Vec<(ReleaseId, Via)> = Vec::new();
        let mut unreadable: Option<(&str, io::Error)> = None;
        for (link, via) in [("exe", Via::Executable), ("cwd", Via::WorkingDirectory)] {
            match source.link(pid, link) {
                Ok(path) => {
                    // The executable's release wins over the cwd's.
                    if let Some(id) = release_of(releases, &path)
                        && !ids.iter().any(|(seen, _)| *seen == id)
                    {
                        ids.push((id, via));
                    }
                }
                // No executable: a kernel thread (a third of the pids on a
                // quiet machine; its working directory is `/`), a zombie,
                // or gone since the listing: none sits in a release.
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
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
                named: releases_named(roots, &source.command_line(pid)),
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

/// The releases that a command line names by a path under one of `roots`
/// (`<root>/<id>`, not followed by more digits), anywhere in an argument:
/// `sh -c 'cd <root>/<id> && exec ./server'` names it too.
fn releases_named(roots: &[&Path], command_line: &[u8]) -> Vec<ReleaseId> {
    let mut found = Vec::new();
    let text = String::from_utf8_lossy(command_line);
    for arg in text.split('\0') {
        for root in roots {
            let prefix = format!("{}/", root.display());
            for (at, _) in arg.match_indices(&prefix) {
                let rest = &arg[at + prefix.len()..];
                let name = rest.get(..14).unwrap_or("");
                let ends = !rest[name.len()..].starts_with(|c: char| c.is_ascii_digit());
                if ends
                    && let Ok(id) = ReleaseId::parse(name)
                    && !found.contains(&id)
                {
                    found.push(id);
                }
            }
        }
    }
    found
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

    /// A `/proc` where some links cannot be read; it keeps what it was
    /// asked.
    struct Fake(
        Vec<(u32, &'static str, io::Result<PathBuf>)>,
        Vec<u32>,
        std::cell::RefCell<Vec<(u32, String)>>,
    );

    impl ProcSource for Fake {
        fn link(&self, pid: u32, link: &str) -> io::Result<PathBuf> {
            self.2.borrow_mut().push((pid, link.to_string()));
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
        fn command_line(&self, pid: u32) -> Vec<u8> {
            format!("proc{pid}\0--root=/srv/app/releases/20260101000000/bin\0").into_bytes()
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
            Default::default(),
        );
        let usage = scan_with(&[root], [10, 20, 30, 2], &fake);
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
        assert!(usage.hidden[0].error.contains("/proc/20/exe"));
        // A process without an executable has no working directory to
        // read: one readlink, not two.
        let asked = fake.2.borrow();
        assert!(!asked.contains(&(2, "cwd".into())), "{asked:?}");
        assert!(!asked.contains(&(30, "cwd".into())), "{asked:?}");
        assert!(asked.contains(&(10, "cwd".into())), "{asked:?}");
        drop(asked);
        assert_eq!(usage.hidden[0].named, [id("20260101000000")]);
        // Without a history, started at 12:00: it may run from releases
        // made before then (an app started from an existing release), not
        // from later ones.
        let hidden = &usage.hidden[0];
        let reach = hidden.reach(None);
        assert!(reach.includes(&id("20260101115959")));
        assert!(reach.includes(&id("20260101000000")));
        assert!(!reach.includes(&id("20260101120100")));
        let unknown = Hidden {
            started: None,
            ..hidden.clone()
        };
        assert_eq!(unknown.reach(None), Reach::Any);
        assert!(Reach::Any.includes(&id("20990101000000")));
    }

    fn id(s: &str) -> ReleaseId {
        ReleaseId::parse(s).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        id(s).time()
    }

    /// An event of `kind` that began at `start`, took `secs`, and moved
    /// `current` from `previous` to `live`, making (or trying) `release`.
    fn event(
        kind: &str,
        start: &str,
        secs: i64,
        previous: Option<&str>,
        release: Option<&str>,
        live: Option<&str>,
    ) -> crate::history::Event {
        crate::history::Event {
            time: at(start),
            duration_ms: (secs * 1000) as u64,
            previous: previous.map(id),
            release: release.map(id),
            live: live.map(id),
            ..crate::history::Event::new(
                serde_json::from_value(serde_json::json!(kind)).unwrap(),
                crate::history::Outcome::Ok,
            )
        }
    }

    fn ids(reach: &Reach) -> Vec<&str> {
        match reach {
            Reach::Releases(ids) => ids.iter().map(|i| i.as_str()).collect(),
            other => panic!("the history should have answered: {other:?}"),
        }
    }

    const R1: &str = "20260101100000";
    const R2: &str = "20260101110000";
    const R3: &str = "20260101120000";
    const R4: &str = "20260101130000";

    /// R1 deployed at 10:00, R2 at 11:00, R3 at 12:00, R4 at 13:00 (each
    /// taking 30 s), then a rollback to R2 at 14:00.
    fn history() -> crate::history::Log {
        crate::history::Log {
            events: vec![
                event("deploy", R1, 30, None, Some(R1), Some(R1)),
                event("deploy", R2, 30, Some(R1), Some(R2), Some(R2)),
                event("deploy", R3, 30, Some(R2), Some(R3), Some(R3)),
                event("prune", "20260101123000", 1, None, None, Some(R3)),
                event("deploy", R4, 30, Some(R3), Some(R4), Some(R4)),
                event(
                    "rollback",
                    "20260101140000",
                    5,
                    Some(R4),
                    Some(R2),
                    Some(R2),
                ),
            ],
            ..Default::default()
        }
    }

    fn started_at(time: &str) -> Hidden {
        Hidden {
            pid: 1,
            name: "sshd".into(),
            user: "root".into(),
            error: "denied".into(),
            started: Some(at(time)),
            named: Vec::new(),
        }
    }

    /// A root process started after every release (an ssh login,
    /// a cron job) kept them all, and a non-root prune never freed a byte.
    /// It may run only what was live as it started.
    #[test]
    fn a_hidden_process_reaches_what_was_live_as_it_started() {
        let log = history();
        let timeline = crate::history::Timeline::new(&log, [], Some(id(R2)));
        let t = Some(&timeline);
        // Started at 12:40, when R3 was live: R3 alone, not R1 or R2.
        assert_eq!(ids(&started_at("20260101124000").reach(t)), [R3]);
        // Started after the rollback: R2, which is current.
        assert_eq!(ids(&started_at("20260101150000").reach(t)), [R2]);
        // Started at boot, before any deploy: nothing was live.
        assert_eq!(
            ids(&started_at("20250101000000").reach(t)),
            Vec::<&str>::new()
        );
        // Started during R4's deploy: R3 or R4, whichever current named.
        assert_eq!(ids(&started_at("20260101130010").reach(t)), [R3, R4]);
        // Within the slack of the deploy's end: either side of it.
        assert_eq!(ids(&started_at("20260101130031").reach(t)), [R3, R4]);
        assert_eq!(ids(&started_at("20260101130040").reach(t)), [R4]);
        // A release its command line names, whatever was live.
        let named = Hidden {
            named: vec![id(R1)],
            ..started_at("20260101124000")
        };
        assert_eq!(ids(&named.reach(t)), [R1, R3]);
    }

    #[test]
    fn where_the_history_cannot_say_the_old_rule_stands() {
        let created_before = |t: &str| Reach::CreatedBefore(at(t) + START_SLACK);
        // No history at all (unreadable, or empty).
        let empty = crate::history::Timeline::new(&Default::default(), [], None);
        let p = started_at("20260101124000");
        assert_eq!(p.reach(Some(&empty)), created_before("20260101124000"));
        assert_eq!(p.reach(None), created_before("20260101124000"));
        // A damaged line between the prune (12:30) and R4's deploy (13:00):
        // that stretch is unknown, the rest is not.
        let mut log = history();
        log.damaged = vec![4];
        let timeline = crate::history::Timeline::new(&log, [], Some(id(R2)));
        let t = Some(&timeline);
        assert_eq!(p.reach(t), created_before("20260101124000"));
        assert_eq!(ids(&started_at("20260101113000").reach(t)), [R2]);
        assert_eq!(ids(&started_at("20260101133000").reach(t)), [R4]);
        // A log that begins with something already live (rotated, or a
        // directory shipit took over) does not say what was live before it.
        let mut log = history();
        log.events.remove(0);
        let timeline = crate::history::Timeline::new(&log, [], Some(id(R2)));
        let early = started_at("20260101103000");
        assert_eq!(
            early.reach(Some(&timeline)),
            created_before("20260101103000")
        );
        assert_eq!(
            ids(&started_at("20260101113000").reach(Some(&timeline))),
            [R2]
        );
        // A torn last line: everything after the last event is unknown.
        let mut log = history();
        log.damaged = vec![log.events.len()];
        let timeline = crate::history::Timeline::new(&log, [], Some(id(R2)));
        let late = started_at("20260101150000");
        assert_eq!(
            late.reach(Some(&timeline)),
            created_before("20260101150000")
        );
    }

    /// A deploy killed after its swap never recorded its event: its release
    /// may have been current from its activation until the next command.
    #[test]
    fn an_activation_the_history_never_recorded_counts() {
        let log = history();
        let killed = "20260101123500";
        let timeline =
            crate::history::Timeline::new(&log, [(id(killed), at("20260101123510"))], Some(id(R2)));
        let t = Some(&timeline);
        assert_eq!(ids(&started_at("20260101124000").reach(t)), [R3, killed]);
        assert_eq!(ids(&started_at("20260101123000").reach(t)), [R3]);
        assert_eq!(ids(&started_at("20260101133000").reach(t)), [R4]);
    }

    #[test]
    fn releases_named_on_a_command_line() {
        let root = Path::new("/srv/app/releases");
        let named = |line: &str| {
            releases_named(&[root], line.replace(' ', "\0").as_bytes())
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            named("/srv/app/releases/20260101000000/bin/server --port 3000"),
            ["20260101000000"]
        );
        assert_eq!(
            named("sh -c cd\0/srv/app/releases/20260101000000"),
            ["20260101000000"]
        );
        assert!(named("/srv/app/releases/202601010000001/x").is_empty());
        assert!(named("/srv/other/releases/20260101000000/x").is_empty());
        assert!(named("/srv/app/current/bin/server").is_empty());
        let script = b"sh\0-c\0cd /srv/app/releases/20260101000000 && exec ./s\0";
        assert_eq!(
            releases_named(&[root], script),
            [ReleaseId::parse("20260101000000").unwrap()]
        );
    }

    /// A process's start time was read as whole seconds of `btime` plus
    /// whole seconds of ticks: up to two seconds early, so that with the
    /// slack a root process started three seconds after a rollback still
    /// reached the release live before it, and a non-root prune kept it.
    #[test]
    fn a_start_time_is_read_to_the_tick() {
        // Booted at 00:00:00.84; the process started 12 hours, 6.79 s
        // after boot: at 12:00:07.63.
        let boot = at("20260101000000") + chrono::TimeDelta::milliseconds(840);
        let ticks = (12 * 3600 + 6) * 100 + 79;
        let started = start_time(boot, ticks);
        assert_eq!(
            started,
            at("20260101120007") + chrono::TimeDelta::milliseconds(630)
        );
        // Deployed A, then B, then rolled back to A, which went live at
        // 12:00:04.5: A alone was live for three seconds before the start.
        let (a, b) = ("20260101115958", "20260101115959");
        let log = crate::history::Log {
            events: vec![
                event("deploy", "20260101120000", 1, None, Some(a), Some(a)),
                event("deploy", "20260101120002", 1, Some(a), Some(b), Some(b)),
                crate::history::Event {
                    duration_ms: 500,
                    ..event("rollback", "20260101120004", 0, Some(b), Some(a), Some(a))
                },
            ],
            ..Default::default()
        };
        let timeline = crate::history::Timeline::new(&log, [], Some(id(a)));
        let hidden = Hidden {
            started: Some(started),
            ..started_at("20260101120007")
        };
        assert_eq!(ids(&hidden.reach(Some(&timeline))), [a]);
    }

    /// A process started between two readings of the wall clock reads as
    /// started between them: never later than it did, and early by a tick
    /// (10 ms) and whatever pause there was between reading the clocks,
    /// well within a second (the old read was up to two seconds early).
    #[test]
    fn the_start_time_of_a_real_process_is_read() {
        let before = Utc::now();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let after = Utc::now();
        let started = RealProc.started(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        let started = started.expect("the child's start time");
        assert!(
            started <= after && started > before - chrono::TimeDelta::seconds(1),
            "read {started}, started between {before} and {after}"
        );
        let own = RealProc.started(std::process::id()).expect("our own");
        assert!(own <= before, "{own}");
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
        let used = scan(&layout).used;
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

#[cfg(test)]
mod properties {
    use super::*;
    use crate::history::{Event, Log, Timeline};
    use chrono::TimeDelta;
    use proptest::prelude::*;

    /// One command that moves `current`: a deploy that went live, a deploy
    /// that went live and was swapped back, or a rollback to an older
    /// release (by index, modulo those that exist). Times in ms: the gap
    /// before it, when it swapped (and swapped back), how long it took.
    #[derive(Clone, Debug)]
    enum Op {
        Deploy { swap: i64 },
        Failed { swap: i64, back: i64 },
        Rollback { to: usize, swap: i64 },
    }

    fn op() -> impl Strategy<Value = (i64, Op, i64)> {
        let op = prop_oneof![
            (0i64..5000).prop_map(|swap| Op::Deploy { swap }),
            (0i64..5000, 0i64..5000).prop_map(|(swap, back)| Op::Failed { swap, back }),
            (0usize..50, 0i64..5000).prop_map(|(to, swap)| Op::Rollback { to, swap }),
        ];
        (0i64..20_000, op, 0i64..5000)
    }

    fn at(base: DateTime<Utc>, ms: i64) -> DateTime<Utc> {
        base + TimeDelta::milliseconds(ms)
    }

    proptest! {
        /// Whatever was `current` at the moment a process started (when it
        /// resolved `current`), its reach includes it, though its start is
        /// read up to a tick early.
        #[test]
        fn a_hidden_process_reaches_what_was_current_when_it_started(
            ops in proptest::collection::vec(op(), 1..12),
            when in 0.0f64..1.0,
            error_ms in 0i64..50,
        ) {
            let base = ReleaseId::parse("20260101000000").unwrap().time();
            let mut now = 0i64;
            let mut releases: Vec<ReleaseId> = Vec::new();
            let mut current: Option<ReleaseId> = None;
            // Every change of `current`: (ms, what it named from then on).
            let mut truth: Vec<(i64, Option<ReleaseId>)> = vec![(i64::MIN, None)];
            let mut log = Log::default();
            for (gap, op, extra) in ops {
                now += gap;
                let start = now;
                let previous = current.clone();
                let (release, live, end) = match op {
                    Op::Deploy { swap } => {
                        let id = ReleaseId::from_time(base + TimeDelta::seconds(releases.len() as i64));
                        releases.push(id.clone());
                        truth.push((start + swap, Some(id.clone())));
                        (Some(id.clone()), Some(id), start + swap + extra)
                    }
                    Op::Failed { swap, back } => {
                        let id = ReleaseId::from_time(base + TimeDelta::seconds(releases.len() as i64));
                        releases.push(id.clone());
                        truth.push((start + swap, Some(id.clone())));
                        truth.push((start + swap + back, previous.clone()));
                        (Some(id), previous.clone(), start + swap + back + extra)
                    }
                    Op::Rollback { to, swap } => {
                        if releases.is_empty() {
                            continue;
                        }
                        let id = releases[to % releases.len()].clone();
                        truth.push((start + swap, Some(id.clone())));
                        (Some(id.clone()), Some(id), start + swap + extra)
                    }
                };
                current = live.clone();
                log.events.push(Event {
                    time: at(base, start),
                    duration_ms: (end - start) as u64,
                    previous,
                    release,
                    live,
                    ..Event::new(crate::history::EventKind::Deploy, crate::history::Outcome::Ok)
                });
                now = end;
            }
            let timeline = Timeline::new(&log, [], current.clone());
            // A moment from before the first event to after the last.
            let t = -10_000 + ((now + 20_000) as f64 * when) as i64;
            let live = truth.iter().rev().find(|(from, _)| *from <= t).and_then(|(_, id)| id.clone());
            // What /proc says: to the tick, a tick early at most (and a
            // pause between the readings of the clocks).
            let seen = at(base, t - error_ms);
            let hidden = Hidden {
                pid: 1,
                name: "app".into(),
                user: "root".into(),
                error: String::new(),
                started: Some(seen),
                named: Vec::new(),
            };
            let reach = hidden.reach(Some(&timeline));
            if let Some(live) = live {
                prop_assert!(reach.includes(&live), "started at {t} ms with {live} current; reach {reach:?}");
            }
        }
    }
}
