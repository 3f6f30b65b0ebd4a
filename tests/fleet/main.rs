//! The fleet suite: rolling deploys from a controller to three hosts, each
//! a real sshd in a mount namespace of its own (see `hosts.rs`), running
//! the example app (`examples/node-app`) started by the example reload
//! hook (`examples/fleet/restart.sh`), gated on each host's own health URL.
//! shipit is not installed on the hosts: the controller installs itself.
//!
//! It needs root (mount namespaces), sshd, ssh, node and tar, and fails with
//! the install command when one is missing (`.ci/run` installs them).
//! `FLEET_TRACE=1` prints what each shipit run said and how long it took.

mod ansible;
mod checks;
mod crashes;
mod housekeeping;
mod migrate;
mod notify;
mod platforms;
mod reports;
mod reuse;
mod scale;
mod sources;
#[path = "../support/mod.rs"]
mod support;
mod teams;
mod zero_downtime;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::front::{self, http_get};
use support::git::git;
use support::hosts::Hosts;
pub use support::run::Run;

pub const SHIPIT: &str = env!("CARGO_BIN_EXE_shipit");

/// A controller (a git repo of the app, a config) and its hosts.
pub struct World {
    pub hosts: Hosts,
    pub root: tempfile::TempDir,
}

/// What `[fleet]` gets besides the hosts.
pub struct Options<'a> {
    pub batch: usize,
    pub drain: Option<&'a str>,
    pub undrain: Option<&'a str>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            batch: 1,
            drain: None,
            undrain: None,
        }
    }
}

impl World {
    pub fn new(n: usize, options: Options) -> World {
        let root = tempfile::tempdir().unwrap();
        let hosts = Hosts::start(root.path(), n);
        let app = root.path().join("app");
        fs::create_dir(&app).unwrap();
        support::app::node_app_repo(&app, &["server.js", "package.json"]);
        let world = World { hosts, root };
        world.write_config(&options);
        world
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("controller/shipit.toml")
    }

    pub fn write_config(&self, options: &Options) {
        let hook = |key: &str, value: Option<&str>| {
            value
                .map(|v| format!("{key} = {v:?}\n"))
                .unwrap_or_default()
        };
        fs::create_dir_all(self.path().join("controller")).unwrap();
        // The reload hook starts the release with BROKEN=1 on the hosts a
        // release names in its BROKEN_ON file: a release that fails its
        // gate on one host only.
        let text = format!(
            r#"deploy_to = "{deploy_to}"
keep_releases = 10

[source]
git = "../app"

[hooks]
reload = "if grep -qx \"$(cat \"$SHIPIT_DEPLOY_TO/shared/name\")\" BROKEN_ON 2>/dev/null; then export BROKEN=1; fi; sh \"$SHIPIT_DEPLOY_TO/shared/restart.sh\""
reload_timeout = "60s"

[health]
url = "http://app.fleet.test:{port}/healthz"
expect_body = "\"release\":\"{{release}}\""
successes = 2
interval = "100ms"
# Generous: a release meant to pass must pass on a busy machine; a broken
# one (every answer a 500) fails after fail_after answers anyway.
timeout = "60s"

[fleet]
{fleet}batch = {batch}
{drain}{undrain}"#,
            deploy_to = self.hosts.deploy_to.display(),
            port = self.hosts.app_port,
            fleet = self.hosts.fleet_toml(),
            batch = options.batch,
            drain = hook("drain", options.drain),
            undrain = hook("undrain", options.undrain),
        );
        fs::write(self.config(), text).unwrap();
    }

    pub fn shipit(&self, args: &[&str]) -> Run {
        self.shipit_with(args, &[], None)
    }

