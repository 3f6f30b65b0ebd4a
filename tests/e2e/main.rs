//! The zero-downtime proof: the example Node app (examples/node-app)
//! behind real nginx on 127.0.0.1, deployed and rolled back by shipit while
//! a load generator runs through nginx for the whole run, on the files
//! `shipit init --template` writes. Every good deploy and rollback must drop
//! zero requests; a broken release must be rolled back by the health gate
//! (reload path) or never answer a user (slots). Scenarios: pm2 in cluster
//! mode (reload path), pm2 slots, and, in `systemd.rs`, the app under a
//! real systemd booted in a container (socket activation, and slots as
//! template-unit instances).
//!
//! It installs nothing. It needs nginx, node, pm2 and systemd-nspawn
//! (`.ci/run` installs them: nginx, node and systemd-container from Debian,
//! pm2 from npm into target/e2e-tools) and fails with the install command
//! when one is missing. Everything it starts (nginx, the pm2 daemon and its
//! workers, containers, the load) is stopped by pid. Figures go to stdout
//! and to target/e2e/.

mod front_decides;
mod guide;
mod reload_crash;
mod report;
#[path = "../support/mod.rs"]
mod support;
mod systemd;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use report::{Kind, Mark};
use support::git::git;
use support::ports::free_port;
use support::{front, load};

const SHIPIT: &str = env!("CARGO_BIN_EXE_shipit");
const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

const DEPLOYS: usize = 10;
const ROLLBACKS: usize = 10;
const CONNECTIONS: usize = 4;

fn which(tool: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

struct Tools {
    nginx: PathBuf,
    pm2: PathBuf,
}

impl Tools {
    fn find() -> Tools {
        let nginx = which("nginx")
            .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.exists()))
            .unwrap_or_else(|| panic!("the end-to-end suite runs real nginx, which is missing: apt-get install nginx (.ci/run does this)"));
        assert!(
            which("node").is_some(),
            "the end-to-end suite runs the example app on node, which is missing: apt-get install nodejs (.ci/run does this)"
        );
        let local = Path::new(MANIFEST).join("target/e2e-tools/node_modules/.bin/pm2");
        let pm2 = std::env::var_os("SHIPIT_E2E_PM2")
            .map(PathBuf::from)
            .or_else(|| Some(local).filter(|p| p.exists()))
            .or_else(|| which("pm2"))
            .unwrap_or_else(|| panic!("the end-to-end suite runs real pm2, which is missing: npm install --prefix target/e2e-tools pm2 (.ci/run does this)"));
        Tools { nginx, pm2 }
    }
}

/// Everything the run started, stopped by pid when dropped (also on panic).
struct World {
    root: tempfile::TempDir,
    tools: Tools,
    app_port: u16,
    nginx_port: u16,
    front: Option<front::Front>,
}

