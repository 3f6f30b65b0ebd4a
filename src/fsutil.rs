//! The three filesystem primitives every crash-safety argument rests on.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

/// Make a rename or a new directory entry in `dir` durable: without this, a
/// power cut can forget a rename that rename(2) already reported done.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Make everything written to the filesystem that holds `dir` durable:
/// one syncfs(2). A release is thousands of files written by `tar -x`, a
/// directory copy and build hooks, none of which sync; without this a power
/// cut after the swap can leave `current` pointing at empty files.
///
/// Chosen over an fsync(2) of each file and directory because on ext4 each
/// of those fsyncs commits the journal: on a 10,000-file tree `cargo bench
/// --bench durability` measured 2.7 s for fsync-each against 0.12 s for one
/// syncfs. syncfs also flushes other dirty data on that filesystem, so its
/// cost depends on what else writes there. It reports write-back errors
/// since Linux 5.8.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    nix::unistd::syncfs(File::open(dir)?).map_err(io::Error::from)
}

/// Up to this many files and directories, a release is made durable by
/// fsyncs of its own files; above, by one syncfs.
const OWN_FSYNCS_UP_TO: usize = 1_000;

/// Make the trees (or files) under `roots` durable, choosing by size, as
/// `cargo bench --bench durability` measured it (docs/benchmarks.md):
/// - a small release (most git deploys) by an fsync of each of its files
///   and directories, spread over 8 threads: it costs milliseconds, and
///   does not depend on what else writes to the filesystem. One syncfs
///   flushes every dirty page of the filesystem first: behind a neighbour
///   writing 100 MB/s, 30 ms for 3 files where the fsyncs took 7 ms, and
///   on a busy server seconds;
/// - a large one (a dependency directory of 30,000 files) by one syncfs:
///   0.3 s where 8 threads of fsyncs took 1.5 s, neighbour or not.
///
/// The files, the directories and the directories that hold the roots (a
/// new log file's entry) are synced all at once, in no order: the tree is
/// durable once every one of them is, and nothing names it before then
/// (the caller publishes it after). On ext4, fsyncs made together share
/// one journal commit, where one after another each waits for its own.
pub fn sync_release(roots: &[&Path]) -> io::Result<()> {
    let mut paths = Vec::new();
    for root in roots {
        for entry in walkdir::WalkDir::new(root) {
            let entry = entry.map_err(io::Error::other)?;
            if entry.file_type().is_dir() || entry.file_type().is_file() {
                paths.push(entry.into_path());
            }
            if paths.len() > OWN_FSYNCS_UP_TO {
                return sync_filesystem(roots[0]);
            }
        }
    }
    for root in roots {
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty())
            && !paths.iter().any(|p| p == parent)
        {
            paths.push(parent.to_path_buf());
        }
    }
    let chunk = paths.len().div_ceil(8).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || -> io::Result<()> {
                    for path in part {
                        File::open(path)?.sync_all()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| io::Error::other("an fsync thread panicked"))??;
        }
        Ok(())
    })
}

/// Replace `path` with `bytes` so that a reader (or a crash) sees either the
/// old content or the new, never a torn file: write a temp file in the same
/// directory, fsync it, rename it over `path`, fsync the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    atomic_write_mode(path, bytes, None)
}

/// [`atomic_write`], with the file's permission bits set before it appears
/// (otherwise it keeps the temp file's 0600).
pub fn atomic_write_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fsync_dir(dir)
}

/// Rename `from` to `to`, failing with `AlreadyExists` instead of replacing
/// `to`. A plain rename(2) silently replaces an existing *empty* directory,
/// which could swallow a release; renameat2(RENAME_NOREPLACE) cannot.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // Filesystems without RENAME_NOREPLACE (some network and overlay
        // mounts) say EINVAL. Callers hold the deploy lock, so check-then-
        // rename cannot race with another shipit.
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} already exists", to.display()),
                ));
            }
            fs::rename(from, to)
        }
        Err(errno) => Err(io::Error::from(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_noreplace_refuses_an_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::create_dir(&a).unwrap();
        fs::write(a.join("f"), "x").unwrap();
        fs::create_dir(&b).unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(a.join("f").exists());
        fs::remove_dir(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert!(b.join("f").exists());
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("meta.json");
        atomic_write(&f, b"one").unwrap();
        atomic_write(&f, b"two").unwrap();
        assert_eq!(fs::read_to_string(&f).unwrap(), "two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
