//! The notify hook: told of every outcome, never changing one.
//!
//! `[hooks] notify` runs once a deploy, a rollback (manual or automatic),
//! a fleet rollout or a push is over, with the event the history just
//! recorded as one JSON object on stdin (the object `history --json`
//! prints: outcome, releases, the failure's message and causes, and for a
//! fleet every host's outcome) and `SHIPIT_EVENT`, `SHIPIT_OUTCOME`,
//! `SHIPIT_RELEASE`, `SHIPIT_PREVIOUS_RELEASE` in its environment.
//!
//! It runs after the command let go of the deploy lock (a slow webhook
//! never holds up the next deploy), in a fleet once, on the controller. It
//! is bounded by `hooks.notify_timeout`; after an interrupt by
//! [`AFTER_INTERRUPT`] at most, since CI usually follows SIGTERM with
//! SIGKILL a few seconds later, and a second signal cuts it. Whatever it
//! does, it is one warning at most: the exit code, the release's status
//! and the history are already settled when it starts.

use std::time::Duration;

use crate::context::Ctx;
use crate::history;
use crate::hooks::{self, Hook};
use crate::interrupt;

/// The notify hook's bound once the command was interrupted.
pub const AFTER_INTERRUPT: Duration = Duration::from_secs(3);

/// Tell the notify hook, if there is one, of the event this command
/// recorded, if it recorded one. Call after the lock is released.
pub fn after(ctx: &Ctx) {
    let Some(event) = history::take_recorded() else {
        return;
    };
    let Some(command) = &ctx.config.hooks.notify else {
        return;
    };
    let interrupted = interrupt::requested()
        || event.outcome == history::Outcome::Failed(crate::error::Kind::Interrupted);
    let mut timeout = ctx.config.hooks.notify_timeout;
    if interrupted {
        // The first signal was handled by the command; a second one stops
        // the hook ([`hooks::run`] watches the flag).
        interrupt::clear();
        timeout = timeout.min(AFTER_INTERRUPT);
    }
    let payload = serde_json::to_string(&event).expect("an event serializes");
    let payload = crate::hookenv::redact_json(&payload).into_owned() + "\n";
    let id = |r: &Option<crate::layout::ReleaseId>| {
        r.as_ref().map(|r| r.to_string()).unwrap_or_default()
    };
    let env = vec![
        ("SHIPIT_EVENT".to_string(), event.event.to_string()),
        ("SHIPIT_OUTCOME".to_string(), event.outcome.to_string()),
        ("SHIPIT_RELEASE".to_string(), id(&event.release)),
        ("SHIPIT_PREVIOUS_RELEASE".to_string(), id(&event.previous)),
        ("SHIPIT_LIVE_RELEASE".to_string(), id(&event.live)),
        (
            "SHIPIT_DEPLOY_TO".to_string(),
            ctx.config.deploy_to.display().to_string(),
        ),
    ];
    let root = ctx.layout.root();
    let cwd = if root.is_dir() {
        root
    } else {
        std::path::Path::new("/")
    };
    // The release's log keeps what the hook said, if the release has one.
    let mut log = event.release.as_ref().and_then(|r| {
        crate::state::open(
            &ctx.layout.build_log(r),
            std::fs::OpenOptions::new().append(true),
        )
        .ok()
    });
    ctx.ui.step(
        "Notifying",
        format!("{command} ({} {})", event.event, event.outcome),
    );
    let hook = Hook {
        kind: crate::hooks::Kind::Notify,
        command,
        cwd,
        env: &env,
        timeout,
        timeout_key: "hooks.notify_timeout",
    };
    if let Err(e) = hooks::run_with_stdin(&hook, &ctx.ui, log.as_mut(), Some(payload.as_bytes())) {
        let mut why = e.message.clone();
        for cause in &e.causes {
            why.push_str(": ");
            why.push_str(cause);
        }
        ctx.ui.warn(format!(
            "{why}; the {} {} stands (the notify hook never changes an outcome)",
            event.event, event.outcome
        ));
    }
}
