//! The release store: list, read and write releases and their metadata.
//!
//! All state is derived from the filesystem. A release exists when its
//! directory exists under `releases/`; what it is and how it fared is in a
//! small JSON file inside it, replaced atomically. `current` is read here and
//! moved only by [`crate::swap`]; releases are deleted only through
//! [`remove_release`], which first renames the directory out of `releases/`
//! so that no listing ever shows a half-deleted release.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::layout::{Layout, METADATA_FILE, ReleaseId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Complete and good to run; not (or no longer) the live one.
    Ready,
    /// Went live and passed its gate.
    Live,
    /// Failed its reload or health gate.
    Failed,
    /// Was rolled away from by `shipit rollback`.
    RolledBack,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Live => "live",
            Status::Failed => "failed",
            Status::RolledBack => "rolled-back",
        }
    }
}

/// What a release is, written when it is built and updated as it fares.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metadata {
    pub id: ReleaseId,
    pub status: Status,
    pub revision: Option<String>,
    /// When the revision was committed (its committer date): what it
    /// is, where the release's own time says when it was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_time: Option<DateTime<Utc>>,
    pub branch: Option<String>,
    pub source: String,
    pub deployed_by: String,
    pub created_at: DateTime<Utc>,
    pub build_duration_ms: u64,
    /// What was live when this release was deployed.
    pub previous: Option<ReleaseId>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Whether it ever passed its gate as the release users reach: only a
    /// proven release is a default rollback target. `false` from the
    /// moment it is published; absent in metadata written before shipit
    /// recorded it, and then derived from the history (see [`list`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proven: Option<bool>,
    /// When its activation began (recorded durably before the swap, or
    /// before its slot starts). Begun, not proven and not live means the
    /// activation was cut short: a crash, a kill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_started: Option<DateTime<Utc>>,
    /// The `[[reuse]]` directories of the release, by path: the hash of
    /// their key and where their content came from.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub reuse: std::collections::BTreeMap<String, ReuseRecord>,
    /// What it costs on disk ([`crate::disk`]), measured when it was
    /// published and again when prune removed other releases; absent in
    /// metadata written before shipit measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<crate::disk::Usage>,
}

/// What a release records about one `[[reuse]]` directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReuseRecord {
    /// sha256 of the key (files, variables, command output).
    pub key: String,
    /// The release whose build produced the pristine copy it came from.
    pub built_by: ReleaseId,
    /// The proven release it was reused from, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<ReleaseId>,
}

/// One release directory and its metadata (absent or unreadable for a
/// directory that shipit did not build, e.g. one migrated by hand).
#[derive(Clone, Debug)]
pub struct Release {
    pub id: ReleaseId,
    pub meta: Option<Metadata>,
    /// Passed its gate as the live release at least once (see
    /// [`Metadata::proven`]).
    pub proven: bool,
}

impl Release {
    /// The stored status; a release without metadata counts as ready.
    pub fn status(&self) -> Status {
        self.meta.as_ref().map_or(Status::Ready, |m| m.status)
    }

    /// Its activation began and never proved it: shipit was killed while
    /// making it live (unless it is live now, or failed since).
    pub fn interrupted(&self) -> bool {
        self.meta.as_ref().is_some_and(|m| {
            m.activation_started.is_some() && !self.proven && m.status == Status::Ready
        })
    }
}

/// Whether a release whose metadata predates the `proven` record went live
/// and passed: the history names it as the release of a successful deploy
/// or rollback. A release the history does not know at all (older than the
/// history itself) keeps the old rule: any status but failed or
/// rolled-back. So an upgrade keeps its rollback target.
fn proven_by_history(
    meta: Option<&Metadata>,
    id: &ReleaseId,
    events: &[crate::history::Event],
) -> bool {
    if let Some(proven) = meta.and_then(|m| m.proven) {
        return proven;
    }
    let named: Vec<_> = events
        .iter()
        .filter(|e| e.release.as_ref() == Some(id))
        .collect();
    if named.is_empty() {
        return meta.is_none_or(|m| !matches!(m.status, Status::Failed));
    }
    named
        .iter()
        .any(|e| e.outcome == crate::history::Outcome::Ok && e.live.as_ref() == Some(id))
}

/// What `current` is right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Current {
    /// No `current` (nothing deployed yet).
    Missing,
    /// Points at an existing release.
    Release(ReleaseId),
    /// A symlink whose target is not an existing release.
    Dangling(PathBuf),
    /// A real directory or file, not a symlink: shipit will not touch it.
    NotSymlink,
}

impl Current {
    pub fn id(&self) -> Option<&ReleaseId> {
        match self {
            Current::Release(id) => Some(id),
            _ => None,
        }
    }

