//! A power cut right after a deploy: a real ext4 on a loop device, cut with
//! `EXT4_IOC_SHUTDOWN` (flag `EXT4_GOING_FLAGS_NOLOGFLUSH`: what was not
//! yet on disk is lost, as when the power goes), unmounted and mounted again.
//! `current` must then point at a complete release whose files have their
//! content, and the build log must be there too.
//!
//! Needs root and loop devices; where they are unavailable the test says so
//! loudly on stderr and returns.

use std::fs;
use std::path::PathBuf;

use crate::loopfs::{Fs, LoopMount};
use crate::sandbox::Sandbox;

/// Regression: only the staging directory was fsynced, so after a power cut
/// `current` pointed at the new release and its files were empty.
#[test]
fn a_power_cut_after_a_git_deploy_leaves_a_complete_release_live() {
    let sb = Sandbox::new();
    let Some(mut disk) = LoopMount::create(&sb.path().join("disk.img"), &sb.deploy_to(), Fs::Ext4)
    else {
        return;
    };
    sb.deploy();
    for i in 0..40 {
        let dir = if i % 2 == 0 { "lib" } else { "public/assets" };
        sb.commit(&format!("{dir}/file{i}.js"), &content(i));
    }
    let revision = sb.commit("index.html", "v2\n");
    let id = sb.deploy();
    let mut expected = vec![("index.html".to_string(), "v2\n".to_string())];
    for i in 0..40 {
        let dir = if i % 2 == 0 { "lib" } else { "public/assets" };
        expected.push((format!("{dir}/file{i}.js"), content(i)));
    }
    survives_a_power_cut(&sb, &mut disk, &id, &expected);
    let meta = fs::read_to_string(release(&sb, &id).join(".shipit-release.json")).unwrap();
    assert!(meta.contains(&revision), "{meta}");
}

/// The same for a directory source (copied file by file), small enough to
/// be made durable by an fsync of each file.
#[test]
fn a_power_cut_after_a_directory_deploy_leaves_a_complete_release_live() {
    directory_deploy_survives_a_power_cut(40, 4);
}

/// The same for a release too large for an fsync of each file (over
/// 1,000 entries): it is made durable by one syncfs.
#[test]
fn a_power_cut_after_a_large_directory_deploy_leaves_a_complete_release_live() {
    directory_deploy_survives_a_power_cut(1_200, 12);
}

/// Deploy a directory of `files` files in `dirs` directories, cut the
/// power, and check every file of the live release.
fn directory_deploy_survives_a_power_cut(files: usize, dirs: usize) {
    let sb = Sandbox::new();
    let Some(mut disk) = LoopMount::create(&sb.path().join("disk.img"), &sb.deploy_to(), Fs::Ext4)
    else {
        return;
    };
    let site = sb.path().join("site");
    let mut expected = Vec::new();
    for i in 0..files {
        let file = format!("d{}/file{i}.css", i % dirs);
        fs::create_dir_all(site.join(&file).parent().unwrap()).unwrap();
        fs::write(site.join(&file), content(i)).unwrap();
        expected.push((file, content(i)));
    }
    sb.write_raw_config("deploy_to = \"deploy\"\n[source]\npath = \"site\"\n");
    sb.run(&["deploy"]).ok();
    let id = sb.current().unwrap();
    survives_a_power_cut(&sb, &mut disk, &id, &expected);
}

fn content(i: usize) -> String {
    format!("// file {i}\n").repeat(50)
}

fn release(sb: &Sandbox, id: &str) -> PathBuf {
    sb.deploy_to().join("releases").join(id)
}

/// Cut the power, mount again, and check that `current` is `id` with every
/// one of `expected` (path, content), and that its build log survived.
#[track_caller]
fn survives_a_power_cut(
    sb: &Sandbox,
    disk: &mut LoopMount,
    id: &str,
    expected: &[(String, String)],
) {
    disk.power_cut();
    disk.unmount();
    disk.mount();
    assert_eq!(sb.current().as_deref(), Some(id), "current moved back");
    let lost: Vec<&str> = expected
        .iter()
        .filter(|(file, want)| {
            fs::read_to_string(release(sb, id).join(file)).unwrap_or_default() != *want
        })
        .map(|(file, _)| file.as_str())
        .collect();
    assert!(
        lost.is_empty(),
        "after the power cut, {} of {} files of the live release lost their content: {lost:?}",
        lost.len(),
        expected.len()
    );
    let log = fs::read_to_string(sb.deploy_to().join(format!(".shipit/logs/{id}.log")))
        .unwrap_or_default();
    assert!(
        log.starts_with(&format!("release {id}")),
        "build log: {log:?}"
    );
}
