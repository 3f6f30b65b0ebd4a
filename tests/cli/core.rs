//! Deploys: first, second, by tag, by sha, same second, shared paths,
//! directory sources, build failures.

use std::fs;

use crate::sandbox::{Sandbox, dir_names, git};

#[test]
fn first_deploy_publishes_and_points_current() {
    let sb = Sandbox::new();
    let run = sb.run(&["deploy"]);
    run.ok().says("Deployed");
    let id = sb.current().unwrap();
    assert_eq!(sb.releases(), std::slice::from_ref(&id));
    assert_eq!(sb.served(), "v1\n");
    let link = fs::read_link(sb.deploy_to().join("current")).unwrap();
    assert_eq!(
        link.to_str().unwrap(),
        format!("releases/{id}"),
        "current is relative"
    );

    let json = sb.releases_json();
    assert_eq!(json["current"], id.as_str());
    let r = &json["releases"][0];
    assert_eq!(r["status"], "live");
    assert_eq!(r["current"], true);
    assert_eq!(r["branch"], "main");
    assert_eq!(
        r["revision"].as_str().unwrap(),
        git(&sb.repo(), &["rev-parse", "HEAD"])
    );

    let history = sb.history_json();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["event"], "deploy");
    assert_eq!(history[0]["outcome"], "ok");
    assert_eq!(history[0]["release"], id.as_str());
    assert!(history[0]["user"].as_str().is_some_and(|u| !u.is_empty()));

    // Nothing staged or trashed is left behind.
    let state = sb.deploy_to().join(".shipit");
    assert!(dir_names(&state.join("staging")).is_empty());
    assert!(dir_names(&state.join("trash")).is_empty());
}

#[test]
fn second_deploy_moves_current_and_keeps_the_first() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    sb.commit("index.html", "v2\n");
    let second = sb.deploy();
    assert!(second > first, "{second} should sort after {first}");
    assert_eq!(sb.served(), "v2\n");
    assert_eq!(sb.releases(), [first.clone(), second.clone()]);
    let json = sb.releases_json();
    assert_eq!(json["releases"][0]["id"], second.as_str());
    assert_eq!(json["releases"][0]["status"], "live");
    assert_eq!(json["releases"][1]["status"], "ready");
    assert_eq!(json["releases"][0]["previous"], first.as_str());
}

#[test]
fn deploy_a_tag_and_a_sha() {
    let sb = Sandbox::new();
    let v1 = git(&sb.repo(), &["rev-parse", "HEAD"]);
    git(&sb.repo(), &["tag", "v1.0"]);
    sb.commit("index.html", "v2\n");
    sb.run(&["deploy", "--ref", "v1.0"]).ok();
    assert_eq!(sb.served(), "v1\n");
    assert_eq!(sb.releases_json()["releases"][0]["revision"], v1.as_str());

    sb.commit("index.html", "v3\n");
    let v2 = git(&sb.repo(), &["rev-parse", "HEAD~1"]);
    sb.run(&["deploy", "--ref", &v2]).ok();
    assert_eq!(sb.served(), "v2\n");
    sb.run(&["deploy", "--ref", &v2[..8]]).ok();
    assert_eq!(sb.served(), "v2\n");
    sb.run(&["deploy"]).ok();
    assert_eq!(sb.served(), "v3\n");
}

#[test]
fn deploys_in_the_same_second_get_distinct_ordered_ids() {
    let sb = Sandbox::new();
    let mut ids = Vec::new();
    for n in 0..4 {
        sb.commit("index.html", &format!("v{n}\n"));
        ids.push(sb.deploy());
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "ids must be distinct and in deploy order");
    assert_eq!(sb.served(), "v3\n");
}

#[test]
fn build_hooks_run_in_the_release_with_shipit_variables() {
    let sb = Sandbox::new();
    sb.write_config(
        "[hooks]\nbuild = [\"printf '%s|%s|%s' \\\"$SHIPIT_RELEASE\\\" \\\"$SHIPIT_BRANCH\\\" \\\"$SHIPIT_PREVIOUS_RELEASE\\\" > built.txt\", \"echo hello from build\"]\n",
    );
    let first = sb.deploy();
    let built = fs::read_to_string(sb.deploy_to().join("current/built.txt")).unwrap();
    assert_eq!(built, format!("{first}|main|"));
    let second = sb.deploy();
    let built = fs::read_to_string(sb.deploy_to().join("current/built.txt")).unwrap();
    assert_eq!(built, format!("{second}|main|{first}"));
    let log =
        fs::read_to_string(sb.deploy_to().join(format!(".shipit/logs/{second}.log"))).unwrap();
    assert!(log.contains("build | hello from build"), "{log}");
}

