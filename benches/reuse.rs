//! Four ways to get a dependency directory into a release, side by side
//! (prints figures, asserts nothing): `cargo bench --bench reuse`.
//!
//! The application's "install" unpacks a local tarball of about 30,000
//! files / 200 MB into `node_modules` and then sleeps a fixed time: 20 s
//! by default (a real `npm ci` of such a tree takes 20 s or more;
//! `SHIPIT_BENCH_INSTALL=8` makes a shorter run, in which the installs
//! only look cheaper).
//! Like `npm install`, it does nothing but look (`VERIFY`, 2 s) when
//! `node_modules` already holds what the lockfile names. The strategies,
//! each on a fresh loop-mounted filesystem, all deployed by shipit so that
//! only the dependency step differs:
//!
//! - **reuse**: `[[reuse]]` with the install as `run`;
//! - **install**: no reuse, the install in `hooks.build`;
//! - **deployer**: Deployer's `deploy:copy_dirs`: `cp -a` of the previous
//!   release's `node_modules`, then the install (which only looks when the
//!   lockfile is unchanged, and unpacks afresh when it changed);
//! - **capistrano**: `node_modules` a shared directory (`shared/`, linked
//!   from every release) that the install updates in place.
//!
//! Each strategy: five deploys with the same lockfile, then one with a
//! changed lockfile. Reported: each deploy's time, the disk used after the
//! five (the filesystem's used bytes, so metadata counts), the reuse step
//! next to `cp -a --reflink=always` (`cp -a` on ext4) of the same directory,
//! the data extents a reused copy does not share (FIEMAP via `filefrag`),
//! and the sync phase of a reused 30,000-file deploy while a neighbour
//! writes about 100 MB/s to the same filesystem.
//!
//! Needs root, loop devices, `mkfs.xfs` (xfsprogs); btrfs is measured when
//! `mkfs.btrfs` works. `SHIPIT_BENCH_SMALL=1` divides the tree by ten.
//! Name filesystems to run only those: `cargo bench --bench reuse -- xfs`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::git::git;
use support::neighbour::Neighbour;

const SHIPIT: &str = env!("CARGO_BIN_EXE_shipit");
/// What a full install takes besides unpacking, in seconds
/// (`SHIPIT_BENCH_INSTALL`).
fn install_secs() -> u32 {
    std::env::var("SHIPIT_BENCH_INSTALL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}
/// What an install that finds everything in place takes, in seconds.
const VERIFY: u32 = 2;

fn small() -> bool {
    std::env::var_os("SHIPIT_BENCH_SMALL").is_some()
}

#[derive(Clone, Copy, PartialEq)]
enum Fs {
    Ext4,
    Xfs,
    Btrfs,
}

impl Fs {
    fn name(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
            Fs::Btrfs => "btrfs",
        }
    }

    fn mkfs(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            // 30,000 files a release, seven releases: more inodes than the
            // default ratio gives a few GB.
            Fs::Ext4 => ("mkfs.ext4", &["-q", "-F", "-N", "400000"], "e2fsprogs"),
            Fs::Xfs => ("mkfs.xfs", &["-q", "-f", "-m", "reflink=1"], "xfsprogs"),
            Fs::Btrfs => ("mkfs.btrfs", &["-q", "-f"], "btrfs-progs"),
        }
    }

    fn clones(self) -> bool {
        self != Fs::Ext4
    }
}

/// A sparse image on a loop device, mounted; unmounted, detached and
/// deleted when dropped, whatever happened in between.
struct LoopMount {
    image: PathBuf,
    device: Option<String>,
    mount_point: PathBuf,
    mounted: bool,
}

