//! `hooks.migrate` with a fleet: exactly once per rollout, on the primary
//! host, after every host received the release and before any host is
//! switched; a failure switches no host; `--skip-migrate` is recorded; a
//! rollback never runs it; the controller's death stops it.

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::teams::wait_exit;
use crate::{Options, World, outcomes};

/// A migrate hook that appends one line to `migrations.log` in the world's
/// root (outside every host's namespace, so all of them write the same
/// file): the host it ran on (by its `shared/name`, then `SHIPIT_HOST`),
/// the release, and what `current` of every host resolved to at that
/// moment (`-`: nothing). It refuses a release that holds FAIL_MIGRATE,
/// and in one that holds HANG_MIGRATE writes its pid to `migrate.pid`
/// and waits (bounded) for `go` in the world's root.
fn with_migrate(w: &World, primary: Option<usize>) {
    let root = w.path().display().to_string();
    let currents: Vec<String> = w
        .hosts
        .hosts
        .iter()
        .map(|h| format!("$(readlink {}/current || echo -)", h.deploy().display()))
        .collect();
    let hook = format!(
        "echo \"migrating $SHIPIT_RELEASE\"; \
         if [ -f FAIL_MIGRATE ]; then echo 'the migration broke' >&2; exit 1; fi; \
         if [ -f HANG_MIGRATE ]; then echo $$ > {root}/migrate.pid; \
         i=0; while [ ! -e {root}/go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; fi; \
         echo \"$(cat \"$SHIPIT_DEPLOY_TO/shared/name\") $SHIPIT_HOST $SHIPIT_RELEASE {}\" \
         >> {root}/migrations.log",
        currents.join(" ")
    );
    let mut text = fs::read_to_string(w.config()).unwrap().replacen(
        "reload_timeout = \"60s\"\n",
        &format!("reload_timeout = \"60s\"\nmigrate = {hook:?}\n"),
        1,
    );
    if let Some(i) = primary {
        text.push_str(&format!("primary = {:?}\n", w.hosts.hosts[i].dest));
    }
    fs::write(w.config(), text).unwrap();
}

