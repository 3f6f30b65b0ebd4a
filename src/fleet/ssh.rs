//! Every ssh invocation of a fleet rollout: the system OpenSSH client, no
//! ssh library, so the user's `~/.ssh/config`, agent, jump hosts and known
//! hosts work as they do for `ssh` itself.
//!
//! - One master connection per host (`ControlMaster`), opened once and
//!   shared by every later call (`ControlPath` in a short private directory:
//!   a unix socket path is limited to 108 bytes, hence a hash of the
//!   destination rather than the destination itself). A remote command is
//!   asked of the master over that socket ([`mux`]), with no `ssh` process
//!   of its own; only where that cannot be asked is `ssh` started for it.
//! - With `fleet.ssh_persist` (default 60 s, as Ansible's `ControlPersist`)
//!   a master outlives the run by that long after its last use, in a
//!   directory private to this user and these ssh options, so the next
//!   command within that time (a rollback after a deploy, a `status`, the
//!   next rollout) skips the key exchange. A master is looked for and
//!   opened under a lock, so two runs at once open one. `"0s"` keeps the
//!   masters to the run, in a directory of its own, closed at the end.
//! - `BatchMode=yes`: a prompt nobody will answer would hang the rollout.
//!   `ConnectTimeout` and `ServerAliveInterval` bound a dead host.
//! - Host names and options are argv elements, never a local shell string;
//!   a destination starting with `-` is refused (it would be an option).
//!   ssh joins the remote command into one string for the remote shell, so
//!   every remote argument is single-quoted here ([`remote_command`]).
//! - Each ssh runs in its own process group (the masters in a session of
//!   their own): a Ctrl-C on the controller's terminal reaches shipit,
//!   which finishes the step in flight and puts the fleet back, instead of
//!   cutting every host's session at once.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::destination::{Destination, parse_destination};
use crate::error::{Error, Result};
use crate::fleet::mux;
use crate::ui::Ui;

/// How long connecting to a host may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds between keepalives; a host that misses 3 in a row is dead.
const ALIVE_INTERVAL: u32 = 5;
/// How long an idle master connection of a run that keeps its masters to
/// itself outlives its last use (a crashed controller leaves none behind
/// for longer).
const PERSIST: u32 = 60;
/// How long to wait for another run opening the same master connection.
const OPENING_WAIT: Duration = Duration::from_secs(60);
/// ssh's own exit status when it failed (not the remote command).
pub const SSH_FAILED: i32 = mux::NO_STATUS;

/// Quote one argument for a POSIX shell: `'...'`, with each `'` written as
/// `'\''`. Safe for any bytes.
pub fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// The one string ssh hands to the remote shell for `argv`.
pub fn remote_command<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ssh settings of one controller run.
pub struct Ssh {
    options: Vec<String>,
    control: Control,
}

/// Where the master connections' sockets are, and how long they live.
enum Control {
    /// This run's own directory, removed with it: masters are closed at
    /// the end of the run.
    Run(tempfile::TempDir),
    /// A directory this user's runs with the same ssh options share:
    /// masters outlive the run by `persist` after their last use.
    Shared { dir: PathBuf, persist: Duration },
}

impl Control {
    fn dir(&self) -> &Path {
        match self {
            Control::Run(dir) => dir.path(),
            Control::Shared { dir, .. } => dir,
        }
    }

    /// The master's socket for `dest`: short, whatever `dest` is.
    fn socket(&self, dest: &str) -> PathBuf {
        self.dir().join(short_hash(dest.as_bytes(), 20))
    }
}

/// The first `len` hex digits of the SHA-256 of `bytes`.
fn short_hash(bytes: &[u8], len: usize) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..len].to_string()
}

/// The directory for masters that outlive a run: under
/// `$XDG_RUNTIME_DIR` (private to the user by definition) when there is
/// one, else `/tmp/shipit-ssh-<uid>`, then one directory per set of ssh
/// options (a master opened with other options, another key say, is
/// never reused). Each level is made mode 0700 and must be a directory
/// owned by this user that nobody else can enter: else another user
/// could hand this controller a socket of theirs.
fn shared_dir(options: &[String]) -> Result<PathBuf> {
    let uid = nix::unistd::geteuid();
    let base = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(run) if Path::new(&run).is_absolute() && Path::new(&run).is_dir() => {
            Path::new(&run).join("shipit-ssh")
        }
        _ => PathBuf::from(format!("/tmp/shipit-ssh-{uid}")),
    };
    let dir = base.join(short_hash(options.join("\0").as_bytes(), 12));
    for level in [&base, &dir] {
        private_dir(level, uid)?;
    }
    Ok(dir)
}

