//! `docs/getting-started.md`, run as a reader would run it: every ` ```sh `
//! block, verbatim and in order, behind real nginx and real pm2, through
//! the first deploy, a second one, a broken release rolled back by the
//! gate, `shipit rollback`, the move to slots, a slots deploy and a slots
//! rollback; then the "Going back to the reload path" section of
//! `docs/moving-to-slots.md` on the machine that left, and a deploy there.
//! When a page drifts from what works, this test fails.
//!
//! The rules, which the pages follow too:
//! - **Only marked placeholders change.** Each page declares them in an HTML
//!   comment, `<!-- placeholders: /srv/myapp=deploy directory, 8080=front
//!   port, ... -->`; each is replaced (as a whole word, in one pass, so a
//!   replacement is never searched again) by a path under this test's temp
//!   directory or a free port on 127.0.0.1. The meanings are the contract:
//!   a placeholder this test does not know fails it.
//! - **` ```sh setup ` blocks are skipped**: they install tools on the
//!   machine (apt-get, `npm install -g pm2`, building shipit), which CI's
//!   `.ci/run` does instead. Every other `sh` block runs. Output shown to
//!   the reader is in ` ```text ` blocks, which are not run.
//! - **The environment is arranged, not the text.** Each block runs with
//!   `bash -euo pipefail` (the first failing command fails the test), in a
//!   fresh bash whose working directory is `HOME` (the page's blocks start
//!   with their own `cd`), with a cleared environment: `HOME` a temp
//!   directory (with a git identity in `~/.gitconfig`, as a reader's has),
//!   `PM2_HOME` under it (a pm2 daemon of its own), `USER`, and `PATH` =
//!   a bin directory of this test, then pm2 from `target/e2e-tools`, then
//!   the system's. The bin directory holds the built `shipit` and two
//!   shims for what a reader does system-wide:
//!   - `sudo` runs its arguments (the test runs as root, and every path it
//!     touches is a placeholder); `sudo -u USER` runs them as USER with
//!     setpriv, as sudo would (the page checks what nginx's user may do);
//!   - `nginx` is the real nginx with `-p <prefix> -c <main config>` of the
//!     nginx this test runs, so the page's `nginx -t` and `nginx -s
//!     reload` test and reload that one. Its main config includes the
//!     placeholder for `/etc/nginx` + `/sites-enabled/*`, as Debian's does.
//!
//!   nginx is started by the test with no site (as a fresh install serves
//!   nothing on the front port); the page puts its site in place.
//! - **A block the page expects to fail is written to be honest for a
//!   reader too** (`shipit deploy || echo "exit $?"`), and the test checks
//!   the outcome the page claims, from the output and from `status`,
//!   `releases --json` and `history --json`.
//!
//! What it asserts, at each block that runs `shipit deploy` or `shipit
//! rollback` (their sequence must match each page's plan in [`PARTS`]):
//! the release `current` names, what nginx serves (the release id in the
//! app's answer), the live slot, and for the broken release that it exited
//! 4, said what the page quotes, was marked `failed` and never stayed live.
//! After a block that reloads nginx, nginx serves the live release before
//! the next block runs (the page shows it with curl, then goes on). From the rollback on, a watcher sends requests
//! through nginx without pause; none may fail while the pages move the app
//! to slots, deploy and roll back there, and move it back. At the end only
//! the reload path's pm2 app runs.
//!
//! nginx and the pm2 daemon are stopped by pid and `pm2 kill` when the test
//! ends, failing or not ([`Machine`]'s `Drop`).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::front::{Front, http_get};
use crate::support::exec::{copy_executable, write_executable};
use crate::{MANIFEST, SHIPIT, Tools, free_port};

