use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::ReleasesArgs;
use crate::context::Ctx;
use crate::error::Result;
use crate::layout::ReleaseId;
use crate::slots::state::Slot;
use crate::store::{self, Release, Status};
use crate::ui;

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

pub fn run(ctx: &Ctx, args: &ReleasesArgs) -> Result<()> {
    if let Some(fleet) = &ctx.config.fleet {
        return crate::fleet::releases(ctx, fleet, args.json);
    }
    let listing = store::list(&ctx.layout)?;
    let current = store::read_current(&ctx.layout)?;
    if let Some(warning) = listing.stray_warning(&ctx.layout) {
        ctx.ui.warn(warning);
    }
    let newest_first = listing.releases.iter().rev();
    let slots = crate::slots::describe_or_warn(ctx);
    let slot_of = |id: &crate::layout::ReleaseId| slots.as_ref().and_then(|v| v.slot_of(id));
    if args.json {
        let releases: Vec<ReleaseRow> = newest_first
            .map(|r| ReleaseRow::of(ctx, r, current.id() == Some(&r.id), slot_of(&r.id)))
            .collect();
        let _ = ui::out_json(&json!({
            "current": current.id(),
            "releases": releases,
            "stray": listing.foreign,
            "slots": slots.as_ref().map(|v| v.to_json()),
            "disk": DiskTotal::of(&listing.releases),
        }));
        return Ok(());
    }
    if listing.releases.is_empty() {
        ctx.ui.step(
            "Releases",
            format!("none yet in {}", ctx.layout.releases().display()),
        );
        return Ok(());
    }
    let now = Utc::now();
    let slot_column = |id: Option<&crate::layout::ReleaseId>| match &slots {
        None => String::new(),
        Some(_) => match id {
            None => format!("{:<6}  ", "SLOT"),
            Some(id) => format!("{:<6}  ", slot_of(id).map_or("-", |s| s.name())),
        },
    };
    let mut text = format!(
        "  {:<14}  {:>5}  {:<10}  {:<16}  {:>10}  {:>10}  {}{}\n",
        "ID",
        "AGE",
        "REVISION",
        "BRANCH",
        "SIZE",
        "UNSHARED",
        slot_column(None),
        "STATUS"
    );
    let figure = |bytes: Option<u64>| bytes.map_or_else(|| "?".into(), crate::disk::human);
    for r in newest_first {
        let is_current = current.id() == Some(&r.id);
        let m = r.meta.as_ref();
        let created = m.map_or(r.id.time(), |m| m.created_at);
        let branch = m
            .and_then(|m| m.branch.clone())
            .unwrap_or_else(|| "-".into());
        let disk = m.and_then(|m| m.disk);
        let line = format!(
            "{} {:<14}  {:>5}  {:<10}  {:<16}  {:>10}  {:>10}  {}{}\n",
            if is_current { "*" } else { " " },
            r.id.as_str(),
            super::format::age((now - created).num_seconds()),
            super::format::short(m.and_then(|m| m.revision.as_deref())),
            branch,
            figure(disk.map(|d| d.size_bytes)),
            figure(disk.map(|d| d.unshared_bytes)),
            slot_column(Some(&r.id)),
            shown_status(r, is_current),
        );
        text.push_str(&if is_current { ctx.ui.bold(&line) } else { line });
    }
    let total = DiskTotal::of(&listing.releases);
    text.push_str(&format!(
        "  total: {} in {} release(s), {} of it unshared (what removing each alone frees){}\n",
        crate::disk::human(total.size_bytes),
        listing.releases.len(),
        crate::disk::human(total.unshared_bytes),
        total.unmeasured_note()
    ));
    let _ = ui::out(&text);
    Ok(())
}