fn private_dir(dir: &Path, uid: nix::unistd::Uid) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("could not create", dir, e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io("could not read", dir, e))?;
    if !meta.is_dir() || meta.uid() != uid.as_raw() || meta.mode() & 0o077 != 0 {
        return Err(Error::usage(format!(
            "{} is not a private directory of this user (a directory, owned by uid {uid}, mode \
             0700), so shipit keeps no ssh master connection there",
            dir.display()
        ))
        .hint(format!(
            "remove it (rm -r {}), or set fleet.ssh_persist = \"0s\" to keep master \
             connections to each run",
            dir.display()
        )));
    }
    Ok(())
}

/// A remote command in flight: its stdio, and how it ends.
struct Remote {
    stdin: Option<File>,
    stdout: File,
    stderr: File,
    end: Ending,
}

/// What says when a remote command has ended, and with what status.
enum Ending {
    /// An `ssh` process.
    Ssh(std::process::Child),
    /// A session asked of the host's master connection ([`mux`]).
    Mux(mux::Session),
}

impl Ending {
    /// The exit status ([`SSH_FAILED`]: ssh itself failed), waiting until
    /// `deadline` at most (`None`: for as long as it runs); `None` if it
    /// still runs then.
    fn wait(&mut self, deadline: Option<std::time::Instant>) -> Option<i32> {
        let code = |s: std::process::ExitStatus| s.code().unwrap_or(SSH_FAILED);
        match self {
            Ending::Mux(session) => session.wait(deadline),
            Ending::Ssh(child) => match deadline {
                None => Some(child.wait().map_or(SSH_FAILED, code)),
                Some(deadline) => loop {
                    match child.try_wait() {
                        Ok(Some(status)) => return Some(code(status)),
                        Ok(None) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Ok(None) => return None,
                        Err(_) => return Some(SSH_FAILED),
                    }
                },
            },
        }
    }

    /// End it now.
    fn kill(&mut self) -> i32 {
        match self {
            Ending::Mux(session) => session.end_now(),
            Ending::Ssh(child) => {
                let _ = child.kill();
                child
                    .wait()
                    .map_or(SSH_FAILED, |s| s.code().unwrap_or(SSH_FAILED))
            }
        }
    }
}

/// A remote command kept running by [`Ssh::hold`]; dropping it closes its
/// stdin and waits (bounded) for it to end.
pub struct Session {
    stdin: Option<File>,
    stdout: BufReader<File>,
    end: Ending,
    /// The thread showing its stderr; it returns the last lines.
    stderr: Option<std::thread::JoinHandle<Vec<String>>>,
}

/// How long a host may take to answer what it recorded (its agent waits
/// at most 60 s for the deploy lock when asked in a session of its own).
pub const RECORDED_ANSWER_WAIT: Duration = Duration::from_secs(90);

/// A [`Session::ask`] that was not sent: the session is gone.
#[derive(Debug)]
pub struct Unsent;

impl Session {
    /// Write `line` to the remote command's stdin, then `body` (its bytes
    /// exactly), and read its stdout until a line starts with `until`.
    /// `Err`: nothing could be sent (the remote command has ended). An
    /// answer cut short (the session ended while the host worked) is the
    /// output it gave, with the status. When the body cannot be sent
    /// whole, stdin is closed: the host sees its input end early.
    pub fn ask(
        &mut self,
        line: &str,
        body: Option<(&mut dyn Read, u64)>,
        until: &str,
    ) -> std::result::Result<Output, Unsent> {
        self.send(line)?;
        if let Some((body, bytes)) = body
            && let Some(stdin) = self.stdin.as_mut()
        {
            let sent = std::io::copy(&mut body.take(bytes), stdin);
            if !matches!(sent, Ok(n) if n == bytes) {
                drop(self.stdin.take());
            }
        }
        Ok(self.answer(until, None))
    }

