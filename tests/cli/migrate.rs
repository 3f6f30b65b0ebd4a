//! `hooks.migrate`: once per deploy, in the published release, before any
//! user can reach it; never on a rollback, which warns when it crosses a
//! release whose migrations ran.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::sandbox::{Sandbox, alive, wait_bounded, wait_until};

/// A migrate hook that appends the release and what `current` resolved to
/// at that moment to `migrations.log` in the sandbox.
fn with_migrate(sb: &Sandbox, extra: &str) {
    let log = sb.path().join("migrations.log");
    sb.write_config(&format!(
        "[hooks]\nmigrate = \"echo \\\"$SHIPIT_RELEASE $(readlink \\\"$SHIPIT_DEPLOY_TO/current\\\") \
         $(pwd -P)\\\" >> '{}'\"\n{extra}",
        log.display()
    ));
}

fn migrations(sb: &Sandbox) -> Vec<String> {
    fs::read_to_string(sb.path().join("migrations.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn migrate_runs_once_before_the_swap_and_a_rollback_across_it_warns() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    with_migrate(&sb, "");
    sb.commit("index.html", "v2\n");
    let second = sb.deploy();
    let release_dir = fs::canonicalize(sb.deploy_to().join("releases").join(&second)).unwrap();
    assert_eq!(
        migrations(&sb),
        [format!(
            "{second} releases/{first} {}",
            release_dir.display()
        )],
        "one line, in the new release, while the previous one was live"
    );
    let last = &sb.history_json()[0];
    assert_eq!(last["migrate"], "ran", "{last}");
    assert!(last["migrate_time"].is_string(), "{last}");

    // --skip-migrate runs none, and says so in the history.
    sb.commit("index.html", "v3\n");
    let run = sb.run(&["deploy", "--skip-migrate"]);
    run.ok();
    let third = sb.current().unwrap();
    assert_eq!(migrations(&sb).len(), 1);
    assert_eq!(sb.history_json()[0]["migrate"], "skipped");

    // A rollback runs none; back past `second` it warns, naming it.
    let run = sb.run(&["rollback", "--to", &second]);
    run.ok();
    assert!(!run.stderr.contains("database"), "{}", run.stderr);
    let run = sb.run(&["rollback", "--to", &first]);
    run.ok();
    assert!(
        run.stderr.contains("database may be newer") && run.stderr.contains(&second),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(&format!("ran for {third}")));
    assert_eq!(migrations(&sb).len(), 1, "a rollback never migrates");
}

#[test]
fn a_failing_migrate_switches_nothing_and_exits_3() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    sb.write_config("[hooks]\nmigrate = [\"true\", \"echo broken; exit 7\"]\n");
    sb.commit("index.html", "v2\n");
    let run = sb.run(&["deploy"]);
    run.code(3);
    assert!(
        run.stderr.contains("exited with status 7"),
        "{}",
        run.stderr
    );
    assert_eq!(sb.current().unwrap(), first);
    let last = &sb.history_json()[0];
    assert_eq!(last["outcome"], "failed-before-swap", "{last}");
    assert_eq!(last["migrate"], "failed", "{last}");
    let json = sb.releases_json();
    let failed = json["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] != first.as_str())
        .expect("the release stays, marked failed");
    assert_eq!(failed["status"], "failed", "{json}");
    // Its output is in the release's log.
    let id = failed["id"].as_str().unwrap();
    let log = fs::read_to_string(sb.deploy_to().join(format!(".shipit/logs/{id}.log"))).unwrap();
    assert!(log.contains("migrate | broken"), "{log}");
}

#[test]
fn a_migrate_timeout_fails_before_the_swap() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    sb.write_config("[hooks]\nmigrate = \"sleep 60\"\nmigrate_timeout = \"1s\"\n");
    let run = sb.run(&["deploy"]);
    run.code(3);
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    assert!(
        run.stderr.contains("hooks.migrate_timeout"),
        "{}",
        run.stderr
    );
    assert_eq!(sb.current().unwrap(), first);
}

#[test]
fn sigterm_stops_the_migrate_hook_and_what_it_started() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    let pidfile = sb.path().join("migration.pid");
    sb.write_config(&format!(
        "[hooks]\nmigrate = \"sleep 300 & echo $! > '{}'; wait\"\n",
        pidfile.display()
    ));
    let mut deploy = sb
        .command(&["deploy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the migration to start", Duration::from_secs(30), || {
        fs::read_to_string(&pidfile).is_ok_and(|t| t.ends_with('\n'))
    });
    let pid: u32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill(Pid::from_raw(deploy.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_bounded(&mut deploy, Duration::from_secs(60));
    assert_eq!(status.code(), Some(130));
    assert_eq!(sb.current().unwrap(), first);
    wait_until("the migration to stop", Duration::from_secs(30), || {
        !alive(pid)
    });
    assert_eq!(sb.history_json()[0]["migrate"], "failed");
}

/// The host that runs a fleet's migrations must be one of its hosts: a
/// typo is refused before anything is contacted or written.
#[test]
fn a_fleet_primary_that_is_not_a_host_is_refused() {
    let sb = Sandbox::new();
    sb.write_raw_config(&format!(
        "deploy_to = \"{}\"\n[source]\ngit = \"app\"\n\n[hooks]\nmigrate = \"true\"\n\n\
         [fleet]\nhosts = [\"127.0.0.1\"]\nprimary = \"127.0.0.2\"\n",
        sb.deploy_to().display()
    ));
    let run = sb.run(&["deploy"]);
    run.code(2);
    assert!(
        run.stderr.contains("fleet.primary = \"127.0.0.2\"")
            && run.stderr.contains("not one of fleet.hosts"),
        "{}",
        run.stderr
    );
    assert!(!sb.deploy_to().join("current").exists());
}

/// An automatic rollback after the release's migrations ran goes back to a
/// release that may not expect the migrated database: it says so.
#[test]
fn an_automatic_rollback_after_migrate_warns() {
    let sb = Sandbox::new();
    sb.write_config("[hooks]\nreload = \"! test -f bad\"\n");
    let first = sb.deploy();
    sb.write_config("[hooks]\nreload = \"! test -f bad\"\nmigrate = \"true\"\n");
    sb.commit("bad", "the reload fails in this release\n");
    let run = sb.run(&["deploy"]);
    run.code(4);
    assert_eq!(sb.current().unwrap(), first);
    let last = &sb.history_json()[0];
    assert_eq!(last["migrate"], "ran", "{last}");
    let release = last["release"].as_str().unwrap();
    assert!(
        run.stderr.contains("database may be newer") && run.stderr.contains(release),
        "{}",
        run.stderr
    );
}

/// `check` looks for the migrate hook's program as for every hook.
#[test]
fn check_finds_a_migrate_program_missing_from_path() {
    let sb = Sandbox::new();
    sb.write_config("[hooks]\nmigrate = \"no-such-migrator-xyz up\"\n");
    let run = sb.run(&["check"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(
        text.contains("no-such-migrator-xyz") && text.contains("hooks.migrate"),
        "{text}"
    );
}
