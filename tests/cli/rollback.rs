//! Rollback: to the previous good release, `--to`, stepping back.

use crate::sandbox::Sandbox;

fn three_releases(sb: &Sandbox) -> [String; 3] {
    let a = sb.deploy();
    sb.commit("index.html", "v2\n");
    let b = sb.deploy();
    sb.commit("index.html", "v3\n");
    let c = sb.deploy();
    [a, b, c]
}

#[test]
fn rollback_goes_to_the_previous_release_and_marks_the_one_left() {
    let sb = Sandbox::new();
    let [_, b, c] = three_releases(&sb);
    let run = sb.run(&["rollback", "--json"]);
    run.ok();
    let out = run.json();
    assert_eq!(out["from"], c.as_str());
    assert_eq!(out["to"], b.as_str());
    assert_eq!(sb.current().unwrap(), b);
    assert_eq!(sb.served(), "v2\n");
    let json = sb.releases_json();
    assert_eq!(json["releases"][0]["status"], "rolled-back");
    assert_eq!(json["releases"][1]["status"], "live");
    assert_eq!(sb.history_json()[0]["event"], "rollback");
}

#[test]
fn repeated_rollbacks_keep_stepping_back() {
    let sb = Sandbox::new();
    let [a, b, _] = three_releases(&sb);
    sb.run(&["rollback"]).ok();
    assert_eq!(sb.current().unwrap(), b);
    sb.run(&["rollback"]).ok();
    assert_eq!(sb.current().unwrap(), a);
    assert_eq!(sb.served(), "v1\n");
    let before = sb.fingerprint();
    sb.run(&["rollback"])
        .code(2)
        .says("no good release older than");
    assert_eq!(sb.fingerprint(), before);
}

#[test]
fn rollback_to_a_named_release_and_forward_again() {
    let sb = Sandbox::new();
    let [a, _, c] = three_releases(&sb);
    sb.run(&["rollback", "--to", &a]).ok();
    assert_eq!(sb.served(), "v1\n");
    sb.run(&["rollback", "--to", &c]).ok();
    assert_eq!(sb.served(), "v3\n");
    sb.run(&["rollback", "--to", &c])
        .code(2)
        .says("already live");
}

#[test]
fn after_a_rollback_the_next_deploy_rolls_back_past_the_bad_release() {
    let sb = Sandbox::new();
    let [_, b, _] = three_releases(&sb);
    sb.run(&["rollback"]).ok();
    sb.commit("index.html", "v4\n");
    sb.deploy();
    // The release rolled away from (c) is skipped: back to b, live before.
    sb.run(&["rollback"]).ok();
    assert_eq!(sb.current().unwrap(), b);
}

#[test]
fn rollback_refuses_paths_and_unknown_ids_without_changing_anything() {
    let sb = Sandbox::new();
    three_releases(&sb);
    let before = sb.fingerprint();
    for bad in ["../../etc", "/etc", "..", "20261121174500/../..", "latest"] {
        sb.run(&["rollback", "--to", bad])
            .code(2)
            .says(&format!("{bad:?} is not a release id"));
    }
    sb.run(&["rollback", "--to", "20200101000000"])
        .code(2)
        .says("there is no release 20200101000000")
        .says("live now: releases/");
    assert_eq!(sb.fingerprint(), before);
}

#[test]
fn nothing_to_roll_back_on_an_empty_deploy_dir() {
    let sb = Sandbox::new();
    sb.run(&["rollback"]).code(2).says("no live release");
    assert!(
        !sb.deploy_to().exists(),
        "a refused rollback creates nothing"
    );
}

/// Regression: a failure to record statuses right after the swap returned
/// early and skipped the reload, leaving `current` moved but the app never
/// told. Bookkeeping after a swap now only warns.
#[test]
fn a_metadata_failure_after_the_swap_still_reloads() {
    let sb = Sandbox::new();
    let reloaded = sb.path().join("reloaded");
    sb.write_config(&format!(
        "[hooks]\nreload = \"printf %s \\\"$SHIPIT_RELEASE\\\" > '{}'\"\n",
        reloaded.display()
    ));
    let a = sb.deploy();
    sb.commit("index.html", "v2\n");
    let b = sb.deploy();
    let meta = sb
        .deploy_to()
        .join("releases")
        .join(&b)
        .join(".shipit-release.json");
    std::fs::remove_file(&meta).unwrap();
    std::fs::create_dir(&meta).unwrap();
    sb.run(&["rollback", "--to", &a])
        .ok()
        .says("could not record");
    assert_eq!(sb.current().unwrap(), a);
    assert_eq!(
        std::fs::read_to_string(&reloaded).unwrap(),
        a,
        "the reload ran for the target"
    );
}

/// Regression: rolling back from a release left live by `--no-rollback`
/// marked it `rolled-back`, which prune treats as good: it then kept the
/// broken release and deleted good ones.
#[test]
fn rolling_back_from_a_failed_release_leaves_it_failed() {
    let sb = Sandbox::new();
    sb.write_config(
        "keep_releases = 2\n[hooks]\nreload = \"! test -e \\\"$SHIPIT_RELEASE_PATH/broken\\\"\"\n",
    );
    let a = sb.deploy();
    sb.commit("index.html", "v2\n");
    let b = sb.deploy();
    sb.commit("broken", "");
    sb.run(&["deploy", "--no-rollback"])
        .code(7)
        .says("left live by --no-rollback");
    let c = sb.current().unwrap();
    sb.run(&["rollback"]).ok();
    assert_eq!(sb.current().unwrap(), b);
    let status = |id: &str| {
        sb.releases_json()["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .map(|r| r["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status(&c).as_deref(), Some("failed"));
    // Failed releases go first: pruning to two keeps the good ones.
    sb.run(&["prune"]).ok();
    assert_eq!(status(&c), None, "the failed release was pruned");
    assert_eq!(sb.releases(), [a, b]);
}
