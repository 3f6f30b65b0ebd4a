//! A real filesystem of a test's own: an image file on a loop device,
//! mounted, unmounted and detached by a guard.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `_IOR('X', 125, __u32)` from linux/ext4.h.
const EXT4_IOC_SHUTDOWN: u64 = (2 << 30) | (4 << 16) | ((b'X' as u64) << 8) | 125;
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

#[derive(Clone, Copy)]
pub enum Fs {
    Ext4,
    /// XFS made with reflink (`FICLONE` works).
    XfsReflink,
}

impl Fs {
    fn name(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::XfsReflink => "xfs",
        }
    }

    /// XFS needs at least 300 MB; the image is sparse.
    fn size(self) -> &'static str {
        match self {
            Fs::Ext4 => "64M",
            Fs::XfsReflink => "512M",
        }
    }

    /// The program, its arguments before the image, and its Debian package.
    fn mkfs(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            Fs::Ext4 => ("mkfs.ext4", &["-q", "-F"], "e2fsprogs"),
            Fs::XfsReflink => ("mkfs.xfs", &["-q", "-f", "-m", "reflink=1"], "xfsprogs"),
        }
    }
}

/// A filesystem image attached to a loop device and mounted; unmounted and
/// detached when dropped, whatever happened in between.
pub struct LoopMount {
    device: String,
    mount_point: PathBuf,
    mounted: bool,
    fs: Fs,
}

impl LoopMount {
    /// `None` (after saying why, loudly) where loop devices are unavailable.
    /// A missing `mkfs` fails the test with the command that installs it.
    pub fn create(image: &Path, mount_point: &Path, fs: Fs) -> Option<LoopMount> {
        let skip = |why: &str| {
            eprintln!(
                "\n*** SKIPPED a test on a loop-mounted {}: {why}. It needs root and loop \
                 devices (a privileged container or a VM); it proves nothing here. ***\n",
                fs.name()
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
            .args(["-s", fs.size()])
            .arg(image)
            .status()
            .expect("truncate (coreutils) runs");
        assert!(status.success(), "truncate failed");
        let (program, args, package) = fs.mkfs();
        let mkfs = Command::new(program).args(args).arg(image).output();
        let mkfs = mkfs.unwrap_or_else(|e| {
            panic!("{program} could not run ({e}): install it with `apt-get install {package}`")
        });
        assert!(
            mkfs.status.success(),
            "{program} failed: {}",
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
            fs,
        };
        fs::create_dir_all(mount_point).unwrap();
        guard.mount();
        Some(guard)
    }

    pub fn mount(&mut self) {
        let out = Command::new("mount")
            .args(["-t", self.fs.name(), &self.device])
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

    pub fn unmount(&mut self) {
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

    /// Cut the power (ext4): the filesystem stops, and nothing that was not
    /// yet written (journal included) ever reaches the disk.
    pub fn power_cut(&self) {
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