    /// The `live now:` line of an error message.
    pub fn describe(&self) -> String {
        match self {
            Current::Missing => "nothing (no current release)".into(),
            Current::Release(id) => Layout::display(id),
            Current::Dangling(t) => format!("nothing: current points at missing {}", t.display()),
            Current::NotSymlink => "unknown: current is not a symlink".into(),
        }
    }
}

pub fn read_current(layout: &Layout) -> Result<Current> {
    let path = layout.current();
    let meta = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Current::Missing),
        Err(e) => return Err(Error::io("could not inspect", &path, e)),
    };
    if !meta.file_type().is_symlink() {
        return Ok(Current::NotSymlink);
    }
    let target = fs::read_link(&path).with_path("could not read the symlink", &path)?;
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let parent_ok = target.parent().is_some_and(|p| {
        p == Path::new("releases") || p == layout.releases() || p == Path::new("./releases")
    }) || points_into_releases(layout, &path, &target);
    match ReleaseId::parse(name) {
        Ok(id) if parent_ok && layout.release(&id).is_dir() => Ok(Current::Release(id)),
        _ => Ok(Current::Dangling(target)),
    }
}

/// Does a link at `link` (`current_path`, elsewhere) with `target` point
/// into `releases/`?
fn points_into_releases(layout: &Layout, link: &Path, target: &Path) -> bool {
    let full = link.parent().unwrap_or(Path::new("/")).join(target);
    let parent = full.parent().and_then(|p| fs::canonicalize(p).ok());
    parent.is_some() && parent == fs::canonicalize(layout.releases()).ok()
}

/// `current` as a release, or a clear error for the states a mutating
/// command must not build on.
pub fn require_sane_current(layout: &Layout) -> Result<Current> {
    sane(layout, read_current(layout)?)
}

/// `current`, read from `layout`, or the error [`require_sane_current`]
/// gives for it.
pub fn sane(layout: &Layout, current: Current) -> Result<Current> {
    match &current {
        Current::NotSymlink => Err(Error::usage(format!(
            "{} is a real directory or file, not a symlink",
            layout.current().display()
        ))
        .hint({
            let link = layout.current();
            format!(
                "shipit swaps it atomically and will not delete what is there; move it aside \
                 (e.g. `mv {0} {0}.old`) and deploy again",
                link.display()
            )
        })),
        Current::Dangling(target) => Err(Error::usage(format!(
            "{} points at {}, which is not a release",
            layout.current().display(),
            target.display()
        ))
        .hint("run `shipit rollback --to <id>` with an id from `shipit releases`, or deploy again after removing the dangling link")),
        _ => Ok(current),
    }
}

/// What a mutating command acts on, read once under the lock (see
/// [`crate::mutation::begin_reading`]) and handed on: the releases and
/// what is live.
#[derive(Debug)]
pub struct Snapshot {
    pub listing: Listing,
    pub current: Current,
}

/// Read the releases and `current` (which may be missing, dangling or not
/// a link: see [`sane`]).
pub fn snapshot(layout: &Layout) -> Result<Snapshot> {
    Ok(Snapshot {
        listing: list(layout)?,
        current: read_current(layout)?,
    })
}

/// Everything under `releases/`.
#[derive(Debug, Default)]
pub struct Listing {
    /// Oldest first.
    pub releases: Vec<Release>,
    /// Entries that are not release ids (reported, never touched).
    pub foreign: Vec<String>,
}

impl Listing {
    pub fn ids(&self) -> Vec<ReleaseId> {
        self.releases.iter().map(|r| r.id.clone()).collect()
    }

    pub fn get(&self, id: &ReleaseId) -> Option<&Release> {
        self.releases.iter().find(|r| &r.id == id)
    }

    /// What to say about entries that are not releases, if there are any.
    /// They are never deleted (shipit deletes only what it created) and
    /// never block a command: a disk that fills because one stray
    /// directory stopped every prune is worse than a warning.
    pub fn stray_warning(&self, layout: &Layout) -> Option<String> {
        if self.foreign.is_empty() {
            return None;
        }
        let names: Vec<String> = self
            .foreign
            .iter()
            .map(|name| layout.releases().join(name).display().to_string())
            .collect();
        let (is, it) = if names.len() == 1 {
            ("is not a release", "it")
        } else {
            ("are not releases", "them")
        };
        Some(format!(
            "{} {is} (release directories are named like 20261121174500): shipit leaves {it} \
             alone and never deletes what it did not create\n\
             hint: move {it} out of releases/ if {it} should not be there",
            names.join(", ")
        ))
    }

