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
}

/// Deploy: make the freshly published `live.id` live. On failure, what was
/// live before is live again (unless `no_rollback` left the new one live),
/// and the error's kind says which.
pub fn deploy(ctx: &Ctx, live: &Live, no_rollback: bool) -> Result<(), Failed> {
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
    let env = hook_env(&ctx.layout, live);
    let hook = Hook {
        name: "reload",
        command,
        cwd: &ctx.layout.release(live.id),
        env: &env,
        timeout: ctx.config.hooks.reload_timeout,
        timeout_key: "hooks.reload_timeout",
    };
    hooks::run(&hook, &ctx.ui, log.as_mut())
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
        health::gate(health, live.id.as_str(), live.revision, &ctx.ui)?;
    }
    warn_stale_processes(ctx, live.id, &[]);
    Ok(())
}

/// Name processes still running from a release other than `live` (or one
/// `expected` to run, like a warm standby slot's): process
/// managers that resolved `current` once at start keep running old code.
pub(crate) fn warn_stale_processes(ctx: &Ctx, live: &ReleaseId, expected: &[ReleaseId]) {
    for (id, list) in procs::releases_in_use(&ctx.layout) {
        if &id == live || expected.contains(&id) {
            continue;
        }
        let names: Vec<String> = list
            .iter()
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect();
        ctx.ui.warn(format!(
            "{} still runs from {}, not the live {}; restart it (a process manager that resolved \
             `current` at start keeps old code after a reload)",
            names.join(", "),
            Layout::display(&id),
            Layout::display(live)
        ));
    }
}
