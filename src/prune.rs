//! Pruning: a pure plan of what to delete, and its application.
//!
//! The plan (SPEC §5) keeps the newest `keep` releases that did not fail,
//! and always keeps `current`, the release `shipit rollback` would go to, and
//! any release a running process still uses. Failed releases go first: they
//! are kept only to fill `keep` when there are not enough good ones. The plan
//! is computed without touching the disk so it can be tested exhaustively;
//! [`apply`] then deletes through [`store::remove_release`] (rename out of
//! `releases/`, then delete), oldest failed first.
//!
//! A process that cannot be inspected keeps what it may run from
//! ([`procs::Hidden::reach`]: the release live when it started, by the
//! history), not every release older than it: for a deploy user who is not
//! root that would be every root process, and nothing would ever be pruned.
//! Entries of `releases/` that are not releases are not in the
//! plan at all: never deleted, never a reason to stop.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::context::Ctx;
use crate::error::Result;
use crate::layout::{Layout, ReleaseId};
use crate::procs;
use crate::rollback;
use crate::store::{self, Release, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Current,
    RollbackTarget,
    InUse,
    Newest,
    /// Some process could not be inspected and may run from it.
    Unverified,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub keep: Vec<(ReleaseId, Reason)>,
    /// In deletion order: failed ones first, oldest first within each group.
    pub remove: Vec<ReleaseId>,
}

/// `releases` may be in any order; `keep` is at least 1 (config enforces it).
pub fn plan(
    releases: &[Release],
    current: Option<&ReleaseId>,
    in_use: &BTreeSet<ReleaseId>,
    keep: usize,
) -> Plan {
    let mut newest_first: Vec<&Release> = releases.iter().collect();
    newest_first.sort_by(|a, b| b.id.cmp(&a.id));
    let target = current.and_then(|c| rollback::target(releases, c));

    let good = newest_first.iter().filter(|r| r.status() != Status::Failed);
    let mut newest: BTreeSet<&ReleaseId> = good.take(keep).map(|r| &r.id).collect();
    let failed = newest_first.iter().filter(|r| r.status() == Status::Failed);
    let room = keep.saturating_sub(newest.len());
    newest.extend(failed.take(room).map(|r| &r.id));

    let mut plan = Plan::default();
    for release in &newest_first {
        let id = &release.id;
        let reason = if Some(id) == current {
            Some(Reason::Current)
        } else if Some(id) == target.as_ref() {
            Some(Reason::RollbackTarget)
        } else if in_use.contains(id) {
            Some(Reason::InUse)
        } else if newest.contains(id) {
            Some(Reason::Newest)
        } else {
            None
        };
        match reason {
            Some(reason) => plan.keep.push((id.clone(), reason)),
            None => plan.remove.push(id.clone()),
        }
    }
    plan.remove.reverse();
    let status_of = |id: &ReleaseId| releases.iter().find(|r| &r.id == id).map(|r| r.status());
    plan.remove
        .sort_by_key(|id| (status_of(id) != Some(Status::Failed), id.clone()));
    plan.keep.reverse();
    plan
}

impl Plan {
    /// Keep what the plan would remove where `maybe_in_use` says a process
    /// that could not be inspected may run from it (SPEC §5: a release a
    /// running process uses is kept; not knowing is no licence to delete).
    /// Returns what was held back.
    pub fn hold_back(&mut self, maybe_in_use: impl Fn(&ReleaseId) -> bool) -> Vec<ReleaseId> {
        let (held, remove): (Vec<_>, Vec<_>) = std::mem::take(&mut self.remove)
            .into_iter()
            .partition(|id| maybe_in_use(id));
        self.remove = remove;
        self.keep
            .extend(held.iter().map(|id| (id.clone(), Reason::Unverified)));
        self.keep.sort_by(|a, b| a.0.cmp(&b.0));
        held
    }
}

/// Plan against the disk as it is now and, unless `dry_run`, apply it.
/// Callers hold the deploy lock.
pub fn run(ctx: &Ctx, keep: usize, dry_run: bool) -> Result<(Plan, Vec<ReleaseId>)> {
    let _timing = crate::ui::Timing::start("prune");
    plan_and_apply(ctx, keep, dry_run, procs::scan(&ctx.layout))
}

/// Prune at the end of a deploy, deciding what is in use from the look
/// through `/proc` the activation took once it was over
/// ([`crate::activate::Activated`]), not from a second one.
pub fn after_activation(
    ctx: &Ctx,
    keep: usize,
    running: procs::Usage,
) -> Result<(Plan, Vec<ReleaseId>)> {
    let _timing = crate::ui::Timing::start("prune");
    plan_and_apply(ctx, keep, false, running)
}

