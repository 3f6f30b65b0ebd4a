//! The deploy sequence: build → publish → activate → prune.
//!
//! Everything before activation happens in `.shipit/staging/<id>`, invisible
//! to listings; a failure or an interrupt there deletes the staging directory
//! and leaves `current` and `releases/` exactly as they were. The release
//! enters `releases/` by one rename that cannot replace anything. Activation
//! ([`crate::activate`]: reload + gate, or slots) makes it live or restores
//! what was live, so the outcome is always one whole release live, never
//! half of one. Callers hold the deploy lock for the whole sequence.

use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::activate::{self, Live};
use crate::context::Ctx;
use crate::error::{Error, IoContext, Kind, Result};
use crate::history::{self, Event};
use crate::hooks::{self, Hook};
use crate::interrupt;
use crate::layout::{Layout, ReleaseId};
use crate::pipeline;
use crate::prune;
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
}

/// Checks that need nothing on disk: run them before creating anything.
pub fn preflight(ctx: &Ctx, req: &Request) -> Result<()> {
    if let Some(reference) = &req.reference {
        crate::gitref::check_ref(reference)?;
    }
    let current = store::require_sane_current(&ctx.layout)?;
    crate::slots::preflight(ctx)?;
    if let (Some(reference), Some(url), None) =
        (&req.reference, &ctx.config.source.git, &req.pushed_repo)
    {
        source::check_remote_ref(url, reference)
            .map_err(|e| e.in_phase(Kind::BeforeSwap).live(current.describe()))?;
    }
    check_shared(ctx)?;
    // A release must not start without its secrets.
    crate::hookenv::require().map_err(|e| e.live(current.describe()))
}

/// Every listed shared path exists in `shared/` as what it is listed as:
/// a release must not go live with a dangling link where a secret should
/// be.
pub(crate) fn check_shared(ctx: &Ctx) -> Result<()> {
    for (rel, is_dir) in ctx.config.shared_paths() {
        let path = ctx.layout.shared().join(&rel);
        if is_dir {
            if path.exists() && !path.is_dir() {
                return Err(Error::new(
                    Kind::BeforeSwap,
                    format!("shared directory {} is not a directory", path.display()),
                )
                .hint(
                    "entries ending in / are directories; move that file away or drop the slash",
                ));
            }
        } else if !path.is_file() {
            let what = if path.exists() {
                "is not a file"
            } else {
                "is missing"
            };
            return Err(Error::new(
                Kind::BeforeSwap,
                format!("shared file {} {what}", path.display()),
            )
            .hint(format!(
                "create it (shared files hold what outlives a release, like secrets), \
                 or remove {:?} from `shared` in {}",
                rel.display().to_string(),
                ctx.config.file.display()
            )));
        }
    }
    Ok(())
}

