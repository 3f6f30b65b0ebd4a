//! A bounded load generator on 127.0.0.1 that never retries.
//!
//! Written against raw sockets on purpose: HTTP client libraries retry a
//! request that fails on a reused keep-alive connection, which would hide
//! precisely the dropped requests this suite exists to count. Each worker
//! keeps one HTTP/1.1 connection open and sends GETs back to back; any
//! connect, write or read failure, and any non-2xx status, is a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    ConnectError,
    WriteError,
    ReadError,
}

impl Outcome {
    pub fn ok(self) -> bool {
        matches!(self, Outcome::Status(200..=299))
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When the request started, since the load began.
    pub at: Duration,
    pub latency: Duration,
    pub outcome: Outcome,
    /// The release id that answered (the example app names it in every
    /// body), when one did.
    pub release: Option<[u8; 14]>,
}

impl Sample {
    pub fn release(&self) -> Option<&str> {
        self.release
            .as_ref()
            .and_then(|r| std::str::from_utf8(r).ok())
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<Sample>>>,
    pub started: Instant,
}

/// Hard bounds, whatever the caller does.
const MAX_DURATION: Duration = Duration::from_secs(600);
const MAX_SAMPLES_PER_WORKER: usize = 2_000_000;

impl Load {
    pub fn start(addr: SocketAddr, connections: usize) -> Load {
        Load::paced(addr, connections, Duration::ZERO)
    }

    /// The same, each connection pausing `pause` between requests: a rate
    /// closer to production's, where a pooled upstream connection lives
    /// long (nginx closes one after `keepalive_requests`, 1000, requests:
    /// back to back that is a fraction of a second, at 100 a second 10 s).
    pub fn paced(addr: SocketAddr, connections: usize, pause: Duration) -> Load {
        assert!(addr.ip().is_loopback(), "load goes to loopback only");
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let workers = (0..connections)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || worker(addr, &stop, started, pause))
            })
            .collect();
        Load {
            stop,
            workers,
            started,
        }
    }

    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stop and collect every sample, in start order.
    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all: Vec<Sample> = self
            .workers
            .into_iter()
            .flat_map(|w| w.join().expect("load worker"))
            .collect();
        all.sort_by_key(|s| s.at);
        all
    }
}

fn worker(addr: SocketAddr, stop: &AtomicBool, started: Instant, pause: Duration) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::SeqCst)
        && started.elapsed() < MAX_DURATION
        && samples.len() < MAX_SAMPLES_PER_WORKER
    {
        let begin = Instant::now();
        let at = begin - started;
        let (outcome, keep, release) = request(addr, &mut conn);
        if !keep {
            conn = None;
        }
        samples.push(Sample {
            at,
            latency: begin.elapsed(),
            outcome,
            release,
        });
        if outcome == Outcome::ConnectError {
            std::thread::sleep(Duration::from_millis(10));
        } else if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    samples
}

/// One GET on the kept connection (opening one if needed). Returns the
/// outcome and whether the connection may be reused.
fn request(
    addr: SocketAddr,
    conn: &mut Option<BufReader<TcpStream>>,
) -> (Outcome, bool, Option<[u8; 14]>) {
    if conn.is_none() {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                *conn = Some(BufReader::new(stream));
            }
            Err(_) => return (Outcome::ConnectError, false, None),
        }
    }
    let reader = conn.as_mut().expect("connected above");
    let req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: shipit-e2e\r\n\r\n";
    if reader.get_mut().write_all(req).is_err() {
        return (Outcome::WriteError, false, None);
    }
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(n) if n > 0 => {}
        _ => return (Outcome::ReadError, false, None),
    }
    let Some(status) = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
    else {
        return (Outcome::ReadError, false, None);
    };
    let mut length = 0usize;
    let mut close = false;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 => {}
            _ => return (Outcome::ReadError, false, None),
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        } else if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return (Outcome::ReadError, false, None);
    }
    // "hello from release <id>\n"
    let release = body
        .strip_prefix(b"hello from release ")
        .and_then(|rest| rest.get(..14))
        .and_then(|id| id.try_into().ok());
    (Outcome::Status(status), !close, release)
}
