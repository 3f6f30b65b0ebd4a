//! Build once, on the controller, and pack the tree every host receives.
//!
//! One build means one artifact: every host runs byte-for-byte the same
//! files, built from one revision resolved once, under one release id. A
//! build on each host could differ (a dependency released between two
//! hosts' `npm ci`, a host with another compiler), costs each host the
//! build's CPU while it serves, and needs the source and the build tools
//! on every host. The tree is packed once into a tar file and streamed to
//! each host over ssh.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::Utc;

use crate::activate::{self, Live};
use crate::context::Ctx;
use crate::error::{Error, IoContext, Kind, Result};
use crate::layout::{Layout, ReleaseId};
use crate::source;

pub struct Built {
    pub id: ReleaseId,
    pub revision: Option<String>,
    pub revision_time: Option<chrono::DateTime<Utc>>,
    pub branch: Option<String>,
    pub source: String,
    pub build_ms: u64,
    /// The packed tree.
    pub tarball: PathBuf,
    /// The tree itself (removed with the tarball at the end).
    pub tree: PathBuf,
}

impl Built {
    /// Remove the build from the controller's staging directory.
    pub fn remove(&self) {
        let _ = fs::remove_file(&self.tarball);
        let _ = fs::remove_dir_all(&self.tree);
    }
}

/// Resolve `reference`, export it, run the build hooks and pack the tree.
/// The id is newer than every release in `taken` (all hosts' releases), so
/// it is new on every host.
pub fn build(ctx: &Ctx, reference: Option<&str>, taken: &[ReleaseId]) -> Result<Built> {
    let layout = &ctx.layout;
    let started = Instant::now();
    let fetching = ctx
        .config
        .source
        .git
        .as_ref()
        .map(|git| ctx.ui.long_step("Fetching", git));
    let wanted = source::Wanted {
        reference,
        pushed_repo: None,
        branch: None,
    };
    let resolved = source::resolve(&ctx.config, layout, &wanted)?;
    if let Some(step) = fetching {
        step.done();
    }
    for warning in &resolved.warnings {
        ctx.ui.warn(warning);
    }
    crate::interrupt::check()?;
    let id = ReleaseId::allocate(Utc::now(), taken);
    let tree = layout.staging(&id);
    let tarball = layout.staging_dir().join(format!("{id}.tar"));
    let built = Built {
        id: id.clone(),
        revision: resolved.revision.clone(),
        revision_time: resolved.revision_time,
        branch: resolved.branch.clone(),
        source: resolved.source.clone(),
        build_ms: 0,
        tarball: tarball.clone(),
        tree: tree.clone(),
    };
    let result = stage_and_pack(ctx, &built, &resolved);
    match result {
        Ok(()) => Ok(Built {
            build_ms: started.elapsed().as_millis() as u64,
            ..built
        }),
        Err(e) => {
            built.remove();
            Err(e.in_phase(Kind::BeforeSwap))
        }
    }
}

fn stage_and_pack(ctx: &Ctx, built: &Built, resolved: &source::Resolved) -> Result<()> {
    let layout = &ctx.layout;
    let tree = &built.tree;
    fs::create_dir_all(tree).with_path("could not create", tree)?;
    let exporting = ctx.ui.long_step(
        "Exporting",
        format!(
            "{} into {}",
            resolved
                .revision
                .as_deref()
                .map(|r| &r[..r.len().min(12)])
                .unwrap_or(&resolved.source),
            tree.display()
        ),
    );
    source::export(&ctx.config, layout, resolved, tree, &ctx.ui)?;
    exporting.done();

    // Hooks see the paths the release will have on the hosts; the build
    // itself runs here, in SHIPIT_BUILD_PATH.
    let hosts = Layout::new(ctx.config.deploy_to.clone());
    let live = Live {
        id: &built.id,
        revision: resolved.revision.as_deref(),
        branch: resolved.branch.as_deref(),
        previous: None,
    };
    let mut log = crate::pipeline::open_build_log(
        layout,
        &built.id,
        &crate::pipeline::Origin {
            source: &resolved.source.to_string(),
            revision: resolved.revision.as_deref(),
            branch: resolved.branch.as_deref(),
        },
        &crate::pipeline::Made::ForFleet,
    )?;
    let mut env = activate::hook_env(&hosts, &live);
    super::reuse::prepare(ctx, &built.id, tree, &mut env, &mut log)?;
    crate::deploy::run_build_hooks(ctx, env, tree, &mut log)?;
    ctx.ui.step("Packing", built.tarball.display().to_string());
    let status = Command::new("tar")
        .arg("-c")
        .arg("-f")
        .arg(&built.tarball)
        .arg("-C")
        .arg(tree)
        .arg(".")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| {
            Error::internal("could not run tar")
                .cause(e)
                .hint("install tar")
        })?;
    if !status.success() {
        return Err(Error::internal(format!(
            "could not pack {} (tar exited with {status})",
            tree.display()
        )));
    }
    Ok(())
}