    /// The id for a new release ([`ReleaseId::allocate`]), past any stray
    /// entry that happens to have a release's name (a file, a symlink).
    pub fn allocate(&self, now: DateTime<Utc>) -> ReleaseId {
        let mut id = ReleaseId::allocate(now, &self.ids());
        while self.foreign.iter().any(|name| name == id.as_str()) {
            id = ReleaseId::from_time(id.time() + chrono::TimeDelta::seconds(1));
        }
        id
    }
}

pub fn list(layout: &Layout) -> Result<Listing> {
    let dir = layout.releases();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(e) => return Err(Error::io("could not list", &dir, e)),
    };
    let mut listing = Listing::default();
    for entry in entries {
        let entry = entry.with_path("could not list", &dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        match ReleaseId::parse(&name) {
            Ok(id) if is_dir => {
                let meta = read_metadata(layout, &id).ok().flatten();
                let proven = meta.as_ref().and_then(|m| m.proven).unwrap_or(false);
                listing.releases.push(Release { id, meta, proven });
            }
            _ => listing.foreign.push(name),
        }
    }
    // Only releases published before the record existed need the history.
    if listing
        .releases
        .iter()
        .any(|r| r.meta.as_ref().is_none_or(|m| m.proven.is_none()))
    {
        let events = crate::history::read(layout)
            .map(|log| log.events)
            .unwrap_or_default();
        for r in &mut listing.releases {
            r.proven = proven_by_history(r.meta.as_ref(), &r.id, &events);
        }
    }
    listing.releases.sort_by(|a, b| a.id.cmp(&b.id));
    listing.foreign.sort();
    Ok(listing)
}

pub fn read_metadata(layout: &Layout, id: &ReleaseId) -> Result<Option<Metadata>> {
    read_metadata_at(&layout.metadata(id))
}

/// The commit `id` was built from, as its metadata says (`None` when the
/// metadata is missing, unreadable or has no revision: a probe that names
/// the revision then expects an empty one).
pub fn revision(layout: &Layout, id: &ReleaseId) -> Option<String> {
    read_metadata(layout, id)
        .ok()
        .flatten()
        .and_then(|m| m.revision)
}

pub fn read_metadata_at(path: &Path) -> Result<Option<Metadata>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::internal(format!("could not parse {}", path.display())).cause(e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("could not read", path, e)),
    }
}

/// Write a release's metadata into `release_dir` atomically.
pub fn write_metadata(release_dir: &Path, meta: &Metadata) -> Result<()> {
    let path = release_dir.join(METADATA_FILE);
    fsutil::atomic_write(&path, &metadata_bytes(meta)).with_path("could not write", &path)
}

/// Write the metadata of a release still being staged, unsynced: nothing
/// reads it before the release is published, and the release is made
/// durable whole before that ([`crate::fsutil::sync_release`]), this file
/// with it. A crash before leaves a partial build, which the next command
/// removes.
pub fn write_staged_metadata(staging: &Path, meta: &Metadata) -> Result<()> {
    use std::io::Write;
    let path = staging.join(METADATA_FILE);
    // A file of that name in the source is replaced, never written
    // through: a symlink could point anywhere.
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(Error::io("could not replace", &path, e));
        }
        _ => {}
    }
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut file| file.write_all(&metadata_bytes(meta)))
        .with_path("could not write", &path)
}

