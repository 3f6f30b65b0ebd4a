//! A per-test world: a temp root holding a real git repository (`app/`), a
//! config (`shipit.toml`) and a deploy directory (`deploy/`), and a way to
//! run the built `shipit` binary in it with a clean environment.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use crate::support::git::git;
pub use crate::support::run::Run;

pub const SHIPIT: &str = env!("CARGO_BIN_EXE_shipit");

pub struct Sandbox {
    pub root: tempfile::TempDir,
}

impl Sandbox {
    /// A repository with one commit ("v1" in index.html) and a config that
    /// deploys it with `extra` appended to the top-level keys.
    pub fn new() -> Sandbox {
        let sb = Sandbox {
            root: tempfile::tempdir().expect("temp dir"),
        };
        fs::create_dir(sb.repo()).unwrap();
        git(&sb.repo(), &["init", "-q", "-b", "main"]);
        sb.commit("index.html", "v1\n");
        sb.write_config("");
        sb
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }
    pub fn repo(&self) -> PathBuf {
        self.path().join("app")
    }
    pub fn deploy_to(&self) -> PathBuf {
        self.path().join("deploy")
    }
    pub fn config_path(&self) -> PathBuf {
        self.path().join("shipit.toml")
    }

    /// Write `shipit.toml`: `deploy_to`, a git source, then `body` (which may
    /// add top-level keys first and tables after).
    pub fn write_config(&self, body: &str) {
        let (top, tables) = match body.find('[') {
            Some(i) if body[..i].trim().is_empty() || body[..i].ends_with('\n') => body.split_at(i),
            _ => (body, ""),
        };
        let text = format!(
            "deploy_to = \"deploy\"\n{top}\n[source]\ngit = \"app\"\nbranch = \"main\"\n\n{tables}\n"
        );
        fs::write(self.config_path(), text).unwrap();
    }

    /// Replace `from` with `to` in the config file (which must contain it).
    #[track_caller]
    pub fn write_config_replacing(&self, from: &str, to: &str) {
        let text = fs::read_to_string(self.config_path()).unwrap();
        assert!(text.contains(from), "the config has no {from:?}:\n{text}");
        fs::write(self.config_path(), text.replace(from, to)).unwrap();
    }

    /// Where `current` and the slots' link point.
    pub fn fingerprint_of_links(&self) -> (Option<PathBuf>, Option<PathBuf>) {
        (
            fs::read_link(self.deploy_to().join("current")).ok(),
            fs::read_link(self.deploy_to().join("run/app.sock")).ok(),
        )
    }

    /// Write a raw config file.
    pub fn write_raw_config(&self, text: &str) {
        fs::write(self.config_path(), text).unwrap();
    }

