//! Hooks that misbehave: endless output, daemons on the output pipe,
//! processes left behind by a killed shipit.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::sandbox::{Sandbox, alive, wait_bounded, wait_until};

/// Regression: `yes` never pauses, and the old loop only checked the
/// deadline when no line was waiting, so the hook ran (and shipit's memory
/// grew) forever while the lock stayed held.
#[test]
fn a_hook_that_prints_without_pause_still_times_out() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    sb.write_config("[hooks]\nbuild = [\"yes tick\"]\nbuild_timeout = \"1s\"\n");
    let mut deploy = sb
        .command(&["deploy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut deploy, Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(3),
        "a build timeout fails before the swap"
    );
    assert_eq!(sb.current().unwrap(), first);
    assert_eq!(sb.releases(), [first]);
    let last = &sb.history_json()[0];
    assert!(
        last["message"].as_str().unwrap_or("").contains("timed out"),
        "{last}"
    );
    // The lock was released.
    sb.write_config("");
    sb.run(&["deploy"]).ok();
}

#[test]
fn sigterm_stops_a_hook_that_prints_without_pause() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    sb.write_config("[hooks]\nbuild = [\"yes tick\"]\nbuild_timeout = \"10m\"\n");
    let mut deploy = sb
        .command(&["deploy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let logs = sb.deploy_to().join(".shipit/logs");
    wait_until("the build to print", Duration::from_secs(30), || {
        crate::sandbox::dir_names(&logs).iter().any(|name| {
            fs::read_to_string(logs.join(name)).is_ok_and(|t| t.contains("build | tick"))
        })
    });
    kill(Pid::from_raw(deploy.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_bounded(&mut deploy, Duration::from_secs(60));
    assert_eq!(status.code(), Some(130));
    assert_eq!(sb.current().unwrap(), first);
    assert_eq!(sb.releases(), [first]);
    sb.write_config("");
    sb.run(&["deploy"]).ok();
}

/// Regression: the daemon's stdout was shipit's pipe, so its first write
/// after shipit exited killed it with SIGPIPE.
#[test]
fn a_daemon_started_by_the_reload_hook_outlives_the_deploy() {
    let sb = Sandbox::new();
    let pidfile = sb.path().join("daemon.pid");
    let beats = sb.path().join("beats");
    sb.write_config(&format!(
        "[hooks]\nreload = \"\"\"\
         (while :; do echo tick; echo beat >> '{beats}'; sleep 0.05; done) & \
         echo $! > '{pid}'; echo daemon started\"\"\"\n",
        beats = beats.display(),
        pid = pidfile.display()
    ));
    let run = sb.run(&["deploy"]);
    let pid: u32 = fs::read_to_string(&pidfile)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .expect("the reload hook wrote the daemon's pid");
    let lines = || fs::read_to_string(&beats).map_or(0, |t| t.lines().count());
    // shipit has exited: the daemon must keep running and writing.
    let after_exit = lines();
    let mut survived = true;
    let mut last_seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lines() < after_exit + 20 {
        if !alive(pid) || std::time::Instant::now() >= deadline {
            survived = false;
            break;
        }
        last_seen = lines();
        std::thread::sleep(Duration::from_millis(20));
    }
    let still_alive = alive(pid);
    crate::sandbox::kill(pid);
    run.ok().says("daemon started");
    assert!(
        survived && still_alive,
        "the daemon died after the deploy (alive: {still_alive}; {after_exit} beats at exit, \
         {last_seen} last seen)"
    );
}

/// Regression: a reload hook that left a daemon printing without pause on
/// its output hung the deploy: the loop never got past the stream of lines
/// to notice that the hook itself had exited.
#[test]
fn a_chatty_daemon_started_by_the_reload_hook_does_not_hang_the_deploy() {
    let sb = Sandbox::new();
    let pidfile = sb.path().join("daemon.pid");
    sb.write_config(&format!(
        "[hooks]\nreload = \"yes tick & echo $! > '{}'\"\nreload_timeout = \"10m\"\n",
        pidfile.display()
    ));
    let mut deploy = sb
        .command(&["deploy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_bounded(&mut deploy, Duration::from_secs(60))
    }));
    let pid: Option<u32> = fs::read_to_string(&pidfile)
        .ok()
        .and_then(|p| p.trim().parse().ok());
    let daemon_alive = pid.is_some_and(alive);
    if let Some(pid) = pid {
        crate::sandbox::kill(pid);
    }
    let status = ended.unwrap_or_else(|_| panic!("the deploy hung on the daemon's output"));
    assert_eq!(status.code(), Some(0));
    assert!(
        daemon_alive,
        "the daemon was stopped; reload daemons must keep running"
    );
}

/// Regression: the build hook's shell died with shipit, but what it had
/// started in the background kept running, orphaned.
#[test]
fn a_sigkilled_deploy_leaves_no_build_hook_process_behind() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    let pidfile = sb.path().join("grandchild.pid");
    sb.write_config(&format!(
        "[hooks]\nbuild = [\"sleep 120 & echo $! > '{}'; wait\"]\n",
        pidfile.display()
    ));
    let mut deploy = sb
        .command(&["deploy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the build hook to start", Duration::from_secs(30), || {
        fs::read_to_string(&pidfile).is_ok_and(|t| t.ends_with('\n'))
    });
    let grandchild: u32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill(Pid::from_raw(deploy.id() as i32), Signal::SIGKILL).unwrap();
    wait_bounded(&mut deploy, Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while alive(grandchild) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survived = alive(grandchild);
    crate::sandbox::kill(grandchild);
    assert!(
        !survived,
        "the build hook's background process outlived shipit"
    );
    assert_eq!(sb.current().unwrap(), first);
}
