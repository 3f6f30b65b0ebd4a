//! `[[reuse]]` on a fleet's controller: the one build reuses what a
//! rollout that went well on every host built (SPEC §11).
//!
//! The controller has no releases of its own, so it cannot ask a release
//! whether it proved itself, as a single host does. Its history can: a
//! `deploy` whose outcome is `ok` switched every host to its release and
//! every host's gate passed. So the controller keeps, under its own
//! `.shipit/reuse/`, the pristine copies of what each build made
//! (`<release>/<path>`, as on a host) and what the build recorded about
//! each `[[reuse]]` path (`<release>.json`: the key's hash and the release
//! whose build made the copy). A later build copies the directory from the
//! newest release whose rollout was `ok` and whose key is the same, and
//! skips `run`. A rollout that failed, was reverted or stopped half-way
//! (`--no-revert`) is never a source: its event is not `ok`.
//!
//! Reuse on a fleet saves the install on the controller, not the transfer:
//! every host receives the whole tree, reused directories included.
//!
//! The record is written after the copies are synced, so a build cut
//! short leaves no record and its copies are no source. What is kept:
//! the records of the newest [`KEEP`] releases whose rollout was `ok`,
//! and the copies they refer to; the rest goes before and after every
//! rollout (under the controller's lock).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::context::Ctx;
use crate::error::{Error, IoContext, Result};
use crate::history;
use crate::layout::{Layout, ReleaseId};
use crate::reuse::pristine_dir;
use crate::store::ReuseRecord as Record;

/// How many releases whose rollout was `ok` keep their pristine copies.
pub const KEEP: usize = 3;

/// What a build on the controller recorded about its `[[reuse]]` paths.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    version: u32,
    reuse: BTreeMap<String, Record>,
}

const VERSION: u32 = 1;

fn root(layout: &Layout) -> PathBuf {
    layout.state().join("reuse")
}

fn record_file(layout: &Layout, id: &ReleaseId) -> PathBuf {
    root(layout).join(format!("{id}.json"))
}

/// Reuse or build every `[[reuse]]` directory of the build in `tree`
/// (see [`crate::reuse::prepare`]), then record the keys.
pub fn prepare(
    ctx: &Ctx,
    id: &ReleaseId,
    tree: &Path,
    env: &mut Vec<(String, String)>,
    log: &mut File,
) -> Result<()> {
    if ctx.config.reuse.is_empty() {
        return Ok(());
    }
    let layout = &ctx.layout;
    let proven = proven(layout);
    let find = |path: &str, key: &str| {
        proven.iter().find_map(|(release, records)| {
            let record = records.get(path)?;
            let dir = pristine_dir(layout, &record.built_by).join(path.trim_end_matches('/'));
            (record.key == key && dir.is_dir()).then(|| (release.clone(), record.clone()))
        })
    };
    let records = crate::reuse::prepare_from(ctx, id, tree, env, log, &find)?;
    // The copies must be on disk before the record that makes them a
    // source is.
    let pristine = pristine_dir(layout, id);
    if pristine.exists() {
        crate::fsutil::sync_release(&[&pristine]).with_path("could not sync", &pristine)?;
    }
    let kept = Kept {
        version: VERSION,
        reuse: records,
    };
    let bytes = serde_json::to_vec_pretty(&kept).expect("a reuse record serializes");
    let file = record_file(layout, id);
    fs::create_dir_all(root(layout)).with_path("could not create", &root(layout))?;
    crate::fsutil::atomic_write(&file, &bytes).with_path("could not write", &file)
}

