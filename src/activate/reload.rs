//! The reload strategy: swap `current`, run the reload hook, gate on health.
//!
//! The gate runs after the swap, so users meet the new release while it
//! runs; when it fails, a deploy swaps back to what was live before (or, on
//! a first deploy, removes `current` again) and reloads and gates that. A
//! rollback whose gate fails stays where it is and says so loudly: bouncing
//! between two releases would only add outages.

use std::fs::OpenOptions;

use super::live::{Failed, Live, hook_env};
use super::stale::warn_stale_processes;
use crate::context::Ctx;
use crate::error::{Error, Kind, Result};
use crate::health;
use crate::hooks::{self, Hook};
use crate::interrupt;
use crate::layout::{Layout, ReleaseId};
use crate::procs;
use crate::store::{self, Status};
use crate::swap;

/// What `live.previous` means in a `live now:` line.
fn describe(release: Option<&ReleaseId>) -> String {
    release
        .map(Layout::display)
        .unwrap_or_else(|| "nothing (no current release)".into())
}

pub fn deploy(ctx: &Ctx, live: &Live, no_rollback: bool) -> Result<(), Failed> {
    let layout = &ctx.layout;
    let id = live.id;
    let swapped = interrupt::check().and_then(|_| {
        ctx.ui
            .step("Swapping", format!("current -> {}", Layout::display(id)));
        swap::point_current(layout, id).map(|s| s.report(&ctx.ui))
    });
    if let Err(e) = swapped {
        // Nothing went live: the release never served and is removed.
        let _ = store::remove_release(layout, id);
        return Err(Failed {
            error: e.in_phase(Kind::BeforeSwap).live(describe(live.previous)),
            live: live.previous.cloned(),
            refused: false,
        });
    }
    crate::crashpoint::hit("reload:after-swap");
    reload_and_gate(ctx, live).map_err(|e| recover(ctx, no_rollback, live, e))
}

/// The reload or gate failed after the swap: put things back the way they
/// were (unless `--no-rollback`), and say what is live now.
fn recover(ctx: &Ctx, no_rollback: bool, live: &Live, failure: Error) -> Failed {
    let layout = &ctx.layout;
    let id = live.id;
    let interrupted = failure.kind == Kind::Interrupted;
    let why = failure.to_string().replace('\n', "; ");
    if let Err(e) = store::set_status(layout, id, Status::Failed, Some(why)) {
        ctx.ui.warn(format!(
            "could not mark {} failed: {e}",
            Layout::display(id)
        ));
    }
    let inspect = format!(
        "inspect {} and its log {}",
        layout.release(id).display(),
        layout.build_log(id).display()
    );
    let headline = if interrupted {
        format!(
            "deploy of {} was interrupted after the swap",
            Layout::display(id)
        )
    } else {
        format!("deploy of {} failed after the swap", Layout::display(id))
    };
    let mut failure = failure;
    failure.kind = Kind::Internal;
    failure.live = None;
    failure.hint = None;
    let err = failure.context(headline);
    let failed = |kind: Kind, error: Error, live: Option<&ReleaseId>| Failed {
        error: Error { kind, ..error },
        live: live.cloned(),
        refused: false,
    };

    if no_rollback && !interrupted {
        let hint = match live.previous {
            Some(p) => format!(
                "{inspect}; deploy a fix, or `shipit rollback` to return to {}",
                Layout::display(p)
            ),
            None => format!("{inspect}; deploy a fix"),
        };
        let e = err
            .live(format!(
                "{} (left live by --no-rollback; it is failing)",
                Layout::display(id)
            ))
            .hint(hint);
        return failed(Kind::LeftLive, e, Some(id));
    }
    // The swap back and its checks must run even though a signal arrived.
    interrupt::clear();
    let kind = if interrupted {
        Kind::Interrupted
    } else {
        Kind::RolledBack
    };

    let Some(prev) = live.previous else {
        ctx.ui.step(
            "Removing",
            "current (this was the first deploy: nothing to roll back to)",
        );
        if let Err(e) = swap::remove_current(layout) {
            let e = err.cause(e).live(format!(
                "{} (failing; could not remove current)",
                Layout::display(id)
            ));
            return failed(Kind::RollbackFailed, e, Some(id));
        }
        let e = err
            .live("nothing: this was the first deploy, so there is no previous release; current was removed")
            .hint(format!("{inspect}; fix it and deploy again"));
        return failed(kind, e, None);
    };

    ctx.ui.step(
        "Rolling back",
        format!("current -> {}", Layout::display(prev)),
    );
    let swapped_back = swap::point_current(layout, prev).map(|s| s.report(&ctx.ui));
    if let Err(e) = swapped_back {
        let e = err
            .cause(format!("the swap back failed: {e}"))
            .live(format!(
                "{} (failing: the swap back did not happen)",
                Layout::display(id)
            ))
            .hint(format!("run `shipit rollback --to {prev}` now"));
        return failed(Kind::RollbackFailed, e, Some(id));
    }
    let prev_meta = store::read_metadata(layout, prev).ok().flatten();
    let back = Live {
        id: prev,
        revision: prev_meta.as_ref().and_then(|m| m.revision.as_deref()),
        branch: prev_meta.as_ref().and_then(|m| m.branch.as_deref()),
        previous: Some(id),
    };
    if let Err(again) = reload_then_probe(ctx, &back) {
        let state = if again.site_may_be_down {
            "unhealthy: the site may be down"
        } else {
            "answering, but not proven to be this release"
        };
        let e = err
            .cause(format!(
                "rolled back to {}, but it did not prove healthy either: {}",
                Layout::display(prev),
                one_line(&again.error)
            ))
            .live(format!("{} ({state})", Layout::display(prev)))
            .hint("check the app and its process manager now; `shipit status` probes it again");
        return failed(Kind::RollbackFailed, e, Some(prev));
    }
    warn_stale_processes(ctx, &procs::scan(layout), prev, &[]);
    let e = err
        .live(format!("{} (rolled back; healthy)", Layout::display(prev)))
        .hint(inspect);
    failed(kind, e, Some(prev))
}