pub fn run(ctx: &Ctx, req: &Request) -> Result<Outcome> {
    let started = Instant::now();
    let layout = &ctx.layout;
    let listing = store::list(layout)?;
    if let Some(warning) = listing.stray_warning(layout) {
        ctx.ui.warn(warning);
    }
    let current = store::require_sane_current(layout)?;
    let previous = current.id().cloned();
    clear_leftovers(ctx);

    let mut event = Event::new("deploy", "ok");
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

/// Activate a published release, then the bookkeeping of a deploy:
/// statuses, prune, history. A fleet host runs this for a release it
/// received instead of built.
pub fn go_live(
    ctx: &Ctx,
    published: Published,
    no_rollback: bool,
    mut event: Event,
    started: Instant,
) -> Result<Outcome> {
    let layout = &ctx.layout;
    let record = |event: Event, error: Option<&Error>, live: Option<ReleaseId>| {
        history::record(layout, &ctx.ui, event, started, error, live)
    };
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
    if let Err(failed) = activate::deploy(ctx, &live, no_rollback) {
        if failed.refused {
            event.outcome = history::REFUSED.into();
        }
        // Back on the previous release, after this one's migrations ran.
        if event.migrate.as_deref() == Some(history::MIGRATE_RAN)
            && failed.live.as_ref() != Some(&id)
            && let Some(back) = &failed.live
            && let Some(warning) = history::migrate_warning(back, std::slice::from_ref(&id))
        {
            ctx.ui.warn(warning);
        }
        record(event, Some(&failed.error), failed.live);
        return Err(failed.error);
    }

    if let Some(why) = crate::slots::front_unproven(ctx) {
        ctx.ui.warn(&why);
        event.message = Some(why);
    }
    if let Err(e) = store::mark_proven(layout, &id, Status::Live) {
        ctx.ui.warn(format!(
            "could not record {} as proven live: {e}",
            Layout::display(&id)
        ));
    }
    if let Some(prev) = &previous
        && store::read_metadata(layout, prev)
            .ok()
            .flatten()
            .is_some_and(|m| m.status == Status::Live)
    {
        rollback::mark(ctx, prev, Status::Ready);
    }
    let removed = match prune::run(ctx, ctx.config.keep_releases, false) {
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
    forget_unused_pristines(ctx);
    prune::remeasure(ctx, &removed);
    event.removed = removed.clone();
    record(event, None, Some(id.clone()));
    Ok(Outcome {
        release: id,
        previous,
        revision,
        branch,
        removed,
        duration: started.elapsed(),
    })
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
        event.migrate = Some(history::MIGRATE_SKIPPED.into());
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
    event.migrate = Some(history::MIGRATE_FAILED.into());
    for command in &ctx.config.hooks.migrate {
        interrupt::check()?;
        ctx.ui.step("Migrating", command);
        let hook = Hook {
            name: "migrate",
            command,
            cwd: &release,
            env: &env,
            timeout: ctx.config.hooks.migrate_timeout,
            timeout_key: "hooks.migrate_timeout",
        };
        hooks::run(&hook, &ctx.ui, Some(&mut log)).map_err(|e| {
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
    }
    event.migrate = Some(history::MIGRATE_RAN.into());
    Ok(())
}

/// Fetch, stage, build and publish. On any failure the staging directory is
/// gone when this returns.
fn build_and_publish(
    ctx: &Ctx,
    req: &Request,
    listing: &store::Listing,
    previous: Option<&ReleaseId>,
    event: &mut Event,
) -> Result<(ReleaseId, Resolved)> {
    let layout = &ctx.layout;
    let fetching = match (&req.pushed_repo, &ctx.config.source.git) {
        (Some(repo), _) => Some(
            ctx.ui
                .long_step("Reading", format!("the push to {}", repo.display())),
        ),
        (None, Some(git)) => Some(ctx.ui.long_step("Fetching", git)),
        (None, None) => None,
    };
    let wanted = source::Wanted {
        reference: req.reference.as_deref(),
        pushed_repo: req.pushed_repo.as_deref(),
        branch: req.branch.as_deref(),
    };
    let resolved = source::resolve(&ctx.config, layout, &wanted)?;
    if let Some(step) = fetching {
        step.done();
    }
    for warning in &resolved.warnings {
        ctx.ui.warn(warning);
    }
    event.revision = resolved.revision.clone();
    event.branch = resolved.branch.clone();
    interrupt::check()?;

    let id = listing.allocate(Utc::now());
    event.release = Some(id.clone());
    let staging = layout.staging(&id);
    let staged = stage(ctx, &id, &staging, &resolved, previous)
        .and_then(|_| interrupt::check())
        .and_then(|_| {
            let _timing = crate::ui::Timing::start("publish");
            store::publish(layout, &staging, &id)
        });
    if let Err(e) = staged {
        if staging.exists()
            && let Err(cleanup) = store::discard(layout, &staging)
        {
            ctx.ui
                .warn(format!("could not remove the partial build: {cleanup}"));
        }
        let e = if e.kind == Kind::Interrupted {
            e.context("deploy interrupted before the swap; the partial build was removed")
        } else if e.hint.is_some() {
            e
        } else {
            e.hint(format!(
                "the build log is {}; fix the cause and deploy again",
                layout.build_log(&id).display()
            ))
        };
        return Err(e);
    }
    Ok((id, resolved))
}

fn stage(
    ctx: &Ctx,
    id: &ReleaseId,
    staging: &Path,
    resolved: &Resolved,
    previous: Option<&ReleaseId>,
) -> Result<()> {
    let layout = &ctx.layout;
    let started = Instant::now();
    fs::create_dir_all(staging).with_path("could not create", staging)?;
    let mut log = pipeline::open_build_log(
        layout,
        id,
        &pipeline::Origin {
            source: &resolved.source.to_string(),
            revision: resolved.revision.as_deref(),
            branch: resolved.branch.as_deref(),
        },
        &pipeline::Made::Here,
    )?;

    let exporting = match resolved.revision.as_deref() {
        Some(digest) if matches!(resolved.origin, source::Origin::Archive(_)) => ctx.ui.long_step(
            "Unpacking",
            format!(
                "{} (sha256 {}) into {} (it becomes {} once built)",
                resolved.source,
                &digest[..12],
                staging_display(layout, id),
                Layout::display(id)
            ),
        ),
        Some(sha) => ctx.ui.long_step(
            "Exporting",
            format!(
                "{} into {} (it becomes {} once built)",
                &sha[..sha.len().min(12)],
                staging_display(layout, id),
                Layout::display(id)
            ),
        ),
        None => ctx.ui.long_step(
            "Copying",
            format!(
                "{} into {} (it becomes {} once built)",
                resolved.source,
                staging_display(layout, id),
                Layout::display(id)
            ),
        ),
    };
    source::export(&ctx.config, layout, resolved, staging, &ctx.ui)?;
    exporting.done();
    link_shared(ctx, staging)?;

    let live = Live {
        id,
        revision: resolved.revision.as_deref(),
        branch: resolved.branch.as_deref(),
        previous,
    };
    let mut env = activate::hook_env(layout, &live);
    let reusing = crate::ui::Timing::start("reuse");
    let reuse = crate::reuse::prepare(ctx, id, staging, &mut env, &mut log)?;
    drop(reusing);
    let building = crate::ui::Timing::start("build");
    run_build_hooks(ctx, env, staging, &mut log)?;
    drop(building);

    let meta = Metadata {
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
        disk: measure_disk(ctx, staging),
    };
    store::write_metadata(staging, &meta)?;
    // Every file and directory of the release, its build log and the
    // pristine copies it keeps must be on disk before the release can go
    // live (and before a later release is built from those copies).
    let log_path = layout.build_log(id);
    let pristine = crate::reuse::pristine_dir(layout, id);
    let mut roots = vec![staging, log_path.as_path()];
    if pristine.exists() {
        roots.push(&pristine);
    }
    let _timing = crate::ui::Timing::start("sync");
    crate::fsutil::sync_release(&roots).with_path("could not sync", staging)
}

/// What a built release costs on disk, measured before it is published
/// (its metadata file aside): `None`, shown `?`, when it cannot be
/// measured, since a figure is never worth a failed deploy.
pub fn measure_disk(ctx: &Ctx, dir: &Path) -> Option<crate::disk::Usage> {
    match crate::disk::measure(dir) {
        Ok(usage) => Some(usage),
        Err(e) => {
            ctx.ui.warn(format!(
                "could not measure the size of {}: {e}; `shipit releases` shows it as ?",
                dir.display()
            ));
            None
        }
    }
}

/// Replace each shared path in the release with a symlink into `shared/`.
///
/// A shared directory that does not exist yet is created on first use,
/// seeded with what the release holds at that path (Deployer's rule):
/// otherwise the release's `uploads/` would vanish behind the link on the
/// first deploy. Once it exists, `shared/` wins and the release's copy is
/// replaced by the link, as for every later deploy. Shared files are never
/// seeded: a missing one stops the deploy before this ([`check_shared`]).
pub(crate) fn link_shared(ctx: &Ctx, release: &Path) -> Result<()> {
    for (rel, is_dir) in ctx.config.shared_paths() {
        let shared = ctx.layout.shared().join(&rel);
        // Refuse to follow a symlink from the repository on the way there:
        // it could point anywhere on the server.
        let mut prefix = release.to_path_buf();
        if let Some(parent) = rel.parent() {
            for part in parent.components() {
                prefix.push(part);
                if prefix.is_symlink() {
                    return Err(Error::internal(format!(
                        "shared path {} goes through a symlink in the release ({})",
                        rel.display(),
                        prefix.display()
                    ))
                    .hint("link the parent directory instead, or remove the symlink from the repository"));
                }
            }
        }
        let link = release.join(&rel);
        if is_dir && fs::symlink_metadata(&shared).is_err() {
            create_shared_dir(ctx, &rel, &shared, &link)?;
        }
        match fs::symlink_metadata(&link) {
            Ok(meta) if meta.is_dir() => {
                fs::remove_dir_all(&link).with_path("could not replace", &link)?
            }
            Ok(_) => fs::remove_file(&link).with_path("could not replace", &link)?,
            Err(_) => {}
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).with_path("could not create", parent)?;
        }
        symlink(&shared, &link).with_path("could not link shared path", &link)?;
    }
    Ok(())
}

/// Create the shared directory `shared` (`shared/<rel>`), seeded with the
/// release's directory `from` if it has one (a symlink in the release is
/// not followed: it could point anywhere on the server). The copy is made
/// under a temporary name and renamed into place, so a crash leaves either
/// no shared directory (the next deploy seeds it) or a whole one.
fn create_shared_dir(ctx: &Ctx, rel: &Path, shared: &Path, from: &Path) -> Result<()> {
    let parent = shared.parent().expect("a shared path lies under shared/");
    fs::create_dir_all(parent).with_path("could not create", parent)?;
    let seed = fs::symlink_metadata(from).is_ok_and(|m| m.is_dir());
    if !seed {
        return fs::create_dir(shared).with_path("could not create", shared);
    }
    let name = shared
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A draft a killed deploy left (callers hold the lock: none is in use).
    let prefix = format!(".{name}.seed-");
    for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let draft = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(parent)
        .with_path("could not create a directory in", parent)?;
    // A copy (cloned where the filesystem allows), never a move: the
    // release stays whole should the deploy stop before its link is made.
    crate::copy::Copier::new().tree(from, draft.path())?;
    let mode = fs::metadata(from)
        .with_path("could not inspect", from)?
        .permissions();
    fs::set_permissions(draft.path(), mode).with_path("could not set permissions on", shared)?;
    crate::fsutil::rename_noreplace(draft.path(), shared)
        .with_path("could not create the shared directory", shared)?;
    // The draft is the shared directory now: nothing left to clean up.
    let _ = draft.keep();
    ctx.ui.step(
        "Seeding",
        format!(
            "shared/{} with the release's {} (a shared directory is seeded on first use; from \
             now on shared/ wins)",
            rel.display(),
            rel.display()
        ),
    );
    Ok(())
}

/// Where a release is built, as progress lines name it.
fn staging_display(layout: &Layout, id: &ReleaseId) -> String {
    let staging = layout.staging(id);
    staging
        .strip_prefix(layout.root())
        .unwrap_or(&staging)
        .display()
        .to_string()
}

/// Remove the pristine copies of `[[reuse]]` directories that no release
/// refers to any more; a failure only warns (it is retried next time).
pub(crate) fn forget_unused_pristines(ctx: &Ctx) {
    for (path, error) in crate::reuse::forget_unused(&ctx.layout) {
        if let Some(e) = error {
            ctx.ui.warn(format!(
                "{e} (it will be retried on the next run): {}",
                path.display()
            ));
        }
    }
}

/// Remove what an interrupted run left under `.shipit` (staging, trash),
/// saying what was removed; what could not be is retried next time.
pub(crate) fn clear_leftovers(ctx: &Ctx) {
    forget_unused_pristines(ctx);
    clear_staging(ctx);
}

/// [`clear_leftovers`] but the pristine copies (a fleet's controller keeps
/// them by its own rule, in `fleet/reuse.rs`).
pub(crate) fn clear_staging(ctx: &Ctx) {
    for (leftover, error) in store::clear_leftovers(&ctx.layout) {
        match error {
            None => ctx.ui.step(
                "Cleaning",
                format!("removed leftover {}", leftover.display()),
            ),
            Some(e) => ctx
                .ui
                .warn(format!("{e} (it will be retried on the next run)")),
        }
    }
}

/// The build hooks, in order, in `cwd` (which `SHIPIT_BUILD_PATH` names),
/// with the hook variables `env`.
pub(crate) fn run_build_hooks(
    ctx: &Ctx,
    mut env: Vec<(String, String)>,
    cwd: &Path,
    log: &mut File,
) -> Result<()> {
    env.push(("SHIPIT_BUILD_PATH".into(), cwd.display().to_string()));
    for command in &ctx.config.hooks.build {
        interrupt::check()?;
        ctx.ui.step("Building", command);
        let hook = Hook {
            name: "build",
            command,
            cwd,
            env: &env,
            timeout: ctx.config.hooks.build_timeout,
            timeout_key: "hooks.build_timeout",
        };
        hooks::run(&hook, &ctx.ui, Some(&mut *log))?;
    }
    Ok(())
}