/// How long one block may run: a deploy with pm2 and a drain, with room
/// for a busy machine. A hang fails the test instead of stalling CI.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// What the page's `shipit deploy` / `shipit rollback` blocks do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Reload path: a new release, served through nginx.
    Deploy,
    /// Reload path: a release that answers 500; the gate rolls it back.
    Broken,
    /// Reload path: `shipit rollback` to the release before.
    Rollback,
    /// The first deploy with `[slots]`: a new release in slot blue, while
    /// nginx still reaches the old pm2 app (the page switches nginx next).
    FirstSlots,
    /// Slots: a new release in the idle slot, served through nginx.
    SlotsDeploy,
    /// Slots: a release that answers 500, refused in the idle slot: the
    /// front's link never moves, and no request is answered by it.
    SlotsBroken,
    /// Slots: `shipit rollback` to the release before, in the idle slot.
    SlotsRollback,
}

/// A fenced block of the page.
struct Block {
    /// 1-based line of its opening fence, for messages.
    line: usize,
    info: String,
    text: String,
}

fn fenced_blocks(page: &str, text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut open {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    open = Some(Block {
                        line: n + 1,
                        info: info.trim().to_string(),
                        text: String::new(),
                    });
                }
            }
            Some(block) => {
                if line.trim_end() == "```" {
                    blocks.push(open.take().expect("a block is open"));
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "{page}: a fenced block is never closed");
    blocks
}

/// `<!-- placeholders: TEXT=meaning, ... -->`
fn declared_placeholders(page: &str, text: &str) -> Vec<(String, String)> {
    let start = text
        .find("<!-- placeholders:")
        .unwrap_or_else(|| panic!("{page} declares no placeholders"));
    let rest = &text[start + "<!-- placeholders:".len()..];
    let end = rest.find("-->").expect("the placeholders comment ends");
    rest[..end]
        .split(',')
        .map(|pair| {
            let (text, meaning) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("placeholder {pair:?} is not TEXT=meaning"));
            (text.trim().to_string(), meaning.trim().to_string())
        })
        .collect()
}

