//! Activation: making a published release the one users reach.
//!
//! Deploy and rollback differ in where the release comes from (a fresh
//! build, or one already under `releases/`) but not in how it goes live, so
//! both call the two entry points here, [`deploy`] and [`rollback`], and
//! this module picks the strategy from the config:
//! - [`reload`]: swap `current`, run the reload hook, gate on health, and
//!   swap back when the gate fails. Users meet the new release during the
//!   gate.
//! - [`crate::slots`]: start the release in the idle slot, gate it on its own
//!   socket, and only then move the front's link to it. Users never meet a
//!   release that failed its gate.
//!
//! Either way `current` is moved only by [`crate::swap`], and the outcome is
//! one whole release live (or, after a failed first deploy, none).
// An activation fails at most once per run: a large `Err` costs nothing.
#![allow(clippy::result_large_err)]

pub mod reload;

use std::fs::OpenOptions;

use crate::context::Ctx;
use crate::error::{Error, Result};
use crate::health;
use crate::hooks::{self, Hook};
use crate::layout::{Layout, ReleaseId};
use crate::procs;

/// The release that `current` now points at, and where it came from.
pub struct Live<'a> {
    pub id: &'a ReleaseId,
    pub revision: Option<&'a str>,
    pub branch: Option<&'a str>,
    pub previous: Option<&'a ReleaseId>,
}

/// A failed activation: what went wrong, and what is live now.
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    pub live: Option<ReleaseId>,
    /// The release was refused before anything was switched (a slot that
    /// failed its gate): history says `refused`, not `rolled-back`.
    pub refused: bool,
}

/// Deploy: make the freshly published `live.id` live. On failure, what was
/// live before is live again (unless `no_rollback` left the new one live),
/// and the error's kind says which.
pub fn deploy(ctx: &Ctx, live: &Live, no_rollback: bool) -> Result<(), Failed> {
    // Durably, before anything moves: if shipit dies from here on, the next
    // command knows this release began to go live and never proved itself.
    if let Err(e) = crate::store::mark_activation_started(&ctx.layout, live.id) {
        let was = live.previous.map_or("nothing".into(), Layout::display);
        return Err(Failed {
            error: e
                .context(format!(
                    "could not record that {} is going live, so it was not",
                    Layout::display(live.id)
                ))
                .in_phase(crate::error::Kind::BeforeSwap)
                .live(format!("{was} (unchanged)")),
            live: live.previous.cloned(),
            refused: false,
        });
    }
    crate::crashpoint::hit("activation-started");
    match &ctx.config.slots {
        Some(slots) => crate::slots::deploy(ctx, slots, live),
        None => reload::deploy(ctx, live, no_rollback),
    }
}

/// Rollback: make the existing release `live.id` live again (no rebuild).
/// `live.previous` is what is live now.
pub fn rollback(ctx: &Ctx, live: &Live) -> Result<(), Failed> {
    match &ctx.config.slots {
        Some(slots) => crate::slots::rollback(ctx, slots, live),
        None => reload::rollback(ctx, live),
    }
}

/// The variables every hook gets (SPEC §3). Outside values (branch, ids)
/// reach hooks only this way, never inside the command text.
pub fn hook_env(layout: &Layout, live: &Live) -> Vec<(String, String)> {
    vec![
        ("SHIPIT_RELEASE".into(), live.id.to_string()),
        (
            "SHIPIT_RELEASE_PATH".into(),
            layout.release(live.id).display().to_string(),
        ),
        (
            "SHIPIT_DEPLOY_TO".into(),
            layout.root().display().to_string(),
        ),
        ("SHIPIT_REVISION".into(), live.revision.unwrap_or("").into()),
        ("SHIPIT_BRANCH".into(), live.branch.unwrap_or("").into()),
        (
            "SHIPIT_PREVIOUS_RELEASE".into(),
            live.previous.map(|p| p.to_string()).unwrap_or_default(),
        ),
    ]
}

/// Reload, then gate. `Err` means the release is not proven healthy.
pub(crate) fn reload_and_gate(ctx: &Ctx, live: &Live) -> Result<()> {
    reload(ctx, live)?;
    gate(ctx, live)
}

/// Run the reload hook, if there is one, in the live release.
pub(crate) fn reload(ctx: &Ctx, live: &Live) -> Result<()> {
    let Some(command) = &ctx.config.hooks.reload else {
        return Ok(());
    };
    ctx.ui.step("Reloading", command);
    let log_path = ctx.layout.build_log(live.id);
    let mut log = crate::state::open(&log_path, OpenOptions::new().create(true).append(true)).ok();
    // A release's log gains a reload at every rollback to it: mark where
    // each one starts, and why.
    if let Some(log) = log.as_mut() {
        use std::io::Write as _;
        let why = match live.previous {
            Some(p) => format!("after the swap from {p}"),
            None => "after the first swap".into(),
        };
        let _ = writeln!(
            log,
            "--- {} reload of {} {why} ---",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
            live.id
        );
    }
    let env = hook_env(&ctx.layout, live);
    let hook = Hook {
        name: "reload",
        command,
        cwd: &ctx.layout.release(live.id),
        env: &env,
        timeout: ctx.config.hooks.reload_timeout,
        timeout_key: "hooks.reload_timeout",
    };
    let ran = hooks::run(&hook, &ctx.ui, log.as_mut());
    crate::crashpoint::hit("reload:after-reload");
    ran
}

/// Gate `live` on health (passes at once without `[health]`), then name
/// processes left in other releases.
pub(crate) fn gate(ctx: &Ctx, live: &Live) -> Result<()> {
    if let Some(health) = &ctx.config.health {
        ctx.ui.step(
            "Checking",
            format!(
                "{} for {}",
                health::redact_url(&health.url),
                Layout::display(live.id)
            ),
        );
        crate::crashpoint::hit("reload:gate");
        health::gate(health, live.id.as_str(), live.revision, &ctx.ui)?;
    }
    warn_stale_processes(ctx, live.id, &[]);
    Ok(())
}

