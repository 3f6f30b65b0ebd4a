//! Ports for the servers a test starts on 127.0.0.1.
//!
//! The kernel may hand out the same free port to two `bind(0)` calls in a
//! row once the first listener is closed, so a test that asks for a front
//! port and an app port could get one port twice: then one server cannot
//! bind, and requests meant for the front reach the app directly. Every
//! port handed out here is remembered for the life of the test binary and
//! never handed out again.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port free on 127.0.0.1 now, and never returned before by this binary.
pub fn free_port() -> u16 {
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    // Hold every listener until a new port turns up, so the kernel cannot
    // hand out the same one again within this loop.
    let mut held = Vec::new();
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("a bound address").port();
        if given.insert(port) {
            return port;
        }
        held.push(listener);
    }
    panic!("no new free port on 127.0.0.1 after 1000 tries")
}
