//! The swap: point `current` at a release, atomically.
//!
//! This is the only module that changes `current` (and the slots' link). `ln -sfn` unlinks the old
//! link before making the new one, leaving a window in which a request (or a
//! process manager restarting) finds no `current` at all. Instead we make a
//! symlink under a unique temporary name in the same directory and rename(2)
//! it over `current`: rename replaces the directory entry in one step, so at
//! every instant `current` is either the old link or the new one. Then we
//! fsync the directory so the swap survives a power cut.

use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::layout::{Layout, ReleaseId};
use crate::store::{self, Current};
use crate::ui::Ui;

/// A swap that happened. Every reader already sees the new `current`; if
/// the directory could not be synced afterwards, a power cut could still
/// undo it, and this carries that error. It is not a failed swap: treating
/// it as one would delete the release `current` now points at.
#[must_use]
pub struct Swapped {
    link: std::path::PathBuf,
    unsynced: Option<Error>,
}

impl Swapped {
    /// Warn if the swap is not known to be durable.
    pub fn report(self, ui: &Ui) {
        if let Some(e) = self.unsynced {
            ui.warn(format!(
                "{} was swapped, but the change is not known to be on disk: {e}; \
                 run `sync` and check the filesystem",
                self.link.display()
            ));
        }
    }
}

/// Point `current` at `releases/<id>`. `Err` means `current` did not move.
pub fn point_current(layout: &Layout, id: &ReleaseId) -> Result<Swapped> {
    let _timing = crate::ui::Timing::start("swap");
    if store::read_current(layout)? == Current::NotSymlink {
        return Err(store::require_sane_current(layout).unwrap_err());
    }
    if !layout.release(id).is_dir() {
        return Err(Error::internal(format!(
            "refusing to point current at {}, which does not exist",
            Layout::display(id)
        )));
    }
    point_link(&layout.current(), &layout.link_target(id))
}

/// Make `link` a symlink to `target`, atomically: a temporary link in the
/// same directory renamed over it, then the directory synced. The one
/// primitive behind `current` and the slots' `run/app.sock`.
pub fn point_link(link: &Path, target: &Path) -> Result<Swapped> {
    let dir = link.parent().unwrap_or(Path::new("."));
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .make_in(dir, |path| symlink(target, path))
        .with_path("could not create a temporary symlink in", dir)?
        .into_temp_path();
    // On failure the TempPath is dropped, which removes the temporary link.
    tmp.persist(link)
        .map_err(|e| e.error)
        .with_path("could not rename the new symlink over", link)?;
    let synced = fsutil::fsync_dir(dir).with_path("could not sync", dir);
    Ok(Swapped {
        link: link.to_path_buf(),
        unsynced: synced.err(),
    })
}

/// Remove `current` (only after a failed *first* deploy, to return to the
/// state before it: nothing live).
pub fn remove_current(layout: &Layout) -> Result<()> {
    match std::fs::remove_file(layout.current()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("could not remove", &layout.current(), e)),
    }
    let link = layout.current();
    let dir = link.parent().unwrap_or(layout.root());
    fsutil::fsync_dir(dir).with_path("could not sync", dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_replaces_the_link_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let a = ReleaseId::parse("20260101000000").unwrap();
        let b = ReleaseId::parse("20260101000001").unwrap();
        std::fs::create_dir_all(layout.release(&a)).unwrap();
        std::fs::create_dir_all(layout.release(&b)).unwrap();
        point_current(&layout, &a).unwrap().report(&Ui::new(true));
        assert_eq!(store::read_current(&layout).unwrap(), Current::Release(a));
        point_current(&layout, &b).unwrap().report(&Ui::new(true));
        assert_eq!(
            std::fs::read_link(layout.current()).unwrap(),
            std::path::Path::new("releases/20260101000001")
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    /// The point of the swap: a reader never finds `current` missing, not
    /// even for an instant (an unlink-then-symlink swap fails this).
    #[test]
    fn current_never_disappears_during_swaps() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let a = ReleaseId::parse("20260101000000").unwrap();
        let b = ReleaseId::parse("20260101000001").unwrap();
        std::fs::create_dir_all(layout.release(&a)).unwrap();
        std::fs::create_dir_all(layout.release(&b)).unwrap();
        point_current(&layout, &a).unwrap().report(&Ui::new(true));
        let done = AtomicBool::new(false);
        let (missing, reads) = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let (mut missing, mut reads) = (0u32, 0u64);
                while !done.load(Ordering::SeqCst) {
                    reads += 1;
                    if std::fs::symlink_metadata(layout.current()).is_err() {
                        missing += 1;
                    }
                }
                (missing, reads)
            });
            for n in 0..2000 {
                let id = if n % 2 == 0 { &b } else { &a };
                point_current(&layout, id).unwrap().report(&Ui::new(true));
            }
            done.store(true, Ordering::SeqCst);
            reader.join().unwrap()
        });
        assert!(reads > 0);
        assert_eq!(
            missing, 0,
            "current was missing {missing} times in {reads} reads"
        );
    }

    #[test]
    fn swap_refuses_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let a = ReleaseId::parse("20260101000000").unwrap();
        std::fs::create_dir_all(layout.release(&a)).unwrap();
        std::fs::create_dir(layout.current()).unwrap();
        std::fs::write(layout.current().join("keep"), "x").unwrap();
        let Err(e) = point_current(&layout, &a) else {
            panic!("swapped over a real directory")
        };
        assert!(e.message.contains("not a symlink"), "{e}");
        assert!(layout.current().join("keep").exists());
    }
}
