//! A fleet used by a team: hosts whose login scripts print,
//! read-only commands run from other checkouts during a rollout, agents of
//! another protocol version.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::exec::write_executable;
use crate::{Options, SHIPIT, Stopped, World, outcomes};

/// Wait (bounded) until `path` exists; panic with what `child` said if it
/// ends first.
pub fn wait_for(path: &Path, child: &mut std::process::Child, said: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            panic!(
                "{} never appeared:\n{}",
                path.display(),
                fs::read_to_string(said).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait (bounded) for `child` to exit; its exit code.
pub fn wait_exit(child: &mut std::process::Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "shipit did not end within 300 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl World {
    /// `shipit <args>` with `config`, in the background; its output goes
    /// to `<name>.out` and `<name>.err` in the world's root.
    pub fn spawn(&self, config: &Path, args: &[&str], name: &str) -> Stopped {
        let out = fs::File::create(self.path().join(format!("{name}.out"))).unwrap();
        let err = fs::File::create(self.path().join(format!("{name}.err"))).unwrap();
        Stopped(
            Command::new(SHIPIT)
                .arg("--config")
                .arg(config)
                .args(args)
                .current_dir(self.path())
                .env("NO_COLOR", "1")
                .env("XDG_RUNTIME_DIR", self.hosts.runtime_dir())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap(),
        )
    }

    /// A drain hook that, for host2, says `paused` and waits for `go`
    /// (bounded), while `PAUSE` exists in the world's root.
    pub fn pausing_drain(&self) -> String {
        let root = self.path().display().to_string();
        let h2 = &self.hosts.hosts[1].dest;
        format!(
            "if [ \"$SHIPIT_HOST\" = '{h2}' ] && [ -e {root}/PAUSE ]; then touch {root}/paused; \
             i=0; while [ ! -e {root}/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; fi"
        )
    }

    /// `n` hosts whose drain hook pauses before host2 while a `PAUSE`
    /// file exists ([`World::pausing_drain`]).
    pub fn pausing(n: usize) -> World {
        let w = World::new(n, Options::default());
        let drain = w.pausing_drain();
        w.write_config(&Options {
            drain: Some(&drain),
            ..Options::default()
        });
        w
    }

    /// `deploy --json` in the background, returned once it paused before
    /// host2 (host1 switched, host2 received); `go` lets it on.
    pub fn deploy_paused(&self) -> Stopped {
        fs::write(self.path().join("PAUSE"), "").unwrap();
        let mut child = self.spawn(&self.config(), &["deploy", "--json"], "deploy");
        wait_for(
            &self.path().join("paused"),
            &mut child.0,
            &self.path().join("deploy.err"),
        );
        child
    }

    /// A teammate's checkout: the same fleet, with a reload hook of their
    /// own that appends the release it starts to `teammate-hook-ran` in
    /// each host's shared/.
    pub fn teammate_config(&self) -> PathBuf {
        let dir = self.path().join("teammate");
        fs::create_dir_all(&dir).unwrap();
        let text = fs::read_to_string(self.config()).unwrap().replace(
            "reload = \"",
            "reload = \"echo $SHIPIT_RELEASE >> \\\"$SHIPIT_DEPLOY_TO/shared/teammate-hook-ran\\\"; ",
        );
        assert!(text.contains("teammate-hook-ran"));
        let path = dir.join("shipit.toml");
        fs::write(&path, text).unwrap();
        path
    }
}

/// A `.bashrc` that echoes (common, and harmless for plain `ssh host cmd`)
/// used to make the host "unreachable … caused by: exit status 0": the
/// controller required its stdout to be exactly `present` or `missing`.
#[test]
fn a_host_whose_bashrc_prints_a_line_deploys() {
    let w = World::new(2, Options::default());
    fs::write(
        w.hosts.hosts[1].home().join(".bashrc"),
        "echo 'Welcome to host2, have a nice day'\n",
    )
    .unwrap();
    let id = w.deploy_ok();
    let status = w.shipit(&["status", "--json"]);
    status.code(0);
    let releases = w.shipit(&["releases", "--json"]);
    releases.code(0);
    assert_eq!(releases.json()["live"], id.as_str());
}

/// An agent that answers in another protocol version is named, with both
/// versions, instead of being misread.
#[test]
fn an_agent_of_another_protocol_version_is_named() {
    let w = World::new(1, Options::default());
    w.deploy_ok();
    let bin_dir = w.hosts.hosts[0].deploy().join(".shipit/bin");
    let bin = fs::read_dir(&bin_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::remove_file(&bin).unwrap();
    write_executable(
        &bin,
        "#!/bin/sh\necho '@@shipit-fleet/999 {\"live\":null}'\n",
    );
    let run = w.shipit(&["deploy"]);
    run.code(3);
    assert!(
        run.stderr
            .contains("speaks fleet protocol version 999; this controller speaks version 3"),
        "{}",
        run.stderr
    );
    let status = w.shipit(&["status"]);
    assert_ne!(status.code, 0);
    assert!(
        status.stdout.contains("version 999"),
        "{}\n{}",
        status.stdout,
        status.stderr
    );
}

/// `status` and `releases` write nothing on a host: on hosts shipit never
/// reached they install nothing and say so.
#[test]
fn read_only_commands_install_nothing() {
    let w = World::new(2, Options::default());
    for args in [["status", "--json"], ["releases", "--json"]] {
        let run = w.shipit(&args);
        assert_ne!(run.code, 0);
        let json = run.json();
        for host in json["hosts"].as_array().unwrap() {
            assert_eq!(host["reachable"], false, "{host}");
            assert!(
                host["error"]
                    .as_str()
                    .unwrap()
                    .contains("no shipit agent of this build is installed there"),
                "{host}"
            );
        }
    }
    for h in &w.hosts.hosts {
        assert!(
            !h.deploy().join(".shipit").exists(),
            "{}: a read-only command wrote on the host",
            h.name()
        );
    }
}

/// A teammate's `status` from another checkout during a rollout must not
/// change which reload hook the rollout's next host runs (it used to
/// rewrite every host's config from the teammate's shipit.toml), and a
/// host config replaced under a rollout's feet does not reach it either:
/// the rollout pins its config by digest.
#[test]
fn a_rollout_runs_its_own_config_whatever_another_checkout_does() {
    let w = World::pausing(3);
    let good = w.deploy_ok();
    let teammate = w.teammate_config();
    let configs: Vec<Vec<u8>> = w
        .hosts
        .hosts
        .iter()
        .map(|h| fs::read(h.deploy().join(".shipit/fleet.toml")).unwrap())
        .collect();
    w.commit("VERSION", "2\n");
    let mut child = w.deploy_paused();
    // The teammate looks at the fleet mid-rollout.
    let mut all = vec!["--config", teammate.to_str().unwrap()];
    all.extend(["status", "--json"]);
    let status = Command::new(SHIPIT)
        .args(&all)
        .current_dir(w.path())
        .env("XDG_RUNTIME_DIR", w.hosts.runtime_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let after: Vec<Vec<u8>> = w
        .hosts
        .hosts
        .iter()
        .map(|h| fs::read(h.deploy().join(".shipit/fleet.toml")).unwrap())
        .collect();
    assert!(after == configs, "`status` rewrote a host's config");
    // And someone replaces host3's copy by hand: the rollout's own config
    // still decides what host3 runs.
    let mut text = String::from_utf8(configs[2].clone()).unwrap();
    // The host config is written by a TOML serializer: literal strings.
    text = text.replace(
        "reload = '",
        "reload = 'touch \"$SHIPIT_DEPLOY_TO/shared/teammate-hook-ran\"; ",
    );
    assert!(text.contains("teammate-hook-ran"), "{text}");
    fs::write(w.hosts.hosts[2].deploy().join(".shipit/fleet.toml"), text).unwrap();
    fs::write(w.path().join("go"), "").unwrap();
    let code = wait_exit(&mut child.0);
    let said = fs::read_to_string(w.path().join("deploy.err")).unwrap();
    assert_eq!(code, Some(0), "{said}");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(w.path().join("deploy.out")).unwrap()).unwrap();
    assert_eq!(outcomes(&json), ["switched"; 3]);
    let id = json["release"].as_str().unwrap().to_string();
    assert_ne!(id, good);
    assert_eq!(w.currents(), vec![Some(id.clone()); 3]);
    for h in &w.hosts.hosts {
        assert!(
            !h.deploy().join("shared/teammate-hook-ran").exists(),
            "{} ran a reload hook that is not its rollout's",
            h.name()
        );
    }
}

/// The releases the teammate's reload hook started on each host.
fn teammate_hook_ran(w: &World) -> Vec<Vec<String>> {
    w.hosts
        .hosts
        .iter()
        .map(|h| {
            fs::read_to_string(h.deploy().join("shared/teammate-hook-ran"))
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect()
        })
        .collect()
}

fn output(w: &World, name: &str) -> (serde_json::Value, String) {
    let err = fs::read_to_string(w.path().join(format!("{name}.err"))).unwrap();
    let out = fs::read_to_string(w.path().join(format!("{name}.out"))).unwrap();
    let json = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (json, err)
}

/// Two controllers (CI and a teammate's checkout) deploy the same three
/// hosts at once: one rolls out, the other is refused naming the first,
/// or waits for it with --wait; no host ever runs a reload hook of a
/// rollout other than its own.
#[test]
fn two_controllers_roll_out_one_at_a_time() {
    let w = World::pausing(3);
    let good = w.deploy_ok();
    let teammate = w.teammate_config();
    let mine = w.config();

    // Started together: exactly one of them rolls out.
    w.commit("VERSION", "2\n");
    let mut a = w.spawn(&mine, &["deploy", "--json"], "a");
    let mut b = w.spawn(&teammate, &["deploy", "--json"], "b");
    let codes = [wait_exit(&mut a.0), wait_exit(&mut b.0)];
    let (ja, ea) = output(&w, "a");
    let (jb, eb) = output(&w, "b");
    let (winner, loser_err, loser_json) = match codes {
        [Some(0), Some(6)] => (ja, eb, jb),
        [Some(6), Some(0)] => (jb, ea, ja),
        _ => panic!("expected one rollout and one refusal, got {codes:?}\n{ea}\n{eb}"),
    };
    assert_eq!(loser_json["outcome"], "lock-busy", "{loser_json}");
    assert!(
        loser_err.contains("another rollout holds the fleet")
            && loser_err.contains("deploy --json"),
        "{loser_err}"
    );
    let id = winner["release"].as_str().unwrap().to_string();
    assert_eq!(w.currents(), vec![Some(id.clone()); 3]);
    let ran = teammate_hook_ran(&w);
    assert!(
        ran.iter().all(|r| r.is_empty()) || ran.iter().all(|r| r == &vec![id.clone()]),
        "a host ran a reload hook that is not its rollout's: {ran:?}"
    );
    let _ = good;

    // The first is mid-rollout (paused in host2's drain): the second is
    // refused, naming it, and changes nothing.
    for h in &w.hosts.hosts {
        let _ = fs::remove_file(h.deploy().join("shared/teammate-hook-ran"));
    }
    w.commit("VERSION", "3\n");
    fs::write(w.path().join("PAUSE"), "").unwrap();
    let mut a = w.spawn(&mine, &["deploy", "--json"], "a");
    wait_for(&w.path().join("paused"), &mut a.0, &w.path().join("a.err"));
    let mut b = w.spawn(&teammate, &["deploy", "--json"], "b");
    assert_eq!(wait_exit(&mut b.0), Some(6));
    let (_, eb) = output(&w, "b");
    assert!(
        eb.contains("another rollout holds the fleet") && eb.contains(mine.to_str().unwrap()),
        "the refusal must name the rollout that holds the fleet:\n{eb}"
    );
    // With --wait it queues behind the first, then rolls out its own.
    let mut b = w.spawn(&teammate, &["deploy", "--json", "--wait=5m"], "b");
    fs::write(w.path().join("go"), "").unwrap();
    assert_eq!(wait_exit(&mut a.0), Some(0), "{}", output(&w, "a").1);
    fs::remove_file(w.path().join("PAUSE")).unwrap();
    assert_eq!(wait_exit(&mut b.0), Some(0), "{}", output(&w, "b").1);
    let (ja, _) = output(&w, "a");
    let (jb, _) = output(&w, "b");
    let first = ja["release"].as_str().unwrap().to_string();
    let second = jb["release"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert_eq!(w.currents(), vec![Some(second.clone()); 3]);
    assert_eq!(
        teammate_hook_ran(&w),
        vec![vec![second.clone()]; 3],
        "the teammate's hook must run for the teammate's rollout only"
    );
}

/// Which settings a fleet rollback uses (README, "Whose config a host
/// runs"): the config of the controller that starts it, pinned for that
/// rollback, not the hooks the release was first deployed with.
#[test]
fn a_fleet_rollback_runs_with_the_config_of_its_controller() {
    let w = World::new(2, Options::default());
    let first = w.deploy_ok();
    w.commit("VERSION", "2\n");
    w.deploy_ok();
    let text = fs::read_to_string(w.config()).unwrap().replace(
        "reload = \"",
        // The config reached the agent in its environment; no hook sees it.
        "reload = \"echo $SHIPIT_RELEASE${SHIPIT_FLEET_PIN:+ leaked} >> \\\"$SHIPIT_DEPLOY_TO/shared/new-hook\\\"; ",
    );
    assert!(text.contains("new-hook"));
    fs::write(w.config(), text).unwrap();
    w.shipit(&["rollback"]).code(0);
    for h in &w.hosts.hosts {
        let ran = fs::read_to_string(h.deploy().join("shared/new-hook")).unwrap_or_default();
        assert_eq!(
            ran.lines().collect::<Vec<_>>(),
            [first.as_str()],
            "{}",
            h.name()
        );
        // The copy for read-only commands follows the latest rollout.
        let copy = fs::read_to_string(h.deploy().join(".shipit/fleet.toml")).unwrap();
        assert!(copy.contains("new-hook"), "{copy}");
    }
}

/// The agent holding a host's fleet lock serves the rollout's requests; a
/// SIGTERM while it waits for the next one ends it, and the host's fleet
/// lock with it, as it did when it served nothing (the steps of a request
/// route signals to a flag, which alone would keep it waiting). The
/// rollout then ends in a state its report tells truly.
#[test]
fn a_signal_ends_an_idle_lock_holder_and_its_lock() {
    let w = World::pausing(3);
    let good = w.deploy_ok();
    w.commit("VERSION", "2\n");
    let mut child = w.deploy_paused();
    // host2 has received the release; its lock holder waits.
    let holders: Vec<i32> = w.hosts.hosts[1]
        .processes()
        .into_iter()
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("fleet-agent\0lock\0")
        })
        .collect();
    // The rollout's config is not on its command line, which `ps` shows.
    for pid in &holders {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("deploy_to"),
            "the lock holder's command line names the config"
        );
    }
    assert_eq!(holders.len(), 1, "host2's lock holder: {holders:?}");
    let holder = nix::unistd::Pid::from_raw(holders[0]);
    nix::sys::signal::kill(holder, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.hosts.hosts[1].processes().contains(&holders[0]) {
        assert!(
            Instant::now() < deadline,
            "the lock holder still runs 60 s after a SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(w.path().join("go"), "").unwrap();
    let code = wait_exit(&mut child.0);
    let said = fs::read_to_string(w.path().join("deploy.err")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(w.path().join("deploy.out")).unwrap()).unwrap();
    let id = json["release"].as_str().unwrap().to_string();
    // Asked again in a session of its own, or failed and reverted: either
    // way every host runs what the report says.
    match code {
        Some(0) => assert_eq!(w.currents(), vec![Some(id); 3], "{said}"),
        _ => assert_eq!(w.currents(), vec![Some(good); 3], "{code:?}: {said}"),
    }
    // Nobody holds any host's fleet lock now: the next rollout goes through.
    w.commit("VERSION", "3\n");
    fs::remove_file(w.path().join("PAUSE")).unwrap();
    w.deploy_ok();
}

/// A host's pinned config (`.shipit/config/<digest>.toml`) edited by hand
/// is written again by the next rollout: its name says what it must hold,
/// not that it still does.
#[test]
fn a_pinned_config_edited_on_a_host_is_written_again() {
    let w = World::new(1, Options::default());
    w.deploy_ok();
    let dir = w.hosts.hosts[0].deploy().join(".shipit/config");
    let pinned: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert_eq!(pinned.len(), 1, "{pinned:?}");
    let original = fs::read_to_string(&pinned[0]).unwrap();
    // The host config is written by a TOML serializer: literal strings.
    let edited = original.replace(
        "reload = '",
        "reload = 'touch \"$SHIPIT_DEPLOY_TO/shared/edited-hook-ran\"; ",
    );
    assert_ne!(edited, original);
    fs::write(&pinned[0], edited).unwrap();
    w.commit("VERSION", "2\n");
    w.deploy_ok();
    let ran = w.hosts.hosts[0].deploy().join("shared/edited-hook-ran");
    assert!(!ran.exists(), "the edited hook ran");
    assert_eq!(fs::read_to_string(&pinned[0]).unwrap(), original);
}
