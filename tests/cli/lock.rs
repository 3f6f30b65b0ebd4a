//! The deploy lock: a second mutating command fails fast naming the holder,
//! or waits with --wait; read-only commands never block.

use std::time::Duration;

use crate::sandbox::{Sandbox, kill};

#[test]
fn a_second_deploy_fails_at_once_naming_the_holder_or_waits() {
    let sb = Sandbox::new();
    let gate = sb.path().join("gate");
    sb.write_config(&format!(
        "[hooks]\nbuild = [\"while [ ! -e '{}' ]; do sleep 0.05; done\"]\n",
        gate.display()
    ));
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
    let first_status = first.wait().unwrap();
    let waiter_status = waiter.wait().unwrap();
    kill(first.id());
    kill(waiter.id());
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
