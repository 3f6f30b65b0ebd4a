//! Pruning: keep N, never current, the rollback target or a release in use.

use std::process::Command;
use std::time::Duration;

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

/// One entry in `releases/` that shipit did not make stopped
/// every deploy and prune (exit 2), so releases piled up around it until the
/// disk filled. Now it is named in a warning, listed by `status`, `releases`
/// and `check`, left exactly as it is, and the releases around it are
/// pruned.
#[test]
fn a_stray_entry_in_releases_is_named_left_alone_and_pruned_around() {
    let sb = Sandbox::new();
    sb.write_config("keep_releases = 2\n");
    let mut ids = vec![sb.deploy()];
    let releases = sb.deploy_to().join("releases");
    std::fs::create_dir(releases.join("backup-old")).unwrap();
    std::fs::write(releases.join("backup-old/poem.txt"), "kept\n").unwrap();
    std::fs::write(releases.join("notes.txt"), "x").unwrap();
    // Named like a release, but a link: never followed, never deleted.
    std::os::unix::fs::symlink(&ids[0], releases.join("20000101000000")).unwrap();
    for n in 2..5 {
        sb.commit("index.html", &format!("v{n}\n"));
        sb.run(&["deploy"])
            .ok()
            .says("backup-old")
            .says("notes.txt")
            .says("never deletes what it did not create");
        ids.push(sb.current().unwrap());
    }
    let stray = ["20000101000000", "backup-old", "notes.txt"];
    let mut expected: Vec<String> = stray.iter().map(|s| s.to_string()).collect();
    expected.extend(ids[2..].iter().cloned());
    expected.sort();
    assert_eq!(sb.releases(), expected, "pruned around the stray entries");
    assert_eq!(
        std::fs::read_to_string(releases.join("backup-old/poem.txt")).unwrap(),
        "kept\n"
    );
    sb.write_config("keep_releases = 10\n");
    sb.commit("index.html", "v5\n");
    ids.push(sb.deploy());
    sb.run(&["prune", "--keep", "1"]).ok().says("backup-old");
    let mut expected: Vec<String> = stray.iter().map(|s| s.to_string()).collect();
    expected.extend(ids[3..].iter().cloned());
    expected.sort();
    assert_eq!(sb.releases(), expected);
    assert!(releases.join("20000101000000").is_symlink());
    let listed = |json: serde_json::Value| json["stray"].clone();
    assert_eq!(listed(sb.releases_json()), serde_json::json!(stray));
    assert_eq!(
        listed(sb.run(&["status", "--json"]).ok().json()),
        serde_json::json!(stray)
    );
    let check = sb.run(&["check", "--json"]).json();
    let releases_check = check["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "releases")
        .cloned()
        .unwrap();
    assert_eq!(releases_check["ok"], true, "{releases_check}");
    assert!(
        releases_check["detail"]
            .as_str()
            .unwrap()
            .contains("backup-old"),
        "{releases_check}"
    );
    let status = sb.run(&["status"]).ok().stdout.clone();
    assert!(status.contains("backup-old is not a release"), "{status}");
    sb.run(&["rollback"]).ok().says("backup-old");
    assert_eq!(sb.current().unwrap(), ids[3]);
}

#[test]
fn keep_zero_is_refused() {
    let sb = Sandbox::new();
    sb.deploy();
    let before = sb.fingerprint();
    sb.run(&["prune", "--keep", "0"]).code(2).says("--keep 0");
    assert_eq!(sb.fingerprint(), before);
}

/// Give the deploy directory and the config to `nobody`, so that prune can
/// run as that user (a deploy user who is not root).
fn hand_to_nobody(sb: &Sandbox) {
    use crate::sandbox::NOBODY;
    sb.open_to_nobody();
    for entry in walkdir::WalkDir::new(sb.deploy_to()).into_iter().flatten() {
        let _ = std::os::unix::fs::lchown(entry.path(), Some(NOBODY), Some(NOBODY));
    }
    std::os::unix::fs::chown(sb.config_path(), Some(NOBODY), Some(NOBODY)).unwrap();
}

/// The ids of the releases `prune --json` kept, with their reasons.
fn kept(plan: &serde_json::Value) -> Vec<(String, String)> {
    plan["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let field = |f: &str| k[f].as_str().unwrap().to_string();
            (field("id"), field("reason"))
        })
        .collect()
}

