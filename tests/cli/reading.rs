//! What a person on call reads: status and history say what the last event
//! did, results go to stdout for scripts (`-q`, `--json` failures), and the
//! small words are right.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::sandbox::Sandbox;

/// A sandbox that ships a directory (no git revision).
fn directory_source(sb: &Sandbox) {
    let site = sb.path().join("site");
    fs::create_dir(&site).unwrap();
    fs::write(site.join("index.html"), "hi\n").unwrap();
    sb.write_raw_config("deploy_to = \"deploy\"\n[source]\npath = \"site\"\n");
}

#[test]
fn status_after_a_rollback_shows_the_rollback_and_history_says_from_and_to() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    sb.commit("index.html", "v2\n");
    let second = sb.deploy();
    sb.run(&["rollback"]).ok();
    let status = sb.run(&["status"]);
    status.ok();
    assert!(
        status.stdout.contains(&format!(
            "last event:   rollback ok, {second} -> {first} at "
        )),
        "{}",
        status.stdout
    );
    assert!(
        status
            .stdout
            .contains(&format!("last deploy:  ok {first} -> {second} at ")),
        "{}",
        status.stdout
    );
    let json = sb.run(&["status", "--json"]).json();
    assert_eq!(json["last_event"]["event"], "rollback");
    assert_eq!(json["last_event"]["live"], first.as_str());

    let history = sb.run(&["history"]);
    history.ok();
    let lines: Vec<&str> = history.stdout.lines().collect();
    assert!(
        lines[0].starts_with("TIME (UTC)"),
        "a header row: {}",
        lines[0]
    );
    assert!(lines[0].contains("RELEASES (FROM -> TO)"), "{}", lines[0]);
    assert!(lines[1].contains("rollback  ok"), "{}", lines[1]);
    assert!(
        lines[1].contains(&format!("{second} -> {first}")),
        "{}",
        lines[1]
    );
    assert!(
        lines[3].contains(&format!("nothing -> {first}")),
        "{}",
        lines[3]
    );
}

/// Regressions: a history event kept the failure's message but not its
/// cause chain (which `releases --json` had), and a long releases cell
/// ("<id> not live; live: <id>") pushed the rest of its row out of line.
#[test]
fn history_keeps_what_a_failure_came_from_and_its_columns_aligned() {
    let sb = Sandbox::new();
    let _server = sb.with_server("", "timeout = \"3s\"");
    sb.deploy();
    sb.commit("health-status", "500\n");
    sb.run(&["deploy"]).code(4);

    let events = sb.history_json();
    let failed = events
        .iter()
        .find(|e| e["outcome"] == "rolled-back")
        .unwrap();
    let causes: Vec<&str> = failed["causes"]
        .as_array()
        .unwrap_or_else(|| panic!("no causes: {failed}"))
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(!causes.is_empty(), "{failed}");
    let releases = sb.releases_json();
    let failure = releases["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "failed")
        .unwrap()["failure"]
        .as_str()
        .unwrap()
        .to_string();
    for cause in &causes {
        assert!(failure.contains(cause), "{cause:?} is not in {failure:?}");
    }

    let history = sb.run(&["history"]);
    let text = history.ok().stdout.clone();
    assert!(
        text.contains(&format!("caused by: {}", causes[0])),
        "{text}"
    );
    // Every cell starts where its column's header starts.
    let lines: Vec<&str> = text.lines().collect();
    let starts = |line: &str| -> Vec<usize> {
        let mut starts = vec![0];
        let bytes = line.as_bytes();
        for i in 2..bytes.len() {
            if bytes[i - 2] == b' ' && bytes[i - 1] == b' ' && bytes[i] != b' ' {
                starts.push(i);
            }
        }
        starts
    };
    let header = starts(lines[0]);
    assert_eq!(header.len(), 8, "{}", lines[0]);
    for line in &lines[1..] {
        // The columns, without the message after the last one.
        let cells: Vec<usize> = starts(line).into_iter().take(8).collect();
        // TOOK is right-aligned: its cell ends where its header ends.
        assert_eq!(
            cells[..7],
            header[..7],
            "out of line:\n{}\n{line}",
            lines[0]
        );
        let took_end = lines[0].len();
        assert_eq!(
            line.as_bytes()[took_end - 1],
            b's',
            "out of line:\n{}\n{line}",
            lines[0]
        );
    }
}

#[test]
fn a_failed_first_deploy_is_not_called_rolled_back() {
    let sb = Sandbox::new();
    let _server = sb.with_server("", "timeout = \"3s\"");
    sb.commit("health-status", "500\n");
    sb.run(&["deploy"]).code(4);
    let events = sb.history_json();
    assert_eq!(events[0]["outcome"], "failed-nothing-live", "{}", events[0]);
    let history = sb.run(&["history"]);
    assert!(
        history.stdout.contains("failed-nothing-live"),
        "{}",
        history.stdout
    );
    assert!(
        history.stdout.contains("not live; live: nothing"),
        "{}",
        history.stdout
    );
}

#[test]
fn a_directory_deploy_prints_no_empty_revision() {
    let sb = Sandbox::new();
    directory_source(&sb);
    let run = sb.run(&["deploy"]);
    run.ok().says("Copying").says(".shipit/staging/");
    assert!(!run.stderr.contains("(-)"), "{}", run.stderr);
    let status = sb.run(&["status"]);
    assert!(
        status
            .stdout
            .contains("revision:     none (deployed from a directory)"),
        "{}",
        status.stdout
    );
    assert!(!status.stdout.contains("- (-)"), "{}", status.stdout);
}

#[test]
fn quiet_deploy_prints_the_release_id_and_the_small_words_are_right() {
    let sb = Sandbox::new();
    let run = sb.run(&["-q", "deploy"]);
    run.ok();
    let id = sb.current().unwrap();
    assert_eq!(run.stdout, format!("{id}\n"));
    assert_eq!(run.stderr, "", "quiet means no progress lines");

    let check = sb.run(&["check"]);
    check.ok().says("Passed all ");
    assert!(!check.stderr.contains("Checked"), "{}", check.stderr);

    sb.run(&["prune"])
        .ok()
        .says("Kept all 1 release(s): nothing to remove");
    let dry = sb.run(&["prune", "--dry-run"]);
    dry.ok().says("Would keep all 1 release(s)");
    assert!(!dry.stderr.contains("Pruned"), "{}", dry.stderr);
}

#[test]
fn a_json_command_that_fails_prints_a_json_error_on_stdout() {
    let sb = Sandbox::new();
    let run = sb.run(&["deploy", "--json", "--ref", "no-such-branch"]);
    run.code(2);
    let json: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    assert_eq!(json["error"]["outcome"], "usage");
    assert_eq!(json["error"]["exit_code"], 2);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-branch"),
        "{json}"
    );
    // The human error still goes to stderr.
    run.says("error:");
    let rollback = sb.run(&["rollback", "--json"]);
    rollback.code(2);
    let json: Value = serde_json::from_str(&rollback.stdout).expect("stdout is JSON");
    assert!(json["error"]["message"].is_string(), "{json}");
}

