//! Output that dies mid-deploy (a closed pipe, a terminal that went away)
//! must not stop the deploy: it still rolls back, records history and exits
//! with the code of what happened.

use std::process::Stdio;
use std::time::Duration;

use crate::sandbox::{SHIPIT, Sandbox, wait_bounded};

/// A deploy whose gate fails (status 500), after its first release went
/// live; returns the first release.
fn failing_deploy_world(sb: &Sandbox) -> (String, crate::sandbox::Server) {
    let server = sb.with_server("", "timeout = \"3s\"");
    let first = sb.deploy();
    sb.commit("health-status", "500\n");
    (first, server)
}

#[track_caller]
fn assert_rolled_back(sb: &Sandbox, first: &str) {
    assert_eq!(sb.current().unwrap(), first);
    let last = &sb.history_json()[0];
    assert_eq!(last["outcome"], "rolled-back", "{last}");
    assert_eq!(last["live"], first, "{last}");
}

/// Regression: the first diagnostic written into a pipe without a reader
/// panicked (exit 101), leaving the failing release live and no history.
#[test]
fn a_closed_stderr_pipe_does_not_stop_the_rollback() {
    let sb = Sandbox::new();
    let (first, _server) = failing_deploy_world(&sb);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut deploy = sb
        .command(&["deploy"])
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut deploy, Duration::from_secs(120));
    assert_eq!(status.code(), Some(4), "rolled back, not a panic: {status}");
    assert_rolled_back(&sb, &first);
}

/// Opens a terminal, runs the command with stderr on it, and hangs the
/// terminal up (closes its master side) as soon as the command first
/// writes: from then on every write fails with EIO. Prints the exit code.
const HANG_UP: &str = r#"
import os, pty, subprocess, sys
master, slave = pty.openpty()
child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=slave)
os.close(slave)
os.read(master, 1)
os.close(master)
print(child.wait())
"#;

/// The same with a terminal that goes away while the progress spinner
/// (shown only on a terminal) is drawing.
#[test]
fn a_terminal_that_goes_away_does_not_stop_the_rollback() {
    let sb = Sandbox::new();
    let (first, _server) = failing_deploy_world(&sb);
    let mut wrapper = sb
        .command_with("python3", &["-c", HANG_UP, SHIPIT, "deploy"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(&mut wrapper, Duration::from_secs(120));
    let out = wrapper.wait_with_output().unwrap();
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        code,
        "4",
        "rolled back, not a panic (stderr: {})",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_rolled_back(&sb, &first);
}
