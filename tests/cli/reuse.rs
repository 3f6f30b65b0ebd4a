//! `[[reuse]]`: a dependency directory is built once per key and copied
//! into later releases from the pristine copy of a release that proved
//! itself, as the release's own copy; a changed key file, variable or
//! command output builds it again, and a failed release is never a source.
//! The "install" is a script that counts its runs and stamps what it built.

use std::fs;

use crate::sandbox::Sandbox;
use crate::support::exec::write_executable;

/// A sandbox whose repository has a lockfile and an install script.
fn world(extra: &str) -> Sandbox {
    let sb = Sandbox::new();
    let log = sb.path().join("installs.log");
    let install = sb.path().join("install");
    write_executable(
        &install,
        format!(
            "#!/bin/sh\nset -e\nmkdir -p node_modules/pkg\n\
             echo \"$SHIPIT_RELEASE\" > node_modules/.built-by\n\
             cp package-lock.json node_modules/pkg/lock-copy\n\
             echo \"install $SHIPIT_RELEASE\" >> '{}'\n",
            log.display()
        ),
    );
    sb.commit("package-lock.json", "{\"lockfileVersion\": 3, \"a\": 1}\n");
    sb.write_config(&format!(
        "keep_releases = 3\n[hooks]\nbuild = [\"echo reused=$SHIPIT_REUSED >> '{root}/build.log'\"]\n\
         {extra}\n[[reuse]]\npath = \"node_modules\"\nkey = [\"package-lock.json\"]\n\
         env = [\"APP_RUNTIME\"]\nrun = [\"'{install}'\"]\n",
        root = sb.path().display(),
        install = install.display()
    ));
    sb
}

