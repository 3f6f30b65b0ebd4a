//! A remote command on a host's master connection, asked of the master
//! over its control socket instead of through one more `ssh` process.
//!
//! `ssh -o ControlMaster=no host cmd` with a master up starts a whole ssh
//! (its libraries, OpenSSL, the config) only to pass its stdin, stdout and
//! stderr to the master and wait for the exit status: about 6 ms of CPU on
//! the controller per remote command, per host, every rollout. This does
//! the same from shipit itself, as OpenSSH's `PROTOCOL.mux` describes it:
//! a hello each way, a new-session request carrying the command, the three
//! descriptors passed over the socket (`SCM_RIGHTS`), then the exit status
//! when the remote command ends. The master, the real `ssh`, still does
//! all of SSH: keys, known hosts, the user's config (which environment is
//! sent, whether the agent is forwarded). Where no session was started
//! (no master, another protocol version, a refusal) the caller starts
//! `ssh` as before; where one may have been, it is an error, never a
//! second start.
//!
//! The session lives as long as the control connection: closing it (this
//! process ending, however it ends) makes the master close the session,
//! as the death of an `ssh` client would.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const HELLO: u32 = 0x0000_0001;
const NEW_SESSION: u32 = 0x1000_0002;
const PERMISSION_DENIED: u32 = 0x8000_0002;
const FAILURE: u32 = 0x8000_0003;
const EXIT_MESSAGE: u32 = 0x8000_0004;
const SESSION_OPENED: u32 = 0x8000_0006;
const TTY_ALLOC_FAIL: u32 = 0x8000_0008;
/// The mux protocol version of OpenSSH 5.x to 10.x.
const VERSION: u32 = 4;
/// No escape character (`-e none`).
const NO_ESCAPE: u32 = 0xffff_ffff;
/// How long the master may take to answer a session request: the server
/// opens the channel first. A dead server is noticed by the master's
/// keepalives (15 s) sooner. (An OpenSSH master whose answer finds this
/// connection closed may end altogether; the next command connects
/// afresh.)
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// The status of a session that ended without one (the master went away,
/// or the remote command was killed by a signal), as ssh's own client
/// exits then.
pub const NO_STATUS: i32 = 255;
/// The largest packet either side sends (OpenSSH's `CHANNEL_MUX_MAX_PACKET`).
const MAX_PACKET: u32 = 256 * 1024;

/// Why no session was opened.
#[derive(Debug)]
pub enum Refused {
    /// None was opened (no master listening, one that speaks otherwise,
    /// or one that refused the session, as a master does when the
    /// server's `MaxSessions` is reached): run `ssh` instead, as ssh's own
    /// client does then.
    Unavailable,
    /// It was asked for and the master went silent or away before
    /// answering: the remote command may have begun, so it is not
    /// started again.
    Failed(io::Error),
}

/// A session the master opened.
pub struct Opened {
    pub stdin: Option<File>,
    pub stdout: File,
    pub stderr: File,
    pub session: Session,
}

/// The control connection of one session: its exit status comes on it.
pub struct Session {
    control: UnixStream,
    id: u32,
    /// The exit status, once the master said it.
    status: Option<i32>,
}

/// Ask the master listening on `socket` to run `command` (one string, for
/// the remote user's shell, as `ssh` sends it), within `timeout`. It reads
/// `stdin`, or a pipe that [`Opened::stdin`] writes to.
pub fn open(
    socket: &Path,
    command: &str,
    stdin: Option<&File>,
    timeout: Duration,
) -> Result<Opened, Refused> {
    let control = hello(socket, timeout).map_err(|_| Refused::Unavailable)?;
    request(control, command, stdin)
}

/// The control connection, hellos exchanged.
fn hello(socket: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let mut control = UnixStream::connect(socket)?;
    control.set_read_timeout(Some(timeout))?;
    control.set_write_timeout(Some(timeout))?;
    send(
        &mut control,
        &[&HELLO.to_be_bytes(), &VERSION.to_be_bytes()],
    )?;
    let hello = receive(&mut control)?;
    if u32_at(&hello, 0)? != HELLO || u32_at(&hello, 4)? != VERSION {
        return Err(unexpected("its hello"));
    }
    Ok(control)
}

