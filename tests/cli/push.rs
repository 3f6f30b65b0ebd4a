//! Push to deploy: real `git push` from a working clone into a bare
//! repository with the installed hook.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::sandbox::{Sandbox, git, kill};

struct Pushed {
    ok: bool,
    stderr: String,
}

impl Pushed {
    fn from(out: Output) -> Pushed {
        Pushed {
            ok: out.status.success(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `app/` (the working clone) pushes to `server.git`, which the config
/// deploys from.
fn server(sb: &Sandbox, extra: &str) -> PathBuf {
    let bare = sb.path().join("server.git");
    git(
        sb.path(),
        &["init", "-q", "--bare", "-b", "main", "server.git"],
    );
    git(
        &sb.repo(),
        &["remote", "add", "origin", bare.to_str().unwrap()],
    );
    git(&sb.repo(), &["push", "-q", "origin", "main"]);
    sb.write_raw_config(&format!(
        "deploy_to = \"deploy\"\n[source]\ngit = \"server.git\"\nbranch = \"main\"\n{extra}\n"
    ));
    bare
}

fn install(sb: &Sandbox, args: &[&str]) {
    let mut all = vec!["hook", "install", "--git-dir", "server.git"];
    all.extend_from_slice(args);
    sb.run(&all).ok().says("Installed");
}

fn push_command(sb: &Sandbox, args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    cmd.args([
        "-c",
        "user.name=Test",
        "-c",
        "user.email=test@example.invalid",
        "push",
    ])
    .args(args)
    .current_dir(sb.repo())
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .env("NO_COLOR", "1")
    .stdin(Stdio::null());
    cmd
}

fn push(sb: &Sandbox, args: &[&str]) -> Pushed {
    Pushed::from(push_command(sb, args).output().unwrap())
}

fn server_head(sb: &Sandbox, branch: &str) -> String {
    git(
        &sb.path().join("server.git"),
        &["rev-parse", &format!("refs/heads/{branch}")],
    )
}

#[test]
fn a_push_deploys_the_pushed_commit_and_shows_progress() {
    let sb = Sandbox::new();
    server(
        &sb,
        "[hooks]\nbuild = [\"env | grep '^GIT_' > git-env.txt; true\"]",
    );
    install(&sb, &[]);
    let sha = sb.commit("index.html", "v2\n");
    let pushed = push(&sb, &["origin", "main"]);
    assert!(pushed.ok, "{}", pushed.stderr);
    for line in ["remote:", "Received", "Exporting", "Swapping", "Deployed"] {
        assert!(
            pushed.stderr.contains(line),
            "no {line:?} in:\n{}",
            pushed.stderr
        );
    }
    assert!(
        pushed
            .stderr
            .lines()
            .any(|l| l.starts_with("remote:") && l.contains("Deployed"))
    );
    assert_eq!(sb.served(), "v2\n");
    let release = &sb.releases_json()["releases"][0];
    assert_eq!(release["revision"], sha.as_str());
    assert_eq!(release["branch"], "main");
    // The hook's GIT_DIR did not leak into the build.
    // (git runs the hook with GIT_DIR and friends set.)
    let seen = fs::read_to_string(sb.deploy_to().join("current/git-env.txt")).unwrap();
    assert_eq!(seen, "", "the build saw git's hook environment:\n{seen}");
}

#[test]
fn pushes_to_other_branches_and_deletions_deploy_nothing() {
    let sb = Sandbox::new();
    server(&sb, "");
    install(&sb, &[]);
    let first = {
        sb.commit("index.html", "v2\n");
        assert!(push(&sb, &["origin", "main"]).ok);
        sb.current().unwrap()
    };
    git(&sb.repo(), &["checkout", "-q", "-b", "feature"]);
    sb.commit("index.html", "feature\n");
    let pushed = push(&sb, &["origin", "feature"]);
    assert!(pushed.ok);
    assert!(
        pushed.stderr.contains("did not touch main"),
        "{}",
        pushed.stderr
    );
    assert_eq!(sb.releases().len(), 1);

    // Git refuses to delete a bare repository's HEAD branch unless told.
    git(
        &sb.path().join("server.git"),
        &["config", "receive.denyDeleteCurrent", "ignore"],
    );
    let pushed = push(&sb, &["origin", "--delete", "main"]);
    assert!(pushed.ok, "{}", pushed.stderr);
    assert!(
        pushed.stderr.contains("main was deleted"),
        "{}",
        pushed.stderr
    );
    assert_eq!(sb.current().unwrap(), first);
    assert_eq!(sb.releases().len(), 1);
}

#[test]
fn two_pushes_in_a_row_deploy_twice_in_order() {
    let sb = Sandbox::new();
    server(&sb, "");
    install(&sb, &[]);
    let a = sb.commit("index.html", "v2\n");
    assert!(push(&sb, &["origin", "main"]).ok);
    let b = sb.commit("index.html", "v3\n");
    assert!(push(&sb, &["origin", "main"]).ok);
    let json = sb.releases_json();
    let revisions: Vec<_> = json["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].clone())
        .collect();
    assert_eq!(revisions, [b.as_str(), a.as_str()]);
    assert_eq!(sb.served(), "v3\n");
}

#[test]
fn pre_receive_rejects_a_push_whose_deploy_fails() {
    let sb = Sandbox::new();
    server(
        &sb,
        "[hooks]\nbuild = [\"test ! -e broken || { echo 'broken build' >&2; exit 9; }\"]",
    );
    install(&sb, &["--mode", "pre-receive"]);
    let good = sb.commit("index.html", "v2\n");
    let pushed = push(&sb, &["origin", "main"]);
    assert!(pushed.ok, "{}", pushed.stderr);
    assert_eq!(sb.served(), "v2\n");
    assert_eq!(server_head(&sb, "main"), good);
    let live = sb.current().unwrap();

    sb.commit("broken", "");
    let pushed = push(&sb, &["origin", "main"]);
    assert!(!pushed.ok, "the push must be rejected:\n{}", pushed.stderr);
    assert!(
        pushed.stderr.contains("remote: ") && pushed.stderr.contains("broken build"),
        "{}",
        pushed.stderr
    );
    assert!(
        pushed.stderr.contains("pre-receive hook declined"),
        "{}",
        pushed.stderr
    );
    assert_eq!(server_head(&sb, "main"), good, "the branch must not move");
    assert_eq!(sb.current().unwrap(), live);

    // Fixed, the push goes through: the deploy read quarantined objects.
    sb.remove("broken");
    let fixed = git(&sb.repo(), &["rev-parse", "HEAD"]);
    let pushed = push(&sb, &["origin", "main"]);
    assert!(pushed.ok, "{}", pushed.stderr);
    assert_eq!(server_head(&sb, "main"), fixed);
    assert_eq!(
        sb.releases_json()["releases"][0]["revision"],
        fixed.as_str()
    );
}

#[test]
fn branch_names_with_shell_metacharacters_are_never_executed() {
    let sb = Sandbox::new();
    let hostile = "rel$(touch${IFS}pwned1);touch${IFS}pwned2;`touch${IFS}pwned3`";
    server(
        &sb,
        "[hooks]\nbuild = [\"printf %s \\\"$SHIPIT_BRANCH\\\" > branch.txt\"]\n",
    );
    // The deploy branch is given at install time, so it is written into
    // the hook script (quoted) as well as read from the push.
    install(&sb, &["--branch", hostile]);
    git(&sb.repo(), &["checkout", "-q", "-b", hostile]);
    sb.commit("index.html", "hostile\n");
    let pushed = push(&sb, &["origin", hostile]);
    assert!(pushed.ok, "{}", pushed.stderr);
    assert_eq!(sb.served(), "hostile\n");
    let recorded = fs::read_to_string(sb.deploy_to().join("current/branch.txt")).unwrap();
    assert_eq!(recorded, hostile);

    for other in [
        "x;touch${IFS}pwned4",
        "`touch${IFS}pwned5`",
        "$(touch${IFS}pwned6)",
    ] {
        git(&sb.repo(), &["checkout", "-q", "-b", other]);
        assert!(push(&sb, &["origin", other]).ok);
    }
    let found: Vec<_> = walkdir::WalkDir::new(sb.path())
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pwned"))
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(found.is_empty(), "a branch name was executed: {found:?}");
}

#[test]
fn install_is_idempotent_and_keeps_foreign_hooks_unless_forced() {
    let sb = Sandbox::new();
    let bare = server(&sb, "");
    install(&sb, &[]);
    install(&sb, &[]);
    let hook = bare.join("hooks/post-receive");
    fs::write(&hook, "#!/bin/sh\necho mine\n").unwrap();
    sb.run(&["hook", "install", "--git-dir", "server.git"])
        .code(2)
        .says("was not written by shipit")
        .says("--force");
    assert_eq!(fs::read_to_string(&hook).unwrap(), "#!/bin/sh\necho mine\n");
    sb.run(&["hook", "install", "--git-dir", "server.git", "--force"])
        .ok()
        .says("Saved");
    let backups: Vec<_> = crate::sandbox::dir_names(&bare.join("hooks"))
        .into_iter()
        .filter(|n| n.starts_with("post-receive.before-shipit-"))
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(
        fs::read_to_string(bare.join("hooks").join(&backups[0])).unwrap(),
        "#!/bin/sh\necho mine\n"
    );
    // Switching modes replaces shipit's other hook: one deploy per push.
    install(&sb, &["--mode", "pre-receive"]);
    assert!(!hook.exists());
    assert!(bare.join("hooks/pre-receive").exists());
    sb.run(&["hook", "install", "--git-dir", "nowhere"])
        .code(2)
        .says("not a git repository");
}

#[test]
fn a_push_during_a_deploy_waits_for_the_lock() {
    let sb = Sandbox::new();
    let (_, gate, started) = gated_server(&sb);
    install(&sb, &[]);
    let mut running = sb.spawn_deploy_holding_lock();
    // The running deploy has fetched (it builds): it deploys v1, not the push.
    crate::sandbox::wait_until("the deploy to build", Duration::from_secs(60), || {
        started.exists()
    });
    sb.commit("index.html", "pushed\n");
    let mut pushing = push_command(&sb, &["origin", "main"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(pushing.try_wait().unwrap().is_none(), "the push must wait");
    fs::write(&gate, "").unwrap();
    let deploy_ok = running.wait().unwrap().success();
    let pushed = Pushed::from(pushing.wait_with_output().unwrap());
    kill(running.id());
    assert!(deploy_ok);
    assert!(pushed.ok, "{}", pushed.stderr);
    assert_eq!(sb.releases().len(), 2);
    assert_eq!(sb.served(), "pushed\n");
}

/// Git's hook environment (GIT_DIR, a quarantine object directory, ...)
/// must not reach git commands aimed at the mirror.
#[test]
fn a_hook_environment_does_not_redirect_the_mirror() {
    let sb = Sandbox::new();
    let elsewhere = sb.path().join("elsewhere.git");
    git(sb.path(), &["init", "-q", "--bare", "elsewhere.git"]);
    let out = sb
        .command(&["deploy"])
        .env("GIT_DIR", &elsewhere)
        .env("GIT_OBJECT_DIRECTORY", elsewhere.join("objects/incoming-x"))
        .env("GIT_QUARANTINE_PATH", elsewhere.join("objects/incoming-x"))
        .output()
        .unwrap();
    crate::sandbox::succeeded(&out);
    assert_eq!(sb.served(), "v1\n");
}

/// Regression: `hook install` wrote into `hooks/` although git runs the
/// hooks of `core.hooksPath`, so pushes deployed nothing.
#[test]
fn hook_install_honours_core_hooks_path() {
    let sb = Sandbox::new();
    let bare = server(&sb, "");
    git(&bare, &["config", "core.hooksPath", "managed-hooks"]);
    install(&sb, &[]);
    assert!(bare.join("managed-hooks/post-receive").is_file());
    assert!(!bare.join("hooks/post-receive").exists());
    sb.commit("index.html", "v2\n");
    let pushed = push(&sb, &["origin", "main"]);
    assert!(pushed.ok, "{}", pushed.stderr);
    assert_eq!(sb.served(), "v2\n", "{}", pushed.stderr);
}

/// Pushes started in the background, their stderr collected as it comes;
/// any still running when this drops are killed by pid.
#[derive(Default)]
struct Pushes {
    running: Vec<(
        std::process::Child,
        std::sync::Arc<std::sync::Mutex<String>>,
    )>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Pushes {
    /// `git push <bare> <sha>:refs/heads/main` (by path, so that concurrent
    /// pushes from one clone do not race on a remote-tracking ref).
    fn start(&mut self, sb: &Sandbox, bare: &std::path::Path, sha: &str) -> usize {
        let mut child = push_command(
            sb,
            &[bare.to_str().unwrap(), &format!("{sha}:refs/heads/main")],
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = said.clone();
        self.readers.push(std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        }));
        self.running.push((child, said));
        self.running.len() - 1
    }

    fn said(&self, i: usize) -> String {
        self.running[i].1.lock().unwrap().clone()
    }

    /// Wait until push `i` has shown `needle` (its hook is running).
    fn wait_for(&self, i: usize, needle: &str) {
        crate::sandbox::wait_until(
            &format!("push {i} to say {needle:?}"),
            Duration::from_secs(60),
            || self.said(i).contains(needle),
        );
    }

    /// Wait for every push (bounded); each one's success and stderr.
    fn finish(mut self) -> Vec<Pushed> {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut codes = Vec::new();
        for (child, _) in &mut self.running {
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if std::time::Instant::now() > deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            codes.push(status.expect("a push did not finish within 2 minutes"));
        }
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        codes
            .into_iter()
            .enumerate()
            .map(|(i, status)| Pushed {
                ok: status.success(),
                stderr: self.said(i),
            })
            .collect()
    }
}

impl Drop for Pushes {
    fn drop(&mut self) {
        for (child, _) in &self.running {
            kill(child.id());
        }
    }
}

/// A server whose builds wait for `gate` to exist (bounded), after
/// touching `started`: a deploy can be held mid-build while pushes queue.
fn gated_server(sb: &Sandbox) -> (PathBuf, PathBuf, PathBuf) {
    let gate = sb.path().join("gate");
    let started = sb.path().join("started");
    let bare = server(
        sb,
        &format!(
            "[hooks]\nbuild = [\"touch '{}'; i=0; while [ ! -e '{}' ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done\"]",
            started.display(),
            gate.display()
        ),
    );
    (bare, gate, started)
}

fn revisions(sb: &Sandbox) -> Vec<String> {
    sb.releases_json()["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_str().unwrap().to_string())
        .collect()
}

/// Regression: pushes A, B, C queued on the lock deployed in whatever order
/// their hooks got it, and A or B could end up live with the branch at C.
/// Under the lock, each hook deploys the branch's tip, or nothing when it
/// is live already.
#[test]
fn queued_pushes_deploy_the_branch_tip_and_skip_superseded_ones() {
    let sb = Sandbox::new();
    let (bare, gate, started) = gated_server(&sb);
    install(&sb, &[]);
    let mut pushes = Pushes::default();
    let a = sb.commit("index.html", "A\n");
    pushes.start(&sb, &bare, &a);
    crate::sandbox::wait_until("A's deploy to build", Duration::from_secs(60), || {
        started.exists()
    });
    let b = sb.commit("index.html", "B\n");
    let c = sb.commit("index.html", "C\n");
    // B and C land on the branch (post-receive runs after the ref moved)
    // and their hooks queue behind A's deploy.
    let pb = pushes.start(&sb, &bare, &b);
    pushes.wait_for(pb, "Received");
    let pc = pushes.start(&sb, &bare, &c);
    pushes.wait_for(pc, "Received");
    fs::write(&gate, "").unwrap();
    let done = pushes.finish();
    for pushed in &done {
        assert!(pushed.ok, "{}", pushed.stderr);
    }
    assert_eq!(server_head(&sb, "main"), c);
    assert_eq!(sb.served(), "C\n");
    assert_eq!(
        revisions(&sb),
        [c.clone(), a.clone()],
        "B must never be deployed"
    );
    let later: String = done[1..].iter().map(|p| p.stderr.as_str()).collect();
    assert!(later.contains("is live already"), "{later}");
}

/// Regression: with two concurrent pre-receive pushes on the same old
/// value, the second deployed after the first and git then rejected it
/// ("failed to update ref"), leaving live a revision on no branch. Now the
/// second push is refused before its deploy, and the first stays live.
#[test]
fn concurrent_pre_receive_pushes_never_leave_a_rejected_revision_live() {
    let sb = Sandbox::new();
    let (bare, gate, started) = gated_server(&sb);
    install(&sb, &["--mode", "pre-receive"]);
    let base = server_head(&sb, "main");
    let a = sb.commit("index.html", "A\n");
    git(&sb.repo(), &["checkout", "-q", "-b", "other", &base]);
    let b = sb.commit("index.html", "B\n");
    let mut pushes = Pushes::default();
    pushes.start(&sb, &bare, &a);
    crate::sandbox::wait_until("A's deploy to build", Duration::from_secs(60), || {
        started.exists()
    });
    // B's hook runs (so git has checked B against main at base) and
    // queues behind A's deploy.
    let pb = pushes.start(&sb, &bare, &b);
    pushes.wait_for(pb, "Received");
    fs::write(&gate, "").unwrap();
    let done = pushes.finish();
    assert!(done[0].ok, "{}", done[0].stderr);
    assert!(!done[1].ok, "B must be rejected:\n{}", done[1].stderr);
    assert!(
        done[1].stderr.contains("moved to") && done[1].stderr.contains("push again"),
        "{}",
        done[1].stderr
    );
    assert_eq!(server_head(&sb, "main"), a);
    assert_eq!(sb.served(), "A\n", "the live release must be the branch's");
    assert_eq!(revisions(&sb), [a]);
}

/// Regression: when git refused to read the repository (another user's,
/// "dubious ownership"), `hook install` fell back to `hooks/` without a
/// word, where git might never run it.
#[test]
fn hook_install_says_so_when_git_cannot_read_the_repository() {
    if !crate::sandbox::root_or_say_skipped(
        "hook_install_says_so_when_git_cannot_read_the_repository",
    ) {
        return;
    }
    let sb = Sandbox::new();
    let repo = sb.path().join("theirs.git");
    git(sb.path(), &["init", "-q", "--bare", "theirs.git"]);
    let chown = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(chown.success());
    let run = sb.run(&["hook", "install", "--git-dir", repo.to_str().unwrap()]);
    run.code(2).says("git cannot read").says("safe.directory");
    assert!(!repo.join("hooks/post-receive").exists());
}

/// A hook that names `target/debug/shipit` breaks at the next `cargo
/// clean`: installing it from a build directory warns, and names the fix;
/// an installed copy does not.
#[test]
fn hook_install_warns_when_the_binary_lives_in_a_build_directory() {
    let sb = Sandbox::new();
    server(&sb, "");
    sb.run(&["hook", "install", "--git-dir", "server.git"])
        .ok()
        .says("inside the cargo build directory")
        .says("cargo install --path .");
    let bin = sb.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let installed = bin.join("shipit");
    crate::support::exec::copy_executable(Path::new(crate::sandbox::SHIPIT), &installed);
    let args = ["hook", "install", "--git-dir", "server.git"];
    let out = sb
        .command_with(installed.to_str().unwrap(), &args)
        .output()
        .unwrap();
    let run = crate::sandbox::Run::from(&args, out);
    run.ok();
    assert!(!run.stderr.contains("build directory"), "{}", run.stderr);
    let hook = fs::read_to_string(sb.path().join("server.git/hooks/post-receive")).unwrap();
    assert!(hook.contains(installed.to_str().unwrap()), "{hook}");
}