#[test]
fn a_failed_build_changes_nothing_live_and_leaves_no_leftovers() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    sb.commit("index.html", "v2\n");
    sb.write_config("[hooks]\nbuild = [\"echo compiling\", \"echo broken >&2; exit 7\"]\n");
    let run = sb.run(&["deploy"]);
    run.code(3)
        .says("exited with status 7")
        .says(&format!("live now: releases/{first}"))
        .says("build log");
    assert_eq!(sb.current().unwrap(), first);
    assert_eq!(sb.releases(), std::slice::from_ref(&first));
    assert_eq!(sb.served(), "v1\n");
    let state = sb.deploy_to().join(".shipit");
    assert!(dir_names(&state.join("staging")).is_empty());
    assert!(dir_names(&state.join("trash")).is_empty());
    let history = sb.history_json();
    assert_eq!(history[0]["outcome"], "failed-before-swap");
    assert_eq!(history[0]["live"], first.as_str());
}

#[test]
fn shared_paths_are_linked_and_a_missing_shared_file_stops_the_deploy() {
    let sb = Sandbox::new();
    sb.commit("log/committed.txt", "should be replaced\n");
    sb.write_config("shared = [\".env\", \"log/\"]\n");
    let before = sb.fingerprint();
    sb.run(&["deploy"])
        .code(3)
        .says(".env is missing")
        .says("create it");
    assert_eq!(
        sb.fingerprint(),
        before,
        "nothing may change before the deploy"
    );

    fs::create_dir_all(sb.deploy_to().join("shared")).unwrap();
    fs::write(sb.deploy_to().join("shared/.env"), "SECRET=1\n").unwrap();
    let id = sb.deploy();
    let release = sb.deploy_to().join("releases").join(&id);
    assert!(release.join(".env").is_symlink());
    assert_eq!(
        fs::read_to_string(release.join(".env")).unwrap(),
        "SECRET=1\n"
    );
    assert!(release.join("log").is_symlink());
    assert!(sb.deploy_to().join("shared/log").is_dir());
    // The first use of shared/log seeded it from the release (see
    // a_shared_directory_is_seeded_from_the_release_on_first_use).
    assert!(sb.deploy_to().join("shared/log/committed.txt").is_file());
}

/// A shared directory created on the first deploy hid what the
/// release held at that path: the release's `uploads/poem.txt` was gone
/// behind the link. Now the new shared directory is seeded with it, and
/// said so; once it exists, shared/ wins over what later releases hold.
#[test]
fn a_shared_directory_is_seeded_from_the_release_on_first_use() {
    let sb = Sandbox::new();
    sb.commit("uploads/poem.txt", "roses\n");
    sb.commit("uploads/deep/er.txt", "deeper\n");
    // A symlink in the repository is never followed to seed from: it could
    // point anywhere on the server.
    std::os::unix::fs::symlink("/etc", sb.repo().join("cache")).unwrap();
    git(&sb.repo(), &["add", "-A"]);
    git(&sb.repo(), &["commit", "-q", "-m", "cache"]);
    sb.write_config("shared = [\"uploads/\", \"cache/\"]\n");
    let first = sb.run(&["deploy"]);
    first.ok().says("Seeding").says("shared/uploads");
    assert!(!first.stderr.contains("shared/cache"), "{}", first.stderr);
    let shared = sb.deploy_to().join("shared");
    assert!(dir_names(&shared.join("cache")).is_empty());
    let current = sb.deploy_to().join("current");
    assert!(current.join("uploads").is_symlink());
    assert_eq!(
        fs::read_to_string(current.join("uploads/poem.txt")).unwrap(),
        "roses\n"
    );
    assert_eq!(
        fs::read_to_string(shared.join("uploads/deep/er.txt")).unwrap(),
        "deeper\n"
    );
    assert_eq!(
        dir_names(&shared),
        ["cache", "uploads"],
        "no draft is left behind"
    );

    // Once it exists, what users uploaded stays and the release's copy is
    // not seeded again.
    fs::write(shared.join("uploads/user.txt"), "uploaded\n").unwrap();
    sb.commit("uploads/poem.txt", "violets\n");
    let second = sb.run(&["deploy"]);
    second.ok();
    assert!(!second.stderr.contains("Seeding"), "{}", second.stderr);
    assert_eq!(
        fs::read_to_string(current.join("uploads/poem.txt")).unwrap(),
        "roses\n"
    );
    assert!(current.join("uploads/user.txt").is_file());
}

