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

use crate::context::Ctx;
use crate::error::{Error, Kind, Result};
use crate::layout::ReleaseId;
use crate::release::{self, Staging, build::For};
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
    /// The tree itself, removed with the tarball.
    tree: Option<Staging>,
}

impl Built {
    /// Remove the build from the controller's staging directory.
    pub fn remove(&mut self) {
        let _ = fs::remove_file(&self.tarball);
        drop(self.tree.take());
    }
}

/// Resolve `reference`, build it (see [`release::build`]) and pack the
/// tree. The id is newer than every release in `taken` (all hosts'
/// releases), so it is new on every host.
pub fn build(ctx: &Ctx, reference: Option<&str>, taken: &[ReleaseId]) -> Result<Built> {
    let started = Instant::now();
    let wanted = source::Wanted {
        reference,
        pushed_repo: None,
        branch: None,
    };
    let resolved = release::resolve(ctx, &wanted)?;
    crate::interrupt::check()?;
    let id = ReleaseId::allocate(Utc::now(), taken);
    let tarball = ctx.layout.staging_dir().join(format!("{id}.tar"));
    let tree = Staging::begin(ctx, &id).map_err(|e| e.in_phase(Kind::BeforeSwap))?;
    let packed = release::build::build(ctx, &tree, &resolved, For::Fleet, |env, log| {
        super::reuse::prepare(ctx, &id, tree.dir(), env, log)
    })
    .and_then(|()| pack(ctx, &tree, &tarball));
    if let Err(e) = packed {
        let _ = fs::remove_file(&tarball);
        return Err(e.in_phase(Kind::BeforeSwap));
    }
    Ok(Built {
        id,
        revision: resolved.revision,
        revision_time: resolved.revision_time,
        branch: resolved.branch,
        source: resolved.source,
        build_ms: started.elapsed().as_millis() as u64,
        tarball,
        tree: Some(tree),
    })
}

/// Pack the built tree into `tarball`, the file every host receives.
fn pack(ctx: &Ctx, tree: &Staging, tarball: &std::path::Path) -> Result<()> {
    ctx.ui.step("Packing", tarball.display().to_string());
    let status = Command::new("tar")
        .arg("-c")
        .arg("-f")
        .arg(tarball)
        .arg("-C")
        .arg(tree.dir())
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
            tree.dir().display()
        )));
    }
    Ok(())
}
