//! Rollback: make an earlier release live again through the same
//! activation as a deploy ([`crate::activate`]). No rebuild.
//!
//! Without `--to`, the target is the newest release older than `current`
//! that proved itself live (passed its gate as the release users reach) and
//! neither failed since nor was rolled away from, so repeated rollbacks keep
//! stepping back and never return to a release an operator already backed
//! out of, nor to one whose deploy was cut short before its gate. `--to`
//! names any release, except a failed one, which takes `--force`.

use std::time::{Duration, Instant};

use crate::activate::{self, Live};
use crate::context::Ctx;
use crate::error::{Error, Result};
use crate::history::{self, Event};
use crate::layout::{Layout, ReleaseId};
use crate::store::{self, Current, Release, Status};

/// Where `shipit rollback` (without `--to`) goes from `current`.
pub fn target(releases: &[Release], current: &ReleaseId) -> Option<ReleaseId> {
    releases
        .iter()
        .filter(|r| {
            &r.id < current
                && r.proven
                && !matches!(r.status(), Status::Failed | Status::RolledBack)
        })
        .map(|r| r.id.clone())
        .max()
}

#[derive(Debug)]
pub struct Outcome {
    pub from: Option<ReleaseId>,
    pub to: ReleaseId,
    pub duration: Duration,
}

/// Check the request against the disk and pick the target, changing nothing.
pub fn choose(ctx: &Ctx, to: Option<&ReleaseId>, force: bool) -> Result<(Current, ReleaseId)> {
    let layout = &ctx.layout;
    let listing = store::list(layout)?;
    let current = store::read_current(layout)?;
    if current == Current::NotSymlink {
        return Err(store::require_sane_current(layout).unwrap_err());
    }
    crate::activate::slots::preflight(ctx)?;
    let target = match to {
        Some(id) => {
            if listing.get(id).is_none() {
                return Err(Error::usage(format!("there is no release {id}"))
                    .live(current.describe())
                    .hint("`shipit releases` lists the releases you can roll back to"));
            }
            if current.id() == Some(id) {
                return Err(
                    Error::usage(format!("{} is already live", Layout::display(id)))
                        .live(current.describe()),
                );
            }
            let failed = listing
                .get(id)
                .and_then(|r| r.meta.as_ref())
                .filter(|m| m.status == Status::Failed);
            if let (Some(meta), false) = (failed, force) {
                let why = meta.failure.as_deref().unwrap_or("no reason was recorded");
                return Err(Error::usage(format!(
                    "{} failed when it was deployed: {why}",
                    Layout::display(id)
                ))
                .live(current.describe())
                .hint(format!(
                    "pick a good release (`shipit releases` lists them), or pass --force to \
                     make {} live anyway (it is gated again)",
                    Layout::display(id)
                )));
            }
            id.clone()
        }
        None => {
            let Some(from) = current.id() else {
                return Err(Error::usage("there is no live release to roll back from")
                    .live(current.describe())
                    .hint(
                        "pick one with `shipit rollback --to <id>` (`shipit releases` lists them)",
                    ));
            };
            target(&listing.releases, from).ok_or_else(|| {
                Error::usage(format!(
                    "there is no good release older than {}",
                    Layout::display(from)
                ))
                .live(current.describe())
                .hint("`shipit releases` lists them; `--to <id>` picks one explicitly")
            })?
        }
    };
    Ok((current, target))
}

