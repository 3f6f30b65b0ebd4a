//! The Ansible example (`examples/fleet/ansible/deploy.yml`) against the
//! same three sshd hosts: `serial: 1`, one revision resolved once, each
//! host drained, deployed by its own shipit, undrained, in order; a host
//! that fails stops the play after rolling itself back, and the host before
//! it stays on the new release (what the example says it cannot undo).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::git::git;
use crate::support::hosts::{MANIFEST, which};
use crate::{Options, SHIPIT, World};

fn ansible_playbook() -> PathBuf {
    let local = PathBuf::from(MANIFEST).join("target/ansible/bin/ansible-playbook");
    Some(local)
        .filter(|p| p.exists())
        .or_else(|| which("ansible-playbook"))
        .unwrap_or_else(|| {
            panic!(
                "the Ansible example's test needs ansible-playbook, which is missing: \
                 python3 -m venv target/ansible && target/ansible/bin/pip install \
                 'ansible-core>=2.16,<2.18' (.ci/run does this)"
            )
        })
}

/// The system's python3 (`/usr/bin/python3`), else the one on PATH,
/// resolved: a pyenv shim would need its own environment on the hosts, and
/// each host has a home directory of its own, which hides one under the
/// user's home.
fn python() -> String {
    if Path::new("/usr/bin/python3").exists() {
        return "/usr/bin/python3".into();
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs Ansible's modules on the hosts: apt-get install python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn revision_of(w: &World, host: usize) -> Option<String> {
    let h = &w.hosts.hosts[host];
    let id = h.current()?;
    let text = fs::read_to_string(
        h.deploy()
            .join("releases")
            .join(id)
            .join(".shipit-release.json"),
    )
    .ok()?;
    let meta: serde_json::Value = serde_json::from_str(&text).ok()?;
    meta["revision"].as_str().map(String::from)
}

#[test]
fn ansible_serial_one_deploys_host_by_host_with_one_revision() {
    let playbook = ansible_playbook();
    let w = World::new(3, Options::default());
    let root = w.path().to_path_buf();
    let app = root.join("app");
    // A single-host config for every host: the controller's, without
    // [fleet], fetching the repository itself.
    let text = fs::read_to_string(w.config()).unwrap();
    let single = text.split("[fleet]").next().unwrap().replace(
        "git = \"../app\"",
        &format!("git = {:?}", app.display().to_string()),
    );
    fs::write(root.join("host.toml"), single).unwrap();
    let keys = root.join("keys");
    let mut inventory = String::from("[app]\n");
    for h in &w.hosts.hosts {
        inventory.push_str(&format!(
            "{} ansible_host=127.0.0.1 ansible_port={}\n",
            h.name(),
            h.port
        ));
    }
    let user = w.hosts.hosts[0]
        .dest
        .trim_start_matches("ssh://")
        .split('@')
        .next()
        .unwrap()
        .to_string();
    inventory.push_str(&format!(
        "[app:vars]\nansible_user={user}\nansible_ssh_private_key_file={k}/client\n\
         ansible_ssh_common_args='-F /dev/null -o UserKnownHostsFile={k}/known_hosts -o StrictHostKeyChecking=yes'\n\
         ansible_python_interpreter={py}\n",
        k = keys.display(),
        py = python()
    ));
    fs::write(root.join("inventory.ini"), inventory).unwrap();
    let log = root.join("drain.log");
    let vars = json!({
        "shipit_bin": SHIPIT,
        "shipit_config": root.join("host.toml"),
        "repo": app,
        "deploy_to": w.hosts.deploy_to,
        "drain_command": format!("sh -c 'echo drain $SHIPIT_HOST >> {}'", log.display()),
        "undrain_command": format!("sh -c 'echo undrain $SHIPIT_HOST >> {}'", log.display()),
    });
    let play = || {
        let out = Command::new(&playbook)
            .arg("-i")
            .arg(root.join("inventory.ini"))
            .arg(PathBuf::from(MANIFEST).join("examples/fleet/ansible/deploy.yml"))
            .arg("-e")
            .arg(vars.to_string())
            .env("ANSIBLE_HOME", root.join("ansible-home"))
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", root.join("cp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_PIPELINING", "true")
            .env("ANSIBLE_LOCALHOST_WARNING", "false")
            .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "false")
            .env("NO_COLOR", "1")
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .expect("ansible-playbook runs");
        (
            out.status.success(),
            format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };

    let (ok, said) = play();
    assert!(ok, "the play failed:\n{said}");
    let sha = git(&app, &["rev-parse", "HEAD"]);
    for i in 0..3 {
        assert_eq!(revision_of(&w, i).as_deref(), Some(sha.as_str()), "{said}");
    }
    assert!(w.serving().iter().all(Option::is_some), "{said}");
    let names: Vec<String> = w.hosts.hosts.iter().map(|h| h.name()).collect();
    let expected: Vec<String> = names
        .iter()
        .flat_map(|n| [format!("drain {n}"), format!("undrain {n}")])
        .collect();
    let order = fs::read_to_string(&log).unwrap();
    assert_eq!(order.lines().collect::<Vec<_>>(), expected, "{said}");

    // A release that fails on host2 stops the play there: host2 rolled
    // itself back, host3 is untouched, and host1 stays on the new release.
    let bad = w.commit("BROKEN_ON", "host2\n");
    let (ok, said) = play();
    assert!(!ok, "the play should have failed:\n{said}");
    assert_eq!(revision_of(&w, 0).as_deref(), Some(bad.as_str()), "{said}");
    assert_eq!(revision_of(&w, 1).as_deref(), Some(sha.as_str()), "{said}");
    assert_eq!(revision_of(&w, 2).as_deref(), Some(sha.as_str()), "{said}");
    // host2 rolled itself back (exit 4), so it went back into rotation.
    let order = fs::read_to_string(&log).unwrap();
    let tail: Vec<&str> = order.lines().rev().take(2).collect();
    assert_eq!(
        tail,
        [
            format!("undrain {}", names[1]),
            format!("drain {}", names[1])
        ],
        "{said}"
    );
}
