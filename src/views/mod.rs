//! What the read-only commands show, as data: the status people see, one
//! release's row (`releases --json`, and what a fleet host reports to its
//! controller: the same type on both sides of the wire), the disk total,
//! a health probe made now, and the whole of `releases` ([`releases`]) and
//! `status` ([`status`]) on one host. The commands render these as text,
//! or as JSON (the view serialised); the fleet sends them.

pub mod releases;
pub mod status;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::activate::slots::SlotView;
use crate::activate::slots::state::Slot;
use crate::context::Ctx;
use crate::layout::ReleaseId;
use crate::store::{self, Current, Metadata, Release, Status};

/// The slots in a view's JSON ([`SlotView::to_json`]).
fn slots_json<S: serde::Serializer>(slots: &Option<SlotView>, s: S) -> Result<S::Ok, S::Error> {
    slots.as_ref().map(SlotView::to_json).serialize(s)
}

/// A health probe made now: `health.url` (credentials hidden), and whether
/// and how it answered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Probe {
    pub url: String,
    pub passed: bool,
    pub detail: String,
}

/// Probe `[health]` now for `current` (whose metadata is `meta`: the
/// expected body may name its release and revision); `None` without
/// `[health]`.
pub fn probe(ctx: &Ctx, current: &Current, meta: Option<&Metadata>) -> Option<Probe> {
    let h = ctx.config.health.as_ref()?;
    let body = h.expect_body.as_deref().map(|t| {
        crate::health::expected_body(
            t,
            current.id().map(|i| i.as_str()).unwrap_or(""),
            meta.and_then(|m| m.revision.as_deref()),
        )
    });
    let agent = crate::health::agent(h.request_timeout);
    let o = crate::health::probe(&agent, &h.url, h.expect_status, body.as_deref());
    Some(Probe {
        url: crate::urls::redact_url(&h.url),
        passed: o.passed,
        detail: o.detail,
    })
}

/// The status shown to people: `live` is whatever `current` points at,
/// derived from the link rather than trusted from metadata.
pub fn shown_status(release: &Release, is_current: bool) -> &'static str {
    match (release.status(), is_current) {
        (Status::Failed, _) => "failed",
        (_, true) => "live",
        _ if release.interrupted() => "interrupted",
        (Status::Live | Status::Ready, false) if !release.proven => "never-live",
        (Status::Live, false) => "ready",
        (status, false) => status.as_str(),
    }
}

/// One release as `releases --json` prints it, and as a fleet host reports
/// it to its controller (the same type on both sides of the wire).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReleaseRow {
    pub id: ReleaseId,
    pub current: bool,
    /// As [`shown_status`] names it.
    pub status: String,
    pub proven: bool,
    pub revision: Option<String>,
    /// The commit's committer date.
    #[serde(default)]
    pub revision_time: Option<DateTime<Utc>>,
    pub branch: Option<String>,
    pub source: Option<String>,
    pub deployed_by: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub build_duration_ms: Option<u64>,
    pub previous: Option<ReleaseId>,
    pub failure: Option<String>,
    pub path: PathBuf,
    pub slot: Option<Slot>,
    /// The `[[reuse]]` directories: key hash and where they came from.
    #[serde(default)]
    pub reuse: std::collections::BTreeMap<String, store::ReuseRecord>,
    /// Allocated bytes of its tree, as measured when it was published;
    /// `None` for a release published before shipit measured them.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Of those, the bytes no other file shares (see [`crate::disk`]).
    #[serde(default)]
    pub unshared_bytes: Option<u64>,
}

impl ReleaseRow {
    pub fn of(ctx: &Ctx, r: &Release, is_current: bool, slot: Option<Slot>) -> ReleaseRow {
        let m = r.meta.as_ref();
        ReleaseRow {
            id: r.id.clone(),
            current: is_current,
            status: shown_status(r, is_current).to_string(),
            proven: r.proven,
            revision: m.and_then(|m| m.revision.clone()),
            revision_time: m.and_then(|m| m.revision_time),
            branch: m.and_then(|m| m.branch.clone()),
            source: m.map(|m| m.source.clone()),
            deployed_by: m.map(|m| m.deployed_by.clone()),
            created_at: m.map(|m| m.created_at),
            build_duration_ms: m.map(|m| m.build_duration_ms),
            previous: m.and_then(|m| m.previous.clone()),
            failure: m.and_then(|m| m.failure.clone()),
            path: ctx.layout.release(&r.id),
            slot,
            reuse: m.map(|m| m.reuse.clone()).unwrap_or_default(),
            size_bytes: m.and_then(|m| m.disk).map(|d| d.size_bytes),
            unshared_bytes: m.and_then(|m| m.disk).map(|d| d.unshared_bytes),
        }
    }
}

/// The releases' disk figures added up, and how many have none.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct DiskTotal {
    pub size_bytes: u64,
    pub unshared_bytes: u64,
    /// Releases without a figure (published before shipit measured them,
    /// or not built by shipit): not in the sums.
    pub unmeasured: usize,
}

impl DiskTotal {
    pub fn of<'a>(releases: impl IntoIterator<Item = &'a Release>) -> DiskTotal {
        let mut total = DiskTotal::default();
        for r in releases {
            match r.meta.as_ref().and_then(|m| m.disk) {
                Some(d) => {
                    total.size_bytes += d.size_bytes;
                    total.unshared_bytes += d.unshared_bytes;
                }
                None => total.unmeasured += 1,
            }
        }
        total
    }

    /// What is said after the figure when some releases have none.
    pub fn unmeasured_note(&self) -> String {
        match self.unmeasured {
            0 => String::new(),
            1 => "; 1 release has no figure (published before shipit measured releases)".into(),
            n => {
                format!("; {n} releases have no figure (published before shipit measured releases)")
            }
        }
    }
}