/// Roll back. Callers hold the deploy lock.
pub fn run(ctx: &Ctx, to: Option<&ReleaseId>, force: bool) -> Result<Outcome> {
    let started = Instant::now();
    let layout = &ctx.layout;
    let (current, target) = choose(ctx, to, force)?;
    if let Some(warning) = store::list(&ctx.layout)
        .ok()
        .and_then(|listing| listing.stray_warning(&ctx.layout))
    {
        ctx.ui.warn(warning);
    }
    let from = current.id().cloned();
    // A rollback never runs migrations: say so when it crosses some.
    if let Some(warning) =
        history::migrate_warning(&target, &history::migrated_after(layout, &target))
    {
        ctx.ui.warn(warning);
    }

    let mut event = Event::new(
        crate::history::EventKind::Rollback,
        crate::history::Outcome::Ok,
    );
    event.previous = from.clone();
    event.release = Some(target.clone());
    let meta = store::read_metadata(layout, &target).ok().flatten();
    event.revision = meta.as_ref().and_then(|m| m.revision.clone());
    event.branch = meta.as_ref().and_then(|m| m.branch.clone());
    let record = |event: Event, error: Option<&Error>, live: Option<ReleaseId>| {
        history::record(layout, &ctx.ui, event, started, error, live)
    };

    let live = Live {
        id: &target,
        revision: event.revision.as_deref(),
        branch: event.branch.as_deref(),
        previous: from.as_ref(),
    };
    let activated = activate::rollback(ctx, &live);
    let live_now = match &activated {
        Ok(_) => Some(target.clone()),
        Err(failed) => failed.live.clone(),
    };
    if live_now.as_ref() == Some(&target) {
        // A release that failed stays failed: it must never look like a
        // good rollback target (or a keeper for prune) again.
        if let Some(from) = &from
            && store::read_metadata(layout, from)
                .ok()
                .flatten()
                .is_none_or(|m| m.status != Status::Failed)
        {
            mark(ctx, from, Status::RolledBack);
        }
        if activated.is_ok() {
            // It passed its gate as the live release (a forced failed one
            // too: it stays failed, but it has now proved itself).
            let status = match meta.as_ref().map(|m| m.status) {
                Some(Status::Failed) => Status::Failed,
                _ => Status::Live,
            };
            if let Err(e) = store::mark_proven(layout, &target, status) {
                ctx.ui.warn(format!(
                    "could not record {} as proven: {e}",
                    Layout::display(&target)
                ));
            }
        } else if meta.as_ref().is_some_and(|m| m.status != Status::Failed) {
            mark(ctx, &target, Status::Live);
        }
    }
    // Named once the outcome is recorded: the look through `/proc` ran
    // meanwhile.
    let activated = activated.map(|activated| {
        activated.running(ctx);
    });
    if let Err(failed) = activated {
        if failed.refused {
            event.outcome = history::Outcome::Refused;
        }
        record(event, Some(&failed.error), failed.live);
        return Err(failed.error);
    }
    if let Some(why) = crate::activate::slots::front_unproven(ctx) {
        ctx.ui.warn(&why);
        event.message = Some(why);
    }
    record(event, None, Some(target.clone()));
    Ok(Outcome {
        from,
        to: target,
        duration: started.elapsed(),
    })
}

/// Record a status after the swap. Bookkeeping must never stop the
/// sequence between a swap and its reload, so a failure here only warns.
pub fn mark(ctx: &Ctx, id: &ReleaseId, status: Status) {
    if let Err(e) = store::set_status(&ctx.layout, id, status, None) {
        ctx.ui.warn(format!(
            "could not record {} as {}: {e}",
            Layout::display(id),
            status.as_str()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prune::tests::rel;

    #[test]
    fn steps_back_over_failed_and_rolled_back() {
        let rs = vec![
            rel("20260101000001", Status::Ready),
            rel("20260101000002", Status::RolledBack),
            rel("20260101000003", Status::Failed),
            rel("20260101000004", Status::Live),
        ];
        let cur = ReleaseId::parse("20260101000004").unwrap();
        assert_eq!(target(&rs, &cur).unwrap().as_str(), "20260101000001");
        let first = ReleaseId::parse("20260101000001").unwrap();
        assert_eq!(target(&rs, &first), None);
    }

    #[test]
    fn newer_releases_are_never_a_target() {
        let rs = vec![
            rel("20260101000001", Status::Ready),
            rel("20260101000002", Status::Ready),
            rel("20260101000003", Status::Ready),
        ];
        let cur = ReleaseId::parse("20260101000002").unwrap();
        assert_eq!(target(&rs, &cur).unwrap().as_str(), "20260101000001");
    }
}