fn migrations(w: &World) -> Vec<String> {
    fs::read_to_string(w.path().join("migrations.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Did `host` say `text` (a line of its output shown by the controller)?
fn said(stderr: &str, host: &str, text: &str) -> bool {
    stderr
        .lines()
        .any(|l| l.starts_with(&format!("{host} |")) && l.contains(text))
}

/// The deploy events a host recorded in its own history, newest last.
fn host_deploys(w: &World, i: usize) -> Vec<serde_json::Value> {
    fs::read_to_string(w.hosts.hosts[i].deploy().join(".shipit/history.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "deploy")
        .collect()
}

#[test]
fn migrate_runs_once_per_rollout_on_the_primary_before_any_host_switches() {
    let w = World::new(3, Options::default());
    with_migrate(&w, Some(1));
    let primary = &w.hosts.hosts[1];
    let first = w.deploy_ok();
    assert_eq!(
        migrations(&w),
        [format!("host2 {} {first} - - -", primary.dest)],
        "once, on the primary, before any host had anything live"
    );

    w.commit("VERSION", "2\n");
    let run = w.shipit(&["deploy", "--json"]);
    run.code(0);
    let second = run.json()["release"].as_str().unwrap().to_string();
    let was = format!("releases/{first}");
    assert_eq!(
        migrations(&w)[1..],
        [format!("host2 {} {second} {was} {was} {was}", primary.dest)],
        "once more, while every host still ran the previous release"
    );
    // Its output is streamed, prefixed with the host, and kept in the
    // release's log there.
    assert!(
        said(
            &run.stderr,
            &primary.dest,
            &format!("migrate | migrating {second}")
        ),
        "{}",
        run.stderr
    );
    let log =
        fs::read_to_string(primary.deploy().join(format!(".shipit/logs/{second}.log"))).unwrap();
    assert!(log.contains(&format!("migrating {second}")), "{log}");
    let history = w.shipit(&["history", "--json"]).json();
    assert_eq!(history[0]["migrate"], "ran", "{}", history[0]);
    assert!(history[0]["migrate_time"].is_string(), "{}", history[0]);
    for i in 0..3 {
        assert_eq!(host_deploys(&w, i).last().unwrap()["migrate"], "ran");
    }

    // --skip-migrate: no migration, and the history says so.
    w.commit("VERSION", "3\n");
    let run = w.shipit(&["deploy", "--skip-migrate", "--json"]);
    run.code(0);
    let third = run.json()["release"].as_str().unwrap().to_string();
    assert_eq!(migrations(&w).len(), 2, "{:?}", migrations(&w));
    assert_eq!(w.currents(), vec![Some(third.clone()); 3]);
    let history = w.shipit(&["history", "--json"]).json();
    assert_eq!(history[0]["migrate"], "skipped", "{}", history[0]);
    for i in 0..3 {
        assert_eq!(host_deploys(&w, i).last().unwrap()["migrate"], "skipped");
    }

    // A rollback never runs it; past a release whose migrations ran, each
    // host warns that the database may be newer.
    let run = w.shipit(&["rollback", "--to", &first]);
    run.code(0);
    assert_eq!(w.currents(), vec![Some(first.clone()); 3]);
    assert_eq!(migrations(&w).len(), 2, "{:?}", migrations(&w));
    assert!(
        run.stderr.contains("database may be newer") && run.stderr.contains(&second),
        "{}",
        run.stderr
    );
}

#[test]
fn a_failing_migrate_switches_no_host_and_exits_3() {
    let w = World::new(3, Options::default());
    with_migrate(&w, None);
    let good = w.deploy_ok();
    w.commit("FAIL_MIGRATE", "\n");
    let run = w.shipit(&["deploy", "--json"]);
    run.code(3);
    let json = run.json();
    let bad = json["release"].as_str().unwrap().to_string();
    assert_eq!(w.currents(), vec![Some(good.clone()); 3]);
    assert_eq!(w.serving(), vec![Some(good.clone()); 3]);
    assert_eq!(
        outcomes(&json),
        ["failed", "discarded", "discarded"],
        "{json}"
    );
    assert_eq!(migrations(&w).len(), 1, "only the first rollout's");
    // The primary (the first host) keeps it, failed with the cause; the
    // others removed it.
    let hosts = &w.hosts.hosts;
    assert_eq!(hosts[0].status_of(&bad).as_deref(), Some("failed"));
    assert!(!hosts[1].releases().contains(&bad));
    assert!(!hosts[2].releases().contains(&bad));
    assert!(
        run.stderr.contains("the migrate hook failed on")
            && said(&run.stderr, &hosts[0].dest, "migrate | the migration broke"),
        "{}",
        run.stderr
    );
    let history = w.shipit(&["history", "--json"]).json();
    assert_eq!(history[0]["migrate"], "failed", "{}", history[0]);
    assert_eq!(
        history[0]["outcome"], "failed-before-swap",
        "{}",
        history[0]
    );
}

/// The pid of the hanging migration, once it runs.
fn migration_started(w: &World, child: &mut std::process::Child) -> i32 {
    let pid_file = w.path().join("migrate.pid");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the migration never started:\n{}",
            fs::read_to_string(w.path().join("deploy.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Ctrl-C on the controller while the migration runs stops it, as on a
/// single host: the hook's process is gone, the release is marked failed
/// on the primary, no host was switched, and shipit exits 130.
#[test]
fn an_interrupt_during_the_migration_stops_it_and_switches_nothing() {
    let w = World::new(2, Options::default());
    with_migrate(&w, None);
    let good = w.deploy_ok();
    w.commit("HANG_MIGRATE", "\n");
    let mut child = w.spawn(&w.config(), &["deploy", "--json"], "deploy");
    let hook = migration_started(&w, &mut child.0);
    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGINT).unwrap();
    let code = wait_exit(&mut child.0);
    let said = fs::read_to_string(w.path().join("deploy.err")).unwrap();
    assert_eq!(code, Some(130), "{said}");
    assert!(
        kill(Pid::from_raw(hook), None).is_err(),
        "the migration ran on after the interrupt: {said}"
    );
    assert_eq!(
        migrations(&w).len(),
        1,
        "it was stopped before its end: {said}"
    );
    assert_eq!(w.currents(), vec![Some(good.clone()); 2]);
    let primary = &w.hosts.hosts[0];
    let bad = primary
        .releases()
        .into_iter()
        .find(|r| r != &good)
        .expect("the primary received the release");
    assert_eq!(primary.status_of(&bad).as_deref(), Some("failed"), "{said}");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(w.path().join("deploy.out")).unwrap())
            .unwrap_or_else(|e| panic!("{e}\n{said}"));
    let hosts = outcomes(&json);
    assert!(
        !hosts.iter().any(|o| o == "ok" || o == "reverted"),
        "no host was switched: {json}"
    );
    let history = w.shipit(&["history", "--json"]).json();
    assert_eq!(history[0]["migrate"], "failed", "{}", history[0]);
    assert_eq!(history[0]["outcome"], "interrupted", "{}", history[0]);
}

/// A controller killed while the migration runs: the host's agent sees its
/// session close and stops the migration (no migration runs on with
/// nobody to switch the hosts after it); the release is marked failed
/// there, no host was switched, and the next rollout runs.
#[test]
fn the_controllers_death_stops_a_running_migration() {
    let w = World::new(2, Options::default());
    with_migrate(&w, None);
    let good = w.deploy_ok();
    w.commit("HANG_MIGRATE", "\n");
    let mut child = w.spawn(&w.config(), &["deploy", "--json"], "deploy");
    let hook = migration_started(&w, &mut child.0);
    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGKILL).unwrap();
    wait_exit(&mut child.0);
    let alive = |pid: i32| kill(Pid::from_raw(pid), None).is_ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(hook) {
        assert!(
            Instant::now() < deadline,
            "the migration ran on after its controller died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let primary = &w.hosts.hosts[0];
    let bad = primary
        .releases()
        .into_iter()
        .find(|r| r != &good)
        .expect("the primary received the release");
    let deadline = Instant::now() + Duration::from_secs(60);
    while primary.status_of(&bad).as_deref() != Some("failed") {
        assert!(
            Instant::now() < deadline,
            "the stopped migration's release is not marked failed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(w.currents(), vec![Some(good.clone()); 2]);
    assert!(migrations(&w).len() == 1, "{:?}", migrations(&w));

    fs::remove_file(w.path().join("app/HANG_MIGRATE")).unwrap();
    w.commit("VERSION", "3\n");
    w.deploy_ok();
    assert_eq!(migrations(&w).len(), 2, "{:?}", migrations(&w));
}