/// Regression: prune, running as a user who may not read another user's
/// `/proc/<pid>/cwd`, took that process for one that uses no release and
/// deleted the release it ran from. Here a root service runs from the
/// release that was live when it started (as a unit's `ExecStart=` under
/// `current` does) and prune runs as `nobody` (through setpriv), so this
/// needs root to set up.
#[test]
fn a_release_used_by_a_process_prune_cannot_inspect_is_kept() {
    if !crate::sandbox::root_or_say_skipped(
        "a_release_used_by_a_process_prune_cannot_inspect_is_kept",
    ) {
        return;
    }
    let sb = Sandbox::new();
    sb.write_config("keep_releases = 5\n");
    let mut ids = vec![sb.deploy()];
    // Started from `current` while the first release is live, so it runs
    // that release; the deploys after it are no reason to keep anything.
    let mut straggler = Command::new("sleep")
        .arg("120")
        .current_dir(sb.deploy_to().join("current"))
        .spawn()
        .unwrap();
    for n in 2..4 {
        sb.commit("index.html", &format!("v{n}\n"));
        ids.push(sb.deploy());
    }
    hand_to_nobody(&sb);
    let run = sb.run_as_nobody(&["prune", "--keep", "1"]);
    crate::sandbox::kill(straggler.id());
    let _ = straggler.wait();
    run.ok();
    assert!(
        sb.releases().contains(&ids[0]),
        "prune deleted a release a process it could not inspect runs from\n{}",
        run.stderr
    );
    run.says("cannot inspect").says(&ids[0]);
}

/// Without the history, prune cannot tell what was live when a process it
/// cannot inspect started: it falls back to keeping every release older
/// than that process, and says so.
#[test]
fn without_a_history_an_uninspectable_process_keeps_every_older_release() {
    if !crate::sandbox::root_or_say_skipped(
        "without_a_history_an_uninspectable_process_keeps_every_older_release",
    ) {
        return;
    }
    let sb = Sandbox::new();
    sb.write_config("keep_releases = 5\n");
    let mut ids = Vec::new();
    for n in 2..5 {
        sb.commit("index.html", &format!("v{n}\n"));
        ids.push(sb.deploy());
    }
    // A root process that uses no release, started after all of them.
    let mut root = Command::new("sleep")
        .arg("120")
        .current_dir("/")
        .spawn()
        .unwrap();
    std::fs::remove_file(sb.deploy_to().join(".shipit/history.jsonl")).unwrap();
    hand_to_nobody(&sb);
    let run = sb.run_as_nobody(&["prune", "--keep", "1", "--json"]);
    crate::sandbox::kill(root.id());
    let _ = root.wait();
    run.ok().says("the history does not say");
    let unverified: Vec<String> = kept(&run.json())
        .into_iter()
        .filter(|(_, reason)| reason == "unverified")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(unverified, [ids[0].clone()], "{}", run.stderr);
    assert_eq!(sb.releases(), ids);
}

/// A child we started, killed by pid when the test ends however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        crate::sandbox::kill(self.0.id());
        let _ = self.0.wait();
    }
}

/// Whether this machine lets root make a PID namespace (a container may
/// not); tests that need one say loudly that they were skipped.
fn pid_namespaces_or_say_skipped(test: &str) -> bool {
    let works = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!(
            "\n*** SKIPPED {test}: it needs `unshare --pid --mount-proc` (root, util-linux) to \
             see only its own processes ***\n"
        );
    }
    works
}

