//! Fleet benchmark, printing figures (it asserts nothing):
//! `cargo bench --bench fleet`.
//!
//! Hosts are real sshd processes on 127.0.0.1, each in a mount namespace of
//! its own (the fleet suite's `hosts.rs`), so it needs root, sshd, ssh, tar
//! and mkfs.ext4. Each also has a process table (a pid namespace) and a
//! filesystem (an ext4 image on a loop device) of its own. With one of
//! each for all, a host's cost would grow with the number of hosts: its
//! shipit looks through the processes (which of them use a release) and
//! would see every host's sessions, and on an ext4 without a journal each
//! new file's inode is picked past every inode deleted in the last minute
//! or more, by any host (`recently_deleted` in the kernel's
//! `fs/ext4/ialloc.c`). `SHIPIT_BENCH_SHARED=1` measures them so.
//!
//! A host's process table holds, besides sshd and its sessions, what the
//! 2-core machine of docs/benchmarks.md lists in `/proc` at rest: 8
//! processes and 60 kernel threads, for which zombies stand in (for both,
//! the look finds no executable to read); `SHIPIT_BENCH_HOST_PROCS=8,60`
//! sets the two. Its filesystem has no journal; `SHIPIT_BENCH_JOURNAL=1`
//! gives it one (each fsync then commits through the loop device into a
//! second filesystem, on the same cores).
//!
//! Each host's home directory is an empty directory of its own, so the
//! login shell of every remote command starts with no `.bashrc` (a neutral
//! shell); `SHIPIT_BENCH_BASHRC=pyenv` gives them one that starts pyenv, as
//! many real hosts run something there (about 140 ms per remote command
//! here). `SHIPIT_BENCH_KEX=curve25519-sha256` adds `-o KexAlgorithms=...`
//! to `fleet.ssh_options` (see docs/benchmarks.md). The app is a
//! repository of 3 files; there is no reload hook and no gate, so the
//! figures are shipit's own cost per host: connect, install check, lock,
//! state, ship, publish, swap.
//!
//! For 3, 24 and 48 hosts (`SHIPIT_BENCH_HOSTS=3,24` picks some), it times
//! the second rollout and later ones (the median of 7, after a first one
//! that installs shipit on the hosts; `SHIPIT_BENCH_ROUNDS=3` takes
//! fewer: a 3-host rollout takes less than 0.1 s, so the ratio of 24 hosts
//! to 3 moves with any one slow round), with the controller's phases
//! (`SHIPIT_TIMINGS=1`), and prints the cost of 24 hosts against 3 measured
//! in this one run. The rounds are interleaved (each rolls every row out
//! once, starting with another row each time), so the rows are measured
//! under the same load.
//! `SHIPIT_BENCH_FILES=10000` rolls out a repository of that many 1 KB
//! files instead.
//!
//! With Capistrano installed (`cap` on the PATH; `apt-get install
//! capistrano`), it deploys the same repository to the same hosts with a
//! minimal Capfile (git strategy, a `deploy_to` of its own, nothing else)
//! and times its second deploy the same way, side by side
//! (`SHIPIT_BENCH_NO_CAP=1` skips it).
//!
//! All hosts share this machine's cores, so the parallel phases do not
//! scale as they would on separate machines.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::git::git;
use support::hosts::{self, Hosts, Idle, World};

const SHIPIT: &str = env!("CARGO_BIN_EXE_shipit");

