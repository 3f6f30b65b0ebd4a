//! The notify hook and the hook environment: a real HTTP receiver on
//! 127.0.0.1 gets exactly one document per outcome, whose outcome is the
//! history's; a receiver that is down or too slow changes nothing but one
//! warning; `env_file`'s secrets reach hooks and the app, and nothing
//! shipit writes.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::sandbox::{Run, Sandbox, wait_bounded, wait_until};

pub use crate::support::receiver::Receiver;

/// The one document the receiver got, checked against the history's
/// newest event: the same object.
#[track_caller]
fn one_document_matching_history(sb: &Sandbox, receiver: &Receiver) -> Value {
    let docs = receiver.documents();
    assert_eq!(docs.len(), 1, "{docs:?}");
    let history = sb.history_json();
    assert_eq!(docs[0], history[0], "the payload is the history's event");
    docs[0].clone()
}

fn warnings(run: &Run) -> usize {
    run.stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .count()
}

#[test]
fn a_successful_deploy_and_a_rollback_are_notified_once_each() {
    let sb = Sandbox::new();
    let receiver = Receiver::start(false);
    let env_out = sb.path().join("notify-env");
    sb.write_config(&format!(
        "[hooks]\n{}",
        Receiver::hook(receiver.port).replace(
            "notify = \"",
            &format!(
                "notify = \"echo $SHIPIT_EVENT $SHIPIT_OUTCOME $SHIPIT_RELEASE \
                 $SHIPIT_PREVIOUS_RELEASE > '{}'; ",
                env_out.display()
            )
        )
    ));
    let first = sb.deploy();
    let doc = one_document_matching_history(&sb, &receiver);
    assert_eq!(doc["event"], "deploy");
    assert_eq!(doc["outcome"], "ok");
    assert_eq!(doc["release"], first.as_str());
    assert_eq!(
        fs::read_to_string(&env_out).unwrap().trim(),
        format!("deploy ok {first}")
    );

    sb.commit("index.html", "v2\n");
    let second = sb.deploy();
    sb.run(&["rollback"]).ok();
    let docs = receiver.documents();
    assert_eq!(docs.len(), 3, "{docs:?}");
    assert_eq!(docs[2], sb.history_json()[0]);
    assert_eq!(docs[2]["event"], "rollback");
    assert_eq!(docs[2]["outcome"], "ok");
    assert_eq!(
        fs::read_to_string(&env_out).unwrap().trim(),
        format!("rollback ok {first} {second}")
    );
}

#[test]
fn a_failure_before_the_swap_is_notified_with_its_causes() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    let receiver = Receiver::start(false);
    sb.write_config(&format!(
        "[hooks]\nbuild = [\"echo broken >&2; exit 7\"]\n{}",
        Receiver::hook(receiver.port)
    ));
    sb.run(&["deploy"]).code(3);
    let doc = one_document_matching_history(&sb, &receiver);
    assert_eq!(doc["outcome"], "failed-before-swap");
    assert_eq!(doc["live"], first.as_str());
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains("exited with status 7"),
        "{doc}"
    );
}

#[test]
fn a_release_rolled_back_after_its_swap_is_notified() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    let receiver = Receiver::start(false);
    sb.commit("index.html", "v2\n");
    // The new release's reload fails; the old one's passes.
    sb.write_config(&format!(
        "[hooks]\nreload = \"[ \\\"$SHIPIT_RELEASE\\\" = {first} ]\"\n{}",
        Receiver::hook(receiver.port)
    ));
    sb.run(&["deploy"]).code(4);
    let doc = one_document_matching_history(&sb, &receiver);
    assert_eq!(doc["outcome"], "rolled-back");
    assert_eq!(doc["live"], first.as_str());
    assert_eq!(sb.current().unwrap(), first);
}

