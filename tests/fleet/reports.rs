//! What the controller reports and records is what happened.

use std::fs;

use crate::support::git::git;
use crate::{Options, World};

/// The controller's history used to record `previous: null` for every
/// rollout (`nothing -> R2` while every host ran R1), and a fleet rollback
/// without its revision.
#[test]
fn the_controllers_history_names_what_the_fleet_ran_before_and_the_revision() {
    let w = World::new(2, Options::default());
    let first = w.deploy_ok();
    let sha = git(&w.path().join("app"), &["rev-parse", "HEAD"]);
    w.commit("VERSION", "2\n");
    let second = w.deploy_ok();
    w.shipit(&["rollback"]).code(0);
    let history = w.shipit(&["history", "--json"]);
    history.code(0);
    let events = history.json();
    let events = events.as_array().unwrap();
    assert_eq!(events[0]["event"], "rollback", "{events:?}");
    assert_eq!(events[0]["release"], first.as_str());
    assert_eq!(events[0]["previous"], second.as_str());
    assert_eq!(events[0]["revision"], sha.as_str());
    assert_eq!(events[1]["release"], second.as_str());
    assert_eq!(events[1]["previous"], first.as_str());
    assert_eq!(events[2]["release"], first.as_str());
    assert!(events[2]["previous"].is_null());
}

/// A host where the install fails after the connection worked (a full
/// disk, here a `bin` that is not a directory) used to be reported "could
/// not reach" with the BatchMode hint: the report says what failed.
#[test]
fn a_host_where_the_install_fails_is_not_called_unreachable() {
    let w = World::new(2, Options::default());
    let state = w.hosts.hosts[1].deploy().join(".shipit");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("bin"), "not a directory\n").unwrap();
    let run = w.shipit(&["deploy", "--json"]);
    run.code(3);
    assert!(
        !run.stderr.contains("could not reach") && !run.stderr.contains("BatchMode"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("could not start on {}", w.hosts.hosts[1].dest)),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("could not install the config"),
        "{}",
        run.stderr
    );
    let json = run.json();
    assert!(
        json["hosts"][1]["message"]
            .as_str()
            .unwrap()
            .contains("could not install the config"),
        "{json}"
    );
    assert_eq!(w.currents(), vec![None, None]);
}

/// `ssh://user@[::1]:port` passed validation (and `check`), but OpenSSH
/// refuses an IPv6 address in a URI: every rollout failed. The controller
/// now gives ssh the port with `-p`.
#[test]
fn a_host_written_as_an_ipv6_uri_deploys() {
    let mut w = World::new(1, Options::default());
    let port = w.hosts.hosts[0].port;
    let config = w.hosts.hosts[0].dir.join("sshd_config");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(&config, format!("{text}ListenAddress ::1\n")).unwrap();
    w.hosts.hosts[0].stop();
    w.hosts.hosts[0].start();
    let known = w.hosts.root.join("keys/known_hosts");
    let text = fs::read_to_string(&known).unwrap();
    let key = text.split_once(' ').unwrap().1.to_string();
    fs::write(&known, format!("{text}[::1]:{port} {key}")).unwrap();
    let dest = w.hosts.hosts[0].dest.clone();
    let v6 = dest.replace("127.0.0.1", "[::1]");
    let text = fs::read_to_string(w.config()).unwrap().replace(&dest, &v6);
    fs::write(w.config(), text).unwrap();
    let run = w.shipit(&["deploy", "--json"]);
    run.code(0);
    assert_eq!(run.json()["hosts"][0]["host"], v6.as_str());
    // And a destination OpenSSH would read as another port is refused
    // before any ssh.
    let text = fs::read_to_string(w.config())
        .unwrap()
        .replace(&v6, &format!("ssh://root@127.0.0.1:{port}:33"));
    fs::write(w.config(), text).unwrap();
    let run = w.shipit(&["deploy"]);
    run.code(2);
    assert!(
        run.stderr.contains("the port must be a number"),
        "{}",
        run.stderr
    );
}

/// A host the controller loses contact with during its switch (its ssh
/// cut, its sshd gone) used to be drained a second time for a switch back
/// that could only fail, and reported `revert-failed: the switch back
/// failed` although no switch back happened. It is now left alone, drained
/// once, reported `failed` with what it runs unknown.
#[test]
fn a_host_that_lost_contact_is_drained_once_and_not_called_revert_failed() {
    let mut w = World::new(
        3,
        Options {
            drain: Some("echo \"drain $SHIPIT_HOST\" >> ../drain.log"),
            undrain: Some("echo \"undrain $SHIPIT_HOST\" >> ../drain.log"),
            ..Options::default()
        },
    );
    let good = w.deploy_ok();
    fs::remove_file(w.path().join("drain.log")).unwrap();
    crate::crashes::pause_host2_reload(&w);
    w.commit("PAUSE", "\n");
    let mut child = w.spawn(&w.config(), &["deploy", "--json"], "deploy");
    let err = w.path().join("deploy.err");
    crate::teams::wait_for(&w.path().join("paused"), &mut child.0, &err);
    // host2 goes away: its sshd stops, and the controller's connection to
    // it dies. The ssh master to host2 is found first: stopping the host
    // ends its sessions, and the master may exit on its own.
    let mine = format!(" -p {} ", w.hosts.hosts[1].port);
    let to_host2: Vec<i32> = crate::crashes::job_of(&w, child.0.id() as i32)
        .into_iter()
        .filter(|pid| crate::crashes::cmdline(*pid).contains(&mine))
        .collect();
    assert!(!to_host2.is_empty(), "no ssh to host2 was found");
    w.hosts.hosts[1].stop();
    for pid in to_host2 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let code = crate::teams::wait_exit(&mut child.0);
    // host2's own activation may finish now.
    fs::write(w.path().join("go"), "").unwrap();
    let said = fs::read_to_string(&err).unwrap();
    assert_eq!(code, Some(9), "{said}");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(w.path().join("deploy.out")).unwrap()).unwrap();
    assert_eq!(
        crate::outcomes(&json),
        ["reverted", "failed", "untouched"],
        "{json}"
    );
    assert_eq!(json["hosts"][1]["live_known"], false, "{json}");
    let message = json["hosts"][1]["message"].as_str().unwrap();
    assert!(message.contains("unknown"), "{message}");
    let log = fs::read_to_string(w.path().join("drain.log")).unwrap();
    let h2 = &w.hosts.hosts[1].dest;
    let drains = log.lines().filter(|l| *l == format!("drain {h2}")).count();
    assert_eq!(drains, 1, "host2 was drained again for nothing:\n{log}");
    assert!(!log.lines().any(|l| *l == format!("undrain {h2}")), "{log}");
    assert_eq!(w.hosts.hosts[0].current(), Some(good.clone()));
    assert_eq!(w.hosts.hosts[2].current(), Some(good.clone()));
}
