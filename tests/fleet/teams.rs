//! A fleet used by a team (issue #22): hosts whose login scripts print,
//! read-only commands run from other checkouts during a rollout, agents of
//! another protocol version.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::exec::write_executable;
use crate::{Options, SHIPIT, Stopped, World, outcomes};

/// Wait (bounded) until `path` exists; panic with what `child` said if it
/// ends first.
pub fn wait_for(path: &Path, child: &mut std::process::Child, said: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            panic!(
                "{} never appeared:\n{}",
                path.display(),
                fs::read_to_string(said).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait (bounded) for `child` to exit; its exit code.
pub fn wait_exit(child: &mut std::process::Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "shipit did not end within 300 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl World {
    /// `shipit <args>` with `config`, in the background; its output goes
    /// to `<name>.out` and `<name>.err` in the world's root.
    pub fn spawn(&self, config: &Path, args: &[&str], name: &str) -> Stopped {
        let out = fs::File::create(self.path().join(format!("{name}.out"))).unwrap();
        let err = fs::File::create(self.path().join(format!("{name}.err"))).unwrap();
        Stopped(
            Command::new(SHIPIT)
                .arg("--config")
                .arg(config)
                .args(args)
                .current_dir(self.path())
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap(),
        )
    }

    /// A drain hook that, for host2, says `paused` and waits for `go`
    /// (bounded), while `PAUSE` exists in the world's root.
    pub fn pausing_drain(&self) -> String {
        let root = self.path().display().to_string();
        let h2 = &self.hosts.hosts[1].dest;
        format!(
            "if [ \"$SHIPIT_HOST\" = '{h2}' ] && [ -e {root}/PAUSE ]; then touch {root}/paused; \
             i=0; while [ ! -e {root}/go ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; fi"
        )
    }

    /// A teammate's checkout: the same fleet, with a reload hook of their
    /// own that leaves `teammate-hook-ran` in each host's shared/.
    pub fn teammate_config(&self) -> PathBuf {
        let dir = self.path().join("teammate");
        fs::create_dir_all(&dir).unwrap();
        let text = fs::read_to_string(self.config()).unwrap().replace(
            "reload = \"",
            "reload = \"touch \\\"$SHIPIT_DEPLOY_TO/shared/teammate-hook-ran\\\"; ",
        );
        assert!(text.contains("teammate-hook-ran"));
        let path = dir.join("shipit.toml");
        fs::write(&path, text).unwrap();
        path
    }
}

/// A `.bashrc` that echoes (common, and harmless for plain `ssh host cmd`)
/// used to make the host "unreachable … caused by: exit status 0": the
/// controller required its stdout to be exactly `present` or `missing`.
#[test]
fn a_host_whose_bashrc_prints_a_line_deploys() {
    let w = World::new(2, Options::default());
    fs::write(
        w.hosts.hosts[1].home().join(".bashrc"),
        "echo 'Welcome to host2, have a nice day'\n",
    )
    .unwrap();
    let id = w.deploy_ok();
    let status = w.shipit(&["status", "--json"]);
    status.code(0);
    let releases = w.shipit(&["releases", "--json"]);
    releases.code(0);
    assert_eq!(releases.json()["live"], id.as_str());
}

/// An agent that answers in another protocol version is named, with both
/// versions, instead of being misread.
#[test]
fn an_agent_of_another_protocol_version_is_named() {
    let w = World::new(1, Options::default());
    w.deploy_ok();
    let bin_dir = w.hosts.hosts[0].deploy().join(".shipit/bin");
    let bin = fs::read_dir(&bin_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::remove_file(&bin).unwrap();
    write_executable(
        &bin,
        "#!/bin/sh\necho '@@shipit-fleet/999 {\"live\":null}'\n",
    );
    let run = w.shipit(&["deploy"]);
    run.code(3);
    assert!(
        run.stderr
            .contains("speaks fleet protocol version 999; this controller speaks version 1"),
        "{}",
        run.stderr
    );
    let status = w.shipit(&["status"]);
    assert_ne!(status.code, 0);
    assert!(
        status.stdout.contains("version 999"),
        "{}\n{}",
        status.stdout,
        status.stderr
    );
}

/// `status` and `releases` write nothing on a host: on hosts shipit never
/// reached they install nothing and say so.
#[test]
fn read_only_commands_install_nothing() {
    let w = World::new(2, Options::default());
    for args in [["status", "--json"], ["releases", "--json"]] {
        let run = w.shipit(&args);
        assert_ne!(run.code, 0);
        let json = run.json();
        for host in json["hosts"].as_array().unwrap() {
            assert_eq!(host["reachable"], false, "{host}");
            assert!(
                host["error"]
                    .as_str()
                    .unwrap()
                    .contains("no shipit agent of this build is installed there"),
                "{host}"
            );
        }
    }
    for h in &w.hosts.hosts {
        assert!(
            !h.deploy().join(".shipit").exists(),
            "{}: a read-only command wrote on the host",
            h.name()
        );
    }
}

/// A teammate's `status` from another checkout during a rollout must not
/// change which reload hook the rollout's next host runs (it used to
/// rewrite every host's config from the teammate's shipit.toml), and a
/// host config replaced under a rollout's feet does not reach it either:
/// the rollout pins its config by digest.
#[test]
fn a_rollout_runs_its_own_config_whatever_another_checkout_does() {
    let w = World::new(3, Options::default());
    let drain = w.pausing_drain();
    w.write_config(&Options {
        drain: Some(&drain),
        ..Options::default()
    });
    let good = w.deploy_ok();
    let teammate = w.teammate_config();
    let configs: Vec<Vec<u8>> = w
        .hosts
        .hosts
        .iter()
        .map(|h| fs::read(h.deploy().join(".shipit/fleet.toml")).unwrap())
        .collect();
    w.commit("VERSION", "2\n");
    fs::write(w.path().join("PAUSE"), "").unwrap();
    let mut child = w.spawn(&w.config(), &["deploy", "--json"], "deploy");
    wait_for(
        &w.path().join("paused"),
        &mut child.0,
        &w.path().join("deploy.err"),
    );
    // The teammate looks at the fleet mid-rollout.
    let mut all = vec!["--config", teammate.to_str().unwrap()];
    all.extend(["status", "--json"]);
    let status = Command::new(SHIPIT)
        .args(&all)
        .current_dir(w.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let after: Vec<Vec<u8>> = w
        .hosts
        .hosts
        .iter()
        .map(|h| fs::read(h.deploy().join(".shipit/fleet.toml")).unwrap())
        .collect();
    assert!(after == configs, "`status` rewrote a host's config");
    // And someone replaces host3's copy by hand: the rollout's own config
    // still decides what host3 runs.
    let mut text = String::from_utf8(configs[2].clone()).unwrap();
    // The host config is written by a TOML serializer: literal strings.
    text = text.replace(
        "reload = '",
        "reload = 'touch \"$SHIPIT_DEPLOY_TO/shared/teammate-hook-ran\"; ",
    );
    assert!(text.contains("teammate-hook-ran"), "{text}");
    fs::write(w.hosts.hosts[2].deploy().join(".shipit/fleet.toml"), text).unwrap();
    fs::write(w.path().join("go"), "").unwrap();
    let code = wait_exit(&mut child.0);
    let said = fs::read_to_string(w.path().join("deploy.err")).unwrap();
    assert_eq!(code, Some(0), "{said}");
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(w.path().join("deploy.out")).unwrap()).unwrap();
    assert_eq!(outcomes(&json), ["switched"; 3]);
    let id = json["release"].as_str().unwrap().to_string();
    assert_ne!(id, good);
    assert_eq!(w.currents(), vec![Some(id.clone()); 3]);
    for h in &w.hosts.hosts {
        assert!(
            !h.deploy().join("shared/teammate-hook-ran").exists(),
            "{} ran a reload hook that is not its rollout's",
            h.name()
        );
    }
}