impl Drop for World {
    fn drop(&mut self) {
        // Keep the logs of the run for a post-mortem.
        let out = Path::new(MANIFEST).join("target/e2e");
        let _ = fs::create_dir_all(&out);
        if let Ok(logs) = fs::read_dir(self.pm2_home().join("logs")) {
            for log in logs.flatten() {
                let _ = fs::copy(
                    log.path(),
                    out.join(format!("pm2-{}", log.file_name().to_string_lossy())),
                );
            }
        }
        // nginx first, then the app behind it.
        self.front = None;
        // `pm2 kill` stops the workers and the daemon; then make sure of the
        // daemon by its pid file.
        let _ = self.pm2(&["kill"]);
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

impl World {
    fn new() -> World {
        let world = World {
            root: tempfile::tempdir().unwrap(),
            tools: Tools::find(),
            app_port: free_port(),
            nginx_port: free_port(),
            front: None,
        };
        let app = world.path().join("app");
        fs::create_dir(&app).unwrap();
        support::app::node_app_repo(&app, &["server.js", "package.json"]);
        world.write_reload_config("", None);
        world
    }

    /// The reload path's config: `hook` is the reload line (as a template
    /// prints it), `fail_after` the gate's setting when given (the default
    /// otherwise).
    fn write_reload_config(&self, hook: &str, fail_after: Option<u32>) {
        let fail_after = fail_after
            .map(|n| format!("fail_after = {n}\n"))
            .unwrap_or_default();
        self.write_reload_config_with(hook, &fail_after)
    }

    /// The same, with `health` added to `[health]`.
    fn write_reload_config_with(&self, hook: &str, health: &str) {
        fs::write(
            self.path().join("shipit.toml"),
            format!(
                r#"deploy_to = "deploy"
keep_releases = 30

[source]
git = "app"

[hooks]
# As the pm2 template prints it.
{hook}
reload_timeout = "90s"

[health]
url = "http://127.0.0.1:{port}/healthz"
expect_body = "\"release\":\"{{release}}\""
successes = 3
interval = "200ms"
timeout = "8s"
{health}"#,
                port = self.app_port
            ),
        )
        .unwrap();
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    fn pm2_home(&self) -> PathBuf {
        self.path().join("pm2-home")
    }

    fn pm2(&self, args: &[&str]) -> Output {
        Command::new(&self.tools.pm2)
            .args(args)
            .current_dir(self.path())
            .env("PM2_HOME", self.pm2_home())
            .stdin(Stdio::null())
            .output()
            .expect("pm2 runs")
    }

    fn shipit_command(&self, args: &[&str]) -> Command {
        // Hooks written as the templates print them call a bare `pm2`.
        let pm2_dir = self.tools.pm2.parent().expect("pm2 lives in a directory");
        let path = format!(
            "{}:{}",
            pm2_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new(SHIPIT);
        command
            .args(args)
            .current_dir(self.path())
            .env("PATH", path)
            .env("PM2_HOME", self.pm2_home())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        command
    }

    fn shipit(&self, args: &[&str]) -> Output {
        self.shipit_command(args).output().expect("shipit runs")
    }

    /// Run shipit and note when (on the load's clock) each line of its
    /// progress appeared, to place its phases among the samples.
    fn shipit_noting(&self, args: &[&str], load: &load::Load) -> (Output, Vec<(Duration, String)>) {
        use std::io::BufRead;
        let mut child = self
            .shipit_command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("shipit runs");
        let mut lines = Vec::new();
        let mut text = String::new();
        for line in std::io::BufReader::new(child.stderr.take().unwrap())
            .lines()
            .map_while(Result::ok)
        {
            lines.push((load.now(), line.clone()));
            text.push_str(&line);
            text.push('\n');
        }
        let status = child.wait().expect("shipit exits");
        let out = Output {
            status,
            stdout: Vec::new(),
            stderr: text.into_bytes(),
        };
        (out, lines)
    }

    fn current(&self) -> String {
        let link = fs::read_link(self.path().join("deploy/current")).expect("current exists");
        link.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn commit(&self, file: &str, content: Option<&str>) {
        let app = self.path().join("app");
        match content {
            Some(text) => fs::write(app.join(file), text).unwrap(),
            None => fs::remove_file(app.join(file)).unwrap(),
        }
        git(&app, &["add", "-A"]);
        git(&app, &["commit", "-q", "-m", file]);
    }

    /// Run nginx with `site` (a file `shipit init --template` wrote)
    /// included in its http block.
    fn start_nginx_with_site(&mut self, site: &Path) {
        self.front = Some(front::Front::start(
            &self.tools.nginx,
            &self.path().join("nginx"),
            self.nginx_port,
            Path::new(MANIFEST).join("target/e2e/nginx-error.log"),
            &format!("include {};\n", site.display()),
        ));
    }

    fn front(&self) -> &front::Front {
        self.front.as_ref().expect("nginx was started")
    }
}

/// What the load scenarios drive: shipit, the app's repository, and nginx
/// in front.
pub(crate) trait Stage {
    fn shipit(&self, args: &[&str]) -> Output;
    fn current(&self) -> String;
    fn commit(&self, file: &str, content: Option<&str>);
    fn front(&self) -> &front::Front;
    fn releases_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.shipit(&["releases", "--json"]).stdout)
            .expect("releases --json prints JSON")
    }
}

impl Stage for World {
    fn shipit(&self, args: &[&str]) -> Output {
        World::shipit(self, args)
    }
    fn current(&self) -> String {
        World::current(self)
    }
    fn commit(&self, file: &str, content: Option<&str>) {
        World::commit(self, file, content)
    }
    fn front(&self) -> &front::Front {
        World::front(self)
    }
}

/// A step of [`deploy_then_roll_back`], for its `after` check.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    Deploy,
    Rollback,
}

/// Under `load`: `deploys` deploys of new revisions, then `rollbacks`
/// rollbacks each stepping back one release, each marked on the load's
/// clock. After each, `current` names a new (or the previous) release,
/// nginx serves it, no process is left in an old release, and `after` runs
/// with what shipit said. `releases` starts with what is live.
pub(crate) fn deploy_then_roll_back(
    stage: &dyn Stage,
    load: &load::Load,
    marks: &mut Vec<Mark>,
    releases: &mut Vec<String>,
    (deploys, rollbacks): (usize, usize),
    mut after: impl FnMut(Step, &str),
) {
    let stale = |said: &str| {
        assert!(
            !said.contains("runs an executable from")
                && !said.contains("has its working directory in"),
            "a process was left in an old release:\n{said}"
        );
    };
    for n in 1..=deploys {
        stage.commit("VERSION", Some(&format!("{n}\n")));
        let start = load.now();
        let out = stage.shipit(&["deploy"]);
        marks.push(Mark {
            kind: Kind::Deploy,
            start,
            end: load.now(),
        });
        let said = expect(&out, 0, &format!("deploy {n}"));
        stale(&said);
        let id = stage.current();
        assert_ne!(Some(&id), releases.last(), "deploy {n} made a new release");
        let answers = stage.front().answers(6);
        assert!(
            answers.iter().all(|a| *a == id),
            "after deploy {n}, nginx serves {id}; its answers: {answers:?}\n{said}"
        );
        releases.push(id);
        after(Step::Deploy, &said);
        std::thread::sleep(Duration::from_millis(500));
    }
    for n in 1..=rollbacks {
        let start = load.now();
        let out = stage.shipit(&["rollback"]);
        marks.push(Mark {
            kind: Kind::Rollback,
            start,
            end: load.now(),
        });
        let said = expect(&out, 0, &format!("rollback {n}"));
        stale(&said);
        let want = &releases[releases.len() - 1 - n];
        assert_eq!(
            &stage.current(),
            want,
            "rollback {n} stepped back one release"
        );
        let answers = stage.front().answers(6);
        assert!(
            answers.iter().all(|a| a == want),
            "after rollback {n}, nginx serves {want}; its answers: {answers:?}\n{said}"
        );
        after(Step::Rollback, &said);
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// With slots: a release that answers 500 and one that never listens are
/// each refused (exit 4) while `current` and what nginx serves stay put;
/// `after` runs after each. Returns the refused release ids.
pub(crate) fn refuse_broken_releases(
    stage: &dyn Stage,
    load: &load::Load,
    marks: &mut Vec<Mark>,
    mut after: impl FnMut(),
) -> Vec<String> {
    let live = stage.current();
    let mut refused = Vec::new();
    for (file, seen) in [("BROKEN", "status 500"), ("NEVER_READY", "failed its gate")] {
        stage.commit(file, Some(""));
        let start = load.now();
        let out = stage.shipit(&["deploy"]);
        marks.push(Mark {
            kind: Kind::Broken,
            start,
            end: load.now(),
        });
        let said = expect(&out, 4, &format!("the {file} release is refused"));
        assert!(said.contains("no user request reached it"), "{said}");
        assert!(said.contains(seen), "{said}");
        assert_eq!(stage.current(), live);
        assert_eq!(
            stage.front().served_release(6).as_deref(),
            Some(live.as_str())
        );
        after();
        let json = stage.releases_json();
        refused.push(json["releases"][0]["id"].as_str().unwrap().to_string());
        stage.commit(file, None);
    }
    refused
}

/// The `reload = ...` line a generated file prints in its comments.
fn printed_pm2_hook(text: &str) -> String {
    text.lines()
        .map(|l| l.trim_start_matches(['#', '/', ' ']))
        .find(|l| l.starts_with("reload = ") && l.contains("pm2 "))
        .unwrap_or_else(|| panic!("no pm2 reload hook printed in:\n{text}"))
        .to_string()
}

#[track_caller]
fn expect(out: &Output, code: i32, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{what}:\n{stderr}");
    stderr
}

/// The reload path as the templates make it: the pm2 file and the nginx
/// site from `shipit init --template pm2 nginx`, unedited but for the
/// listen line their comment says to change, and the reload hook the pm2
/// file prints. Returns the site and the hook.
pub(crate) fn reload_path_site(world: &World) -> (PathBuf, String) {
    let shared = world.path().join("deploy/shared");
    fs::create_dir_all(&shared).unwrap();
    expect(
        &world.shipit(&[
            "init",
            "--template",
            "pm2",
            "--template",
            "nginx",
            "--app",
            "shipit-e2e",
            "--out",
            shared.to_str().unwrap(),
        ]),
        0,
        "render the pm2 and nginx templates",
    );
    let hook = printed_pm2_hook(&fs::read_to_string(shared.join("ecosystem.config.js")).unwrap());
    world.write_reload_config(&hook, None);
    let site = shared.join("nginx-shipit-e2e.conf");
    let text = fs::read_to_string(&site).unwrap();
    // Its comment says: change listen (and server_name).
    assert!(text.contains("listen 80;"), "{text}");
    fs::write(
        &site,
        text.replace(
            "listen 80;",
            &format!("listen 127.0.0.1:{};", world.nginx_port),
        ),
    )
    .unwrap();
    (site, hook)
}

#[test]
fn deploys_and_rollbacks_under_load_drop_no_requests() {
    let mut world = World::new();
    let (site, hook) = reload_path_site(&world);

    // No pm2 daemon runs yet: the first deploy's hook starts it.
    expect(&world.shipit(&["deploy"]), 0, "first deploy");
    let first = world.current();
    world.start_nginx_with_site(&site);
    world.front().wait_for(&first);

    let load = load::Load::start(world.front().addr(), CONNECTIONS);
    let mut marks: Vec<Mark> = Vec::new();
    let mut releases = vec![first];
    std::thread::sleep(Duration::from_secs(3));

    deploy_then_roll_back(
        &world,
        &load,
        &mut marks,
        &mut releases,
        (DEPLOYS, ROLLBACKS),
        |_, _| {},
    );
    std::thread::sleep(Duration::from_secs(1));

    // A release whose every answer is a 500: the gate must roll it back.
    // First with the early failure off (the gate waits out its timeout),
    // then as configured by default (it fails after health.fail_after
    // error answers): users see errors only while the gate runs.
    let live = world.current();
    world.commit("BROKEN", Some(""));
    let mut broken = Vec::new();
    let mut gates = Vec::new();
    for (kind, fail_after) in [(Kind::Broken, Some(0)), (Kind::BrokenFailFast, None)] {
        world.write_reload_config(&hook, fail_after);
        let start = load.now();
        let (out, lines) = world.shipit_noting(&["deploy"], &load);
        let end = load.now();
        marks.push(Mark { kind, start, end });
        broken.push(end - start);
        // The gate runs from its first probe line to the swap back.
        let at = |verb: &str| {
            lines
                .iter()
                .find(|(_, l)| l.trim_start().starts_with(verb))
                .map(|(t, _)| *t)
                .unwrap_or_else(|| panic!("no {verb:?} line in:\n{lines:#?}"))
        };
        gates.push((at("Checking"), at("Rolling back")));
        let said = expect(&out, 4, "the broken deploy is rolled back");
        assert!(said.contains("status 500"), "{said}");
        assert_eq!(
            said.contains("in a row with an error status (health.fail_after = 5)"),
            fail_after.is_none(),
            "which rule ended the gate:\n{said}"
        );
        assert_eq!(world.current(), live);
        assert_eq!(
            world.front().served_release(6).as_deref(),
            Some(live.as_str())
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    std::thread::sleep(Duration::from_secs(1));

    let run = load.now();
    let samples = load.finish();
    let good_failures: Vec<_> = samples
        .iter()
        .filter(|s| {
            !s.outcome.ok()
                && !matches!(
                    report::window_of(&marks, s.at),
                    Some(Kind::Broken | Kind::BrokenFailFast)
                )
        })
        .collect();

    let table = report::table(&samples, &marks, run);
    // How many 5xx users got while a broken release was live: in all, and
    // while its gate ran (the part `health.fail_after` shortens; the
    // reloads into and out of the release take what they take).
    let errors_between = |from: Duration, to: Duration| {
        samples
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .filter(|s| matches!(s.outcome, load::Outcome::Status(500..=599)))
            .count()
    };
    let windows: Vec<_> = [Kind::Broken, Kind::BrokenFailFast]
        .iter()
        .zip(&gates)
        .map(|(kind, (gate_from, gate_to))| {
            let mark = marks.iter().find(|m| m.kind == *kind).unwrap();
            (
                errors_between(mark.start, mark.end),
                (*gate_to - *gate_from).as_secs_f64(),
                errors_between(*gate_from, *gate_to),
            )
        })
        .collect();
    let (slow_5xx, slow_gate, slow_gate_5xx) = windows[0];
    let (fast_5xx, fast_gate, fast_gate_5xx) = windows[1];
    let text = format!(
        "{DEPLOYS} deploys and {ROLLBACKS} rollbacks of a pm2 cluster (2 workers) behind nginx, \
         {CONNECTIONS} keep-alive connections of load through nginx for {:.0} s, on the files \
         `shipit init --template pm2 nginx` writes:\n\n{table}\n\
         Failed requests across good deploys, rollbacks and steady state: {}.\n\
         A broken release (every answer a 500), health.timeout = 8s, interval 200ms:\n\
         - fail_after = 0 (wait out the timeout): the gate ran {slow_gate:.1} s, users got \
         {slow_gate_5xx} 5xx during it; {slow_5xx} 5xx in the whole deploy ({:.1} s);\n\
         - fail_after = 5 (the default): the gate ran {fast_gate:.1} s, users got \
         {fast_gate_5xx} 5xx during it; {fast_5xx} 5xx in the whole deploy ({:.1} s).\n\
         The rest of each deploy is pm2 reloading into the broken release and back.\n\
         nginx was not reloaded in this scenario, so no client connection was closed by a reload.\n",
        run.as_secs_f64(),
        good_failures.len(),
        broken[0].as_secs_f64(),
        broken[1].as_secs_f64(),
    );
    println!("{text}");
    let out_dir = Path::new(MANIFEST).join("target/e2e");
    fs::create_dir_all(&out_dir).unwrap();
    fs::write(out_dir.join("report.md"), &text).unwrap();
    fs::write(
        out_dir.join("timeline.svg"),
        report::svg(&samples, &marks, run),
    )
    .unwrap();

    assert!(
        samples.len() > 1000,
        "the load ran ({} requests)",
        samples.len()
    );
    assert!(
        good_failures.is_empty(),
        "{} requests failed outside the broken deploy, first: {:?}\n{text}",
        good_failures.len(),
        &good_failures[..good_failures.len().min(5)]
    );
    assert!(
        slow_5xx > 0 && fast_5xx > 0,
        "the load saw the broken release answer 5xx before each rollback"
    );
}

/// pm2's banner and process table (14 lines per reload) were
/// streamed into every deploy. The hook the pm2 template prints sends pm2's
/// stdout away and keeps its stderr: a deploy shows shipit's own lines (a
/// snapshot pins them), and a reload that fails still shows pm2's error.
#[test]
fn the_pm2_hook_keeps_pm2s_chatter_out_of_a_deploy_but_not_its_errors() {
    let world = World::new();
    let shared = world.path().join("deploy/shared");
    fs::create_dir_all(&shared).unwrap();
    expect(
        &world.shipit(&[
            "init",
            "--template",
            "pm2",
            "--app",
            "shipit-e2e",
            "--out",
            shared.to_str().unwrap(),
        ]),
        0,
        "render the pm2 template",
    );
    let hook = printed_pm2_hook(&fs::read_to_string(shared.join("ecosystem.config.js")).unwrap());
    world.write_reload_config(&hook, None);
    // The first deploy spawns pm2's daemon (its banner), the second reloads.
    let first = expect(&world.shipit(&["deploy"]), 0, "first deploy");
    let first_id = world.current();
    world.commit("VERSION", Some("1\n"));
    let second = expect(&world.shipit(&["deploy"]), 0, "second deploy");
    for said in [&first, &second] {
        let pm2_lines: Vec<&str> = said.lines().filter(|l| l.contains("reload |")).collect();
        assert!(pm2_lines.is_empty(), "pm2 spoke in a deploy:\n{said}");
    }
    pin_deploy("pm2_deploy", &world, &second);
    // The app names its release from the directory it runs from; the
    // SHIPIT_RELEASE pm2 keeps in its environment names the first one
    // (README, Health gate: why the example app does not read it).
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], world.app_port));
    let (status, body) = front::http_get(addr, "/healthz").expect("the app answers");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    let current = world.current();
    assert_eq!(health["release"], current.as_str(), "{body}");
    assert_ne!(current, first_id);
    assert_eq!(health["env_release"], first_id.as_str(), "{body}");

    // A reload pm2 fails: its error reaches the deploy's output.
    fs::write(
        shared.join("ecosystem.config.js"),
        "module.exports = {apps: [{name: \"x\",, }]};\n",
    )
    .unwrap();
    world.commit("VERSION", Some("2\n"));
    let out = world.shipit(&["deploy"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("reload | [PM2][ERROR] File shared/ecosystem.config.js malformated"),
        "pm2's error is not in the deploy's output:\n{said}"
    );
}

/// Pin what a deploy printed, with ids, times, durations and paths redacted.
fn pin_deploy(name: &str, world: &World, said: &str) {
    let root = world.path().display().to_string();
    let text = said.replace(&root, "[ROOT]");
    insta::with_settings!({
        snapshot_path => "snapshots",
        prepend_module_to_snapshot => false,
        filters => vec![
            (r"\b20\d{12}\b", "[ID]"),
            (r"\b[0-9a-f]{40}\b", "[SHA]"),
            (r"\b[0-9a-f]{7,12}\b", "[SHORT-SHA]"),
            (r"\b\d+(\.\d+)?(ms|s)\b", "[DUR]"),
            (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
            (r"(?m)^timing .*\n", ""),
        ],
    }, {
        insta::assert_snapshot!(name, text);
    });
}

/// Slots under load: every release is started in the idle slot and gated on
/// its own socket before nginx's link moves to it. Good deploys and
/// rollbacks drop nothing; a release that answers 500 and one that never
/// comes up are refused (exit 4) and answer no user request at all.
#[test]
fn slots_under_load_drop_nothing_and_refused_releases_answer_no_one() {
    const SLOT_DEPLOYS: usize = 4;
    const SLOT_ROLLBACKS: usize = 3;
    // The generated pm2-slots file and nginx-slots site, nginx started,
    // the first release live in slot blue.
    let world = front_decides::slots_world("");
    let first = world.current();

    let load = load::Load::start(world.front().addr(), CONNECTIONS);
    let mut marks: Vec<Mark> = Vec::new();
    let mut releases = vec![first];
    std::thread::sleep(Duration::from_secs(2));
    let mut gate_to_switch = Vec::new();
    deploy_then_roll_back(
        &world,
        &load,
        &mut marks,
        &mut releases,
        (SLOT_DEPLOYS, SLOT_ROLLBACKS),
        |step, said| {
            if matches!(step, Step::Deploy) {
                gate_to_switch.push(said.lines().any(|l| l.contains("Switching")));
            }
        },
    );

    // Two releases that must never answer a user: one that answers 500,
    // one that never comes up.
    let refused = refuse_broken_releases(&world, &load, &mut marks, || {});
    std::thread::sleep(Duration::from_secs(2));

    let run = load.now();
    let samples = load.finish();
    let failed: Vec<_> = samples.iter().filter(|s| !s.outcome.ok()).collect();
    let from_refused = samples
        .iter()
        .filter(|s| s.release().is_some_and(|r| refused.iter().any(|x| x == r)))
        .count();
    let table = report::table(&samples, &marks, run);
    let text = format!(
        "Slots: {SLOT_DEPLOYS} deploys, {SLOT_ROLLBACKS} rollbacks and 2 refused releases (one answering 500, \
         one never listening) of the example app under pm2, one process per slot on a unix socket, \
         behind nginx (the generated nginx-slots site, upstream keepalive on), \
         {CONNECTIONS} keep-alive connections of load for {:.0} s:\n\n{table}\n\
         Failed requests (any non-2xx, connect, write or read error), whole run: {}.\n\
         Answers from the refused releases: {from_refused}.\n",
        run.as_secs_f64(),
        failed.len()
    );
    println!("{text}");
    let out_dir = Path::new(MANIFEST).join("target/e2e");
    fs::create_dir_all(&out_dir).unwrap();
    fs::write(out_dir.join("slots-report.md"), &text).unwrap();
    fs::write(
        out_dir.join("slots-timeline.svg"),
        report::svg(&samples, &marks, run),
    )
    .unwrap();

    assert!(gate_to_switch.iter().all(|s| *s), "every deploy switched");
    assert!(
        samples.len() > 1000,
        "the load ran ({} requests)",
        samples.len()
    );
    assert!(
        failed.is_empty(),
        "{} requests failed, first: {:?}\n{text}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(from_refused, 0, "a refused release answered users\n{text}");
    assert!(
        samples.iter().filter_map(|s| s.release()).count() > 1000,
        "answers name their release"
    );
}
