//! What a release costs on disk, measured once when it is published and
//! again when prune removes others, and kept in its metadata.
//!
//! Two figures per tree:
//! - **size**: the allocated bytes (`st_blocks * 512` summed over its files,
//!   directories and links, a hard-linked file once), what the disk pays,
//!   not the apparent length (a sparse file pays less, a small file a whole
//!   block);
//! - **unshared**: the part of it whose extents no other file shares. On a
//!   filesystem that clones (XFS with reflink, btrfs, bcachefs) a reused
//!   directory shares its extents with the pristine copy it came from and
//!   with the releases built from the same copy: FIEMAP flags those
//!   extents `FIEMAP_EXTENT_SHARED`. The flag does not say *with whom*:
//!   an extent still shared with a release in the trash, a pristine copy
//!   under `.shipit/reuse/` or a snapshot counts as shared too. So
//!   unshared is what removing this release alone surely frees, a lower
//!   bound. Elsewhere (ext4, tmpfs) releases share nothing (shipit makes
//!   no hard links between them), and unshared is the size, with no FIEMAP
//!   call at all.
//!
//! Measured here, never on a listing: `shipit releases` reads the figures
//! from the metadata, so a 1,000-release listing costs what it did.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A tree's cost on disk (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Allocated bytes: `st_blocks * 512`, summed.
    pub size_bytes: u64,
    /// Of those, the bytes whose extents no other file shares.
    pub unshared_bytes: u64,
}

/// statfs(2) `f_type` of the Linux filesystems whose files can share
/// extents (linux/magic.h).
const CLONING_FILESYSTEMS: [i64; 4] = [
    0x5846_5342, // XFS
    0x9123_683E, // btrfs
    0xCA45_1A4E, // bcachefs
    0x7461_636F, // OCFS2
];

/// Whether files under `path` can share extents: only then is FIEMAP worth
/// asking, and only then does removing a release change what the others
/// share.
pub fn sharing_possible(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| CLONING_FILESYSTEMS.contains(&{ s.filesystem_type().0 }))
        .unwrap_or(false)
}

/// Measure the tree at `root` without following symbolic links (a release's
/// own metadata file aside).
pub fn measure(root: &Path) -> io::Result<Usage> {
    let fiemap = sharing_possible(root);
    let mut usage = Usage::default();
    let mut seen = HashSet::new();
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry.map_err(io::Error::other)?;
        // A release is measured before its metadata file is written, and
        // again with it: leave it out, so both give the same figure.
        if entry.depth() == 1 && entry.file_name() == crate::layout::METADATA_FILE {
            continue;
        }
        let meta = entry.metadata().map_err(io::Error::other)?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let allocated = meta.blocks() * 512;
        usage.size_bytes += allocated;
        let shared = if fiemap && meta.is_file() && allocated > 0 {
            // A file FIEMAP cannot map counts as unshared: the figure stays
            // a lower bound of what its removal frees only if that is rare,
            // and it is (every cloning filesystem implements FIEMAP).
            shared_bytes(entry.path()).unwrap_or(0)
        } else {
            0
        };
        usage.unshared_bytes += allocated.saturating_sub(shared);
    }
    Ok(usage)
}

/// `_IOWR('f', 11, struct fiemap)` from linux/fs.h.
const FS_IOC_FIEMAP: u64 = 0xC020_660B;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_SHARED: u32 = 0x2000;
const EXTENTS_PER_CALL: usize = 64;

/// `struct fiemap_extent` (linux/fiemap.h).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Extent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

/// `struct fiemap` with room for [`EXTENTS_PER_CALL`] extents.
#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [Extent; EXTENTS_PER_CALL],
}

/// The bytes of the file's extents that FIEMAP flags shared.
fn shared_bytes(path: &Path) -> io::Result<u64> {
    let file = File::open(path)?;
    let mut shared = 0;
    let mut start = 0u64;
    loop {
        let mut map = Fiemap {
            start,
            length: u64::MAX - start,
            flags: 0,
            mapped_extents: 0,
            extent_count: EXTENTS_PER_CALL as u32,
            reserved: 0,
            extents: [Extent::default(); EXTENTS_PER_CALL],
        };
        // SAFETY: FS_IOC_FIEMAP reads the header and writes at most
        // `extent_count` extents into the array that follows it; `map`
        // is a live, correctly laid out `struct fiemap` of that capacity.
        let rc = unsafe {
            nix::libc::ioctl(
                file.as_raw_fd(),
                FS_IOC_FIEMAP as _,
                &mut map as *mut Fiemap,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mapped = &map.extents[..(map.mapped_extents as usize).min(EXTENTS_PER_CALL)];
        let Some(last) = mapped.last() else {
            return Ok(shared);
        };
        shared += mapped
            .iter()
            .filter(|e| e.flags & FIEMAP_EXTENT_SHARED != 0)
            .map(|e| e.length)
            .sum::<u64>();
        if last.flags & FIEMAP_EXTENT_LAST != 0 {
            return Ok(shared);
        }
        start = last.logical + last.length;
    }
}

/// Bytes for people: `512 B`, `4.0 KiB`, `12.3 MiB`, `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(4096), "4.0 KiB");
        assert_eq!(human(12_900_000), "12.3 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }

    /// Allocated bytes, a hard-linked file once; nothing shared where the
    /// filesystem cannot clone.
    #[test]
    fn a_tree_measures_its_blocks_and_a_hard_link_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a"), vec![7u8; 100_000]).unwrap();
        let before = measure(&root).unwrap();
        std::fs::hard_link(root.join("sub/a"), root.join("b")).unwrap();
        let after = measure(&root).unwrap();
        assert!(before.size_bytes >= 100_000, "{before:?}");
        assert_eq!(before, after);
        if !sharing_possible(&root) {
            assert_eq!(after.unshared_bytes, after.size_bytes);
        }
    }
}
