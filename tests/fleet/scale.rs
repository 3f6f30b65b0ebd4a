//! What a rollout costs each host, in remote commands: each one is a
//! session on the host's sshd and a run of the login user's shell start-up
//! (a `.bashrc` that starts pyenv or nvm adds its time to every one), so
//! their number per host is what a large fleet pays for.

use std::fs;

use crate::support::exec::write_executable;
use crate::{Options, World};

/// A `.bashrc` that logs each remote command it starts, on every host.
fn log_remote_commands(w: &World) {
    for host in &w.hosts.hosts {
        fs::write(
            host.home().join(".bashrc"),
            "printf '%s\\n' \"$(printf '%s' \"$BASH_EXECUTION_STRING\" | tr '\\n' ' ')\" >> \"$HOME/remote-commands\"\n",
        )
        .unwrap();
    }
}

fn remote_commands(w: &World) -> Vec<Vec<String>> {
    w.hosts
        .hosts
        .iter()
        .map(|h| {
            fs::read_to_string(h.home().join("remote-commands"))
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect()
        })
        .collect()
}

/// A rollout to hosts that have this build ran five remote commands on
/// each (the config and install check, the fleet lock, the state, the
/// release, the switch), and took the locks one host after the other;
/// then three (the first three were one). Now the agent that holds the
/// fleet lock receives the release and makes the switch on that same
/// session: one remote command per host, the hosts contacted
/// `fleet.concurrency` at a time.
#[test]
fn a_rollout_runs_one_remote_command_per_host() {
    let w = World::new(3, Options::default());
    let mut config = fs::read_to_string(w.config()).unwrap();
    // Fewer than the hosts: they are reached in two rounds.
    config.push_str("concurrency = 2\n");
    fs::write(w.config(), config).unwrap();
    let first = w.deploy_ok();
    log_remote_commands(&w);
    // A changed config: the one command hands it to the agent, which pins
    // it before anything reads it.
    let config = fs::read_to_string(w.config()).unwrap();
    assert!(config.contains("keep_releases = 10\n"), "{config}");
    fs::write(
        w.config(),
        config.replace("keep_releases = 10\n", "keep_releases = 9\n"),
    )
    .unwrap();
    w.commit("VERSION", "2\n");
    let id = w.deploy_ok();
    for host in &w.hosts.hosts {
        let pinned: Vec<String> = fs::read_dir(host.deploy().join(".shipit/config"))
            .unwrap()
            .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        assert!(
            pinned.iter().any(|text| text.contains("keep_releases = 9")),
            "{}: {pinned:?}",
            host.name()
        );
    }
    for (host, commands) in w.hosts.hosts.iter().zip(remote_commands(&w)) {
        assert_eq!(
            commands.len(),
            1,
            "{}: {id}: {}",
            host.name(),
            commands.join("\n")
        );
        // One command: the config, the install check, the lock, the state,
        // then the requests on its stdin; the login shell checks for the
        // binary itself and becomes the agent, with no `sh` between them.
        assert!(
            commands[0].starts_with("[ -x '")
                && commands[0].contains("; exec '")
                && commands[0].ends_with("' '--state'"),
            "{}",
            commands[0]
        );
        assert!(!commands[0].contains("'sh' '-c'"), "{}", commands[0]);
    }
    // A fleet rollback's switch is asked the same way: one more each.
    w.shipit(&["rollback"]).code(0);
    assert_eq!(w.currents(), vec![Some(first); 3]);
    for (host, commands) in w.hosts.hosts.iter().zip(remote_commands(&w)) {
        assert_eq!(
            commands.len(),
            2,
            "{}: {}",
            host.name(),
            commands.join("\n")
        );
    }
}

/// The connections each host's sshd accepted so far (its log).
fn accepted(w: &World) -> Vec<usize> {
    w.hosts
        .hosts
        .iter()
        .map(|h| {
            fs::read_to_string(h.dir.join("sshd.log"))
                .unwrap_or_default()
                .matches("Accepted publickey")
                .count()
        })
        .collect()
}

