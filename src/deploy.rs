//! The deploy sequence: build → publish → migrate → activate → prune.
//!
//! The release is built and published by [`crate::release`], in
//! `.shipit/staging/<id>`, invisible to listings; a failure or an
//! interrupt there deletes the staging directory and leaves `current` and
//! `releases/` exactly as they were. The release enters `releases/` by one
//! rename that cannot replace anything. Activation
//! ([`crate::activate`]: reload + gate, or slots) makes it live or restores
//! what was live, so the outcome is always one whole release live, never
//! half of one. Callers hold the deploy lock for the whole sequence.

use std::fs::File;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::activate::{self, Live};
use crate::context::Ctx;
use crate::error::{Error, Kind, Result};
use crate::history::{self, Event};
use crate::hooks;
use crate::interrupt;
use crate::layout::{Layout, ReleaseId};
use crate::prune;
use crate::release::{self, build::For};
use crate::rollback;
use crate::source::{self, Resolved};
use crate::store::{self, Metadata, Status};
use crate::whoami;

pub struct Request {
    pub reference: Option<String>,
    pub no_rollback: bool,
    /// Push to deploy: read the revision from this repository, with the
    /// git hook's environment (see [`source::Origin::PushedRepo`]).
    pub pushed_repo: Option<std::path::PathBuf>,
    /// The branch to record (a push deploys a sha of this branch).
    pub branch: Option<String>,
    /// Do not run `hooks.migrate` (recorded in the history).
    pub skip_migrate: bool,
}

#[derive(Debug)]
pub struct Outcome {
    pub release: ReleaseId,
    pub previous: Option<ReleaseId>,
    pub revision: Option<String>,
    pub branch: Option<String>,
    pub removed: Vec<ReleaseId>,
    pub duration: Duration,
    /// Why the release could not be recorded as proven live (it is live
    /// either way, but never a rollback target until a deploy proves it).
    pub unproven: Option<String>,
}

/// Checks that need nothing on disk: run them before creating anything.
pub fn preflight(ctx: &Ctx, req: &Request) -> Result<()> {
    if let Some(reference) = &req.reference {
        crate::gitref::check_ref(reference)?;
    }
    let current = store::require_sane_current(&ctx.layout)?;
    crate::activate::slots::preflight(ctx)?;
    if let (Some(reference), Some(url), None) =
        (&req.reference, &ctx.config.source.git, &req.pushed_repo)
    {
        source::check_remote_ref(url, reference)
            .map_err(|e| e.in_phase(Kind::BeforeSwap).live(current.describe()))?;
    }
    release::check_shared(ctx)?;
    // A release must not start without its secrets.
    crate::hookenv::require().map_err(|e| e.live(current.describe()))
}

/// Deploy `req` on `state`, the releases and what is live as the caller
/// read them under the lock ([`crate::mutation::begin_reading`]).
pub fn run(ctx: &Ctx, req: &Request, state: store::Snapshot) -> Result<Outcome> {
    let started = Instant::now();
    let layout = &ctx.layout;
    let store::Snapshot { listing, current } = state;
    if let Some(warning) = listing.stray_warning(layout) {
        ctx.ui.warn(warning);
    }
    let current = store::sane(layout, current)?;
    let previous = current.id().cloned();
    release::clear_leftovers(ctx);

    let mut event = Event::new(
        crate::history::EventKind::Deploy,
        crate::history::Outcome::Ok,
    );
    event.previous = previous.clone();
    let record = |event: Event, error: Option<&Error>, live: Option<ReleaseId>| {
        history::record(layout, &ctx.ui, event, started, error, live)
    };

    let (id, resolved) = match build_and_publish(ctx, req, &listing, previous.as_ref(), &mut event)
    {
        Ok(built) => built,
        Err(e) => {
            let e = e.in_phase(Kind::BeforeSwap).live(current.describe());
            record(event, Some(&e), previous.clone());
            return Err(e);
        }
    };

    // The release is complete and published; nothing is live yet. Its
    // migrations run now, before any user can reach it.
    if let Err(e) = migrate(ctx, req, &id, &resolved, previous.as_ref(), &mut event) {
        let e = e.in_phase(Kind::BeforeSwap).live(current.describe());
        if let Err(mark) = store::set_status(layout, &id, Status::Failed, Some(e.to_string())) {
            ctx.ui.warn(format!(
                "could not record {} as failed: {mark}",
                Layout::display(&id)
            ));
        }
        record(event, Some(&e), previous.clone());
        return Err(e);
    }

    // The release is complete and published; nothing is live yet.
    let published = Published {
        id,
        revision: resolved.revision,
        branch: resolved.branch,
        previous,
    };
    go_live(ctx, published, req.no_rollback, event, started)
}

/// A release under `releases/` that is about to go live.
pub struct Published {
    pub id: ReleaseId,
    pub revision: Option<String>,
    pub branch: Option<String>,
    /// What is live now.
    pub previous: Option<ReleaseId>,
}

