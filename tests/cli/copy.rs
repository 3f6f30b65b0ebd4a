//! Copies that cost nothing where the filesystem allows it: a directory
//! source deployed on a loop-mounted XFS made with reflink is cloned (the
//! free space barely moves), and a clone is still a copy: writing into the
//! new release changes neither the source nor an older release. On ext4,
//! which cannot clone, the same deploy copies and says how.

use std::fs;
use std::path::Path;

use crate::loopfs::{Fs, LoopMount};
use crate::sandbox::Sandbox;

/// The large file of the XFS test (the ext4 image is smaller).
const BIG: usize = 48 << 20;

fn pattern(len: usize) -> Vec<u8> {
    // Not zeros: a filesystem may treat runs of zeros specially.
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The release `deploy/current` names.
fn current(deploy: &Path) -> String {
    let link = fs::read_link(deploy.join("current")).expect("a current release");
    link.file_name().unwrap().to_string_lossy().into_owned()
}

fn free_bytes(path: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).unwrap();
    s.blocks_available() as u64 * s.fragment_size() as u64
}

/// A site with one large file of `big` bytes and a small one, under `root`.
fn site(root: &Path, big: usize) -> std::path::PathBuf {
    let site = root.join("site");
    fs::create_dir_all(site.join("assets")).unwrap();
    fs::write(site.join("assets/big.bin"), pattern(big)).unwrap();
    fs::write(site.join("index.html"), "v1\n").unwrap();
    site
}

#[test]
fn a_directory_source_on_xfs_is_cloned_and_each_release_is_its_own() {
    let sb = Sandbox::new();
    let disk = sb.path().join("disk");
    let Some(_mount) = LoopMount::create(&sb.path().join("xfs.img"), &disk, Fs::XfsReflink) else {
        return;
    };
    let site = site(&disk, BIG);
    sb.write_raw_config(&format!(
        "deploy_to = \"{}\"\n[source]\npath = \"{}\"\n",
        disk.join("deploy").display(),
        site.display()
    ));
    let before = free_bytes(&disk);
    let run = sb.run(&["deploy"]);
    run.ok();
    let used = before.saturating_sub(free_bytes(&disk));
    assert!(
        used < (BIG as u64) / 10,
        "a cloned release of a {BIG}-byte tree used {used} bytes"
    );
    run.says("cloned (reflink)");
    let first = current(&disk.join("deploy"));
    fs::write(site.join("index.html"), "v2\n").unwrap();
    sb.run(&["deploy"]).ok();
    let second = current(&disk.join("deploy"));
    assert_ne!(first, second);

    // Writing into the new release, in place, changes nothing else.
    let release = |id: &str| disk.join("deploy/releases").join(id);
    fs::OpenOptions::new()
        .write(true)
        .open(release(&second).join("assets/big.bin"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"changed"))
        .unwrap();
    let original = pattern(BIG);
    for (what, path) in [
        ("the source", site.join("assets/big.bin")),
        ("the older release", release(&first).join("assets/big.bin")),
    ] {
        assert!(fs::read(&path).unwrap() == original, "{what} changed");
    }
}

#[test]
fn a_directory_source_on_ext4_is_copied_and_says_so_once() {
    let sb = Sandbox::new();
    let disk = sb.path().join("disk");
    let Some(_mount) = LoopMount::create(&sb.path().join("ext4.img"), &disk, Fs::Ext4) else {
        return;
    };
    let site = site(&disk, 8 << 20);
    sb.write_raw_config(&format!(
        "deploy_to = \"{}\"\n[source]\npath = \"{}\"\n",
        disk.join("deploy").display(),
        site.display()
    ));
    let run = sb.run(&["deploy"]);
    run.ok().says("a reflink clone is not possible there");
    assert_eq!(
        run.stderr.matches("is not possible there").count(),
        1,
        "said once: {}",
        run.stderr
    );
    let id = current(&disk.join("deploy"));
    let copied = disk
        .join("deploy/releases")
        .join(&id)
        .join("assets/big.bin");
    assert!(fs::read(copied).unwrap() == pattern(8 << 20));
}