fn word_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Replace each placeholder where it stands as a whole word, in one pass:
/// a replacement is never searched again.
fn substitute(text: &str, pairs: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let before = text[..i].chars().next_back();
        let hit = pairs.iter().find(|(from, _)| {
            text[i..].starts_with(from.as_str())
                && !word_char(before)
                && !word_char(text[i + from.len()..].chars().next())
        });
        match hit {
            Some((from, to)) => {
                out.push_str(to);
                i += from.len();
            }
            _ => {
                let c = text[i..].chars().next().expect("inside the text");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// Everything the run started, stopped when dropped (also on panic).
struct Machine {
    root: tempfile::TempDir,
    pm2: PathBuf,
    front: Option<Front>,
    watcher: Option<Watcher>,
    /// Blocks run so far: their scripts and outputs are kept numbered.
    blocks: usize,
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.take() {
            let _ = w.finish();
        }
        // Keep pm2's logs for a post-mortem.
        let out = Path::new(MANIFEST).join("target/e2e");
        let _ = fs::create_dir_all(&out);
        if let Ok(logs) = fs::read_dir(self.pm2_home().join("logs")) {
            for log in logs.flatten() {
                let _ = fs::copy(
                    log.path(),
                    out.join(format!("guide-pm2-{}", log.file_name().to_string_lossy())),
                );
            }
        }
        // nginx first, then the apps behind it.
        self.front = None;
        let _ = Command::new(&self.pm2)
            .arg("kill")
            .env("PM2_HOME", self.pm2_home())
            .stdin(Stdio::null())
            .output();
        if let Ok(pid) = fs::read_to_string(self.pm2_home().join("pm2.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Machine {
    fn path(&self) -> &Path {
        self.root.path()
    }
    fn home(&self) -> PathBuf {
        self.path().join("home")
    }
    fn bin(&self) -> PathBuf {
        self.path().join("bin")
    }
    fn pm2_home(&self) -> PathBuf {
        self.home().join(".pm2")
    }
    fn front(&self) -> &Front {
        self.front.as_ref().expect("nginx runs")
    }

    fn env(&self) -> Vec<(String, String)> {
        let pm2_dir = self.pm2.parent().expect("pm2 lives in a directory");
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        vec![
            ("HOME".into(), self.home().display().to_string()),
            (
                "PATH".into(),
                format!(
                    "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.bin().display(),
                    pm2_dir.display()
                ),
            ),
            ("PM2_HOME".into(), self.pm2_home().display().to_string()),
            ("USER".into(), user),
            ("LANG".into(), "C.UTF-8".into()),
            ("NO_COLOR".into(), "1".into()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ]
    }

    /// Run one block as the page shows it; its output (stdout and stderr,
    /// interleaved as a terminal shows them) is returned.
    fn run_block(&mut self, page: &str, block: &Block, text: &str) -> String {
        self.blocks += 1;
        let n = self.blocks;
        let dir = self.path().join("blocks");
        fs::create_dir_all(&dir).unwrap();
        let script = dir.join(format!("{n:02}.sh"));
        fs::write(&script, text).unwrap();
        // A file, not a pipe: a daemon a block starts (pm2's) may keep
        // what it inherited open long after the block ended.
        let out_path = dir.join(format!("{n:02}.out"));
        let out = fs::File::create(&out_path).unwrap();
        let mut child = Command::new("bash")
            .args(["--noprofile", "--norc", "-euo", "pipefail"])
            .arg(&script)
            .current_dir(self.home())
            .env_clear()
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("bash runs");
        let deadline = Instant::now() + BLOCK_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let output = fs::read_to_string(&out_path).unwrap_or_default();
        println!(
            "--- {page}:{} ---\n{text}--- output ---\n{output}",
            block.line
        );
        match status {
            None => panic!(
                "the block at {page}:{} ran longer than {BLOCK_TIMEOUT:?}:\n{text}\n{output}",
                block.line
            ),
            Some(s) => assert!(
                s.success(),
                "the block at {page}:{} failed ({s}):\n{text}\n--- output ---\n{output}",
                block.line
            ),
        }
        output
    }

    /// `pm2 <args>` on the page's pm2 daemon, its stdout as JSON.
    fn pm2(&self, args: &[&str]) -> Option<serde_json::Value> {
        let out = Command::new(&self.pm2)
            .args(args)
            .current_dir(self.home())
            .env_clear()
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn shipit_json(&self, deploy_to: &Path, args: &[&str]) -> serde_json::Value {
        let out = Command::new(self.bin().join("shipit"))
            .args(args)
            .arg("--json")
            .current_dir(deploy_to)
            .env_clear()
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .expect("shipit runs");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "shipit {args:?} --json: {e}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// Requests through nginx, one after another on fresh connections, from
/// the moment it starts until `finish`: every one must get a 200.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Watched>,
}

/// What the watcher saw.
#[derive(Default)]
struct Watched {
    sent: usize,
    /// Anything but a 200, as the client saw it.
    failed: Vec<String>,
    /// The releases that answered (the app names its release in every
    /// answer).
    releases: BTreeSet<String>,
}

impl Watcher {
    fn start(addr: std::net::SocketAddr) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut seen = Watched::default();
            // Bounded whatever happens to the caller.
            let deadline = Instant::now() + Duration::from_secs(1200);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                seen.sent += 1;
                match http_get(addr, "/") {
                    Some((200, body)) => {
                        if let Some(id) = body
                            .split("\"release\":\"")
                            .nth(1)
                            .and_then(|rest| rest.split('"').next())
                        {
                            seen.releases.insert(id.to_string());
                        }
                    }
                    other => seen.failed.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        Watcher { stop, thread }
    }

    fn finish(self) -> Watched {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the watcher ends")
    }
}

fn release_of(path: &Path) -> String {
    fs::read_link(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// nginx serves `release`: soon (the page shows it, then goes on), and
/// then to every one of a few requests in a row (right after a reload,
/// nginx's old workers may still take a connection or two).
#[track_caller]
fn assert_served(front: &Front, release: &str, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = front.served_release(6);
        if seen.as_deref() == Some(release) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {after}, nginx does not serve {release} (last: {seen:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One page's part of the run: its `sh` blocks from `from` (a heading)
/// on, and what its deploys and rollbacks must do.
struct Part {
    page: &'static str,
    from: Option<&'static str>,
    /// The page whose run covers the `sh` blocks before `from`: each of
    /// their lines must be a line of one of its `sh` blocks.
    covered_by: Option<&'static str>,
    plan: &'static [Step],
}

const PARTS: [Part; 2] = [
    Part {
        page: "docs/getting-started.md",
        from: None,
        covered_by: None,
        plan: &[
            Step::Deploy,
            Step::Deploy,
            Step::Broken,
            Step::Rollback,
            Step::FirstSlots,
            Step::SlotsDeploy,
            Step::SlotsBroken,
            Step::SlotsRollback,
        ],
    },
    // From the state getting-started leaves (the app on slots, blue live):
    // back to the reload path, and a deploy there.
    Part {
        page: "docs/moving-to-slots.md",
        from: Some("## Going back to the reload path"),
        covered_by: Some("docs/getting-started.md"),
        plan: &[Step::Deploy],
    },
];

/// What the pages are run against, and what they have done so far.
struct Run {
    machine: Machine,
    deploy_to: PathBuf,
    values: Vec<(&'static str, String)>,
    /// The releases users were sent to, oldest first; a rollback pops one.
    lives: Vec<String>,
    /// Releases refused in a slot: no request may ever name them.
    refused: Vec<String>,
}

impl Run {
    fn part(&mut self, part: &Part) {
        let page = part.page;
        let text = fs::read_to_string(Path::new(MANIFEST).join(page)).unwrap();
        let pairs: Vec<(String, String)> = declared_placeholders(page, &text)
            .into_iter()
            .map(|(from, meaning)| {
                let to = self
                    .values
                    .iter()
                    .find(|(m, _)| *m == meaning)
                    .unwrap_or_else(|| {
                        panic!("{page} declares a placeholder this test does not know: {from}={meaning}")
                    });
                (from, to.1.clone())
            })
            .collect();
        for (needed, _) in &self.values {
            assert!(
                declared_placeholders(page, &text)
                    .iter()
                    .any(|(_, m)| m == needed),
                "{page} must declare its {needed} as a placeholder"
            );
        }
        let from_line = part.from.map(|heading| {
            1 + text
                .lines()
                .position(|l| l.trim_end() == heading)
                .unwrap_or_else(|| panic!("{page} has no heading {heading:?}"))
        });
        let mut plan = part.plan.iter();
        let mut ran = 0;
        for block in fenced_blocks(page, &text) {
            if from_line.is_some_and(|from| block.line < from) {
                continue;
            }
            match block.info.as_str() {
                "sh" => {}
                "sh setup" | "text" | "toml" | "js" | "" => continue,
                other => panic!(
                    "{page}:{}: a ```{other} block: this test runs ```sh, skips ```sh setup and \
                     ```text",
                    block.line
                ),
            }
            let script = substitute(&block.text, &pairs);
            let runs = |cmd: &str| block.text.lines().any(|l| l.contains(cmd));
            let before = self.current();
            let output = self.machine.run_block(page, &block, &script);
            ran += 1;
            // A page that reloads nginx shows what it serves next, and goes
            // on once it serves what is live: so does the test, before the
            // next block (which may stop what nginx used before).
            if runs("nginx -s reload")
                && let Some(live) = self.current()
            {
                let what = format!("the nginx reload at {page}:{}", block.line);
                assert_served(self.machine.front(), &live, &what);
            }
            let step = match (runs("shipit deploy"), runs("shipit rollback")) {
                (false, false) => continue,
                (true, true) => panic!(
                    "{page}:{}: one block both deploys and rolls back; give each its own block",
                    block.line
                ),
                (deploys, _) => {
                    let step = *plan.next().unwrap_or_else(|| {
                        panic!(
                            "{page}:{}: more deploys and rollbacks than this test's plan for the \
                             page; update both",
                            block.line
                        )
                    });
                    let rollback = matches!(step, Step::Rollback | Step::SlotsRollback);
                    assert_eq!(
                        deploys, !rollback,
                        "{page}:{}: the page's next step is not {step:?}; update the page or the \
                         plan",
                        block.line
                    );
                    step
                }
            };
            self.check(
                step,
                &format!("{step:?} ({page}:{})", block.line),
                before,
                &output,
            );
        }
        let left: Vec<_> = plan.collect();
        assert!(
            left.is_empty(),
            "{page} stopped before these steps of the plan: {left:?}"
        );
        assert!(ran > 0, "{page}: no block ran");
    }

    fn current(&self) -> Option<String> {
        let link = self.deploy_to.join("current");
        fs::symlink_metadata(&link).ok().map(|_| release_of(&link))
    }

    /// What the page promises after a block that ran `step`.
    fn check(&mut self, step: Step, what: &str, before: Option<String>, output: &str) {
        let current = self.current().expect("something is live");
        let releases = self.machine.shipit_json(&self.deploy_to, &["releases"]);
        let newest = releases["releases"][0]["id"].as_str().unwrap().to_string();
        match step {
            Step::Deploy | Step::FirstSlots | Step::SlotsDeploy => {
                assert_ne!(before.as_ref(), Some(&current), "{what} made a new release");
                assert_eq!(current, newest, "{what}: the new release is live");
                self.lives.push(current.clone());
            }
            Step::Broken | Step::SlotsBroken => {
                assert!(
                    output.lines().any(|l| l.trim() == "exit 4"),
                    "{what}: the page says the broken deploy exits 4:\n{output}"
                );
                assert_eq!(before.as_ref(), Some(&current), "{what}: not live");
                assert_ne!(newest, current, "{what} made a release");
                // The lines the page quotes, and what history records.
                let (quoted, outcome) = if step == Step::Broken {
                    (
                        [
                            format!("error: deploy of releases/{newest} failed after the swap"),
                            format!("live now: releases/{current} (rolled back; healthy)"),
                        ],
                        "rolled-back",
                    )
                } else {
                    self.refused.push(newest.clone());
                    (
                        [
                            format!(
                                "error: releases/{newest} failed its gate in slot blue; no user \
                                 request reached it"
                            ),
                            format!("live now: releases/{current} (unchanged, in slot green)"),
                        ],
                        "refused",
                    )
                };
                for line in quoted {
                    assert!(output.contains(&line), "{what}: no {line:?} in:\n{output}");
                }
                assert_eq!(
                    releases["releases"][0]["status"], "failed",
                    "{what}: the broken release is marked failed"
                );
                let history = self.machine.shipit_json(&self.deploy_to, &["history"]);
                assert_eq!(history[0]["outcome"], outcome, "{what}: {history:#}");
                assert_eq!(history[0]["live"].as_str(), Some(current.as_str()));
            }
            Step::Rollback | Step::SlotsRollback => {
                self.lives.pop();
                assert_eq!(
                    Some(&current),
                    self.lives.last(),
                    "{what} went back to the release before"
                );
            }
        }
        let live_slot = self.machine.shipit_json(&self.deploy_to, &["status"])["slots"]["live"]
            .as_str()
            .map(str::to_string);
        let front = self.machine.front();
        match step {
            Step::FirstSlots => {
                assert_eq!(live_slot.as_deref(), Some("blue"), "{what}");
                // The page says users still reach the old app until nginx
                // is switched.
                let old = &self.lives[self.lives.len() - 2];
                assert_served(front, old, what);
            }
            Step::SlotsDeploy | Step::SlotsBroken => {
                assert_eq!(live_slot.as_deref(), Some("green"), "{what}");
                assert_served(front, &current, what);
            }
            Step::SlotsRollback => {
                assert_eq!(live_slot.as_deref(), Some("blue"), "{what}");
                assert_served(front, &current, what);
            }
            Step::Deploy | Step::Broken | Step::Rollback => {
                assert!(live_slot.is_none(), "{what}: no slots");
                assert_served(front, &current, what);
            }
        }
        if step == Step::Rollback {
            // From here to the end (the move to slots and back included),
            // no request through nginx may fail.
            self.machine.watcher = Some(Watcher::start(front.addr()));
        }
    }
}

/// The `sh` blocks of `part.page` before `part.from` are not run here:
/// each of their lines must be a line of an `sh` block of the page that
/// covers them, which is.
fn check_covered(part: &Part) {
    let page = part.page;
    let text = fs::read_to_string(Path::new(MANIFEST).join(page)).unwrap();
    let (Some(other), Some(heading)) = (part.covered_by, part.from) else {
        return;
    };
    let from = 1 + text
        .lines()
        .position(|l| l.trim_end() == heading)
        .unwrap_or_else(|| panic!("{page} has no heading {heading:?}"));
    let other_text = fs::read_to_string(Path::new(MANIFEST).join(other)).unwrap();
    let run_there: Vec<String> = fenced_blocks(other, &other_text)
        .into_iter()
        .filter(|b| b.info == "sh")
        .flat_map(|b| b.text.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    for block in fenced_blocks(page, &text) {
        if block.info != "sh" || block.line > from {
            continue;
        }
        for line in block.text.lines() {
            assert!(
                run_there.iter().any(|l| l == line),
                "{page}:{}: {line:?} is run nowhere: make it a line of an sh block of {other}, \
                 or move it below {heading:?}",
                block.line
            );
        }
    }
}

#[test]
fn getting_started_runs_as_written() {
    // Before anything runs: a page that drifted fails at once.
    for part in &PARTS {
        check_covered(part);
    }
    let tools = Tools::find();
    // The pages show what nginx serves with curl, as a reader would.
    assert!(
        crate::which("curl").is_some(),
        "the guide's pages run curl, which is missing: apt-get install curl"
    );
    // The page's `sudo -u www-data` becomes setpriv, which needs root.
    assert!(
        nix::unistd::geteuid().is_root(),
        "the guide test runs the page's `sudo -u www-data` with setpriv, which needs root: run \
         the end-to-end suite as root (CI does)"
    );
    assert!(
        nix::unistd::User::from_name("www-data")
            .ok()
            .flatten()
            .is_some(),
        "the guide's pages act as nginx's user on Debian, www-data, which does not exist here"
    );
    let machine = Machine {
        root: tempfile::tempdir().unwrap(),
        pm2: tools.pm2.clone(),
        front: None,
        watcher: None,
        blocks: 0,
    };
    // nginx's workers run as another user: they must reach run/app.sock.
    fs::set_permissions(
        machine.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let root = machine.path().to_path_buf();
    let front_port = free_port();
    let etc_nginx = root.join("etc-nginx");
    let mut run = Run {
        deploy_to: root.join("srv/myapp"),
        values: vec![
            (
                "deploy directory",
                root.join("srv/myapp").display().to_string(),
            ),
            ("git directory", root.join("srv/git").display().to_string()),
            ("nginx config directory", etc_nginx.display().to_string()),
            (
                "nginx pid file",
                root.join("nginx/nginx.pid").display().to_string(),
            ),
            ("front port", front_port.to_string()),
            ("app port", free_port().to_string()),
        ],
        machine,
        lives: Vec::new(),
        refused: Vec::new(),
    };
    let machine = &mut run.machine;

    // The machine as a reader's looks after the setup blocks: a home with
    // a git identity, shipit and pm2 on PATH, nginx running with an empty
    // sites-enabled.
    fs::create_dir_all(machine.home()).unwrap();
    fs::write(
        machine.home().join(".gitconfig"),
        "[user]\n\tname = Guide Reader\n\temail = reader@example.invalid\n",
    )
    .unwrap();
    fs::create_dir_all(machine.bin()).unwrap();
    copy_executable(Path::new(SHIPIT), &machine.bin().join("shipit"));
    write_executable(
        &machine.bin().join("sudo"),
        "#!/bin/sh\n# The page's sudo: run the command, as USER with -u USER.\n\
         if [ \"$1\" = -u ]; then\n  user=$2; shift 2\n  \
         exec setpriv --reuid \"$user\" --regid \"$user\" --init-groups \"$@\"\nfi\n\
         exec \"$@\"\n",
    );
    for dir in ["sites-available", "sites-enabled"] {
        fs::create_dir_all(etc_nginx.join(dir)).unwrap();
    }
    let prefix = root.join("nginx");
    machine.front = Some(Front::start(
        &tools.nginx,
        &prefix,
        front_port,
        Path::new(MANIFEST).join("target/e2e/guide-nginx-error.log"),
        &format!("include {}/sites-enabled/*;\n", etc_nginx.display()),
    ));
    write_executable(
        &machine.bin().join("nginx"),
        format!(
            "#!/bin/sh\n# The page's nginx commands, aimed at this test's nginx.\nexec {} -p {} -c {} \"$@\"\n",
            tools.nginx.display(),
            prefix.display(),
            prefix.join("nginx.conf").display()
        ),
    );
    // `nginx -s reload` needs the master's pid file.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !prefix.join("nginx.pid").exists() {
        assert!(Instant::now() < deadline, "nginx never wrote its pid file");
        std::thread::sleep(Duration::from_millis(50));
    }

    for part in &PARTS {
        run.part(part);
    }

    // Back on the reload path: only the reload path's pm2 app runs, and
    // the slots left nothing behind.
    let jlist = run
        .machine
        .pm2(&["jlist"])
        .unwrap_or_else(|| panic!("pm2 jlist"));
    let names: Vec<&str> = jlist
        .as_array()
        .expect("pm2 jlist prints an array")
        .iter()
        .filter_map(|app| app["name"].as_str())
        .collect();
    assert!(
        names.iter().all(|n| *n == "myapp"),
        "only the reload path's app runs: {names:?}"
    );
    assert!(!run.deploy_to.join("run").exists(), "run/ was removed");
    let watched = run
        .machine
        .watcher
        .take()
        .expect("the watcher started at the rollback")
        .finish();
    let sent = watched.sent;
    assert!(sent > 100, "the watcher ran ({sent} requests)");
    assert!(
        watched.failed.is_empty(),
        "{} of {sent} requests through nginx failed from the rollback on, first: {:?}",
        watched.failed.len(),
        &watched.failed[..watched.failed.len().min(5)]
    );
    assert!(!run.refused.is_empty(), "a release was refused in a slot");
    for id in &run.refused {
        assert!(
            !watched.releases.contains(id),
            "the refused release {id} answered a user"
        );
    }
    assert!(
        run.lives.iter().any(|id| watched.releases.contains(id)),
        "the watcher read release ids: {:?}",
        watched.releases
    );
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn placeholders_are_replaced_as_whole_words_in_one_pass() {
        let pairs = vec![
            ("/srv/myapp".to_string(), "/tmp/x8080".to_string()),
            ("8080".to_string(), "41000".to_string()),
        ];
        assert_eq!(
            substitute("cd /srv/myapp && curl :8080/ 18080 /srv/myappx", &pairs),
            "cd /tmp/x8080 && curl :41000/ 18080 /srv/myappx"
        );
    }
}