/// The release live before a deploy, stored as live, is ready again.
fn retire(ctx: &Ctx, previous: Option<&ReleaseId>) {
    if let Some(prev) = previous
        && store::read_metadata(&ctx.layout, prev)
            .ok()
            .flatten()
            .is_some_and(|m| m.status == Status::Live)
    {
        rollback::mark(ctx, prev, Status::Ready);
    }
}

/// Activate a published release, then the bookkeeping of a deploy:
/// statuses, prune, history. A fleet host runs this for a release it
/// received instead of built.
pub fn go_live(
    ctx: &Ctx,
    published: Published,
    no_rollback: bool,
    event: Event,
    started: Instant,
) -> Result<Outcome> {
    Ok(switch_to(ctx, published, no_rollback, event, started)?.record(ctx))
}

/// Activate a published release: once this returns, users are served by
/// it (its gate passed), or by what was live before, whose outcome is
/// recorded. The new release's outcome is recorded by
/// [`Switched::record`], which a fleet host does after it told its
/// controller (at `batch = 1` the next host is switched meanwhile).
/// Until then the release is live but not proven on disk: a crash in
/// between leaves it as an interrupted activation, never a rollback
/// target.
pub fn switch_to(
    ctx: &Ctx,
    published: Published,
    no_rollback: bool,
    mut event: Event,
    started: Instant,
) -> Result<Switched> {
    let Published {
        id,
        revision,
        branch,
        previous,
    } = published;
    let live = Live {
        id: &id,
        revision: revision.as_deref(),
        branch: branch.as_deref(),
        previous: previous.as_ref(),
    };
    match activate::deploy(ctx, &live, no_rollback) {
        Ok(activated) => Ok(Switched {
            activated,
            event,
            started,
            outcome: Outcome {
                release: id,
                previous,
                revision,
                branch,
                removed: Vec::new(),
                duration: started.elapsed(),
                unproven: None,
            },
        }),
        Err(failed) => {
            if failed.refused {
                event.outcome = history::Outcome::Refused;
            }
            // Back on the previous release, after this one's migrations ran.
            if event.migrate == Some(history::Migrate::Ran)
                && failed.live.as_ref() != Some(&id)
                && let Some(back) = &failed.live
                && let Some(warning) = history::migrate_warning(back, std::slice::from_ref(&id))
            {
                ctx.ui.warn(warning);
            }
            history::record(
                &ctx.layout,
                &ctx.ui,
                event,
                started,
                Some(&failed.error),
                failed.live,
            );
            Err(failed.error)
        }
    }
}

/// A deploy whose release is live and passed its gate, its outcome not
/// yet recorded ([`switch_to`]).
pub struct Switched {
    activated: activate::Activated,
    event: Event,
    started: Instant,
    outcome: Outcome,
}

impl Switched {
    pub fn release(&self) -> &ReleaseId {
        &self.outcome.release
    }

    /// The bookkeeping of a deploy that succeeded: the release marked
    /// proven live, its predecessor ready again, the prune, the history.
    /// A step that fails is a warning: the release is live either way.
    pub fn record(self, ctx: &Ctx) -> Outcome {
        let Switched {
            activated,
            mut event,
            started,
            mut outcome,
        } = self;
        let layout = &ctx.layout;
        let id = &outcome.release;
        let previous = outcome.previous.as_ref();
        if let Some(why) = crate::activate::slots::front_unproven(ctx) {
            ctx.ui.warn(&why);
            event.message = Some(why);
        }
        // The two marks are independent (a release that is not `current`
        // reads as ready whatever it says, and a crash between them leaves
        // either order), so both wait on the disk at once.
        std::thread::scope(|scope| {
            let retiring = std::thread::Builder::new()
                .name("mark-previous-ready".into())
                .spawn_scoped(scope, || retire(ctx, previous));
            if let Err(e) = store::mark_proven(layout, id, Status::Live) {
                let why = format!(
                    "could not record {} as proven live: {e}",
                    Layout::display(id)
                );
                ctx.ui.warn(&why);
                outcome.unproven = Some(why);
            }
            if retiring.is_err() {
                retire(ctx, previous);
            }
        });
        let running = activated.running(ctx);
        let removed = match prune::after_activation(ctx, ctx.config.keep_releases, running) {
            Ok((_, removed)) => removed,
            Err(e) => {
                ctx.ui
                    .warn(format!("the deploy succeeded, but pruning failed: {e}"));
                Vec::new()
            }
        };
        for r in &removed {
            ctx.ui.step("Pruned", Layout::display(r));
        }
        release::forget_unused_pristines(ctx);
        // Measured once the pruned releases are deleted (a fleet host's
        // agent deletes them after it answered, and measures then).
        if !store::deleting_later() {
            prune::remeasure(ctx, &removed);
        }
        event.removed = removed.clone();
        history::record(layout, &ctx.ui, event, started, None, Some(id.clone()));
        outcome.removed = removed;
        outcome.duration = started.elapsed();
        outcome
    }
}

