//! Sources other than a repository's root, in a fleet: the
//! controller unpacks a CI artifact, or exports a subdirectory, and ships
//! the tree as it ships any build; the hosts need no unpacker.

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::git::git;
use crate::{Options, Run, SHIPIT, World};

/// `shipit --config <controller> args` with `input` on stdin.
fn shipit_with_stdin(w: &World, args: &[&str], input: &[u8]) -> Run {
    let config = w.config();
    let mut all = vec!["--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut child = Command::new(SHIPIT)
        .args(&all)
        .current_dir(w.path())
        .env("XDG_RUNTIME_DIR", w.hosts.runtime_dir())
        .env("NO_COLOR", "1")
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shipit runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run::from(args, out)
}

fn revision_on(w: &World, host: usize, id: &str) -> Option<String> {
    let meta = w.hosts.hosts[host]
        .deploy()
        .join("releases")
        .join(id)
        .join(".shipit-release.json");
    let meta: serde_json::Value = serde_json::from_str(&fs::read_to_string(meta).ok()?).ok()?;
    meta["revision"].as_str().map(String::from)
}

#[test]
fn an_artifact_from_stdin_rolls_out_to_every_host() {
    let w = World::new(2, Options::default());
    // What CI would upload: the app's files, packed.
    let app = w.path().join("app");
    let out = Command::new("tar")
        .args(["-czf", "-", "--exclude=.git", "-C"])
        .arg(&app)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success());
    let artifact = out.stdout;
    let run = shipit_with_stdin(&w, &["deploy", "--json", "--archive", "-"], &artifact);
    run.code(0);
    let id = run.json()["release"].as_str().unwrap().to_string();
    assert_eq!(w.currents(), vec![Some(id.clone()); 2]);
    assert_eq!(w.serving(), vec![Some(id.clone()); 2]);
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(&artifact)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for host in 0..2 {
        assert_eq!(revision_on(&w, host, &id), Some(digest.clone()));
    }
}

#[test]
fn a_subdirectory_rolls_out_to_every_host() {
    let w = World::new(2, Options::default());
    // The app moves into apps/web of a monorepo.
    let app = w.path().join("app");
    fs::create_dir_all(app.join("apps/web")).unwrap();
    for name in git(&app, &["ls-tree", "--name-only", "HEAD"]).lines() {
        git(&app, &["mv", name, "apps/web/"]);
    }
    fs::write(app.join("README"), "monorepo\n").unwrap();
    git(&app, &["add", "-A"]);
    git(&app, &["commit", "-q", "-m", "monorepo"]);
    let config = fs::read_to_string(w.config()).unwrap();
    fs::write(
        w.config(),
        config.replace(
            "git = \"../app\"",
            "git = \"../app\"\nsubdir = \"apps/web\"",
        ),
    )
    .unwrap();
    let id = w.deploy_ok();
    assert_eq!(w.serving(), vec![Some(id.clone()); 2]);
    let release = w.hosts.hosts[0].deploy().join("releases").join(&id);
    assert!(
        release.join("VERSION").is_file(),
        "the subdir is the release root"
    );
    assert!(!release.join("README").exists());
}

/// A host measures the release it received, as a single host measures the
/// one it built: `releases` on the host shows its size.
#[test]
fn each_host_measures_what_its_release_costs_on_disk() {
    let w = World::new(2, Options::default());
    let id = w.deploy_ok();
    for host in &w.hosts.hosts {
        let meta = host
            .deploy()
            .join("releases")
            .join(&id)
            .join(".shipit-release.json");
        let meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
        let size = meta["disk"]["size_bytes"].as_u64();
        assert!(size.is_some_and(|s| s > 0), "{meta}");
        assert!(meta["disk"]["unshared_bytes"].as_u64().is_some(), "{meta}");
    }
}
