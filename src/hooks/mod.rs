//! Run one shell hook: `sh -c`, env, cwd, timeout, process group, log.
//!
//! Five traps shape this module:
//! - Killing `sh -c` does not kill what it started, and those children keep
//!   the output pipe open. Each hook runs in its own process group, and a
//!   timeout or interrupt signals the whole group (SIGTERM, a grace period,
//!   then SIGKILL).
//! - A hook can print without pause (`yes`). The loop below handles one
//!   line per turn and checks the deadline and the interrupt flag on every
//!   turn, and the queue between the reader thread and the loop is bounded:
//!   a hook that prints faster than we log simply blocks on its pipe.
//! - A reload script that starts a daemon hands it the hook's stdout; the
//!   pipe then never reaches EOF. Once the hook's own process has exited we
//!   wait only [`OUTPUT_GRACE`] for the rest of its output, then hand the
//!   pipe to a detached drain (`cat >/dev/null` in a session of its own), so
//!   the daemon never writes into a pipe without a reader (SIGPIPE) after
//!   shipit exits.
//! - Build hooks must not leave anything running, even when shipit itself
//!   is SIGKILLed. A guard process (see [`Guard`]) kills the build hook's
//!   process group when shipit dies before the hook ends; when the shell
//!   exits normally, what it left in its group is stopped. Reload hooks
//!   legitimately start daemons and are left alone.
//! - Values from outside (branch names, refs, release ids) reach the shell
//!   only as environment variables, never spliced into the command text.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use nix::sys::signal::killpg;
use nix::unistd::Pid;

use crate::error::{self, Error, Result};
use crate::interrupt;
use crate::procs;
use crate::ui::Ui;

mod supervisor;

use supervisor::{Graces, Next, Stop, Supervisor};

/// How long to keep reading output after the hook's process has exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// How long a process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Longest line kept whole; longer output is split (bounds memory).
const MAX_LINE: usize = 16 * 1024;
/// Lines in flight between the reader thread and the loop (bounds memory:
/// at most this many lines of [`MAX_LINE`] bytes).
const QUEUE: usize = 256;
/// How often the loop wakes with nothing to do, to notice an interrupt (the
/// signal handler only sets a flag). The hook's exit and its output wake
/// the loop at once.
const TICK: Duration = Duration::from_millis(50);

/// Which hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Build,
    Migrate,
    Reload,
    Notify,
    /// A slot's `start`, `stop` and `switch` commands.
    SlotStart,
    SlotStop,
    SlotSwitch,
    /// A fleet host's `drain` and `undrain` commands.
    Drain,
    Undrain,
}

impl Kind {
    /// The hook's name: the prefix of its output lines.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Build => "build",
            Kind::Migrate => "migrate",
            Kind::Reload => "reload",
            Kind::Notify => "notify",
            Kind::SlotStart => "start",
            Kind::SlotStop => "stop",
            Kind::SlotSwitch => "switch",
            Kind::Drain => "drain",
            Kind::Undrain => "undrain",
        }
    }

    /// Build and migrate hooks produce files and schema changes, never
    /// processes that should keep running: nothing they start may outlive
    /// them. Other hooks (reload, slot start) exist to start daemons.
    fn contained(self) -> bool {
        matches!(self, Kind::Build | Kind::Migrate)
    }
}

pub struct Hook<'a> {
    pub kind: Kind,
    pub command: &'a str,
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
    pub timeout: Duration,
    /// The config key that sets `timeout`, for the hint when it runs out.
    pub timeout_key: &'a str,
}

/// Run the commands of hook `kind` in order in `cwd`, each announced as
/// `verb` and only if no interrupt arrived: the first that fails stops
/// the rest. Output goes to `ui` and `log`.
pub fn run_each(
    kind: Kind,
    verb: &str,
    commands: &[String],
    (cwd, env): (&Path, &[(String, String)]),
    (timeout, timeout_key): (Duration, &str),
    ui: &Ui,
    log: &mut File,
) -> Result<()> {
    for command in commands {
        interrupt::check()?;
        ui.step(verb, command);
        let hook = Hook {
            kind,
            command,
            cwd,
            env,
            timeout,
            timeout_key,
        };
        run(&hook, ui, Some(&mut *log))?;
    }
    Ok(())
}

