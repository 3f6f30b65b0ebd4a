//! The deploy lock: `flock(2)` on `.shipit/lock`.
//!
//! flock is released by the kernel when its holder dies, however it dies, so
//! the lock can never go stale and nobody ever needs to delete it. (Deleting
//! it would be wrong: a waiter could lock the orphaned inode while a newcomer
//! locks a fresh file.) The holder writes who it is into the file so that a
//! refused command can name it. The descriptor is close-on-exec, so hooks and
//! the daemons they start never inherit the lock.
//!
//! The file can name a holder that no longer holds the lock: one that
//! exited while a child that inherited the descriptor (a fork not yet
//! exec'd, or a child given the lock on purpose) lives on. So a refused
//! command also looks for the processes that have the lock open (as `lsof`
//! does; `/proc/locks` names only the process that took the lock) and names
//! those when the recorded one is not among them. Only forks of shipit are
//! waited out, briefly: they die with their parent.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind, Result};
use crate::interrupt;
use crate::layout::Layout;
use crate::procs;
use crate::state;
use crate::whoami;

/// Who holds the lock, as written into the lock file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub user: String,
    pub host: String,
    pub command: String,
    pub since: DateTime<Utc>,
}

impl Holder {
    /// This process, running `command`, from now.
    pub fn me(command: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            user: whoami::user(),
            host: whoami::host(),
            command: command.to_string(),
            since: Utc::now(),
        }
    }

    pub fn describe(&self) -> String {
        let ago = (Utc::now() - self.since).to_std().unwrap_or_default();
        let ago = humantime::format_duration(Duration::from_secs(ago.as_secs()));
        format!(
            "pid {} ({}@{}) running `{}` since {} ({ago} ago)",
            self.pid,
            self.user,
            self.host,
            self.command,
            self.since.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// Held until dropped (or until the process exits, whichever comes first).
pub struct Lock {
    file: Flock<File>,
}

impl Lock {
    /// Give the lock a second holder: a descriptor of the locked file to
    /// hand to a child process. flock(2) belongs to the open file, so it
    /// stays held until every descriptor of it is closed: this process's
    /// when it exits (it no longer unlocks on drop), and the child's.
    pub fn into_shared(self) -> std::io::Result<File> {
        let other = self.file.try_clone()?;
        // Dropping would unlock the open file for both holders.
        std::mem::forget(self);
        Ok(other)
    }
}

/// Take the deploy lock. With `wait = None`, fail at once if it is held;
/// otherwise poll until it frees up or `wait` runs out.
pub fn acquire(layout: &Layout, wait: Option<Duration>, command: &str) -> Result<Lock> {
    let path = layout.lock();
    let deadline = wait.map(crate::clock::after);
    let mut orphaned: Option<Instant> = None;
    loop {
        let file = state::open_or_explain(
            &path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            "the lock file",
        )?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                let holder = Holder {
                    pid: std::process::id(),
                    user: whoami::user(),
                    host: whoami::host(),
                    command: command.to_string(),
                    since: Utc::now(),
                };
                let line = serde_json::to_string(&holder).expect("holder serializes");
                // Best effort: the lock itself is the flock, not this text.
                let _ = locked
                    .set_len(0)
                    .and_then(|_| locked.rewind())
                    .and_then(|_| locked.write_all(format!("{line}\n").as_bytes()));
                return Ok(Lock { file: locked });
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let now = Instant::now();
                if deadline.is_none_or(|d| now >= d) {
                    let text = read_holder(&mut file);
                    let recorded = serde_json::from_str::<Holder>(text.trim()).ok();
                    let openers = file
                        .metadata()
                        .map(|m| procs::openers(&[procs::file_id(&m)]))
                        .unwrap_or_default()
                        .into_values()
                        .next()
                        .unwrap_or_default();
                    let orphan_until =
                        *orphaned.get_or_insert(crate::clock::deadline(now, ORPHAN_GRACE));
                    match holders(recorded, openers) {
                        Holders::Dying(_) if now < orphan_until => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                        Holders::Dying(holders) => return Err(busy(*holders, wait)),
                        holders => return Err(busy(holders, wait)),
                    }
                }
                interrupt::check()?;
                std::thread::sleep(Duration::from_millis(100).min(deadline.unwrap() - now));
            }
            Err((_, errno)) => {
                return Err(Error::io(
                    "could not lock",
                    &path,
                    std::io::Error::from(errno),
                ));
            }
        }
    }
}

