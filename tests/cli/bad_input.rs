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
    crate::sandbox::succeeded(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// One bad input: how to set it up on a deployed sandbox, what to run, and
/// what the error must name.
struct Case {
    name: &'static str,
    setup: fn(&Sandbox),
    args: &'static [&'static str],
    names: &'static str,
}

fn config(sb: &Sandbox, text: &str) {
    sb.write_raw_config(text);
}

const GOOD: &str = "deploy_to = \"deploy\"\n[source]\ngit = \"app\"\n";

fn corpus() -> Vec<Case> {
    vec![
        Case {
            name: "malformed TOML",
            setup: |sb| config(sb, "deploy_to = \n[source\n"),
            args: &["deploy"],
            names: "invalid config",
        },
        Case {
            name: "wrong type",
            setup: |sb| config(sb, &format!("keep_releases = \"five\"\n{GOOD}")),
            args: &["deploy"],
            names: "keep_releases",
        },
        Case {
            name: "unknown key",
            setup: |sb| config(sb, &format!("{GOOD}[hooks]\nrelaod = \"x\"\n")),
            args: &["deploy"],
            names: "hooks.relaod",
        },
        Case {
            name: "missing deploy_to",
            setup: |sb| config(sb, "[source]\ngit = \"app\"\n"),
            args: &["deploy"],
            names: "deploy_to",
        },
        Case {
            name: "deploy_to is a file",
            setup: |sb| {
                fs::write(sb.path().join("a-file"), "x").unwrap();
                config(sb, "deploy_to = \"a-file\"\n[source]\ngit = \"app\"\n");
            },
            args: &["deploy"],
            names: "a-file exists and is not a directory",
        },
        Case {
            name: "keep_releases = 0",
            setup: |sb| config(sb, &format!("keep_releases = 0\n{GOOD}")),
            args: &["deploy"],
            names: "keep_releases = 0",
        },
        Case {
            name: "non-http health URL",
            setup: |sb| {
                config(
                    sb,
                    &format!("{GOOD}[health]\nurl = \"ftp://127.0.0.1/x\"\n"),
                )
            },
            args: &["deploy"],
            names: "ftp://127.0.0.1/x",
        },
        Case {
            name: "garbage duration",
            setup: |sb| {
                config(
                    sb,
                    &format!(
                        "{GOOD}[health]\nurl = \"http://127.0.0.1:1/\"\ntimeout = \"a while\"\n"
                    ),
                )
            },
            args: &["deploy"],
            names: "\"a while\"",
        },
        Case {
            name: "--to with ..",
            setup: |_| {},
            args: &["rollback", "--to", "../../etc"],
            names: "\"../../etc\" is not a release id",
        },
        Case {
            name: "--to with /",
            setup: |_| {},
            args: &["rollback", "--to", "/etc/passwd"],
            names: "\"/etc/passwd\" is not a release id",
        },
        Case {
            name: "nonexistent release id",
            setup: |_| {},
            args: &["rollback", "--to", "20000101000000"],
            names: "no release 20000101000000",
        },
        Case {
            name: "ref with $( )",
            setup: |_| {},
            args: &["deploy", "--ref", "$(touch${IFS}pwned)"],
            names: "$(touch${IFS}pwned)",
        },
        Case {
            name: "ref with ;",
            setup: |_| {},
            args: &["deploy", "--ref", "main;touch${IFS}pwned"],
            names: "main;touch${IFS}pwned",
        },
        Case {
            name: "ref with backticks",
            setup: |_| {},
            args: &["deploy", "--ref", "`touch${IFS}pwned`"],
            names: "`touch${IFS}pwned`",
        },
        Case {
            name: "ref like an option",
            setup: |_| {},
            args: &["deploy", "--ref=--upload-pack=touch pwned"],
            names: "--upload-pack=touch pwned",
        },
        Case {
            name: "misspelled branch",
            setup: |_| {},
            args: &["deploy", "--ref", "mian"],
            names: "\"mian\" is not a branch, tag or commit",
        },
        Case {
            name: "current is a directory",
            setup: |sb| {
                let current = sb.deploy_to().join("current");
                fs::remove_file(&current).unwrap();
                fs::create_dir(&current).unwrap();
            },
            args: &["deploy"],
            names: "current is a real directory",
        },
        Case {
            name: "current is dangling",
            setup: |sb| {
                let current = sb.deploy_to().join("current");
                fs::remove_file(&current).unwrap();
                std::os::unix::fs::symlink("releases/20000101000000", &current).unwrap();
            },
            args: &["deploy"],
            names: "releases/20000101000000, which is not a release",
        },
        Case {
            name: "prune --keep 0",
            setup: |_| {},
            args: &["prune", "--keep", "0"],
            names: "--keep 0",
        },
        Case {
            name: "bad --wait",
            setup: |_| {},
            args: &["deploy", "--wait=soon"],
            names: "--wait=soon",
        },
        Case {
            // Regression: it parsed, and the lock's deadline overflowed
            // (a panic, exit 101).
            name: "--wait past its limit",
            setup: |_| {},
            args: &["deploy", "--wait=18446744073709551615s"],
            names: "--wait=18446744073709551615s is longer than its limit of 1day",
        },
    ]
}