/// As a deploy user who is not root, prune kept every release
/// older than any root process (an ssh session, a cron job), so releases
/// piled up until the disk filled. Now a process it cannot inspect keeps
/// only what was live when it started. In a PID namespace of its own, so
/// that the processes of other tests (root too) are not in the count.
#[test]
fn a_non_root_prune_keeps_only_what_uninspectable_processes_may_run() {
    let test = "a_non_root_prune_keeps_only_what_uninspectable_processes_may_run";
    if !crate::sandbox::root_or_say_skipped(test) || !pid_namespaces_or_say_skipped(test) {
        return;
    }
    let sb = Sandbox::new();
    sb.write_config("keep_releases = 20\n");
    let mut ids = Vec::new();
    for n in 0..10 {
        sb.commit("index.html", &format!("v{n}\n"));
        ids.push(sb.deploy());
    }
    sb.run(&["rollback", "--to", &ids[3]]).ok();
    // Let the clock pass the slack around a process's start time, so that
    // the processes below start when the fourth release alone is live.
    let rolled = std::time::Instant::now();
    crate::sandbox::wait_until(
        "the start-time slack to pass",
        Duration::from_secs(10),
        || rolled.elapsed() > Duration::from_secs(3),
    );
    let ready = sb.path().join("ready");
    let go = sb.path().join("go");
    let out = sb.path().join("prune.out");
    // In the namespace: a deploy user's process in an old release, a root
    // service started from `current` (the fourth release), a root process
    // that uses no release; then, once told to, prune as nobody.
    let script = format!(
        "cd '{old}' && setpriv --reuid=65534 --regid=65534 --clear-groups sleep 300 &\n\
         (cd '{deploy}/current' && exec sleep 300) &\n\
         (cd / && exec sleep 300) &\n\
         touch '{ready}'\n\
         i=0; while [ ! -e '{go}' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n\
         cd '{sandbox}' && setpriv --reuid=65534 --regid=65534 --clear-groups \
         env HOME=/nonexistent NO_COLOR=1 '{shipit}' prune --json >'{out}' 2>'{out}.err'\n\
         echo $? >'{out}.code'\n",
        old = sb.deploy_to().join("releases").join(&ids[1]).display(),
        deploy = sb.deploy_to().display(),
        ready = ready.display(),
        go = go.display(),
        sandbox = sb.path().display(),
        shipit = crate::sandbox::SHIPIT,
        out = out.display(),
    );
    // --kill-child: if this test fails early, dropping the guard kills
    // unshare, which takes the namespace (and every process in it) along.
    let mut namespace = KillOnDrop(
        Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "sh",
                "-c",
                &script,
            ])
            .spawn()
            .unwrap(),
    );
    crate::sandbox::wait_until("the processes to start", Duration::from_secs(30), || {
        ready.exists()
    });
    // After they started, the sixth release goes live: they cannot run it
    // (it is current anyway), nor the fifth, the rollback target now.
    sb.run(&["rollback", "--to", &ids[5]]).ok();
    sb.write_config("keep_releases = 3\n");
    hand_to_nobody(&sb);
    std::fs::write(&go, "").unwrap();
    // When the namespace's first process exits, the kernel ends the rest.
    crate::sandbox::wait_bounded(&mut namespace.0, Duration::from_secs(120));
    let read = |suffix: &str| {
        std::fs::read_to_string(format!("{}{suffix}", out.display())).unwrap_or_default()
    };
    let said = read(".err");
    assert_eq!(read(".code").trim(), "0", "{said}");
    let plan: serde_json::Value = serde_json::from_str(&read("")).expect(&said);
    let by_reason = |reason: &str| -> Vec<String> {
        kept(&plan)
            .into_iter()
            .filter(|(_, r)| r == reason)
            .map(|(id, _)| id)
            .collect()
    };
    assert_eq!(by_reason("newest"), ids[7..].to_vec(), "{plan}");
    assert_eq!(by_reason("current"), [ids[5].clone()], "{plan}");
    assert_eq!(by_reason("rollback-target"), [ids[4].clone()], "{plan}");
    assert_eq!(by_reason("in-use"), [ids[1].clone()], "{plan}");
    assert_eq!(by_reason("unverified"), [ids[3].clone()], "{plan}\n{said}");
    let mut left = vec![ids[1].clone()];
    left.extend(ids[3..=5].iter().cloned());
    left.extend(ids[7..].iter().cloned());
    assert_eq!(sb.releases(), left, "{said}");
    assert!(said.contains("cannot inspect"), "{said}");
}