    /// Write `line` to the remote command's stdin; [`Session::answer`]
    /// reads what it answers. `Err`: the remote command has ended.
    pub fn send(&mut self, line: &str) -> std::result::Result<(), Unsent> {
        use std::io::Write;
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(Unsent);
        };
        stdin
            .write_all(line.as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|_| Unsent)
    }

    /// Read stdout until a line starts with `until` (the answer to the
    /// oldest request sent and not yet answered), or until the session
    /// ends: then the output it gave, with the status. Past `deadline`
    /// the session is ended (the host sees its input end) and the output
    /// so far is returned, with [`SSH_FAILED`].
    pub fn answer(&mut self, until: &str, deadline: Option<std::time::Instant>) -> Output {
        let mut text = String::new();
        // The line read so far: taken as it comes, so a line cut short
        // does not hold the reading past the deadline.
        let mut line: Vec<u8> = Vec::new();
        loop {
            if let Some(deadline) = deadline
                && !self.readable_by(deadline)
            {
                drop(self.stdin.take());
                self.end.kill();
                text.push_str(&String::from_utf8_lossy(&line));
                return Output {
                    code: SSH_FAILED,
                    stdout: text,
                    stderr_tail: vec!["no answer in time: the session was ended".into()],
                };
            }
            let (ended_line, used) = match self.stdout.fill_buf() {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok([]) | Err(_) => break,
                Ok(buffer) => match buffer.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        line.extend_from_slice(&buffer[..=end]);
                        (true, end + 1)
                    }
                    None => {
                        line.extend_from_slice(buffer);
                        (false, buffer.len())
                    }
                },
            };
            self.stdout.consume(used);
            if ended_line {
                let done = String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned();
                text.push_str(&done);
                if done.starts_with(until) {
                    return Output {
                        code: 0,
                        stdout: text,
                        stderr_tail: Vec::new(),
                    };
                }
            }
        }
        text.push_str(&String::from_utf8_lossy(&line));
        Output {
            code: self.end(),
            stdout: text,
            stderr_tail: self
                .stderr
                .take()
                .and_then(|t| t.join().ok())
                .unwrap_or_default(),
        }
    }

    /// Whether stdout has something to read (or its end) before
    /// `deadline`.
    fn readable_by(&self, deadline: std::time::Instant) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        while self.stdout.buffer().is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let wait = PollTimeout::try_from(left.min(Duration::from_secs(1)))
                .unwrap_or(PollTimeout::NONE);
            let mut fds = [PollFd::new(
                self.stdout.get_ref().as_fd(),
                PollFlags::POLLIN,
            )];
            match poll(&mut fds, wait) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => {}
                Ok(_) | Err(_) => return true,
            }
        }
        true
    }

    /// Close stdin and wait, bounded, for the session to end; ended after.
    /// Its exit status ([`SSH_FAILED`] when it had to be ended).
    fn end(&mut self) -> i32 {
        drop(self.stdin.take());
        match self.end.wait(Some(crate::clock::after(CONNECT_TIMEOUT))) {
            Some(code) => code,
            None => {
                self.end.kill();
                SSH_FAILED
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end();
    }
}

/// The sessions that hold a rollout's fleet locks, one per host, through
/// which the host's agent is asked for the switches ([`Session::ask`]).
/// Let go together: every stdin is closed first, then each is waited for,
/// so the hosts end theirs at the same time (a fleet's locks are let go in
/// about one round trip, not one per host).
#[derive(Default)]
pub struct Held(Vec<(String, std::sync::Mutex<Session>)>);

impl Held {
    pub fn push(&mut self, host: &str, session: Session) {
        self.0
            .push((host.to_string(), std::sync::Mutex::new(session)));
    }

    /// The session held on `host`.
    pub fn on(&self, host: &str) -> Option<&std::sync::Mutex<Session>> {
        self.0.iter().find(|(h, _)| h == host).map(|(_, s)| s)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for (_, session) in &mut self.0 {
            let session = session
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            drop(session.stdin.take());
        }
        // Each session's own drop then waits for its end.
    }
}

/// What a remote command did.
#[derive(Debug)]
pub struct Output {
    /// The remote command's exit status ([`SSH_FAILED`]: ssh itself failed).
    pub code: i32,
    pub stdout: String,
    /// The last lines of stderr (already shown, prefixed with the host).
    pub stderr_tail: Vec<String>,
}

impl Ssh {
    /// `persist`: how long a master outlives its last use (zero: the
    /// masters are this run's, closed by [`Ssh::close`]).
    pub fn new(options: &[String], persist: Duration) -> Result<Ssh> {
        raise_open_files_limit();
        let control = if persist.is_zero() {
            // Short on purpose: the socket path must fit in sun_path.
            Control::Run(
                tempfile::Builder::new()
                    .prefix("shipit-ssh-")
                    .tempdir_in("/tmp")
                    .map_err(|e| {
                        Error::internal(
                            "could not create a directory for ssh control sockets in /tmp",
                        )
                        .cause(e)
                    })?,
            )
        } else {
            Control::Shared {
                dir: shared_dir(options)?,
                persist,
            }
        };
        Ok(Ssh {
            options: options.to_vec(),
            control,
        })
    }

    /// `ssh <user options> <ours> <extra> -- <dest>`. The user's options
    /// come first: for `-o` settings ssh keeps the first value it reads.
    fn command(&self, dest: &str, extra: &[&str]) -> Command {
        let mut command = Command::new("ssh");
        command.args(&self.options);
        let control = format!("ControlPath={}", self.control.socket(dest).display());
        command.args([
            "-o",
            "BatchMode=yes",
            "-o",
            &control,
            "-o",
            &format!("ConnectTimeout={}", CONNECT_TIMEOUT.as_secs()),
            "-o",
            &format!("ServerAliveInterval={ALIVE_INTERVAL}"),
            "-o",
            "ServerAliveCountMax=3",
        ]);
        command.args(extra);
        match parse_destination(dest) {
            Ok(Destination { target, port }) => {
                if let Some(port) = port {
                    command.arg("-p").arg(port.to_string());
                }
                command.arg("--").arg(target);
            }
            // Refused when the config was loaded; never reached.
            Err(_) => {
                command.arg("--").arg(dest);
            }
        }
        command.process_group(0);
        crate::procs::die_with_shipit(&mut command);
        command
    }

    /// Open the master connection to `dest`. `Err` says why the host
    /// cannot be reached, in ssh's words.
    pub fn connect(&self, dest: &str) -> Result<()> {
        let persist = match &self.control {
            Control::Run(_) => PERSIST,
            Control::Shared { persist, .. } => persist.as_secs().max(1) as u32,
        };
        // Two runs at once must not both open a master: the second's
        // socket would exist already, and ssh would keep its connection
        // as a plain one, without a command, for good.
        let _opening = match &self.control {
            Control::Run(_) => None,
            Control::Shared { .. } => {
                let opening = self.opening(dest)?;
                if self.alive(dest) {
                    return Ok(());
                }
                // A socket whose master is gone: ssh would not replace it.
                let _ = std::fs::remove_file(self.control.socket(dest));
                Some(opening)
            }
        };
        let persist = format!("ControlPersist={persist}");
        let mut command = self.command(
            dest,
            &["-o", "ControlMaster=yes", "-o", &persist, "-N", "-f"],
        );
        // The master goes to the background with /dev/null for its output;
        // the foreground ssh exits once the connection is up (or failed).
        let out = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| {
                Error::internal("could not run ssh")
                    .cause(e)
                    .hint("install the OpenSSH client (apt-get install openssh-client)")
            })?;
        if out.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(
            Error::internal(format!("could not connect to {dest}")).cause(if said.is_empty() {
                format!("ssh exited with {}", out.status)
            } else {
                said
            }),
        )
    }

    /// Run `argv` on `dest` through the master connection. Each stderr line
    /// is shown as it comes, prefixed with the host; stdout is returned.
    pub fn run(
        &self,
        ui: &Ui,
        dest: &str,
        argv: &[String],
        stdin: Option<&Path>,
    ) -> Result<Output> {
        let stdin = match stdin {
            Some(path) => File::open(path).map_err(|e| Error::io("could not open", path, e))?,
            None => File::open("/dev/null")
                .map_err(|e| Error::io("could not open", Path::new("/dev/null"), e))?,
        };
        let Remote {
            stdout: mut out,
            stderr,
            mut end,
            ..
        } = self.remote(dest, &remote_command(argv), Some(&stdin))?;
        drop(stdin);
        let ui = *ui;
        let (stdout_text, tail) = std::thread::scope(|scope| {
            let lines = scope.spawn(move || show_stderr(&ui, dest, stderr));
            let mut text = Vec::new();
            let _ = out.read_to_end(&mut text);
            (
                String::from_utf8_lossy(&text).into_owned(),
                lines.join().unwrap_or_default(),
            )
        });
        Ok(Output {
            code: end.wait(None).unwrap_or(SSH_FAILED),
            stdout: stdout_text,
            stderr_tail: tail,
        })
    }

    /// Start `command` on `dest`: a session asked of the master connection
    /// ([`mux`]), or, where that cannot be asked, an `ssh` process. With
    /// `stdin`, the command reads that file; else [`Remote::stdin`]
    /// writes to it.
    fn remote(&self, dest: &str, command: &str, stdin: Option<&File>) -> Result<Remote> {
        match self.on_master(dest, command, stdin)? {
            Some(remote) => Ok(remote),
            None => self.ssh_process(dest, command, stdin),
        }
    }

    /// [`Ssh::remote`] as a session of the master, if it can be asked.
    fn on_master(&self, dest: &str, command: &str, stdin: Option<&File>) -> Result<Option<Remote>> {
        match mux::open(&self.control.socket(dest), command, stdin, CONNECT_TIMEOUT) {
            Ok(opened) => Ok(Some(Remote {
                stdin: opened.stdin,
                stdout: opened.stdout,
                stderr: opened.stderr,
                end: Ending::Mux(opened.session),
            })),
            Err(mux::Refused::Failed(e)) => Err(Error::internal(format!(
                "could not run a command on {dest} through its ssh master connection"
            ))
            .cause(e)),
            Err(mux::Refused::Unavailable) => Ok(None),
        }
    }

    /// [`Ssh::remote`] through an `ssh` process.
    fn ssh_process(&self, dest: &str, remote: &str, stdin: Option<&File>) -> Result<Remote> {
        let mut command = self.command(dest, &["-o", "ControlMaster=no"]);
        command.arg(remote);
        let input = match stdin {
            Some(file) => Stdio::from(
                file.try_clone()
                    .map_err(|e| Error::internal("could not pass stdin to ssh").cause(e))?,
            ),
            None => Stdio::piped(),
        };
        let mut child = command
            .stdin(input)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(ssh_missing)?;
        Ok(Remote {
            stdin: child.stdin.take().map(|s| File::from(OwnedFd::from(s))),
            stdout: File::from(OwnedFd::from(child.stdout.take().expect("piped"))),
            stderr: File::from(OwnedFd::from(child.stderr.take().expect("piped"))),
            end: Ending::Ssh(child),
        })
    }

    /// Run `argv` on `dest` and keep it running: read its stdout until a
    /// line starts with `until` (or it ends), then hand back that output
    /// and, if it still runs, the session, which ends when dropped (its
    /// stdin is closed). Call it from the thread that keeps the session:
    /// ssh is set to die with the thread that started it.
    pub fn hold(
        &self,
        ui: &Ui,
        dest: &str,
        argv: &[String],
        until: &str,
    ) -> Result<(Output, Option<Session>)> {
        let child = self.start(dest, &remote_command(argv))?;
        await_answer(ui, dest, child, until)
    }

    /// [`Ssh::hold`] for a command that must stop when this process is
    /// interrupted (the migrate hook): on SIGINT/SIGTERM its stdin is
    /// closed, which the agent takes as its controller gone, so it stops
    /// what it runs and answers. Until the answer, or the interrupt, a
    /// watcher holds that stdin, looking every 50 ms.
    pub fn hold_until_interrupted(
        &self,
        ui: &Ui,
        dest: &str,
        argv: &[String],
        until: &str,
    ) -> Result<(Output, Option<Session>)> {
        let Started(mut remote) = self.start(dest, &remote_command(argv))?;
        let stdin = remote.stdin.take();
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let answered = answered.clone();
            std::thread::spawn(move || {
                let mut stdin = stdin;
                while !answered.load(std::sync::atomic::Ordering::SeqCst) {
                    if crate::interrupt::requested() {
                        drop(stdin.take());
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                stdin
            })
        };
        let held = await_answer(ui, dest, Started(remote), until);
        answered.store(true, std::sync::atomic::Ordering::SeqCst);
        // The stdin comes back to be closed with the session: the agent
        // has answered and exits.
        drop(watcher.join());
        held
    }

    /// Start `command` on `dest` for [`await_answer`]: the first half of
    /// [`Ssh::hold`], to be called from the thread that keeps the session;
    /// the wait for the answer may run on another. `command` is what the
    /// host's login shell runs: an argv's [`remote_command`], or a script
    /// of words quoted the same way.
    pub fn start(&self, dest: &str, command: &str) -> Result<Started> {
        self.remote(dest, command, None).map(Started)
    }

    /// [`Ssh::start`] as a session of the master connection, which starts
    /// no process and so may be called from any thread; `Ok(None)` where
    /// the master cannot be asked ([`Ssh::start`] then).
    pub fn start_on_master(&self, dest: &str, command: &str) -> Result<Option<Started>> {
        Ok(self.on_master(dest, command, None)?.map(Started))
    }
}

/// A remote command started by [`Ssh::start`], not yet answered.
pub struct Started(Remote);

/// What [`await_answer`] read, and the session if it still runs.
pub type Answer = Result<(Output, Option<Session>)>;

/// Read the stdout of `started` until a line starts with `until` (or it
/// ends): the second half of [`Ssh::hold`].
pub fn await_answer(ui: &Ui, dest: &str, started: Started, until: &str) -> Answer {
    let Started(Remote {
        stdin,
        stdout,
        stderr,
        mut end,
    }) = started;
    let ui = *ui;
    let host = dest.to_string();
    let tail = std::thread::spawn(move || show_stderr(&ui, &host, stderr));
    let mut stdout = BufReader::new(stdout);
    let mut text = String::new();
    let mut answered = false;
    loop {
        let mut line = Vec::new();
        match stdout.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&line).into_owned();
                answered = line.starts_with(until);
                text.push_str(&line);
                if answered {
                    break;
                }
            }
        }
    }
    if answered {
        let session = Session {
            stdin,
            stdout,
            end,
            stderr: Some(tail),
        };
        let output = Output {
            code: 0,
            stdout: text,
            stderr_tail: Vec::new(),
        };
        return Ok((output, Some(session)));
    }
    drop(stdin);
    let code = end.wait(None).unwrap_or(SSH_FAILED);
    Ok((
        Output {
            code,
            stdout: text,
            stderr_tail: tail.join().unwrap_or_default(),
        },
        None,
    ))
}

