//! The deploy lock: a second mutating command fails fast naming the holder,
//! or waits with --wait; read-only commands never block.

use std::time::Duration;

use crate::sandbox::{Sandbox, wait_bounded};

#[test]
fn a_second_deploy_fails_at_once_naming_the_holder_or_waits() {
    let sb = Sandbox::new();
    let gate = sb.builds_wait_for_gate();
    let mut first = sb.spawn_deploy_holding_lock();

    let busy = sb.run(&["deploy"]);
    busy.code(6)
        .says(&format!("pid {}", first.id()))
        .says("shipit deploy")
        .says("--wait")
        .says("live now: nothing");
    // Read-only commands do not take the lock.
    sb.run(&["releases"]).ok();
    sb.run(&["history"]).ok();

    let mut waiter = sb
        .command(&["deploy", "--wait=30s"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(waiter.try_wait().unwrap().is_none(), "the waiter must wait");
    std::fs::write(&gate, "").unwrap();
    let first_status = wait_bounded(&mut first, Duration::from_secs(120));
    let waiter_status = wait_bounded(&mut waiter, Duration::from_secs(120));
    assert!(first_status.success());
    assert!(waiter_status.success());
    assert_eq!(sb.releases().len(), 2);
    let deploys = sb
        .history_json()
        .iter()
        .filter(|e| e["event"] == "deploy" && e["outcome"] == "ok")
        .count();
    assert_eq!(deploys, 2);
}

#[test]
fn the_lock_frees_itself_when_its_holder_is_killed() {
    let sb = Sandbox::new();
    sb.write_config("[hooks]\nbuild = [\"sleep 30\"]\n");
    let mut first = sb.spawn_deploy_holding_lock();
    first.kill().unwrap();
    first.wait().unwrap();
    sb.write_config("");
    sb.run(&["deploy"]).ok();
}

/// The lock file of `sb` names `pid`, with this host, as its holder.
fn record_holder(sb: &Sandbox, pid: u32) {
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    std::fs::write(
        sb.deploy_to().join(".shipit/lock"),
        format!(
            "{{\"pid\":{pid},\"user\":\"root\",\"host\":\"{host}\",\"command\":\"shipit deploy\",\
             \"since\":\"2026-01-01T00:00:00Z\"}}\n"
        ),
    )
    .unwrap();
}

/// A pid that no process has any more.
fn gone_pid() -> u32 {
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    gone.id()
}

/// Regression: right after a deploy was SIGKILLed (and waited for), the next
/// deploy found the lock held, "0s ago", by the dead deploy: a child it had
/// forked but not yet exec'd still had the lock's descriptor (close-on-exec
/// is not close-on-fork) and was about to die. Here a running deploy plays
/// that child (a shipit process the lock file does not name, about to
/// release the lock), while the lock file names a holder that is gone. The
/// deploy waits it out instead of failing.
#[test]
fn a_lock_left_to_a_dying_shipit_is_waited_out() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    let gate = sb.builds_wait_for_gate();
    sb.commit("index.html", "v2\n");
    let mut child = sb.spawn_deploy_holding_lock();
    record_holder(&sb, gone_pid());
    std::fs::write(&gate, "").unwrap();
    let run = sb.run(&["deploy"]);
    assert!(wait_bounded(&mut child, Duration::from_secs(120)).success());
    run.ok();
    assert_ne!(sb.current().unwrap(), first);
}

/// Regression: with the lock held by a live process that the lock file does
/// not name (a `sh` that inherited the descriptor from a killed shipit), a
/// deploy waited 3 s, then named the holder recorded in the file, a pid
/// that had exited long ago. Here `flock(1)` takes the lock, hands the
/// descriptor to its child and is killed: the child holds the lock,
/// `/proc/locks` still names flock, and the file names another dead pid.
/// The refusal names the child, at once (no wait for a dying holder).
#[test]
fn a_lock_held_by_a_process_the_lock_file_does_not_name_is_refused_naming_it() {
    let sb = Sandbox::new();
    sb.deploy();
    let dead = gone_pid();
    record_holder(&sb, dead);
    let ready = sb.path().join("child-holds-the-lock");
    let mut flock = std::process::Command::new("flock")
        .arg(sb.deploy_to().join(".shipit/lock"))
        .args([
            "sh",
            "-c",
            "echo $$ > \"$0.tmp\" && mv \"$0.tmp\" \"$0\" && exec sleep 60",
        ])
        .arg(&ready)
        .spawn()
        .expect("flock (util-linux) runs");
    crate::sandbox::wait_until(
        "flock's child to hold the lock",
        Duration::from_secs(20),
        || ready.exists(),
    );
    let holder: u32 = std::fs::read_to_string(&ready)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    flock.kill().unwrap();
    flock.wait().unwrap();

    let busy = sb.run(&["deploy"]);
    crate::sandbox::kill(holder);
    busy.code(6)
        .says(&format!("held by pid {holder} ("))
        .says("running `sleep 60`")
        .says(&format!("the lock file names pid {dead} "))
        .says("which has exited")
        .says(&format!("ps -fp {holder}"));
    assert!(
        !busy.stderr.contains(&format!("held by pid {dead}")),
        "{}",
        busy.stderr
    );
}

/// While the holder is still gating the release it swapped in, a refused
/// command says that release is not proven yet; after `--wait=DURATION`
/// ran out, the hint does not tell the user to pass `--wait`.
#[test]
fn a_refusal_during_a_gate_says_the_live_release_is_not_proven_yet() {
    let sb = Sandbox::new();
    let _server = sb.with_server("", "timeout = \"120s\"");
    let first = sb.deploy();
    sb.commit("no-start", "");
    let mut gating = sb.spawn_deploy_holding_lock();
    crate::sandbox::wait_until("the deploy to swap", Duration::from_secs(60), || {
        sb.current().is_some_and(|c| c != first)
    });
    let new = sb.current().unwrap();
    let busy = sb.run(&["rollback", "--wait=1s"]);
    busy.code(6)
        .says("still held after waiting 1s")
        .says(&format!("ps -fp {}", gating.id()))
        .says(&format!(
            "live now: releases/{new} (put live by the running command, which has not finished checking it)"
        ));
    assert!(!busy.stderr.contains("pass --wait"), "{}", busy.stderr);
    sb.run(&["rollback"]).code(6).says("pass --wait[=DURATION]");
    // Interrupted, the gating deploy rolls back.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gating.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_bounded(&mut gating, Duration::from_secs(120));
    assert_eq!(sb.current().unwrap(), first);
    sb.run(&["status"]).ok();
}

/// `fleet-agent recorded`, which a fleet controller asks in a session of
/// its own when the agent that switched a host is gone, answers from the
/// disk when the release is live and proven, whoever holds the deploy lock
/// meanwhile (a deploy, a cron prune): it waits for the lock a moment, not
/// 60 s, and does not report a rollout that succeeded as failed.
#[test]
fn fleet_agent_recorded_answers_a_proven_live_release_while_another_command_holds_the_lock() {
    let sb = Sandbox::new();
    let live = sb.deploy();
    let gate = sb.builds_wait_for_gate();
    let mut holder = sb.spawn_deploy_holding_lock();

    let asked = sb.run(&["fleet-agent", "recorded", "--id", &live]);
    std::fs::write(&gate, "").unwrap();
    assert!(wait_bounded(&mut holder, Duration::from_secs(120)).success());
    asked.ok();
    let answer = format!("\"action\":\"activated\",\"release\":\"{live}\"");
    assert!(asked.stdout.contains(&answer), "{}", asked.stdout);
}