#[test]
fn hook_output_loses_its_colour_codes_in_logs_and_under_no_color() {
    let sb = Sandbox::new();
    sb.write_config(
        "[hooks]\nbuild = [\"printf '\\\\033[31mred\\\\033[0m build\\\\n'\"]\nreload = \"printf '\\\\033[32mgreen\\\\033[0m reload\\\\n'\"\n",
    );
    let run = sb.run(&["deploy"]);
    run.ok()
        .says("build | red build")
        .says("reload | green reload");
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    let id = sb.current().unwrap();
    let log = find_log(&sb, &id);
    assert!(log.contains("build | red build"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

/// The build log of `id`, wherever the layout keeps it.
fn find_log(sb: &Sandbox, id: &str) -> String {
    walk(&sb.deploy_to())
        .into_iter()
        .find(|p| p.to_string_lossy().contains(id) && p.extension().is_some_and(|e| e == "log"))
        .map(|p| fs::read_to_string(p).unwrap())
        .unwrap_or_else(|| panic!("no log for {id}"))
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_reload_after_a_rollback_is_marked_in_the_release_log() {
    let sb = Sandbox::new();
    sb.write_config("[hooks]\nreload = \"echo reloaded $SHIPIT_RELEASE\"\n");
    let first = sb.deploy();
    sb.commit("index.html", "v2\n");
    let second = sb.deploy();
    sb.run(&["rollback"]).ok();
    let log = find_log(&sb, &first);
    let marks: Vec<&str> = log.lines().filter(|l| l.starts_with("--- ")).collect();
    assert_eq!(marks.len(), 2, "{log}");
    assert!(
        marks[0].contains(&format!("reload of {first} after the first swap")),
        "{log}"
    );
    assert!(
        marks[1].contains(&format!("reload of {first} after the swap from {second}")),
        "{log}"
    );
    assert!(marks[1].contains(" UTC "), "{log}");
}

#[test]
fn generated_files_are_readable_and_init_app_is_remembered() {
    let sb = Sandbox::new();
    let conf = sb.path().join("fresh/shipit.toml");
    sb.run(&["-c", conf.to_str().unwrap(), "init", "--app", "shop"])
        .ok();
    let mode = fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "shipit.toml mode {mode:o}");
    // Point it somewhere whose last part is not the app's name.
    let text = fs::read_to_string(&conf).unwrap();
    fs::write(&conf, text.replace("/srv/shop", "/srv/www")).unwrap();
    let out = sb.path().join("out");
    sb.run(&[
        "-c",
        conf.to_str().unwrap(),
        "init",
        "--template",
        "systemd",
        "--template",
        "git-hook",
        "--out",
        out.to_str().unwrap(),
    ])
    .ok();
    let unit = out.join("shop.service");
    assert!(unit.exists(), "the unit is named after --app");
    let mode = fs::metadata(&unit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "unit mode {mode:o}");
    let mode = fs::metadata(out.join("post-receive"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o755, "hook mode {mode:o}");
}