fn files() -> usize {
    std::env::var("SHIPIT_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// How many rollouts after the first each row times (their median).
fn rounds() -> usize {
    std::env::var("SHIPIT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(7)
}

/// (hosts, batch) of each row, as `SHIPIT_BENCH_HOSTS` allows.
fn rows() -> Vec<(usize, usize)> {
    let wanted: Option<Vec<usize>> = std::env::var("SHIPIT_BENCH_HOSTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    [(3, 1), (24, 1), (24, 6), (48, 8)]
        .into_iter()
        .filter(|(n, _)| wanted.as_ref().is_none_or(|w| w.contains(n)))
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
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

/// A Capfile and `config/deploy.rb` deploying `repo` to `hosts`, under
/// `dir`: the git strategy, `deploy_to` of its own, no linked files, no
/// tasks of its own.
fn capistrano_project(dir: &Path, repo: &Path, all: &Hosts, n: usize, deploy_to: &Path) {
    fs::create_dir_all(dir.join("config/deploy")).unwrap();
    fs::write(
        dir.join("Capfile"),
        "require \"capistrano/setup\"\nrequire \"capistrano/deploy\"\n\
         require \"capistrano/scm/git\"\ninstall_plugin Capistrano::SCM::Git\n",
    )
    .unwrap();
    let key = all.root.join("keys/client");
    let known = all.root.join("keys/known_hosts");
    let mut servers = String::new();
    for h in &all.hosts[..n] {
        let user = h.dest["ssh://".len()..].split('@').next().unwrap();
        servers.push_str(&format!(
            "server \"127.0.0.1\", user: {user:?}, port: {}, roles: %w[app]\n",
            h.port
        ));
    }
    fs::write(
        dir.join("config/deploy.rb"),
        format!(
            "set :application, \"bench\"\nset :repo_url, {repo:?}\nset :branch, \"main\"\n\
             set :deploy_to, {deploy_to:?}\nset :keep_releases, 2\nset :log_level, :error\n\
             set :pty, false\n\
             set :ssh_options, {{ keys: [{key:?}], user_known_hosts_file: {known:?}, \
             verify_host_key: :always, auth_methods: %w[publickey] }}\n",
            repo = repo.display().to_string(),
            deploy_to = deploy_to.display().to_string(),
            key = key.display().to_string(),
            known = known.display().to_string(),
        ),
    )
    .unwrap();
    fs::write(dir.join("config/deploy/bench.rb"), servers).unwrap();
}

fn cap_deploy(dir: &Path) -> Duration {
    let started = Instant::now();
    let out = Command::new("cap")
        .args(["bench", "deploy"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("cap runs");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "cap deploy failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// The hosts' login shell start-up: none (a neutral shell), or with
/// `SHIPIT_BENCH_BASHRC=pyenv` a `.bashrc` that starts pyenv as this
/// machine's root's does (a copy of `~/.pyenv` without its Pythons, whose
/// own home the hosts do not see).
fn login_shell(hosts: &Hosts) -> &'static str {
    if std::env::var("SHIPIT_BENCH_BASHRC").as_deref() != Ok("pyenv") {
        return "neutral (no .bashrc)";
    }
    let home = std::env::var("HOME").expect("HOME is set");
    let pyenv = hosts.root.join("pyenv");
    fs::create_dir_all(&pyenv).unwrap();
    let copied = Command::new("sh")
        .arg("-c")
        .arg("tar -C \"$1/.pyenv\" --exclude=./versions -cf - . | tar -C \"$2\" -xf -")
        .arg("sh")
        .arg(&home)
        .arg(&pyenv)
        .status()
        .unwrap();
    assert!(copied.success(), "could not copy {home}/.pyenv");
    let bashrc = format!(
        "export PYENV_ROOT={:?}\nexport PATH=\"$PYENV_ROOT/bin:$PYENV_ROOT/shims:$PATH\"\n\
         eval \"$(pyenv init -)\"\neval \"$(pyenv virtualenv-init -)\"\n",
        pyenv.display().to_string()
    );
    for host in &hosts.hosts {
        fs::write(host.home().join(".bashrc"), &bashrc).unwrap();
    }
    "a .bashrc that starts pyenv"
}

/// One line of the table.
struct Row {
    hosts: usize,
    batch: usize,
    persist: &'static str,
    first: Duration,
    second: Duration,
    /// Each round's time (`second` is their median), in round order.
    rounds: Vec<Duration>,
    reach: f64,
    connect: f64,
    build: f64,
    prepare: f64,
    roll: f64,
}

/// How far apart the hosts are (see the top of this file).
fn world() -> World {
    let on = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0");
    if on("SHIPIT_BENCH_SHARED") {
        return World::Shared;
    }
    let idle = std::env::var("SHIPIT_BENCH_HOST_PROCS")
        .ok()
        .and_then(|v| {
            let (user, kernel) = v.split_once(',')?;
            Some(Idle {
                user: user.trim().parse().ok()?,
                kernel: kernel.trim().parse().ok()?,
            })
        })
        .unwrap_or(Idle {
            user: 8,
            kernel: 60,
        });
    World::Apart {
        idle,
        journal: on("SHIPIT_BENCH_JOURNAL"),
    }
}

fn main() {
    let rows = rows();
    let most = rows.iter().map(|r| r.0).max().unwrap_or(0);
    let root = tempfile::tempdir().unwrap();
    let world = world();
    // Declared after `root`, so dropped before it: every host, with its
    // namespaces and mounts, ends before their directory is removed.
    let hosts = Hosts::start_in(root.path(), most, world);
    let shell = login_shell(&hosts);
    let app = root.path().join("app");
    let files = files();
    let per_dir = files.div_ceil(100).max(1);
    for f in 0..files {
        let dir = app.join(format!("d{:02}", f / per_dir));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(format!("f{:03}.txt", f % per_dir)),
            format!("{f}\n").repeat(200),
        )
        .unwrap();
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
        "fleet benchmark: {files} files, hosts are sshd in {} on this machine ({} cores), \
         login shell: {shell}",
        match world {
            World::Shared => "mount namespaces, one process table and filesystem for all".into(),
            World::Apart { idle, journal } => format!(
                "mount and pid namespaces (each with {} idle processes and {} zombies for \
                 kernel threads), each on an ext4 of its own ({})",
                idle.user,
                idle.kernel,
                if journal {
                    "with a journal"
                } else {
                    "no journal"
                }
            ),
        },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let mut options: Vec<String> = hosts.ssh_options.iter().map(|o| format!("{o:?}")).collect();
    if let Ok(kex) = std::env::var("SHIPIT_BENCH_KEX") {
        options.insert(0, format!("\"KexAlgorithms={kex}\""));
        options.insert(0, "\"-o\"".into());
    }
    let mut table = Vec::new();
    // Every rollout with fresh connections (`ssh_persist = "0s"`), then
    // every one reusing the masters the one before left (the default,
    // 60 s). The rounds are interleaved: each rolls every row out once,
    // the rows in turn first, so a load that comes and goes on this machine
    // weighs on all rows alike, and the ratios compare rollouts made under
    // the same conditions.
    for persist in ["0s", "60s"] {
        let configs: Vec<std::path::PathBuf> = rows
            .iter()
            .map(|&(n, batch)| {
                let list: Vec<String> = hosts.hosts[..n]
                    .iter()
                    .map(|h| format!("{:?}", h.dest))
                    .collect();
                let config = root
                    .path()
                    .join(format!("fleet-{n}-{batch}-{persist}.toml"));
                fs::write(
                    &config,
                    format!(
                        "deploy_to = {:?}\nkeep_releases = 2\n[source]\ngit = \"app\"\n[fleet]\n\
                         hosts = [{}]\nssh_options = [{}]\nssh_persist = \"{persist}\"\n\
                         batch = {batch}\nstate = \"state-{n}-{batch}\"\n",
                        hosts.deploy_to.display().to_string(),
                        list.join(", "),
                        options.join(", ")
                    ),
                )
                .unwrap();
                config
            })
            .collect();
        let firsts: Vec<Duration> = configs.iter().map(|c| deploy(c).0).collect();
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); rows.len()];
        let mut phases: Vec<Vec<Vec<(String, f64)>>> = vec![Vec::new(); rows.len()];
        for round in 0..rounds() {
            // Each round starts with another row, so that what one
            // rollout leaves running (agents exiting, pruned releases
            // being deleted) falls on every row in turn.
            for k in 0..configs.len() {
                let i = (round + k) % configs.len();
                let (t, p) = deploy(&configs[i]);
                times[i].push(t);
                phases[i].push(p);
            }
        }
        for (i, &(n, batch)) in rows.iter().enumerate() {
            let phase = |name: &str| {
                let mut v: Vec<f64> = phases[i]
                    .iter()
                    .filter_map(|p| p.iter().find(|(n, _)| n == name).map(|(_, v)| *v))
                    .collect();
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                v.get(v.len() / 2).copied().unwrap_or(0.0) / 1000.0
            };
            table.push(Row {
                hosts: n,
                batch,
                persist,
                first: firsts[i],
                second: median(times[i].clone()),
                rounds: times[i].clone(),
                reach: phase("reach"),
                connect: phase("connect"),
                build: phase("build"),
                prepare: phase("build+prepare") - phase("build"),
                roll: phase("roll"),
            });
        }
    }
    table.sort_by_key(|r| (r.hosts, r.batch, r.persist != "0s"));
    println!(
        "\n| hosts | batch | connections | first rollout | next rollouts (median of {}) | reach | of which connect | build | ship + publish | roll |",
        rounds()
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &table {
        println!(
            "| {} | {} | {} | {} | {} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s |",
            r.hosts,
            r.batch,
            if r.persist == "0s" {
                "fresh (ssh_persist = \"0s\")"
            } else {
                "reused (default)"
            },
            secs(r.first),
            secs(r.second),
            r.reach,
            r.connect,
            r.build,
            r.prepare,
            r.roll
        );
    }
    // 24 hosts against 3, for each way of rolling 24 out: the ratio of the
    // medians, and the range of the ratios round by round (the two
    // rollouts of a round were made in the same round, under the same
    // load).
    for many in table.iter().filter(|r| r.hosts == 24) {
        if let Some(three) = table
            .iter()
            .find(|r| r.hosts == 3 && r.persist == many.persist)
        {
            let mut paired: Vec<f64> = many
                .rounds
                .iter()
                .zip(&three.rounds)
                .map(|(m, t)| m.as_secs_f64() / t.as_secs_f64())
                .collect();
            paired.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "\n24 hosts (batch {}) cost {:.1}x 3 hosts (batch {}), ssh_persist = \"{}\" \
                 (round by round: {:.1}x to {:.1}x)",
                many.batch,
                many.second.as_secs_f64() / three.second.as_secs_f64(),
                three.batch,
                many.persist,
                paired.first().copied().unwrap_or(0.0),
                paired.last().copied().unwrap_or(0.0),
            );
        }
    }

    if std::env::var_os("SHIPIT_BENCH_NO_CAP").is_some() {
        return;
    }
    if hosts::which("cap").is_none() {
        println!("\nCapistrano: `cap` is not installed (apt-get install capistrano); skipped");
        return;
    }
    let mut cap_rows = Vec::new();
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.0).filter(|&n| n <= 24).collect();
    sizes.dedup();
    for n in sizes {
        let dir = root.path().join(format!("cap-{n}"));
        let deploy_to = hosts.deploy_to.join(format!("cap-{n}"));
        capistrano_project(&dir, &app, &hosts, n, &deploy_to);
        cap_deploy(&dir);
        let times: Vec<Duration> = (0..3).map(|_| cap_deploy(&dir)).collect();
        cap_rows.push((n, median(times)));
    }
    // Capistrano connects afresh on each `cap` run (SSHKit pools its
    // connections within one run) and switches every host at once.
    println!(
        "\n| hosts | Capistrano deploy (median of 3) | shipit batch | connections | shipit rollout | shipit faster by |"
    );
    println!("|---:|---:|---:|---|---:|---:|");
    for (n, cap) in &cap_rows {
        for r in table.iter().filter(|r| r.hosts == *n) {
            println!(
                "| {n} | {} | {} | {} | {} | {:.1}x |",
                secs(*cap),
                r.batch,
                if r.persist == "0s" { "fresh" } else { "reused" },
                secs(r.second),
                cap.as_secs_f64() / r.second.as_secs_f64()
            );
        }
    }
}
