//! `shipit releases` on one host, as data: every release, newest first,
//! what is live, what else sits in `releases/`, the slots and the disk
//! total. Its JSON is `releases --json`.

use serde::Serialize;

use super::{DiskTotal, ReleaseRow};
use crate::activate::slots::SlotView;
use crate::context::Ctx;
use crate::error::Result;
use crate::layout::ReleaseId;
use crate::store;

#[derive(Serialize)]
pub struct Releases {
    pub current: Option<ReleaseId>,
    /// Newest first.
    pub releases: Vec<ReleaseRow>,
    /// Entries of `releases/` that are not releases.
    pub stray: Vec<String>,
    /// With `[slots]`: what each slot runs.
    #[serde(serialize_with = "super::slots_json")]
    pub slots: Option<SlotView>,
    pub disk: DiskTotal,
}

impl Releases {
    /// Read them (no lock), warning about stray entries and unreadable
    /// slots.
    pub fn read(ctx: &Ctx) -> Result<Releases> {
        let listing = store::list(&ctx.layout)?;
        let current = store::read_current(&ctx.layout)?;
        if let Some(warning) = listing.stray_warning(&ctx.layout) {
            ctx.ui.warn(warning);
        }
        let slots = crate::activate::slots::describe_or_warn(ctx);
        let releases = listing
            .releases
            .iter()
            .rev()
            .map(|r| {
                let slot = slots.as_ref().and_then(|v| v.slot_of(&r.id));
                ReleaseRow::of(ctx, r, current.id() == Some(&r.id), slot)
            })
            .collect();
        Ok(Releases {
            current: current.id().cloned(),
            releases,
            stray: listing.foreign,
            slots,
            disk: DiskTotal::of(&listing.releases),
        })
    }
}
