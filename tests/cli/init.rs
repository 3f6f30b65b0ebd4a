//! `shipit init`, its templates fed to the real tools, `shipit check`,
//! completions and the man page.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::sandbox::{Sandbox, git};

fn require(tool: &str, install: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test runs the real {tool}, which is missing: {install} (.ci/run does this)"
    );
}

#[test]
fn init_writes_a_config_that_parses_and_never_overwrites_silently() {
    let sb = Sandbox::new();
    let dir = sb.path().join("fresh");
    fs::create_dir(&dir).unwrap();
    let init = |args: &[&str]| {
        let out = sb.command(args).current_dir(&dir).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _) = init(&["init", "--app", "shop"]);
    assert_eq!(code, Some(0));
    let written = fs::read_to_string(dir.join("shipit.toml")).unwrap();
    assert!(written.contains("deploy_to = \"/srv/shop\""), "{written}");
    assert!(written.contains("# expect_body"), "documents optional keys");

    fs::write(dir.join("shipit.toml"), "# mine\n").unwrap();
    let (code, stderr) = init(&["init"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        fs::read_to_string(dir.join("shipit.toml")).unwrap(),
        "# mine\n"
    );
    let (code, _) = init(&["init", "--force", "--app", "shop"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        fs::read_to_string(dir.join("shipit.toml")).unwrap(),
        written
    );

    // The written config loads: `check` gets past the config.
    let out = sb
        .command(&["check", "--json"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checks"][0]["name"], "config");
    assert_eq!(report["checks"][0]["ok"], true, "{report}");
}

/// A sandbox with a live release and templates rendered into `tpl/`.
fn rendered() -> Sandbox {
    let sb = Sandbox::new();
    sb.commit("bin/start", "#!/bin/sh\nexec sleep 1\n");
    git(&sb.repo(), &["update-index", "--chmod=+x", "bin/start"]);
    git(&sb.repo(), &["commit", "-q", "-m", "start script"]);
    sb.write_config("[health]\nurl = \"http://127.0.0.1:4100/up\"\ntimeout = \"1s\"\n");
    // No app answers on 4100 in this test; deploy without the gate.
    sb.write_config("");
    sb.deploy();
    sb.write_config("[health]\nurl = \"http://127.0.0.1:4100/up\"\ntimeout = \"1s\"\n");
    sb.run(&["init", "--template", "all", "--out", "tpl", "--app", "shop"])
        .ok();
    sb
}

#[test]
fn the_nginx_template_passes_nginx_t() {
    let sb = rendered();
    let site = sb.path().join("tpl/nginx-shop.conf");
    nginx_t(&sb, &site);
    let text = fs::read_to_string(&site).unwrap();
    // One app address: the one the pm2 and systemd-socket templates use.
    assert!(text.contains("server 127.0.0.1:4100;"), "{text}");
    assert!(!text.contains("127.0.0.1:4101"), "{text}");
    assert!(text.contains("location = /up"), "{text}");
}

/// `nginx -t` on `site`, included from a minimal nginx.conf in the sandbox.
fn nginx_t(sb: &Sandbox, site: &Path) {
    require("nginx", "apt-get install nginx");
    let prefix = sb.path().join("nginx");
    fs::create_dir_all(prefix.join("logs")).unwrap();
    let p = prefix.display();
    fs::write(
        prefix.join("nginx.conf"),
        format!(
            "pid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  \
             client_body_temp_path {p}/tmp-body;\n  proxy_temp_path {p}/tmp-proxy;\n  \
             fastcgi_temp_path {p}/tmp-fcgi;\n  uwsgi_temp_path {p}/tmp-uwsgi;\n  scgi_temp_path {p}/tmp-scgi;\n  \
             include {};\n}}\n",
            site.display()
        ),
    )
    .unwrap();
    let out = Command::new("nginx")
        .args(["-t", "-p"])
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "nginx -t rejected the template:\n{said}"
    );
}

/// Regression: a deploy_to with a space split systemd's ExecStart into a
/// program and an argument, and nginx's `root` into two arguments.
#[test]
fn templates_carry_a_deploy_to_with_a_space() {
    let sb = Sandbox::new();
    sb.commit("bin/start", "#!/bin/sh\nexec sleep 1\n");
    git(&sb.repo(), &["update-index", "--chmod=+x", "bin/start"]);
    git(&sb.repo(), &["commit", "-q", "-m", "start script"]);
    let config = "deploy_to = \"my app/100%\"\n[source]\ngit = \"app\"\n";
    sb.write_raw_config(config);
    sb.run(&["deploy"]).ok();
    sb.run(&["init", "--template", "all", "--out", "tpl", "--app", "shop"])
        .ok();
    let current = sb.path().join("my app/100%/current");
    let service = fs::read_to_string(sb.path().join("tpl/shop.service")).unwrap();
    let path = current.display().to_string().replace('%', "%%");
    for line in [
        format!("WorkingDirectory={path}"),
        format!("ExecStart=\"{path}/bin/start\""),
    ] {
        assert!(
            service.lines().any(|l| l == line),
            "no {line} in:\n{service}"
        );
    }
    verify_with_systemd(&sb.path().join("tpl"), &sb.path().join("my app/100%"));
    let site = sb.path().join("tpl/nginx-shop.conf");
    nginx_t(&sb, &site);
    let text = fs::read_to_string(&site).unwrap();
    assert!(
        text.contains(&format!("root \"{}/public\";", current.display())),
        "{text}"
    );
    // nginx reads `$` in `root` as a variable and cannot escape it.
    sb.write_raw_config(&config.replace("100%", "$HOME"));
    sb.run(&[
        "init",
        "--template",
        "nginx",
        "--out",
        "tpl2",
        "--app",
        "shop",
    ])
    .code(2)
    .says("holds a `$`");
}

#[test]
fn node_loads_the_pm2_template_and_it_points_through_current() {
    require("node", "apt-get install nodejs");
    let sb = rendered();
    let file = sb.path().join("tpl/ecosystem.config.js");
    let out = Command::new("node")
        .args([
            "-e",
            "console.log(JSON.stringify(require(process.argv[1])))",
        ])
        .arg(&file)
        .output()
        .unwrap();
    crate::sandbox::succeeded(&out);
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    let app = &config["apps"][0];
    assert_eq!(app["name"], "shop");
    assert_eq!(app["exec_mode"], "cluster");
    assert_eq!(app["wait_ready"], true);
    assert!(app["listen_timeout"].as_u64().unwrap() > 0);
    assert!(app["kill_timeout"].as_u64().unwrap() > 0);
    assert_eq!(app["env"]["PORT"], "4100");
    // Through the link, never resolved: pm2 keeps the paths it is given,
    // and a resolved path pins every reload to one release.
    let current = sb.deploy_to().join("current");
    assert_eq!(app["cwd"], current.to_str().unwrap());
    assert_eq!(app["script"], current.join("server.js").to_str().unwrap());
}

#[test]
fn the_slots_templates_front_the_socket_link_and_run_one_app_per_slot() {
    require("nginx", "apt-get install nginx");
    require("node", "apt-get install nodejs");
    let sb = rendered();
    let site = sb.path().join("tpl/nginx-shop-slots.conf");
    nginx_t(&sb, &site);
    let link = sb.deploy_to().join("run/app.sock");
    let text = fs::read_to_string(&site).unwrap();
    assert!(
        text.contains(&format!("server \"unix:{}\";", link.display())),
        "{text}"
    );
    let file = sb.path().join("tpl/slots.config.js");
    let load = |env: &[(&str, &str)]| {
        Command::new("node")
            .args([
                "-e",
                "console.log(JSON.stringify(require(process.argv[1])))",
            ])
            .arg(&file)
            .env_remove("SHIPIT_SLOT")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let out = load(&[
        ("SHIPIT_SLOT", "green"),
        ("SHIPIT_RELEASE_PATH", "/srv/shop/releases/20260101000000"),
        ("SHIPIT_SLOT_SOCKET", "/srv/shop/run/green.sock"),
        ("SHIPIT_SLOT_LINK", "/srv/shop/run/app.sock"),
    ]);
    crate::sandbox::succeeded(&out);
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    let app = &config["apps"][0];
    assert_eq!(app["name"], "shop-green");
    assert_eq!(app["cwd"], "/srv/shop/releases/20260101000000");
    assert_eq!(app["env"]["SOCKET"], "/srv/shop/run/green.sock");
    assert_eq!(app["env"]["SLOT_LINK"], "/srv/shop/run/app.sock");
    assert_eq!(app["exec_mode"], "fork");
    // Without the slot hook's variables it refuses, naming them.
    let out = load(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHIPIT_SLOT"));
}

#[test]
fn the_git_hook_template_is_valid_sh() {
    let sb = rendered();
    let hook = sb.path().join("tpl/post-receive");
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&hook).unwrap().permissions());
    assert!(mode & 0o111 != 0, "the hook is executable");
    let status = Command::new("sh").arg("-n").arg(&hook).status().unwrap();
    assert!(status.success());
    let text = fs::read_to_string(&hook).unwrap();
    assert!(
        text.contains(&sb.config_path().display().to_string()),
        "{text}"
    );
}

#[test]
fn the_systemd_units_have_the_keys_a_graceful_service_needs() {
    let sb = rendered();
    let service = fs::read_to_string(sb.path().join("tpl/shop.service")).unwrap();
    let current = format!("{}/current", sb.deploy_to().display());
    for line in [
        format!("WorkingDirectory={current}"),
        format!("ExecStart=\"{current}/bin/start\""),
        "KillSignal=SIGTERM".to_string(),
        "TimeoutStopSec=30".to_string(),
        "Requires=shop.socket".to_string(),
        "StartLimitIntervalSec=0".to_string(),
        // Only for an app that binds the port itself, instead of the socket.
        "#Environment=PORT=4100".to_string(),
    ] {
        assert!(
            service.lines().any(|l| l.starts_with(&line)),
            "no {line} in:\n{service}"
        );
    }
    // The socket unit holds the port: a PORT for the app too would make an
    // app that binds it fail with EADDRINUSE. And a reload cannot move a
    // started service to a new release.
    for key in ["Environment=PORT", "ExecReload="] {
        assert!(
            !service.lines().any(|l| l.starts_with(key)),
            "{key} in:\n{service}"
        );
    }
    let socket = fs::read_to_string(sb.path().join("tpl/shop.socket")).unwrap();
    assert!(socket.contains("ListenStream=127.0.0.1:4100"), "{socket}");

    // The slot unit runs the release shipit links for its slot, on the
    // slot's socket.
    let slot = fs::read_to_string(sb.path().join("tpl/shop@.service")).unwrap();
    let run = format!("{}/run", sb.deploy_to().display());
    for line in [
        format!("WorkingDirectory={run}/%i.release"),
        format!("ExecStart=\"{run}/%i.release/bin/start\""),
        format!("Environment=\"SOCKET={run}/%i.sock\""),
        "StartLimitIntervalSec=0".to_string(),
        "WantedBy=multi-user.target".to_string(),
    ] {
        assert!(
            slot.lines().any(|l| l.starts_with(&line)),
            "no {line} in:\n{slot}"
        );
    }
    assert!(
        slot.contains("start = \"systemctl enable --now shop@$SHIPIT_SLOT.service\""),
        "{slot}"
    );
    verify_with_systemd(&sb.path().join("tpl"), &sb.deploy_to());
}

/// `systemd-analyze verify` on the units `init --template all` wrote into
/// `dir`, the slot unit as instance `blue` with the release link a slots
/// deploy makes.
fn verify_with_systemd(dir: &Path, deploy_to: &Path) {
    require("systemd-analyze", "apt-get install systemd");
    let current = fs::read_link(deploy_to.join("current")).unwrap();
    fs::create_dir_all(deploy_to.join("run")).unwrap();
    let _ = fs::remove_file(deploy_to.join("run/blue.release"));
    std::os::unix::fs::symlink(
        Path::new("..").join(current),
        deploy_to.join("run/blue.release"),
    )
    .unwrap();
    let _ = fs::remove_file(dir.join("shop@blue.service"));
    std::os::unix::fs::symlink("shop@.service", dir.join("shop@blue.service")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("shop.socket"))
        .arg(dir.join("shop.service"))
        .arg(dir.join("shop@blue.service"))
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    // Verification runs outside a booted systemd here; only messages about
    // the units themselves count.
    let about_units: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("shop.s") || l.contains("shop@"))
        .collect();
    assert!(about_units.is_empty(), "systemd-analyze verify:\n{said}");
}

/// `init` run as root filled in `User=root` without a word.
#[test]
fn a_systemd_unit_for_root_comes_with_a_warning_and_one_for_a_user_without() {
    if !crate::sandbox::root_or_say_skipped("a_systemd_unit_for_root_comes_with_a_warning") {
        return;
    }
    let sb = Sandbox::new();
    sb.write_config("");
    let run = sb.run(&[
        "init",
        "--template",
        "systemd",
        "--out",
        "tpl",
        "--app",
        "shop",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.says("warning: shop.service runs the app as root")
        .says("useradd --system --no-create-home shop");
    let unit = fs::read_to_string(sb.path().join("tpl/shop.service")).unwrap();
    assert!(unit.lines().any(|l| l == "User=root"), "{unit}");

    // Run as another user, the unit names that user and nothing is said.
    sb.open_to_nobody();
    let out = sb.path().join("out");
    fs::create_dir(&out).unwrap();
    std::os::unix::fs::chown(&out, Some(crate::sandbox::NOBODY), None).unwrap();
    let run = sb.run_as_nobody(&[
        "init",
        "--template",
        "systemd",
        "--out",
        "out",
        "--app",
        "shop",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    let unit = fs::read_to_string(out.join("shop.service")).unwrap();
    assert!(unit.lines().any(|l| l == "User=nobody"), "{unit}");
}

#[test]
fn templates_never_overwrite_without_force() {
    let sb = rendered();
    let nginx = sb.path().join("tpl/nginx-shop.conf");
    fs::write(&nginx, "# edited\n").unwrap();
    sb.run(&[
        "init",
        "--template",
        "nginx",
        "--template",
        "pm2",
        "--out",
        "tpl",
        "--app",
        "shop",
    ])
    .code(2)
    .says("nginx-shop.conf exists");
    assert_eq!(fs::read_to_string(&nginx).unwrap(), "# edited\n");
    sb.run(&[
        "init",
        "--template",
        "nginx",
        "--out",
        "tpl",
        "--app",
        "shop",
        "--force",
    ])
    .ok();
    assert_ne!(fs::read_to_string(&nginx).unwrap(), "# edited\n");
}

fn check_json(sb: &Sandbox) -> (i32, Vec<Value>) {
    let run = sb.run(&["check", "--json"]);
    let report = run.json();
    assert_eq!(report["ok"], run.code == 0, "{report}");
    (run.code, report["checks"].as_array().unwrap().clone())
}

/// The failed check named `name`, which must carry a fix.
#[track_caller]
fn failed<'a>(checks: &'a [Value], name: &str, needle: &str) -> &'a Value {
    let found = checks
        .iter()
        .find(|c| {
            c["name"] == name && c["ok"] == false && c["detail"].as_str().unwrap().contains(needle)
        })
        .unwrap_or_else(|| panic!("no failed {name} check mentioning {needle:?} in {checks:#?}"));
    assert!(
        found["fix"].as_str().is_some_and(|f| !f.is_empty()),
        "{found}"
    );
    found
}

#[test]
fn check_passes_on_a_healthy_setup() {
    let sb = Sandbox::new();
    sb.deploy();
    let (code, checks) = check_json(&sb);
    assert_eq!(code, 0, "{checks:#?}");
    assert!(checks.iter().all(|c| c["ok"] == true));
    sb.run(&["check"]).ok();
}

#[test]
fn check_reports_each_failure_with_its_fix_and_changes_nothing() {
    let sb = Sandbox::new();
    sb.deploy();
    sb.write_config("shared = [\".env\"]\n[source]\n");
    // (A second [source] table is a TOML error: the config check fails.)
    let before = sb.fingerprint();
    let (code, checks) = check_json(&sb);
    assert_eq!(code, 2);
    failed(&checks, "config", "invalid config");

    sb.write_raw_config(&format!(
        "deploy_to = \"deploy\"\nshared = [\".env\"]\n[source]\ngit = \"app\"\nbranch = \"no-such-branch\"\n\
         [hooks]\nbuild = [\"no-such-program-xyz --flag\"]\n\
         reload = \"cd \\\"$SHIPIT_DEPLOY_TO\\\" && no-such-reloader-xyz startOrReload x\"\n\
         [health]\nurl = \"http://127.0.0.1:{}/healthz\"\nrequest_timeout = \"300ms\"\n",
        closed_port()
    ));
    fs::create_dir(sb.deploy_to().join("releases/not-a-release")).unwrap();
    let before_checks = sb.fingerprint();
    let (code, checks) = check_json(&sb);
    assert_eq!(code, 2);
    failed(&checks, "source", "no-such-branch");
    failed(&checks, "shared", ".env");
    failed(&checks, "hooks", "no-such-program-xyz");
    // Each simple command of a compound hook is checked.
    failed(&checks, "hooks", "no-such-reloader-xyz (in hooks.reload");
    // A stray entry is named, with its fix, but is no failure: deploy and
    // prune leave it alone and work around it.
    let releases = checks.iter().find(|c| c["name"] == "releases").unwrap();
    assert_eq!(releases["ok"], true, "{releases}");
    assert!(
        releases["detail"]
            .as_str()
            .unwrap()
            .contains("not-a-release"),
        "{releases}"
    );
    assert!(
        releases["fix"].as_str().is_some_and(|f| !f.is_empty()),
        "{releases}"
    );
    failed(&checks, "health", "does not pass for the live");
    assert_eq!(
        sb.fingerprint(),
        before_checks,
        "check changed the deploy directory"
    );

    fs::remove_dir(sb.deploy_to().join("releases/not-a-release")).unwrap();
    fs::remove_file(sb.deploy_to().join("current")).unwrap();
    fs::create_dir(sb.deploy_to().join("current")).unwrap();
    let (_, checks) = check_json(&sb);
    failed(&checks, "current", "not a symlink");
    let text = sb.run(&["check"]);
    assert!(
        text.stdout.contains("✗ current") && text.stdout.contains("fix: move it aside"),
        "{}",
        text.stdout
    );
    let _ = before;
}

/// `check --json` with `bin` first on PATH.
fn check_json_with_path(sb: &Sandbox, bin: &Path) -> Vec<Value> {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = sb
        .command(&["check", "--json"])
        .env("PATH", path)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["checks"].as_array().unwrap().clone()
}

/// The passed check named `name` whose detail contains `needle`.
#[track_caller]
fn passed<'a>(checks: &'a [Value], name: &str, needle: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| {
            c["name"] == name && c["ok"] == true && c["detail"].as_str().unwrap().contains(needle)
        })
        .unwrap_or_else(|| panic!("no passed {name} check mentioning {needle:?} in {checks:#?}"))
}

/// `check` said "systemctl is on PATH" where systemd was not
/// running (the deploy then failed "System has not been booted with
/// systemd"), and passed a pm2 reload hook whose ecosystem file did not
/// exist.
#[test]
fn check_finds_a_systemctl_hook_without_systemd_and_a_missing_pm2_file() {
    let sb = Sandbox::new();
    let bin = sb.path().join("bin");
    fs::create_dir(&bin).unwrap();
    for tool in ["systemctl", "pm2"] {
        crate::support::exec::write_executable(&bin.join(tool), "#!/bin/sh\nexit 0\n");
    }
    sb.write_config("[hooks]\nreload = \"systemctl restart shop.service\"\n");
    let checks = check_json_with_path(&sb, &bin);
    // As systemd itself tells (sd_booted(3)).
    if Path::new("/run/systemd/system").is_dir() {
        passed(&checks, "hooks", "systemctl (in hooks.reload) is on PATH");
    } else {
        let found = failed(&checks, "hooks", "systemd is not running");
        assert!(
            found["detail"]
                .as_str()
                .unwrap()
                .contains("System has not been booted with systemd"),
            "{found}"
        );
        assert!(
            !checks
                .iter()
                .any(|c| c["ok"] == true && c["detail"].as_str().unwrap().contains("systemctl")),
            "a passing systemctl check gives false confidence: {checks:#?}"
        );
    }
    // Through sudo, too.
    sb.write_config("[hooks]\nreload = \"sudo -n systemctl restart shop.service\"\n");
    let checks = check_json_with_path(&sb, &bin);
    if !Path::new("/run/systemd/system").is_dir() {
        failed(&checks, "hooks", "systemd is not running");
    }

    // The pm2 hook the templates print, before and after its file exists.
    sb.write_config(
        "[hooks]\nreload = \"cd \\\"$SHIPIT_DEPLOY_TO\\\" && pm2 startOrReload shared/ecosystem.config.js\"\n",
    );
    let file = sb.deploy_to().join("shared/ecosystem.config.js");
    let checks = check_json_with_path(&sb, &bin);
    let found = failed(&checks, "hooks", "shared/ecosystem.config.js");
    assert!(
        found["fix"]
            .as_str()
            .unwrap()
            .contains("shipit init --template pm2"),
        "{found}"
    );
    passed(&checks, "hooks", "pm2 (in hooks.reload) is on PATH");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, "module.exports = {apps: []};\n").unwrap();
    let checks = check_json_with_path(&sb, &bin);
    passed(
        &checks,
        "hooks",
        "shared/ecosystem.config.js (the pm2 file in hooks.reload) exists",
    );

    // With a fleet the hooks run on the hosts: this machine's systemd and
    // files say nothing about them.
    fs::remove_file(&file).unwrap();
    sb.write_raw_config(&format!(
        "deploy_to = \"{}\"\n[source]\ngit = \"app\"\n\
         [hooks]\nreload = \"systemctl restart a.service && cd \\\"$SHIPIT_DEPLOY_TO\\\" && pm2 reload shared/ecosystem.config.js\"\n\
         [fleet]\nhosts = [\"ssh://deploy@127.0.0.1:{}\"]\n",
        sb.deploy_to().display(),
        closed_port()
    ));
    let checks = check_json_with_path(&sb, &bin);
    // They are checked on each host, which here is not there.
    failed(&checks, "host", "unreachable");
    assert!(
        !checks.iter().any(|c| {
            let d = c["detail"].as_str().unwrap();
            c["ok"] == false && (d.contains("systemd") || d.contains("ecosystem"))
        }),
        "{checks:#?}"
    );
}

/// A port on 127.0.0.1 with nothing listening.
fn closed_port() -> u16 {
    crate::support::ports::free_port()
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_definitions() {
    let sb = Sandbox::new();
    let bash = sb.run(&["completions", "bash"]);
    bash.ok();
    assert!(bash.stdout.contains("rollback") && bash.stdout.contains("--no-rollback"));
    let syntax = Command::new("bash")
        .args(["-n", "-c", &bash.stdout])
        .status()
        .unwrap();
    assert!(syntax.success());
    let zsh = sb.run(&["completions", "zsh"]);
    zsh.ok();
    assert!(zsh.stdout.contains("#compdef shipit"));
    let man = sb.run(&["man"]);
    man.ok();
    assert!(
        man.stdout.contains(".TH SHIPIT "),
        "{}",
        &man.stdout[..200.min(man.stdout.len())]
    );
    assert!(man.stdout.contains("deploy"));
}

/// One man page per subcommand, each with its options and the sections a
/// reader looks for; the exit codes are in `--help` too.
#[test]
fn man_pages_cover_every_subcommand_with_exit_status_files_and_environment() {
    let sb = Sandbox::new();
    let dir = sb.path().join("man1");
    sb.run(&["man", "--dir", dir.to_str().unwrap()]).ok();
    let mut pages = crate::sandbox::dir_names(&dir);
    pages.sort();
    for sub in [
        "shipit",
        "shipit-deploy",
        "shipit-rollback",
        "shipit-releases",
        "shipit-prune",
        "shipit-history",
        "shipit-status",
        "shipit-hook",
        "shipit-init",
        "shipit-check",
        "shipit-man",
        "shipit-hook-install",
    ] {
        assert!(
            pages.contains(&format!("{sub}.1")),
            "{sub}.1 missing from {pages:?}"
        );
    }
    assert!(!pages.contains(&"shipit-help.1".to_string()), "{pages:?}");
    let install = std::fs::read_to_string(dir.join("shipit-hook-install.1")).unwrap();
    assert!(install.contains("git\\-dir"), "{install}");
    let deploy = std::fs::read_to_string(dir.join("shipit-deploy.1")).unwrap();
    for needle in [
        ".TH SHIPIT-DEPLOY 1",
        "no\\-rollback",
        ".SH \"EXIT STATUS\"",
        "rolled\\-back",
        "130",
        ".SH ENVIRONMENT",
        "SHIPIT_CONFIG",
        ".SH FILES",
        "history.jsonl",
    ] {
        assert!(
            deploy.contains(needle),
            "shipit-deploy.1 lacks {needle:?}:\n{deploy}"
        );
    }
    let one = sb.run(&["man", "rollback"]);
    one.ok();
    assert!(
        one.stdout.contains(".TH SHIPIT-ROLLBACK 1"),
        "{}",
        one.stdout
    );
    sb.run(&["man", "nope"])
        .code(2)
        .says("no man page for \"nope\"")
        .says("deploy");

    let help = sb.run(&["deploy", "--help"]);
    help.ok();
    for needle in [
        "Exit codes:",
        "4  rolled-back:",
        "6  lock-busy:",
        "130  interrupted:",
    ] {
        assert!(
            help.stdout.contains(needle),
            "deploy --help lacks {needle:?}:\n{}",
            help.stdout
        );
    }
    sb.run(&["--help"]).ok();
}
