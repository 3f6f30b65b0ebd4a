//! What flags shared by several commands mean: `--wait`, and a deploy or
//! rollback handed to the fleet.

use std::time::Duration;

use crate::cli::WaitArg;
use crate::config::{self, Config};
use crate::context::Ctx;
use crate::error::Result;

/// `--wait` → how long to wait for the lock (`None`: fail at once).
pub fn wait_for(arg: &WaitArg, config: &Config) -> Result<Option<Duration>> {
    match arg.wait.as_deref() {
        None => Ok(None),
        Some("") => Ok(Some(config.lock.wait)),
        Some(text) => {
            let wait = config::parse_duration(text)
                .map_err(|e| e.context(format!("--wait={text} is not a duration")))?;
            let limit = config::duration_limit("--wait");
            if wait > limit {
                let limit = humantime::format_duration(limit);
                return Err(crate::error::Error::usage(format!(
                    "--wait={text} is longer than its limit of {limit}"
                ))
                .hint(format!("wait at most {limit}, e.g. --wait=10m")));
            }
            Ok(Some(wait))
        }
    }
}

/// `deploy` and `rollback` with a `[fleet]`: the controller's side.
#[allow(clippy::too_many_arguments)]
pub fn fleet(
    ctx: &Ctx,
    fleet: &crate::config::FleetConfig,
    event: &'static str,
    reference: Option<String>,
    to: Option<crate::layout::ReleaseId>,
    no_rollback: bool,
    arg: &crate::cli::NoRevertArg,
    json: bool,
    wait: Option<Duration>,
    force: bool,
    skip_migrate: bool,
) -> Result<()> {
    if no_rollback {
        return Err(crate::error::Error::usage(
            "--no-rollback does not apply to a fleet: a failing host always rolls itself back",
        )
        .hint("to keep the hosts already switched on the new release, use --no-revert"));
    }
    let req = crate::fleet::Request {
        event,
        reference,
        to,
        no_revert: arg.no_revert,
        json,
        wait,
        force,
        skip_migrate,
    };
    crate::fleet::run(ctx, fleet, &req)
}