    /// Commit `content` to `file` in the app repo; returns the sha.
    pub fn commit(&self, file: &str, content: &str) -> String {
        let path = self.repo().join(file);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, content).unwrap();
        git(&self.repo(), &["add", "-A"]);
        git(
            &self.repo(),
            &["commit", "-q", "-m", &format!("{file}: {content}")],
        );
        git(&self.repo(), &["rev-parse", "HEAD"])
    }

    /// A `shipit` command in this sandbox, with no inherited SHIPIT_*,
    /// GIT_* or proxy settings and no colour.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with(SHIPIT, args)
    }

    /// Like [`Sandbox::command`], for a program that runs shipit itself
    /// (a wrapper that gives it a terminal, say).
    pub fn command_with(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(self.path()).stdin(Stdio::null());
        for (key, _) in std::env::vars() {
            if key.starts_with("SHIPIT_")
                || key.starts_with("GIT_")
                || key.to_lowercase().ends_with("_proxy")
            {
                cmd.env_remove(key);
            }
        }
        cmd.env("NO_COLOR", "1");
        // Whatever the test runner was started with (`nohup`, a background
        // job), shipit starts with SIGHUP at its default here.
        // SAFETY: signal(2) is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::libc::signal(nix::libc::SIGHUP, nix::libc::SIG_DFL);
                Ok(())
            });
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("shipit runs");
        Run::from(args, out)
    }

    /// Configure a build hook that waits (at most 120 s) until the file
    /// returned exists: a deploy started then holds the deploy lock until
    /// the test creates it.
    pub fn builds_wait_for_gate(&self) -> PathBuf {
        let gate = self.path().join("gate");
        self.write_config(&format!(
            "[hooks]\nbuild = [\"i=0; while [ ! -e '{}' ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done\"]\n",
            gate.display()
        ));
        gate
    }

    /// Start `shipit deploy` in the background and wait until it holds the
    /// deploy lock (its pid is in the lock file). Callers stop it by pid.
    pub fn spawn_deploy_holding_lock(&self) -> std::process::Child {
        let child = self
            .command(&["deploy"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lock = self.deploy_to().join(".shipit/lock");
        let pid = child.id().to_string();
        wait_until(
            "the deploy to take the lock",
            Duration::from_secs(20),
            || fs::read_to_string(&lock).is_ok_and(|t| t.contains(&pid)),
        );
        child
    }

    /// `shipit deploy` that must succeed; returns the new release id.
    pub fn deploy(&self) -> String {
        self.run(&["deploy"]).ok();
        self.current().expect("current exists after a deploy")
    }

    /// The release id `current` points at.
    pub fn current(&self) -> Option<String> {
        let link = fs::read_link(self.deploy_to().join("current")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    /// Entries of `releases/`, sorted.
    pub fn releases(&self) -> Vec<String> {
        dir_names(&self.deploy_to().join("releases"))
    }

    pub fn served(&self) -> String {
        fs::read_to_string(self.deploy_to().join("current/index.html")).unwrap_or_default()
    }

    pub fn releases_json(&self) -> Value {
        self.run(&["releases", "--json"]).ok().json()
    }

    pub fn history_json(&self) -> Vec<Value> {
        match self.run(&["history", "--json"]).ok().json() {
            Value::Array(items) => items,
            other => panic!("history is not an array: {other}"),
        }
    }

    /// A fingerprint of everything under `deploy/` (paths, kinds, link
    /// targets, file contents): equal fingerprints mean nothing changed.
    pub fn fingerprint(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        let root = self.deploy_to();
        if !root.exists() {
            return map;
        }
        for entry in walkdir::WalkDir::new(&root)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.unwrap();
            let rel = entry
                .path()
                .strip_prefix(&root)
                .unwrap()
                .display()
                .to_string();
            let kind = entry.file_type();
            let value = if kind.is_symlink() {
                format!("link {}", fs::read_link(entry.path()).unwrap().display())
            } else if kind.is_dir() {
                "dir".to_string()
            } else {
                format!("file {:?}", fs::read(entry.path()).unwrap())
            };
            map.insert(rel, value);
        }
        map
    }
}

/// The uid and gid of `nobody`, as tests that need another user use them.
pub const NOBODY: u32 = 65534;

impl Sandbox {
    /// Let `nobody` reach and read everything in the sandbox (and the path
    /// to it), without giving it write access to anything.
    pub fn open_to_nobody(&self) {
        use std::os::unix::fs::PermissionsExt;
        let mut dir = self.path().to_path_buf();
        loop {
            let mode = fs::metadata(&dir).unwrap().permissions().mode();
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o755)).unwrap();
            if !dir.pop() || dir == Path::new("/") {
                break;
            }
        }
        for entry in walkdir::WalkDir::new(self.path())
            .into_iter()
            .filter_map(|e| e.ok())
        {
            if !entry.path_is_symlink() {
                let mode = entry.metadata().unwrap().permissions().mode();
                let _ = fs::set_permissions(
                    entry.path(),
                    fs::Permissions::from_mode(
                        mode | 0o044 | if entry.file_type().is_dir() { 0o011 } else { 0 },
                    ),
                );
            }
        }
    }

    /// `shipit args` run as `nobody` through setpriv (callers are root).
    pub fn command_as_nobody(&self, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", SHIPIT])
            .args(args)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .env("NO_COLOR", "1")
            .env("HOME", "/nonexistent");
        c
    }

    pub fn run_as_nobody(&self, args: &[&str]) -> Run {
        let out = self
            .command_as_nobody(args)
            .output()
            .expect("setpriv (util-linux) runs");
        Run::from(args, out)
    }
}

