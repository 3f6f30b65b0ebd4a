//! Bad input: a clear error naming the bad value, exit 2, nothing changed.

use std::fs;

use crate::sandbox::Sandbox;

#[test]
fn unknown_config_key_names_the_nearest_valid_one() {
    let sb = Sandbox::new();
    sb.write_config("keep_relases = 3\n");
    sb.run(&["deploy"])
        .code(2)
        .says("unknown key `keep_relases`")
        .says("did you mean `keep_releases`");
    sb.write_config("[hooks]\nbulid = [\"true\"]\n");
    sb.run(&["deploy"])
        .code(2)
        .says("`hooks.bulid`")
        .says("`hooks.build`");
    assert!(!sb.deploy_to().exists());
}

#[test]
fn a_nonexistent_ref_changes_nothing_live() {
    let sb = Sandbox::new();
    let first = sb.deploy();
    let releases = sb.releases();
    sb.run(&["deploy", "--ref", "no-such-branch"])
        .code(2)
        .says("\"no-such-branch\" is not a branch, tag or commit")
        .says(&format!("live now: releases/{first}"));
    assert_eq!(sb.current().unwrap(), first);
    assert_eq!(sb.releases(), releases);
}

#[test]
fn refs_that_look_like_options_or_shell_are_never_run() {
    let sb = Sandbox::new();
    let marker = sb.path().join("pwned");
    sb.run(&["deploy", "--ref=--upload-pack=touch pwned"])
        .code(2)
        .says("is not a usable git ref");
    let shelly = "$(touch${IFS}pwned)";
    sb.run(&["deploy", "--ref", shelly]).code(2);
    sb.run(&["deploy", "--ref", "main;touch pwned"]).code(2);
    sb.run(&["deploy", "--ref", "`touch pwned`"]).code(2);
    assert!(!marker.exists());
    assert!(!sb.path().join("deploy/pwned").exists());
    assert!(sb.current().is_none(), "nothing was deployed");
}

#[test]
fn current_as_a_real_directory_is_refused() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.deploy_to().join("current")).unwrap();
    fs::write(sb.deploy_to().join("current/index.html"), "hand-made\n").unwrap();
    let before = sb.fingerprint();
    sb.run(&["deploy"])
        .code(2)
        .says("not a symlink")
        .says("move it aside");
    assert_eq!(sb.fingerprint(), before);
}

#[test]
fn missing_config_says_how_to_make_one() {
    let sb = Sandbox::new();
    fs::remove_file(sb.config_path()).unwrap();
    sb.run(&["deploy"])
        .code(2)
        .says("no config file")
        .says("shipit init");
}

#[test]
fn config_errors_name_the_value() {
    let sb = Sandbox::new();
    for (body, needle) in [
        ("keep_releases = 0\n", "keep_releases = 0"),
        ("keep_releases = \"five\"\n", "keep_releases"),
        ("[hooks]\nbuild_timeout = \"forever\"\n", "\"forever\""),
        (
            "[health]\nurl = \"https://example.com/\"\n",
            "https://example.com/",
        ),
        ("this is not toml\n", "invalid config"),
    ] {
        sb.write_config(body);
        sb.run(&["deploy"]).code(2).says(needle);
    }
    assert!(!sb.deploy_to().exists());
}

#[test]
fn a_foreign_entry_in_releases_is_named() {
    let sb = Sandbox::new();
    sb.deploy();
    fs::create_dir(sb.deploy_to().join("releases/backup-old")).unwrap();
    let before = sb.fingerprint();
    sb.run(&["deploy"])
        .code(2)
        .says("releases/backup-old is not a release");
    assert_eq!(sb.fingerprint(), before);
}

#[test]
fn releases_output_survives_a_closed_pipe() {
    let sb = Sandbox::new();
    for n in 0..3 {
        sb.commit("index.html", &format!("v{n}\n"));
        sb.deploy();
    }
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            &format!(
                "set -o pipefail; '{}' releases | head -c1 >/dev/null",
                crate::sandbox::SHIPIT
            ),
        ])
        .current_dir(sb.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}
