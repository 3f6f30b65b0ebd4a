//! Fleet benchmark, printing figures (it asserts nothing):
//! `cargo bench --bench fleet`.
//!
//! Hosts are real sshd processes on 127.0.0.1, each in a mount namespace of
//! its own (the fleet suite's `hosts.rs`), so it needs root, sshd, ssh and
//! tar. The app is a generated repository of 10,000 files (1 KB each, in
//! 100 directories); there is no reload hook and no gate, so the figures
//! are shipit's own cost: connect, install check, build, ship, publish,
//! swap, one host or batch at a time.
//!
//! - rollout time for 1, 3 and 6 hosts, batch 1 and batch 3 (median of
//!   3 rollouts after one that installs shipit on the hosts), with the
//!   controller's phases (`SHIPIT_TIMINGS=1`);
//! - a baseline: the same tar streamed to every host in parallel over ssh
//!   and unpacked there (`tar -c | ssh host tar -x`), and the controller's
//!   overhead per host beyond it.
//!
//! All hosts share this machine's cores, so the parallel phases do not
//! scale as they would on separate machines. `SHIPIT_BENCH_SMALL=1` uses
//! 1,000 files.

#[path = "../tests/fleet/hosts.rs"]
mod hosts;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hosts::{Hosts, git};

const SHIPIT: &str = env!("CARGO_BIN_EXE_shipit");

fn files() -> usize {
    if std::env::var_os("SHIPIT_BENCH_SMALL").is_some() {
        1_000
    } else {
        10_000
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// A deploy from the controller; returns its wall time and its phases.
fn deploy(config: &Path) -> (Duration, Vec<(String, f64)>) {
    let started = Instant::now();
    let out = Command::new(SHIPIT)
        .arg("--config")
        .arg(config)
        .arg("deploy")
        .env("SHIPIT_TIMINGS", "1")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("shipit runs");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "deploy failed:\n{stderr}");
    let phases = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("timing fleet "))
        .filter_map(|l| {
            let (name, rest) = l.rsplit_once(' ')?.0.rsplit_once(' ')?;
            Some((name.to_string(), rest.parse().ok()?))
        })
        .collect();
    (took, phases)
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let hosts = Hosts::start(root.path(), 6);
    let app = root.path().join("app");
    for d in 0..100 {
        let dir = app.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..files() / 100 {
            fs::write(
                dir.join(format!("f{f:03}.txt")),
                format!("{d}/{f}\n").repeat(200),
            )
            .unwrap();
        }
    }
    git(&app, &["init", "-q", "-b", "main"]);
    git(&app, &["add", "-A"]);
    // A commit of this size starts `git gc --auto` in the background, which
    // would repack the objects while shipit clones them: wait for it.
    git(
        &app,
        &["-c", "gc.autoDetach=false", "commit", "-q", "-m", "tree"],
    );
    println!(
        "fleet benchmark: {} files, hosts are sshd in mount namespaces on this machine ({} cores)",
        files(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let mut rows = Vec::new();
    for (n, batch) in [(1, 1), (3, 1), (3, 3), (6, 1), (6, 3)] {
        let list: Vec<String> = hosts.hosts[..n]
            .iter()
            .map(|h| format!("{:?}", h.dest))
            .collect();
        let options: Vec<String> = hosts.ssh_options.iter().map(|o| format!("{o:?}")).collect();
        let config = root.path().join(format!("fleet-{n}-{batch}.toml"));
        fs::write(
            &config,
            format!(
                "deploy_to = {:?}\nkeep_releases = 2\n[source]\ngit = \"app\"\n[fleet]\n\
                 hosts = [{}]\nssh_options = [{}]\nbatch = {batch}\nstate = \"state-{n}-{batch}\"\n",
                hosts.deploy_to.display().to_string(),
                list.join(", "),
                options.join(", ")
            ),
        )
        .unwrap();
        let (first, _) = deploy(&config);
        let mut times = Vec::new();
        let mut phases: Vec<Vec<(String, f64)>> = Vec::new();
        for _ in 0..3 {
            let (t, p) = deploy(&config);
            times.push(t);
            phases.push(p);
        }
        let phase = |name: &str| {
            let mut v: Vec<f64> = phases
                .iter()
                .filter_map(|p| p.iter().find(|(n, _)| n == name).map(|(_, v)| *v))
                .collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        rows.push((
            n,
            batch,
            first,
            median(times),
            phase("reach"),
            phase("build"),
            phase("build+prepare") - phase("build"),
            phase("roll"),
        ));
    }
    println!(
        "\n| hosts | batch | first rollout (installs shipit) | rollout (median of 3) | reach | build | ship + publish | roll |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, batch, first, t, reach, build, prepare, roll) in &rows {
        println!(
            "| {n} | {batch} | {} | {} | {reach:.0} ms | {build:.0} ms | {prepare:.0} ms | {roll:.0} ms |",
            ms(*first),
            ms(*t)
        );
    }

    // Baseline: the tree as a tar, streamed to every host in parallel over
    // the same kind of ssh connection, and unpacked there.
    let tree = root.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    let archive = Command::new("sh")
        .arg("-c")
        .arg("git -C \"$1\" archive HEAD | tar -x -C \"$2\"")
        .arg("sh")
        .arg(&app)
        .arg(&tree)
        .status()
        .unwrap();
    assert!(archive.success());
    let tarball = root.path().join("tree.tar");
    assert!(
        Command::new("tar")
            .arg("-cf")
            .arg(&tarball)
            .arg("-C")
            .arg(&tree)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    let mut baseline = Vec::new();
    for n in [1usize, 3, 6] {
        let mut times = Vec::new();
        for round in 0..3 {
            let started = Instant::now();
            let children: Vec<_> = hosts.hosts[..n]
                .iter()
                .map(|h| {
                    let target = format!("{}/bench-{round}", hosts.deploy_to.display());
                    Command::new("ssh")
                        .args(&hosts.ssh_options)
                        .arg("-o")
                        .arg("BatchMode=yes")
                        .arg(&h.dest)
                        .arg(format!(
                            "rm -rf '{target}' && mkdir -p '{target}' && tar -x -f - -C '{target}' && rm -rf '{target}'"
                        ))
                        .stdin(fs::File::open(&tarball).unwrap())
                        .spawn()
                        .unwrap()
                })
                .collect();
            for mut c in children {
                assert!(c.wait().unwrap().success());
            }
            times.push(started.elapsed());
        }
        baseline.push((n, median(times)));
    }
    println!("\n| hosts | tar over ssh, in parallel (new connection each) |");
    println!("|---:|---:|");
    for (n, t) in &baseline {
        println!("| {n} | {} |", ms(*t));
    }
    let at = |n: usize, batch: usize| rows.iter().find(|r| r.0 == n && r.1 == batch).unwrap().3;
    let base = |n: usize| baseline.iter().find(|b| b.0 == n).unwrap().1;
    let slope = (at(6, 1).as_secs_f64() - at(1, 1).as_secs_f64()) / 5.0;
    let base_slope = (base(6).as_secs_f64() - base(1).as_secs_f64()) / 5.0;
    println!(
        "\ncontroller overhead: {:.0} ms per added host (batch 1), {:.0} ms of it beyond the bare \
         transfer; a 1-host rollout is {} against {} for the bare transfer",
        slope * 1000.0,
        (slope - base_slope) * 1000.0,
        ms(at(1, 1)),
        ms(base(1))
    );
}
