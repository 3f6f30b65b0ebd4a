//! SIGINT / SIGTERM before the swap: clean up, stop the hook's whole
//! process group, release the lock, exit 130.

use std::fs;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::sandbox::{Sandbox, dir_names, wait_bounded, wait_until};

fn interrupt_during_build(signal: Signal) {
    let sb = Sandbox::new();
    let first = sb.deploy();
    let pidfile = sb.path().join("hook.pid");
    sb.write_config(&format!(
        "[hooks]\nbuild = [\"sleep 60 & echo $! > '{}'; wait\"]\n",
        pidfile.display()
    ));
    let mut deploy = sb
        .command(&["deploy"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the build hook to start", Duration::from_secs(20), || {
        fs::read_to_string(&pidfile).is_ok_and(|t| t.ends_with('\n'))
    });
    let hook_pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill(Pid::from_raw(deploy.id() as i32), signal).unwrap();
    let status = deploy.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted deploys exit 130");
    let hook_alive = kill(Pid::from_raw(hook_pid), None).is_ok()
        && !fs::read_to_string(format!("/proc/{hook_pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ");
    if hook_alive {
        let _ = kill(Pid::from_raw(hook_pid), Signal::SIGKILL);
    }
    assert!(!hook_alive, "the hook's child survived the interrupt");
    assert_eq!(sb.current().unwrap(), first);
    assert_eq!(sb.releases(), [first]);
    assert!(dir_names(&sb.deploy_to().join(".shipit/staging")).is_empty());
    assert_eq!(sb.history_json()[0]["outcome"], "interrupted");
    // The lock was released.
    sb.write_config("");
    sb.run(&["deploy"]).ok();
}

#[test]
fn sigterm_before_the_swap_cleans_up() {
    interrupt_during_build(Signal::SIGTERM);
}

#[test]
fn sigint_before_the_swap_cleans_up() {
    interrupt_during_build(Signal::SIGINT);
}

/// Regression: SIGHUP (the terminal or SSH session closed) during the gate
/// killed shipit outright and left the failing release live.
#[test]
fn sighup_during_the_gate_rolls_back_before_exiting() {
    let sb = Sandbox::new();
    let _server = sb.with_server("", "timeout = \"60s\"");
    let first = sb.deploy();
    sb.commit("no-start", "");
    let mut deploy = sb
        .command(&["deploy"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the swap to the new release",
        Duration::from_secs(30),
        || sb.current().is_some_and(|c| c != first),
    );
    // The swap is followed by the reload; the gate polls from then on.
    let log = sb
        .deploy_to()
        .join(".shipit/logs")
        .join(format!("{}.log", sb.current().unwrap()));
    wait_until("the reload hook to finish", Duration::from_secs(30), || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("started server"))
    });
    kill(Pid::from_raw(deploy.id() as i32), Signal::SIGHUP).unwrap();
    let status = wait_bounded(&mut deploy, Duration::from_secs(120));
    assert_eq!(status.code(), Some(130), "{status}");
    assert_eq!(sb.current().unwrap(), first);
    assert_eq!(sb.history_json()[0]["outcome"], "interrupted");
}

/// `nohup shipit deploy` asked to finish after a logout: a SIGHUP that the
/// caller set to be ignored stays ignored.
#[test]
fn a_deploy_under_nohup_finishes_after_a_hangup() {
    let sb = Sandbox::new();
    let gate = sb.path().join("gate");
    let building = sb.path().join("building");
    sb.write_config(&format!(
        "[hooks]\nbuild = [\"touch '{}'; i=0; while [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\"]\n",
        building.display(),
        gate.display()
    ));
    let mut command = sb.command(&["deploy"]);
    command.stderr(std::process::Stdio::null());
    // SAFETY: signal(2) is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            nix::libc::signal(nix::libc::SIGHUP, nix::libc::SIG_IGN);
            Ok(())
        });
    }
    let mut deploy = command.spawn().unwrap();
    wait_until("the build to start", Duration::from_secs(30), || {
        building.exists()
    });
    kill(Pid::from_raw(deploy.id() as i32), Signal::SIGHUP).unwrap();
    fs::write(&gate, "").unwrap();
    let status = wait_bounded(&mut deploy, Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(sb.current().is_some(), "the deploy finished");
}
