//! The deploy lock: `flock(2)` on `.shipit/lock`.
//!
//! flock is released by the kernel when its holder dies, however it dies, so
//! the lock can never go stale and nobody ever needs to delete it. (Deleting
//! it would be wrong: a waiter could lock the orphaned inode while a newcomer
//! locks a fresh file.) The holder writes who it is into the file so that a
//! refused command can name it. The descriptor is close-on-exec, so hooks and
//! the daemons they start never inherit the lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind, Result};
use crate::interrupt;
use crate::layout::Layout;
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
    fn describe(&self) -> String {
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
                    // A holder that died (even by SIGKILL) can leave the
                    // lock held for a moment by a child it had forked but
                    // not yet exec'd (the descriptor is close-on-exec, not
                    // close-on-fork); that child dies with it. Give it a
                    // bounded moment rather than report a dead holder.
                    let orphan_until = *orphaned.get_or_insert(now + ORPHAN_GRACE);
                    if holder_is_gone(&text) && now < orphan_until {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    return Err(busy(&text, wait));
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
/// children (see [`acquire`]).
const ORPHAN_GRACE: Duration = Duration::from_secs(3);

/// Is the recorded holder a process of this host that no longer runs?
fn holder_is_gone(text: &str) -> bool {
    let Ok(holder) = serde_json::from_str::<Holder>(text.trim()) else {
        return false;
    };
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
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let mut text = String::new();
        let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
        if serde_json::from_str::<Holder>(text.trim()).is_ok() || Instant::now() >= deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn busy(text: &str, waited: Option<Duration>) -> Error {
    let parsed = serde_json::from_str::<Holder>(text.trim()).ok();
    let holder = parsed
        .as_ref()
        .map(|h| h.describe())
        .unwrap_or_else(|| "another shipit process (it has not said who yet)".into());
    const NEVER_DELETE: &str =
        "the lock frees itself when that process exits, so never delete the lock file";
    let (message, hint) = match waited {
        Some(w) => {
            let check = parsed
                .as_ref()
                .map(|h| format!("check on it (`ps -fp {}`)", h.pid))
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
    Error::new(Kind::LockBusy, message)
        .cause(format!("held by {holder}"))
        .hint(hint)
}
