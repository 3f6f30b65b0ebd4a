//! The example app under a real systemd, booted in a container, behind real
//! nginx on the host, deployed and rolled back by shipit under load.
//!
//! `systemd-nspawn -D / --volatile=yes` boots this machine's own /usr as a
//! container: a fresh tmpfs root, a real systemd as its pid 1. It shares
//! the host's network (no --private-network), so nginx on the host reaches
//! the app on 127.0.0.1, and the test directory is bound in at the same
//! path, so the unit files, the deploy directory and a copy of the shipit
//! binary mean the same paths inside and out. shipit runs inside (entered
//! with nsenter), so its hooks call `systemctl` exactly as the templates
//! say. The units are the ones `shipit init --template` writes, installed
//! with the commands their comments give.
//!
//! Scenarios: the socket-activated service restarted by the reload hook
//! (0 failed requests); the same service without its socket unit (failures
//! seen: the load does see them); slots as instances of a template unit
//! (0 failed, and refused releases answer no one).
//!
//! It needs root, systemd-nspawn (`apt-get install systemd-container`),
//! nsenter, nginx and node, and fails with the install command when one is
//! missing. The container is stopped by pid on every path, nginx too.

use std::fs;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::front::Front;
use crate::load::{self, Sample};
use crate::report::{self, Kind, Mark};
use crate::{
    MANIFEST, SHIPIT, Stage, deploy_then_roll_back, expect, free_port, git, refuse_broken_releases,
    which,
};

const CONNECTIONS: usize = 4;

/// Containers booted from the same host share its cgroup tree (nspawn
/// --keep-unit makes `payload/` in the test's own cgroup): one at a time.
static ONE_MACHINE: Mutex<()> = Mutex::new(());

fn one_machine() -> MutexGuard<'static, ()> {
    ONE_MACHINE.lock().unwrap_or_else(|e| e.into_inner())
}

struct Tools {
    nspawn: PathBuf,
    nginx: PathBuf,
}

impl Tools {
    fn find() -> Tools {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the systemd scenarios boot a container with systemd-nspawn, which needs root: \
             run the end-to-end suite as root (CI does)"
        );
        let nspawn = which("systemd-nspawn").unwrap_or_else(|| {
            panic!(
                "the systemd scenarios boot systemd with systemd-nspawn, which is missing: \
                 apt-get install systemd-container (.ci/run does this)"
            )
        });
        assert!(
            which("nsenter").is_some(),
            "the systemd scenarios enter the container with nsenter, which is missing: \
             apt-get install util-linux (.ci/run does this)"
        );
        assert!(
            which("node").is_some(),
            "the end-to-end suite runs the example app on node, which is missing: \
             apt-get install nodejs (.ci/run does this)"
        );
        let nginx = which("nginx")
            .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.exists()))
            .unwrap_or_else(|| {
                panic!(
                    "the end-to-end suite runs real nginx, which is missing: \
                     apt-get install nginx (.ci/run does this)"
                )
            });
        Tools { nspawn, nginx }
    }
}

/// Run `cmd` to its end, or kill it after `limit`; its output either way.
fn bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut out = tempfile::tempfile().unwrap();
    let mut err = tempfile::tempfile().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} starts: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().unwrap();
            let _ = std::io::Write::write_all(
                &mut err,
                format!("\n[killed after {limit:?}]\n").as_bytes(),
            );
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |file: &mut fs::File| {
        let mut bytes = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    };
    Output {
        status,
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}

/// A booted systemd in a container; killed, with everything in it, when
/// dropped.
struct Machine {
    nspawn: Child,
    /// The container's pid 1, as the host numbers it.
    leader: i32,
    name: String,
    /// Where its journal goes when it stops.
    journal: PathBuf,
}