#[test]
fn every_bad_input_is_named_and_changes_nothing() {
    for case in corpus() {
        let sb = Sandbox::new();
        sb.deploy();
        (case.setup)(&sb);
        let before = sb.fingerprint();
        let run = sb.run(case.args);
        assert_ne!(run.code, 0, "{}: exited 0", case.name);
        assert!(
            !run.stderr.contains("panicked"),
            "{}: panicked\n{}",
            case.name,
            run.stderr
        );
        assert!(
            run.stderr.contains(case.names),
            "{}: the error does not name {:?}\n{}",
            case.name,
            case.names,
            run.stderr
        );
        assert_eq!(
            sb.fingerprint(),
            before,
            "{}: the deploy directory changed",
            case.name
        );
        let pwned: Vec<_> = walkdir::WalkDir::new(sb.path())
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() == "pwned")
            .collect();
        assert!(pwned.is_empty(), "{}: a ref was executed", case.name);
    }
}

/// An unwritable deploy_to, as a user who cannot write it (root can write
/// anything, so as root the command runs as `nobody` through setpriv).
#[test]
fn an_unwritable_deploy_to_is_named_and_nothing_changes() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    sb.deploy();
    let root = nix::unistd::getuid().is_root();
    if root {
        // nobody must reach the sandbox and the binary, but not write it.
        sb.open_to_nobody();
    } else {
        fs::set_permissions(sb.deploy_to(), fs::Permissions::from_mode(0o555)).unwrap();
    }
    let before = sb.fingerprint();
    let mut command = if root {
        sb.command_as_nobody(&["deploy"])
    } else {
        sb.command(&["deploy"])
    };
    let out = command.output().expect("setpriv (util-linux) runs");
    let said = String::from_utf8_lossy(&out.stderr);
    if !root {
        fs::set_permissions(sb.deploy_to(), fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("is not writable by"), "{said}");
    assert!(
        said.contains(&sb.deploy_to().display().to_string()),
        "{said}"
    );
    assert!(!said.contains("panicked"), "{said}");
    assert_eq!(sb.fingerprint(), before);
}

/// A stdout whose reader is gone must not turn a failure into exit 0.
#[test]
fn a_failing_command_keeps_its_exit_code_when_stdout_is_closed() {
    let sb = Sandbox::new();
    sb.write_config("shared = [\".env\"]\n");
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    for (args, code) in [
        (&["check", "--json"][..], 2),
        (&["check"], 2),
        (&["deploy", "--json"], 3),
    ] {
        let out = sb
            .command(args)
            .stdout(std::process::Stdio::from(write.try_clone().unwrap()))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "shipit {args:?} with a closed stdout: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
