use std::time::Instant;

use serde_json::json;

use crate::cli::PruneArgs;
use crate::context::Ctx;
use crate::error::{Error, Result};
use crate::history::{self, Event};
use crate::layout::Layout;
use crate::prune;
use crate::ui;
use crate::views::DiskTotal;

pub fn run(ctx: &Ctx, args: &PruneArgs) -> Result<()> {
    if ctx.config.fleet.is_some() {
        return Err(Error::usage(
            "with [fleet], releases live on the hosts: each host prunes after every deploy",
        )
        .hint("to prune a host by hand, run `shipit prune` there with its config (<deploy_to>/.shipit/fleet.toml)"));
    }
    let keep = args.keep.unwrap_or(ctx.config.keep_releases);
    if keep == 0 {
        return Err(Error::usage("--keep 0 would delete the live release")
            .hint("keep at least 1; current and the rollback target are always kept"));
    }
    let wait = super::options::wait_for(&args.wait, &ctx.config)?;
    let started = Instant::now();
    // Refuse what prune would refuse under the lock before taking it, so a
    // refusal leaves the deploy directory exactly as it was.
    let listing = crate::store::list(&ctx.layout)?;
    crate::store::require_sane_current(&ctx.layout)?;
    if let Some(warning) = listing.stray_warning(&ctx.layout) {
        ctx.ui.warn(warning);
    }
    let _lock = if args.dry_run {
        None
    } else {
        Some(crate::mutation::begin(ctx, wait)?)
    };
    let (plan, removed) = prune::run(ctx, keep, args.dry_run)?;
    // What the releases it removes share with no other file: removing them
    // frees at least that (extents they share only among themselves go
    // too, so it can be more).
    let removing: std::collections::BTreeSet<_> = plan.remove.iter().collect();
    let frees = DiskTotal::of(listing.releases.iter().filter(|r| removing.contains(&r.id)));
    if !args.dry_run {
        crate::release::forget_unused_pristines(ctx);
        prune::remeasure(ctx, &removed);
        let mut event = Event::new(
            crate::history::EventKind::Prune,
            crate::history::Outcome::Ok,
        );
        event.removed = removed.clone();
        event.live = crate::store::read_current(&ctx.layout)?.id().cloned();
        event.duration_ms = started.elapsed().as_millis() as u64;
        history::append(&ctx.layout, &event)?;
    }
    if args.json {
        let kept: Vec<_> = plan
            .keep
            .iter()
            .map(|(id, reason)| json!({"id": id, "reason": reason}))
            .collect();
        let remove = if args.dry_run { &plan.remove } else { &removed };
        let mut out = json!({"dry_run": args.dry_run, "removed": remove, "kept": kept});
        if args.dry_run {
            out["would_free"] = serde_json::to_value(frees).expect("a total serializes");
        }
        let _ = ui::out_json(&out);
        return Ok(());
    }
    let verb = if args.dry_run {
        "Would remove"
    } else {
        "Removed"
    };
    for id in &plan.remove {
        ctx.ui.step(verb, Layout::display(id));
    }
    if args.dry_run && !plan.remove.is_empty() {
        ctx.ui.step(
            "Would free",
            format!(
                "at least {} (the bytes of the releases it removes that no other file \
                 shares; what they share only with each other is freed too){}",
                crate::disk::human(frees.unshared_bytes),
                frees.unmeasured_note()
            ),
        );
    }
    if plan.remove.is_empty() {
        let verb = if args.dry_run { "Would keep" } else { "Kept" };
        ctx.ui.step(
            verb,
            format!("all {} release(s): nothing to remove", plan.keep.len()),
        );
    }
    Ok(())
}