impl Machine {
    /// Boot this machine's /usr with `dir` bound in at the same path, and
    /// wait (bounded) until systemd says the boot is done.
    fn boot(tools: &Tools, name: &str, dir: &Path, journal: PathBuf) -> Machine {
        let console = fs::File::create(dir.join("nspawn.log")).unwrap();
        let nspawn = Command::new(&tools.nspawn)
            .args([
                "-D",
                "/",
                "--volatile=yes",
                "--register=no",
                "--keep-unit",
                "-M",
                name,
            ])
            .arg(format!("--bind={}", dir.display()))
            // To sysinit.target only: the services this host has enabled
            // (sshd, nginx, a database) would otherwise start in the
            // container, on the network it shares with the host.
            .args([
                "-b",
                "--",
                "systemd.firstboot=off",
                "systemd.unit=sysinit.target",
            ])
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("systemd-nspawn starts");
        let mut machine = Machine {
            leader: 0,
            nspawn,
            name: name.to_string(),
            journal,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut said = String::new();
        loop {
            if let Some(status) = machine.nspawn.try_wait().unwrap() {
                panic!(
                    "systemd-nspawn exited ({status}) before systemd booted:\n{}",
                    fs::read_to_string(dir.join("nspawn.log")).unwrap_or_default()
                );
            }
            if machine.leader == 0 {
                machine.leader = leader_of(machine.nspawn.id()).unwrap_or(0);
            }
            if machine.leader != 0 {
                let out = machine.run(
                    &["systemctl", "is-system-running"],
                    Path::new("/"),
                    Duration::from_secs(20),
                );
                said = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if said == "running" || said == "degraded" {
                    return machine;
                }
            }
            assert!(
                Instant::now() < deadline,
                "systemd in {name} did not finish booting (is-system-running: {said:?}):\n{}",
                fs::read_to_string(dir.join("nspawn.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run `argv` inside the container, in `cwd`, bounded.
    fn run(&self, argv: &[&str], cwd: &Path, limit: Duration) -> Output {
        bounded(
            Command::new("nsenter")
                .arg("-t")
                .arg(self.leader.to_string())
                .arg("-a")
                // Not nsenter's --wd: it opens the directory before it
                // enters the container, on the host's side of the bind.
                .arg("--")
                .arg("env")
                .arg(format!("--chdir={}", cwd.display()))
                .arg("--")
                .args(argv)
                .env("NO_COLOR", "1"),
            limit,
        )
    }

    /// `systemctl ARGS` inside, which must succeed.
    #[track_caller]
    fn systemctl(&self, args: &[&str]) -> String {
        let mut argv = vec!["systemctl"];
        argv.extend_from_slice(args);
        let out = self.run(&argv, Path::new("/"), Duration::from_secs(120));
        assert!(
            out.status.success(),
            "systemctl {args:?} in {}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A unit's state as `systemctl is-active` / `is-enabled` prints it
    /// (these exit non-zero for "inactive" and "disabled").
    fn unit_state(&self, query: &str, unit: &str) -> String {
        let out = self.run(
            &["systemctl", query, unit],
            Path::new("/"),
            Duration::from_secs(30),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The child of `nspawn` that is pid 1 of its own pid namespace.
fn leader_of(nspawn: u32) -> Option<i32> {
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let parent = field("PPid:");
        let nspid = field("NSpid:");
        if parent.first() == Some(&nspawn.to_string().as_str())
            && nspid.len() > 1
            && nspid.last() == Some(&"1")
        {
            return Some(pid);
        }
    }
    None
}

impl Drop for Machine {
    fn drop(&mut self) {
        if self.leader != 0 {
            let out = self.run(
                &["journalctl", "--no-pager", "-o", "short-monotonic"],
                Path::new("/"),
                Duration::from_secs(20),
            );
            let _ = fs::create_dir_all(self.journal.parent().unwrap());
            let _ = fs::write(&self.journal, &out.stdout);
            // SIGKILL to the container's pid 1 ends its pid namespace: the
            // kernel kills every process in it (the app, a shipit left
            // running by a failed assertion), then nspawn exits. SIGKILL to
            // nspawn alone would leave the container running, orphaned.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.leader),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && self.nspawn.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        // nspawn's own scratch directory for the machine, if it left it.
        let _ = fs::remove_dir(Path::new("/run/systemd/nspawn/propagate").join(&self.name));
    }
}

impl Stage for Site {
    fn shipit(&self, args: &[&str]) -> Output {
        Site::shipit(self, args)
    }
    fn current(&self) -> String {
        Site::current(self)
    }
    fn commit(&self, file: &str, content: Option<&str>) {
        Site::commit(self, file, content)
    }
    fn front(&self) -> &Front {
        Site::front(self)
    }
}

/// One scenario's world: a test directory bound into a booted systemd,
/// the example app in a git repository, nginx in front. Dropped in field
/// order: nginx, the container, then the directory.
struct Site {
    front: Option<Front>,
    machine: Option<Machine>,
    tools: Tools,
    /// The unit name (unique per run: two runs on one host never share a
    /// unit's cgroup).
    app: String,
    app_port: u16,
    nginx_port: u16,
    tag: String,
    dir: tempfile::TempDir,
}

impl Site {
    fn new(tag: &str) -> Site {
        let tools = Tools::find();
        let dir = tempfile::Builder::new()
            .prefix("shipit-systemd-")
            .tempdir()
            .unwrap();
        // nginx workers run as another user: they must reach the sockets.
        fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let site = Site {
            front: None,
            machine: None,
            tools,
            app: format!("shipit-{tag}-{}", std::process::id()),
            app_port: free_port(),
            nginx_port: free_port(),
            tag: format!("systemd-{tag}"),
            dir,
        };
        let app = site.path().join("app");
        fs::create_dir_all(&app).unwrap();
        crate::support::app::node_app_repo(&app, &["server.js", "package.json", "bin/start"]);
        // The container sees only this directory (and /usr): it gets its
        // own copy of shipit.
        fs::create_dir(site.path().join("bin")).unwrap();
        crate::support::exec::copy_executable(Path::new(SHIPIT), &site.path().join("bin/shipit"));
        site
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn machine(&self) -> &Machine {
        self.machine.as_ref().expect("the machine was booted")
    }

    /// nginx on the host in front of the app, `http` inside its http block.
    fn start_front(&mut self, http: &str) {
        self.front = Some(Front::start(
            &self.tools.nginx,
            &self.path().join("nginx"),
            self.nginx_port,
            Path::new(MANIFEST).join(format!("target/e2e/{}-nginx-error.log", self.tag)),
            http,
        ));
    }

    fn front(&self) -> &Front {
        self.front.as_ref().expect("nginx was started")
    }

    fn boot(&mut self) {
        let name = format!("{}-{}", self.tag, std::process::id());
        let journal = Path::new(MANIFEST)
            .join("target/e2e")
            .join(format!("{}-journal.log", self.tag));
        self.machine = Some(Machine::boot(&self.tools, &name, self.dir.path(), journal));
    }

    /// shipit on the host (`init` only: it writes files).
    fn shipit_here(&self, args: &[&str]) -> Output {
        bounded(
            Command::new(SHIPIT)
                .args(args)
                .current_dir(self.path())
                .env("NO_COLOR", "1"),
            Duration::from_secs(60),
        )
    }

    /// shipit inside the container, where its hooks reach systemd.
    fn shipit(&self, args: &[&str]) -> Output {
        let shipit = self.path().join("bin/shipit");
        let mut argv = vec![shipit.to_str().unwrap()];
        argv.extend_from_slice(args);
        self.machine()
            .run(&argv, self.path(), Duration::from_secs(300))
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

    /// Render templates into `units/`.
    fn render(&self, templates: &[&str]) -> PathBuf {
        let units = self.path().join("units");
        let mut args = vec!["init"];
        for t in templates {
            args.extend(["--template", t]);
        }
        args.extend(["--app", &self.app, "--out", units.to_str().unwrap()]);
        expect(&self.shipit_here(&args), 0, "render the templates");
        units
    }

    /// The `key = "..."` line a rendered file's comments give for
    /// shipit.toml.
    fn config_line(file: &Path, key: &str) -> String {
        let text = fs::read_to_string(file).unwrap();
        let at = format!("{key} = \"");
        text.lines()
            .find_map(|l| l.find(&at).map(|i| l[i..].to_string()))
            .unwrap_or_else(|| panic!("{} gives no {key} line:\n{text}", file.display()))
    }

    /// Append to shipit.toml.
    fn add_config(&self, text: &str) {
        let path = self.path().join("shipit.toml");
        let mut config = fs::read_to_string(&path).unwrap_or_default();
        config.push_str(text);
        fs::write(path, config).unwrap();
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        // nginx first, then the container, then (field order) the
        // directory bound into it.
        self.front.take();
        self.machine.take();
    }
}

/// What one run under load saw.
struct Run {
    samples: Vec<Sample>,
    marks: Vec<Mark>,
    length: Duration,
}

impl Run {
    fn failed(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| !s.outcome.ok()).collect()
    }

    fn failed_in(&self, kind: Option<Kind>) -> usize {
        self.samples
            .iter()
            .filter(|s| !s.outcome.ok() && report::window_of(&self.marks, s.at) == kind)
            .count()
    }

    /// The longest request that started during a deploy or a rollback.
    fn longest_in_switches(&self) -> Duration {
        self.samples
            .iter()
            .filter(|s| {
                matches!(
                    report::window_of(&self.marks, s.at),
                    Some(Kind::Deploy | Kind::Rollback)
                )
            })
            .map(|s| s.latency)
            .max()
            .unwrap_or_default()
    }

    fn table(&self) -> String {
        report::table(&self.samples, &self.marks, self.length)
    }

    fn keep(&self, file: &str, text: &str) {
        println!("{text}");
        let dir = Path::new(MANIFEST).join("target/e2e");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(file), text).unwrap();
    }
}

/// The reload strategy under systemd: the service (and, with `socket`,
/// its socket unit) installed from the templates as their comments say,
/// shipit's reload hook `systemctl restart <app>.service`; `deploys`
/// deploys then `rollbacks` rollbacks under load through nginx.
fn restart_under_load(tag: &str, socket: bool, deploys: usize, rollbacks: usize) -> (Site, Run) {
    let mut site = Site::new(tag);
    site.add_config(&format!(
        r#"deploy_to = "deploy"
keep_releases = 30

[source]
git = "app"

[health]
url = "http://127.0.0.1:{port}/healthz"
expect_body = "\"release\":\"{{release}}\""
successes = 3
interval = "200ms"
timeout = "30s"
"#,
        port = site.app_port
    ));
    let units = site.render(&["systemd", "systemd-socket", "nginx"]);
    let service = units.join(format!("{}.service", site.app));
    // The front: the generated site, its listen line changed as its
    // comment says.
    let nginx_site = units.join(format!("nginx-{}.conf", site.app));
    let text = fs::read_to_string(&nginx_site).unwrap();
    assert!(text.contains("listen 80;"), "{text}");
    assert!(
        text.contains(&format!("server 127.0.0.1:{};", site.app_port)),
        "the site fronts the socket unit's port:\n{text}"
    );
    fs::write(
        &nginx_site,
        text.replace(
            "listen 80;",
            &format!("listen 127.0.0.1:{};", site.nginx_port),
        ),
    )
    .unwrap();
    let socket_unit = units.join(format!("{}.socket", site.app));
    // The reload hook, as the service file gives it.
    site.add_config(&format!(
        "\n[hooks]\n{}\n",
        Site::config_line(&service, "reload")
    ));
    if !socket {
        // What the service's comments say to do for an app that binds its
        // port itself: drop the socket, set PORT.
        let text = fs::read_to_string(&service).unwrap();
        let requires = format!("Requires={}.socket\n", site.app);
        let port = format!("#Environment=PORT={}\n", site.app_port);
        assert!(text.contains(&requires) && text.contains(&port), "{text}");
        fs::write(
            &service,
            text.replace(&requires, "").replace(&port, &port[1..]),
        )
        .unwrap();
    }
    site.boot();
    let machine = site.machine();
    // The install commands the service file gives.
    let etc = "/etc/systemd/system/";
    let mut cp = vec!["cp", service.to_str().unwrap()];
    if socket {
        cp.push(socket_unit.to_str().unwrap());
    }
    cp.push(etc);
    let out = machine.run(&cp, Path::new("/"), Duration::from_secs(30));
    assert!(out.status.success(), "install the units: {out:?}");
    machine.systemctl(&["daemon-reload"]);
    if socket {
        machine.systemctl(&["enable", "--now", &format!("{}.socket", site.app)]);
    }
    machine.systemctl(&["enable", &format!("{}.service", site.app)]);

    expect(&site.shipit(&["deploy"]), 0, "first deploy");
    let first = site.current();
    let http = format!("include {};\n", nginx_site.display());
    site.start_front(&http);
    site.front().wait_for(&first);

    let load = load::Load::start(site.front().addr(), CONNECTIONS);
    let mut marks = Vec::new();
    let mut releases = vec![first];
    std::thread::sleep(Duration::from_secs(2));
    deploy_then_roll_back(
        &site,
        &load,
        &mut marks,
        &mut releases,
        (deploys, rollbacks),
        |_, _| {},
    );
    std::thread::sleep(Duration::from_secs(1));
    let length = load.now();
    let samples = load.finish();
    assert!(
        samples.len() > 1000,
        "the load ran ({} requests)",
        samples.len()
    );
    (
        site,
        Run {
            samples,
            marks,
            length,
        },
    )
}

/// (a) The socket-activated service: every deploy and rollback restarts
/// it, and systemd's socket queues the connections that arrive meanwhile.
#[test]
fn systemd_socket_activated_restarts_under_load_drop_no_requests() {
    const DEPLOYS: usize = 4;
    const ROLLBACKS: usize = 4;
    let _one = one_machine();
    let (site, run) = restart_under_load("socket", true, DEPLOYS, ROLLBACKS);
    let failed = run.failed();
    let text = format!(
        "systemd, socket activation: {DEPLOYS} deploys and {ROLLBACKS} rollbacks of the example app \
         (`{app}.socket` + `{app}.service` as `shipit init --template systemd --template systemd-socket` \
         writes them; reload hook `systemctl restart {app}.service`) behind nginx, \
         {CONNECTIONS} keep-alive connections of load for {:.0} s:\n\n{}\n\
         Failed requests (any non-2xx, connect, write or read error), whole run: {}.\n\
         Longest request during a deploy or rollback (it waited in the socket's queue while \
         the service restarted): {:.0} ms.\n",
        run.length.as_secs_f64(),
        run.table(),
        failed.len(),
        run.longest_in_switches().as_secs_f64() * 1000.0,
        app = site.app
    );
    run.keep("systemd-report.md", &text);
    // Deploys and rollbacks in quick succession are starts in quick
    // succession: six in a row must leave the service and its socket up.
    let machine = site.machine();
    let service = format!("{}.service", site.app);
    for _ in 0..6 {
        let out = machine.run(
            &["systemctl", "restart", &service],
            Path::new("/"),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "a quick succession of restarts was refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for unit in [service, format!("{}.socket", site.app)] {
        assert_eq!(machine.unit_state("is-active", &unit), "active", "{unit}");
    }
    assert!(
        failed.is_empty(),
        "{} requests failed, first: {:?}\n{text}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

/// (b) The same service binding its port itself (no socket unit): each
/// restart leaves a moment where nothing listens, and the load sees it.
/// This is what the zero of (a) is measured against.
#[test]
fn systemd_without_the_socket_unit_restarts_drop_requests() {
    const DEPLOYS: usize = 3;
    let _one = one_machine();
    let (_site, run) = restart_under_load("port", false, DEPLOYS, 0);
    let in_deploys = run.failed_in(Some(Kind::Deploy));
    let text = format!(
        "systemd, no socket unit (the service binds PORT itself, as its comments describe): \
         {DEPLOYS} deploys (reload hook `systemctl restart`) behind nginx, {CONNECTIONS} \
         keep-alive connections of load for {:.0} s:\n\n{}\n\
         Failed requests during deploys: {in_deploys}; in steady state: {}.\n",
        run.length.as_secs_f64(),
        run.table(),
        run.failed_in(None)
    );
    run.keep("systemd-no-socket-report.md", &text);
    assert!(
        in_deploys > 0,
        "restarts without the socket unit dropped nothing: the load would not see a refused \
         connection\n{text}"
    );
    assert_eq!(run.failed_in(None), 0, "steady state failed\n{text}");
}

/// (c) Slots as instances of the systemd-slots template unit: each release
/// is started in the idle slot (`<app>@blue` / `<app>@green`), gated on
/// its socket, then nginx's link moves. Good deploys and rollbacks drop
/// nothing; a release that answers 500 and one that never listens are
/// refused and answer no user.
#[test]
fn systemd_slots_under_load_drop_nothing_and_refused_releases_answer_no_one() {
    const DEPLOYS: usize = 3;
    const ROLLBACKS: usize = 2;
    let _one = one_machine();
    let mut site = Site::new("slots");
    site.add_config(&format!(
        r#"deploy_to = "deploy"
keep_releases = 30

[source]
git = "app"

[health]
url = "http://127.0.0.1:{port}/healthz"
expect_body = "\"release\":\"{{release}}\""
successes = 3
interval = "200ms"
timeout = "10s"
"#,
        port = site.nginx_port
    ));
    let units = site.render(&["systemd-slots", "nginx-slots"]);
    let unit = units.join(format!("{}@.service", site.app));
    // The slot hooks, as the unit file gives them.
    site.add_config(&format!(
        "\n[slots]\n{}\n{}\n",
        Site::config_line(&unit, "start"),
        Site::config_line(&unit, "stop")
    ));
    let nginx_site = units.join(format!("nginx-{}-slots.conf", site.app));
    let text = fs::read_to_string(&nginx_site).unwrap();
    // It listens on health.url's port (the front's, with slots); its
    // comment says to change listen: here, to the loopback address only.
    let listen = format!("listen {};", site.nginx_port);
    assert!(text.contains(&listen), "{text}");
    fs::write(
        &nginx_site,
        text.replace(&listen, &format!("listen 127.0.0.1:{};", site.nginx_port)),
    )
    .unwrap();

    site.boot();
    let machine = site.machine();
    let out = machine.run(
        &["cp", unit.to_str().unwrap(), "/etc/systemd/system/"],
        Path::new("/"),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "install the unit: {out:?}");
    machine.systemctl(&["daemon-reload"]);
    site.start_front(&format!("include {};\n", nginx_site.display()));

    expect(&site.shipit(&["deploy"]), 0, "first deploy into slot blue");
    let first = site.current();
    site.front().wait_for(&first);
    let slot_units = |live: &str| {
        let machine = site.machine();
        for (slot, active, enabled) in [
            (live, "active", "enabled"),
            (
                if live == "blue" { "green" } else { "blue" },
                "inactive",
                "disabled",
            ),
        ] {
            let unit = format!("{}@{slot}.service", site.app);
            assert_eq!(machine.unit_state("is-active", &unit), active, "{unit}");
            assert_eq!(machine.unit_state("is-enabled", &unit), enabled, "{unit}");
        }
    };
    slot_units("blue");

    let load = load::Load::start(site.front().addr(), CONNECTIONS);
    let mut marks = Vec::new();
    let mut releases = vec![first];
    let mut live = "blue";
    std::thread::sleep(Duration::from_secs(2));
    deploy_then_roll_back(
        &site,
        &load,
        &mut marks,
        &mut releases,
        (DEPLOYS, ROLLBACKS),
        |_, _| {
            live = if live == "blue" { "green" } else { "blue" };
            slot_units(live);
        },
    );

    // Two releases that must never answer a user: one that answers 500,
    // one that never listens.
    let refused = refuse_broken_releases(&site, &load, &mut marks, || slot_units(live));
    std::thread::sleep(Duration::from_secs(1));

    let length = load.now();
    let samples = load.finish();
    let run = Run {
        samples,
        marks,
        length,
    };
    let failed = run.failed();
    let from_refused = run
        .samples
        .iter()
        .filter(|s| s.release().is_some_and(|r| refused.iter().any(|x| x == r)))
        .count();
    let text = format!(
        "systemd slots: {DEPLOYS} deploys, {ROLLBACKS} rollbacks and 2 refused releases (one \
         answering 500, one never listening) of the example app as instances of `{app}@.service` \
         (`shipit init --template systemd-slots`; hooks `systemctl enable --now` / `disable --now \
         {app}@$SHIPIT_SLOT.service`), behind nginx (the generated nginx-slots site), \
         {CONNECTIONS} keep-alive connections of load for {:.0} s:\n\n{}\n\
         Failed requests (any non-2xx, connect, write or read error), whole run: {}.\n\
         Answers from the refused releases: {from_refused}.\n",
        run.length.as_secs_f64(),
        run.table(),
        failed.len(),
        app = site.app
    );
    run.keep("systemd-slots-report.md", &text);
    assert!(
        run.samples.len() > 1000,
        "the load ran ({} requests)",
        run.samples.len()
    );
    assert!(
        failed.is_empty(),
        "{} requests failed, first: {:?}\n{text}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(from_refused, 0, "a refused release answered users\n{text}");
}
