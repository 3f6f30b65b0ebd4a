//! What making a release durable costs (prints figures, asserts nothing):
//! `cargo bench --bench durability`.
//!
//! A fresh tree is written without syncing, as `tar -x` leaves a release,
//! then made durable one of three ways:
//! - `syncfs`: one syncfs(2) of the filesystem holding it (it also flushes
//!   whatever else is dirty on that filesystem);
//! - `fsync each`: fsync(2) of every file and directory, one after another;
//! - `fsync x8`: the same spread over 8 threads (each fsync waits on the
//!   disk, not the CPU; the directories last, deepest first).
//!
//! Each is measured on three trees (3 files; 10,000 files of 10 KB; 30,000
//! files of 7 KB, about a dependency directory), on an idle filesystem and
//! while a neighbour writes to the same filesystem without pause (buffered
//! writes of 1 MiB, about 100 MB/s, into one file it keeps rewriting: an
//! app's log or uploads). Rounds alternate the order of the ways. The trees
//! live under `target/` (a real disk; a tmpfs would make every way free).
//! `SHIPIT_BENCH_SMALL=1` divides the tree sizes by ten.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::neighbour::Neighbour;

fn scale(n: usize) -> usize {
    if std::env::var_os("SHIPIT_BENCH_SMALL").is_some() {
        (n / 10).max(3)
    } else {
        n
    }
}

fn write_tree(root: &Path, files: usize, size: usize) {
    let body = vec![b'x'; size];
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i % 100));
        if i < 100 {
            fs::create_dir_all(&dir).unwrap();
        }
        let mut f = File::create(dir.join(format!("f{i:05}.js"))).unwrap();
        f.write_all(&body).unwrap();
        f.write_all(format!("// {i}\n").as_bytes()).unwrap();
    }
}

fn entries(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(root).contents_first(true) {
        let entry = entry.unwrap();
        if entry.file_type().is_dir() {
            dirs.push(entry.into_path());
        } else if entry.file_type().is_file() {
            files.push(entry.into_path());
        }
    }
    (files, dirs)
}

fn fsync_each(root: &Path) {
    let (files, dirs) = entries(root);
    for path in files.iter().chain(&dirs) {
        File::open(path).unwrap().sync_all().unwrap();
    }
}

fn fsync_threads(root: &Path, threads: usize) {
    let (files, dirs) = entries(root);
    let chunk = files.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for part in files.chunks(chunk) {
            s.spawn(move || {
                for path in part {
                    File::open(path).unwrap().sync_data().unwrap();
                }
            });
        }
    });
    for dir in &dirs {
        File::open(dir).unwrap().sync_all().unwrap();
    }
}

fn syncfs(root: &Path) {
    nix::unistd::syncfs(File::open(root).unwrap()).unwrap();
}

fn median(list: &mut [Duration]) -> String {
    list.sort();
    format!(
        "median {:>8.1} ms  (min {:>7.1}, max {:>7.1})",
        list[list.len() / 2].as_secs_f64() * 1e3,
        list[0].as_secs_f64() * 1e3,
        list[list.len() - 1].as_secs_f64() * 1e3
    )
}

fn main() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-durability");
    fs::create_dir_all(&base).unwrap();
    let rounds = 3;
    let trees = [
        (3, 1024),
        (scale(10_000), 10 * 1024),
        (scale(30_000), 7 * 1024),
    ];
    type Way = fn(&Path);
    let ways: [(&str, Way); 3] = [
        ("syncfs", syncfs),
        ("fsync each", fsync_each),
        ("fsync x8", |p| fsync_threads(p, 8)),
    ];
    for busy in [false, true] {
        let neighbour = busy.then(|| Neighbour::start(&base));
        if busy {
            // Let it build up dirty pages first.
            std::thread::sleep(Duration::from_secs(5));
        }
        println!(
            "{}:",
            if busy {
                "while a neighbour writes ~100 MB/s to the same filesystem"
            } else {
                "idle filesystem"
            }
        );
        for (files, size) in trees {
            let name = format!("{files} files");
            let mut times: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
            for round in 0..rounds {
                for k in 0..ways.len() {
                    let which = (round + k) % ways.len();
                    let dir = tempfile::tempdir_in(&base).unwrap();
                    write_tree(dir.path(), files, size);
                    let started = Instant::now();
                    (ways[which].1)(dir.path());
                    times[which].push(started.elapsed());
                    drop(dir);
                    if !busy {
                        // Do not charge the next way for this tree's deletion.
                        nix::unistd::sync();
                    }
                }
            }
            for (k, (way, _)) in ways.iter().enumerate() {
                println!("  {name:<13} {way:<11} {}", median(&mut times[k]));
            }
        }
        drop(neighbour);
        nix::unistd::sync();
    }
}