impl LoopMount {
    fn create(dir: &Path, fs: Fs) -> Result<LoopMount, String> {
        let image = dir.join(format!("{}.img", fs.name()));
        let mount_point = dir.join(format!("{}.mnt", fs.name()));
        let mut guard = LoopMount {
            image: image.clone(),
            device: None,
            mount_point: mount_point.clone(),
            mounted: false,
        };
        let ok = Command::new("truncate")
            .args(["-s", "8G"])
            .arg(&image)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err("truncate failed".into());
        }
        let (program, args, package) = fs.mkfs();
        let out = Command::new(program)
            .args(args)
            .arg(&image)
            .output()
            .map_err(|e| {
                format!(
                    "{program} could not run ({e}): install it with `apt-get install {package}`"
                )
            })?;
        if !out.status.success() {
            return Err(format!(
                "{program} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()
            .map_err(|e| format!("losetup could not run ({e}): it is in util-linux"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup could not attach a loop device ({}): this needs root and loop devices",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        guard.device = Some(device.clone());
        fs::create_dir_all(&mount_point).unwrap();
        let out = Command::new("mount")
            .args(["-t", fs.name(), &device])
            .arg(&mount_point)
            .output()
            .map_err(|e| format!("mount could not run ({e})"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t {} failed: {}",
                fs.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        guard.mounted = true;
        Ok(guard)
    }

    /// Used bytes of the filesystem, metadata included.
    fn used(&self) -> u64 {
        sync_fs(&self.mount_point);
        let st = nix::sys::statvfs::statvfs(&self.mount_point).unwrap();
        (st.blocks() - st.blocks_free()) as u64 * st.fragment_size() as u64
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            let ok = Command::new("umount")
                .arg(&self.mount_point)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                // A lazy unmount never fails on a busy mount.
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.mount_point)
                    .status();
            }
        }
        if let Some(device) = &self.device {
            let _ = Command::new("losetup").args(["-d", device]).status();
        }
        let _ = fs::remove_file(&self.image);
        let _ = fs::remove_dir(&self.mount_point);
    }
}

fn sync_fs(path: &Path) {
    let f = File::open(path).unwrap();
    nix::unistd::syncfs(&f).unwrap();
}

/// Deterministic incompressible bytes (xorshift).
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

/// The dependency tarball: 30,000 files (sizes 1 to 13 KB, about 200 MB)
/// in 1,500 package directories. Made once, kept under `target/`.
fn tarball() -> (PathBuf, usize, u64) {
    let files = if small() { 3_000 } else { 30_000 };
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-reuse");
    let tar = cache.join(format!("deps-{files}.tar"));
    let size = |i: usize| 1024 + (i * 7919) % (12 * 1024);
    let bytes: u64 = (0..files).map(|i| size(i) as u64).sum();
    if tar.exists() {
        return (tar, files, bytes);
    }
    let tree = cache.join(format!("deps-{files}"));
    let _ = fs::remove_dir_all(&tree);
    for i in 0..files {
        let dir = tree.join(format!("pkg{:04}/lib", i / 20));
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(format!("f{i:05}.js")),
            noise(i as u64 + 7, size(i)),
        )
        .unwrap();
    }
    let partial = tar.with_extension("partial");
    let ok = Command::new("tar")
        .arg("-cf")
        .arg(&partial)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok, "tar -c failed");
    fs::rename(&partial, &tar).unwrap();
    fs::remove_dir_all(&tree).unwrap();
    (tar, files, bytes)
}

#[derive(Clone, Copy, PartialEq)]
enum Strategy {
    Reuse,
    Install,
    Deployer,
    Capistrano,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::Reuse => "shipit [[reuse]]",
            Strategy::Install => "shipit, install in build",
            Strategy::Deployer => "Deployer-style cp -a + install",
            Strategy::Capistrano => "Capistrano-style shared dir",
        }
    }

    fn config(self, deploy_to: &Path, install: &Path) -> String {
        let head = format!(
            "deploy_to = \"{}\"\nkeep_releases = 10\n",
            deploy_to.display()
        );
        let install = format!("sh '{}'", install.display());
        let tail = "[source]\ngit = \"app\"\n";
        match self {
            Strategy::Reuse => format!(
                "{head}{tail}[[reuse]]\npath = \"node_modules\"\nkey = [\"package-lock.json\"]\n\
                 run = [\"{install}\"]\n"
            ),
            Strategy::Install => format!("{head}{tail}[hooks]\nbuild = [\"{install}\"]\n"),
            Strategy::Deployer => format!(
                "{head}{tail}[hooks]\nbuild = [\"if [ -n \\\"$SHIPIT_PREVIOUS_RELEASE\\\" ]; then \
                 cp -a \\\"$SHIPIT_DEPLOY_TO/releases/$SHIPIT_PREVIOUS_RELEASE/node_modules\\\" .; \
                 fi\", \"{install}\"]\n"
            ),
            Strategy::Capistrano => format!(
                "{head}shared = [\"node_modules/\"]\n{tail}[hooks]\nbuild = [\"{install}\"]\n"
            ),
        }
    }
}

/// The install: `npm install` as far as time and disk go.
fn install_script(tar: &Path) -> String {
    format!(
        r#"set -e
want=$(sha256sum package-lock.json | cut -c1-64)
mkdir -p node_modules
if [ "$(cat node_modules/.installed 2>/dev/null)" = "$want" ]; then
  sleep {VERIFY}
  exit 0
fi
# Through the link when node_modules is a shared directory.
find node_modules/ -mindepth 1 -delete
tar -xf '{tar}' -C node_modules/
echo "$want" > node_modules/.installed
sleep {install}
"#,
        tar = tar.display(),
        install = install_secs()
    )
}

