//! What both strategies share: the release going live, a failed
//! activation, and the variables every hook gets.

use crate::error::Error;
use crate::layout::{Layout, ReleaseId};

/// The release that `current` now points at, and where it came from.
pub struct Live<'a> {
    pub id: &'a ReleaseId,
    pub revision: Option<&'a str>,
    pub branch: Option<&'a str>,
    pub previous: Option<&'a ReleaseId>,
}

/// A failed activation: what went wrong, and what is live now.
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    pub live: Option<ReleaseId>,
    /// The release was refused before anything was switched (a slot that
    /// failed its gate): history says `refused`, not `rolled-back`.
    pub refused: bool,
}

/// The variables every hook gets (SPEC §3). Outside values (branch, ids)
/// reach hooks only this way, never inside the command text.
pub fn hook_env(layout: &Layout, live: &Live) -> Vec<(String, String)> {
    vec![
        ("SHIPIT_RELEASE".into(), live.id.to_string()),
        (
            "SHIPIT_RELEASE_PATH".into(),
            layout.release(live.id).display().to_string(),
        ),
        (
            "SHIPIT_DEPLOY_TO".into(),
            layout.root().display().to_string(),
        ),
        ("SHIPIT_REVISION".into(), live.revision.unwrap_or("").into()),
        ("SHIPIT_BRANCH".into(), live.branch.unwrap_or("").into()),
        (
            "SHIPIT_PREVIOUS_RELEASE".into(),
            live.previous.map(|p| p.to_string()).unwrap_or_default(),
        ),
    ]
}