fn metadata_bytes(meta: &Metadata) -> Vec<u8> {
    // A failure recorded in the metadata can quote a hook's output: no
    // secret of `env_file` goes into it.
    let text = serde_json::to_string_pretty(meta).expect("metadata serializes");
    let mut bytes = crate::hookenv::redact_json(&text).into_owned().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// Record that `id`'s activation begins now, before anything moves.
pub fn mark_activation_started(layout: &Layout, id: &ReleaseId) -> Result<()> {
    update(layout, id, |meta| {
        meta.activation_started = Some(Utc::now())
    })
}

/// Record that `id` passed its gate as the live release.
pub fn mark_proven(layout: &Layout, id: &ReleaseId, status: Status) -> Result<()> {
    update(layout, id, |meta| {
        meta.proven = Some(true);
        meta.status = status;
    })
}

/// Record what `id` costs on disk now ([`crate::disk`]).
pub fn set_disk(layout: &Layout, id: &ReleaseId, usage: crate::disk::Usage) -> Result<()> {
    update(layout, id, |meta| meta.disk = Some(usage))
}

fn update(layout: &Layout, id: &ReleaseId, change: impl FnOnce(&mut Metadata)) -> Result<()> {
    let Some(mut meta) = read_metadata(layout, id)? else {
        // A release without metadata (not built by shipit) keeps none.
        return Ok(());
    };
    change(&mut meta);
    write_metadata(&layout.release(id), &meta)
}

/// Update the stored status (and failure reason) of a published release.
pub fn set_status(
    layout: &Layout,
    id: &ReleaseId,
    status: Status,
    failure: Option<String>,
) -> Result<()> {
    let Some(mut meta) = read_metadata(layout, id)? else {
        // A release without metadata (not built by shipit) keeps none.
        return Ok(());
    };
    meta.status = status;
    if failure.is_some() {
        meta.failure = failure;
    }
    write_metadata(&layout.release(id), &meta)
}

/// Move a complete staged release into `releases/<id>`. Never replaces an
/// existing release, even an empty directory of that name.
pub fn publish(layout: &Layout, staged: &Path, id: &ReleaseId) -> Result<()> {
    let target = layout.release(id);
    fsutil::rename_noreplace(staged, &target).map_err(|e| {
        Error::io("could not publish the release as", &target, e)
            .hint("another directory with this id appeared; run `shipit releases` and try again")
    })?;
    fsutil::fsync_dir(&layout.releases()).with_path("could not sync", &layout.releases())
}

/// Trash this process deletes once it has answered, when it is a fleet
/// host's agent ([`delete_later`]); `None`: deleted at once.
static LATER: std::sync::Mutex<Option<Vec<PathBuf>>> = std::sync::Mutex::new(None);

/// From now on, [`discard`] leaves what it moved into the trash there, for
/// [`take_later`]. A fleet host's agent answers the controller first: at
/// `batch = 1` the next host is switched while this one deletes its
/// pruned release (a `node_modules` can take seconds). Gone from
/// `releases/` either way; a process killed before deleting leaves only
/// trash, which the next command clears ([`clear_leftovers`]).
pub fn delete_later() {
    *LATER.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
}

/// Whether [`discard`] leaves its trash for later.
pub fn deleting_later() -> bool {
    LATER.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}

/// The trash [`discard`] left since the last call, to delete now.
pub fn take_later() -> Vec<PathBuf> {
    LATER
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
        .map(std::mem::take)
        .unwrap_or_default()
}

/// Delete what [`take_later`] returned; what cannot be deleted now stays
/// trash for the next command.
pub fn delete_trash(paths: &[PathBuf]) -> Vec<(PathBuf, io::Error)> {
    paths
        .iter()
        .filter_map(|p| remove_with_retries(p).err().map(|e| (p.clone(), e)))
        .collect()
}

/// Delete a directory the crash-safe way: rename it into `.shipit/trash/`
/// (atomic: it leaves its listing whole), then delete it there (or later,
/// see [`delete_later`]). A crash mid-delete leaves only trash, which
/// [`clear_leftovers`] clears later.
pub fn discard(layout: &Layout, dir: &Path) -> Result<()> {
    let trash = layout.trash();
    fs::create_dir_all(&trash).with_path("could not create", &trash)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let holding = tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .tempdir_in(&trash)
        .with_path("could not create a directory in", &trash)?
        .keep();
    let moved = holding.join(&name);
    fs::rename(dir, &moved).with_path("could not move to trash", dir)?;
    if let Some(parent) = dir.parent() {
        fsutil::fsync_dir(parent).with_path("could not sync", parent)?;
    }
    if let Some(later) = LATER.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        later.push(holding);
        return Ok(());
    }
    fs::remove_dir_all(&holding).with_path("could not delete", &holding)
}

pub fn remove_release(layout: &Layout, id: &ReleaseId) -> Result<()> {
    discard(layout, &layout.release(id))
}

/// Delete leftovers of interrupted runs: trash, and staging directories of
/// builds that are not running (callers hold the deploy lock, so none is).
/// Best effort: a leftover that cannot be removed now (a process killed with
/// its parent may still be exiting) is reported and retried next time; it
/// never fails the command.
pub fn clear_leftovers(layout: &Layout) -> Vec<(PathBuf, Option<Error>)> {
    let mut report = Vec::new();
    // A swap killed between making its temporary link and renaming it
    // over `current` leaves that link behind (see `swap`).
    // Likewise a switch of the slots' link in run/.
    // `current` may live elsewhere (`current_path`): its temporary link is
    // `.<name>-*` beside it.
    let link = layout.current();
    let link_dir = link.parent().unwrap_or(layout.root()).to_path_buf();
    let link_prefix = format!(
        ".{}-",
        link.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    for (dir, prefixes) in [
        (link_dir, &[link_prefix.as_str()][..]),
        (layout.run(), &[".app.sock-", ".live-"][..]),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if prefixes.iter().any(|p| name.starts_with(p)) && path.is_symlink() {
                let error = fs::remove_file(&path)
                    .err()
                    .map(|e| Error::io("could not delete leftover", &path, e));
                report.push((path, error));
            }
        }
    }
    for dir in [layout.staging_dir(), layout.trash()] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let error = remove_with_retries(&path)
                .err()
                .map(|e| Error::io("could not delete leftover", &path, e));
            report.push((path, error));
        }
    }
    report
}