struct Deployed {
    total: Duration,
    phases: Vec<(String, f64)>,
}

impl Deployed {
    fn phase(&self, name: &str) -> Option<f64> {
        self.phases
            .iter()
            .find(|(p, _)| p == name)
            .map(|(_, ms)| *ms)
    }
}

fn deploy(dir: &Path) -> Deployed {
    let start = Instant::now();
    let out = Command::new(SHIPIT)
        .args(["deploy", "-q"])
        .current_dir(dir)
        .env("SHIPIT_TIMINGS", "1")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .output()
        .expect("shipit runs");
    let total = start.elapsed();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shipit deploy failed: {said}");
    let phases = said
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words.len() >= 4 && words[0] == "timing").then(|| {
                let ms = words[words.len() - 2].parse::<f64>().unwrap();
                (words[1..words.len() - 2].join(" "), ms)
            })
        })
        .collect();
    Deployed { total, phases }
}

fn commit(app: &Path, file: &str, text: &str) {
    fs::write(app.join(file), text).unwrap();
    git(app, &["add", "-A"]);
    git(app, &["commit", "-q", "-m", file]);
}

fn newest_release(deploy_to: &Path) -> PathBuf {
    let mut ids: Vec<PathBuf> = fs::read_dir(deploy_to.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    ids.sort();
    ids.pop().unwrap()
}

/// Bytes of `dir`'s regular files, and the bytes of their extents that are
/// not shared with another file (FIEMAP, through `filefrag -v`).
fn unshared(dir: &Path) -> (u64, u64) {
    let out = Command::new("sh")
        .args([
            "-c",
            "find \"$1\" -type f -exec filefrag -v {} + 2>/dev/null",
            "sh",
        ])
        .arg(dir)
        .output()
        .expect("filefrag (e2fsprogs) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut total, mut own, mut block) = (0u64, 0u64, 4096u64);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("File size of") {
            // "File size of X is N (M blocks of B bytes)"
            if let Some(i) = words.iter().position(|w| *w == "is") {
                total += words[i + 1].parse::<u64>().unwrap_or(0);
            }
            if let Some(i) = words.iter().position(|w| *w == "blocks") {
                block = words[i + 2].parse().unwrap_or(4096);
            }
        } else if words.first().is_some_and(|w| w.ends_with(':'))
            && words[0].trim_end_matches(':').parse::<u64>().is_ok()
            && words.len() >= 5
        {
            // " 0:  0..  1:  24..  25:  2:  last,shared,eof"
            let length: u64 = words[5].trim_end_matches(':').parse().unwrap_or(0);
            let flags = words.last().copied().unwrap_or("");
            if !flags.contains("shared") && !flags.contains("inline") {
                own += length * block;
            }
        }
    }
    (total, own)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `cp -a` (with `--reflink=always` where the filesystem clones) of the
/// newest release's `node_modules` on the same filesystem, in ms; the copy
/// is deleted again.
fn plain_copy(deploy_to: &Path, mount: &Path, fs: Fs) -> f64 {
    let newest = newest_release(deploy_to);
    let to = mount.join("copy");
    let mut c = Command::new("cp");
    c.arg("-a");
    if fs.clones() {
        c.arg("--reflink=always");
    }
    let start = Instant::now();
    let ok = c
        .arg(newest.join("node_modules"))
        .arg(&to)
        .status()
        .unwrap()
        .success();
    let took = start.elapsed().as_secs_f64() * 1000.0;
    assert!(ok, "cp failed");
    fs::remove_dir_all(&to).unwrap();
    sync_fs(mount);
    took
}

/// One strategy on a fresh filesystem: five deploys, then a changed lockfile.
fn run(
    root: &Path,
    fs: Fs,
    strategy: Strategy,
    tar: &Path,
    files: usize,
    bytes: u64,
) -> Result<(), String> {
    let mount = LoopMount::create(root, fs)?;
    let dir = root.join("project");
    let _ = fs::remove_dir_all(&dir);
    let app = dir.join("app");
    fs::create_dir_all(&app).unwrap();
    git(&app, &["init", "-q", "-b", "main"]);
    commit(
        &app,
        "package-lock.json",
        "{\"lockfileVersion\": 3, \"v\": 1}\n",
    );
    commit(&app, "index.js", "0\n");
    let install = root.join("install.sh");
    fs::write(&install, install_script(tar)).unwrap();
    let deploy_to = mount.mount_point.join("app");
    fs::write(
        dir.join("shipit.toml"),
        strategy.config(&deploy_to, &install),
    )
    .unwrap();
    let empty = mount.used();
    let mut five = Vec::new();
    // The copy that the reuse step is compared with, made just before
    // each reused deploy (the machine's load changes by the minute).
    let mut copies = Vec::new();
    let cp = if fs.clones() {
        "cp -a --reflink=always"
    } else {
        "cp -a"
    };
    for n in 0..5 {
        if n > 0 {
            commit(&app, "index.js", &format!("{n}\n"));
            if strategy == Strategy::Reuse {
                copies.push(plain_copy(&deploy_to, &mount.mount_point, fs));
            }
        }
        five.push(deploy(&dir));
    }
    let after_five = mount.used();
    commit(
        &app,
        "package-lock.json",
        "{\"lockfileVersion\": 3, \"v\": 2}\n",
    );
    let changed = deploy(&dir);
    let rest: Vec<f64> = five[1..].iter().map(|d| d.total.as_secs_f64()).collect();
    println!(
        "{:<6} {:<32} first {:>7}  next 4 (median) {:>7}  changed lockfile {:>7}  disk after five {:>8}",
        fs.name(),
        strategy.name(),
        secs(five[0].total),
        format!("{:.1} s", median(rest)),
        secs(changed.total),
        mb(after_five - empty),
    );
    if strategy != Strategy::Reuse {
        return Ok(());
    }

    // The reuse step, next to a plain copy of the same directory.
    let reuse: Vec<f64> = five[1..].iter().filter_map(|d| d.phase("reuse")).collect();
    let sync: Vec<f64> = five[1..].iter().filter_map(|d| d.phase("sync")).collect();
    let newest = newest_release(&deploy_to);
    let (reuse_ms, cp_ms) = (median(reuse), median(copies));
    println!(
        "         reuse step {reuse_ms:.0} ms (median of 4), {cp} of the same directory {cp_ms:.0} ms \
         (median of 4, each just before a deploy): {:.2}x",
        reuse_ms / cp_ms
    );
    let (total, own) = unshared(&newest.join("node_modules"));
    let growth = {
        // One more unchanged deploy: what it adds to the disk.
        commit(&app, "index.js", "growth\n");
        let before = mount.used();
        deploy(&dir);
        mount.used() - before
    };
    println!(
        "         a reused copy: {} of file data ({} expected), {} in extents of its own \
         ({:.1}%); one unchanged deploy grows the disk by {} ({:.1}% of the data, metadata included)",
        mb(total),
        mb(bytes),
        mb(own),
        own as f64 * 100.0 / total.max(1) as f64,
        mb(growth),
        growth as f64 * 100.0 / total.max(1) as f64
    );

    // The sync phase of a reused deploy while a neighbour writes.
    let mut busy = Vec::new();
    for n in 0..3 {
        commit(&app, "index.js", &format!("busy {n}\n"));
        let neighbour = Neighbour::start(&mount.mount_point);
        std::thread::sleep(Duration::from_secs(2));
        busy.push(deploy(&dir));
        drop(neighbour);
    }
    let busy_sync: Vec<f64> = busy.iter().filter_map(|d| d.phase("sync")).collect();
    let busy_total: Vec<f64> = busy.iter().map(|d| d.total.as_secs_f64()).collect();
    println!(
        "         sync phase ({} files, one syncfs): idle {:.0} ms (median of 4), neighbour writing \
         ~100 MB/s {:.0} ms (median of 3; deploy {:.1} s)",
        files,
        median(sync),
        median(busy_sync),
        median(busy_total)
    );
    drop(mount);
    Ok(())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    assert!(
        nix::unistd::geteuid().is_root(),
        "benches/reuse needs root: it makes and loop-mounts filesystems"
    );
    let (tar, files, bytes) = tarball();
    println!(
        "dependency tree: {files} files, {} of data; install = unpack + {} s, \
         an install that finds the tree in place = {VERIFY} s",
        mb(bytes),
        install_secs()
    );
    let root = tempfile::Builder::new()
        .prefix("shipit-bench-reuse")
        .tempdir_in("/tmp")
        .unwrap();
    for fs in [Fs::Ext4, Fs::Xfs, Fs::Btrfs] {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == fs.name()) {
            continue;
        }
        for strategy in [
            Strategy::Reuse,
            Strategy::Install,
            Strategy::Deployer,
            Strategy::Capistrano,
        ] {
            if let Err(why) = run(root.path(), fs, strategy, &tar, files, bytes) {
                if fs == Fs::Btrfs {
                    println!("btrfs cannot be measured here: {why}");
                    break;
                }
                panic!("{} on {}: {why}", strategy.name(), fs.name());
            }
        }
    }
}
