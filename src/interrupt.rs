//! SIGINT / SIGTERM / SIGHUP handling for mutating commands.
//!
//! SIGHUP counts as an interrupt: a terminal or SSH session that closes
//! during the gate must roll back like Ctrl-C does, not kill shipit with a
//! failing release live (the default action of SIGHUP is to terminate).
//! A SIGHUP the caller set to be ignored stays ignored: `nohup shipit
//! deploy` asked to finish after a logout.
//!
//! A deploy must not die between two steps that belong together (publish and
//! swap, swap and rollback), so the signals only raise a flag; the deploy
//! checks it at every step boundary and inside every wait loop, then cleans
//! up or rolls back as SPEC §4 requires and exits with the interrupted code.
//! Hooks run in their own process group, so a terminal's Ctrl-C reaches only
//! shipit, which then stops the hook's whole group itself.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Kind, Result};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Route SIGINT, SIGTERM and SIGHUP to the flag. Call once, before taking
/// the lock.
pub fn install() {
    let flag = FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        if signal == signal_hook::consts::SIGHUP && ignored_by_caller(signal) {
            continue;
        }
        // Registration fails only for forbidden signals, never these.
        let _ = signal_hook::flag::register(signal, Arc::clone(flag));
    }
}

/// Was `signal` set to be ignored when shipit started (`nohup`)?
fn ignored_by_caller(signal: i32) -> bool {
    // SAFETY: with a null new action, sigaction(2) only reads the current
    // one into `old`, which is plain data.
    unsafe {
        let mut old: nix::libc::sigaction = std::mem::zeroed();
        nix::libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == nix::libc::SIG_IGN
    }
}

/// Has SIGINT, SIGTERM or SIGHUP arrived?
pub fn requested() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::SeqCst))
}

/// `Err(Interrupted)` once a signal has arrived.
pub fn check() -> Result<()> {
    if requested() {
        Err(Error::new(Kind::Interrupted, "interrupted by a signal"))
    } else {
        Ok(())
    }
}

/// Act as if a signal had arrived: a fleet host's agent does so when its
/// controller's session closes (the controller, or its ssh, is gone), so
/// the hook it runs for that controller is stopped like on a Ctrl-C.
pub fn request() {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
        .store(true, Ordering::SeqCst);
}

/// Forget a signal that has been acted on, so the rollback it triggered can
/// run its own reload and gate. A second signal interrupts those in turn.
pub fn clear() {
    if let Some(flag) = FLAG.get() {
        flag.store(false, Ordering::SeqCst);
    }
}
