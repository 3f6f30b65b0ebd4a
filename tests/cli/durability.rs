//! A power cut right after a deploy: a real ext4 on a loop device, cut with
//! `EXT4_IOC_SHUTDOWN` (flag `EXT4_GOING_FLAGS_NOLOGFLUSH`: what was not
//! yet on disk is lost, as when the power goes), unmounted and mounted again.
//! `current` must then point at a complete release whose files have their
//! content, and the build log must be there too.
//!
//! Needs root and loop devices; where they are unavailable the test says so
//! loudly on stderr and returns.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::sandbox::Sandbox;

/// `_IOR('X', 125, __u32)` from linux/ext4.h.
const EXT4_IOC_SHUTDOWN: u64 = (2 << 30) | (4 << 16) | ((b'X' as u64) << 8) | 125;
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

/// An ext4 image attached to a loop device and mounted; unmounted and
/// detached when dropped, whatever happened in between.
struct LoopMount {
    device: String,
    mount_point: PathBuf,
    mounted: bool,
}

impl LoopMount {
    /// `None` (after saying why, loudly) where loop devices are unavailable.
    fn create(image: &Path, mount_point: &Path) -> Option<LoopMount> {
        let skip = |why: &str| {
            eprintln!(
                "\n*** SKIPPED the power-cut test: {why}. It needs root and loop devices \
                 (a privileged container or a VM); it proves nothing here. ***\n"
            );
            None
        };
        if !nix::unistd::geteuid().is_root() {
            return skip("not running as root");
        }
        if !Path::new("/dev/loop-control").exists() {
            return skip("/dev/loop-control does not exist");
        }
        let status = Command::new("truncate")
            .args(["-s", "64M"])
            .arg(image)
            .status()
            .expect("truncate (coreutils) runs");
        assert!(status.success(), "truncate failed");
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image)
            .output();
        let mkfs = mkfs.unwrap_or_else(|e| {
            panic!("mkfs.ext4 could not run ({e}): install it with `apt-get install e2fsprogs`")
        });
        assert!(
            mkfs.status.success(),
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&mkfs.stderr)
        );
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(image)
            .output()
            .expect("losetup (util-linux) runs");
        if !out.status.success() {
            return skip(&format!(
                "losetup could not attach a loop device ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let mut guard = LoopMount {
            device: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            mount_point: mount_point.to_path_buf(),
            mounted: false,
        };
        fs::create_dir_all(mount_point).unwrap();
        guard.mount();
        Some(guard)
    }

    fn mount(&mut self) {
        let out = Command::new("mount")
            .args(["-t", "ext4", &self.device])
            .arg(&self.mount_point)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mount {} failed: {}",
            self.device,
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = true;
    }

    fn unmount(&mut self) {
        if !self.mounted {
            return;
        }
        let ok = |args: &[&str]| {
            Command::new("umount")
                .args(args)
                .arg(&self.mount_point)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        // A lazy unmount is the last resort: it never fails on a busy mount.
        if !ok(&[]) {
            ok(&["-l"]);
        }
        self.mounted = false;
    }

    /// Cut the power: the filesystem stops, and nothing that was not yet
    /// written (journal included) ever reaches the disk.
    fn power_cut(&self) {
        let dir = fs::File::open(&self.mount_point).unwrap();
        let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: the ioctl reads one u32 through the pointer, which lives
        // until the call returns.
        let rc = unsafe {
            nix::libc::ioctl(
                dir.as_raw_fd(),
                EXT4_IOC_SHUTDOWN as _,
                &flags as *const u32,
            )
        };
        assert_eq!(
            rc,
            0,
            "EXT4_IOC_SHUTDOWN: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        self.unmount();
        let _ = Command::new("losetup")
            .args(["-d", &self.device])
            .stderr(Stdio::null())
            .status();
    }
}

/// Regression: only the staging directory was fsynced, so after a power cut
/// `current` pointed at the new release and its files were empty.
#[test]
fn a_power_cut_after_a_git_deploy_leaves_a_complete_release_live() {
    let sb = Sandbox::new();
    let Some(mut disk) = LoopMount::create(&sb.path().join("disk.img"), &sb.deploy_to()) else {
        return;
    };
    sb.deploy();
    for i in 0..40 {
        let dir = if i % 2 == 0 { "lib" } else { "public/assets" };
        sb.commit(&format!("{dir}/file{i}.js"), &content(i));
    }
    let revision = sb.commit("index.html", "v2\n");
    let id = sb.deploy();
    let mut expected = vec![("index.html".to_string(), "v2\n".to_string())];
    for i in 0..40 {
        let dir = if i % 2 == 0 { "lib" } else { "public/assets" };
        expected.push((format!("{dir}/file{i}.js"), content(i)));
    }
    survives_a_power_cut(&sb, &mut disk, &id, &expected);
    let meta = fs::read_to_string(release(&sb, &id).join(".shipit-release.json")).unwrap();
    assert!(meta.contains(&revision), "{meta}");
}

/// The same for a directory source (copied file by file).
#[test]
fn a_power_cut_after_a_directory_deploy_leaves_a_complete_release_live() {
    let sb = Sandbox::new();
    let Some(mut disk) = LoopMount::create(&sb.path().join("disk.img"), &sb.deploy_to()) else {
        return;
    };
    let site = sb.path().join("site");
    let mut expected = Vec::new();
    for i in 0..40 {
        let file = format!("d{}/file{i}.css", i % 4);
        fs::create_dir_all(site.join(&file).parent().unwrap()).unwrap();
        fs::write(site.join(&file), content(i)).unwrap();
        expected.push((file, content(i)));
    }
    sb.write_raw_config("deploy_to = \"deploy\"\n[source]\npath = \"site\"\n");
    sb.run(&["deploy"]).ok();
    let id = sb.current().unwrap();
    survives_a_power_cut(&sb, &mut disk, &id, &expected);
}

fn content(i: usize) -> String {
    format!("// file {i}\n").repeat(50)
}

fn release(sb: &Sandbox, id: &str) -> PathBuf {
    sb.deploy_to().join("releases").join(id)
}

/// Cut the power, mount again, and check that `current` is `id` with every
/// one of `expected` (path, content), and that its build log survived.
#[track_caller]
fn survives_a_power_cut(
    sb: &Sandbox,
    disk: &mut LoopMount,
    id: &str,
    expected: &[(String, String)],
) {
    disk.power_cut();
    disk.unmount();
    disk.mount();
    assert_eq!(sb.current().as_deref(), Some(id), "current moved back");
    let lost: Vec<&str> = expected
        .iter()
        .filter(|(file, want)| {
            fs::read_to_string(release(sb, id).join(file)).unwrap_or_default() != *want
        })
        .map(|(file, _)| file.as_str())
        .collect();
    assert!(
        lost.is_empty(),
        "after the power cut, {} of {} files of the live release lost their content: {lost:?}",
        lost.len(),
        expected.len()
    );
    let log = fs::read_to_string(sb.deploy_to().join(format!(".shipit/logs/{id}.log")))
        .unwrap_or_default();
    assert!(
        log.starts_with(&format!("release {id}")),
        "build log: {log:?}"
    );
}
