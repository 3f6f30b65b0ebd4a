//! What flags shared by several commands mean: `--wait`.

use std::time::Duration;

use crate::cli::WaitArg;
use crate::config::{self, Config};
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