/// A command within `fleet.ssh_persist` of the last one reuses its master
/// connections: the key exchange, most of what reaching a host costs, is
/// paid once. With `"0s"` every command opens its own.
#[test]
fn a_command_soon_after_another_reuses_its_ssh_connections() {
    let w = World::new(3, Options::default());
    w.deploy_ok();
    let before = accepted(&w);
    assert!(before.iter().all(|n| *n >= 1), "{before:?}");
    w.commit("VERSION", "2\n");
    w.deploy_ok();
    w.shipit(&["status"]).ok();
    assert_eq!(accepted(&w), before, "no new connection within ssh_persist");

    let mut config = fs::read_to_string(w.config()).unwrap();
    config.push_str("ssh_persist = \"0s\"\n");
    fs::write(w.config(), config).unwrap();
    w.commit("VERSION", "3\n");
    w.deploy_ok();
    let after: Vec<usize> = accepted(&w);
    for ((host, was), now) in w.hosts.hosts.iter().zip(&before).zip(&after) {
        assert!(now > was, "{}: {was} then {now} connections", host.name());
    }
}

/// With a host's master connection up, a remote command is asked of the
/// master over its control socket: no `ssh` process is started for it (one
/// costs the controller about 6 ms of CPU, per host and remote command).
/// An `ssh` first on the controller's PATH logs every start here.
#[test]
fn remote_commands_on_a_master_connection_start_no_ssh() {
    let w = World::new(3, Options::default());
    let first = w.deploy_ok();
    let shim = w.path().join("shim");
    fs::create_dir_all(&shim).unwrap();
    let log = w.path().join("ssh-starts");
    let ssh = crate::support::hosts::which("ssh").expect("ssh is installed");
    write_executable(
        &shim.join("ssh"),
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            ssh.display()
        ),
    );
    w.commit("VERSION", "2\n");
    w.shipit_with(&["deploy"], &[], Some(&shim)).code(0);
    w.shipit_with(&["status"], &[], Some(&shim)).code(0);
    let started = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(started, "", "ssh was started for remote commands");
    let live = w.currents();
    assert!(live[0].is_some() && live[0] != Some(first), "{live:?}");
    assert_eq!(live, vec![live[0].clone(); 3]);
}

/// A session asked of the master gets the environment the master's own
/// config sends (`SendEnv`), as one through `ssh` did: the controller
/// offers it all, the master keeps what `SendEnv` names, the host's sshd
/// what `AcceptEnv` allows. Here `SHIPIT_TEST_SENT` is named and
/// `SHIPIT_TEST_UNSENT` is not; the second rollout reuses the masters the
/// first opened, with a new value.
#[test]
fn a_session_on_a_master_gets_the_environment_its_config_sends() {
    let w = World::new(1, Options::default());
    let text = fs::read_to_string(w.config()).unwrap().replace(
        "ssh_options = [",
        "ssh_options = [\"-o\", \"SendEnv=SHIPIT_TEST_SENT\", ",
    );
    fs::write(w.config(), text).unwrap();
    let host = &w.hosts.hosts[0];
    fs::write(
        host.home().join(".bashrc"),
        "printf '%s %s\\n' \"${SHIPIT_TEST_SENT:-unset}\" \"${SHIPIT_TEST_UNSENT:-unset}\" \
         >> \"$HOME/env-seen\"\n",
    )
    .unwrap();
    let deploy = |sent: &str| {
        w.shipit_with(
            &["deploy"],
            &[("SHIPIT_TEST_SENT", sent), ("SHIPIT_TEST_UNSENT", "no")],
            None,
        )
        .code(0);
    };
    deploy("first");
    fs::remove_file(host.home().join("env-seen")).unwrap();
    w.commit("VERSION", "2\n");
    deploy("second");
    let seen = fs::read_to_string(host.home().join("env-seen")).unwrap();
    assert!(!seen.is_empty());
    for line in seen.lines() {
        assert_eq!(line, "second unset", "{seen}");
    }
}
