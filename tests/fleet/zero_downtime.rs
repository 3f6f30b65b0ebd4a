//! Zero downtime across a fleet: one nginx on 127.0.0.1 balances over the
//! three hosts' apps while a load runs through it; two rolling deploys and
//! a fleet rollback, each host drained (marked `down` in its upstream file,
//! `nginx -s reload`) before its switch and undrained after its gate, by the
//! example hook `examples/fleet/nginx-drain.sh`, run as docs/fleet.md
//! shows it: over ssh on the balancer's machine, the host given as an
//! argument (ssh passes no environment). Here the balancer's machine is
//! host1's sshd (without `sudo`: the suite runs as root). Every request must
//! succeed.
//!
//! nginx does not retry another host (`proxy_next_upstream off`): only the
//! drain keeps requests away from a host while its app restarts (without
//! the drain hooks, hundreds of thousands of requests fail with 502).
//!
//! The front closes each client connection after its answer
//! (`keepalive_timeout 0`): an nginx reload closes idle kept-alive client
//! connections, which a client that never retries (this one) would count
//! as failures of the reload, not of the rollout. Upstream connections are
//! pooled. Figures go to stdout and to target/fleet/report.md.

use crate::support::front::Front;
use crate::support::load;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::hosts::{MANIFEST, which};
use crate::support::ports::free_port;
use crate::{Options, World};

fn upstream_file(dir: &Path, host: &str) -> PathBuf {
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{name}.conf"))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[test]
fn a_rolling_deploy_with_drain_drops_no_request() {
    let nginx_bin = which("nginx").unwrap_or_else(|| {
        panic!("the fleet suite runs real nginx, which is missing: apt-get install nginx (.ci/run does this)")
    });
    let w = World::new(3, Options::default());
    let prefix = w.path().join("nginx");
    let upstreams = prefix.join("upstreams");
    fs::create_dir_all(prefix.join("logs")).unwrap();
    fs::create_dir_all(&upstreams).unwrap();
    for h in &w.hosts.hosts {
        fs::write(
            upstream_file(&upstreams, &h.dest),
            format!("server {}:{};\n", h.addr, w.hosts.app_port),
        )
        .unwrap();
    }
    let port = free_port();
    let p = prefix.display();
    // Client connections close after each answer; upstream ones are pooled;
    // no retry on another host.
    let http = format!(
        "keepalive_timeout 0;\n\
         upstream app {{ include {p}/upstreams/*.conf; keepalive 16; }}\n\
         server {{\n    listen 127.0.0.1:{port};\n\
           location / {{\n      proxy_pass http://app;\n      proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\";\n      proxy_next_upstream off;\n    }}\n  }}\n"
    );
    // The documented form: `ssh lb [sudo] UPSTREAMS=... sh nginx-drain.sh
    // drain "$SHIPIT_HOST"`, with `lb` reached as host1 is.
    let lb = &w.hosts.hosts[0];
    let user = lb
        .dest
        .trim_start_matches("ssh://")
        .split('@')
        .next()
        .unwrap()
        .to_string();
    let ssh: Vec<String> = w
        .hosts
        .ssh_options
        .iter()
        .map(|o| format!("'{o}'"))
        .collect();
    // A copy on the balancer, as the docs' /opt/shipit/nginx-drain.sh (the
    // checkout may sit under the user's home, which the hosts do not see).
    let script = w.path().join("nginx-drain.sh");
    fs::copy(
        Path::new(MANIFEST).join("examples/fleet/nginx-drain.sh"),
        &script,
    )
    .unwrap();
    let hook = |action: &str| {
        format!(
            "ssh {opts} -p {port} {user}@127.0.0.1 UPSTREAMS='{u}' NGINX='{n}' NGINX_PREFIX='{p}' NGINX_CONF='{p}/nginx.conf' NGINX_PID='{p}/nginx.pid' sh '{s}' {action} \"$SHIPIT_HOST\"",
            opts = ssh.join(" "),
            port = lb.port,
            u = upstreams.display(),
            n = nginx_bin.display(),
            s = script.display(),
        )
    };
    let (drain, undrain) = (hook("drain"), hook("undrain"));
    w.write_config(&Options {
        batch: 1,
        drain: Some(&drain),
        undrain: Some(&undrain),
    });
    let nginx = Front::start(
        &nginx_bin,
        &prefix,
        port,
        Path::new(MANIFEST).join("target/fleet/nginx-error.log"),
        &http,
    );
    let first = w.deploy_ok();
    let front = nginx.addr();
    // nginx and every app answer before the load starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while crate::front::http_get(front, "/").is_none_or(|(s, _)| s != 200) {
        assert!(Instant::now() < deadline, "nginx never answered 200");
        std::thread::sleep(Duration::from_millis(50));
    }

    let load = load::Load::start(front, 4);
    let mut windows: Vec<(String, Duration, Duration)> = Vec::new();
    let mut timed = |name: &str, f: &mut dyn FnMut()| {
        let from = load.now();
        f();
        windows.push((name.to_string(), from, load.now()));
    };
    let mut rollouts = Vec::new();
    for n in 2..=3 {
        timed(&format!("rolling deploy {n}"), &mut || {
            w.commit("VERSION", &format!("{n}\n"));
            let started = Instant::now();
            rollouts.push((w.deploy_ok(), started.elapsed()));
        });
    }
    timed("fleet rollback", &mut || {
        let started = Instant::now();
        let run = w.shipit(&["rollback"]);
        run.code(0);
        rollouts.push(("rollback".into(), started.elapsed()));
    });
    let samples = load.finish();

    let failed: Vec<&load::Sample> = samples.iter().filter(|s| !s.outcome.ok()).collect();
    let mut table =
        String::from("| window | requests | failed | p50 | p99 |\n|---|---:|---:|---:|---:|\n");
    for (name, from, to) in &windows {
        let mut lat: Vec<Duration> = samples
            .iter()
            .filter(|s| s.at >= *from && s.at < *to)
            .map(|s| s.latency)
            .collect();
        lat.sort();
        let bad = samples
            .iter()
            .filter(|s| s.at >= *from && s.at < *to && !s.outcome.ok())
            .count();
        table.push_str(&format!(
            "| {name} ({:.1} s) | {} | {bad} | {:.2} ms | {:.2} ms |\n",
            (*to - *from).as_secs_f64(),
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        ));
    }
    let mut releases: Vec<&str> = samples.iter().filter_map(|s| s.release()).collect();
    releases.sort();
    releases.dedup();
    let report = format!(
        "Fleet of 3 hosts (sshd in mount namespaces) behind one nginx, 4 client \
         connections, batch 1, drain/undrain by nginx-drain.sh:\n\n{table}\n\
         total: {} requests, {} failed; releases that answered: {}\n",
        samples.len(),
        failed.len(),
        releases.join(", ")
    );
    println!("{report}");
    let out = Path::new(MANIFEST).join("target/fleet");
    let _ = fs::create_dir_all(&out);
    let _ = fs::write(out.join("report.md"), &report);
    let _ = fs::copy(prefix.join("logs/error.log"), out.join("nginx-error.log"));

    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollouts, first: {:?}\n{report}",
        failed.len(),
        samples.len(),
        failed.first()
    );
    // The load saw the fleet move: every release answered, and the end
    // state is the rollback target on every host.
    assert!(releases.len() >= 3, "{releases:?}");
    let second = &rollouts[0].0;
    assert_eq!(w.currents(), vec![Some(second.clone()); 3]);
    assert_ne!(second, &first);
}
