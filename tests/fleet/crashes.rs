//! A controller that is stopped from outside mid-rollout: a
//! SIGTERM to its whole process tree (a cancelled CI job, a systemd stop),
//! and a SIGKILL at the fleet's crash points. Each ends with every host on
//! one release the next command can tell, and one command that puts the
//! fleet on one proven release.

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::hosts::descendants;
use crate::teams::{wait_exit, wait_for};
use crate::{Options, World, outcomes};

pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// `pid`, every process below it, and the ssh master connections it asks
/// for its sessions (`-f` puts them in the background, out of the tree,
/// but in the same cgroup): what a CI runner or systemd stops with a job.
/// The masters are this world's: their command line names its key.
pub fn job_of(w: &World, pid: i32) -> Vec<i32> {
    let mut all = descendants(pid);
    let key = w.hosts.root.join("keys/client").display().to_string();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let line = cmdline(p);
        if line.contains("ControlMaster=yes") && line.contains(&key) && !all.contains(&p) {
            all.push(p);
        }
    }
    all
}

/// SIGTERM to the controller's whole job, as a CI runner or systemd stops
/// it.
fn terminate_tree(w: &World, pid: i32) {
    let all = job_of(w, pid);
    assert!(
        all.iter()
            .any(|p| cmdline(*p).contains("ControlMaster=yes")),
        "the controller's ssh master was not found"
    );
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    for p in all {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
}

/// Wait (bounded) until `file` contains `text`.
pub fn wait_for_text(file: &std::path::Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let said = fs::read_to_string(file).unwrap_or_default();
        if said.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{text:?} never appeared in {}:\n{said}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// host2's reload waits for `go` when the release holds PAUSE, after
/// saying so with `paused`.
pub fn pause_host2_reload(w: &World) {
    let root = w.path().display().to_string();
    let prefix = format!(
        "if grep -qx host2 $SHIPIT_DEPLOY_TO/shared/name && [ -e PAUSE ]; then touch {root}/paused; \
         i=0; while [ ! -e {root}/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; fi; "
    );
    let text = fs::read_to_string(w.config())
        .unwrap()
        .replace("reload = \"", &format!("reload = \"{prefix}"));
    fs::write(w.config(), text).unwrap();
}

/// The events a host recorded in its own history.
fn host_history(w: &World, i: usize) -> Vec<serde_json::Value> {
    fs::read_to_string(w.hosts.hosts[i].deploy().join(".shipit/history.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A rollout whose host2 is paused in its reload, stopped by a SIGTERM to
/// the controller's whole process tree. Returns the controller's exit
/// code, its JSON report and stderr.
fn terminated_mid_activation(
    w: &World,
    wait_for_revert: bool,
) -> (Option<i32>, serde_json::Value, String) {
    let _ = fs::remove_file(w.path().join("paused"));
    let _ = fs::remove_file(w.path().join("go"));
    let mut child = w.spawn(&w.config(), &["deploy", "--json"], "deploy");
    let err = w.path().join("deploy.err");
    wait_for(&w.path().join("paused"), &mut child.0, &err);
    terminate_tree(w, child.0.id() as i32);
    if wait_for_revert {
        // The controller switches host2 back while host2's activation,
        // whose session is gone, still runs: only then may it go on.
        wait_for_text(&err, &format!("Reverting {}", w.hosts.hosts[1].dest));
    }
    fs::write(w.path().join("go"), "").unwrap();
    let code = wait_exit(&mut child.0);
    let said = fs::read_to_string(&err).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(w.path().join("deploy.out")).unwrap())
            .unwrap_or_else(|e| panic!("{e}\n{said}"));
    (code, json, said)
}

/// SIGTERM to the controller's whole process tree while host2 activates
/// (a cancelled CI job, a systemd stop) cuts host2's session.
///
/// - A host agent that does not get SIGHUP (here: host2's `.bashrc`
///   ignores it, as `nohup` would) finishes its activation on R2. The
///   controller's switch back used to fail at once on host2's lock
///   ("another shipit command is running"), ending R1 / R2 / R1 with exit
///   9; it now waits for the activation to end, and every host ends on R1.
/// - Without the `.bashrc`, and without waiting for the controller's
///   switch back: whatever comes first (sshd cuts a session without a
///   terminal without signalling it; a host whose sshd sends SIGHUP rolls
///   itself back), every host ends on R1. Either way host2's own history
///   says how its activation ended, and the next `status` agrees with the
///   disks.
#[test]
fn sigterm_to_the_process_tree_while_host2_activates_puts_every_host_back() {
    let w = World::new(3, Options::default());
    let good = w.deploy_ok();
    pause_host2_reload(&w);
    w.commit("PAUSE", "\n");
    fs::write(w.hosts.hosts[1].home().join(".bashrc"), "trap '' HUP\n").unwrap();
    for (round, sighup) in [(1, false), (2, true)] {
        if sighup {
            fs::remove_file(w.hosts.hosts[1].home().join(".bashrc")).unwrap();
        }
        let (code, json, said) = terminated_mid_activation(&w, !sighup);
        assert_eq!(code, Some(130), "round {round}: {said}");
        assert_eq!(
            outcomes(&json),
            ["reverted", "failed", "untouched"],
            "round {round}: {json}\n{said}"
        );
        assert_eq!(
            w.currents(),
            vec![Some(good.clone()); 3],
            "round {round}: {said}"
        );
        assert_eq!(w.serving(), vec![Some(good.clone()); 3]);
        // host2 says in its own history how its activation ended.
        let bad = json["release"].as_str().unwrap();
        let events = host_history(&w, 1);
        let activation = events
            .iter()
            .find(|e| e["event"] == "deploy" && e["release"] == bad)
            .unwrap_or_else(|| panic!("host2 did not record its activation: {events:?}"));
        if !sighup {
            assert_eq!(activation["outcome"], "ok", "round {round}: {activation}");
        }
        assert_eq!(events.last().unwrap()["live"], good.as_str(), "{events:?}");
        // The next status, from any controller, agrees with the disks.
        let status = w.shipit(&["status", "--json"]);
        status.code(0);
        assert_eq!(status.json()["agree"], true);
        w.commit("VERSION", &format!("{round}\n"));
    }
}

/// The controller run with `SHIPIT_TEST_CRASH_AT=<point>`: it kills itself
/// there with SIGKILL (no clean-up, no history, no revert).
fn crash_at(w: &World, point: &str, args: &[&str]) {
    let out = std::process::Command::new(crate::SHIPIT)
        .arg("--config")
        .arg(w.config())
        .args(args)
        .current_dir(w.path())
        .env("NO_COLOR", "1")
        .env("SHIPIT_TEST_CRASH_AT", point)
        .env("XDG_RUNTIME_DIR", w.hosts.runtime_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(9),
        "shipit did not die at {point}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Wait (bounded) until nothing holds `host`'s fleet lock: an agent whose
/// controller died records the activation it answered first.
fn wait_until_fleet_unlocked(host: &crate::support::hosts::Host) {
    use nix::fcntl::{Flock, FlockArg};
    let path = host.deploy().join(".shipit/fleet.lock");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let file = fs::File::open(&path).unwrap();
        if Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "{} stays locked", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What `status --json` says each host runs.
fn status_lives(w: &World) -> Vec<Option<String>> {
    let status = w.shipit(&["status", "--json"]);
    status.code(0);
    status.json()["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["current"].as_str().map(String::from))
        .collect()
}

/// SIGKILL after every host received the release, before any switch: each
/// host still runs R1 and `status` says so; the release prepared
/// everywhere but never switched is never a rollback target (`rollback`
/// goes to R0, `rollback --to` it needs --force); the fleet lock died with
/// the controller, and the next deploy puts every host on one release.
#[test]
fn a_controller_killed_after_prepare_leaves_nothing_a_rollback_would_pick() {
    let w = World::new(3, Options::default());
    let r0 = w.deploy_ok();
    w.commit("VERSION", "1\n");
    let r1 = w.deploy_ok();
    w.commit("VERSION", "2\n");
    crash_at(&w, "fleet:after-prepare", &["deploy"]);
    assert_eq!(status_lives(&w), vec![Some(r1.clone()); 3]);
    let prepared: Vec<String> = w.hosts.hosts[0]
        .releases()
        .into_iter()
        .filter(|id| *id != r0 && *id != r1)
        .collect();
    assert_eq!(prepared.len(), 1, "{prepared:?}");
    let r2 = &prepared[0];
    for h in &w.hosts.hosts {
        assert!(h.releases().contains(r2), "{} lacks {r2}", h.name());
    }
    // Not without --force.
    let run = w.shipit(&["rollback", "--to", r2]);
    run.code(2);
    assert!(
        run.stderr.contains("never proved itself live"),
        "{}",
        run.stderr
    );
    assert_eq!(w.currents(), vec![Some(r1.clone()); 3]);
    let run = w.shipit(&["rollback", "--json"]);
    run.code(0);
    assert_eq!(run.json()["release"], r0.as_str());
    assert_eq!(w.currents(), vec![Some(r0.clone()); 3]);
    // The controller's --force reaches the hosts: it goes live, gated.
    let run = w.shipit(&["rollback", "--to", r2, "--force"]);
    run.code(0);
    assert_eq!(w.serving(), vec![Some(r2.clone()); 3]);
    let id = w.deploy_ok();
    assert_eq!(w.serving(), vec![Some(id); 3]);
}

/// SIGKILL after the first host switched: `status` shows host1 on R2 and
/// the others on R1; one `rollback --to R1` puts every host back on R1
/// (a proven release), and the next deploy puts every host on one release.
#[test]
fn a_controller_killed_mid_roll_is_put_right_by_one_command() {
    let w = World::new(3, Options::default());
    let r1 = w.deploy_ok();
    w.commit("VERSION", "2\n");
    crash_at(&w, "fleet:after-first-batch", &["deploy"]);
    wait_until_fleet_unlocked(&w.hosts.hosts[0]);
    let lives = status_lives(&w);
    assert_eq!(lives, w.currents());
    assert_eq!(lives[1..], [Some(r1.clone()), Some(r1.clone())]);
    let r2 = lives[0].clone().unwrap();
    assert_ne!(r2, r1);
    // A plain rollback cannot tell where to go: it says so.
    let run = w.shipit(&["rollback"]);
    run.code(2);
    assert!(run.stderr.contains("do not agree"), "{}", run.stderr);
    let run = w.shipit(&["rollback", "--to", &r1, "--json"]);
    run.code(0);
    assert_eq!(
        outcomes(&run.json()),
        ["switched", "already-live", "already-live"]
    );
    assert_eq!(w.currents(), vec![Some(r1.clone()); 3]);
    assert_eq!(w.serving(), vec![Some(r1.clone()); 3]);
    // R2 proved itself on host1 only: without --force it is not a target
    // for the fleet.
    not_a_target_and_one_deploy_puts_right(&w, &r2);
}

/// `rollback --to <id>` is refused (`id` never proved itself live on
/// every host), and the next deploy puts every host on one release.
fn not_a_target_and_one_deploy_puts_right(w: &World, id: &str) {
    let run = w.shipit(&["rollback", "--to", id]);
    run.code(2);
    assert!(
        run.stderr.contains("never proved itself live"),
        "{}",
        run.stderr
    );
    let next = w.deploy_ok();
    assert_eq!(w.serving(), vec![Some(next); w.hosts.hosts.len()]);
}

/// SIGTERM to the controller's whole job while host2 activates, then
/// SIGKILL while its revert waits for host2 (a CI runner's cancellation:
/// SIGTERM, a grace period, SIGKILL). host1 is left on R2, host2 finishes
/// on R2 by itself, host3 never left R1: `status`, from any controller,
/// says exactly that, and one `rollback --to R1` puts every host on R1.
#[test]
fn sigterm_then_sigkill_mid_activation_leaves_a_fleet_status_tells_and_one_rollback_fixes() {
    let w = World::new(3, Options::default());
    let r1 = w.deploy_ok();
    pause_host2_reload(&w);
    w.commit("PAUSE", "\n");
    fs::write(w.hosts.hosts[1].home().join(".bashrc"), "trap '' HUP\n").unwrap();
    let mut child = w.spawn(&w.config(), &["deploy", "--json"], "deploy");
    let err = w.path().join("deploy.err");
    wait_for(&w.path().join("paused"), &mut child.0, &err);
    let pid = child.0.id() as i32;
    terminate_tree(&w, pid);
    wait_for_text(&err, &format!("Reverting {}", w.hosts.hosts[1].dest));
    // The grace period is over.
    for p in std::iter::once(pid).chain(job_of(&w, pid)) {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    let _ = wait_exit(&mut child.0);
    fs::write(w.path().join("go"), "").unwrap();
    // host2's activation ends on its own (bounded).
    let deadline = Instant::now() + Duration::from_secs(120);
    while host_history(&w, 1).len() < 2 {
        assert!(Instant::now() < deadline, "host2's activation never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lives = status_lives(&w);
    assert_eq!(lives, w.currents());
    let r2 = lives[0].clone().unwrap();
    assert_ne!(r2, r1);
    assert_eq!(
        lives,
        [Some(r2.clone()), Some(r2.clone()), Some(r1.clone())]
    );
    // Another checkout sees the same.
    let teammate = w.teammate_config();
    let out = std::process::Command::new(crate::SHIPIT)
        .arg("--config")
        .arg(&teammate)
        .args(["releases", "--json"])
        .current_dir(w.path())
        .env("XDG_RUNTIME_DIR", w.hosts.runtime_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["agree"], false, "{json}");
    let run = w.shipit(&["rollback", "--to", &r1, "--json"]);
    run.code(0);
    assert_eq!(w.currents(), vec![Some(r1.clone()); 3]);
    assert_eq!(w.serving(), vec![Some(r1.clone()); 3]);
}

/// SIGTERM to the controller's whole job while it builds (every host
/// locked, nothing sent yet): nothing changes on any host, `status` says
/// so, and the fleet lock died with the job: the next deploy goes through.
#[test]
fn sigterm_to_the_process_tree_while_building_changes_nothing() {
    let w = World::new(3, Options::default());
    let r1 = w.deploy_ok();
    let root = w.path().display().to_string();
    let build = format!(
        "build = [\"if [ -e {root}/PAUSE ]; then touch {root}/paused; i=0; \
         while [ ! -e {root}/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; fi\"]\n"
    );
    let text = fs::read_to_string(w.config())
        .unwrap()
        .replace("[hooks]\n", &format!("[hooks]\n{build}"));
    fs::write(w.config(), text).unwrap();
    let before: Vec<Vec<String>> = w.hosts.hosts.iter().map(|h| h.releases()).collect();
    w.commit("VERSION", "2\n");
    fs::write(w.path().join("PAUSE"), "").unwrap();
    let mut child = w.spawn(&w.config(), &["deploy", "--json"], "deploy");
    let err = w.path().join("deploy.err");
    wait_for(&w.path().join("paused"), &mut child.0, &err);
    terminate_tree(&w, child.0.id() as i32);
    let code = wait_exit(&mut child.0);
    let said = fs::read_to_string(&err).unwrap();
    assert_ne!(code, Some(0), "{said}");
    assert_eq!(w.currents(), vec![Some(r1.clone()); 3], "{said}");
    let after: Vec<Vec<String>> = w.hosts.hosts.iter().map(|h| h.releases()).collect();
    assert_eq!(after, before, "nothing was sent anywhere");
    assert_eq!(status_lives(&w), vec![Some(r1.clone()); 3]);
    fs::remove_file(w.path().join("PAUSE")).unwrap();
    let id = w.deploy_ok();
    assert_ne!(id, r1);
}

/// A host that switched and passed its gate, but whose release could not
/// be marked proven there (its metadata replaced by a directory, as a
/// full or failing disk would refuse the write), did not record it: the
/// agent that switched says so when asked, as the disk would say to an
/// agent in a session of its own, and the rollout is reverted.
#[test]
fn a_host_that_cannot_mark_its_release_proven_fails_the_rollout() {
    let w = World::new(2, Options::default());
    let r1 = w.deploy_ok();
    // host1's reload, for a release holding UNPROVABLE, replaces the
    // metadata the proven mark is written to.
    let text = fs::read_to_string(w.config()).unwrap().replace(
        "reload = \"",
        "reload = \"if grep -qx host1 $SHIPIT_DEPLOY_TO/shared/name && [ -e UNPROVABLE ]; then \
         rm .shipit-release.json && mkdir .shipit-release.json; fi; ",
    );
    fs::write(w.config(), text).unwrap();
    w.commit("UNPROVABLE", "\n");
    let run = w.shipit(&["deploy", "--json"]);
    run.code(8);
    let report = run.json();
    assert_eq!(outcomes(&report), ["failed", "reverted"]);
    let message = report["hosts"][0]["message"].as_str().unwrap();
    assert!(message.contains("did not record it"), "{message}");
    assert!(message.contains("could not record"), "{message}");
    assert!(message.contains("as proven live"), "{message}");
    assert!(message.contains("kept the unused release"), "{message}");
    assert_eq!(w.serving(), vec![Some(r1.clone()); 2]);
    assert_eq!(status_lives(&w), vec![Some(r1); 2]);
}

/// A host's agent answers its activation once the release is live and
/// passed its gate, and records it (proven, prune, history) while the
/// controller switches the next host. SIGKILLed in between, it leaves R2
/// live there but never proven on disk: the controller learns it when it
/// asks what the host recorded, calls the host failed, and puts every host
/// back on R1. R2 is no rollback target there, and the next deploy puts
/// every host on one release.
#[test]
fn a_host_killed_after_answering_live_before_recording_fails_the_rollout() {
    let w = World::new(2, Options::default());
    let r1 = w.deploy_ok();
    let host1 = &w.hosts.hosts[0];
    let bashrc = host1.home().join(".bashrc");
    fs::write(
        &bashrc,
        "export SHIPIT_TEST_CRASH_AT=fleet-agent:before-recording\n",
    )
    .unwrap();
    w.commit("VERSION", "2\n");
    let run = w.shipit(&["deploy", "--json"]);
    fs::remove_file(&bashrc).unwrap();
    run.code(8);
    let report = run.json();
    assert_eq!(outcomes(&report), ["failed", "reverted"]);
    let message = report["hosts"][0]["message"].as_str().unwrap();
    assert!(message.contains("did not record it"), "{message}");
    assert!(message.contains("not recorded as proven"), "{message}");
    assert_eq!(w.serving(), vec![Some(r1.clone()); 2]);
    assert_eq!(status_lives(&w), vec![Some(r1.clone()); 2]);
    // R2 is listed on host1 as switched away from, never proven there.
    let releases = w.shipit(&["releases", "--json"]);
    releases.code(0);
    let r2 = report["release"].as_str().unwrap().to_string();
    let on_host1 = releases.json()["hosts"][0]["state"]["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == r2.as_str())
        .cloned()
        .unwrap();
    assert_eq!(on_host1["proven"], false, "{on_host1}");
    not_a_target_and_one_deploy_puts_right(&w, &r2);
}
