//! Regression test for a CI failure: `Text file busy` (ETXTBSY) when a test
//! wrote an executable (a copy of shipit) and ran it while other tests of
//! the same binary were starting processes. See `support::exec` for why it
//! happens; this test recreates the conditions on purpose, many times over,
//! and requires every run to succeed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::exec::{copy_executable, write_executable};

/// Threads that do nothing but fork and exec, as the other tests do, until
/// told to stop (or for at most a minute, whatever happens).
struct Forkers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Forkers {
    fn start(n: usize) -> Forkers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let _ = Command::new("true").stdin(Stdio::null()).status();
                    }
                })
            })
            .collect();
        Forkers { stop, threads }
    }
}

impl Drop for Forkers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Run `path`; `Err` carries the OS error when it could not be executed.
fn run(path: &Path, args: &[&str]) -> Result<(), String> {
    match Command::new(path).args(args).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("{} exited {:?}", path.display(), out.status)),
        Err(e) => Err(format!("could not run {}: {e}", path.display())),
    }
}

#[test]
fn executables_written_while_other_threads_fork_always_run() {
    let dir = tempfile::tempdir().unwrap();
    // A large executable keeps the copy open longest, as with shipit itself.
    let big = Path::new(crate::sandbox::SHIPIT);
    let _forkers = Forkers::start(4);
    let mut failures = Vec::new();
    for i in 0..150 {
        let script = dir.path().join(format!("script-{i}"));
        write_executable(&script, "#!/bin/sh\nexit 0\n");
        if let Err(e) = run(&script, &[]) {
            failures.push(e);
        }
        if i % 10 == 0 {
            let copy = dir.path().join(format!("shipit-{i}"));
            copy_executable(big, &copy);
            if let Err(e) = run(&copy, &["--version"]) {
                failures.push(e);
            }
            let _ = std::fs::remove_file(&copy);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the runs failed, first: {}",
        failures.len(),
        failures[0]
    );
}