fn remove_with_retries(path: &Path) -> io::Result<()> {
    let mut attempt = 0;
    loop {
        let result = if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound && attempt < 10 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => return other,
        }
    }
}

/// Ensure the directories a mutating command needs exist.
pub fn ensure_dirs(layout: &Layout) -> Result<()> {
    for dir in [
        layout.root().to_path_buf(),
        layout.releases(),
        layout.shared(),
        layout.state(),
        layout.logs(),
    ] {
        fs::create_dir_all(&dir).with_path("could not create", &dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_metadata_replaces_a_symlink_of_its_name_without_writing_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "keep").unwrap();
        let staging = dir.path().join("staging");
        fs::create_dir(&staging).unwrap();
        std::os::unix::fs::symlink(&outside, staging.join(METADATA_FILE)).unwrap();
        let meta = Metadata {
            id: ReleaseId::parse("20260101000000").unwrap(),
            status: Status::Ready,
            revision: None,
            revision_time: None,
            branch: None,
            source: "src".into(),
            deployed_by: "me".into(),
            created_at: Utc::now(),
            build_duration_ms: 0,
            previous: None,
            failure: None,
            proven: Some(false),
            activation_started: None,
            reuse: Default::default(),
            disk: None,
        };
        write_staged_metadata(&staging, &meta).unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
        let written = staging.join(METADATA_FILE);
        assert!(fs::symlink_metadata(&written).unwrap().is_file());
        let read = read_metadata_at(&written).unwrap().unwrap();
        assert_eq!(read.id, meta.id);
    }

    #[test]
    fn current_states() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        assert_eq!(read_current(&layout).unwrap(), Current::Missing);
        let id = ReleaseId::parse("20260101000000").unwrap();
        std::os::unix::fs::symlink("releases/20260101000000", layout.current()).unwrap();
        assert!(matches!(
            read_current(&layout).unwrap(),
            Current::Dangling(_)
        ));
        fs::create_dir_all(layout.release(&id)).unwrap();
        assert_eq!(read_current(&layout).unwrap(), Current::Release(id));
        fs::remove_file(layout.current()).unwrap();
        fs::create_dir(layout.current()).unwrap();
        assert_eq!(read_current(&layout).unwrap(), Current::NotSymlink);
        assert!(require_sane_current(&layout).is_err());
    }

    #[test]
    fn listing_separates_foreign_entries_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        for name in [
            "20260102000000",
            "20260101000000",
            "backup",
            "20269999000000",
        ] {
            fs::create_dir_all(layout.releases().join(name)).unwrap();
        }
        fs::write(layout.releases().join("20260103000000"), "a file").unwrap();
        let l = list(&layout).unwrap();
        let ids: Vec<_> = l.ids().iter().map(|i| i.to_string()).collect();
        assert_eq!(ids, ["20260101000000", "20260102000000"]);
        assert_eq!(l.foreign, ["20260103000000", "20269999000000", "backup"]);
    }

    /// A stray file named like the next release would make the publish
    /// fail: the new id steps past it.
    #[test]
    fn a_new_id_steps_past_a_stray_entry_with_a_release_name() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        fs::create_dir_all(layout.releases().join("20260101000000")).unwrap();
        fs::write(layout.releases().join("20260101000001"), "a file").unwrap();
        let listing = list(&layout).unwrap();
        let now = ReleaseId::parse("20260101000000").unwrap().time();
        assert_eq!(listing.allocate(now).as_str(), "20260101000002");
        let later = ReleaseId::parse("20260102000000").unwrap().time();
        assert_eq!(listing.allocate(later).as_str(), "20260102000000");
        let warning = listing.stray_warning(&layout).unwrap();
        assert!(
            warning.contains("releases/20260101000001 is not a release"),
            "{warning}"
        );
    }

    #[test]
    fn discard_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let id = ReleaseId::parse("20260101000000").unwrap();
        fs::create_dir_all(layout.release(&id).join("a/b")).unwrap();
        remove_release(&layout, &id).unwrap();
        assert!(!layout.release(&id).exists());
        assert_eq!(fs::read_dir(layout.trash()).unwrap().count(), 0);
    }
}
