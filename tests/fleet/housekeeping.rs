//! What a host keeps, and what it never unpacks.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::exec::write_executable;
use crate::{Options, World};

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn set_mtime(path: &Path, epoch: u64) {
    let out = Command::new("touch")
        .arg("-d")
        .arg(format!("@{epoch}"))
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Every distinct controller build left its binary in each host's
/// `.shipit/bin` forever. A rollout, once it holds the fleet lock, keeps
/// the three newest, always the one it runs.
#[test]
fn a_rollout_keeps_the_three_newest_shipit_builds_on_a_host() {
    let w = World::new(1, Options::default());
    w.deploy_ok();
    let bin = w.hosts.hosts[0].deploy().join(".shipit/bin");
    let installed = names(&bin);
    assert_eq!(installed.len(), 1, "{installed:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Older builds, one newer than ours (another controller's), and an
    // upload in flight (a hidden temporary name).
    for (name, at) in [
        ("shipit-0.0.1-aaaaaaaaaaaa", 1_000_000),
        ("shipit-0.0.2-bbbbbbbbbbbb", 2_000_000),
        ("shipit-0.0.3-cccccccccccc", 3_000_000),
        ("shipit-9.9.9-dddddddddddd", now + 3600),
        (".shipit-0.0.4-eeeeeeeeeeee.123", 1_000),
    ] {
        write_executable(&bin.join(name), "#!/bin/sh\nexit 1\n");
        set_mtime(&bin.join(name), at);
    }
    set_mtime(&bin.join(&installed[0]), now - 3600);
    w.commit("VERSION", "2\n");
    w.deploy_ok();
    let mut expected = vec![
        ".shipit-0.0.4-eeeeeeeeeeee.123".to_string(),
        "shipit-0.0.3-cccccccccccc".to_string(),
        "shipit-9.9.9-dddddddddddd".to_string(),
        installed[0].clone(),
    ];
    expected.sort();
    assert_eq!(names(&bin), expected);
    // The build in use was marked as used now (a controller waiting for
    // the lock with it keeps it through another's pruning).
    let used = fs::metadata(bin.join(&installed[0]))
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(used + 600 > now, "mtime {used}, now {now}");
}

/// The agent runs as root here, and tar as root would restore the setuid and
/// setgid bits of the controller's build, and make its device nodes.
#[test]
fn a_host_unpacks_no_setuid_bit_device_or_fifo() {
    let w = World::new(1, Options::default());
    let text = fs::read_to_string(w.config()).unwrap().replacen(
        "[hooks]\n",
        "[hooks]\nbuild = [\"chmod 4755 VERSION && mkdir -p sbin && chmod 2755 sbin && \
         mknod null-dev c 1 3 && mkfifo pipe\"]\n",
        1,
    );
    fs::write(w.config(), text).unwrap();
    let run = w.shipit(&["deploy", "--json"]);
    run.code(0);
    assert!(
        run.stderr.contains("cleared the setuid/setgid bits"),
        "{}",
        run.stderr
    );
    let id = run.json()["release"].as_str().unwrap().to_string();
    let release = w.hosts.hosts[0].deploy().join("releases").join(&id);
    for path in ["VERSION", "sbin"] {
        let mode = fs::metadata(release.join(path))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o6000, 0, "{path} has mode {mode:o}");
    }
    for path in ["null-dev", "pipe"] {
        assert!(
            fs::symlink_metadata(release.join(path)).is_err(),
            "{path} was unpacked"
        );
    }
    assert!(release.join("server.js").is_file());

    // fleet.keep_special_files: unpacked as the build made them.
    let text = fs::read_to_string(w.config())
        .unwrap()
        .replace("[fleet]\n", "[fleet]\nkeep_special_files = true\n");
    fs::write(w.config(), text).unwrap();
    w.commit("VERSION", "2\n");
    let run = w.shipit(&["deploy", "--json"]);
    run.code(0);
    let id = run.json()["release"].as_str().unwrap().to_string();
    let release = w.hosts.hosts[0].deploy().join("releases").join(&id);
    let mode = fs::metadata(release.join("VERSION"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o4000, 0o4000, "VERSION has mode {mode:o}");
    assert!(fs::symlink_metadata(release.join("pipe")).is_ok());
}

/// A host's agent answers the controller before it deletes the release it
/// pruned (at `batch = 1` the next host is switched meanwhile). Killed
/// between the two, it leaves the pruned release in the trash, out of
/// `releases/`: the rollout has succeeded, `releases` does not list it,
/// and the next rollout deletes it.
#[test]
fn a_host_killed_after_answering_leaves_its_pruned_release_as_trash_only() {
    let w = World::new(1, Options::default());
    let text = fs::read_to_string(w.config())
        .unwrap()
        .replace("keep_releases = 10", "keep_releases = 1");
    fs::write(w.config(), text).unwrap();
    let host = &w.hosts.hosts[0];
    let first = w.deploy_ok();
    w.commit("VERSION", "2\n");
    let second = w.deploy_ok();

    fs::write(
        host.home().join(".bashrc"),
        "export SHIPIT_TEST_CRASH_AT=fleet-agent:before-deleting-pruned\n",
    )
    .unwrap();
    w.commit("VERSION", "3\n");
    let third = w.deploy_ok();
    fs::remove_file(host.home().join(".bashrc")).unwrap();

    let deploy = host.deploy();
    assert_eq!(
        names(&deploy.join("releases")),
        [second.clone(), third.clone()]
    );
    let trash = deploy.join(".shipit/trash");
    let left: Vec<String> = names(&trash)
        .iter()
        .flat_map(|holding| names(&trash.join(holding)))
        .collect();
    assert_eq!(
        left,
        [first],
        "the pruned release was deleted before the answer"
    );
    let run = w.shipit(&["releases", "--json"]);
    run.code(0);
    let listed: Vec<String> = run.json()["hosts"][0]["state"]["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, [third, second]);

    w.commit("VERSION", "4\n");
    w.deploy_ok();
    assert_eq!(names(&trash), Vec::<String>::new());
}
