use serde_json::json;

use crate::cli::DeployArgs;
use crate::context::Ctx;
use crate::deploy::{self, Request};
use crate::error::Result;
use crate::history::EventKind;
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
        if args.no_rollback {
            return Err(crate::error::Error::usage(
                "--no-rollback does not apply to a fleet: a failing host always rolls itself back",
            )
            .hint("to keep the hosts already switched on the new release, use --no-revert"));
        }
        let req = crate::fleet::Request {
            event: EventKind::Deploy,
            reference: args.reference.clone(),
            to: None,
            no_revert: args.fleet.no_revert,
            json: args.json,
            wait,
            force: false,
            skip_migrate: args.skip_migrate,
        };
        return crate::fleet::run(ctx, fleet, &req);
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
