//! Benchmarks that print figures (they assert nothing): `cargo bench --bench core`.
//!
//! - rollback: wall time of `shipit rollback` between two releases
//! - large deploy: a generated repository of 10,000 files (~100 MB), deployed
//!   with no build hook, next to `git archive | tar -x` of the same tree
//! - many releases: `shipit releases --json` and `shipit prune --dry-run`
//!   with 1,000 releases
//! - small deploy: a no-hook deploy of a 3-file repository, phase by phase
//!   (shipit's `SHIPIT_TIMINGS=1` lines), next to a shell script doing the
//!   same steps with plain git, tar, mv and ln: fetch into a mirror,
//!   `git archive | tar -x`, rename into place, swap a symlink,
//!   `sync -f`
//!
//! `SHIPIT_BENCH_SMALL=1` divides the sizes by ten. Name benchmarks to run
//! only those: `cargo bench --bench core -- small-deploy`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::git::git;

const SHIPIT: &str = env!("CARGO_BIN_EXE_shipit");

fn small() -> bool {
    std::env::var_os("SHIPIT_BENCH_SMALL").is_some()
}

fn shipit(dir: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new(SHIPIT)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("shipit runs");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "shipit {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn project(root: &Path, keep: usize) -> std::path::PathBuf {
    let dir = root.to_path_buf();
    fs::create_dir_all(dir.join("app")).unwrap();
    git(&dir.join("app"), &["init", "-q", "-b", "main"]);
    fs::write(
        dir.join("shipit.toml"),
        format!("deploy_to = \"deploy\"\nkeep_releases = {keep}\n[source]\ngit = \"app\"\n"),
    )
    .unwrap();
    dir
}

fn commit_all(dir: &Path, message: &str) {
    git(&dir.join("app"), &["add", "-A"]);
    git(&dir.join("app"), &["commit", "-q", "-m", message]);
}

struct Stats(Vec<Duration>);

impl Stats {
    fn show(&mut self) -> String {
        self.0.sort();
        let n = self.0.len();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms ({n} runs)",
            ms(self.0[0]),
            ms(self.0[n / 2]),
            ms(self.0[(n * 9 / 10).min(n - 1)]),
            ms(self.0[n - 1])
        )
    }
}

