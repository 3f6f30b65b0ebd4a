//! Refs and branch names come from outside (a `--ref`, a config, a push):
//! the one check they pass before git sees them, kept apart so that the
//! config and the source code can both use it without needing each other.

use crate::error::{Error, Result};

/// Reject refs that git could take for an option or that cannot be a
/// revision. Anything else is passed to git as one argument.
pub fn check_ref(reference: &str) -> Result<()> {
    let bad = reference.is_empty()
        || reference.len() > 255
        || reference.starts_with('-')
        || reference.contains("..")
        || reference
            .chars()
            .any(|c| c.is_control() || c.is_whitespace());
    if bad {
        return Err(
            Error::usage(format!("{reference:?} is not a usable git ref")).hint(
                "give a branch, tag or commit sha, e.g. --ref main, --ref v1.2.0 or --ref 3f2a9c1",
            ),
        );
    }
    Ok(())
}