/// How long a lock left by a dead holder may stay held by its dying
/// children (see [`holders`]). The wait ends as soon as the lock is free
/// (or a live holder names itself), so this bounds only how long a fork
/// that a busy machine has not yet scheduled may take to die: seconds, on
/// a loaded 2-core machine, before such a fork is reported as the holder.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// Who holds the lock, as far as this process can tell.
#[derive(Debug)]
enum Holders {
    /// The process the lock file names (it has the lock open, or nothing
    /// that has it open could be seen).
    Recorded(Holder),
    /// Processes that have the lock open while the one the lock file names
    /// does not (it exited; a child that inherited the descriptor, or was
    /// started with it as stdin, holds the lock now).
    Found {
        openers: Vec<procs::Opener>,
        recorded: Option<Holder>,
    },
    /// Only forks of a dead shipit: a child forked but not yet exec'd
    /// holds the lock (the descriptor is close-on-exec, not close-on-fork)
    /// and dies with its parent. Or a shipit that has just taken the lock
    /// and not yet said who it is. Either way: worth a moment's wait; if
    /// they are still there after it, they are reported as this.
    Dying(Box<Holders>),
    /// Nobody could be named.
    Unknown,
}

/// Decide who holds the lock from what the lock file says and which
/// processes have it open (`openers`, this process excluded; other users'
/// processes are invisible without root). Of those, the ones whose
/// descriptor holds the flock hold the lock; the rest are waiting for it
/// (when the kernel shows no flock at all, all are taken to hold it).
fn holders(recorded: Option<Holder>, openers: Vec<procs::Opener>) -> Holders {
    let openers = if openers.iter().any(|o| o.holds_flock) {
        openers.into_iter().filter(|o| o.holds_flock).collect()
    } else {
        openers
    };
    let named_holds = |h: &Holder| openers.iter().any(|o| o.pid == h.pid);
    match recorded {
        Some(h) if openers.is_empty() || named_holds(&h) => {
            if openers.is_empty() && holder_is_gone(&h) {
                // Nothing seen, and the named holder is gone: a dying fork
                // of it that we may not inspect, most likely.
                Holders::Dying(Box::new(Holders::Recorded(h)))
            } else {
                Holders::Recorded(h)
            }
        }
        None if openers.is_empty() => Holders::Unknown,
        // Unnamed shipit processes: dying forks, or a newcomer about to
        // write its name. A live newcomer is named on the next look.
        recorded if openers.iter().all(|o| o.is_shipit) => {
            Holders::Dying(Box::new(Holders::Found { openers, recorded }))
        }
        recorded => Holders::Found { openers, recorded },
    }
}

/// Is the recorded holder a process of this host that no longer runs?
fn holder_is_gone(holder: &Holder) -> bool {
    holder.host == whoami::host()
        && holder.pid != std::process::id()
        && std::fs::read_to_string(format!("/proc/{}/stat", holder.pid)).map_or(true, |stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, r)| r.starts_with('Z'))
        })
}

