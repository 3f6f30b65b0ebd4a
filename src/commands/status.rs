//! `shipit status`: what is live, is it healthy right now, how did the last
//! deploy end. Read-only: never takes the lock, so it answers even while a
//! deploy runs.

use crate::cli::StatusArgs;
use crate::context::Ctx;
use crate::error::Result;
use crate::history::Event;
use crate::ui;
use crate::views::status::Status;

pub fn run(ctx: &Ctx, args: &StatusArgs) -> Result<()> {
    if let Some(fleet) = &ctx.config.fleet {
        return crate::fleet::status(ctx, fleet, args.json);
    }
    let view = Status::read(ctx)?;
    if args.json {
        let _ = ui::out_json(&serde_json::to_value(&view).expect("a view serializes"));
    } else {
        let _ = ui::out(&text(&view));
    }
    Ok(())
}

/// One line a fact: `live:`, whether it proved itself, its revision and
/// deploy, its health now, the slots, stray entries, the last event and
/// the last deploy (when a rollback came after it).
fn text(view: &Status) -> String {
    let mut text = format!("live:         {}\n", view.live);
    if view.proven == Some(false) {
        text.push_str(
            "proven:       no: it has not passed its gate as the live release (`shipit rollback` \
             returns to the last one that did)\n",
        );
    }
    if let Some((at, by)) = &view.deployed {
        text.push_str(&match (&view.revision, &view.branch) {
            (Some(rev), Some(branch)) => format!("revision:     {rev} ({branch})\n"),
            (Some(rev), None) => format!("revision:     {rev}\n"),
            _ => "revision:     none (deployed from a directory)\n".to_string(),
        });
        text.push_str(&format!(
            "deployed:     {} by {by}\n",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    match &view.health {
        Some(probe) => {
            let verdict = if probe.passed { "healthy" } else { "UNHEALTHY" };
            text.push_str(&format!(
                "health:       {verdict}: {} answered {}\n",
                probe.url, probe.detail
            ));
        }
        None => text.push_str("health:       no [health] configured\n"),
    }
    if let Some(slots) = &view.slots {
        for line in slots.lines() {
            text.push_str(&format!("slot:         {line}\n"));
        }
    }
    for (_, path) in &view.stray {
        text.push_str(&format!(
            "stray:        {path} is not a release (shipit leaves it alone)\n"
        ));
    }
    let when = |e: &Event| e.time.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let said = |e: &Event| e.said().map(|m| format!(": {m}")).unwrap_or_default();
    match &view.last_event {
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
    if let Some(d) = &view.last_deploy
        && view
            .last_event
            .as_ref()
            .is_none_or(|e| e.event != d.event || e.time != d.time)
    {
        text.push_str(&format!(
            "last deploy:  {} {} at {}{}\n",
            d.outcome,
            d.what(),
            when(d),
            said(d)
        ));
    }
    text
}