#[test]
fn a_directory_source_is_copied_as_it_is() {
    let sb = Sandbox::new();
    let dist = sb.path().join("dist");
    fs::create_dir_all(dist.join("assets")).unwrap();
    fs::write(dist.join("assets/app.js"), "js").unwrap();
    std::os::unix::fs::symlink("assets/app.js", dist.join("latest.js")).unwrap();
    sb.write_raw_config("deploy_to = \"deploy\"\n[source]\npath = \"dist\"\n");
    let id = sb.deploy();
    let release = sb.deploy_to().join("releases").join(&id);
    assert_eq!(
        fs::read_link(release.join("latest.js")).unwrap().to_str(),
        Some("assets/app.js")
    );
    assert_eq!(fs::read_to_string(release.join("latest.js")).unwrap(), "js");
}

/// Regression: a deploy killed between creating the source mirror and
/// configuring its fetch refspec left a mirror that looked initialised, and
/// every later deploy failed with "main is not a branch".
#[test]
fn a_half_created_mirror_from_a_killed_deploy_is_repaired() {
    let sb = Sandbox::new();
    let mirror = sb.deploy_to().join(".shipit/repo.git");
    fs::create_dir_all(&mirror).unwrap();
    git(&mirror, &["init", "-q", "--bare"]);
    sb.deploy();
    assert_eq!(sb.served(), "v1\n");
}

/// The mirror fetches from `source.git` as configured now, not from the URL
/// it was cloned from.
#[test]
fn a_changed_source_git_takes_effect() {
    let sb = Sandbox::new();
    sb.deploy();
    let other = sb.path().join("other");
    fs::create_dir(&other).unwrap();
    git(&other, &["init", "-q", "-b", "main"]);
    fs::write(other.join("index.html"), "other\n").unwrap();
    git(&other, &["add", "-A"]);
    git(&other, &["commit", "-q", "-m", "other"]);
    let config = fs::read_to_string(sb.config_path()).unwrap();
    sb.write_raw_config(&config.replace("git = \"app\"", "git = \"other\""));
    sb.deploy();
    assert_eq!(sb.served(), "other\n");
}

/// Regression (found by crash injection): a deploy SIGKILLed mid-fetch left
/// git's `refs/heads/main.lock` in the mirror, and every later fetch failed
/// with "Unable to create ... main.lock: File exists".
#[test]
fn a_stale_git_lock_in_the_mirror_is_cleared() {
    let sb = Sandbox::new();
    sb.deploy();
    let mirror = sb.deploy_to().join(".shipit/repo.git");
    fs::write(mirror.join("refs/heads/main.lock"), "").unwrap();
    fs::write(mirror.join("packed-refs.lock"), "").unwrap();
    sb.commit("index.html", "v2\n");
    sb.deploy();
    assert_eq!(sb.served(), "v2\n");
}

/// Regression: a lock file that a live process holds open (a `git gc`
/// someone runs in the mirror) was deleted with the stale ones, from under
/// it. Only lock files that no process has open are stale.
#[test]
fn a_git_lock_held_open_survives_and_a_stale_one_is_cleared() {
    let sb = Sandbox::new();
    sb.deploy();
    let mirror = sb.deploy_to().join(".shipit/repo.git");
    let held = mirror.join("refs/heads/held.lock");
    let stale = mirror.join("refs/heads/main.lock");
    fs::write(&held, "").unwrap();
    fs::write(&stale, "").unwrap();
    let ready = sb.path().join("holding");
    let mut holder = std::process::Command::new("sh")
        .args(["-c", "exec 3<\"$0\" && : >\"$1\" && exec sleep 60"])
        .arg(&held)
        .arg(&ready)
        .spawn()
        .unwrap();
    crate::sandbox::wait_until(
        "sh to open the lock",
        std::time::Duration::from_secs(20),
        || ready.exists(),
    );
    sb.commit("index.html", "v2\n");
    let run = sb.run(&["deploy"]);
    let _ = holder.kill();
    let _ = holder.wait();
    run.ok();
    assert_eq!(sb.served(), "v2\n");
    assert!(
        held.exists(),
        "a lock file a live process holds was removed"
    );
    assert!(!stale.exists(), "the stale lock file is still there");
}

