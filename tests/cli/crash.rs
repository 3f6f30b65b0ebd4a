//! Crash injection: SIGKILL, SIGTERM and SIGINT at random moments of real
//! deploys (build hook, reload hook, health gate, prune), many times, and
//! the invariants checked after each:
//! - `current` exists and points at a complete release;
//! - `releases/` holds only complete releases;
//! - the next deploy succeeds and leaves no staging, trash or temporary
//!   links behind;
//! - a SIGTERM/SIGINT either let the deploy finish, or left the previous
//!   release live with nothing half-done.
//!
//! Randomness is seeded: the seed is printed, and SHIPIT_CRASH_SEED replays
//! a run. SHIPIT_CRASH_RUNS sets the number of SIGKILL runs (default 100).

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::sandbox::{Sandbox, dir_names};

/// A small seeded generator (xorshift); the seed is printed for replays.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(name: &str) -> Rng {
        let seed = std::env::var("SHIPIT_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("{name}: SHIPIT_CRASH_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A deploy with every phase present: a build hook, a reload hook, a health
/// gate against a server that is always up, and pruning.
fn world() -> (Sandbox, crate::sandbox::Server) {
    let sb = Sandbox::new();
    let server = sb.with_server("", "");
    // The fixture server runs from a directory of its own, outside releases,
    // and answers 200 to everything; the reload hook only takes a moment.
    let srv = sb.path().join("srv");
    fs::create_dir(&srv).unwrap();
    let started = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && python3 '{}' {} >/dev/null 2>&1 & echo $! > '{}'",
            srv.display(),
            sb.path().join("server.py").display(),
            server.port,
            server.pidfile.display()
        ))
        .status()
        .unwrap();
    assert!(started.success());
    crate::sandbox::wait_until("the fixture server", Duration::from_secs(10), || {
        server.get().is_some()
    });
    sb.write_config(&format!(
        "keep_releases = 3\n[hooks]\nbuild = [\"sleep 0.02; echo built > built.txt\"]\nreload = \"sleep 0.02\"\n\
         [health]\nurl = \"{}\"\nsuccesses = 1\ninterval = \"30ms\"\ntimeout = \"10s\"\n",
        server.url()
    ));
    (sb, server)
}

/// The structural invariants that must hold at every instant.
#[track_caller]
fn check_invariants(sb: &Sandbox, context: &str) {
    let current = sb
        .current()
        .unwrap_or_else(|| panic!("{context}: current is missing"));
    let releases = sb.deploy_to().join("releases");
    assert!(
        releases
            .join(&current)
            .join(".shipit-release.json")
            .is_file(),
        "{context}: current points at an incomplete release {current}"
    );
    for name in dir_names(&releases) {
        let dir = releases.join(&name);
        assert!(
            name.len() == 14 && name.bytes().all(|b| b.is_ascii_digit()),
            "{context}: stray {name}"
        );
        assert!(
            dir.join(".shipit-release.json").is_file(),
            "{context}: incomplete release {name}"
        );
        assert!(
            dir.join("built.txt").is_file(),
            "{context}: release {name} did not finish building"
        );
    }
}

#[track_caller]
fn check_no_leftovers(sb: &Sandbox, context: &str) {
    let state = sb.deploy_to().join(".shipit");
    assert_eq!(
        dir_names(&state.join("staging")),
        Vec::<String>::new(),
        "{context}: staging leftovers"
    );
    assert_eq!(
        dir_names(&state.join("trash")),
        Vec::<String>::new(),
        "{context}: trash leftovers"
    );
    let temp_links: Vec<_> = dir_names(&sb.deploy_to())
        .into_iter()
        .filter(|n| n.starts_with(".current-"))
        .collect();
    assert!(
        temp_links.is_empty(),
        "{context}: temporary links {temp_links:?}"
    );
}

/// How long an undisturbed deploy takes here: the range to aim kills at.
fn calibrate(sb: &Sandbox) -> Duration {
    let mut longest = Duration::ZERO;
    for _ in 0..3 {
        let start = Instant::now();
        sb.run(&["deploy"]).ok();
        longest = longest.max(start.elapsed());
    }
    longest
}

#[test]
fn sigkill_at_random_moments_never_leaves_a_half_deploy() {
    let runs: usize = std::env::var("SHIPIT_CRASH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let (sb, _server) = world();
    let span = calibrate(&sb).as_micros() as u64 * 12 / 10;
    let mut rng = Rng::seeded("sigkill");
    let mut finished_anyway = 0;
    for run in 0..runs {
        sb.commit("VERSION", &format!("{run}\n"));
        let mut deploy = sb
            .command(&["deploy"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(span)));
        let _ = kill(Pid::from_raw(deploy.id() as i32), Signal::SIGKILL);
        if deploy.wait().unwrap().success() {
            finished_anyway += 1;
        }
        let context = format!("run {run} (killed)");
        check_invariants(&sb, &context);
        let next = sb.run(&["deploy"]);
        next.ok();
        check_invariants(&sb, &format!("run {run} (next deploy)"));
        check_no_leftovers(&sb, &format!("run {run} (next deploy)"));
    }
    println!("{runs} SIGKILLs, {finished_anyway} deploys finished before the kill");
    assert!(finished_anyway < runs, "no kill landed inside a deploy");
}

fn interrupt_at_random_moments(signal: Signal, runs: usize) {
    let (sb, _server) = world();
    let span = calibrate(&sb).as_micros() as u64 * 12 / 10;
    let mut rng = Rng::seeded(&format!("{signal:?}"));
    let (mut completed, mut interrupted) = (0, 0);
    for run in 0..runs {
        sb.commit("VERSION", &format!("{run}\n"));
        let before = sb.current().unwrap();
        let releases_before = sb.releases();
        let deploy = sb
            .command(&["deploy"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(span)));
        let _ = kill(Pid::from_raw(deploy.id() as i32), signal);
        let out = deploy.wait_with_output().unwrap();
        let status = out.status;
        let context = format!(
            "{signal:?} run {run} ({status})\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        check_invariants(&sb, &context);
        check_no_leftovers(&sb, &context);
        match status.code() {
            Some(0) => {
                completed += 1;
                assert_ne!(
                    sb.current().unwrap(),
                    before,
                    "{context}: a finished deploy moved current"
                );
            }
            Some(130) => {
                interrupted += 1;
                assert_eq!(
                    sb.current().unwrap(),
                    before,
                    "{context}: an interrupted deploy is undone"
                );
                // A release built and swapped in is kept, marked failed; one
                // interrupted before the swap is gone.
                let json = sb.releases_json();
                for r in json["releases"].as_array().unwrap() {
                    let id = r["id"].as_str().unwrap().to_string();
                    if !releases_before.contains(&id) {
                        assert_eq!(r["status"], "failed", "{context}: {id}");
                    }
                }
            }
            None => {
                // The signal came before shipit installed its handler, when
                // it had changed nothing yet.
                assert_eq!(sb.current().unwrap(), before, "{context}");
                assert_eq!(sb.releases(), releases_before, "{context}");
            }
            Some(other) => panic!("{context}: unexpected exit {other}"),
        }
    }
    println!("{signal:?}: {completed} deploys completed, {interrupted} interrupted and undone");
    assert!(interrupted > 0, "no {signal:?} landed inside a deploy");
}

#[test]
fn sigterm_at_random_moments_cleans_up_or_rolls_back() {
    interrupt_at_random_moments(Signal::SIGTERM, 40);
}

#[test]
fn sigint_at_random_moments_cleans_up_or_rolls_back() {
    interrupt_at_random_moments(Signal::SIGINT, 40);
}
