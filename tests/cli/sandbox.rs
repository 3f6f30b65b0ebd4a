//! A per-test world: a temp root holding a real git repository (`app/`), a
//! config (`shipit.toml`) and a deploy directory (`deploy/`), and a way to
//! run the built `shipit` binary in it with a clean environment.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SHIPIT: &str = env!("CARGO_BIN_EXE_shipit");

pub struct Sandbox {
    pub root: tempfile::TempDir,
}

/// A finished run of shipit.
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(args: &[&str], out: Output) -> Run {
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Assert the exit code, showing everything shipit said if it differs.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Run {
        assert_eq!(
            self.code,
            expected,
            "`shipit {}` exited {} (expected {expected})\n--- stdout\n{}\n--- stderr\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn ok(&self) -> &Run {
        self.code(0)
    }

    /// Assert that stderr contains `needle`.
    #[track_caller]
    pub fn says(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "`shipit {}` did not say {needle:?}\n--- stderr\n{}",
            self.args.join(" "),
            self.stderr
        );
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Run git in `dir` with a fixed identity and no user config.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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
        let mut cmd = Command::new(SHIPIT);
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
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("shipit runs");
        Run::from(args, out)
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