enum Msg {
    Line(Vec<u8>),
    Eof,
    Exited(io::Result<ExitStatus>),
}

/// Run `hook`, streaming its output to `ui` and appending it to `log`.
pub fn run(hook: &Hook, ui: &Ui, log: Option<&mut File>) -> Result<()> {
    run_with_stdin(hook, ui, log, None)
}

/// [`run`], with `input` on the hook's stdin instead of nothing (the
/// notify hook reads its event there). A hook that does not read it is
/// not waited for: the input is written from a thread of its own.
pub fn run_with_stdin(
    hook: &Hook,
    ui: &Ui,
    mut log: Option<&mut File>,
    input: Option<&[u8]>,
) -> Result<()> {
    let failed = |what: String| {
        Error::internal(format!(
            "{} hook `{}` {what}",
            hook.kind.name(),
            hook.command
        ))
    };
    let (reader, writer) = io::pipe().map_err(|e| failed("could not start".into()).cause(e))?;
    // A second handle on the read end, to pass to the drain if a daemon
    // still holds the pipe when the hook is done.
    let spare = if hook.kind.contained() {
        None
    } else {
        reader.try_clone().ok()
    };
    let mut guard = if hook.kind.contained() {
        Some(Guard::start().map_err(|e| failed("could not start".into()).cause(e))?)
    } else {
        None
    };
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(hook.command)
        .current_dir(hook.cwd)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(
            writer
                .try_clone()
                .map_err(|e| failed("could not start".into()).cause(e))?,
        )
        .stderr(writer)
        .process_group(0);
    procs::die_with_shipit(&mut command);
    // Git's hook environment must not leak into the build (SPEC §6).
    crate::procs::without_git_env(&mut command);
    // `[env]` and `env_file` first: the hook's own SHIPIT_* variables win.
    command.envs(crate::hookenv::vars());
    command.envs(hook.env.iter().map(|(k, v)| (k, v)));
    let mut child = command
        .spawn()
        .map_err(|e| failed(format!("could not start in {}", hook.cwd.display())).cause(e))?;
    // Our copies of the pipe's write end live in `command`: drop them so the
    // reader sees EOF when the hook (and whatever it started) is done.
    drop(command);
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let input = input.to_vec();
        // A hook that exits without reading makes this fail (EPIPE): fine.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let group = Pid::from_raw(child.id() as i32);
    if let Some(guard) = guard.as_mut() {
        guard.watch(group);
    }

    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let exit_tx = tx.clone();
    std::thread::spawn(move || read_lines(reader, tx));
    // A blocking wait in a thread: the loop learns of the exit at once,
    // without polling.
    std::thread::spawn(move || {
        let _ = exit_tx.send(Msg::Exited(child.wait()));
    });

    let mut log_line = |line: &[u8]| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        ui.hook_line(hook.kind.name(), text);
        if let Some(log) = log.as_deref_mut() {
            // Colour codes are for terminals; a log is read with less and grep.
            let _ = writeln!(
                log,
                "{} | {}",
                hook.kind.name(),
                console::strip_ansi_codes(text)
            );
        }
    };

    let graces = Graces {
        output: OUTPUT_GRACE,
        kill: KILL_GRACE,
        tick: TICK,
    };
    let deadline = crate::clock::after(hook.timeout);
    let mut supervisor = Supervisor::new(deadline, hook.kind.contained(), graces);
    let mut status: Option<io::Result<ExitStatus>> = None;
    let mut spare = spare;
    loop {
        let now = Instant::now();
        for signal in supervisor.signals(now, interrupt::requested()) {
            let _ = killpg(group, signal);
        }
        let wake = match supervisor.next(now, || killpg(group, None).is_err()) {
            Next::Wake(at) => at,
            Next::Done => break,
            Next::Abandon => {
                if let Some(spare) = spare.take() {
                    drain(spare);
                }
                break;
            }
        };
        match rx.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(Msg::Line(line)) => log_line(&line),
            Ok(Msg::Eof) => supervisor.eof(),
            Ok(Msg::Exited(exit)) => {
                status = Some(exit);
                supervisor.exited(Instant::now());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // Both threads are done: the pipe is closed and the child
                // reaped (the waiter always reports before it ends).
                supervisor.eof();
                if !supervisor.has_exited() {
                    status = Some(Err(io::Error::other("the thread waiting for it ended")));
                    supervisor.exited(Instant::now());
                }
            }
        }
    }
    // The reader thread may still be blocked on a pipe a daemon holds: it
    // ends on its next line, once it finds nobody listening.
    drop(rx);
    if let Some(guard) = guard {
        guard.release();
    }
    match supervisor.stopped() {
        Some(Stop::Interrupted) => {
            return Err(Error::new(
                error::Kind::Interrupted,
                format!(
                    "{} hook `{}` was interrupted",
                    hook.kind.name(),
                    hook.command
                ),
            ));
        }
        Some(Stop::TimedOut) => {
            return Err(failed(format!(
                "timed out after {}",
                humantime::format_duration(hook.timeout)
            ))
            .hint(format!(
                "make the hook faster or raise {} in shipit.toml",
                hook.timeout_key
            )));
        }
        None => {}
    }
    let status = status.expect("the loop ends only after the exit");
    let status = status.map_err(|e| failed("could not be waited for".into()).cause(e))?;
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

