//! Pruning: keep N, never current, the rollback target or a release in use.

use std::process::Command;

use crate::sandbox::{Sandbox, dir_names};

#[test]
fn deploys_prune_to_keep_releases() {
    let sb = Sandbox::new();
    sb.write_config("keep_releases = 2\n");
    let mut ids = Vec::new();
    for n in 0..4 {
        sb.commit("index.html", &format!("v{n}\n"));
        ids.push(sb.deploy());
    }
    assert_eq!(sb.releases(), ids[2..].to_vec());
    assert!(dir_names(&sb.deploy_to().join(".shipit/trash")).is_empty());
    let removed = &sb.history_json()[0]["removed"];
    assert_eq!(removed[0], ids[1].as_str());
}

#[test]
fn prune_never_removes_current_or_the_rollback_target() {
    let sb = Sandbox::new();
    let mut ids = Vec::new();
    for n in 0..5 {
        sb.commit("index.html", &format!("v{n}\n"));
        ids.push(sb.deploy());
    }
    sb.run(&["rollback", "--to", &ids[1]]).ok();
    let plan = sb.run(&["prune", "--keep", "1", "--dry-run", "--json"]);
    let plan = plan.ok().json();
    let kept: Vec<_> = plan["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect();
    assert!(kept.contains(&ids[1]), "current kept: {plan}");
    assert!(kept.contains(&ids[0]), "rollback target kept: {plan}");
    assert_eq!(sb.releases().len(), 5, "a dry run removes nothing");

    sb.run(&["prune", "--keep", "1"]).ok();
    let left = sb.releases();
    assert!(left.contains(&ids[1]) && left.contains(&ids[0]), "{left:?}");
    assert!(left.contains(&ids[4]), "newest kept: {left:?}");
    assert_eq!(left.len(), 3);
    assert_eq!(sb.current().unwrap(), ids[1]);
    assert_eq!(sb.history_json()[0]["event"], "prune");
}

#[test]
fn prune_keeps_a_release_that_a_process_still_runs_from() {
    let sb = Sandbox::new();
    let mut ids = Vec::new();
    for n in 0..3 {
        sb.commit("index.html", &format!("v{n}\n"));
        ids.push(sb.deploy());
    }
    let mut old = Command::new("sleep")
        .arg("60")
        .current_dir(sb.deploy_to().join("releases").join(&ids[0]))
        .spawn()
        .unwrap();
    let run = sb.run(&["prune", "--keep", "1", "--json"]);
    let _ = old.kill();
    let _ = old.wait();
    let plan = run.ok().json();
    let in_use = plan["kept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == ids[0].as_str())
        .cloned();
    assert_eq!(in_use.unwrap()["reason"], "in-use", "{plan}");
    assert!(sb.releases().contains(&ids[0]));
}

#[test]
fn keep_zero_is_refused() {
    let sb = Sandbox::new();
    sb.deploy();
    let before = sb.fingerprint();
    sb.run(&["prune", "--keep", "0"]).code(2).says("--keep 0");
    assert_eq!(sb.fingerprint(), before);
}

/// Regression: prune, running as a user who may not read another user's
/// `/proc/<pid>/cwd`, took that process for one that uses no release and
/// deleted the release it ran from. Here the process runs as root and
/// prune as `nobody` (through setpriv), so this needs root to set up.
#[test]
fn a_release_used_by_a_process_prune_cannot_inspect_is_kept() {
    use std::os::unix::fs::{PermissionsExt, chown};
    if !nix::unistd::getuid().is_root() {
        eprintln!(
            "SKIPPED a_release_used_by_a_process_prune_cannot_inspect_is_kept: it needs root \
             (a process of one user, prune as another); the unit test \
             procs::tests::an_unreadable_process_is_reported_not_skipped covers the logic"
        );
        return;
    }
    let sb = Sandbox::new();
    sb.write_config("keep_releases = 5\n");
    let mut ids = Vec::new();
    for n in 0..3 {
        sb.commit("index.html", &format!("v{n}\n"));
        ids.push(sb.deploy());
    }
    let oldest = sb.deploy_to().join("releases").join(&ids[0]);
    let mut straggler = Command::new("sleep")
        .arg("120")
        .current_dir(&oldest)
        .spawn()
        .unwrap();
    // nobody must reach the sandbox and own the deploy directory.
    let mut dir = sb.path().to_path_buf();
    loop {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o755)).unwrap();
        if !dir.pop() || dir == std::path::Path::new("/") {
            break;
        }
    }
    for entry in walkdir::WalkDir::new(sb.deploy_to()).into_iter().flatten() {
        let _ = std::os::unix::fs::lchown(entry.path(), Some(65534), Some(65534));
    }
    chown(sb.config_path(), Some(65534), Some(65534)).unwrap();
    let out = sb
        .command_with(
            "setpriv",
            &[
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                crate::sandbox::SHIPIT,
                "prune",
                "--keep",
                "1",
            ],
        )
        .env("HOME", "/nonexistent")
        .output()
        .expect("setpriv (util-linux) runs");
    let _ = straggler.kill();
    let _ = straggler.wait();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        sb.releases().contains(&ids[0]),
        "prune deleted a release a process it could not inspect runs from\n{said}"
    );
    assert!(said.contains("could not be inspected"), "{said}");
}