fn plan_and_apply(
    ctx: &Ctx,
    keep: usize,
    dry_run: bool,
    usage: procs::Usage,
) -> Result<(Plan, Vec<ReleaseId>)> {
    let layout = &ctx.layout;
    // Entries that are not releases are left alone: the plan is made of
    // releases only (the commands that run prune warn about them).
    let listing = store::list(layout)?;
    let current = store::require_sane_current(layout)?;
    let mut in_use: BTreeSet<ReleaseId> = usage.used.keys().cloned().collect();
    // A slot may run a release whose processes /proc does not show (another
    // user's, or a container's): its record keeps it.
    in_use.extend(
        crate::activate::slots::state::recorded_releases(layout).map_err(|e| {
            e.context("prune cannot tell which release a slot runs, so it removes nothing")
        })?,
    );
    let mut plan = plan(&listing.releases, current.id(), &in_use, keep);
    if !usage.hidden.is_empty() {
        hold_back_hidden(ctx, &listing.releases, &current, &usage.hidden, &mut plan);
    }
    if dry_run {
        return Ok((plan, Vec::new()));
    }
    for (_, error) in store::clear_leftovers(layout) {
        if let Some(e) = error {
            ctx.ui.warn(e.to_string());
        }
    }
    let removed = apply(layout, &plan)?;
    Ok((plan, removed))
}

/// Keep what processes that could not be inspected may run from (see
/// [`procs::Hidden::reach`]), and say what was kept for whom.
fn hold_back_hidden(
    ctx: &Ctx,
    releases: &[Release],
    current: &store::Current,
    hidden: &[procs::Hidden],
    plan: &mut Plan,
) {
    let timeline = match crate::history::read(&ctx.layout) {
        Ok(log) => Some(crate::history::Timeline::new(
            &log,
            releases.iter().filter_map(|r| {
                let began = r.meta.as_ref()?.activation_started?;
                Some((r.id.clone(), began))
            }),
            current.id().cloned(),
        )),
        Err(e) => {
            ctx.ui.warn(format!(
                "{e}: prune cannot tell which release was live when the processes it cannot \
                 inspect started, so it keeps every release older than they are"
            ));
            None
        }
    };
    let reaches: Vec<(&procs::Hidden, procs::Reach)> = hidden
        .iter()
        .map(|h| (h, h.reach(timeline.as_ref())))
        .collect();
    let held = plan.hold_back(|id| reaches.iter().any(|(_, reach)| reach.includes(id)));
    if held.is_empty() {
        return;
    }
    let blocking: Vec<&(&procs::Hidden, procs::Reach)> = reaches
        .iter()
        .filter(|(_, reach)| held.iter().any(|id| reach.includes(id)))
        .collect();
    let named: Vec<String> = blocking
        .iter()
        .take(3)
        .map(|(h, _)| format!("{} (pid {}) of {}: {}", h.name, h.pid, h.user, h.error))
        .collect();
    let more = match blocking.len().saturating_sub(named.len()) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    let unknown = blocking
        .iter()
        .filter(|(_, reach)| !matches!(reach, procs::Reach::Releases(_)))
        .count();
    let guessing = match unknown {
        0 => String::new(),
        n => format!(
            "; for {n} of them shipit cannot tell what was live when they started (the history \
             does not say), so every release older than they are is kept"
        ),
    };
    let held: Vec<String> = held.iter().map(Layout::display).collect();
    let them = if held.len() == 1 { "it" } else { "them" };
    ctx.ui.warn(format!(
        "kept {}, which prune would remove: processes that shipit cannot inspect may run from \
         {them} ({}{more}); such a process is taken to run the release that was live when it \
         started, and any release its command line names{guessing}\n\
         hint: run `shipit prune` as root or as the user those processes run as",
        held.join(", "),
        named.join("; ")
    ));
}

/// Delete what `plan` says, then build logs of releases older than the
/// oldest one kept. Returns what was removed.
pub fn apply(layout: &Layout, plan: &Plan) -> Result<Vec<ReleaseId>> {
    let mut removed = Vec::new();
    for id in &plan.remove {
        store::remove_release(layout, id)?;
        removed.push(id.clone());
    }
    if let Some((oldest, _)) = plan.keep.iter().min_by(|a, b| a.0.cmp(&b.0)) {
        remove_logs_before(layout, oldest);
    }
    Ok(removed)
}

