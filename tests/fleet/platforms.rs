//! A controller that is not the hosts' OS or architecture.

use std::fs;

use crate::support::exec::{copy_executable, write_executable};
use crate::{Options, SHIPIT, World};

/// Make `uname -sm` on `host` say `platform` (a shim first on the PATH of
/// its login shell); returns the shim's directory.
fn uname_says(host: &crate::support::hosts::Host, platform: &str) -> std::path::PathBuf {
    let shim = host.dir.join("shim");
    fs::create_dir_all(&shim).unwrap();
    write_executable(
        &shim.join("uname"),
        format!(
            "#!/bin/sh\nif [ \"$1\" = -sm ]; then echo '{platform}'; else exec /bin/uname \"$@\"; fi\n"
        ),
    );
    fs::write(
        host.home().join(".bashrc"),
        format!("export PATH=\"{}:$PATH\"\n", shim.display()),
    )
    .unwrap();
    shim
}

/// The controller copied its own binary to every host, whatever they ran:
/// a laptop of another OS or CPU could not roll out. A host whose `uname
/// -sm` differs (here a shim on its PATH) now gets a shipit it can run:
/// one installed there, or `fleet.binary`; else the rollout is refused,
/// naming both platforms, before anything is sent.
#[test]
fn a_host_of_another_platform_runs_a_shipit_it_can_run_or_is_refused() {
    let w = World::new(2, Options::default());
    let host = &w.hosts.hosts[1];
    let shim = uname_says(host, "FreeBSD amd64");
    let mine = String::from_utf8(
        std::process::Command::new("uname")
            .arg("-sm")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();

    // Nothing it can run: refused, naming both, nothing sent anywhere.
    let run = w.shipit(&["deploy"]);
    run.code(3);
    assert!(
        run.stderr.contains(&format!(
            "{} is FreeBSD amd64, this controller is {mine}",
            host.dest
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("fleet.binary"), "{}", run.stderr);
    assert_eq!(w.currents(), vec![None, None]);
    let bin = host.deploy().join(".shipit/bin");
    let installed = || fs::read_dir(&bin).map(|d| d.count()).unwrap_or(0);
    assert_eq!(installed(), 0, "this controller's shipit was sent there");

    // `check` says so too, for that host only.
    let agent = |run: &crate::Run| -> Vec<(bool, String)> {
        run.json()["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] == "agent")
            .map(|c| {
                assert!(c["host"].is_string(), "{c}");
                (
                    c["ok"].as_bool().unwrap(),
                    c["detail"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let run = w.shipit(&["check", "--json"]);
    run.code(2);
    let said = agent(&run);
    assert!(said[0].0, "{said:?}");
    assert!(!said[1].0, "{said:?}");
    assert!(
        said[1]
            .1
            .starts_with(&format!("FreeBSD amd64: this controller is {mine}")),
        "{said:?}"
    );

    // A shipit installed on its PATH, of this protocol: that one runs.
    copy_executable(SHIPIT.as_ref(), &shim.join("shipit"));
    let id = w.deploy_ok();
    assert_eq!(host.current(), Some(id));
    assert_eq!(
        installed(),
        0,
        "the controller's own shipit was installed there"
    );
    // And the read-only commands find it too.
    w.shipit(&["releases"]).code(0);
    let run = w.shipit(&["check", "--json"]);
    run.code(0);
    let said = agent(&run);
    assert!(
        said[1].1.contains("runs the shipit installed at"),
        "{said:?}"
    );

    // fleet.binary: a build for the hosts' platform, installed as ours.
    fs::remove_file(shim.join("shipit")).unwrap();
    copy_executable(
        SHIPIT.as_ref(),
        &w.path().join("controller/shipit-for-hosts"),
    );
    let text = fs::read_to_string(w.config())
        .unwrap()
        .replace("[fleet]\n", "[fleet]\nbinary = \"shipit-for-hosts\"\n");
    fs::write(w.config(), text).unwrap();
    w.commit("VERSION", "2\n");
    let second = w.deploy_ok();
    assert_eq!(host.current(), Some(second));
    assert!(
        host.deploy()
            .join(".shipit/bin")
            .read_dir()
            .unwrap()
            .count()
            == 1
    );
}

/// A rollout no longer asks a host's platform when this build is already
/// there (it was put there only once the platforms matched). A host whose
/// platform changed under it since (here: the installed binary made one
/// for another CPU, and `uname -sm` a shim that says so) cannot run it:
/// that answer is no state, and the rollout compares the platforms again
/// and refuses, naming both, with nothing switched.
#[test]
fn a_host_whose_platform_changed_under_an_installed_build_is_refused() {
    let w = World::new(2, Options::default());
    let first = w.deploy_ok();
    let host = &w.hosts.hosts[1];
    let bin = host.deploy().join(".shipit/bin");
    let installed: Vec<_> = fs::read_dir(&bin)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(installed.len(), 1, "{installed:?}");
    // ELF e_machine (offset 18) 0xb7: AArch64. Written beside it and
    // renamed over it, as an agent may still be exiting from it.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "cp \"$1\" \"$1.other\" && printf '\\267' | dd of=\"$1.other\" bs=1 seek=18 \
             conv=notrunc 2>/dev/null && mv \"$1.other\" \"$1\"",
        )
        .arg("sh")
        .arg(&installed[0])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    uname_says(host, "Linux aarch64");

    w.commit("VERSION", "2\n");
    let run = w.shipit(&["deploy"]);
    run.code(3);
    assert!(
        run.stderr.contains(&format!(
            "{} is Linux aarch64, this controller is",
            host.dest
        )),
        "{}",
        run.stderr
    );
    assert_eq!(w.currents(), vec![Some(first.clone()), Some(first)]);
}
