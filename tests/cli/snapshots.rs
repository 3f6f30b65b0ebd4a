//! The human output of each command, pinned: success and each failure
//! shape, so that a change of wording shows up as a diff in review.
//! Release ids, times, durations, sizes, shas, pids, users and paths are
//! redacted.
//! After an intended change: `INSTA_UPDATE=always cargo test --test cli
//! snapshots`, then review the `.snap` diffs like code.

use std::fs;

use crate::sandbox::{Run, Sandbox};

/// What a person sees: the exit code, stdout, then stderr.
fn shown(sb: &Sandbox, run: &Run) -> String {
    let text = format!(
        "$ shipit {}\nexit {}\n--- stdout\n{}--- stderr\n{}",
        run.args.join(" "),
        run.code,
        run.stdout,
        run.stderr
    );
    let root = sb.path().display().to_string();
    let canonical = fs::canonicalize(sb.path())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| root.clone());
    text.replace(crate::sandbox::SHIPIT, "shipit")
        .replace(&canonical, "[SANDBOX]")
        .replace(&root, "[SANDBOX]")
}

macro_rules! pin {
    ($name:expr, $sb:expr, $run:expr) => {{
        let text = shown($sb, $run);
        insta::with_settings!({
            snapshot_path => "snapshots",
            prepend_module_to_snapshot => false,
            filters => vec![
                (r"\b20\d{12}\b", "[ID]"),
                (r"\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?( UTC|Z|\+00:00)?", "[TIME]"),
                (r"\b[0-9a-f]{40}\b", "[SHA]"),
                (r"\b[0-9a-f]{10,12}\b", "[SHORT-SHA]"),
                (r"started server \d+", "started server [PID]"),
                (r"\b\d+(\.\d+)?(ms|s)\b", "[DUR]"),
                (r"\b\d+(s|m|h|d) ago\b", "[AGE] ago"),
                (r"(?m)^(  |\* )\[ID\] +\d+[smhd] ", "$1[ID] [AGE] "),
                (r"pid \d+", "pid [PID]"),
                (r"is [a-z_][a-z0-9_-]*'s to write", "is [USER]'s to write"),
                (r"ps -fp \d+", "ps -fp [PID]"),
                (r"\b[a-z_][a-z0-9_-]*@[A-Za-z0-9.-]+\b", "[USER]@[HOST]"),
                (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
                // Sizes depend on the filesystem of /tmp (a tmpfs directory
                // has no blocks); the padding of their column goes with them.
                (r" +\b\d+(\.\d)? (B|KiB|MiB|GiB|TiB)\b", " [SIZE]"),
                // How files were copied depends on the filesystem of /tmp.
                (r"(?m)^( +Copied \d+ files?).*$", "$1[HOW]"),
            ],
        }, {
            insta::assert_snapshot!($name, text);
        });
    }};
}

fn with_two_releases(sb: &Sandbox) -> (String, String) {
    let first = sb.deploy();
    sb.commit("index.html", "v2\n");
    let second = sb.deploy();
    (first, second)
}

#[test]
fn deploy_output() {
    let sb = Sandbox::new();
    sb.write_config(
        "[hooks]\nbuild = [\"echo building $SHIPIT_RELEASE\"]\nreload = \"echo reloaded\"\n",
    );
    pin!("deploy_first", &sb, &sb.run(&["deploy"]));
    sb.commit("index.html", "v2\n");
    pin!("deploy_quiet", &sb, &sb.run(&["-q", "deploy"]));
    pin!(
        "deploy_bad_ref",
        &sb,
        &sb.run(&["deploy", "--ref", "no-such-branch"])
    );
    pin!(
        "deploy_bad_ref_json",
        &sb,
        &sb.run(&["deploy", "--json", "--ref=-x"])
    );
    sb.write_config("[hooks]\nbuild = [\"echo compiling; exit 3\"]\n");
    sb.commit("index.html", "v3\n");
    pin!("deploy_build_fails", &sb, &sb.run(&["deploy"]));
}

#[test]
fn deploy_of_a_directory_output() {
    let sb = Sandbox::new();
    let site = sb.path().join("site");
    fs::create_dir(&site).unwrap();
    fs::write(site.join("index.html"), "hi\n").unwrap();
    sb.write_raw_config("deploy_to = \"deploy\"\n[source]\npath = \"site\"\n");
    pin!("deploy_directory", &sb, &sb.run(&["deploy"]));
    pin!("status_directory", &sb, &sb.run(&["status"]));
}

#[test]
fn gate_failure_output() {
    let sb = Sandbox::new();
    let _server = sb.with_server("", "timeout = \"60s\"\nfail_after = 3");
    sb.deploy();
    sb.commit("health-status", "500\n");
    pin!("deploy_gate_fails_fast", &sb, &sb.run(&["deploy"]));
}

#[test]
fn rollback_status_history_output() {
    let sb = Sandbox::new();
    pin!("rollback_nothing_deployed", &sb, &sb.run(&["rollback"]));
    let (_first, _second) = with_two_releases(&sb);
    pin!("rollback", &sb, &sb.run(&["rollback"]));
    pin!("rollback_nothing_older", &sb, &sb.run(&["rollback"]));
    pin!(
        "rollback_unknown_id",
        &sb,
        &sb.run(&["rollback", "--to", "20200101000000"])
    );
    pin!("status_after_rollback", &sb, &sb.run(&["status"]));
    pin!("history", &sb, &sb.run(&["history"]));
    pin!("releases", &sb, &sb.run(&["releases"]));
}

#[test]
fn check_and_prune_output() {
    let sb = Sandbox::new();
    sb.deploy();
    pin!("check_ok", &sb, &sb.run(&["check"]));
    pin!("prune_nothing", &sb, &sb.run(&["prune"]));
    pin!(
        "prune_dry_run_nothing",
        &sb,
        &sb.run(&["prune", "--dry-run"])
    );
    for n in 2..=4 {
        sb.commit("index.html", &format!("v{n}\n"));
        sb.deploy();
    }
    pin!(
        "prune_dry_run",
        &sb,
        &sb.run(&["prune", "--dry-run", "--keep", "2"])
    );
    pin!("prune", &sb, &sb.run(&["prune", "--keep", "2"]));
    sb.write_config(
        "shared = [\".env\"]\n[hooks]\nreload = \"cd /tmp && no-such-program-xyz reload\"\n",
    );
    pin!("check_failures", &sb, &sb.run(&["check"]));
    sb.write_raw_config("deploy_to = \"deploy\"\n[source]\ngit = \"app\"\n[health]\nurl = \"http://x\"\ntimeuot = \"1s\"\n");
    pin!("config_unknown_key", &sb, &sb.run(&["deploy"]));
}

#[test]
fn lock_busy_output() {
    let sb = Sandbox::new();
    let gate = sb.builds_wait_for_gate();
    let mut first = sb.spawn_deploy_holding_lock();
    pin!("lock_busy", &sb, &sb.run(&["deploy"]));
    pin!(
        "lock_busy_after_wait",
        &sb,
        &sb.run(&["deploy", "--wait=100ms"])
    );
    fs::write(&gate, "").unwrap();
    crate::sandbox::wait_bounded(&mut first, std::time::Duration::from_secs(120));
}

#[test]
fn init_output() {
    let sb = Sandbox::new();
    let conf = sb.path().join("fresh/shipit.toml");
    pin!(
        "init",
        &sb,
        &sb.run(&["-c", conf.to_str().unwrap(), "init", "--app", "shop"])
    );
    pin!(
        "init_exists",
        &sb,
        &sb.run(&["-c", conf.to_str().unwrap(), "init"])
    );
    let out = sb.path().join("out");
    pin!(
        "init_templates",
        &sb,
        &sb.run(&[
            "-c",
            conf.to_str().unwrap(),
            "init",
            "--template",
            "pm2",
            "--template",
            "nginx",
            "--out",
            out.to_str().unwrap(),
        ])
    );
}
