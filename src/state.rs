//! shipit's own files under `.shipit/`, opened safely.
//!
//! shipit often runs as root (a system deploy, a git hook of a root-owned
//! repository), while `.shipit/` lies inside a deploy directory that less
//! trusted users or the app itself may write to. A symlink planted at the
//! lock, a log or `history.jsonl` would make a root-run shipit truncate or
//! append to any file on the machine. So these files are opened with
//! `O_NOFOLLOW`, and a mutating command refuses a `.shipit` (or its logs,
//! staging or trash directory) that is a symlink or belongs to another
//! user: whoever owns it controls what shipit writes and deletes. The fix is always an operator's decision (run as the
//! owner, or take the directory over), never something shipit guesses.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::layout::Layout;

/// Open a file under `.shipit/` without following a symlink at its name.
pub fn open(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    options.custom_flags(nix::libc::O_NOFOLLOW).open(path)
}

/// [`open`], with the errors an operator can act on: a planted link, a file
/// that belongs to someone else. `what` names the file (`the lock file`).
pub fn open_or_explain(path: &Path, options: &mut OpenOptions, what: &str) -> Result<File> {
    open(path, options).map_err(|e| explain(path, what, e))
}

/// Turn an error opening `path` into one that names the fix.
pub fn explain(path: &Path, what: &str, e: io::Error) -> Error {
    if e.raw_os_error() == Some(nix::libc::ELOOP) {
        return planted_link(path, what);
    }
    if e.kind() == io::ErrorKind::PermissionDenied
        && let Ok(meta) = fs::symlink_metadata(path)
        && meta.uid() != nix::unistd::geteuid().as_raw()
    {
        let owner = user_name(meta.uid());
        let me = crate::whoami::user();
        return Error::usage(format!(
            "{what} {} belongs to {owner}, and {me} cannot write it",
            path.display()
        ))
        .cause(e)
        .hint(format!(
            "run shipit as {owner} (e.g. `sudo -u {owner} shipit ...`), or, if {me} now deploys \
             this app, `sudo chown -R {me} {}`",
            path.parent().unwrap_or(path).display()
        ));
    }
    Error::io(&format!("could not open {what}"), path, e)
}

fn planted_link(path: &Path, what: &str) -> Error {
    let target = fs::read_link(path)
        .map(|t| format!("it points at {}", t.display()))
        .unwrap_or_else(|_| "it is a symbolic link".into());
    Error::usage(format!(
        "refusing to open {what} {}: it is a symbolic link",
        path.display()
    ))
    .cause(target)
    .hint(format!(
        "shipit never creates links there, so someone planted it: remove it (`rm {}`) and find \
         out who can write {}",
        path.display(),
        path.parent().unwrap_or(path).display()
    ))
}

/// The name of user `uid`, or `uid N`.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    }
}

/// Refuse a `.shipit` that this user should not write through: a symlink,
/// or a directory that belongs to another user (they could plant links or
/// swap files between our checks and our writes). Root is held to the same
/// rule: a root-run shipit on a directory a deploy user owns is most often a
/// stray `sudo`, and would leave root-owned files that break the next
/// deploy as that user.
pub fn check(layout: &Layout) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    // Staging and trash matter as much as the logs: leftovers in them are
    // deleted, so a link there would aim those deletions elsewhere.
    for (dir, what) in [
        (layout.state(), "the state directory"),
        (layout.logs(), "the log directory"),
        (layout.staging_dir(), "the staging directory"),
        (layout.trash(), "the trash directory"),
    ] {
        let meta = match fs::symlink_metadata(&dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("could not inspect", &dir, e)),
        };
        if meta.file_type().is_symlink() {
            return Err(planted_link(&dir, what));
        }
        if !meta.is_dir() {
            return Err(
                Error::usage(format!("{what} {} is not a directory", dir.display()))
                    .hint(format!("move it away; shipit recreates {}", dir.display())),
            );
        }
        if meta.uid() != me {
            let owner = user_name(meta.uid());
            let you = crate::whoami::user();
            return Err(Error::usage(format!(
                "{what} {} belongs to {owner}, not to {you} who runs shipit",
                dir.display()
            ))
            .hint(format!(
                "deploy as its owner (e.g. `sudo -u {owner} shipit ...`), or, if {you} now \
                 deploys this app, take it over: `sudo chown -R {you} {}`",
                layout.state().display()
            )));
        }
    }
    for (file, what) in [
        (layout.lock(), "the lock file"),
        (layout.history(), "the history"),
    ] {
        if fs::symlink_metadata(&file).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(planted_link(&file, what));
        }
    }
    Ok(())
}
