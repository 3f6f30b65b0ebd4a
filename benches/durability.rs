//! What making a release durable costs, two ways (prints figures, asserts
//! nothing): `cargo bench --bench durability`.
//!
//! A fresh tree shaped like the large-deploy benchmark (10,000 files of
//! 10 KB in 100 directories, ~100 MB) is written without syncing, as
//! `tar -x` leaves a release, then made durable by
//! - `syncfs`: one syncfs(2) of the filesystem holding it;
//! - `fsync each`: fsync(2) of every file and directory in it, as shipit
//!   does (see `fsutil::sync_tree`).
//!
//! Each round writes a new tree for each way, alternating which goes first,
//! so both meet the same amount of dirty data from the tree itself. syncfs
//! also flushes whatever else is dirty on that filesystem, which on a busy
//! server is not bounded by the release; the figures here show the cost on
//! this machine at this moment. The tree lives under `target/` (a real
//! disk; a tmpfs would make both free). `SHIPIT_BENCH_SMALL=1` divides the
//! size by ten.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn files() -> usize {
    if std::env::var_os("SHIPIT_BENCH_SMALL").is_some() {
        1_000
    } else {
        10_000
    }
}

fn write_tree(root: &Path) {
    let body = vec![b'x'; 10 * 1024];
    for i in 0..files() {
        let dir = root.join(format!("d{:03}", i % 100));
        if i < 100 {
            fs::create_dir_all(&dir).unwrap();
        }
        let mut f = File::create(dir.join(format!("f{i:05}.js"))).unwrap();
        f.write_all(&body).unwrap();
        f.write_all(format!("// {i}\n").as_bytes()).unwrap();
    }
}

fn fsync_each(root: &Path) {
    for entry in walkdir::WalkDir::new(root).contents_first(true) {
        let entry = entry.unwrap();
        if entry.file_type().is_dir() || entry.file_type().is_file() {
            File::open(entry.path()).unwrap().sync_all().unwrap();
        }
    }
}

fn syncfs(root: &Path) {
    nix::unistd::syncfs(File::open(root).unwrap()).unwrap();
}

fn main() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-durability");
    fs::create_dir_all(&base).unwrap();
    let rounds = 3;
    let mut times: [(&str, Vec<Duration>); 2] = [("syncfs", vec![]), ("fsync each", vec![])];
    for round in 0..rounds {
        for k in 0..2 {
            let which = (round + k) % 2;
            let dir = tempfile::tempdir_in(&base).unwrap();
            write_tree(dir.path());
            let started = Instant::now();
            match which {
                0 => syncfs(dir.path()),
                _ => fsync_each(dir.path()),
            }
            times[which].1.push(started.elapsed());
            drop(dir);
            // Do not charge the next way for this tree's deletion.
            nix::unistd::sync();
        }
    }
    println!("durability of a {}-file tree ({rounds} rounds):", files());
    for (name, list) in &times {
        let mut sorted = list.clone();
        sorted.sort();
        println!(
            "  {name:<11} median {:>8.1} ms   min {:>8.1} ms   max {:>8.1} ms",
            sorted[sorted.len() / 2].as_secs_f64() * 1e3,
            sorted[0].as_secs_f64() * 1e3,
            sorted[sorted.len() - 1].as_secs_f64() * 1e3
        );
    }
}