fn bench_rollback(root: &Path) {
    let dir = project(&root.join("rollback"), 5);
    fs::write(dir.join("app/index.html"), "v1").unwrap();
    commit_all(&dir, "v1");
    shipit(&dir, &["deploy", "-q"]);
    fs::write(dir.join("app/index.html"), "v2").unwrap();
    commit_all(&dir, "v2");
    shipit(&dir, &["deploy", "-q"]);
    let ids: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(dir.join("deploy/releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let mut times = Vec::new();
    for i in 0..40 {
        let to = &ids[i % 2];
        times.push(shipit(&dir, &["rollback", "-q", "--to", to]));
    }
    println!("rollback between two releases: {}", Stats(times).show());
}

/// Deterministic incompressible bytes (xorshift), so git cannot shrink them.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn bench_large_deploy(root: &Path) {
    let files = if small() { 1_000 } else { 10_000 };
    let dir = project(&root.join("large"), 3);
    let start = Instant::now();
    for i in 0..files {
        let sub = dir.join(format!("app/d{:03}", i % 100));
        fs::create_dir_all(&sub).unwrap();
        fs::write(
            sub.join(format!("f{i:05}.bin")),
            noise(i as u64 + 1, 10 * 1024),
        )
        .unwrap();
    }
    commit_all(&dir, "large tree");
    println!(
        "large tree: {files} files, {} MB, generated and committed in {:.1} s",
        files * 10 / 1024,
        start.elapsed().as_secs_f64()
    );

    let mut baseline = Vec::new();
    for n in 0..3 {
        let out = root.join(format!("archive-{n}"));
        fs::create_dir_all(&out).unwrap();
        let start = Instant::now();
        let ok = Command::new("sh")
            .args([
                "-c",
                "git -C \"$1\" archive --format=tar HEAD | tar -x -f - -C \"$2\"",
                "sh",
            ])
            .arg(dir.join("app"))
            .arg(&out)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        baseline.push(start.elapsed());
        fs::remove_dir_all(&out).unwrap();
    }
    let cold = shipit(&dir, &["deploy", "-q"]);
    let mut warm = Vec::new();
    for n in 0..3 {
        fs::write(dir.join("app/changed.txt"), format!("{n}")).unwrap();
        commit_all(&dir, "one change");
        warm.push(shipit(&dir, &["deploy", "-q"]));
    }
    let mut b = Stats(baseline);
    let mut w = Stats(warm);
    println!("  git archive | tar -x:            {}", b.show());
    println!(
        "  shipit deploy, first (clones the mirror): {:.1} ms",
        cold.as_secs_f64() * 1000.0
    );
    println!(
        "  shipit deploy, next (fetch + export + swap + prune): {}",
        w.show()
    );
}

fn bench_many_releases(root: &Path) {
    let count = if small() { 100 } else { 1_000 };
    let dir = project(&root.join("many"), 5);
    fs::write(dir.join("app/index.html"), "v1").unwrap();
    commit_all(&dir, "v1");
    shipit(&dir, &["deploy", "-q"]);
    let releases = dir.join("deploy/releases");
    let first: String = fs::read_dir(&releases)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    let meta = fs::read_to_string(releases.join(&first).join(".shipit-release.json")).unwrap();
    // Fabricate older releases: one a minute before the real one.
    let base = chrono::NaiveDateTime::parse_from_str(&first, "%Y%m%d%H%M%S").unwrap();
    for i in 1..count {
        let id = (base - chrono::TimeDelta::minutes(i as i64))
            .format("%Y%m%d%H%M%S")
            .to_string();
        let d = releases.join(&id);
        fs::create_dir(&d).unwrap();
        fs::write(d.join("index.html"), "old").unwrap();
        fs::write(d.join(".shipit-release.json"), meta.replace(&first, &id)).unwrap();
    }
    let mut list = Vec::new();
    let mut plan = Vec::new();
    for _ in 0..10 {
        list.push(shipit(&dir, &["releases", "--json"]));
        plan.push(shipit(&dir, &["prune", "--dry-run", "--json"]));
    }
    println!("{count} releases:");
    println!("  shipit releases --json:  {}", Stats(list).show());
    println!("  shipit prune --dry-run:  {}", Stats(plan).show());
    let removal = shipit(&dir, &["prune", "-q"]);
    println!(
        "  shipit prune (removes {}): {:.1} ms",
        count - 5,
        removal.as_secs_f64() * 1000.0
    );
}

/// The bare minimum a release-directory deploy does, as a shell script: the
/// baseline that shipit's own overhead is measured against. No locking,
/// metadata, history or pruning; one `sync -f` (a syncfs of the filesystem)
/// at the end, since a deploy that is not on disk is not done.
const BASELINE_DEPLOY: &str = r#"set -e
app=$1 base=$2 id=$3
git --git-dir="$base/mirror.git" fetch --quiet --prune --force "$app" '+refs/*:refs/*'
sha=$(git --git-dir="$base/mirror.git" rev-parse --verify --quiet 'refs/heads/main^{commit}')
mkdir "$base/staging-$id"
git --git-dir="$base/mirror.git" archive --format=tar "$sha" | tar -x --no-same-owner -f - -C "$base/staging-$id"
mv "$base/staging-$id" "$base/releases/$id"
ln -s "releases/$id" "$base/.current-$id"
mv -T "$base/.current-$id" "$base/current"
sync -f "$base/releases/$id"
"#;

/// A no-hook deploy of a tiny repository: where the time goes.
fn bench_small_deploy(root: &Path) {
    const RUNS: usize = 20;
    let dir = project(&root.join("small"), 3);
    for (name, text) in [("index.html", "v0"), ("app.js", "1"), ("README", "x")] {
        fs::write(dir.join("app").join(name), text).unwrap();
    }
    commit_all(&dir, "three files");
    shipit(&dir, &["deploy", "-q"]);

    let base = root.join("small-baseline");
    fs::create_dir_all(base.join("releases")).unwrap();
    git(
        root,
        &[
            "clone",
            "--mirror",
            "--quiet",
            dir.join("app").to_str().unwrap(),
            base.join("mirror.git").to_str().unwrap(),
        ],
    );

    let mut phases: std::collections::BTreeMap<String, Vec<Duration>> = Default::default();
    let (mut totals, mut baseline) = (Vec::new(), Vec::new());
    for n in 0..RUNS {
        fs::write(dir.join("app/index.html"), format!("v{}", n + 1)).unwrap();
        commit_all(&dir, "one change");

        let start = Instant::now();
        let ok = Command::new("bash")
            .args(["-c", BASELINE_DEPLOY, "bash"])
            .arg(dir.join("app"))
            .arg(&base)
            .arg(format!("{n:04}"))
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .unwrap()
            .success();
        baseline.push(start.elapsed());
        assert!(ok, "the baseline script failed");

        let start = Instant::now();
        let out = Command::new(SHIPIT)
            .args(["deploy", "-q"])
            .current_dir(&dir)
            .env("SHIPIT_TIMINGS", "1")
            .env("NO_COLOR", "1")
            .output()
            .expect("shipit runs");
        let total = start.elapsed();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "shipit deploy failed: {said}");
        totals.push(total);
        let mut timed = Duration::ZERO;
        for line in said.lines() {
            let mut words = line.split_whitespace();
            if let (Some("timing"), Some(phase), Some(ms)) =
                (words.next(), words.next(), words.next())
            {
                let took = Duration::from_secs_f64(ms.parse::<f64>().unwrap() / 1000.0);
                timed += took;
                phases.entry(phase.to_string()).or_default().push(took);
            }
        }
        phases
            .entry("other (start, lock, stage, history)".into())
            .or_default()
            .push(total.saturating_sub(timed));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let shipit_median = median(&mut totals);
    let baseline_median = median(&mut baseline);
    println!("small deploy (3 files, no hooks), {RUNS} runs:");
    println!(
        "  shell baseline (fetch, archive | tar -x, mv, ln, sync -f): {}",
        Stats(baseline).show()
    );
    println!(
        "  shipit deploy:                                    {}",
        Stats(totals).show()
    );
    for (phase, mut times) in phases {
        println!("    {phase:<52} median {:.1} ms", ms(median(&mut times)));
    }
    println!(
        "  shipit / baseline (medians): {:.2}x",
        ms(shipit_median) / ms(baseline_median)
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass other
    // flags: run only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let root = tempfile::tempdir().unwrap();
    type Bench = (&'static str, fn(&Path));
    let benches: [Bench; 4] = [
        ("rollback", bench_rollback),
        ("many-releases", bench_many_releases),
        ("large-deploy", bench_large_deploy),
        ("small-deploy", bench_small_deploy),
    ];
    for (name, bench) in benches {
        if wanted.is_empty() || wanted.iter().any(|w| name.contains(w.as_str())) {
            bench(root.path());
        }
    }
}
