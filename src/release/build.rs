//! The build of a release's tree, the same for this host and for a
//! fleet: export the source → link the shared paths (this host only: a
//! fleet's hosts link theirs when they receive the tree) → reuse the
//! dependency directories whose key is unchanged → the build hooks, all
//! told in one build log.

use std::fs::File;

use crate::activate::{self, Live};
use crate::context::Ctx;
use crate::error::Result;
use crate::hooks;
use crate::layout::{Layout, ReleaseId};
use crate::source::{self, Resolved};

use super::Staging;
use super::log::{self, Made, Origin};

/// Whom a tree is built for.
#[derive(Clone, Copy)]
pub(crate) enum For<'a> {
    /// This host, where `previous` is live.
    ThisHost { previous: Option<&'a ReleaseId> },
    /// A fleet's hosts, under `deploy_to`: the build runs on the
    /// controller, its hooks see the paths the release will have there.
    Fleet,
}

/// The hook variables and the build log a build hands to its reuse step.
pub(crate) type Env = Vec<(String, String)>;

/// Build `resolved` in `staging` for `target`. `reuse` reuses or builds
/// the `[[reuse]]` directories (it may add hook variables) and returns
/// what the release records about them.
pub(crate) fn build<R>(
    ctx: &Ctx,
    staging: &Staging,
    resolved: &Resolved,
    target: For,
    reuse: impl FnOnce(&mut Env, &mut File) -> Result<R>,
) -> Result<R> {
    let id = staging.id();
    let (made, previous, hosts) = match target {
        For::ThisHost { previous } => (Made::Here, previous, ctx.layout.clone()),
        For::Fleet => (
            Made::ForFleet,
            None,
            Layout::new(ctx.config.deploy_to.clone()),
        ),
    };
    let origin = Origin {
        source: &resolved.source,
        revision: resolved.revision.as_deref(),
        branch: resolved.branch.as_deref(),
    };
    let mut log = log::open_build_log(&ctx.layout, id, &origin, &made)?;

    let exporting = ctx.ui.long_step(
        export_verb(resolved),
        format!(
            "{} into {} (it becomes {} once built)",
            export_what(resolved),
            staging.display(),
            Layout::display(id)
        ),
    );
    source::export(&ctx.config, &ctx.layout, resolved, staging.dir(), &ctx.ui)?;
    exporting.done();
    if let For::ThisHost { .. } = target {
        super::link_shared(ctx, staging.dir())?;
    }

    let live = Live {
        id,
        revision: resolved.revision.as_deref(),
        branch: resolved.branch.as_deref(),
        previous,
    };
    let mut env = activate::hook_env(&hosts, &live);
    let reusing = crate::ui::Timing::start("reuse");
    let reused = reuse(&mut env, &mut log)?;
    drop(reusing);
    let _building = crate::ui::Timing::start("build");
    env.push((
        "SHIPIT_BUILD_PATH".into(),
        staging.dir().display().to_string(),
    ));
    let hooks = &ctx.config.hooks;
    hooks::run_each(
        hooks::Kind::Build,
        "Building",
        &hooks.build,
        (staging.dir(), &env),
        (hooks.build_timeout, "hooks.build_timeout"),
        &ctx.ui,
        &mut log,
    )?;
    Ok(reused)
}

/// How the tree comes out of its source: an artifact is unpacked, a
/// revision exported, a directory copied.
fn export_verb(resolved: &Resolved) -> &'static str {
    match (&resolved.revision, &resolved.origin) {
        (Some(_), source::Origin::Archive(_)) => "Unpacking",
        (Some(_), _) => "Exporting",
        (None, _) => "Copying",
    }
}

/// What is exported, as the progress line names it.
fn export_what(resolved: &Resolved) -> String {
    match (&resolved.revision, &resolved.origin) {
        (Some(digest), source::Origin::Archive(_)) => {
            format!("{} (sha256 {})", resolved.source, &digest[..12])
        }
        (Some(sha), _) => sha[..sha.len().min(12)].to_string(),
        (None, _) => resolved.source.clone(),
    }
}