/// Measure again what the remaining releases do not share, once `removed`
/// are gone: an extent a release shared only with a removed one is its own
/// now. Where files cannot share extents nothing changes and nothing is
/// measured. Best effort: a figure that cannot be updated keeps the old one
/// (a lower bound still) and warns.
pub fn remeasure(ctx: &Ctx, removed: &[ReleaseId]) {
    let layout = &ctx.layout;
    if removed.is_empty() || !crate::disk::sharing_possible(&layout.releases()) {
        return;
    }
    let Ok(listing) = store::list(layout) else {
        return;
    };
    for r in &listing.releases {
        let Some(meta) = &r.meta else {
            continue;
        };
        let dir = layout.release(&r.id);
        let updated = crate::disk::measure(&dir)
            .map_err(|e| crate::error::Error::io("could not measure", &dir, e))
            .and_then(|usage| match meta.disk == Some(usage) {
                true => Ok(()),
                false => store::set_disk(layout, &r.id, usage),
            });
        if let Err(e) = updated {
            ctx.ui.warn(format!(
                "{e}: `shipit releases` keeps its older figure of what it does not share"
            ));
        }
    }
}

/// Logs of failed builds have no release to go with; they are kept until
/// every release of their age has been pruned, so a failure can be read.
fn remove_logs_before(layout: &Layout, oldest: &ReleaseId) {
    let Ok(entries) = std::fs::read_dir(layout.logs()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if let Ok(id) = ReleaseId::parse(stem)
            && &id < oldest
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn rel(id: &str, status: Status) -> Release {
        let id = ReleaseId::parse(id).unwrap();
        Release {
            meta: Some(store::Metadata {
                id: id.clone(),
                status,
                revision: None,
                revision_time: None,
                branch: None,
                source: String::new(),
                deployed_by: String::new(),
                created_at: id.time(),
                build_duration_ms: 0,
                previous: None,
                failure: None,
                proven: Some(status != Status::Failed),
                activation_started: None,
                reuse: Default::default(),
                disk: None,
            }),
            proven: status != Status::Failed,
            id,
        }
    }

    fn id(s: &str) -> ReleaseId {
        ReleaseId::parse(s).unwrap()
    }

    fn ids(v: &[ReleaseId]) -> Vec<&str> {
        v.iter().map(|i| i.as_str()).collect()
    }

    const A: &str = "20260101000001";
    const B: &str = "20260101000002";
    const C: &str = "20260101000003";
    const D: &str = "20260101000004";
    const E: &str = "20260101000005";

    #[test]
    fn keeps_the_newest_n() {
        let rs: Vec<_> = [A, B, C, D, E]
            .iter()
            .map(|i| rel(i, Status::Ready))
            .collect();
        let p = plan(&rs, Some(&id(E)), &BTreeSet::new(), 3);
        assert_eq!(ids(&p.remove), [A, B]);
        let kept: Vec<_> = p.keep.iter().map(|(i, r)| (i.as_str(), *r)).collect();
        assert_eq!(
            kept,
            [
                (C, Reason::Newest),
                (D, Reason::RollbackTarget),
                (E, Reason::Current)
            ]
        );
    }

    #[test]
    fn keep_one_still_keeps_current_and_rollback_target() {
        let rs: Vec<_> = [A, B, C].iter().map(|i| rel(i, Status::Ready)).collect();
        let p = plan(&rs, Some(&id(C)), &BTreeSet::new(), 1);
        assert_eq!(ids(&p.remove), [A]);
    }

    #[test]
    fn after_a_rollback_current_is_old_and_kept() {
        let mut rs: Vec<_> = [A, B, C, D].iter().map(|i| rel(i, Status::Ready)).collect();
        rs[3] = rel(D, Status::RolledBack);
        rs[2] = rel(C, Status::RolledBack);
        // Current is B after two rollbacks; the target is A.
        let p = plan(&rs, Some(&id(B)), &BTreeSet::new(), 1);
        assert_eq!(ids(&p.remove), [C]);
    }

    #[test]
    fn failed_go_first() {
        let rs = vec![
            rel(A, Status::Ready),
            rel(B, Status::Failed),
            rel(C, Status::Ready),
            rel(D, Status::Failed),
            rel(E, Status::Live),
        ];
        let p = plan(&rs, Some(&id(E)), &BTreeSet::new(), 2);
        assert_eq!(ids(&p.remove), [B, D, A]);
        // With room to spare, the newest failed one fills it.
        let p = plan(&rs, Some(&id(E)), &BTreeSet::new(), 4);
        assert_eq!(ids(&p.remove), [B]);
    }

    #[test]
    fn in_use_is_kept() {
        let rs: Vec<_> = [A, B, C, D].iter().map(|i| rel(i, Status::Ready)).collect();
        let in_use = BTreeSet::from([id(A)]);
        let p = plan(&rs, Some(&id(D)), &in_use, 1);
        assert_eq!(ids(&p.remove), [B]);
        assert!(p.keep.contains(&(id(A), Reason::InUse)));
    }

    #[test]
    fn holding_back_keeps_what_may_be_in_use() {
        let rs: Vec<_> = [A, B, C, D].iter().map(|i| rel(i, Status::Ready)).collect();
        let mut p = plan(&rs, Some(&id(D)), &BTreeSet::new(), 1);
        assert_eq!(ids(&p.remove), [A, B]);
        assert_eq!(ids(&p.hold_back(|i| *i == id(A))), [A]);
        assert_eq!(ids(&p.remove), [B]);
        assert_eq!(p.keep.len(), 3);
        assert!(p.keep.contains(&(id(A), Reason::Unverified)));
        assert!(p.keep.contains(&(id(D), Reason::Current)));
    }

    #[test]
    fn nothing_live_keeps_newest() {
        let rs: Vec<_> = [A, B, C].iter().map(|i| rel(i, Status::Failed)).collect();
        let p = plan(&rs, None, &BTreeSet::new(), 2);
        assert_eq!(ids(&p.remove), [A]);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::rollback;
    use proptest::prelude::*;

    const STATUSES: [Status; 4] = [
        Status::Ready,
        Status::Live,
        Status::Failed,
        Status::RolledBack,
    ];

    /// Random releases (distinct ids, random statuses), a random `current`
    /// among them or none, a random in-use subset, and `keep` in 1..=8.
    fn world()
    -> impl Strategy<Value = (Vec<Release>, Option<ReleaseId>, BTreeSet<ReleaseId>, usize)> {
        proptest::collection::btree_map(0u32..5000, (0usize..4, any::<bool>()), 0..24)
            .prop_flat_map(|entries| {
                let n = entries.len();
                let releases: Vec<(Release, bool)> = entries
                    .into_iter()
                    .map(|(offset, (status, used))| {
                        let id = ReleaseId::from_time(
                            ReleaseId::parse("20260101000000").unwrap().time()
                                + chrono::TimeDelta::minutes(offset as i64),
                        );
                        (tests::rel(id.as_str(), STATUSES[status]), used)
                    })
                    .collect();
                (
                    Just(releases),
                    proptest::option::of(0..n.max(1)),
                    1usize..=8,
                )
            })
            .prop_map(|(releases, current, keep)| {
                let in_use = releases
                    .iter()
                    .filter(|(_, u)| *u)
                    .map(|(r, _)| r.id.clone())
                    .collect();
                let releases: Vec<Release> = releases.into_iter().map(|(r, _)| r).collect();
                let current = current.and_then(|i| releases.get(i)).map(|r| r.id.clone());
                (releases, current, in_use, keep)
            })
    }

    proptest! {
        #[test]
        fn the_plan_never_removes_what_must_stay((releases, current, in_use, keep) in world()) {
            let p = plan(&releases, current.as_ref(), &in_use, keep);
            let removed: BTreeSet<&ReleaseId> = p.remove.iter().collect();
            let kept: BTreeSet<&ReleaseId> = p.keep.iter().map(|(id, _)| id).collect();
            // Every release is either kept or removed, never both.
            prop_assert_eq!(removed.len() + kept.len(), releases.len());
            prop_assert!(removed.is_disjoint(&kept));
            if let Some(c) = &current {
                prop_assert!(!removed.contains(c), "removed current");
                if let Some(t) = rollback::target(&releases, c) {
                    prop_assert!(!removed.contains(&t), "removed the rollback target");
                }
            }
            for id in &in_use {
                prop_assert!(!removed.contains(id), "removed a release in use");
            }
            // The newest `keep` good releases are all kept.
            let mut good: Vec<&Release> = releases.iter().filter(|r| r.status() != Status::Failed).collect();
            good.sort_by(|a, b| b.id.cmp(&a.id));
            for r in good.iter().take(keep) {
                prop_assert!(kept.contains(&r.id), "dropped a newest good release");
            }
            // Failed ones go first: a good release is removed only when no
            // unprotected failed release is kept.
            if removed.iter().any(|id| releases.iter().any(|r| &r.id == *id && r.status() != Status::Failed)) {
                for (id, reason) in &p.keep {
                    let failed = releases.iter().any(|r| &r.id == id && r.status() == Status::Failed);
                    prop_assert!(!(failed && *reason == Reason::Newest), "kept a failed release over a good one");
                }
            }
            // Nothing is removed while there are no more than `keep` releases.
            if releases.len() <= keep {
                prop_assert!(p.remove.is_empty());
            }
        }

        #[test]
        fn the_rollback_target_is_the_newest_good_older_release((releases, current, _in_use, _keep) in world()) {
            let Some(current) = current else { return Ok(()); };
            let eligible = |r: &Release| r.id < current && !matches!(r.status(), Status::Failed | Status::RolledBack);
            match rollback::target(&releases, &current) {
                Some(t) => {
                    let r = releases.iter().find(|r| r.id == t).unwrap();
                    prop_assert!(eligible(r));
                    prop_assert!(!releases.iter().any(|o| eligible(o) && o.id > t), "a newer eligible release exists");
                }
                None => prop_assert!(!releases.iter().any(eligible)),
            }
        }
    }
}