#[test]
fn an_interrupted_deploy_is_notified() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    let receiver = Receiver::start(false);
    let pidfile = sb.path().join("hook.pid");
    sb.write_config(&format!(
        "[hooks]\nbuild = [\"sleep 60 & echo $! > '{}'; wait\"]\n{}",
        pidfile.display(),
        Receiver::hook(receiver.port)
    ));
    let mut deploy = sb
        .command(&["deploy"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the build hook to start", Duration::from_secs(20), || {
        fs::read_to_string(&pidfile).is_ok_and(|t| t.ends_with('\n'))
    });
    kill(Pid::from_raw(deploy.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_bounded(&mut deploy, Duration::from_secs(60));
    assert_eq!(status.code(), Some(130));
    let doc = one_document_matching_history(&sb, &receiver);
    assert_eq!(doc["outcome"], "interrupted");
    assert_eq!(sb.current().unwrap(), first);
}

/// With the receiver down, or answering never, everything is as it would
/// be without notify, and one warning says the hook failed.
#[test]
fn a_notify_that_fails_or_hangs_changes_nothing_but_a_warning() {
    for (case, stall) in [("not listening", false), ("sleeping", true)] {
        let sb = Sandbox::new();
        let receiver = Receiver::start(true);
        let port = if stall {
            receiver.port
        } else {
            Receiver::closed_port()
        };
        let hook = Receiver::hook(port);
        let notify = format!("{hook}notify_timeout = \"1s\"\n");

        // A good deploy: exit 0, live, `ok`.
        sb.write_config(&format!("[hooks]\n{notify}"));
        let run = sb.run(&["deploy"]);
        run.ok();
        assert_eq!(warnings(&run), 1, "{case}: {}", run.stderr);
        assert!(run.stderr.contains("notify hook"), "{case}: {}", run.stderr);
        let live = sb.current().unwrap();
        let history = sb.history_json();
        assert_eq!(history.len(), 1, "{case}");
        assert_eq!(history[0]["outcome"], "ok", "{case}");
        assert_eq!(
            sb.releases_json()["releases"][0]["status"],
            "live",
            "{case}"
        );

        // A failed one: exit 3, as without notify.
        sb.write_config(&format!("[hooks]\nbuild = [\"false\"]\n{notify}"));
        let run = sb.run(&["deploy"]);
        run.code(3);
        assert_eq!(warnings(&run), 1, "{case}: {}", run.stderr);
        assert_eq!(sb.current().unwrap(), live, "{case}");
        assert_eq!(sb.history_json()[0]["outcome"], "failed-before-swap");
        assert!(receiver.documents().is_empty());
    }
}

const SECRET: &str = "s3cr3t-Value-42";

/// A secret from `env_file` reaches every hook and the app, and none of
/// what shipit writes: output, logs, history, metadata, `--json`, the
/// notify payload.
#[test]
fn a_secret_reaches_hooks_and_the_app_and_nothing_shipit_writes() {
    let sb = Sandbox::new();
    let receiver = Receiver::start(false);
    let shared = sb.deploy_to().join("shared");
    fs::create_dir_all(&shared).unwrap();
    fs::write(
        shared.join(".env"),
        format!("# secrets\nAPI_TOKEN={SECRET}\nexport SHORT=abc\n"),
    )
    .unwrap();
    let seen = sb.path().join("seen");
    let app = sb.path().join("app-env");
    let root = sb.path().display();
    // The build prints the secret in two writes; the reload hook "starts
    // the app", which keeps the environment it was given.
    sb.write_config(&format!(
        "env_file = \"shared/.env\"\n[env]\nPLAIN = \"visible\"\n\n[hooks]\n\
         build = [\"printf 'token: %s' \\\"${{API_TOKEN%%-*}}\\\"; printf -- '-%s\\\\n' \\\"${{API_TOKEN#*-}}\\\"; \
         echo \\\"build $API_TOKEN $PLAIN $SHORT\\\" >> '{root}/seen'\"]\n\
         reload = \"echo \\\"reload $API_TOKEN\\\" >> '{root}/seen'; echo \\\"$API_TOKEN\\\" > '{root}/app-env'; \
         echo \\\"app got $API_TOKEN\\\"\"\n{}",
        Receiver::hook(receiver.port).replace(
            "notify = \"",
            &format!("notify = \"echo \\\"notify $API_TOKEN\\\" >> '{root}/seen'; ")
        )
    ));
    let mut outputs = Vec::new();
    let deploy = sb.run(&["deploy"]);
    deploy.ok();
    let first = sb.current().unwrap();
    assert!(deploy.stderr.contains("token: ***"), "{}", deploy.stderr);
    outputs.push(deploy);

    let seen_text = fs::read_to_string(&seen).unwrap();
    for hook in ["build", "reload", "notify"] {
        assert!(
            seen_text.contains(&format!("{hook} {SECRET}")),
            "{hook} did not get the secret: {seen_text}"
        );
    }
    assert!(seen_text.contains(&format!("build {SECRET} visible abc")));
    assert_eq!(fs::read_to_string(&app).unwrap().trim(), SECRET);

    // A changed value reaches the app with the next deploy.
    let changed = "n3w-s3cr3t-Value";
    fs::write(shared.join(".env"), format!("API_TOKEN={changed}\n")).unwrap();
    sb.commit("index.html", "v2\n");
    sb.run(&["deploy"]).ok();
    let second = sb.current().unwrap();
    assert_ne!(second, first);
    assert_eq!(fs::read_to_string(&app).unwrap().trim(), changed);

    // The next release fails its reload, quoting the secret in the hook's
    // command: it lands in an error, the history, the release's metadata.
    sb.write_config_replacing(
        "reload = \"",
        &format!(
            "reload = \"[ \\\"$SHIPIT_RELEASE\\\" = {second} ] || {{ echo {changed}; exit 9; }}; "
        ),
    );
    sb.commit("index.html", "v3\n");
    let failing = sb.run(&["deploy", "--json"]);
    failing.code(4).says("exited with status 9");
    outputs.push(failing);
    assert_eq!(sb.current().unwrap(), second);
    assert_eq!(sb.history_json()[0]["outcome"], "rolled-back");
    for args in [
        &["releases", "--json"][..],
        &["status", "--json"],
        &["history", "--json"],
        &["history"],
        &["check", "--json"],
        &["check"],
        &["releases"],
        &["status"],
    ] {
        outputs.push(sb.run(args));
    }

    let mut places: Vec<(String, String)> = Vec::new();
    for run in &outputs {
        places.push((format!("stdout of {:?}", run.args), run.stdout.clone()));
        places.push((format!("stderr of {:?}", run.args), run.stderr.clone()));
    }
    for doc in receiver.documents() {
        places.push(("the notify payload".into(), doc.to_string()));
    }
    for entry in walkdir(&sb.deploy_to()) {
        if entry.starts_with(&shared) || !entry.is_file() {
            continue;
        }
        places.push((
            entry.display().to_string(),
            String::from_utf8_lossy(&fs::read(&entry).unwrap()).into_owned(),
        ));
    }
    assert_eq!(receiver.documents().len(), 3);
    for secret in [SECRET, changed] {
        for (place, text) in &places {
            assert!(!text.contains(secret), "{secret} in {place}:\n{text}");
        }
    }
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(walkdir(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_missing_or_malformed_env_file_stops_the_deploy_before_anything_changes() {
    let sb = Sandbox::new();
    sb.deploy();
    sb.write_config("env_file = \"shared/.env\"\n");
    let before = sb.fingerprint();
    sb.run(&["deploy"])
        .code(3)
        .says("env_file")
        .says("shared/.env is missing");
    assert_eq!(sb.fingerprint(), before, "nothing changed");
    let check = sb.run(&["check", "--json"]).code(2).json();
    let entry = check["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "env_file")
        .cloned()
        .unwrap_or_else(|| panic!("check names env_file: {check}"));
    assert_eq!(entry["ok"], false, "{entry}");

    fs::write(
        sb.deploy_to().join("shared/.env"),
        "GOOD=1\nthis is not a variable\n",
    )
    .unwrap();
    let before = sb.fingerprint();
    sb.run(&["deploy"]).code(3).says("shared/.env line 2");
    assert_eq!(sb.fingerprint(), before, "nothing changed");
}

/// After an interrupt the notify hook gets a short bound of its own (not
/// `notify_timeout`), and a second signal stops it at once.
#[test]
fn after_an_interrupt_notify_is_bounded_and_a_second_signal_cuts_it() {
    for second_signal in [false, true] {
        let sb = Sandbox::new();
        let first = sb.deploy();
        let pidfile = sb.path().join("hook.pid");
        let notified = sb.path().join("notified");
        sb.write_config(&format!(
            "[hooks]\nbuild = [\"sleep 60 & echo $! > '{}'; wait\"]\n\
             notify = \"touch '{}'; sleep 60\"\nnotify_timeout = \"10m\"\n",
            pidfile.display(),
            notified.display()
        ));
        let err = sb.path().join("stderr");
        let mut deploy = sb
            .command(&["deploy"])
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(deploy.id() as i32);
        wait_until("the build hook to start", Duration::from_secs(20), || {
            fs::read_to_string(&pidfile).is_ok_and(|t| t.ends_with('\n'))
        });
        kill(pid, Signal::SIGTERM).unwrap();
        wait_until("the notify hook to start", Duration::from_secs(20), || {
            notified.exists()
        });
        if second_signal {
            kill(pid, Signal::SIGTERM).unwrap();
        }
        let status = wait_bounded(&mut deploy, Duration::from_secs(60));
        assert_eq!(status.code(), Some(130), "the outcome stands");
        let said = fs::read_to_string(&err).unwrap();
        let warnings: Vec<&str> = said.lines().filter(|l| l.starts_with("warning:")).collect();
        assert_eq!(warnings.len(), 1, "{said}");
        let expected = if second_signal {
            "was interrupted"
        } else {
            "timed out after 3s"
        };
        assert!(warnings[0].contains(expected), "{said}");
        assert_eq!(sb.current().unwrap(), first);
        assert_eq!(sb.history_json()[0]["outcome"], "interrupted");
    }
}
