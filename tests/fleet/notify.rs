//! The notify hook and env_file with a fleet: notify runs once, on the
//! controller, with every host's outcome; each host reads its own
//! env_file, whose secret reaches its hooks and app and none of what
//! shipit writes, on the host or on the controller.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Options, Run, World, outcomes};

use crate::support::receiver::Receiver;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => out.extend(files_under(&path)),
            Ok(m) if m.is_file() => out.push(path),
            _ => {}
        }
    }
    out
}

#[test]
fn a_rollout_notifies_once_with_every_host_and_keeps_each_hosts_secret() {
    let w = World::new(3, Options::default());
    let receiver = Receiver::start(false);
    let secrets: Vec<String> = (1..=3).map(|n| format!("fleet-s3cret-{n}-xyz")).collect();
    for (h, secret) in w.hosts.hosts.iter().zip(&secrets) {
        let shared = h.deploy().join("shared");
        fs::create_dir_all(&shared).unwrap();
        fs::write(shared.join(".env"), format!("API_TOKEN={secret}\n")).unwrap();
    }
    let config = fs::read_to_string(w.config()).unwrap();
    let config = config
        .replacen(
            "keep_releases = 10\n",
            "keep_releases = 10\nenv_file = \"shared/.env\"\n",
            1,
        )
        .replacen(
            "reload = \"",
            "reload = \"echo \\\"token $API_TOKEN\\\"; echo \\\"$API_TOKEN\\\" > \\\"$SHIPIT_DEPLOY_TO/app-env\\\"; ",
            1,
        )
        .replacen(
            "reload_timeout = \"60s\"\n",
            &format!("reload_timeout = \"60s\"\n{}", Receiver::hook(receiver.port)),
            1,
        );
    fs::write(w.config(), config).unwrap();

    let mut runs: Vec<Run> = Vec::new();
    let first = w.shipit(&["deploy", "--json"]);
    first.code(0);
    runs.push(first);
    let docs = receiver.documents();
    assert_eq!(docs.len(), 1, "one document per rollout: {docs:?}");
    assert_eq!(docs[0]["outcome"], "ok");
    assert_eq!(
        docs[0]["hosts"].as_array().map(Vec::len),
        Some(3),
        "{}",
        docs[0]
    );
    let history = w.shipit(&["history", "--json"]).json();
    assert_eq!(
        docs[0], history[0],
        "the payload is the controller's history event"
    );
    for (h, secret) in w.hosts.hosts.iter().zip(&secrets) {
        let got = fs::read_to_string(h.deploy().join("app-env")).unwrap();
        assert_eq!(got.trim(), secret, "{} got its own env_file", h.name());
    }

    // A rollout that fails on host2 and is reverted: one more document.
    w.commit("BROKEN_ON", "host2\n");
    let failed = w.shipit(&["deploy", "--json"]);
    failed.code(8);
    runs.push(failed);
    let docs = receiver.documents();
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert_eq!(docs[1]["outcome"], "fleet-reverted");
    let doc: Value = docs[1].clone();
    assert_eq!(outcomes(&doc), ["reverted", "failed", "untouched"], "{doc}");
    assert_eq!(doc, w.shipit(&["history", "--json"]).json()[0]);

    for args in [
        &["releases", "--json"][..],
        &["status", "--json"],
        &["history", "--json"],
        &["check", "--json"],
    ] {
        runs.push(w.shipit(args));
    }
    let mut places: Vec<(String, String)> = Vec::new();
    for run in &runs {
        places.push((format!("stdout of {:?}", run.args), run.stdout.clone()));
        places.push((format!("stderr of {:?}", run.args), run.stderr.clone()));
    }
    for doc in receiver.documents() {
        places.push(("the notify payload".into(), doc.to_string()));
    }
    let mut files = files_under(&w.path().join("controller"));
    for h in &w.hosts.hosts {
        files.extend(
            files_under(&h.deploy())
                .into_iter()
                .filter(|p| !p.starts_with(h.deploy().join("shared")) && !p.ends_with("app-env")),
        );
    }
    for file in files {
        let text = String::from_utf8_lossy(&fs::read(&file).unwrap_or_default()).into_owned();
        places.push((file.display().to_string(), text));
    }
    assert!(
        places.iter().any(|(_, t)| t.contains("token ***")),
        "the hosts' reload output is shown, redacted"
    );
    for secret in &secrets {
        for (place, text) in &places {
            assert!(!text.contains(secret.as_str()), "{secret} in {place}");
        }
    }
}

/// A host without its env_file: `check` names it, and a rollout stops
/// before any host is switched.
#[test]
fn a_host_without_its_env_file_is_named_by_check_and_refuses_the_release() {
    let w = World::new(2, Options::default());
    let config = fs::read_to_string(w.config()).unwrap();
    fs::write(
        w.config(),
        config.replacen(
            "keep_releases = 10\n",
            "keep_releases = 10\nenv_file = \"shared/.env\"\n",
            1,
        ),
    )
    .unwrap();
    let hosts = &w.hosts.hosts;
    fs::create_dir_all(hosts[0].deploy().join("shared")).unwrap();
    fs::write(
        hosts[0].deploy().join("shared/.env"),
        "API_TOKEN=abcdefgh\n",
    )
    .unwrap();

    let run = w.shipit(&["check", "--json"]);
    run.code(2);
    let json = run.json();
    let env_checks: Vec<(String, bool)> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "env_file")
        .map(|c| {
            (
                c["host"].as_str().unwrap().to_string(),
                c["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        env_checks,
        [
            (hosts[0].dest.clone(), true),
            (hosts[1].dest.clone(), false)
        ],
        "{json}"
    );

    let run = w.shipit(&["deploy"]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("is missing"), "{}", run.stderr);
    assert_eq!(w.currents(), [None, None], "no host was switched");
}

/// A host's env_file is read again for each step of the rollout its lock
/// holder serves: a value rotated after the reach (here by the drain hook,
/// between the host's receive and its switch) is the one its reload hook
/// gets, not the one read when the lock was taken.
#[test]
fn a_rotated_env_file_reaches_the_switch() {
    let w = World::new(2, Options::default());
    let mut rotate = String::new();
    for (n, h) in w.hosts.hosts.iter().enumerate() {
        let shared = h.deploy().join("shared");
        fs::create_dir_all(&shared).unwrap();
        fs::write(shared.join(".env"), format!("API_TOKEN=first-s3cret-{n}\n")).unwrap();
        rotate.push_str(&format!(
            "printf 'API_TOKEN=rotated-s3cret-{n}\\n' > {}; ",
            shared.join(".env").display()
        ));
    }
    w.write_config(&Options {
        drain: Some(&rotate),
        ..Options::default()
    });
    let config = fs::read_to_string(w.config())
        .unwrap()
        .replacen(
            "keep_releases = 10\n",
            "keep_releases = 10\nenv_file = \"shared/.env\"\n",
            1,
        )
        .replacen(
            "reload = \"",
            "reload = \"echo \\\"$API_TOKEN\\\" > \\\"$SHIPIT_DEPLOY_TO/app-env\\\"; ",
            1,
        );
    fs::write(w.config(), config).unwrap();
    w.deploy_ok();
    for (n, h) in w.hosts.hosts.iter().enumerate() {
        let got = fs::read_to_string(h.deploy().join("app-env")).unwrap();
        assert_eq!(got.trim(), format!("rotated-s3cret-{n}"), "{}", h.name());
    }
}
