//! `shipit status` on one host, as data: what users reach, whether it is
//! healthy right now, how the last deploy and the last event ended. Its
//! JSON is `status --json`; the fields marked `skip` are for the text.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Probe;
use crate::activate::slots::SlotView;
use crate::context::Ctx;
use crate::error::Result;
use crate::history::{self, Event, EventKind};
use crate::layout::{Layout, ReleaseId};
use crate::store;

#[derive(Serialize)]
pub struct Status {
    pub current: Option<ReleaseId>,
    /// `current` in words.
    pub live: String,
    pub revision: Option<String>,
    pub branch: Option<String>,
    /// The live release's stored status.
    pub status: Option<&'static str>,
    /// Whether it passed its gate as the live release.
    pub proven: Option<bool>,
    /// `[health]` probed now; `null` without it.
    pub health: Option<Probe>,
    /// With `[slots]`: what each slot runs.
    #[serde(serialize_with = "super::slots_json")]
    pub slots: Option<SlotView>,
    /// Entries of `releases/` that are not releases, as paths.
    #[serde(serialize_with = "names")]
    pub stray: Vec<(String, String)>,
    pub last_deploy: Option<Event>,
    /// The last deploy or rollback.
    pub last_event: Option<Event>,
    /// When and by whom the live release was deployed.
    #[serde(skip)]
    pub deployed: Option<(DateTime<Utc>, String)>,
}

/// `stray` in JSON: the names alone.
fn names<S: serde::Serializer>(stray: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(stray.iter().map(|(name, _)| name))
}

impl Status {
    /// Read it (no lock, so it answers while a deploy runs) and probe the
    /// health URL, warning about what cannot be read.
    pub fn read(ctx: &Ctx) -> Result<Status> {
        let mut current = store::read_current(&ctx.layout)?;
        // With slots, users reach what the front's link names; after a
        // crash between the two switches `current` lags behind until the
        // next mutating command repairs it. Show what users reach.
        if let Some(front) = crate::activate::slots::live_release(ctx)
            && current.id() != Some(&front)
        {
            ctx.ui.warn(format!(
                "the front reaches {}, but current names {}: shipit was stopped between the two \
                 switches; the next deploy or rollback repairs current",
                Layout::display(&front),
                current.describe()
            ));
            current = store::Current::Release(front);
        }
        let listing = store::list(&ctx.layout).ok();
        let proven = current
            .id()
            .and_then(|id| Some(listing.as_ref()?.get(id)?.proven));
        // Entries in releases/ that are not releases: left alone, but shown.
        let stray = listing
            .map(|l| l.foreign)
            .unwrap_or_default()
            .into_iter()
            .map(|name| {
                let path = ctx.layout.releases().join(&name).display().to_string();
                (name, path)
            })
            .collect();
        // Damaged metadata must not hide what is live and whether it is
        // healthy.
        let meta = match current.id().map(|id| store::read_metadata(&ctx.layout, id)) {
            Some(Ok(meta)) => meta,
            Some(Err(e)) => {
                ctx.ui
                    .warn(format!("{e}; showing what is known without it"));
                None
            }
            None => None,
        };
        let health = super::probe(ctx, &current, meta.as_ref());
        let slots = crate::activate::slots::describe_or_warn(ctx);
        // The newest deploy and the newest event that is not a prune, read
        // from the end of the history.
        let (mut last_deploy, mut last_event) = (None, None);
        if let Err(e) = history::newest_first(&ctx.layout, |e| {
            if last_event.is_none() && e.event != EventKind::Prune {
                last_event = Some(e.clone());
            }
            if last_deploy.is_none() && e.event == EventKind::Deploy {
                last_deploy = Some(e);
            }
            last_deploy.is_none() || last_event.is_none()
        }) {
            ctx.ui.warn(format!("{e}; the last deploy is unknown"));
        }
        Ok(Status {
            current: current.id().cloned(),
            live: current.describe(),
            revision: meta.as_ref().and_then(|m| m.revision.clone()),
            branch: meta.as_ref().and_then(|m| m.branch.clone()),
            status: meta.as_ref().map(|m| m.status.as_str()),
            proven,
            health,
            slots,
            stray,
            last_deploy,
            last_event,
            deployed: meta.map(|m| (m.created_at, m.deployed_by)),
        })
    }
}
