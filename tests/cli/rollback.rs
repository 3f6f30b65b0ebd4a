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

/// `rollback --to` a release that failed its gate took a site down for a
/// whole gate: it is refused with the reason it failed, and `--force`
/// overrides.
#[test]
fn rollback_to_a_failed_release_is_refused_unless_forced() {
    let sb = Sandbox::new();
    let _server = sb.with_server("", "timeout = \"3s\"");
    let first = sb.deploy();
    sb.commit("index.html", "v2\n");
    let second = sb.deploy();
    sb.commit("health-status", "500\n");
    sb.run(&["deploy"]).code(4);
    let broken = sb.releases().into_iter().max().unwrap();
    assert_ne!(broken, second);
    let before = sb.fingerprint();
    sb.run(&["rollback", "--to", &broken])
        .code(2)
        .says(&format!("releases/{broken} failed when it was deployed"))
        .says("status 500")
        .says("--force");
    assert_eq!(sb.fingerprint(), before, "nothing changed");
    assert_eq!(sb.current().unwrap(), second);

    // Forced, it is gated again (and fails again: the swap is undone).
    sb.run(&["rollback", "--to", &broken, "--force"]).code(5);
    sb.run(&["rollback", "--to", &first]).ok();
    assert_eq!(sb.current().unwrap(), first);
}

/// A crash (here a crash point of the debug build) during a deploy on the
/// reload path, at each step after the release began to go live: the
/// release never proved itself, so `status` says so and `rollback` goes to
/// the release that did, not to it; the next mutating command marks it.
#[test]
fn a_release_whose_deploy_was_killed_is_never_the_rollback_target() {
    use std::os::unix::process::ExitStatusExt;
    for point in [
        "activation-started",
        "reload:after-swap",
        "reload:after-reload",
        "reload:gate",
    ] {
        let sb = Sandbox::new();
        let _server = sb.with_server("", "");
        let first = sb.deploy();
        sb.commit("index.html", "v2\n");
        let second = sb.deploy();
        sb.commit("index.html", "v3\n");
        let out = sb
            .command(&["deploy"])
            .env("SHIPIT_TEST_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{point}");
        let crashed = sb.releases().into_iter().max().unwrap();
        assert_ne!(crashed, second);
        let status = sb.run(&["status", "--json"]).ok().json();
        let current = sb.current().unwrap();
        assert_eq!(status["current"], current.as_str(), "{point}");
        if current == crashed {
            assert_eq!(status["proven"], false, "{point}: {status}");
        }
        let row = |id: &str| {
            sb.releases_json()["releases"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["id"] == id)
                .unwrap()
                .clone()
        };
        assert_eq!(row(&crashed)["proven"], false, "{point}");
        // From the crashed release, or from the one still current, rollback
        // lands on a release that proved itself.
        sb.run(&["rollback"]).ok();
        let expected = if current == crashed { &second } else { &first };
        assert_eq!(&sb.current().unwrap(), expected, "{point}");
        assert_eq!(row(&crashed)["proven"], false, "{point}");
        assert_ne!(row(&crashed)["status"], "ready", "{point}");
    }
}

/// Releases published before shipit recorded `proven` keep their rollback
/// target: the history says which of them went live and passed.
#[test]
fn releases_from_before_the_proven_record_are_judged_by_the_history() {
    let sb = Sandbox::new();
    let [a, b, c] = three_releases(&sb);
    // Strip the record, as metadata written by an older shipit lacks it.
    for id in [&a, &b, &c] {
        let path = sb
            .deploy_to()
            .join("releases")
            .join(id)
            .join(".shipit-release.json");
        let mut meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        meta.as_object_mut().unwrap().remove("proven");
        meta.as_object_mut().unwrap().remove("activation_started");
        std::fs::write(&path, meta.to_string()).unwrap();
    }
    // b never went live as far as the history knows (a deploy that was
    // killed before it recorded anything, say).
    let history = sb.deploy_to().join(".shipit/history.jsonl");
    let kept: String = std::fs::read_to_string(&history)
        .unwrap()
        .lines()
        .filter(|l| !l.contains(&format!("\"release\":\"{b}\"")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&history, kept).unwrap();
    let mut events: Vec<serde_json::Value> = std::fs::read_to_string(&history)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // ...but it is named by a deploy that did not pass.
    let mut failed = events[0].clone();
    failed["release"] = b.as_str().into();
    failed["outcome"] = "interrupted".into();
    failed["live"] = a.as_str().into();
    events.push(failed);
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&history, text).unwrap();

    let json = sb.releases_json();
    let proven = |id: &str| {
        json["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()["proven"]
            .clone()
    };
    assert_eq!(proven(&a), true);
    assert_eq!(proven(&b), false);
    sb.run(&["rollback"]).ok();
    assert_eq!(sb.current().unwrap(), a, "b never proved itself");
}
