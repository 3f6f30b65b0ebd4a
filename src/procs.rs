//! Which running processes still live in which release (via `/proc`).
//!
//! Process managers often resolve `current` once, at start, and keep running
//! the old release after a reload; a process whose working directory or
//! executable lies inside `releases/<id>` is still using that release. After
//! a reload shipit names such processes, and prune never deletes a release
//! that one of them uses.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::layout::{Layout, ReleaseId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub name: String,
}

/// Releases in use, with the processes using them. Processes we may not
/// inspect (other users', when not root) are skipped.
pub fn releases_in_use(layout: &Layout) -> BTreeMap<ReleaseId, Vec<Proc>> {
    let mut used: BTreeMap<ReleaseId, Vec<Proc>> = BTreeMap::new();
    let Ok(releases) = fs::canonicalize(layout.releases()) else {
        return used;
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return used;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let mut ids: Vec<ReleaseId> = ["cwd", "exe"]
            .iter()
            .filter_map(|link| fs::read_link(dir.join(link)).ok())
            .filter_map(|path| release_of(&releases, &path))
            .collect();
        ids.dedup();
        if ids.is_empty() {
            continue;
        }
        let name = fs::read_to_string(dir.join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        for id in ids {
            used.entry(id).or_default().push(Proc {
                pid,
                name: name.clone(),
            });
        }
    }
    used
}

/// Make `command`'s process die when shipit dies, even by SIGKILL
/// (prctl PR_SET_PDEATHSIG). Otherwise an orphaned `git fetch` or build
/// keeps writing into a staging directory that the next deploy is clearing.
/// The setting is not inherited by the child's own children, so a daemon
/// that a reload hook starts is unaffected.
pub fn die_with_shipit(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe syscalls (prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // shipit may have died before the prctl took effect.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("shipit exited"));
            }
            Ok(())
        });
    }
}

/// The release that `path` lies in, if any. A deleted cwd reads as
/// "<path> (deleted)": that release is gone already and needs no keeping.
fn release_of(releases: &Path, path: &Path) -> Option<ReleaseId> {
    let rest: PathBuf = path.strip_prefix(releases).ok()?.to_path_buf();
    let first = rest.components().next()?.as_os_str().to_str()?;
    ReleaseId::parse(first).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_of_paths() {
        let root = Path::new("/srv/app/releases");
        assert_eq!(
            release_of(root, Path::new("/srv/app/releases/20260101000000/bin/node")),
            Some(ReleaseId::parse("20260101000000").unwrap())
        );
        assert_eq!(release_of(root, Path::new("/srv/app/shared/log")), None);
        assert_eq!(
            release_of(
                root,
                Path::new("/srv/app/releases/20260101000000 (deleted)")
            ),
            None
        );
    }

    #[test]
    fn finds_a_process_running_in_a_release() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let id = ReleaseId::parse("20260101000000").unwrap();
        fs::create_dir_all(layout.release(&id)).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(layout.release(&id))
            .spawn()
            .unwrap();
        let used = releases_in_use(&layout);
        child.kill().unwrap();
        child.wait().unwrap();
        let procs = used.get(&id).expect("the sleep is found");
        assert!(
            procs
                .iter()
                .any(|p| p.pid == child.id() && p.name == "sleep"),
            "{procs:?}"
        );
    }
}
