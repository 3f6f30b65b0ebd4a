//! A webhook receiver for the notify tests: HTTP on 127.0.0.1, threads of
//! the test itself (nothing to stop by pid); it keeps every POST body.
//! Used by the cli and fleet suites, which use different parts of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// An HTTP receiver on 127.0.0.1 (threads of this test, nothing to stop
/// by pid): every POST body is kept; with `stall`, it never answers.
pub struct Receiver {
    pub port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
    done: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start(stall: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (kept, over) = (Arc::clone(&bodies), Arc::clone(&done));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if over.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (kept, over) = (Arc::clone(&kept), Arc::clone(&over));
                std::thread::spawn(move || serve(conn, stall, &kept, &over));
            }
        });
        Receiver { port, bodies, done }
    }

    /// A port nothing listens on.
    pub fn closed_port() -> u16 {
        crate::support::ports::free_port()
    }

    /// `notify = ...` posting the event to `port` with curl.
    pub fn hook(port: u16) -> String {
        format!(
            "notify = \"curl -sS --fail -m 60 -H 'Content-Type: application/json' \
             --data-binary @- http://127.0.0.1:{port}/hook\"\n"
        )
    }

    pub fn documents(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| serde_json::from_str(b).unwrap_or_else(|e| panic!("{e}: {b}")))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `done`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut conn: TcpStream, stall: bool, kept: &Mutex<Vec<String>>, over: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, length) = loop {
        let Ok(n) = conn.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while data.len() < head + length {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    if stall {
        // Hold the connection without answering until the test is over
        // (the hook's timeout must cut it; bounded all the same).
        let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
        for _ in 0..600 {
            if over.load(Ordering::SeqCst) || matches!(conn.read(&mut buf), Ok(0)) {
                return;
            }
        }
        return;
    }
    kept.lock()
        .unwrap()
        .push(String::from_utf8_lossy(&data[head..head + length]).into_owned());
    let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
}
