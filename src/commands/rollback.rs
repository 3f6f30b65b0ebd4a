use serde_json::json;

use crate::cli::RollbackArgs;
use crate::context::Ctx;
use crate::error::Result;
use crate::layout::{Layout, ReleaseId};
use crate::rollback;
use crate::ui;

pub fn run(ctx: &Ctx, args: &RollbackArgs) -> Result<()> {
    // An id is checked before anything else: `--to ../../etc` never gets
    // near a path, and a bad one changes nothing (not even the lock file).
    let to = args.to.as_deref().map(ReleaseId::parse).transpose()?;
    let wait = super::options::wait_for(&args.wait, &ctx.config)?;
    if let Some(fleet) = &ctx.config.fleet {
        let req = crate::fleet::Request {
            event: crate::history::EventKind::Rollback,
            reference: None,
            to,
            no_revert: args.fleet.no_revert,
            json: args.json,
            wait,
            force: args.force,
            // A rollback never runs the migrate hook.
            skip_migrate: false,
        };
        return crate::fleet::run(ctx, fleet, &req);
    }
    rollback::choose(ctx, to.as_ref(), args.force)?;
    // The reload hook needs env_file; nothing has changed yet.
    crate::hookenv::require().map_err(|mut e| {
        e.kind = crate::error::Kind::Usage;
        e
    })?;
    let _lock = crate::mutation::begin(ctx, wait)?;
    let outcome = rollback::run(ctx, to.as_ref(), args.force)?;
    if args.json {
        let _ = ui::out_json(&json!({
            "from": outcome.from,
            "to": outcome.to,
            "duration_ms": outcome.duration.as_millis() as u64,
        }));
    }
    ctx.ui.step(
        "Rolled back",
        format!(
            "to {} in {:.2}s",
            Layout::display(&outcome.to),
            outcome.duration.as_secs_f64()
        ),
    );
    Ok(())
}