/// Tests of what happens between two users need root to make a second
/// user's files. Elsewhere they cannot run: say so loudly, and let the
/// caller return.
pub fn root_or_say_skipped(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!(
        "\n*** SKIPPED {test}: it needs root to create files owned by another user \
         (run the suite as root, e.g. in the CI container) ***\n"
    );
    false
}

/// Assert that a finished process succeeded, showing its stderr if not.
#[track_caller]
pub fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Poll `check` every 20 ms until it holds or `limit` passes.
#[track_caller]
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// SIGKILL a process we started, by pid (harmless if it already exited).
pub fn kill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// The fixture HTTP server of the health-gate tests, started and restarted
/// by the reload hook; stopped by pid when this guard drops.
pub struct Server {
    pub port: u16,
    pub pidfile: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            kill(pid);
        }
    }
}

impl Server {
    pub fn pid(&self) -> Option<u32> {
        fs::read_to_string(&self.pidfile).ok()?.trim().parse().ok()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/healthz", self.port)
    }

    /// The first answer to a GET within 30 s (a busy machine may be slow to
    /// answer, which is not what the tests are about); a hang fails.
    #[track_caller]
    pub fn answer(&self) -> (u16, String) {
        let mut answer = None;
        wait_until("the test server to answer", Duration::from_secs(30), || {
            answer = self.get();
            answer.is_some()
        });
        answer.unwrap()
    }

    /// One GET: (status, body), or None if nothing answers.
    pub fn get(&self) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Some((status, body))
    }
}

impl Sandbox {
    /// Config with a reload hook that (re)starts the fixture server from the
    /// live release, and a health gate that demands the live release's id.
    /// `health` adds keys to `[health]`; `top` adds top-level keys.
    pub fn with_server(&self, top: &str, health: &str) -> Server {
        require_python();
        let port = crate::support::ports::free_port();
        let root = self.path().display().to_string();
        fs::write(
            self.path().join("server.py"),
            include_str!("fixtures/server.py"),
        )
        .unwrap();
        let restart = include_str!("fixtures/restart.sh")
            .replace("@SANDBOX@", &root)
            .replace("@PORT@", &port.to_string());
        fs::write(self.path().join("restart.sh"), restart).unwrap();
        let server = Server {
            port,
            pidfile: self.path().join("server.pid"),
        };
        self.write_config(&format!(
            "{top}\n[hooks]\nreload = \"sh '{root}/restart.sh'\"\nreload_timeout = \"20s\"\n\n\
             [health]\nurl = \"{}\"\ninterval = \"100ms\"\nrequest_timeout = \"1s\"\n\
             expect_body = \"release={{release}}\"\n{health}\n",
            server.url()
        ));
        server
    }

    /// Delete `file` from the app repo and commit.
    pub fn remove(&self, file: &str) {
        git(&self.repo(), &["rm", "-q", file]);
        git(
            &self.repo(),
            &["commit", "-q", "-m", &format!("remove {file}")],
        );
    }
}

fn require_python() {
    let found = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the health-gate tests run a real HTTP server with python3, which is missing: \
         install it (apt-get install python3; .ci/run does this)"
    );
}

/// Wait for a child we started, at most `limit`; a hang kills it by pid and
/// fails the test instead of stalling it.
#[track_caller]
pub fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            kill(child.id());
            let _ = child.wait();
            panic!("pid {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Is `pid` a live process (not gone, not a zombie)?
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}
