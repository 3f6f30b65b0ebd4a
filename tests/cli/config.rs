//! Config values that load but cannot work are refused by every command,
//! `check` included, before anything changes; secrets in them are never
//! printed.

use std::fs;

use crate::sandbox::Sandbox;

/// `shipit check` fails and its report (stdout) says each of `needles`.
#[track_caller]
fn check_fails_saying(sb: &Sandbox, needles: &[&str]) {
    let run = sb.run(&["check"]);
    run.code(2);
    for needle in needles {
        assert!(
            run.stdout.contains(needle),
            "check did not say {needle:?}:\n{}",
            run.stdout
        );
    }
}

#[test]
fn a_health_url_with_spaces_fails_check_and_deploy() {
    let sb = Sandbox::new();
    sb.write_config("[health]\nurl = \" http://127.0.0.1:9/healthz\"\n");
    check_fails_saying(&sb, &["has spaces around it", "remove the spaces"]);
    sb.run(&["deploy"]).code(2).says("has spaces around it");
    assert!(!sb.deploy_to().exists(), "a refused deploy creates nothing");
}

#[test]
fn a_gate_whose_delay_outlasts_its_timeout_fails_check() {
    let sb = Sandbox::new();
    sb.write_config(
        "[health]\nurl = \"http://127.0.0.1:9/healthz\"\ntimeout = \"10s\"\ninitial_delay = \"10s\"\n",
    );
    check_fails_saying(&sb, &["can never pass", "timeout includes initial_delay"]);
}

/// Regression: `retire_delay = "18446744073709551615s"` passed `check`;
/// the deploy switched, then panicked (exit 101) with no history and the old
/// slot left running. `lock.wait` and `build_timeout` overflowed the same
/// way. Every duration is bounded when the config is read.
#[test]
fn a_duration_past_its_limit_fails_check_naming_the_key_and_the_limit() {
    const HUGE: &str = "\"18446744073709551615s\"";
    let slots = "[health]\nurl = \"http://127.0.0.1:9/healthz\"\n\
                 [slots]\nstart = \"true\"\nstop = \"true\"\n";
    for (body, key, limit) in [
        (
            format!("{slots}retire_delay = {HUGE}\n"),
            "slots.retire_delay",
            "1h",
        ),
        (format!("[lock]\nwait = {HUGE}\n"), "lock.wait", "1day"),
        (
            format!("[hooks]\nbuild_timeout = {HUGE}\n"),
            "hooks.build_timeout",
            "1day",
        ),
    ] {
        let sb = Sandbox::new();
        sb.write_config(&body);
        check_fails_saying(&sb, &[key, &format!("longer than its limit of {limit}")]);
        let deploy = sb.run(&["deploy", "--wait"]);
        deploy.code(2).says(key);
        assert!(!sb.deploy_to().exists(), "a refused deploy creates nothing");
    }
}

#[test]
fn credentials_in_the_health_url_are_never_printed() {
    let sb = Sandbox::new();
    let server = sb.with_server("", "timeout = \"3s\"");
    let config = fs::read_to_string(sb.config_path()).unwrap();
    let url = server.url();
    let secret = url.replace("http://", "http://admin:hunter2@");
    fs::write(sb.config_path(), config.replace(&url, &secret)).unwrap();
    let first = sb.run(&["deploy"]);
    first.ok().says("admin:***@127.0.0.1");
    sb.commit("health-status", "503\n");
    let failed = sb.run(&["deploy"]);
    failed.code(4);
    let status = sb.run(&["status", "--json"]);
    let check = sb.run(&["check"]);
    for run in [&first, &failed, &status, &check] {
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(
            !all.contains("hunter2"),
            "`shipit {}` printed the password:\n{all}",
            run.args.join(" ")
        );
    }
    assert!(status.stdout.contains("admin:***@"), "{}", status.stdout);
}

#[test]
fn a_source_path_holding_deploy_to_is_refused() {
    let sb = Sandbox::new();
    fs::create_dir(sb.path().join("site")).unwrap();
    fs::write(sb.path().join("site/index.html"), "hi\n").unwrap();
    sb.write_raw_config("deploy_to = \"site/deploy\"\n[source]\npath = \"site\"\n");
    check_fails_saying(&sb, &["contains deploy_to", "outside deploy_to"]);
    sb.run(&["deploy"])
        .code(2)
        .says("contains deploy_to")
        .says("outside deploy_to");
    assert!(!sb.path().join("site/deploy").exists());
}