/// What the holder wrote about itself. It writes right after taking the
/// lock, so a reader that comes in between sees an empty file: give it a
/// moment (bounded) before reporting an unnamed holder.
fn read_holder(file: &mut File) -> String {
    let deadline = crate::clock::after(Duration::from_millis(500));
    loop {
        let mut text = String::new();
        let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
        if serde_json::from_str::<Holder>(text.trim()).is_ok() || Instant::now() >= deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn busy(holders: Holders, waited: Option<Duration>) -> Error {
    let (holder, also, pid) = match &holders {
        Holders::Recorded(h) => (h.describe(), None, Some(h.pid)),
        Holders::Found { openers, recorded } => {
            let described: Vec<String> = openers.iter().map(describe_opener).collect();
            let also = recorded.as_ref().map(|h| {
                let state = if holder_is_gone(h) {
                    "which has exited"
                } else {
                    "which does not hold it"
                };
                format!("the lock file names {}, {state}", h.describe())
            });
            (described.join("; and by "), also, Some(openers[0].pid))
        }
        Holders::Dying(_) | Holders::Unknown => (
            "another shipit process (it has not said who yet)".into(),
            None,
            None,
        ),
    };
    const NEVER_DELETE: &str =
        "the lock frees itself when that process exits, so never delete the lock file";
    let (message, hint) = match waited {
        Some(w) => {
            let check = pid
                .map(|pid| format!("check on it (`ps -fp {pid}`)"))
                .unwrap_or_else(|| "check on it".into());
            (
                format!(
                    "the deploy lock is still held after waiting {}",
                    humantime::format_duration(w)
                ),
                format!(
                    "the command holding it is still running: {check}, then retry, or queue \
                     for longer; {NEVER_DELETE}"
                ),
            )
        }
        None => (
            "another shipit command is running in this deploy directory".into(),
            format!(
                "wait for it to finish, or pass --wait[=DURATION] to queue behind it; {NEVER_DELETE}"
            ),
        ),
    };
    let (message, hint) = match (&holders, waited) {
        // Not a shipit: the hint cannot promise it finishes on its own.
        (Holders::Found { openers, .. }, None) if openers.iter().any(|o| !o.is_shipit) => (
            "another process holds the deploy lock of this deploy directory".to_string(),
            format!(
                "see what it is (`ps -fp {}`): the lock frees itself when it exits, or pass \
                 --wait[=DURATION] to queue behind it; never delete the lock file",
                pid.expect("found holders have a pid")
            ),
        ),
        _ => (message, hint),
    };
    let mut error = Error::new(Kind::LockBusy, message).cause(format!("held by {holder}"));
    if let Some(also) = also {
        error = error.cause(also);
    }
    error.hint(hint)
}

/// `pid 4242 (deploy) running `sh -c ...` since ... (3m ago)`.
fn describe_opener(o: &procs::Opener) -> String {
    let since = o
        .started
        .map(|t| {
            let ago = (Utc::now() - t).to_std().unwrap_or_default();
            let ago = humantime::format_duration(Duration::from_secs(ago.as_secs()));
            format!(" since {} ({ago} ago)", t.format("%Y-%m-%d %H:%M:%S UTC"))
        })
        .unwrap_or_default();
    format!("pid {} ({}) running `{}`{since}", o.pid, o.user, o.command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(pid: u32) -> Holder {
        Holder {
            pid,
            user: "deploy".into(),
            host: whoami::host(),
            command: "shipit deploy".into(),
            since: Utc::now(),
        }
    }

    fn opener(pid: u32, is_shipit: bool) -> procs::Opener {
        procs::Opener {
            pid,
            user: "deploy".into(),
            command: "sh -c sleep".into(),
            is_shipit,
            holds_flock: true,
            started: None,
        }
    }

    #[test]
    fn the_real_holder_is_named_and_only_shipit_forks_are_waited_for() {
        // The parent of this test process is alive; pid u32::MAX is no one.
        let alive = std::os::unix::process::parent_id();
        let gone = u32::MAX;
        let named = holders(Some(holder(alive)), vec![opener(alive, true)]);
        assert!(matches!(named, Holders::Recorded(h) if h.pid == alive));
        let hidden = holders(Some(holder(alive)), vec![]);
        assert!(matches!(hidden, Holders::Recorded(_)));
        let inherited = holders(Some(holder(gone)), vec![opener(7, false)]);
        assert!(matches!(inherited, Holders::Found { ref openers, .. } if openers[0].pid == 7));
        let fork = holders(Some(holder(gone)), vec![opener(7, true)]);
        assert!(matches!(fork, Holders::Dying(_)));
        let unseen = holders(Some(holder(gone)), vec![]);
        assert!(
            matches!(unseen, Holders::Dying(ref then) if matches!(**then, Holders::Recorded(_)))
        );
        assert!(matches!(holders(None, vec![]), Holders::Unknown));
        // A shipit waiting for the lock has the file open, without the flock.
        let waiter = procs::Opener {
            holds_flock: false,
            ..opener(8, true)
        };
        let held = holders(Some(holder(gone)), vec![waiter, opener(7, false)]);
        assert!(
            matches!(held, Holders::Found { ref openers, .. } if openers.len() == 1 && openers[0].pid == 7)
        );
    }
}