impl Ssh {
    /// Whether a master connection to `dest` runs: it listens on its
    /// control socket (one that died left the file with nobody listening,
    /// and a connection to it is refused). Asked locally, with no `ssh -O
    /// check` started per host.
    fn alive(&self, dest: &str) -> bool {
        std::os::unix::net::UnixStream::connect(self.control.socket(dest)).is_ok()
    }

    /// The lock under which a master to `dest` is looked for and opened.
    fn opening(&self, dest: &str) -> Result<nix::fcntl::Flock<std::fs::File>> {
        let path = self.control.socket(dest).with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("could not open", &path, e))?;
        // Another run holds it while it connects: ConnectTimeout, then
        // the authentication. Waited for, within bounds.
        let deadline = crate::clock::after(OPENING_WAIT);
        let mut file = file;
        loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(lock),
                Err((back, nix::errno::Errno::EWOULDBLOCK)) => file = back,
                Err((_, e)) => return Err(Error::io("could not lock", &path, e.into())),
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::internal(format!(
                    "could not connect to {dest}: another shipit has been opening its ssh \
                     connection for {} s (it holds {})",
                    OPENING_WAIT.as_secs(),
                    path.display()
                ))
                .hint("wait for it and try again, or set fleet.ssh_persist = \"0s\""));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Close the master connection to `dest` (best effort), unless it is
    /// meant to outlive the run.
    pub fn close(&self, dest: &str) {
        if matches!(self.control, Control::Shared { .. }) {
            return;
        }
        let _ = self
            .command(dest, &["-O", "exit"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A rollout holds a session on every host (its control socket and three
/// pipes each, more while it opens): raise this process's soft limit of
/// open files (often 1,024: about 250 hosts) to 8,192 (about 2,000), as
/// far as the hard limit allows. Not higher: the hooks it starts inherit
/// it, and some programs walk every descriptor up to it.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const ENOUGH: u64 = 8192;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let wanted = ENOUGH.min(hard);
        if soft < wanted {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, wanted, hard);
        }
    }
}

/// The error when ssh itself cannot be started.
fn ssh_missing(e: std::io::Error) -> Error {
    Error::internal("could not run ssh")
        .cause(e)
        .hint("install the OpenSSH client (apt-get install openssh-client)")
}

/// Show each line a host writes to stderr, prefixed with the host, and
/// keep the last 20 for a diagnosis.
fn show_stderr(ui: &Ui, host: &str, stderr: impl std::io::Read) -> Vec<String> {
    let mut tail = std::collections::VecDeque::new();
    for line in BufReader::new(stderr).split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        ui.host_line(host, &line);
        tail.push_back(line);
        if tail.len() > 20 {
            tail.pop_front();
        }
    }
    tail.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer read against a deadline: whole lines as they come; a line
    /// cut short, then nothing more, ends the session when the deadline
    /// passes instead of waiting for the rest of the line (which comes,
    /// with an answer, 120 s later).
    #[test]
    fn a_line_cut_short_does_not_hold_an_answer_past_its_deadline() {
        use std::os::fd::OwnedFd;
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(
                "printf '@@a 1\\n@@a 2\\npartial' && : > \"$0\" && sleep 120 && \
                 printf '\\n@@a 3\\n'",
            )
            .arg(&ready)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = File::from(OwnedFd::from(child.stdin.take().unwrap()));
        let stdout = File::from(OwnedFd::from(child.stdout.take().unwrap()));
        let pid = child.id();
        let mut session = Session {
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            end: Ending::Ssh(child),
            stderr: None,
        };
        let far = crate::clock::after(Duration::from_secs(60));
        assert_eq!(session.answer("@@a", None).stdout, "@@a 1\n");
        assert_eq!(session.answer("@@a", Some(far)).stdout, "@@a 2\n");
        let deadline = crate::clock::after(Duration::from_secs(20));
        while !ready.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(ready.exists(), "the child never printed its partial line");
        let cut = session.answer("@@a", Some(crate::clock::after(Duration::from_millis(200))));
        assert_eq!(cut.code, SSH_FAILED);
        assert_eq!(cut.stdout, "partial");
        // The session was ended: the child is gone.
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            assert!(stat.contains(") Z "), "the child still runs: {stat}");
        }
    }

    #[test]
    fn masters_are_kept_only_in_a_private_directory_of_this_user() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let root = tempfile::tempdir().unwrap();
        let uid = nix::unistd::geteuid();
        let fresh = root.path().join("fresh");
        private_dir(&fresh, uid).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
        // Made by someone else's umask, or left open: refused, kept.
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = private_dir(&open, uid).unwrap_err().to_string();
        assert!(e.contains("is not a private directory"), "{e}");
        assert!(open.is_dir());
        // A symlink to a private directory is not one.
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        assert!(private_dir(&link, uid).is_err());
        // Another owner.
        let other = nix::unistd::Uid::from_raw(uid.as_raw() + 1);
        assert!(private_dir(&fresh, other).is_err());
    }

    #[test]
    fn each_set_of_options_and_each_host_has_its_own_socket() {
        let a = short_hash(b"-i\0/k1", 12);
        assert_ne!(a, short_hash(b"-i\0/k2", 12));
        assert_eq!(a.len(), 12);
        let control = Control::Shared {
            dir: PathBuf::from("/d"),
            persist: Duration::from_secs(60),
        };
        let web1 = control.socket("deploy@web1");
        assert_ne!(web1, control.socket("deploy@web2"));
        assert_eq!(web1.parent(), Some(Path::new("/d")));
        // A long destination still makes a short socket path.
        assert_eq!(control.socket(&"h".repeat(300)).as_os_str().len(), 23);
    }

    #[test]
    fn quoting_survives_a_real_shell() {
        let nasty = [
            "plain",
            "it's",
            "$(touch /nonexistent)",
            "a b\tc\nd",
            "`id`",
            "'\"'\\",
            "",
        ];
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\0' {}", remote_command(&nasty)))
            .output()
            .unwrap();
        let got: Vec<String> = out
            .stdout
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        assert_eq!(&got[..nasty.len()], &nasty);
    }
}