/// Point `current` at the existing release `live.id`, reload, gate.
pub fn rollback(ctx: &Ctx, live: &Live) -> Result<(), Failed> {
    let target = live.id;
    let from = live.previous;
    ctx.ui.step(
        "Swapping",
        format!("current -> {}", Layout::display(target)),
    );
    // A signal that came before the swap stops the rollback here: swapping
    // and then killing the reload at once would leave old code serving.
    let swapped = interrupt::check()
        .and_then(|_| swap::point_current(&ctx.layout, target).map(|s| s.report(&ctx.ui)));
    if let Err(e) = swapped {
        return Err(Failed {
            error: e
                .context("rollback failed: the swap did not happen")
                .live(describe(from)),
            live: from.cloned(),
            refused: false,
        });
    }
    reload_then_probe(ctx, live).map_err(|e| unproven(live, e))
}

/// Reload and gate a release that users are already being sent to (a
/// rollback, or the swap back after a failed deploy). A failed reload hook
/// does not by itself mean the site is down: the health URL is probed
/// either way, and only what it answers decides. A passing probe proves the
/// release only when `expect_body` names it (`{release}` or `{revision}`);
/// otherwise the processes of the release left behind could be the ones
/// answering, and the failure stands.
fn reload_then_probe(ctx: &Ctx, live: &Live) -> Result<(), Unproven> {
    let down = |error: Error| Unproven {
        error,
        site_may_be_down: true,
    };
    let reloaded = reload(ctx, live);
    if let Err(e) = reloaded {
        if e.kind == Kind::Interrupted {
            return Err(down(e));
        }
        return probe_after_failed_reload(ctx, live, e);
    }
    gate(ctx, live, Going::Back).map_err(down)
}

/// Why a release users are sent to is not proven, and whether the health
/// URL failed too (the site may be down) or answered without proving which
/// release serves.
struct Unproven {
    error: Error,
    site_may_be_down: bool,
}

