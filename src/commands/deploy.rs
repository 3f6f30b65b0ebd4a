use serde_json::json;

use crate::cli::DeployArgs;
use crate::context::Ctx;
use crate::deploy::{self, Request};
use crate::error::Result;
use crate::ui;

pub fn run(ctx: &Ctx, args: &DeployArgs) -> Result<()> {
    // `--archive` replaces [source] for this deploy (a fleet's controller
    // unpacks it and ships it as it ships a built tree).
    let with_archive;
    let ctx = match &args.archive {
        Some(archive) => {
            let mut config = ctx.config.clone();
            let archive = if archive.as_os_str() == "-" {
                archive.clone()
            } else {
                std::path::absolute(archive).unwrap_or_else(|_| archive.clone())
            };
            config.source.archive = Some(archive);
            config.source.sha256 = None;
            config.source.git = None;
            config.source.path = None;
            with_archive = Ctx::new(config, ctx.ui);
            &with_archive
        }
        None => ctx,
    };
    let req = Request {
        reference: args.reference.clone(),
        no_rollback: args.no_rollback,
        pushed_repo: None,
        branch: None,
        skip_migrate: args.skip_migrate,
    };
    let wait = super::options::wait_for(&args.wait, &ctx.config)?;
    if let Some(fleet) = &ctx.config.fleet {
        return super::options::fleet(
            ctx,
            fleet,
            "deploy",
            args.reference.clone(),
            None,
            args.no_rollback,
            &args.fleet,
            args.json,
            wait,
            false,
            args.skip_migrate,
        );
    }
    if args.no_rollback && ctx.config.slots.is_some() {
        return Err(crate::error::Error::usage(
            "--no-rollback does not apply with [slots]: a release that fails its gate in the \
             idle slot was never live, so there is nothing to leave live",
        )
        .hint(
            "deploy without --no-rollback; to inspect a refused release, read its build log \
             (`shipit releases` lists it as failed)",
        ));
    }
    deploy::preflight(ctx, &req)?;
    let (_lock, state) = crate::mutation::begin_reading(ctx, wait)?;
    let outcome = deploy::run(ctx, &req, state)?;
    if args.json {
        let _ = ui::out_json(&json!({
            "release": outcome.release,
            "previous": outcome.previous,
            "revision": outcome.revision,
            "branch": outcome.branch,
            "removed": outcome.removed,
            "duration_ms": outcome.duration.as_millis() as u64,
        }));
    }
    super::format::report_deployed(ctx, &outcome);
    if ctx.ui.quiet() && !args.json {
        // The result of a quiet deploy, for scripts: the release id.
        let _ = ui::out(&format!("{}\n", outcome.release));
    }
    Ok(())
}
