use chrono::Utc;
use serde_json::json;

use crate::cli::ReleasesArgs;
use crate::context::Ctx;
use crate::error::Result;
use crate::store;
use crate::ui;
use crate::views::{DiskTotal, ReleaseRow, shown_status};

pub fn run(ctx: &Ctx, args: &ReleasesArgs) -> Result<()> {
    if let Some(fleet) = &ctx.config.fleet {
        return crate::fleet::releases(ctx, fleet, args.json);
    }
    let listing = store::list(&ctx.layout)?;
    let current = store::read_current(&ctx.layout)?;
    if let Some(warning) = listing.stray_warning(&ctx.layout) {
        ctx.ui.warn(warning);
    }
    let newest_first = listing.releases.iter().rev();
    let slots = crate::slots::describe_or_warn(ctx);
    let slot_of = |id: &crate::layout::ReleaseId| slots.as_ref().and_then(|v| v.slot_of(id));
    if args.json {
        let releases: Vec<ReleaseRow> = newest_first
            .map(|r| ReleaseRow::of(ctx, r, current.id() == Some(&r.id), slot_of(&r.id)))
            .collect();
        let _ = ui::out_json(&json!({
            "current": current.id(),
            "releases": releases,
            "stray": listing.foreign,
            "slots": slots.as_ref().map(|v| v.to_json()),
            "disk": DiskTotal::of(&listing.releases),
        }));
        return Ok(());
    }
    if listing.releases.is_empty() {
        ctx.ui.step(
            "Releases",
            format!("none yet in {}", ctx.layout.releases().display()),
        );
        return Ok(());
    }
    let now = Utc::now();
    let slot_column = |id: Option<&crate::layout::ReleaseId>| match &slots {
        None => String::new(),
        Some(_) => match id {
            None => format!("{:<6}  ", "SLOT"),
            Some(id) => format!("{:<6}  ", slot_of(id).map_or("-", |s| s.name())),
        },
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
    for r in newest_first {
        let is_current = current.id() == Some(&r.id);
        let m = r.meta.as_ref();
        let created = m.map_or(r.id.time(), |m| m.created_at);
        let branch = m
            .and_then(|m| m.branch.clone())
            .unwrap_or_else(|| "-".into());
        let disk = m.and_then(|m| m.disk);
        let line = format!(
            "{} {:<14}  {:>5}  {:<10}  {:<16}  {:>10}  {:>10}  {}{}\n",
            if is_current { "*" } else { " " },
            r.id.as_str(),
            super::format::age((now - created).num_seconds()),
            super::format::short(m.and_then(|m| m.revision.as_deref())),
            branch,
            figure(disk.map(|d| d.size_bytes)),
            figure(disk.map(|d| d.unshared_bytes)),
            slot_column(Some(&r.id)),
            shown_status(r, is_current),
        );
        text.push_str(&if is_current { ctx.ui.bold(&line) } else { line });
    }
    let total = DiskTotal::of(&listing.releases);
    text.push_str(&format!(
        "  total: {} in {} release(s), {} of it unshared (what removing each alone frees){}\n",
        crate::disk::human(total.size_bytes),
        listing.releases.len(),
        crate::disk::human(total.unshared_bytes),
        total.unmeasured_note()
    ));
    let _ = ui::out(&text);
    Ok(())
}