fn probe_after_failed_reload(ctx: &Ctx, live: &Live, reload_error: Error) -> Result<(), Unproven> {
    let down = |error: Error| Unproven {
        error,
        site_may_be_down: true,
    };
    let Some(health) = &ctx.config.health else {
        return Err(down(reload_error.context(
            "the reload hook failed, and without [health] nothing could be probed",
        )));
    };
    if let Err(gate_error) = gate(ctx, live, Going::Back) {
        return Err(down(gate_error.context(format!(
            "the reload hook failed ({}), and the health gate then failed too",
            one_line(&reload_error)
        ))));
    }
    let body = health
        .expect_body
        .as_deref()
        .map(|t| crate::health::expected_body(t, live.id.as_str(), live.revision));
    let seen = crate::health::probe(
        &crate::health::agent(health.request_timeout),
        &health.url,
        health.expect_status,
        body.as_deref(),
    )
    .detail;
    let url = crate::urls::redact_url(&health.url);
    let names_release = health
        .expect_body
        .as_deref()
        .is_some_and(|b| b.contains("{release}") || b.contains("{revision}"));
    if names_release {
        ctx.ui.warn(format!(
            "the reload hook failed ({}), but the health gate passed: {url} answered {seen}, so \
             {} is live and serving; look at the reload hook before the next deploy",
            one_line(&reload_error),
            Layout::display(live.id)
        ));
        return Ok(());
    }
    // The gate passed, but proves nothing: name what still runs from the
    // other releases, the evidence for the doubt this error states.
    warn_stale_processes(ctx, &procs::scan(&ctx.layout), live.id, &[]);
    Err(Unproven {
        error: reload_error.context(format!(
            "the reload hook failed; {url} answers ({seen}), but health.expect_body does not \
             name the release, so shipit cannot tell whether {} or processes of the release you \
             left are answering (set expect_body = \"{{release}}\", with the app reporting its \
             release, to prove it)",
            Layout::display(live.id)
        )),
        site_may_be_down: false,
    })
}

fn one_line(e: &Error) -> String {
    e.to_string().replace('\n', "; ")
}

/// A rollback whose target did not prove healthy: it stays live (bouncing
/// back would only add an outage), and the error says so loudly.
fn unproven(live: &Live, why: Unproven) -> Failed {
    let target = live.id;
    let e = why.error;
    let interrupted = e.kind == Kind::Interrupted;
    let down = if why.site_may_be_down {
        ": the site may be down"
    } else {
        ""
    };
    let mut e = e.context(format!(
        "rolled back to {}, but it did not prove healthy{down}",
        Layout::display(target)
    ));
    e.kind = if interrupted {
        Kind::Interrupted
    } else {
        Kind::RollbackFailed
    };
    let back = live
        .previous
        .map(|f| format!("; `shipit rollback --to {f}` returns to the release you left"))
        .unwrap_or_default();
    Failed {
        error: e
            .live(format!("{} (not proven healthy)", Layout::display(target)))
            .hint(format!("check the app and its process manager now{back}")),
        live: Some(target.clone()),
        refused: false,
    }
}

/// Reload, then gate. `Err` means the release is not proven healthy.
pub(crate) fn reload_and_gate(ctx: &Ctx, live: &Live) -> Result<()> {
    reload(ctx, live)?;
    gate(ctx, live, Going::Forward)
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
        kind: hooks::Kind::Reload,
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

/// Which way a gate goes: to a new release (a deploy), or back to one that
/// was live (a rollback, or the swap back after a failed gate).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Going {
    Forward,
    Back,
}

/// Gate `live` on health (passes at once without `[health]`). Processes
/// left in other releases are named by the caller once the activation is
/// over ([`super::Activated`]).
pub(crate) fn gate(ctx: &Ctx, live: &Live, going: Going) -> Result<()> {
    if let Some(health) = &ctx.config.health {
        ctx.ui.step(
            "Checking",
            format!(
                "{} for {}",
                crate::urls::redact_url(&health.url),
                Layout::display(live.id)
            ),
        );
        crate::crashpoint::hit("reload:gate");
        let (id, revision) = (live.id.as_str(), live.revision);
        match going {
            Going::Forward => health::gate(health, id, revision, &ctx.ui)?,
            Going::Back => health::gate_back(health, id, revision, &ctx.ui)?,
        }
    }
    Ok(())
}