/// Keep reading a pipe that a daemon started by a hook still writes to,
/// after shipit is gone: `cat >/dev/null` in a session of its own, so
/// neither shipit's exit nor a terminal hangup ends it. It exits when the
/// last writer closes the pipe. Its output is discarded: a daemon that
/// wants its output kept must redirect it (docs/configuration.md, "Hook output").
fn drain(reader: io::PipeReader) {
    let mut command = Command::new("cat");
    // Its working directory is `/`: one inherited from shipit could be a
    // release, which it would then pin for as long as the daemon runs.
    command
        .stdin(reader)
        .current_dir("/")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    // If it cannot start, the daemon meets a closed pipe later: nothing
    // better to do, and the deploy itself is fine.
    let _ = command.spawn();
}

/// A small process that kills a build hook's process group if shipit dies
/// (even by SIGKILL) before the hook ends. shipit holds the write end of a
/// pipe to it; the kernel closes that end when shipit dies, however it
/// dies, and the guard then kills the group it was told about. The hook's
/// shell itself dies with shipit (`PR_SET_PDEATHSIG`), but that setting is
/// not inherited by the shell's children, and orphans are not reachable
/// from shipit's next run. The guard runs in a process group of its own, so
/// a terminal's Ctrl-C does not stop it.
struct Guard {
    child: Child,
    to_guard: Option<io::PipeWriter>,
}

/// Reads the group id, then waits: `done` means the hook ended normally;
/// EOF without it means shipit died.
const GUARD_SCRIPT: &str = r#"read -r group || exit 0
read -r verdict
[ "$verdict" = done ] || kill -KILL "-$group" 2>/dev/null
exit 0"#;

impl Guard {
    fn start() -> io::Result<Guard> {
        let (from_shipit, to_guard) = io::pipe()?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .stdin(from_shipit)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Guard {
            child,
            to_guard: Some(to_guard),
        })
    }

    fn watch(&mut self, group: Pid) {
        if let Some(pipe) = self.to_guard.as_mut() {
            let _ = writeln!(pipe, "{group}");
        }
    }

    fn release(mut self) {
        if let Some(mut pipe) = self.to_guard.take() {
            let _ = writeln!(pipe, "done");
        }
        let _ = self.child.wait();
    }
}

/// The complete lines at the start of `pending`, and then, if what is
/// left is longer than [`MAX_LINE`], a cut of it; every piece with the
/// secrets of `env_file` redacted. Whole lines are redacted, so a secret
/// that arrived in two reads is hidden like one that arrived in one; an
/// overlong line is cut only after holding back as many bytes as a secret
/// could still need (one that began before the cut ends within what was
/// read, and is hidden before the cut).
fn take_lines(pending: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=pos).collect();
        lines.push(crate::hookenv::redact_bytes(&line).into_owned());
    }
    if pending.len() > MAX_LINE {
        let mut redacted = crate::hookenv::redact_bytes(pending).into_owned();
        let keep = crate::hookenv::longest()
            .saturating_sub(1)
            .min(redacted.len());
        *pending = redacted.split_off(redacted.len() - keep);
        lines.push(redacted);
    }
    lines
}

