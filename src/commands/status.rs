//! `shipit status`: what is live, is it healthy right now, how did the last
//! deploy end. Read-only: never takes the lock, so it answers even while a
//! deploy runs.

use serde_json::{Value, json};

use crate::cli::StatusArgs;
use crate::context::Ctx;
use crate::error::Result;
use crate::health;
use crate::history;
use crate::store;
use crate::ui;

pub fn run(ctx: &Ctx, args: &StatusArgs) -> Result<()> {
    if let Some(fleet) = &ctx.config.fleet {
        return crate::fleet::status(ctx, fleet, args.json);
    }
    let mut current = store::read_current(&ctx.layout)?;
    // With slots, users reach what the front's link names; after a crash
    // between the two switches `current` lags behind until the next
    // mutating command repairs it. Show what users reach.
    if let Some(front) = crate::slots::live_release(ctx)
        && current.id() != Some(&front)
    {
        ctx.ui.warn(format!(
            "the front reaches {}, but current names {}: shipit was stopped between the two \
             switches; the next deploy or rollback repairs current",
            crate::layout::Layout::display(&front),
            current.describe()
        ));
        current = store::Current::Release(front);
    }
    let listing = store::list(&ctx.layout).ok();
    let release = current
        .id()
        .and_then(|id| listing.as_ref()?.get(id).cloned());
    // Entries in releases/ that are not releases: left alone, but shown.
    let stray: Vec<String> = listing.map(|l| l.foreign).unwrap_or_default();
    // Damaged metadata must not hide what is live and whether it is healthy.
    let meta = match current.id().map(|id| store::read_metadata(&ctx.layout, id)) {
        Some(Ok(meta)) => meta,
        Some(Err(e)) => {
            ctx.ui
                .warn(format!("{e}; showing what is known without it"));
            None
        }
        None => None,
    };
    let probe = ctx.config.health.as_ref().map(|h| {
        let body = h.expect_body.as_deref().map(|t| {
            health::expected_body(
                t,
                current.id().map(|i| i.as_str()).unwrap_or(""),
                meta.as_ref().and_then(|m| m.revision.as_deref()),
            )
        });
        let agent = health::agent(h.request_timeout);
        (
            crate::urls::redact_url(&h.url),
            health::probe(&agent, &h.url, h.expect_status, body.as_deref()),
        )
    });
    let slots = crate::slots::describe_or_warn(ctx);
    let events = match history::read(&ctx.layout) {
        Ok(log) => log.events,
        Err(e) => {
            ctx.ui.warn(format!("{e}; the last deploy is unknown"));
            Vec::new()
        }
    };
    let last_deploy = events
        .iter()
        .rev()
        .find(|e| e.event == crate::history::EventKind::Deploy);
    let last_event = events
        .iter()
        .rev()
        .find(|e| e.event != crate::history::EventKind::Prune);

    if args.json {
        let health = match &probe {
            Some((url, o)) => json!({"url": url, "passed": o.passed, "detail": o.detail}),
            None => Value::Null,
        };
        let _ = ui::out_json(&json!({
            "current": current.id(),
            "live": current.describe(),
            "revision": meta.as_ref().and_then(|m| m.revision.clone()),
            "branch": meta.as_ref().and_then(|m| m.branch.clone()),
            "status": meta.as_ref().map(|m| m.status.as_str()),
            "proven": release.as_ref().map(|r| r.proven),
            "health": health,
            "slots": slots.as_ref().map(|v| v.to_json()),
            "stray": stray,
            "last_deploy": last_deploy,
            "last_event": last_event,
        }));
        return Ok(());
    }
    let mut text = format!("live:         {}\n", current.describe());
    if release.as_ref().is_some_and(|r| !r.proven) {
        text.push_str(
            "proven:       no: it has not passed its gate as the live release (`shipit rollback` \
             returns to the last one that did)\n",
        );
    }
    if let Some(m) = &meta {
        text.push_str(&match (&m.revision, &m.branch) {
            (Some(rev), Some(branch)) => format!("revision:     {rev} ({branch})\n"),
            (Some(rev), None) => format!("revision:     {rev}\n"),
            _ => "revision:     none (deployed from a directory)\n".to_string(),
        });
        text.push_str(&format!(
            "deployed:     {} by {}\n",
            m.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            m.deployed_by
        ));
    }
    match &probe {
        Some((url, o)) => {
            let verdict = if o.passed { "healthy" } else { "UNHEALTHY" };
            text.push_str(&format!(
                "health:       {verdict}: {url} answered {}\n",
                o.detail
            ));
        }
        None => text.push_str("health:       no [health] configured\n"),
    }
    if let Some(view) = &slots {
        for line in view.lines() {
            text.push_str(&format!("slot:         {line}\n"));
        }
    }
    for name in &stray {
        text.push_str(&format!(
            "stray:        {} is not a release (shipit leaves it alone)\n",
            ctx.layout.releases().join(name).display()
        ));
    }
    let when = |e: &history::Event| e.time.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let said = |e: &history::Event| e.said().map(|m| format!(": {m}")).unwrap_or_default();
    match last_event {
        Some(e) => text.push_str(&format!(
            "last event:   {} {}, {} at {}{}\n",
            e.event,
            e.outcome,
            e.what(),
            when(e),
            said(e)
        )),
        None => text.push_str("last event:   none recorded\n"),
    }
    // The last deploy too, when a rollback came after it.
    if let Some(d) = last_deploy
        && !last_event.is_some_and(|e| std::ptr::eq(e, d))
    {
        text.push_str(&format!(
            "last deploy:  {} {} at {}{}\n",
            d.outcome,
            d.what(),
            when(d),
            said(d)
        ));
    }
    let _ = ui::out(&text);
    Ok(())
}
