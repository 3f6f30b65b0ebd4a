//! A fleet on one machine: each host is a real sshd on 127.0.0.1 (a port
//! of its own) in a mount namespace of its own, where the fleet's
//! `deploy_to` path is a bind mount of that host's directory, and
//! `/etc/hosts` names `app.fleet.test` as the host's own loopback address.
//! So the same `deploy_to` is a different directory on each host, and the
//! same health URL reaches each host's own app, as on separate machines.
//! Nothing of shipit is installed on the hosts: the controller does that.
//! The benchmark's hosts are further apart ([`World::Apart`]): a process
//! table and a filesystem of their own too.
//!
//! Every sshd is stopped by its pid, and every app a reload hook started by
//! the pid file it left (or, on a host apart, every process of the host,
//! with its first), when the world is dropped (panics included).
//! Used by the fleet suite and the fleet benchmark.

#![allow(dead_code)]

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ports::free_port;

pub const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

pub fn which(tool: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tools a fleet on one machine needs, or a panic naming the install.
pub fn require_tools() {
    for (tool, install) in [
        ("ssh", "apt-get install openssh-client"),
        ("ssh-keygen", "apt-get install openssh-client"),
        ("sshd", "apt-get install openssh-server"),
        ("unshare", "apt-get install util-linux"),
        ("mount", "apt-get install mount"),
        ("node", "apt-get install nodejs"),
        ("tar", "apt-get install tar"),
    ] {
        assert!(
            which(tool).is_some(),
            "the fleet suite needs {tool}, which is missing: {install} (.ci/run does this)"
        );
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the fleet suite gives each host a mount namespace of its own (unshare -m, mount --bind), \
         which needs root: run the tests as root (CI does)"
    );
}

pub struct Host {
    pub index: usize,
    /// `ssh://user@127.0.0.1:port`
    pub dest: String,
    pub port: u16,
    /// The host's own loopback address, where its app listens.
    pub addr: String,
    /// Holds `deploy/` (bind-mounted at the fleet's deploy_to), the sshd
    /// config and log.
    pub dir: PathBuf,
    mount_point: PathBuf,
    sshd: Option<Child>,
    /// The deploy directory is mounted read-only on this host (from the
    /// next start): not writable, even by root.
    pub read_only: bool,
    /// The host has a process table of its own (a pid namespace, with its
    /// own `/proc`), holding these idle processes besides its sshd and
    /// sessions: its shipit looks through its own processes, not every
    /// other host's sessions ([`World::Apart`]). `None` in the fleet suite,
    /// whose apps leave pid files read from outside (a host apart is not
    /// for a world with a reload hook: its pid files name pids of its own
    /// table).
    own_pids: Option<Idle>,
    /// `deploy/` is a filesystem of its own (an ext4 image on a loop
    /// device, mounted here), unmounted when the host is dropped.
    own_disk: bool,
}

/// How far apart the hosts of a world are.
#[derive(Clone, Copy, Debug)]
pub enum World {
    /// A mount namespace each; one process table and one filesystem for
    /// all (the fleet suite).
    Shared,
    /// A process table of their own too, holding `idle` besides sshd and
    /// its sessions, and an ext4 of their own, with a journal or not
    /// ([`own_disk`]).
    Apart { idle: Idle, journal: bool },
}

/// What a host's process table holds at rest, as a machine's `/proc`
/// lists it.
#[derive(Clone, Copy, Debug)]
pub struct Idle {
    /// Processes (sleeping ones here): a look through `/proc` reads where
    /// each one's executable and working directory are.
    pub user: usize,
    /// Kernel threads, which a pid namespace does not list: zombies stand
    /// in for them, since for both the look finds no executable to read.
    pub kernel: usize,
}

impl Host {
    pub fn name(&self) -> String {
        format!("host{}", self.index + 1)
    }

    /// This host's deploy directory, seen from outside its namespace.
    pub fn deploy(&self) -> PathBuf {
        self.dir.join("deploy")
    }

    /// The user's home directory on this host (seen from outside its
    /// namespace): where its `.bashrc` goes.
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }

    /// The release `current` points at, if any.
    pub fn current(&self) -> Option<String> {
        let link = fs::read_link(self.deploy().join("current")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    pub fn releases(&self) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(self.deploy().join("releases"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The status recorded in a release's metadata.
    pub fn status_of(&self, id: &str) -> Option<String> {
        let text = fs::read_to_string(
            self.deploy()
                .join("releases")
                .join(id)
                .join(".shipit-release.json"),
        )
        .ok()?;
        let meta: serde_json::Value = serde_json::from_str(&text).ok()?;
        meta["status"].as_str().map(String::from)
    }

    pub fn app_addr(&self, port: u16) -> SocketAddr {
        format!("{}:{port}", self.addr).parse().unwrap()
    }

    /// Start sshd in a mount namespace of its own; wait until it accepts.
    pub fn start(&mut self) {
        assert!(self.sshd.is_none(), "{} runs already", self.name());
        let log = fs::File::create(self.dir.join("sshd.log")).unwrap();
        // The user's home is the host's own too: its login scripts
        // (`.bashrc`) are the test's to write.
        // The idle processes: `$9` sleeping ones, which become sshd's
        // children when sh execs it, and `${10}` zombies, children of a
        // process that never waits for them (each exits a second later,
        // after that process has exec'd `sleep`, so no shell reaps it).
        let script = r#"mount --bind "$1" "$2" && { [ "$8" = rw ] || mount -o remount,bind,ro "$2"; } && mount --bind "$3" /etc/hosts && mount --bind "$6" "$7" && cd / && i=0 && while [ "$i" -lt "$9" ]; do sleep infinity & i=$((i + 1)); done && { [ "${10}" = 0 ] || sh -c 'i=0; while [ "$i" -lt "$1" ]; do sleep 1 & i=$((i + 1)); done; exec sleep infinity' sh "${10}" & } && exec "$4" -D -e -f "$5""#;
        // With a pid namespace, unshare forks and waits (ignoring SIGTERM
        // meanwhile): sshd is the namespace's first process, and when it
        // ends the kernel ends every other process of the host.
        // `--kill-child`: it ends if unshare is killed.
        let namespaces: &[&str] = if self.own_pids.is_some() {
            &["-m", "-p", "-f", "--mount-proc", "--kill-child"]
        } else {
            &["-m"]
        };
        let child = Command::new("unshare")
            .args(namespaces)
            .args(["--propagation", "private", "sh", "-c", script, "sh"])
            .arg(self.deploy())
            .arg(&self.mount_point)
            .arg(self.dir.join("hosts"))
            .arg(which("sshd").expect("checked"))
            .arg(self.dir.join("sshd_config"))
            .arg(self.home())
            .arg(user_home())
            .arg(if self.read_only { "ro" } else { "rw" })
            .arg(self.own_pids.map_or(0, |idle| idle.user).to_string())
            .arg(self.own_pids.map_or(0, |idle| idle.kernel).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("unshare runs");
        // unshare and sh exec: the child's pid is sshd's (or, with a pid
        // namespace, unshare's, whose one child is sshd).
        self.sshd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.sshd.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "sshd of {} exited ({status}): {}",
                    self.name(),
                    fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sshd of {} did not listen within 30 s",
                self.name()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop sshd and the sessions it forked, by their pids: the host is
    /// gone, and the controller's master connections to it (which outlive
    /// a command by `fleet.ssh_persist`) end with their sessions. (On a
    /// host apart, sshd is among the child's descendants, and the host's
    /// other processes end with it.)
    pub fn stop(&mut self) {
        let Some(mut child) = self.sshd.take() else {
            return;
        };
        let sessions = descendants(child.id() as i32);
        stop_pid(child.id() as i32);
        for pid in sessions {
            stop_pid(pid);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The processes its sshd started (sessions and what runs in them;
    /// on a host apart, its idle processes too).
    pub fn processes(&self) -> Vec<i32> {
        let Some(child) = self.sshd.as_ref() else {
            return Vec::new();
        };
        let mut found = descendants(child.id() as i32);
        // On a host apart the child is unshare, and sshd its one child,
        // found first.
        if self.own_pids.is_some() && !found.is_empty() {
            found.remove(0);
        }
        found
    }

    /// Stop the app the reload hook started here (by its pid file). With
    /// a process table of its own, the pid it wrote is not this one's:
    /// the app ended with the host's first process ([`Host::stop`]).
    pub fn stop_app(&self) {
        if self.own_pids.is_some() {
            return;
        }
        if let Ok(pid) = fs::read_to_string(self.deploy().join("shared/app.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The home directory of the user the tests run as (the hosts' user).
fn user_home() -> PathBuf {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// Every process below `pid` (from /proc, children's children included).
pub fn descendants(pid: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|p| {
                    let stat = fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
                    // The fields after the command name, which may hold
                    // anything: state, then the parent's pid.
                    let after = &stat[stat.rfind(')')? + 1..];
                    let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
                    Some((p, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() && found.len() < 10_000 {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn stop_pid(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
        self.stop_app();
        if self.own_disk {
            // Lazily. The hosts started after this one hold copies of the
            // mount in their namespaces (which copied the mount table),
            // so the loop device is freed when the last of them ends.
            let _ = Command::new("umount").arg("-l").arg(self.deploy()).status();
        }
    }
}

/// Give `dir/deploy` a filesystem of its own: a sparse ext4 image beside
/// it (an inode per 4 KiB, room for a few releases of the benchmark's
/// 10,000 files), mounted on a loop device that goes with the mount.
/// Without a journal unless `journal` (there, each fsync commits the
/// journal through the loop device into the image's own filesystem: two
/// filesystems' work on the same cores). On one filesystem for all hosts,
/// without a journal, each new file's inode would be picked past every
/// host's recently deleted ones (`recently_deleted` in the kernel's
/// `fs/ext4/ialloc.c`).
fn own_disk(dir: &Path, journal: bool) {
    fs::create_dir_all(dir.join("deploy")).unwrap();
    let image = dir.join("disk.img");
    fs::File::create(&image).unwrap().set_len(1 << 30).unwrap();
    run(Command::new(
        which("mkfs.ext4").expect("mkfs.ext4 is installed (apt-get install e2fsprogs)"),
    )
    .args(["-q", "-F", "-i", "4096"])
    .args(if journal {
        &[][..]
    } else {
        &["-O", "^has_journal"][..]
    })
    .arg(&image));
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(dir.join("deploy")));
}

/// The hosts, their keys, and the ssh options that reach them.
pub struct Hosts {
    pub root: PathBuf,
    /// The fleet's deploy_to (an empty directory outside the namespaces).
    pub deploy_to: PathBuf,
    pub hosts: Vec<Host>,
    pub ssh_options: Vec<String>,
    /// The port every host's app listens on (on its own address).
    pub app_port: u16,
}

impl Hosts {
    /// `n` hosts under `root`, started. Each host's shared/ gets
    /// `app.env` (its address and the app port), `name` and the example
    /// reload script.
    pub fn start(root: &Path, n: usize) -> Hosts {
        Hosts::start_in(root, n, World::Shared)
    }

    /// `n` hosts under `root`, as far apart as `world` says.
    pub fn start_in(root: &Path, n: usize, world: World) -> Hosts {
        require_tools();
        let keys = root.join("keys");
        fs::create_dir_all(&keys).unwrap();
        for key in ["host", "client"] {
            run(Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "shipit-fleet-test",
                    "-f",
                ])
                .arg(keys.join(key)));
        }
        fs::copy(keys.join("client.pub"), keys.join("authorized_keys")).unwrap();
        // sshd running as root needs its privilege separation directory.
        fs::create_dir_all("/run/sshd").unwrap();
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "root".into());
        let deploy_to = root.join("deploy");
        fs::create_dir_all(&deploy_to).unwrap();
        let app_port = free_port();
        let host_pub = fs::read_to_string(keys.join("host.pub")).unwrap();
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        let mut known = String::new();
        let mut hosts = Vec::new();
        for index in 0..n {
            let dir = root.join(format!("host{}", index + 1));
            let port = free_port();
            let addr = format!("127.0.0.{}", index + 2);
            let mut host = Host {
                index,
                dest: format!("ssh://{user}@127.0.0.1:{port}"),
                port,
                addr: addr.clone(),
                dir: dir.clone(),
                mount_point: deploy_to.clone(),
                sshd: None,
                read_only: false,
                own_pids: match world {
                    World::Shared => None,
                    World::Apart { idle, .. } => Some(idle),
                },
                own_disk: false,
            };
            if let World::Apart { journal, .. } = world {
                // Unmounted when `host` is dropped, a panic included.
                own_disk(&dir, journal);
                host.own_disk = true;
            }
            let shared = dir.join("deploy/shared");
            fs::create_dir_all(&shared).unwrap();
            fs::create_dir_all(dir.join("home")).unwrap();
            fs::write(
                dir.join("sshd_config"),
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {keys}/host\n\
                     PidFile {dir}/sshd.pid\nAuthorizedKeysFile {keys}/authorized_keys\n\
                     StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                     UseDNS no\nPrintMotd no\nLogLevel INFO\nAcceptEnv SHIPIT_TEST_*\n",
                    keys = keys.display(),
                    dir = dir.display()
                ),
            )
            .unwrap();
            fs::write(
                dir.join("hosts"),
                format!("127.0.0.1 localhost\n{addr} app.fleet.test\n"),
            )
            .unwrap();
            fs::write(
                shared.join("app.env"),
                format!("LISTEN_HOST={addr}\nPORT={app_port}\nLINGER_MS=300\n"),
            )
            .unwrap();
            fs::write(shared.join("name"), format!("host{}\n", index + 1)).unwrap();
            fs::copy(
                Path::new(MANIFEST).join("examples/fleet/restart.sh"),
                shared.join("restart.sh"),
            )
            .unwrap();
            known.push_str(&format!(
                "[127.0.0.1]:{port} {} {}\n",
                host_pub[0], host_pub[1]
            ));
            host.start();
            hosts.push(host);
        }
        fs::write(keys.join("known_hosts"), known).unwrap();
        // The controller's `XDG_RUNTIME_DIR`: its ssh master sockets go
        // there, and away with the test's directory.
        fs::create_dir_all(root.join("run")).unwrap();
        fs::set_permissions(
            root.join("run"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let ssh_options = vec![
            "-F".to_string(),
            "/dev/null".into(),
            "-i".into(),
            keys.join("client").display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", keys.join("known_hosts").display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ];
        Hosts {
            root: root.to_path_buf(),
            deploy_to,
            hosts,
            ssh_options,
            app_port,
        }
    }

    /// The controller's `XDG_RUNTIME_DIR`, where shipit keeps its ssh
    /// master sockets: inside the test's directory.
    pub fn runtime_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// `hosts = [...]` and `ssh_options = [...]` for `[fleet]`.
    pub fn fleet_toml(&self) -> String {
        let list = |items: Vec<String>| {
            items
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "hosts = [{}]\nssh_options = [{}]\n",
            list(self.hosts.iter().map(|h| h.dest.clone()).collect()),
            list(self.ssh_options.clone())
        )
    }
}