fn read_lines(mut reader: io::PipeReader, tx: SyncSender<Msg>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        for line in take_lines(&mut pending) {
            if tx.send(Msg::Line(line)).is_err() {
                return;
            }
        }
    }
    if !pending.is_empty() {
        let _ = tx.send(Msg::Line(
            crate::hookenv::redact_bytes(&pending).into_owned(),
        ));
    }
    let _ = tx.send(Msg::Eof);
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    fn run_sh(command: &str, timeout: Duration) -> (Result<()>, String, Duration) {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("log");
        let mut log = File::create(&log_path).unwrap();
        let env = vec![("SHIPIT_RELEASE".to_string(), "20260101000000".to_string())];
        let hook = Hook {
            kind: Kind::Build,
            command,
            cwd: dir.path(),
            env: &env,
            timeout,
            timeout_key: "hooks.build_timeout",
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

    /// The pid a hook wrote to `file`, and whether that process is gone
    /// (or a zombie) within a bounded wait.
    fn gone_soon(file: &Path) -> bool {
        let pid: i32 = std::fs::read_to_string(file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        false
    }

    /// A secret that reaches the cut of an overlong line in two reads is
    /// hidden whole: the cut holds back enough bytes for it.
    #[test]
    fn a_secret_at_the_cut_of_an_overlong_line_is_hidden() {
        let secret = "zq-cut-secret-4711";
        crate::hookenv::add_secret_for_test(secret);
        let mut pending = vec![b'a'; MAX_LINE - 3];
        pending.extend_from_slice(&secret.as_bytes()[..8]);
        let mut out = take_lines(&mut pending);
        pending.extend_from_slice(&secret.as_bytes()[8..]);
        pending.extend_from_slice(b" tail\n");
        out.extend(take_lines(&mut pending));
        let text = String::from_utf8(out.concat()).unwrap();
        assert!(
            text.ends_with("a*** tail\n"),
            "{}",
            &text[text.len() - 40..]
        );
        assert!(!text.contains("zq-cut"), "a piece of the secret got out");
        assert_eq!(text.len(), MAX_LINE - 3 + 3 + 6);
    }

    /// Regression: a build leftover that closed its output let the loop end
    /// (pipe closed, shell reaped) before the group was signalled at all.
    #[test]
    fn a_build_leftover_without_output_is_stopped_when_the_build_ends() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("leftover.pid");
        let cmd = format!(
            "sleep 300 >/dev/null 2>&1 & echo $! > '{}'",
            pidfile.display()
        );
        let (r, _, _) = run_sh(&cmd, Duration::from_secs(30));
        r.unwrap();
        assert!(gone_soon(&pidfile), "the leftover outlived the build");
    }

    /// Regression: after a timeout, a child that ignores SIGTERM and holds
    /// no output never got its SIGKILL.
    #[test]
    fn a_timeout_kills_a_child_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("stubborn.pid");
        let cmd = format!(
            "sh -c 'trap \"\" TERM; echo $$ > {}; exec sleep 300' >/dev/null 2>&1 & sleep 30",
            pidfile.display()
        );
        let (r, _, _) = run_sh(&cmd, Duration::from_millis(500));
        assert!(r.unwrap_err().message.contains("timed out"));
        assert!(gone_soon(&pidfile), "the child outlived the timeout");
    }

    #[test]
    fn a_hook_that_closed_its_output_still_times_out() {
        let (r, _, took) = run_sh("exec >/dev/null 2>&1; sleep 30", Duration::from_millis(300));
        let err = r.unwrap_err();
        assert!(err.message.contains("timed out"), "{err}");
        assert!(took < Duration::from_secs(10), "took {took:?}");
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