/// Run `hooks.migrate` in the published release `id` (its shared paths are
/// linked), recording in `event` that it ran, failed or was skipped. An
/// interrupt stops it as it stops a build hook.
fn migrate(
    ctx: &Ctx,
    req: &Request,
    id: &ReleaseId,
    resolved: &Resolved,
    previous: Option<&ReleaseId>,
    event: &mut Event,
) -> Result<()> {
    if !migrate_wanted(ctx, req.skip_migrate, event) {
        return Ok(());
    }
    let live = Live {
        id,
        revision: resolved.revision.as_deref(),
        branch: resolved.branch.as_deref(),
        previous,
    };
    run_migrate(ctx, &live, &[], event)
}

/// Whether this rollout runs `hooks.migrate`: not without one, and not
/// with `--skip-migrate`, which is said and recorded in `event`.
pub fn migrate_wanted(ctx: &Ctx, skip: bool, event: &mut Event) -> bool {
    if ctx.config.hooks.migrate.is_empty() {
        return false;
    }
    if skip {
        ctx.ui.step("Skipping", "the migrate hook (--skip-migrate)");
        event.migrate = Some(history::Migrate::Skipped);
        return false;
    }
    true
}

/// The migrate hook's commands, in the published release `live.id`, with
/// the hook environment (and `extra_env`), its timeout, and its output
/// streamed and appended to the release's build log; `event` says whether
/// it ran or failed. A single host runs it before its swap; a fleet's
/// primary host runs it once per rollout (`fleet-agent migrate`).
pub fn run_migrate(
    ctx: &Ctx,
    live: &Live,
    extra_env: &[(String, String)],
    event: &mut Event,
) -> Result<()> {
    let layout = &ctx.layout;
    let id = live.id;
    let release = layout.release(id);
    let mut env = activate::hook_env(layout, live);
    env.extend(extra_env.iter().cloned());
    let mut log = crate::state::open_or_explain(
        &layout.build_log(id),
        File::options().append(true).create(true),
        "the build log",
    )?;
    interrupt::check()?;
    event.migrate_time = Some(Utc::now());
    event.migrate = Some(history::Migrate::Failed);
    let hooks = &ctx.config.hooks;
    hooks::run_each(
        hooks::Kind::Migrate,
        "Migrating",
        &hooks.migrate,
        (&release, &env),
        (hooks.migrate_timeout, "hooks.migrate_timeout"),
        &ctx.ui,
        &mut log,
    )
    .map_err(|e| {
        if e.kind == Kind::Interrupted {
            e.context("deploy interrupted during the migrate hook; nothing was switched")
        } else if e.hint.is_some() {
            e
        } else {
            e.hint(format!(
                "nothing was switched; the build log is {}; fix the migration and deploy \
                     again",
                layout.build_log(id).display()
            ))
        }
    })?;
    event.migrate = Some(history::Migrate::Ran);
    Ok(())
}

/// Fetch, build and publish. On any failure the staging directory is
/// gone when this returns.
fn build_and_publish(
    ctx: &Ctx,
    req: &Request,
    listing: &store::Listing,
    previous: Option<&ReleaseId>,
    event: &mut Event,
) -> Result<(ReleaseId, Resolved)> {
    let layout = &ctx.layout;
    let wanted = source::Wanted {
        reference: req.reference.as_deref(),
        pushed_repo: req.pushed_repo.as_deref(),
        branch: req.branch.as_deref(),
    };
    let resolved = release::resolve(ctx, &wanted)?;
    event.revision = resolved.revision.clone();
    event.branch = resolved.branch.clone();
    interrupt::check()?;

    let id = listing.allocate(Utc::now());
    event.release = Some(id.clone());
    let started = Instant::now();
    let built = release::Staging::begin(ctx, &id).and_then(|staging| {
        let target = For::ThisHost { previous };
        let reuse = release::build::build(ctx, &staging, &resolved, target, |env, log| {
            crate::reuse::prepare(ctx, &id, staging.dir(), env, log, &listing.releases)
        })?;
        interrupt::check()?;
        staging.publish(Metadata {
            id: id.clone(),
            status: Status::Ready,
            revision: resolved.revision.clone(),
            revision_time: resolved.revision_time,
            branch: resolved.branch.clone(),
            source: resolved.source.clone(),
            deployed_by: format!("{}@{}", whoami::user(), whoami::host()),
            created_at: Utc::now(),
            build_duration_ms: started.elapsed().as_millis() as u64,
            previous: previous.cloned(),
            failure: None,
            proven: Some(false),
            activation_started: None,
            reuse,
            disk: None,
        })
    });
    built.map_err(|e| {
        if e.kind == Kind::Interrupted {
            e.context("deploy interrupted before the swap; the partial build was removed")
        } else if e.hint.is_some() {
            e
        } else {
            e.hint(format!(
                "the build log is {}; fix the cause and deploy again",
                layout.build_log(&id).display()
            ))
        }
    })?;
    Ok((id, resolved))
}