/// Name processes still running from a release other than `live` (or one
/// `expected` to run, like a warm standby slot's), with the cause and the
/// fix that does not take the site down.
pub(crate) fn warn_stale_processes(ctx: &Ctx, live: &ReleaseId, expected: &[ReleaseId]) {
    for (id, list) in procs::releases_in_use(&ctx.layout) {
        if &id == live || expected.contains(&id) {
            continue;
        }
        for warning in stale_warnings(&list, &id, live) {
            ctx.ui.warn(warning);
        }
    }
}

/// What to say about processes in release `old` while `live` is live: a
/// process that runs `old`'s executable runs old code, and so may one that
/// only sits in it (an app run by an interpreter installed elsewhere); but
/// pm2's daemon sitting there serves nothing from it, and restarting it
/// would be an outage for nothing.
fn stale_warnings(list: &[procs::Proc], old: &ReleaseId, live: &ReleaseId) -> Vec<String> {
    let names = |via: procs::Via| -> Vec<String> {
        list.iter()
            .filter(|p| p.via == via)
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect()
    };
    let (old, live) = (Layout::display(old), Layout::display(live));
    let mut out = Vec::new();
    let running = names(procs::Via::Executable);
    if !running.is_empty() {
        out.push(format!(
            "{} runs an executable from {old}, not the live {live}: it serves old code; restart \
             it through its process manager (a manager that resolved `current` once, at start, \
             keeps old code after a reload)",
            running.join(", ")
        ));
    }
    // pm2's daemon names itself `PM2 vX.Y.Z: God Daemon (...)`; the
    // kernel keeps 15 bytes of that (`PM2 v6.0.13: Go`).
    let is_pm2_daemon = |p: &procs::Proc| p.name.starts_with("PM2 v");
    let sitting: Vec<&procs::Proc> = list
        .iter()
        .filter(|p| p.via == procs::Via::WorkingDirectory)
        .collect();
    let shown = |ps: &[&&procs::Proc]| -> String {
        ps.iter()
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (daemons, others): (Vec<_>, Vec<_>) = sitting.iter().partition(|p| is_pm2_daemon(p));
    if !others.is_empty() {
        out.push(format!(
            "{} has its working directory in {old}, not the live {live}: if it serves requests, \
             it serves old code (a process manager that resolved `current` once, at start, \
             keeps old code after a reload); restart it through its process manager",
            shown(&others)
        ));
    }
    if !daemons.is_empty() {
        out.push(format!(
            "{} has its working directory in {old}, not the live {live}: the pm2 daemon was \
             started from inside a release (by a reload hook, or `pm2 start` run in current). \
             It serves nothing itself, and nothing needs a restart now if the gate proved {live} \
             answers (restarting the daemon restarts the app: an outage); prune keeps {old} \
             while it is used. Start reload hooks with `cd \"$SHIPIT_DEPLOY_TO\" && ...` so the \
             next daemon start happens outside the releases",
            shown(&daemons)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procs::{Proc, Via};

    #[test]
    fn a_daemon_sitting_in_an_old_release_is_not_told_to_restart() {
        let old = ReleaseId::parse("20260101000000").unwrap();
        let live = ReleaseId::parse("20260102000000").unwrap();
        let daemon = Proc {
            pid: 7,
            name: "PM2 v7.0.1: God".into(),
            via: Via::WorkingDirectory,
        };
        let said = stale_warnings(std::slice::from_ref(&daemon), &old, &live);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains("has its working directory in releases/20260101000000"),
            "{}",
            said[0]
        );
        assert!(
            said[0].contains("the pm2 daemon was started from inside a release"),
            "{}",
            said[0]
        );
        assert!(
            said[0].contains("nothing needs a restart now"),
            "{}",
            said[0]
        );
        assert!(said[0].contains("cd \"$SHIPIT_DEPLOY_TO\""), "{}", said[0]);
        assert!(!said[0].contains("restart it"), "{}", said[0]);

        let worker = Proc {
            pid: 8,
            name: "node".into(),
            via: Via::Executable,
        };
        let said = stale_warnings(&[worker, daemon], &old, &live);
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(
            said[0].starts_with("node (pid 8) runs an executable from"),
            "{}",
            said[0]
        );
        assert!(
            said[0].contains("restart it through its process manager"),
            "{}",
            said[0]
        );

        // An app process run by an interpreter outside the release sits in
        // it only by its working directory: it may serve old code, and is
        // told to restart. So is pm2's daemon under a longer version, cut
        // at 15 bytes by the kernel, recognised as the daemon.
        let python = Proc {
            pid: 9,
            name: "python3".into(),
            via: Via::WorkingDirectory,
        };
        let cut = Proc {
            pid: 10,
            name: "PM2 v6.0.13: Go".into(),
            via: Via::WorkingDirectory,
        };
        let said = stale_warnings(&[python, cut], &old, &live);
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(
            said[0].starts_with("python3 (pid 9) has its working directory in"),
            "{}",
            said[0]
        );
        assert!(said[0].contains("it serves old code"), "{}", said[0]);
        assert!(
            said[0].contains("restart it through its process manager"),
            "{}",
            said[0]
        );
        assert!(!said[0].contains("nothing needs a restart"), "{}", said[0]);
        assert!(
            said[1].starts_with("PM2 v6.0.13: Go (pid 10)"),
            "{}",
            said[1]
        );
        assert!(
            said[1].contains("nothing needs a restart now"),
            "{}",
            said[1]
        );
    }
}