/// The releases whose rollout was `ok` and whose build left a record,
/// newest first, with what it recorded.
fn proven(layout: &Layout) -> Vec<(ReleaseId, BTreeMap<String, Record>)> {
    let Ok(log) = history::read(layout) else {
        return Vec::new();
    };
    let mut ids: Vec<ReleaseId> = log
        .events
        .iter()
        .filter(|e| {
            e.event == crate::history::EventKind::Deploy && e.outcome == crate::history::Outcome::Ok
        })
        .filter_map(|e| e.release.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .rev()
        .filter_map(|id| {
            let bytes = fs::read(record_file(layout, &id)).ok()?;
            let kept: Kept = serde_json::from_slice(&bytes).ok()?;
            (kept.version == VERSION).then_some((id, kept.reuse))
        })
        .collect()
}

/// Remove the records and copies [`KEEP`] does not keep; a failure only
/// warns (it is retried on the next rollout).
pub fn forget(ctx: &Ctx) {
    for path in unkept(&ctx.layout) {
        let removed = if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        if let Err(e) = removed {
            ctx.ui.warn(format!(
                "{} (it will be retried on the next rollout)",
                Error::io("could not remove", &path, e)
            ));
        }
    }
}

/// What [`forget`] removes: every entry of `.shipit/reuse/` but the
/// records of the newest [`KEEP`] releases whose rollout was `ok` and the
/// copies those records name (a reused path names the older build it
/// came from).
fn unkept(layout: &Layout) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root(layout)) else {
        return Vec::new();
    };
    let kept: Vec<(ReleaseId, BTreeMap<String, Record>)> =
        proven(layout).into_iter().take(KEEP).collect();
    let records: Vec<String> = kept.iter().map(|(id, _)| format!("{id}.json")).collect();
    let copies: Vec<String> = kept
        .iter()
        .flat_map(|(_, r)| r.values().map(|r| r.built_by.to_string()))
        .collect();
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            !records.contains(&name) && !copies.contains(&name)
        })
        .map(|entry| entry.path())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Event;

    /// Only `ok` deploys are sources, newest first; the newest [`KEEP`]
    /// keep their records and the copies they name, however old; the
    /// rest (a reverted rollout's copies, a torn temp file) goes.
    #[test]
    fn only_rollouts_that_went_well_keep_their_copies() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().to_path_buf());
        fs::create_dir_all(root(&layout)).unwrap();
        let id = |n: u32| ReleaseId::parse(&format!("2026010100000{n}")).unwrap();
        let (a, b, c, d, e) = (id(1), id(2), id(3), id(4), id(5));
        let write = |release: &ReleaseId, key: &str, built_by: &ReleaseId| {
            let record = Record {
                key: key.into(),
                built_by: built_by.clone(),
                reused_from: None,
            };
            let kept = Kept {
                version: VERSION,
                reuse: BTreeMap::from([("deps".to_string(), record)]),
            };
            fs::write(
                record_file(&layout, release),
                serde_json::to_vec(&kept).unwrap(),
            )
            .unwrap();
            if release == built_by {
                fs::create_dir_all(pristine_dir(&layout, release).join("deps")).unwrap();
            }
        };
        for (release, outcome, key, built_by) in [
            (&a, "ok", "k1", &a),
            (&b, "fleet-reverted", "k2", &b),
            (&c, "ok", "k1", &a),
            (&d, "ok", "k3", &d),
            (&e, "ok", "k4", &e),
        ] {
            write(release, key, built_by);
            let outcome = history::Outcome::try_from(outcome.to_string()).unwrap();
            let mut event = Event::new(history::EventKind::Deploy, outcome);
            event.release = Some(release.clone());
            history::append(&layout, &event).unwrap();
        }
        fs::write(root(&layout).join(".tmp-torn"), "").unwrap();

        let ids: Vec<ReleaseId> = proven(&layout).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [e.clone(), d.clone(), c.clone(), a.clone()]);
        let mut gone = vec![
            root(&layout).join(".tmp-torn"),
            record_file(&layout, &a),
            record_file(&layout, &b),
            pristine_dir(&layout, &b),
        ];
        gone.sort();
        assert_eq!(unkept(&layout), gone);
    }
}