fn request(
    mut control: UnixStream,
    command: &str,
    stdin: Option<&File>,
) -> Result<Opened, Refused> {
    let unavailable = |_| Refused::Unavailable;
    // Made before the request: once it is sent, the master waits for the
    // descriptors, and serves no other session of the host meanwhile.
    let (stdin_theirs, stdin_ours): (OwnedFd, Option<File>) = match stdin {
        None => {
            let (r, w) = io::pipe().map_err(unavailable)?;
            (r.into(), Some(File::from(OwnedFd::from(w))))
        }
        Some(file) => (file.try_clone().map_err(unavailable)?.into(), None),
    };
    let (stdout_ours, stdout_theirs) = io::pipe().map_err(unavailable)?;
    let (stderr_ours, stderr_theirs) = io::pipe().map_err(unavailable)?;
    let request_id = 1u32;
    let request_id_bytes = request_id.to_be_bytes();
    let empty = 0u32.to_be_bytes();
    let command_len = u32::try_from(command.len())
        .map_err(|_| Refused::Unavailable)?
        .to_be_bytes();
    let mut packet: Vec<&[u8]> = vec![
        &NEW_SESSION_BYTES,
        &request_id_bytes,
        // reserved
        &empty,
        // a tty, X11 forwarding
        &empty,
        &empty,
        // the agent: forwarded if the master's own config says so
        // (`ForwardAgent`, `-A`), which ssh's own client asks the same way
        &ONE,
        // a subsystem
        &empty,
        &NO_ESCAPE_BYTES,
        // terminal type
        &empty,
        &command_len,
        command.as_bytes(),
    ];
    let env = environment();
    let lens: Vec<[u8; 4]> = env.iter().map(|e| (e.len() as u32).to_be_bytes()).collect();
    for (e, len) in env.iter().zip(&lens) {
        packet.push(len);
        packet.push(e);
    }
    // The master closes the connection on a larger packet (its limit is
    // 256 KiB): ssh's own client then, with nothing started.
    if packet.iter().map(|p| p.len()).sum::<usize>() > MAX_PACKET as usize {
        return Err(Refused::Unavailable);
    }
    send(&mut control, &packet).map_err(unavailable)?;
    for fd in [
        stdin_theirs,
        OwnedFd::from(stdout_theirs),
        OwnedFd::from(stderr_theirs),
    ] {
        // One byte with each descriptor, as ssh's mm_send_fd sends it; the
        // master has its own copy once sent, and ours closes here.
        // Without all three the master starts nothing.
        pass_fd(&control, &fd).map_err(unavailable)?;
    }
    // The master answers once the server opened the channel: a slow link
    // or bastion may take a while, a dead one ends the master (its
    // keepalives), which closes this connection.
    control
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(Refused::Failed)?;
    let reply = receive(&mut control).map_err(Refused::Failed)?;
    let id = match u32_at(&reply, 0).map_err(Refused::Failed)? {
        SESSION_OPENED if u32_at(&reply, 4).ok() == Some(request_id) => {
            u32_at(&reply, 8).map_err(Refused::Failed)?
        }
        // Nothing was started: ssh's own client connects afresh then.
        PERMISSION_DENIED | FAILURE => return Err(Refused::Unavailable),
        _ => return Err(Refused::Failed(unexpected("its answer to a new session"))),
    };
    control.set_write_timeout(None).map_err(Refused::Failed)?;
    Ok(Opened {
        stdin: stdin_ours,
        stdout: File::from(OwnedFd::from(stdout_ours)),
        stderr: File::from(OwnedFd::from(stderr_ours)),
        session: Session {
            control,
            id,
            status: None,
        },
    })
}

const NEW_SESSION_BYTES: [u8; 4] = NEW_SESSION.to_be_bytes();
const NO_ESCAPE_BYTES: [u8; 4] = NO_ESCAPE.to_be_bytes();
const ONE: [u8; 4] = 1u32.to_be_bytes();

/// The environment offered with each session, all of it, as `NAME=value`:
/// the master keeps what its own `SendEnv` allows (and adds its
/// `SetEnv`), as it does for ssh's own client, which offers only what the
/// same config allows; the host's sshd then takes what its `AcceptEnv`
/// allows.
fn environment() -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    std::env::vars_os()
        .map(|(k, v)| {
            let mut e = k.as_bytes().to_vec();
            e.push(b'=');
            e.extend_from_slice(v.as_bytes());
            e
        })
        .collect()
}

impl Session {
    /// Wait until the remote command has ended and the master is done
    /// with the session (it closes the control connection once it has
    /// written all the output), or `deadline` passes: its exit status
    /// (255, as ssh's, when the master ended without one), `None` if still
    /// running then.
    pub fn wait(&mut self, deadline: Option<Instant>) -> Option<i32> {
        loop {
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return None,
                },
                None => None,
            };
            if self.control.set_read_timeout(left).is_err() {
                return Some(self.status.unwrap_or(NO_STATUS));
            }
            match receive(&mut self.control) {
                Ok(packet) => match (u32_at(&packet, 0), u32_at(&packet, 4)) {
                    (Ok(EXIT_MESSAGE), Ok(id)) if id == self.id => {
                        self.status = u32_at(&packet, 8).ok().map(|v| v as i32);
                    }
                    (Ok(TTY_ALLOC_FAIL), _) => {}
                    // Anything else: the master is not talking to us.
                    _ => return Some(self.end_now()),
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                // Closed: the session is over.
                Err(_) => return Some(self.status.unwrap_or(NO_STATUS)),
            }
        }
    }

    /// End the session now: the master closes it once its control
    /// connection is gone (as when an `ssh` client is killed).
    pub fn end_now(&mut self) -> i32 {
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        self.status.unwrap_or(NO_STATUS)
    }
}

fn unexpected(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the master connection's control socket sent something unexpected ({what})"),
    )
}

fn u32_at(packet: &[u8], at: usize) -> io::Result<u32> {
    packet
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| unexpected("a short packet"))
}

/// One packet: its length, then `parts`.
fn send(control: &mut UnixStream, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut packet = Vec::with_capacity(4 + len);
    packet.extend_from_slice(&(len as u32).to_be_bytes());
    for part in parts {
        packet.extend_from_slice(part);
    }
    control.write_all(&packet)
}

fn receive(control: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    control.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_PACKET {
        return Err(unexpected("a packet too large"));
    }
    let mut packet = vec![0u8; len as usize];
    control.read_exact(&mut packet)?;
    Ok(packet)
}

fn pass_fd(control: &UnixStream, fd: &OwnedFd) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let fds = [fd.as_raw_fd()];
    let byte = [0u8];
    let sent = sendmsg::<()>(
        control.as_raw_fd(),
        &[IoSlice::new(&byte)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    if sent != 1 {
        return Err(unexpected("a descriptor not sent whole"));
    }
    Ok(())
}
