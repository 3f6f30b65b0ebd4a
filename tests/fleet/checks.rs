//! `shipit check` with a fleet checks every host.

use std::fs;

use serde_json::Value;

use crate::{Options, World};

/// The checks `check --json` made on `host`, by name: `(ok, detail)`.
fn on(json: &Value, host: &str) -> Vec<(String, bool, String)> {
    json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["host"] == host)
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["ok"].as_bool().unwrap(),
                c["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn failed(checks: &[(String, bool, String)]) -> Vec<&str> {
    checks
        .iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(name, _, _)| name.as_str())
        .collect()
}

/// `check` with [fleet] checked the controller's own paths: it passed with
/// every host unreachable. Each host is now asked (read-only), and a host
/// that is unreachable, one whose deploy_to cannot be written and one that
/// lacks a shared file are each named.
#[test]
fn check_names_each_host_that_is_broken_and_how() {
    let mut w = World::new(3, Options::default());
    let text = fs::read_to_string(w.config()).unwrap();
    fs::write(
        w.config(),
        text.replacen("\n[source]", "\nshared = [\".env\"]\n[source]", 1),
    )
    .unwrap();
    // The controller itself would pass: its own deploy_to has the file.
    fs::create_dir_all(w.hosts.deploy_to.join("shared")).unwrap();
    fs::write(w.hosts.deploy_to.join("shared/.env"), "").unwrap();
    for h in &w.hosts.hosts[..2] {
        fs::write(h.deploy().join("shared/.env"), "SECRET=1\n").unwrap();
    }
    w.hosts.hosts[0].stop();
    w.hosts.hosts[1].stop();
    w.hosts.hosts[1].read_only = true;
    w.hosts.hosts[1].start();
    let dests: Vec<String> = w.hosts.hosts.iter().map(|h| h.dest.clone()).collect();

    let run = w.shipit(&["check", "--json"]);
    run.code(2);
    let json = run.json();
    assert_eq!(json["ok"], false);
    let h1 = on(&json, &dests[0]);
    assert_eq!(failed(&h1), ["host"], "{h1:?}");
    let h2 = on(&json, &dests[1]);
    assert_eq!(failed(&h2), ["deploy_to"], "{h2:?}");
    let h3 = on(&json, &dests[2]);
    assert_eq!(failed(&h3), ["shared"], "{h3:?}");
    assert!(
        h3.iter()
            .any(|(name, _, d)| name == "shared" && d.contains(".env is missing")),
        "{h3:?}"
    );
    // The reload hook's program was looked up there, and no agent is
    // installed yet (the first deploy installs it).
    assert!(
        h3.iter()
            .any(|(name, ok, d)| name == "hooks" && *ok && d.starts_with("sh ")),
        "{h3:?}"
    );
    assert!(
        h3.iter().any(|(name, ok, d)| name == "agent"
            && *ok
            && d.contains("the first deploy installs it")),
        "{h3:?}"
    );
    // Read-only: nothing was installed or written on any host.
    for h in &w.hosts.hosts {
        assert!(!h.deploy().join(".shipit").exists(), "{}", h.name());
    }
    // The text names the host on each line.
    let text = w.shipit(&["check"]);
    text.code(2);
    assert!(
        text.stdout
            .contains(&format!("✗ deploy_to  {}: ", dests[1])),
        "{}",
        text.stdout
    );

    // Mended, deployed: every check passes, and each host's agent says
    // which shipit and protocol it speaks.
    w.hosts.hosts[0].start();
    w.hosts.hosts[1].stop();
    w.hosts.hosts[1].read_only = false;
    w.hosts.hosts[1].start();
    fs::write(w.hosts.hosts[2].deploy().join("shared/.env"), "").unwrap();
    w.deploy_ok();
    let run = w.shipit(&["check", "--json"]);
    run.code(0);
    let json = run.json();
    for dest in &dests {
        let checks = on(&json, dest);
        assert!(
            checks
                .iter()
                .any(|(name, ok, d)| name == "agent" && *ok && d.contains("fleet protocol 3")),
            "{checks:?}"
        );
    }
}

/// `fleet.keep_special_files = true` hands each release to the host's
/// `tar`: a host without one would fail the deploy at receive. `check`
/// looks for it on each host then, and only then (the agent unpacks a
/// release itself otherwise).
#[test]
fn check_looks_for_tar_on_each_host_only_when_keep_special_files_needs_it() {
    let w = World::new(2, Options::default());
    let dests: Vec<String> = w.hosts.hosts.iter().map(|h| h.dest.clone()).collect();
    // host1's login shell finds only what the check asks for, and no tar.
    let host = &w.hosts.hosts[0];
    let bin = host.dir.join("path-without-tar");
    fs::create_dir_all(&bin).unwrap();
    for tool in ["sh", "uname", "dirname", "id", "grep", "tail"] {
        let real = crate::support::hosts::which(tool).unwrap();
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    fs::write(
        host.home().join(".bashrc"),
        format!("export PATH=\"{}\"\n", bin.display()),
    )
    .unwrap();
    let tar_checks = |json: &Value, dest: &str| -> Vec<(bool, String)> {
        on(json, dest)
            .into_iter()
            .filter(|(name, _, _)| name == "tar")
            .map(|(_, ok, detail)| (ok, detail))
            .collect()
    };

    // Not needed: not looked for.
    let run = w.shipit(&["check", "--json"]);
    let json = run.json();
    for dest in &dests {
        assert_eq!(tar_checks(&json, dest), [], "{}", run.stdout);
    }

    let text = fs::read_to_string(w.config())
        .unwrap()
        .replace("[fleet]\n", "[fleet]\nkeep_special_files = true\n");
    fs::write(w.config(), text).unwrap();
    let run = w.shipit(&["check", "--json"]);
    run.code(2);
    let json = run.json();
    let missing = tar_checks(&json, &dests[0]);
    assert_eq!(missing.len(), 1, "{}", run.stdout);
    assert!(!missing[0].0, "{missing:?}");
    assert!(missing[0].1.contains("tar is not on PATH"), "{missing:?}");
    assert_eq!(
        failed(&on(&json, &dests[0])),
        ["tar"],
        "only tar is missing there: {}",
        run.stdout
    );
    assert_eq!(
        tar_checks(&json, &dests[1]),
        [(
            true,
            "tar is on PATH (fleet.keep_special_files = true unpacks releases with it)".to_string()
        )]
    );
    let fix = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["host"] == dests[0].as_str() && c["name"] == "tar")
        .unwrap()["fix"]
        .clone();
    assert_eq!(
        fix,
        "install tar there, or set fleet.keep_special_files = false"
    );
}