    /// [`World::shipit`] with `env` added and `path_first` first on its
    /// PATH.
    pub fn shipit_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        path_first: Option<&Path>,
    ) -> Run {
        let started = std::time::Instant::now();
        let config = self.config();
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        let first = path_first
            .map(|p| format!("{}:", p.display()))
            .unwrap_or_default();
        let out = Command::new(SHIPIT)
            .args(&all)
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env("SHIPIT_TIMINGS", "1")
            .env("XDG_RUNTIME_DIR", self.hosts.runtime_dir())
            .env(
                "PATH",
                format!(
                    "{first}{}:/usr/sbin:/sbin",
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("shipit runs");
        let run = Run::from(args, out);
        if std::env::var_os("FLEET_TRACE").is_some() {
            eprintln!(
                "$ shipit {} (exit {}, {:.1?})\n{}{}",
                args.join(" "),
                run.code,
                started.elapsed(),
                run.stdout,
                run.stderr
            );
        }
        run
    }

    /// Commit a change to the app; returns the new sha.
    pub fn commit(&self, file: &str, content: &str) -> String {
        let app = self.path().join("app");
        fs::write(app.join(file), content).unwrap();
        git(&app, &["add", "-A"]);
        git(&app, &["commit", "-q", "-m", file]);
        git(&app, &["rev-parse", "HEAD"])
    }

    /// The release each host's app answers with, asked directly.
    pub fn serving(&self) -> Vec<Option<String>> {
        self.hosts
            .hosts
            .iter()
            .map(|h| {
                let (status, body) = http_get(h.app_addr(self.hosts.app_port), "/")?;
                (status == 200).then(|| {
                    body.trim()
                        .trim_start_matches("hello from release ")
                        .to_string()
                })
            })
            .collect()
    }

    pub fn currents(&self) -> Vec<Option<String>> {
        self.hosts.hosts.iter().map(|h| h.current()).collect()
    }

    /// Deploy and return the release id every host now runs.
    #[track_caller]
    pub fn deploy_ok(&self) -> String {
        let run = self.shipit(&["deploy", "--json"]);
        run.code(0);
        let id = run.json()["release"].as_str().unwrap().to_string();
        assert_eq!(
            self.currents(),
            vec![Some(id.clone()); self.hosts.hosts.len()]
        );
        id
    }
}

fn outcomes(json: &Value) -> Vec<String> {
    json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_rollout_puts_one_release_on_every_host() {
    let w = World::new(3, Options::default());
    for h in &w.hosts.hosts {
        assert!(
            !h.deploy().join(".shipit").exists(),
            "{} must start without shipit",
            h.name()
        );
    }
    let run = w.shipit(&["deploy", "--json"]);
    run.code(0);
    let json = run.json();
    let id = json["release"].as_str().unwrap().to_string();
    assert_eq!(outcomes(&json), ["switched"; 3]);
    assert_eq!(w.currents(), vec![Some(id.clone()); 3]);
    assert_eq!(w.serving(), vec![Some(id.clone()); 3]);
    // The controller installed the same binary everywhere, checked.
    for h in &w.hosts.hosts {
        let bins: Vec<_> = fs::read_dir(h.deploy().join(".shipit/bin"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(bins.len(), 1, "{bins:?}");
        assert!(bins[0].starts_with("shipit-"), "{bins:?}");
    }
    // Progress lines name their host; the table names every host.
    for h in &w.hosts.hosts {
        assert!(
            run.stderr.contains(&format!("{} |", h.dest)),
            "{}",
            run.stderr
        );
    }

    // A second rollout: one new id, one revision, everywhere.
    let sha = w.commit("VERSION", "2\n");
    let run = w.shipit(&["deploy"]);
    run.code(0);
    for h in &w.hosts.hosts {
        assert!(run.stdout.contains(&h.dest), "{}", run.stdout);
    }
    let now = w.currents();
    let second = now[0].clone().unwrap();
    assert_ne!(second, id);
    assert_eq!(now, vec![Some(second.clone()); 3]);
    assert_eq!(w.serving(), vec![Some(second.clone()); 3]);
    let releases = w.shipit(&["releases", "--json"]);
    releases.code(0);
    let r = releases.json();
    assert_eq!(r["agree"], true, "{r}");
    assert_eq!(r["live"], second.as_str());
    for host in r["hosts"].as_array().unwrap() {
        let live = &host["state"]["releases"][0];
        assert_eq!(live["id"], second.as_str());
        assert_eq!(live["revision"], sha.as_str());
        assert_eq!(live["status"], "live");
    }
    // The controller keeps its own record of each rollout.
    let history = w.shipit(&["history", "--json"]);
    history.code(0);
    let events = history.json();
    assert_eq!(events[0]["release"], second.as_str());
    assert_eq!(events[0]["hosts"].as_array().unwrap().len(), 3);
    let status = w.shipit(&["status", "--json"]);
    status.code(0);
    for host in status.json()["hosts"].as_array().unwrap() {
        assert_eq!(host["state"]["health"]["passed"], true, "{host}");
    }
}

/// `shipit -q deploy` with a fleet printed the host table, not
/// the release id that a quiet deploy prints on one host.
#[test]
fn a_quiet_fleet_deploy_prints_only_the_release_id() {
    let w = World::new(2, Options::default());
    let run = w.shipit(&["-q", "deploy"]);
    run.code(0);
    let id = w.currents()[0].clone().expect("the fleet runs a release");
    assert_eq!(run.stdout, format!("{id}\n"), "{}", run.stderr);
    // No progress lines either, from the controller or a host.
    for h in &w.hosts.hosts {
        assert!(
            !run.stderr.contains(&format!("{} |", h.dest)),
            "{}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains("Rolled out"), "{}", run.stderr);
}

#[test]
fn a_host_failing_its_gate_mid_rollout_leaves_the_fleet_as_it_was() {
    let w = World::new(
        3,
        Options {
            drain: Some("echo \"drain $SHIPIT_HOST\" >> ../drain.log"),
            undrain: Some("echo \"undrain $SHIPIT_HOST\" >> ../drain.log"),
            ..Options::default()
        },
    );
    let good = w.deploy_ok();
    fs::remove_file(w.path().join("drain.log")).unwrap();
    let before: Vec<Vec<String>> = w.hosts.hosts.iter().map(|h| h.releases()).collect();
    // The new release fails its gate on host2 only.
    w.commit("BROKEN_ON", "host2\n");
    let run = w.shipit(&["deploy", "--json"]);
    run.code(8);
    let json = run.json();
    assert_eq!(json["outcome"], "fleet-reverted");
    assert_eq!(json["error"]["exit_code"], 8, "{json}");
    assert_eq!(outcomes(&json), ["reverted", "failed", "untouched"]);
    let bad = json["release"].as_str().unwrap();
    // Every host runs, and serves, what it ran before.
    assert_eq!(w.currents(), vec![Some(good.clone()); 3]);
    assert_eq!(w.serving(), vec![Some(good.clone()); 3]);
    let h = &w.hosts.hosts;
    assert_eq!(h[0].status_of(bad).as_deref(), Some("rolled-back"));
    assert_eq!(h[1].status_of(bad).as_deref(), Some("failed"));
    // The host never reached holds exactly what it held.
    assert_eq!(h[2].releases(), before[2]);
    assert!(run.stderr.contains("stopped"), "{}", run.stderr);
    // host2 went back into rotation once it had rolled itself back;
    // reverting host1 drained it again; host3 was never drained.
    let log = fs::read_to_string(w.path().join("drain.log")).unwrap();
    let expected: Vec<String> = [
        "drain 0",
        "undrain 0",
        "drain 1",
        "undrain 1",
        "drain 0",
        "undrain 0",
    ]
    .iter()
    .map(|l| {
        let (verb, i) = l.split_once(' ').unwrap();
        format!("{verb} {}", h[i.parse::<usize>().unwrap()].dest)
    })
    .collect();
    assert_eq!(log.lines().collect::<Vec<_>>(), expected);

    // --no-revert leaves host1 on the new release, and says so.
    let run = w.shipit(&["deploy", "--json", "--no-revert"]);
    run.code(9);
    let json = run.json();
    assert_eq!(outcomes(&json), ["switched", "failed", "untouched"]);
    let third = json["release"].as_str().unwrap().to_string();
    assert_eq!(
        w.currents(),
        vec![Some(third.clone()), Some(good.clone()), Some(good.clone())]
    );
    let releases = w.shipit(&["releases"]);
    releases.code(0);
    assert!(releases.stderr.contains("disagree"), "{}", releases.stderr);
    assert!(releases.stdout.contains("(differs)"), "{}", releases.stdout);
}

/// A host whose own rollback does not prove healthy runs "what it ran
/// before" by id only: it must stay out of rotation, and the rollout must
/// not claim the fleet was put back (exit 9, not 8).
#[test]
fn a_host_whose_own_rollback_is_unhealthy_stays_drained_and_is_not_called_reverted() {
    let w = World::new(
        3,
        Options {
            drain: Some("echo \"drain $SHIPIT_HOST\" >> ../drain.log"),
            undrain: Some("echo \"undrain $SHIPIT_HOST\" >> ../drain.log"),
            ..Options::default()
        },
    );
    let good = w.deploy_ok();
    fs::remove_file(w.path().join("drain.log")).unwrap();
    // On host2, the release it would roll back to breaks at its next
    // reload too.
    let h = &w.hosts.hosts;
    fs::write(
        h[1].deploy().join("releases").join(&good).join("BROKEN_ON"),
        "host2\n",
    )
    .unwrap();
    w.commit("BROKEN_ON", "host2\n");
    let run = w.shipit(&["deploy", "--json"]);
    run.code(9);
    let json = run.json();
    assert_eq!(json["outcome"], "fleet-not-reverted", "{json}");
    assert_eq!(outcomes(&json), ["reverted", "failed", "untouched"]);
    assert_eq!(json["hosts"][1]["live_healthy"], false, "{json}");
    assert!(
        run.stderr
            .contains("stays drained: what it runs did not prove healthy"),
        "{}",
        run.stderr
    );
    // host2 was drained and never put back; host1 was put back after its
    // revert.
    let log = fs::read_to_string(w.path().join("drain.log")).unwrap();
    let undrained: Vec<&str> = log.lines().filter(|l| l.starts_with("undrain")).collect();
    assert!(
        !undrained.iter().any(|l| l.ends_with(&h[1].dest)),
        "an unhealthy host went back into rotation:\n{log}"
    );
    assert!(undrained.iter().any(|l| l.ends_with(&h[0].dest)), "{log}");
    assert_eq!(w.currents(), vec![Some(good.clone()); 3]);
}

#[test]
fn shipit_rollback_rolls_the_fleet_back() {
    let w = World::new(3, Options::default());
    let first = w.deploy_ok();
    w.commit("VERSION", "2\n");
    let second = w.deploy_ok();
    let run = w.shipit(&["rollback", "--json"]);
    run.code(0);
    let json = run.json();
    assert_eq!(json["release"], first.as_str());
    assert_eq!(outcomes(&json), ["switched"; 3]);
    assert_eq!(w.currents(), vec![Some(first.clone()); 3]);
    assert_eq!(w.serving(), vec![Some(first.clone()); 3]);
    for h in &w.hosts.hosts {
        assert_eq!(h.status_of(&second).as_deref(), Some("rolled-back"));
    }
    // Forward again with --to.
    let run = w.shipit(&["rollback", "--to", &second]);
    run.code(0);
    assert_eq!(w.currents(), vec![Some(second.clone()); 3]);
    // An id some host lacks changes nothing.
    let run = w.shipit(&["rollback", "--to", "20200101000000"]);
    run.code(2);
    assert!(run.stderr.contains("is not on"), "{}", run.stderr);
    assert_eq!(w.currents(), vec![Some(second.clone()); 3]);
}

#[test]
fn drain_and_undrain_run_in_host_order() {
    let w = World::new(
        3,
        Options {
            drain: Some("echo \"drain $SHIPIT_HOST $SHIPIT_RELEASE\" >> ../drain.log"),
            undrain: Some("echo \"undrain $SHIPIT_HOST $SHIPIT_RELEASE\" >> ../drain.log"),
            ..Options::default()
        },
    );
    let id = w.deploy_ok();
    let log = fs::read_to_string(w.path().join("drain.log")).unwrap();
    let h = &w.hosts.hosts;
    let expected: Vec<String> = [0, 0, 1, 1, 2, 2]
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let verb = if n % 2 == 0 { "drain" } else { "undrain" };
            format!("{verb} {} {id}", h[i].dest)
        })
        .collect();
    assert_eq!(log.lines().collect::<Vec<_>>(), expected);

    // batch = 2: host1 and host2 drained, switched together, undrained;
    // then host3.
    fs::remove_file(w.path().join("drain.log")).unwrap();
    w.write_config(&Options {
        batch: 2,
        drain: Some("echo \"drain $SHIPIT_HOST\" >> ../drain.log"),
        undrain: Some("echo \"undrain $SHIPIT_HOST\" >> ../drain.log"),
    });
    w.commit("VERSION", "2\n");
    w.deploy_ok();
    let log = fs::read_to_string(w.path().join("drain.log")).unwrap();
    let expected: Vec<String> = [
        ("drain", 0),
        ("drain", 1),
        ("undrain", 0),
        ("undrain", 1),
        ("drain", 2),
        ("undrain", 2),
    ]
    .iter()
    .map(|(verb, i)| format!("{verb} {}", h[*i].dest))
    .collect();
    assert_eq!(log.lines().collect::<Vec<_>>(), expected);
}

/// A host that lacks a listed shared file refuses the release while it is
/// prepared, as a single-host deploy would: nothing is switched anywhere,
/// and the hosts that got the release remove it again.
#[test]
fn a_host_missing_a_shared_file_fails_the_prepare_and_nothing_is_switched() {
    let w = World::new(3, Options::default());
    let good = w.deploy_ok();
    let before: Vec<Vec<String>> = w.hosts.hosts.iter().map(|h| h.releases()).collect();
    let text = fs::read_to_string(w.config()).unwrap();
    fs::write(
        w.config(),
        text.replacen("\n[source]", "\nshared = [\".env\"]\n[source]", 1),
    )
    .unwrap();
    for (i, h) in w.hosts.hosts.iter().enumerate() {
        if i != 1 {
            fs::write(h.deploy().join("shared/.env"), "SECRET=1\n").unwrap();
        }
    }
    w.commit("VERSION", "2\n");
    let run = w.shipit(&["deploy", "--json"]);
    run.code(3);
    assert!(run.stderr.contains("shared file"), "{}", run.stderr);
    assert!(run.stderr.contains(".env is missing"), "{}", run.stderr);
    assert_eq!(w.currents(), vec![Some(good.clone()); 3]);
    let after: Vec<Vec<String>> = w.hosts.hosts.iter().map(|h| h.releases()).collect();
    assert_eq!(after, before, "the release was removed again everywhere");
}

#[test]
fn an_unreachable_host_fails_the_rollout_before_anything_is_switched() {
    let mut w = World::new(3, Options::default());
    let good = w.deploy_ok();
    let before: Vec<Vec<String>> = w.hosts.hosts.iter().map(|h| h.releases()).collect();
    w.commit("VERSION", "2\n");
    w.hosts.hosts[2].stop();
    let run = w.shipit(&["deploy", "--json"]);
    run.code(3);
    let json = run.json();
    assert_eq!(json["outcome"], "failed-before-swap");
    assert_eq!(outcomes(&json), ["untouched", "untouched", "unreachable"]);
    assert!(
        run.stderr
            .contains(&format!("could not reach {}", w.hosts.hosts[2].dest)),
        "{}",
        run.stderr
    );
    assert_eq!(w.currents(), vec![Some(good.clone()); 3]);
    let after: Vec<Vec<String>> = w.hosts.hosts.iter().map(|h| h.releases()).collect();
    assert_eq!(after, before, "nothing was sent anywhere");
    // `releases` names the host it cannot reach and fails.
    let releases = w.shipit(&["releases"]);
    assert_ne!(releases.code, 0);
    assert!(
        releases.stdout.contains("unreachable"),
        "{}",
        releases.stdout
    );
    // Back up: the next rollout goes through.
    w.hosts.hosts[2].start();
    let id = w.deploy_ok();
    assert_ne!(id, good);
}

#[test]
fn a_bad_destination_is_refused_before_any_ssh() {
    let w = World::new(1, Options::default());
    let text = fs::read_to_string(w.config())
        .unwrap()
        .replace("hosts = [", "hosts = [\"-oProxyCommand=touch ../pwned\", ");
    fs::write(w.config(), text).unwrap();
    let run = w.shipit(&["deploy"]);
    run.code(2);
    assert!(run.stderr.contains("-oProxyCommand"), "{}", run.stderr);
    assert!(!w.path().join("pwned").exists());
    assert_eq!(w.currents(), vec![None]);
}

/// ssh joins the remote command into one string for the remote shell:
/// every argument must arrive as it was, whatever it holds.
#[test]
fn remote_arguments_reach_the_host_verbatim() {
    let w = World::new(1, Options::default());
    // A name without `/`: run anywhere, `touch` would create it in the
    // remote shell's working directory (the user's home).
    let canary = format!("shipit-canary-{}", std::process::id());
    let odd = w.path().join(format!(
        "it's \"odd\" $(touch {canary}) `touch {canary}`; app"
    ));
    fs::rename(w.path().join("app"), &odd).unwrap();
    let text = fs::read_to_string(w.config()).unwrap().replace(
        "git = \"../app\"",
        &format!("git = {:?}", odd.display().to_string()),
    );
    fs::write(w.config(), text).unwrap();
    let id = w.deploy_ok();
    let meta: Value = serde_json::from_str(
        &fs::read_to_string(
            w.hosts.hosts[0]
                .deploy()
                .join("releases")
                .join(&id)
                .join(".shipit-release.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["source"], odd.display().to_string());
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    for dir in [
        home.as_path(),
        w.path(),
        w.hosts.hosts[0].deploy().as_path(),
    ] {
        assert!(
            !dir.join(&canary).exists(),
            "a shell ran part of an argument (in {})",
            dir.display()
        );
    }
}

/// A drain that fails is a host that fails: nothing more is switched, and
/// every host that was taken out of rotation is put back, including one
/// drained in the same batch but never switched.
#[test]
fn a_failing_drain_stops_the_rollout_and_puts_every_host_back() {
    let w = World::new(3, Options::default());
    let good = w.deploy_ok();
    let h2 = w.hosts.hosts[1].dest.clone();
    let drain =
        format!("echo \"drain $SHIPIT_HOST\" >> ../drain.log; [ \"$SHIPIT_HOST\" != '{h2}' ]");
    w.write_config(&Options {
        batch: 2,
        drain: Some(&drain),
        undrain: Some("echo \"undrain $SHIPIT_HOST\" >> ../drain.log"),
    });
    w.commit("VERSION", "2\n");
    let run = w.shipit(&["deploy", "--json"]);
    run.code(8);
    assert_eq!(outcomes(&run.json()), ["untouched", "failed", "untouched"]);
    assert_eq!(w.currents(), vec![Some(good.clone()); 3]);
    let h = &w.hosts.hosts;
    let log = fs::read_to_string(w.path().join("drain.log")).unwrap();
    let expected = [
        format!("drain {}", h[0].dest),
        format!("drain {}", h[1].dest),
        format!("undrain {}", h[0].dest),
        format!("undrain {}", h[1].dest),
    ];
    assert_eq!(log.lines().collect::<Vec<_>>(), expected);
}

/// SIGINT to the controller mid-rollout: the host being switched finishes,
/// no further host is switched, and the hosts switched so far are switched
/// back before shipit exits 130.
#[test]
fn an_interrupted_rollout_puts_the_fleet_back() {
    let w = World::new(3, Options::default());
    let good = w.deploy_ok();
    // host2's reload waits for `go` when the release holds PAUSE, after
    // saying so with `paused`: the rollout is then inside host2's switch.
    let root = w.path().display().to_string();
    let prefix = format!(
        "if grep -qx host2 $SHIPIT_DEPLOY_TO/shared/name && [ -e PAUSE ]; then touch {root}/paused; \
         i=0; while [ ! -e {root}/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; fi; "
    );
    let text = fs::read_to_string(w.config())
        .unwrap()
        .replace("reload = \"", &format!("reload = \"{prefix}"));
    fs::write(w.config(), text).unwrap();
    w.commit("PAUSE", "\n");
    let out = fs::File::create(w.path().join("deploy.out")).unwrap();
    let err = fs::File::create(w.path().join("deploy.err")).unwrap();
    let mut child = Stopped(
        Command::new(SHIPIT)
            .arg("--config")
            .arg(w.config())
            .args(["deploy", "--json"])
            .current_dir(w.path())
            .env("NO_COLOR", "1")
            .env("XDG_RUNTIME_DIR", w.hosts.runtime_dir())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !w.path().join("paused").exists() {
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the rollout never reached host2's reload:\n{}",
                fs::read_to_string(w.path().join("deploy.err")).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    fs::write(w.path().join("go"), "").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the interrupted rollout did not end within 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let said = fs::read_to_string(w.path().join("deploy.err")).unwrap();
    assert_eq!(status.code(), Some(130), "{said}");
    let json: Value =
        serde_json::from_str(&fs::read_to_string(w.path().join("deploy.out")).unwrap()).unwrap();
    assert_eq!(
        outcomes(&json),
        ["reverted", "reverted", "untouched"],
        "{said}"
    );
    assert_eq!(w.currents(), vec![Some(good.clone()); 3]);
    assert_eq!(w.serving(), vec![Some(good.clone()); 3]);
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct Stopped(pub std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
