//! After the swap: run the reload hook, gate on health, name stale processes.
//!
//! Deploy, rollback and the automatic swap back all end the same way once
//! `current` has moved, so the sequence lives here once. The caller owns the
//! swap itself (only it knows what to swap back to when this fails).

use std::fs::OpenOptions;

use crate::context::Ctx;
use crate::error::Result;
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
pub fn reload_and_gate(ctx: &Ctx, live: &Live) -> Result<()> {
    if let Some(command) = &ctx.config.hooks.reload {
        ctx.ui.step("Reloading", command);
        let log_path = ctx.layout.build_log(live.id);
        let mut log =
            crate::state::open(&log_path, OpenOptions::new().create(true).append(true)).ok();
        let env = hook_env(&ctx.layout, live);
        let hook = Hook {
            name: "reload",
            command,
            cwd: &ctx.layout.release(live.id),
            env: &env,
            timeout: ctx.config.hooks.reload_timeout,
        };
        hooks::run(&hook, &ctx.ui, log.as_mut())?;
    }
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
    warn_stale_processes(ctx, live.id);
    Ok(())
}

/// Name processes still running from a release other than `live`: process
/// managers that resolved `current` once at start keep running old code.
fn warn_stale_processes(ctx: &Ctx, live: &ReleaseId) {
    for (id, list) in procs::releases_in_use(&ctx.layout) {
        if &id == live {
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
