//! shipit's own files under `.shipit/`: planted links are refused, another
//! user's state is named with the fix, damaged history and metadata never
//! stop `history` or `status`.

use std::fs;
use std::os::unix::fs::symlink;

use crate::sandbox::{NOBODY, Sandbox, root_or_say_skipped};

/// A file outside the deploy directory that a planted link points at.
fn victim(sb: &Sandbox) -> std::path::PathBuf {
    let path = sb.path().join("victim");
    fs::write(&path, "precious\n").unwrap();
    path
}

#[test]
fn a_link_planted_at_the_lock_is_refused() {
    let sb = Sandbox::new();
    sb.deploy();
    sb.commit("index.html", "v2\n");
    sb.deploy();
    let victim = victim(&sb);
    let lock = sb.deploy_to().join(".shipit/lock");
    fs::remove_file(&lock).unwrap();
    symlink(&victim, &lock).unwrap();
    sb.commit("index.html", "v3\n");
    for args in [&["deploy"][..], &["rollback"], &["prune"]] {
        sb.run(args)
            .code(2)
            .says(&format!(
                "refusing to open the lock file {}",
                lock.display()
            ))
            .says("symbolic link")
            .says(&format!("rm {}", lock.display()));
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(sb.served(), "v2\n");
}

#[test]
fn a_link_planted_at_the_history_is_refused() {
    let sb = Sandbox::new();
    sb.deploy();
    let victim = victim(&sb);
    let history = sb.deploy_to().join(".shipit/history.jsonl");
    fs::remove_file(&history).unwrap();
    symlink(&victim, &history).unwrap();
    sb.commit("index.html", "v2\n");
    sb.run(&["deploy"])
        .code(2)
        .says("refusing to open the history")
        .says("symbolic link");
    sb.run(&["history"]).code(2).says("symbolic link");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
}

/// Build logs are named by release id, which is the time: a link planted
/// for each of the next minutes' ids must not be followed.
#[test]
fn links_planted_at_future_build_logs_are_not_followed() {
    let sb = Sandbox::new();
    sb.deploy();
    let victim = victim(&sb);
    let logs = sb.deploy_to().join(".shipit/logs");
    let now = chrono::Utc::now();
    for s in 0..120 {
        let id = (now + chrono::TimeDelta::seconds(s)).format("%Y%m%d%H%M%S");
        let _ = symlink(&victim, logs.join(format!("{id}.log")));
    }
    sb.commit("index.html", "v2\n");
    sb.run(&["deploy"])
        .code(2)
        .says("refusing to open the build log")
        .says("rm ")
        .says("live now: releases/");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(sb.served(), "v1\n");
}

#[test]
fn a_state_directory_that_is_a_link_is_refused() {
    let sb = Sandbox::new();
    sb.deploy();
    let elsewhere = sb.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let logs = sb.deploy_to().join(".shipit/logs");
    fs::remove_dir_all(&logs).unwrap();
    symlink(&elsewhere, &logs).unwrap();
    sb.commit("index.html", "v2\n");
    sb.run(&["deploy"])
        .code(2)
        .says("refusing to open the log directory");
    assert!(crate::sandbox::dir_names(&elsewhere).is_empty());
}

#[test]
fn a_state_directory_of_another_user_is_refused_with_the_fix() {
    if !root_or_say_skipped("a_state_directory_of_another_user_is_refused_with_the_fix") {
        return;
    }
    let sb = Sandbox::new();
    sb.deploy();
    let state = sb.deploy_to().join(".shipit");
    std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    sb.commit("index.html", "v2\n");
    let before = sb.fingerprint();
    sb.run(&["deploy"])
        .code(2)
        .says(&format!("{} belongs to nobody", state.display()))
        .says("sudo -u nobody shipit")
        .says(&format!("sudo chown -R root {}", state.display()));
    assert_eq!(sb.fingerprint(), before);
    let check = sb.run(&["check"]);
    check.code(2);
    assert!(
        check.stdout.contains("belongs to nobody"),
        "{}",
        check.stdout
    );
}

/// A lock file left by a run as another user (root, typically): the
/// refusal names the owner and the fix, and `check` reports it.
#[test]
fn a_lock_file_of_another_user_is_named_with_the_fix() {
    if !root_or_say_skipped("a_lock_file_of_another_user_is_named_with_the_fix") {
        return;
    }
    let sb = Sandbox::new();
    sb.deploy();
    sb.open_to_nobody();
    for entry in walkdir::WalkDir::new(sb.deploy_to()) {
        let entry = entry.unwrap();
        std::os::unix::fs::lchown(entry.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let lock = sb.deploy_to().join(".shipit/lock");
    std::os::unix::fs::chown(&lock, Some(0), Some(0)).unwrap();
    let before = sb.fingerprint();
    let run = sb.run_as_nobody(&["deploy"]);
    run.code(2)
        .says(&format!("the lock file {} belongs to root", lock.display()))
        .says("sudo -u root shipit")
        .says("sudo chown -R nobody");
    assert_eq!(sb.fingerprint(), before);
    let check = sb.run_as_nobody(&["check"]);
    assert!(
        check
            .stdout
            .lines()
            .any(|l| l.contains("state") && l.contains("belongs to root")),
        "{}",
        check.stdout
    );
}

/// Regression: a crash mid-append left a torn last line, and the next event
/// was appended to it, so both were lost.
#[test]
fn a_torn_history_line_does_not_swallow_the_next_event() {
    let sb = Sandbox::new();
    sb.deploy();
    let history = sb.deploy_to().join(".shipit/history.jsonl");
    let mut text = fs::read(&history).unwrap();
    text.extend_from_slice(b"{\"time\":\"2026-11-2");
    fs::write(&history, &text).unwrap();
    sb.commit("index.html", "v2\n");
    let second = sb.deploy();
    let events = sb.history_json();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["release"], second.as_str());
    sb.run(&["history"])
        .ok()
        .says("skipped 1 unreadable line(s)");
}

/// Regression: one invalid UTF-8 byte made `history` and `status` fail for
/// good; an unparsable metadata file of the live release broke `status`.
#[test]
fn damaged_history_and_metadata_do_not_break_history_or_status() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    let history = sb.deploy_to().join(".shipit/history.jsonl");
    let mut text = fs::read(&history).unwrap();
    text.extend_from_slice(b"\xff\xfe garbage\n");
    fs::write(&history, &text).unwrap();
    sb.commit("index.html", "v2\n");
    let second = sb.deploy();
    let run = sb.run(&["history", "--json"]);
    run.ok().says("skipped 1 unreadable line(s)");
    assert_eq!(run.json().as_array().unwrap().len(), 2);
    fs::write(
        sb.deploy_to()
            .join("releases")
            .join(&second)
            .join(".shipit-release.json"),
        "{ not json",
    )
    .unwrap();
    let status = sb.run(&["status", "--json"]);
    status.ok().says("could not parse");
    let json = status.json();
    assert_eq!(json["current"], second.as_str());
    assert_eq!(json["last_deploy"]["release"], second.as_str());
    sb.run(&["status"]).ok();
    let _ = first;
}
