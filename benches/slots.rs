//! Slot benchmarks that print figures (they assert nothing):
//! `cargo bench --bench slots`.
//!
//! - switch latency: from the moment the gate on the new slot passed (the
//!   last `Healthy` line shipit prints) to the first answer from the new
//!   release on a fresh connection through `run/app.sock`, with a client
//!   connecting in a loop, as a proxy does for each new upstream connection
//! - warm rollback: wall time of `shipit rollback` when the target still runs
//!   in the other slot (`warm_standby = true`): one probe and a rename
//!
//! The slot app is the Python fixture of the integration tests, one process
//! per slot on its unix socket.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::git::git;

const SHIPIT: &str = env!("CARGO_BIN_EXE_shipit");
const ROUNDS: usize = 7;

fn commit(dir: &Path, n: usize) {
    fs::write(dir.join("VERSION"), format!("{n}\n")).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", &format!("v{n}")]);
}

fn shipit(dir: &Path, args: &[&str]) -> std::process::Child {
    Command::new(SHIPIT)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shipit runs")
}

fn run_ok(dir: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = shipit(dir, args).wait_with_output().unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "shipit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// The release that answers on a fresh connection to `socket`, if any.
fn answer(socket: &Path) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split("release=").nth(1)?.trim().to_string())
}

fn setup(root: &Path, warm: bool) {
    let app = root.join("app");
    fs::create_dir_all(&app).unwrap();
    git(&app, &["init", "-q", "-b", "main"]);
    commit(&app, 0);
    let r = root.display();
    for (name, text) in [
        (
            "slot_server.py",
            include_str!("../tests/cli/fixtures/slot_server.py"),
        ),
        ("server.py", include_str!("../tests/cli/fixtures/server.py")),
        (
            "slot-start.sh",
            include_str!("../tests/cli/fixtures/slot-start.sh"),
        ),
        (
            "slot-stop.sh",
            include_str!("../tests/cli/fixtures/slot-stop.sh"),
        ),
    ] {
        fs::write(root.join(name), text.replace("@SANDBOX@", &r.to_string())).unwrap();
    }
    fs::write(
        root.join("shipit.toml"),
        format!(
            "deploy_to = \"deploy\"\nkeep_releases = 50\n[source]\ngit = \"app\"\n\
             [health]\nurl = \"http://localhost/healthz\"\ninterval = \"50ms\"\nsuccesses = 1\n\
             timeout = \"30s\"\nexpect_body = \"release={{release}}\"\n\
             [slots]\nstart = \"sh '{r}/slot-start.sh'\"\nstop = \"sh '{r}/slot-stop.sh'\"\n\
             retire_delay = \"0s\"\nfront_check = false\nwarm_standby = {warm}\n"
        ),
    )
    .unwrap();
}

fn stop_slots(root: &Path) {
    for slot in ["blue", "green"] {
        if let Some(pid) = fs::read_to_string(root.join(format!("{slot}.pid")))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn median(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "median {:.2} ms, min {:.2} ms, max {:.2} ms ({} runs)",
        v[v.len() / 2].as_secs_f64() * 1e3,
        v[0].as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    )
}

/// Stops the slot servers by their pids, also when the benchmark fails.
struct Slots<'a>(&'a Path);

impl Drop for Slots<'_> {
    fn drop(&mut self) {
        stop_slots(self.0);
    }
}

fn bench_switch(root: &Path) {
    setup(root, false);
    let _slots = Slots(root);
    let app = root.join("app");
    let link = root.join("deploy/run/app.sock");
    run_ok(root, &["deploy"]);
    let mut latencies = Vec::new();
    for n in 1..=ROUNDS {
        commit(&app, n);
        let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let done = Arc::new(AtomicBool::new(false));
        let client = {
            let (seen, done, link) = (seen.clone(), done.clone(), link.clone());
            std::thread::spawn(move || {
                // Bounded: until the deploy is over, or 2 minutes.
                let until = Instant::now() + Duration::from_secs(120);
                while !done.load(Ordering::SeqCst) && Instant::now() < until {
                    if let Some(release) = answer(&link) {
                        seen.lock().unwrap().push((Instant::now(), release));
                    }
                }
            })
        };
        let mut child = shipit(root, &["deploy"]);
        let mut gate_passed = None;
        for line in BufReader::new(child.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            if line.trim_start().starts_with("Healthy") {
                gate_passed = Some(Instant::now());
            }
        }
        assert!(child.wait().unwrap().success(), "deploy {n}");
        done.store(true, Ordering::SeqCst);
        client.join().unwrap();
        let live = fs::read_link(root.join("deploy/current")).unwrap();
        let id = live.file_name().unwrap().to_string_lossy().into_owned();
        let gate_passed = gate_passed.expect("the gate printed Healthy");
        let first_new = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(_, r)| *r == id)
            .map(|(at, _)| *at)
            .expect("the new release answered through the link");
        latencies.push(first_new.saturating_duration_since(gate_passed));
    }
    println!(
        "gate passed -> first new connection answered by the new slot: {}",
        median(latencies)
    );
}

fn bench_warm_rollback(root: &Path) {
    setup(root, true);
    let _slots = Slots(root);
    let app = root.join("app");
    run_ok(root, &["deploy"]);
    commit(&app, 1);
    run_ok(root, &["deploy"]);
    let releases: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(root.join("deploy/releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let mut times = Vec::new();
    for n in 0..ROUNDS * 2 {
        // Alternate between the two warm releases.
        let to = &releases[n % 2];
        times.push(run_ok(root, &["rollback", "--to", to]));
    }
    println!(
        "warm rollback (`shipit rollback --to`, target running in the other slot): {}",
        median(times)
    );
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    bench_switch(&root.path().join("switch"));
    bench_warm_rollback(&root.path().join("warm"));
}
