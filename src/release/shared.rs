//! The shared paths (SPEC §1, §3): what outlives a release (secrets,
//! uploads) lives in `shared/`, and each release links to it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::context::Ctx;
use crate::error::{Error, IoContext, Kind, Result};

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
