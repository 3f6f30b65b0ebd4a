//! The release pipeline: how a source becomes a published release, one
//! sequence for `shipit deploy` (slots or not), a fleet controller's build
//! and a host receiving what its controller built.
//!
//! A release is made in `.shipit/staging/<id>` ([`Staging`]), invisible to
//! listings. Its tree is either built ([`build::build`]: export → shared
//! links → reused directories → build hooks, logged under one header, see
//! [`log`]) or unpacked from what a fleet controller built. It enters
//! `releases/` by [`Staging::publish`]: its metadata written, every file
//! synced, one rename that cannot replace anything. A staging directory
//! dropped unpublished is removed at once. A SIGKILL skips that, so every
//! command that changes releases first clears what a killed run left
//! ([`clear_leftovers`]): that, not the drop, is the real recovery.

pub(crate) mod build;
pub(crate) mod log;
pub(crate) mod shared;

use std::fs;
use std::path::{Path, PathBuf};

use crate::context::Ctx;
use crate::error::{IoContext, Result};
use crate::layout::{Layout, ReleaseId};
use crate::source::{self, Resolved, Wanted};
use crate::store::{self, Metadata};
use crate::ui::{Timing, Ui};

pub(crate) use shared::{check_shared, link_shared};

/// Resolve what to deploy (fetching the repository, or reading the push),
/// saying so, and the warnings the user must hear.
pub(crate) fn resolve(ctx: &Ctx, wanted: &Wanted) -> Result<Resolved> {
    let fetching = match (wanted.pushed_repo, &ctx.config.source.git) {
        (Some(repo), _) => Some(
            ctx.ui
                .long_step("Reading", format!("the push to {}", repo.display())),
        ),
        (None, Some(git)) => Some(ctx.ui.long_step("Fetching", git)),
        (None, None) => None,
    };
    let resolved = source::resolve(&ctx.config, &ctx.layout, wanted)?;
    if let Some(step) = fetching {
        step.done();
    }
    for warning in &resolved.warnings {
        ctx.ui.warn(warning);
    }
    Ok(resolved)
}

/// A release being made in `.shipit/staging/<id>`: removed when dropped,
/// unless [`Staging::publish`] moved it under `releases/`.
pub(crate) struct Staging {
    layout: Layout,
    ui: Ui,
    id: ReleaseId,
    dir: PathBuf,
    published: bool,
}

impl Staging {
    /// Create the staging directory of release `id`.
    pub(crate) fn begin(ctx: &Ctx, id: &ReleaseId) -> Result<Staging> {
        let dir = ctx.layout.staging(id);
        fs::create_dir_all(&dir).with_path("could not create", &dir)?;
        Ok(Staging {
            layout: ctx.layout.clone(),
            ui: ctx.ui,
            id: id.clone(),
            dir,
            published: false,
        })
    }

    pub(crate) fn id(&self) -> &ReleaseId {
        &self.id
    }

    /// Where the tree is made.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the tree is made, as progress lines name it.
    pub(crate) fn display(&self) -> String {
        self.dir
            .strip_prefix(self.layout.root())
            .unwrap_or(&self.dir)
            .display()
            .to_string()
    }

    /// Record `meta` (with what the tree costs on disk), put every file of
    /// the release, its build log and the pristine copies it keeps on disk
    /// (before it can go live, and before a later release is built from
    /// those copies), then move it under `releases/`.
    pub(crate) fn publish(mut self, meta: Metadata) -> Result<()> {
        let meta = Metadata {
            disk: measure_disk(&self.ui, &self.dir),
            ..meta
        };
        store::write_staged_metadata(&self.dir, &meta)?;
        let log = self.layout.build_log(&self.id);
        let pristine = crate::reuse::pristine_dir(&self.layout, &self.id);
        let mut roots = vec![self.dir.as_path(), log.as_path()];
        if pristine.exists() {
            roots.push(&pristine);
        }
        {
            let _timing = Timing::start("sync");
            crate::fsutil::sync_release(&roots).with_path("could not sync", &self.dir)?;
        }
        let _timing = Timing::start("publish");
        store::publish(&self.layout, &self.dir, &self.id)?;
        self.published = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.published || !self.dir.exists() {
            return;
        }
        if let Err(e) = store::discard(&self.layout, &self.dir) {
            self.ui
                .warn(format!("could not remove the partial build: {e}"));
        }
    }
}

/// What a built release costs on disk, measured before it is published
/// (its metadata file aside): `None`, shown `?`, when it cannot be
/// measured, since a figure is never worth a failed deploy.
fn measure_disk(ui: &Ui, dir: &Path) -> Option<crate::disk::Usage> {
    match crate::disk::measure(dir) {
        Ok(usage) => Some(usage),
        Err(e) => {
            ui.warn(format!(
                "could not measure the size of {}: {e}; `shipit releases` shows it as ?",
                dir.display()
            ));
            None
        }
    }
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
