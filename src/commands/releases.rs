//! `shipit releases`: the releases as a table, or as JSON.

use chrono::Utc;

use crate::cli::ReleasesArgs;
use crate::context::Ctx;
use crate::error::Result;
use crate::ui::{self, Ui};
use crate::views::releases::Releases;

pub fn run(ctx: &Ctx, args: &ReleasesArgs) -> Result<()> {
    if let Some(fleet) = &ctx.config.fleet {
        return crate::fleet::releases(ctx, fleet, args.json);
    }
    let view = Releases::read(ctx)?;
    if args.json {
        let _ = ui::out_json(&serde_json::to_value(&view).expect("a view serializes"));
        return Ok(());
    }
    if view.releases.is_empty() {
        ctx.ui.step(
            "Releases",
            format!("none yet in {}", ctx.layout.releases().display()),
        );
        return Ok(());
    }
    let _ = ui::out(&text(&view, &ctx.ui));
    Ok(())
}

/// The table: one line a release, newest first, the live one marked and
/// bold, then the disk total.
fn text(view: &Releases, ui: &Ui) -> String {
    let now = Utc::now();
    let slot_column = |slot: Option<&str>| match &view.slots {
        None => String::new(),
        Some(_) => format!("{:<6}  ", slot.unwrap_or("SLOT")),
    };
    let mut text = format!(
        "  {:<14}  {:>5}  {:<10}  {:<16}  {:>10}  {:>10}  {}{}\n",
        "ID",
        "AGE",
        "REVISION",
        "BRANCH",
        "SIZE",
        "UNSHARED",
        slot_column(None),
        "STATUS"
    );
    let figure = |bytes: Option<u64>| bytes.map_or_else(|| "?".into(), crate::disk::human);
    for r in &view.releases {
        let created = r.created_at.unwrap_or_else(|| r.id.time());
        let line = format!(
            "{} {:<14}  {:>5}  {:<10}  {:<16}  {:>10}  {:>10}  {}{}\n",
            if r.current { "*" } else { " " },
            r.id.as_str(),
            super::format::age((now - created).num_seconds()),
            super::format::short(r.revision.as_deref()),
            r.branch.as_deref().unwrap_or("-"),
            figure(r.size_bytes),
            figure(r.unshared_bytes),
            slot_column(Some(r.slot.map_or("-", |s| s.name()))),
            r.status,
        );
        text.push_str(&if r.current { ui.bold(&line) } else { line });
    }
    text.push_str(&format!(
        "  total: {} in {} release(s), {} of it unshared (what removing each alone frees){}\n",
        crate::disk::human(view.disk.size_bytes),
        view.releases.len(),
        crate::disk::human(view.disk.unshared_bytes),
        view.disk.unmeasured_note()
    ));
    text
}