/// Regression: `git fetch` started a detached `git maintenance run --auto`
/// that was still running after shipit exited, holding locks in the
/// mirror. Here git's automatic gc is made due in the mirror (28 loose
/// objects where git counts them: more than its default gc.auto of 6700
/// allows in one of 256 directories), with a `pre-auto-gc` hook
/// that records its pid, takes a while, then refuses (so nothing is
/// repacked). shipit runs git's gc itself, in the foreground: when it
/// exits, the hook has run and is gone.
#[test]
fn a_fetch_leaves_no_git_running_after_shipit_exits() {
    let sb = Sandbox::new();
    sb.deploy();
    let mirror = sb.deploy_to().join(".shipit/repo.git");
    fs::create_dir_all(mirror.join("objects/17")).unwrap();
    for n in 0..28 {
        fs::write(mirror.join("objects/17").join(format!("{n:038x}")), "").unwrap();
    }
    let pidfile = sb.path().join("gc-hook.pid");
    let hook = format!(
        "#!/bin/sh\necho $$ > '{}.tmp' && mv '{0}.tmp' '{0}'\nsleep 3\nexit 1\n",
        pidfile.display()
    );
    // Written and made executable by a child, not by this process (a fork
    // in another test thread could hold it open for writing: ETXTBSY).
    let hook_path = mirror.join("hooks/pre-auto-gc");
    let wrote = std::process::Command::new("sh")
        .args(["-c", "printf '%s' \"$1\" > \"$0\" && chmod +x \"$0\""])
        .arg(&hook_path)
        .arg(&hook)
        .status()
        .unwrap();
    assert!(wrote.success());
    sb.commit("index.html", "v2\n");
    sb.run(&["deploy"]).ok();
    crate::sandbox::wait_until(
        "the pre-auto-gc hook to run",
        std::time::Duration::from_secs(20),
        || pidfile.exists(),
    );
    let pid: u32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let still_running = crate::sandbox::alive(pid);
    crate::sandbox::kill(pid);
    assert!(
        !still_running,
        "git's gc (its hook, pid {pid}) outlived shipit"
    );
    assert_eq!(sb.served(), "v2\n");
}

/// Regression (found by reading the swap for crash safety): a swap killed
/// between creating its temporary link and renaming it left `.current-*`
/// in the deploy directory.
#[test]
fn a_temporary_link_from_a_killed_swap_is_cleared() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    let stray = sb.deploy_to().join(".current-AbC123");
    std::os::unix::fs::symlink(format!("releases/{first}"), &stray).unwrap();
    sb.deploy();
    assert!(!stray.exists() && !stray.is_symlink());
}

/// Colour and live progress only on a terminal, never with NO_COLOR, and
/// plain lines everywhere else (a git hook, CI, a pipe).
#[test]
fn colour_and_progress_only_on_a_terminal() {
    let sb = Sandbox::new();
    let piped = sb.run(&["deploy"]);
    piped.ok();
    assert!(
        !piped.stderr.contains('\x1b'),
        "escape codes in a pipe:\n{}",
        piped.stderr
    );

    // `script` (util-linux) runs the command on a pseudo-terminal.
    let under_tty = |no_color: bool| {
        let mut cmd = std::process::Command::new("script");
        cmd.args([
            "-qec",
            &format!("'{}' deploy", crate::sandbox::SHIPIT),
            "/dev/null",
        ])
        .current_dir(sb.path())
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null());
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let out = cmd.output().expect("script (util-linux) runs");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tty = under_tty(false);
    assert!(
        tty.contains("\x1b[32m"),
        "no colour on a terminal:\n{tty:?}"
    );
    assert!(
        tty.contains("\x1b[2K"),
        "no live progress on a terminal:\n{tty:?}"
    );
    assert!(tty.contains("Deployed"));
    let plain = under_tty(true);
    assert!(
        !plain.contains("\x1b[32m"),
        "colour despite NO_COLOR:\n{plain:?}"
    );
    assert!(plain.contains("Deployed"));
}