fn installs(sb: &Sandbox) -> usize {
    fs::read_to_string(sb.path().join("installs.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn built_by(sb: &Sandbox, id: &str) -> String {
    let path = sb
        .deploy_to()
        .join("releases")
        .join(id)
        .join("node_modules/.built-by");
    fs::read_to_string(path).unwrap().trim().to_string()
}

#[test]
fn an_unchanged_key_reuses_the_directory_and_a_changed_one_builds_it() {
    let sb = world("");
    let first = sb.deploy();
    assert_eq!(installs(&sb), 1);

    sb.commit("index.html", "v2\n");
    let run = sb.run(&["deploy"]);
    run.ok().says(&format!(
        "Reused node_modules from releases/{first} (key unchanged"
    ));
    let second = sb.current().unwrap();
    assert_eq!(installs(&sb), 1, "the install did not run again");
    assert_eq!(built_by(&sb, &second), first);
    let build_log = fs::read_to_string(sb.path().join("build.log")).unwrap();
    assert_eq!(
        build_log.lines().collect::<Vec<_>>(),
        ["reused=", "reused=node_modules"]
    );

    // The copy is the new release's own.
    let mine = sb
        .deploy_to()
        .join("releases")
        .join(&second)
        .join("node_modules/pkg/lock-copy");
    fs::write(&mine, "changed in place").unwrap();
    let theirs = sb
        .deploy_to()
        .join("releases")
        .join(&first)
        .join("node_modules/pkg/lock-copy");
    assert_eq!(
        fs::read_to_string(theirs).unwrap(),
        "{\"lockfileVersion\": 3, \"a\": 1}\n"
    );

    // The key is recorded, the same for both.
    let key = |id: &str| {
        sb.releases_json()["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()["reuse"]["node_modules"]["key"]
            .clone()
    };
    assert!(key(&first).is_string());
    assert_eq!(key(&first), key(&second));

    // A changed lockfile builds it again.
    sb.commit("package-lock.json", "{\"lockfileVersion\": 3, \"a\": 2}\n");
    let third = sb.deploy();
    assert_eq!(installs(&sb), 2);
    assert_eq!(built_by(&sb, &third), third);
    assert_ne!(key(&third), key(&second));
}

#[test]
fn a_changed_variable_builds_it_again_and_its_value_is_never_printed() {
    let sb = world("");
    let deploys = std::cell::Cell::new(0);
    let run = |value: &str| {
        let out = sb
            .command(&["deploy"])
            .env("APP_RUNTIME", value)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!text.contains(value), "the value was printed: {text}");
        deploys.set(deploys.get() + 1);
        sb.commit("index.html", &format!("{}\n", deploys.get()));
    };
    run("runtime-value-one");
    run("runtime-value-one");
    assert_eq!(installs(&sb), 1);
    run("runtime-value-two");
    assert_eq!(installs(&sb), 2);
    let meta = fs::read_to_string(
        sb.deploy_to()
            .join("releases")
            .join(sb.current().unwrap())
            .join(".shipit-release.json"),
    )
    .unwrap();
    assert!(!meta.contains("runtime-value"), "{meta}");
}

#[test]
fn a_failed_release_is_never_a_source() {
    // The reload hook fails in a release that holds `broken`.
    let sb = world("reload = \"test ! -e broken\"");
    sb.deploy();
    sb.commit("package-lock.json", "{\"lockfileVersion\": 3, \"a\": 9}\n");
    sb.commit("broken", "x\n");
    sb.run(&["deploy"]).code(4);
    assert_eq!(installs(&sb), 2);
    // Same key, fixed: the failed release's directory is not reused.
    let repo = sb.repo();
    fs::remove_file(repo.join("broken")).unwrap();
    sb.commit("index.html", "fixed\n");
    let fixed = sb.deploy();
    assert_eq!(installs(&sb), 3, "installed again");
    assert_eq!(built_by(&sb, &fixed), fixed);
}

#[test]
fn pristine_copies_go_with_the_releases_that_refer_to_them() {
    let sb = world("");
    for i in 0..5 {
        sb.commit("package-lock.json", &format!("{{\"v\": {i}}}\n"));
        sb.deploy();
    }
    assert_eq!(installs(&sb), 5);
    let mut kept: Vec<String> = fs::read_dir(sb.deploy_to().join(".shipit/reuse"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        sb.releases(),
        "one pristine copy per release kept (keep_releases = 3)"
    );
}

#[test]
fn a_reuse_entry_without_run_or_over_a_shared_path_is_refused() {
    let sb = Sandbox::new();
    sb.write_config("[[reuse]]\npath = \"node_modules\"\nkey = [\"package-lock.json\"]\n");
    sb.run(&["deploy"]).code(2).says("needs run = [...]");
    sb.write_config(
        "shared = [\"node_modules/\"]\n[[reuse]]\npath = \"node_modules\"\nkey = [\"x\"]\nrun = [\"true\"]\n",
    );
    sb.run(&["deploy"]).code(2).says("overlaps the shared path");
    sb.write_config("[[reuse]]\npath = \"../out\"\nkey = [\"x\"]\nrun = [\"true\"]\n");
    sb.run(&["deploy"]).code(2).says("\"../out\"");
    sb.write_config("[[reuse]]\npath = \"nm\"\nkey = [\"x\"]\nrun = [\"true\"]\nbuild = [\"y\"]\n");
    sb.run(&["deploy"])
        .code(2)
        .says("unknown key `reuse.build`");
    assert!(!sb.deploy_to().exists(), "bad config changed nothing");
}

/// A release whose deploy was killed before it proved itself (a crash
/// point of the debug build) is never a source either.
#[test]
fn a_release_that_never_proved_itself_is_never_a_source() {
    let sb = world("");
    sb.deploy();
    sb.commit("package-lock.json", "{\"lockfileVersion\": 3, \"a\": 7}\n");
    let out = sb
        .command(&["deploy"])
        .env("SHIPIT_TEST_CRASH_AT", "activation-started")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(installs(&sb), 2);
    sb.commit("index.html", "again\n");
    let next = sb.deploy();
    assert_eq!(installs(&sb), 3, "installed again");
    assert_eq!(built_by(&sb, &next), next);
}

/// A reused path reached through a symlink in the repository would remove
/// and fill a directory outside the release: refused, and nothing outside
/// is touched.
#[test]
fn a_reuse_path_through_a_symlink_is_refused_and_nothing_outside_changes() {
    let sb = world("");
    let outside = sb.path().join("outside");
    fs::create_dir_all(outside.join("node_modules")).unwrap();
    fs::write(outside.join("node_modules/sentinel"), "keep me\n").unwrap();
    std::os::unix::fs::symlink(&outside, sb.repo().join("web")).unwrap();
    sb.commit("web-link-added", "x\n");
    sb.write_config_replacing("path = \"node_modules\"", "path = \"web/node_modules\"");
    sb.run(&["deploy"]).code(3).says("goes through a symlink");
    assert_eq!(
        fs::read_to_string(outside.join("node_modules/sentinel")).unwrap(),
        "keep me\n"
    );
}

/// A key file that is a link to outside the release decides nothing about
/// the release: refused, naming it.
#[test]
fn a_key_file_that_leads_out_of_the_release_is_refused() {
    let sb = world("");
    let outside = sb.path().join("lock-outside.json");
    fs::write(&outside, "{}\n").unwrap();
    let repo = sb.repo();
    fs::remove_file(repo.join("package-lock.json")).unwrap();
    std::os::unix::fs::symlink(&outside, repo.join("package-lock.json")).unwrap();
    sb.commit("index.html", "linked\n");
    sb.run(&["deploy"]).code(3).says("leads out of the release");
}

/// The commands that build the directory belong to its key: changing them
/// builds it again. A key pattern that matches nothing is said.
#[test]
fn changed_run_commands_build_again_and_an_unmatched_pattern_is_said() {
    let sb = world("");
    sb.deploy();
    sb.write_config_replacing("run = [", "run = [\"true\", ");
    sb.commit("index.html", "v2\n");
    sb.deploy();
    assert_eq!(installs(&sb), 2, "a changed run list builds again");
    sb.write_config_replacing(
        "key = [\"package-lock.json\"]",
        "key = [\"package-lock.jsn\"]",
    );
    sb.commit("index.html", "v3\n");
    sb.run(&["deploy"])
        .ok()
        .says("matches no file in the release");
}

/// A Python virtualenv names the path it was built in (its scripts' `#!`
/// lines, `pyvenv.cfg`): a copy of it would run from a directory that is
/// gone. It is not kept as a reuse source, the deploy says which file and
/// the fix, and the next deploy builds it again.
#[test]
fn a_venv_is_not_kept_for_reuse_and_is_built_again() {
    let sb = Sandbox::new();
    let probe = sb.path().join("probe-venv");
    let venv = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&probe)
        .output();
    match venv {
        Ok(out) if out.status.success() => {}
        other => panic!(
            "`python3 -m venv` does not work here ({other:?}): install it with \
             `apt-get install python3-venv`"
        ),
    }
    let builds = sb.path().join("venv-builds");
    sb.commit("requirements.txt", "\n");
    sb.write_config(&format!(
        "[[reuse]]\npath = \"venv\"\nkey = [\"requirements.txt\"]\n\
         run = [\"python3 -m venv venv\", \"echo built >> '{}'\"]\n",
        builds.display()
    ));
    let count = || {
        fs::read_to_string(&builds)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let first = sb.run(&["deploy"]);
    first.ok().says("venv is not kept for reuse: venv/");
    first.says("hint: build it with relative paths, or leave it out of [[reuse]]");
    assert_eq!(count(), 1);
    let id = sb.current().unwrap();
    assert!(
        !sb.deploy_to().join(".shipit/reuse").join(&id).exists(),
        "no pristine copy kept"
    );
    assert!(sb.releases_json()["releases"][0]["reuse"]["venv"].is_null());

    sb.commit("index.html", "v2\n");
    sb.run(&["deploy"]).ok().says("Building venv");
    assert_eq!(count(), 2, "the next deploy runs the install again");
}
