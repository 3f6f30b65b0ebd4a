//! Run one shell hook: `sh -c`, env, cwd, timeout, process group, log.
//!
//! Three traps shape this module:
//! - Killing `sh -c` does not kill what it started, and those children keep
//!   the output pipe open. Each hook runs in its own process group, and a
//!   timeout or interrupt signals the whole group (SIGTERM, a grace period,
//!   then SIGKILL).
//! - A reload script that starts a daemon hands it the hook's stdout; the
//!   pipe then never reaches EOF. Once the hook's own process has exited we
//!   wait only [`OUTPUT_GRACE`] for the rest of its output.
//! - Values from outside (branch names, refs, release ids) reach the shell
//!   only as environment variables, never spliced into the command text.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::error::{Error, Kind, Result};
use crate::interrupt;
use crate::procs;
use crate::ui::Ui;

/// How long to keep reading output after the hook's process has exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// How long a process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Longest line kept whole; longer output is split (bounds memory).
const MAX_LINE: usize = 16 * 1024;

pub struct Hook<'a> {
    /// `build` or `reload`: the prefix of its output lines.
    pub name: &'a str,
    pub command: &'a str,
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
    pub timeout: Duration,
}

enum Msg {
    Line(Vec<u8>),
    Eof,
}

/// Run `hook`, streaming its output to `ui` and appending it to `log`.
pub fn run(hook: &Hook, ui: &Ui, mut log: Option<&mut File>) -> Result<()> {
    let failed =
        |what: String| Error::internal(format!("{} hook `{}` {what}", hook.name, hook.command));
    let (reader, writer) = io::pipe().map_err(|e| failed("could not start".into()).cause(e))?;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(hook.command)
        .current_dir(hook.cwd)
        .stdin(Stdio::null())
        .stdout(
            writer
                .try_clone()
                .map_err(|e| failed("could not start".into()).cause(e))?,
        )
        .stderr(writer)
        .process_group(0);
    procs::die_with_shipit(&mut command);
    // Git's hook environment must not leak into the build (SPEC §6).
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            command.env_remove(key);
        }
    }
    command.envs(hook.env.iter().map(|(k, v)| (k, v)));
    let mut child = command
        .spawn()
        .map_err(|e| failed(format!("could not start in {}", hook.cwd.display())).cause(e))?;
    // Our copies of the pipe's write end live in `command`: drop them so the
    // reader sees EOF when the hook (and whatever it started) is done.
    drop(command);

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || read_lines(reader, tx));

    let mut log_line = |line: &[u8]| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        ui.hook_line(hook.name, text);
        if let Some(log) = log.as_deref_mut() {
            let _ = writeln!(log, "{} | {text}", hook.name);
        }
    };

    let deadline = Instant::now() + hook.timeout;
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let mut stopped: Option<Error> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(25)) {
            Ok(Msg::Line(line)) => {
                log_line(&line);
                continue;
            }
            Ok(Msg::Eof) | Err(RecvTimeoutError::Disconnected) => {
                if exited.is_some() {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        match exited {
            Some((_, at)) if at.elapsed() >= OUTPUT_GRACE => break,
            Some(_) => continue,
            None => {}
        }
        if let Some(status) = child
            .try_wait()
            .map_err(|e| failed("could not be waited for".into()).cause(e))?
        {
            exited = Some((status, Instant::now()));
            continue;
        }
        let reason = if interrupt::requested() {
            Some(Error::new(
                Kind::Interrupted,
                format!("{} hook `{}` was interrupted", hook.name, hook.command),
            ))
        } else if Instant::now() >= deadline {
            Some(
                failed(format!(
                    "timed out after {}",
                    humantime::format_duration(hook.timeout)
                ))
                .hint(format!(
                    "make the hook faster or raise hooks.{}_timeout in shipit.toml",
                    hook.name
                )),
            )
        } else {
            None
        };
        if let Some(reason) = reason {
            let status = stop_group(&mut child);
            stopped = Some(reason);
            exited = Some((status, Instant::now()));
        }
    }
    if let Some(err) = stopped {
        return Err(err);
    }
    let (status, _) = exited.expect("loop ends only after exit");
    if status.success() {
        Ok(())
    } else {
        let how = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => format!("failed ({status})"),
        };
        Err(failed(how))
    }
}

/// SIGTERM the hook's process group, give it [`KILL_GRACE`], then SIGKILL.
fn stop_group(child: &mut Child) -> ExitStatus {
    let group = Pid::from_raw(child.id() as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + KILL_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            // The shell is gone; make sure its children are too.
            let _ = killpg(group, Signal::SIGKILL);
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(group, Signal::SIGKILL);
    child.wait().expect("a killed child can be reaped")
}

fn read_lines(mut reader: io::PipeReader, tx: mpsc::Sender<Msg>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            if tx.send(Msg::Line(line)).is_err() {
                return;
            }
        }
        if pending.len() > MAX_LINE {
            let line = std::mem::take(&mut pending);
            if tx.send(Msg::Line(line)).is_err() {
                return;
            }
        }
    }
    if !pending.is_empty() {
        let _ = tx.send(Msg::Line(pending));
    }
    let _ = tx.send(Msg::Eof);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_sh(command: &str, timeout: Duration) -> (Result<()>, String, Duration) {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("log");
        let mut log = File::create(&log_path).unwrap();
        let env = vec![("SHIPIT_RELEASE".to_string(), "20260101000000".to_string())];
        let hook = Hook {
            name: "build",
            command,
            cwd: dir.path(),
            env: &env,
            timeout,
        };
        let start = Instant::now();
        let result = run(&hook, &Ui::new(true), Some(&mut log));
        (
            result,
            std::fs::read_to_string(&log_path).unwrap(),
            start.elapsed(),
        )
    }

    #[test]
    fn output_is_logged_and_env_is_passed() {
        let (r, log, _) = run_sh(
            "echo out; echo err >&2; echo \"$SHIPIT_RELEASE\"",
            Duration::from_secs(10),
        );
        r.unwrap();
        assert_eq!(log, "build | out\nbuild | err\nbuild | 20260101000000\n");
    }

    #[test]
    fn a_failing_hook_names_its_status() {
        let (r, _, _) = run_sh("exit 3", Duration::from_secs(10));
        assert!(r.unwrap_err().message.contains("exited with status 3"));
    }

    #[test]
    fn a_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-survived");
        let cmd = format!("(sleep 3; touch '{}') & sleep 30", marker.display());
        let (r, _, took) = run_sh(&cmd, Duration::from_millis(300));
        let err = r.unwrap_err();
        assert!(err.message.contains("timed out"), "{err}");
        assert!(took < Duration::from_secs(10), "took {took:?}");
        std::thread::sleep(Duration::from_secs(4));
        assert!(!marker.exists(), "the grandchild outlived the timeout");
    }

    #[test]
    fn a_daemon_holding_the_pipe_does_not_hang_the_hook() {
        // The background sleep inherits stdout and outlives the hook.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("daemon.pid");
        let cmd = format!("sleep 20 & echo $! > '{}'; echo started", pidfile.display());
        let (r, log, took) = run_sh(&cmd, Duration::from_secs(30));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        r.unwrap();
        assert!(log.contains("started"));
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }
}
