//! Push to deploy: install the git hook, and run it (SPEC §6).
//!
//! The hook reads `<old> <new> <ref>` lines and deploys the pushed revision
//! of one branch, once; other refs and deletions deploy nothing. In
//! post-receive mode the push has already landed and the deploy goes through
//! the usual mirror (with git's hook variables removed). In pre-receive mode
//! the deploy runs before git updates the ref and reads the pushed objects
//! from quarantine through the hook's own environment; a failed deploy makes
//! the hook fail, which rejects the push.
//!
//! The installed script is a template with shell-quoted values: paths and
//! branch names never reach the shell unquoted.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::context::Ctx;
use crate::deploy::{self, Outcome, Request};
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::store;

const TEMPLATE: &str = include_str!("../templates/git-hook.sh");
const MARKER: &str = "# shipit-hook:";
/// Most stdin a hook will read (a push of thousands of refs is far less).
const STDIN_LIMIT: u64 = 1024 * 1024;

/// When a push deploys (`hook install --mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Deploy after the push has landed (the push succeeds either way)
    PostReceive,
    /// Deploy before the push lands; a failed deploy rejects the push
    PreReceive,
}

impl Mode {
    pub fn hook_name(self) -> &'static str {
        match self {
            Mode::PostReceive => "post-receive",
            Mode::PreReceive => "pre-receive",
        }
    }

    fn other(self) -> Mode {
        match self {
            Mode::PostReceive => Mode::PreReceive,
            Mode::PreReceive => Mode::PostReceive,
        }
    }
}

/// What a push did to the deploy branch.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Deploy { old: String, new: String },
    Deleted,
    Untouched,
}

fn is_zero(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// Read git's `<old> <new> <ref>` lines for `branch`.
pub fn parse(input: &str, branch: &str) -> Push {
    let wanted = format!("refs/heads/{branch}");
    let mut result = Push::Untouched;
    for line in input.lines() {
        let mut parts = line.split_whitespace();
        let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if name != wanted {
            continue;
        }
        result = if is_zero(new) {
            Push::Deleted
        } else {
            Push::Deploy {
                old: old.to_string(),
                new: new.to_string(),
            }
        };
    }
    result
}

/// Quote `text` for a POSIX shell: single quotes, with `'` as `'\''`.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The hook script for these values.
pub fn render(mode: Mode, shipit: &Path, config: &Path, branch: Option<&str>) -> String {
    let branch = branch
        .map(|b| format!(" --branch {}", shell_quote(b)))
        .unwrap_or_default();
    crate::placeholders::fill(
        TEMPLATE,
        &[
            ("MODE", mode.hook_name()),
            ("SHIPIT", &shell_quote(&shipit.display().to_string())),
            ("CONFIG", &shell_quote(&config.display().to_string())),
            ("BRANCH", &branch),
        ],
    )
}

pub struct Installed {
    pub path: PathBuf,
    pub backup: Option<PathBuf>,
    pub removed_other: Option<PathBuf>,
    /// The binary the hook runs.
    pub shipit: PathBuf,
}

/// The hooks directory git runs for a bare or non-bare repository: the
/// one `core.hooksPath` names (in the repository's or the system's
/// config), else `hooks/` in the git directory.
fn hooks_dir(git_dir: &Path) -> Result<PathBuf> {
    let default = if git_dir.join("HEAD").is_file() {
        git_dir.join("hooks")
    } else if git_dir.join(".git/HEAD").is_file() {
        git_dir.join(".git/hooks")
    } else {
        return Err(
            Error::usage(format!("{} is not a git repository", git_dir.display())).hint(
                "pass the repository that receives the pushes, e.g. --git-dir /srv/git/myapp.git",
            ),
        );
    };
    // git itself resolves core.hooksPath (relative to where hooks run).
    let mut git = std::process::Command::new("git");
    git.args(["rev-parse", "--git-path", "hooks"])
        .current_dir(git_dir)
        .stdin(std::process::Stdio::null());
    crate::procs::without_git_env(&mut git);
    match git.output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Ok(if text.is_empty() {
                default
            } else {
                git_dir.join(text)
            })
        }
        // Installing where git does not look would be a silent no-op: the
        // pushes would deploy nothing. Say what git said instead.
        Ok(out) => Err(Error::usage(format!(
            "git cannot read {} to find its hooks directory",
            git_dir.display()
        ))
        .cause(String::from_utf8_lossy(&out.stderr).trim())
        .hint(format!(
            "run `shipit hook install` as the repository's owner, or fix what git says \
             (e.g. `git config --global --add safe.directory {}`); the hook would go to {}",
            git_dir.display(),
            default.display()
        ))),
        Err(e) => Err(Error::internal("could not run git")
            .cause(e)
            .hint("install git")),
    }
}

fn is_ours(path: &Path) -> bool {
    fs::read_to_string(path).is_ok_and(|t| t.contains(MARKER))
}

pub fn install(
    git_dir: &Path,
    mode: Mode,
    config: &Path,
    branch: Option<&str>,
    force: bool,
) -> Result<Installed> {
    if let Some(b) = branch {
        crate::gitref::check_ref(b)?;
    }
    let hooks = hooks_dir(git_dir)?;
    let path = hooks.join(mode.hook_name());
    let mut backup = None;
    if path.exists() && !is_ours(&path) {
        if !force {
            return Err(Error::usage(format!(
                "{} exists and was not written by shipit",
                path.display()
            ))
            .hint("pass --force to replace it (it is kept as a backup next to it)"));
        }
        let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
        let saved = hooks.join(format!("{}.before-shipit-{stamp}", mode.hook_name()));
        fs::rename(&path, &saved).with_path("could not back up", &path)?;
        backup = Some(saved);
    }
    let shipit = std::env::current_exe()
        .and_then(fs::canonicalize)
        .map_err(|e| Error::internal("could not find the shipit binary").cause(e))?;
    fs::create_dir_all(&hooks).with_path("could not create", &hooks)?;
    let script = render(mode, &shipit, config, branch);
    fsutil::atomic_write(&path, script.as_bytes()).with_path("could not write", &path)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
        .with_path("could not make executable", &path)?;
    // One deploy per push: a shipit hook of the other mode would deploy twice.
    let other = hooks.join(mode.other().hook_name());
    let removed_other = if is_ours(&other) {
        fs::remove_file(&other).with_path("could not remove", &other)?;
        Some(other)
    } else {
        None
    };
    Ok(Installed {
        path,
        backup,
        removed_other,
        shipit,
    })
}

/// The cargo build directory (`target/`) that `binary` lives in, if any:
/// `cargo clean` would delete it from under a hook
/// that names it.
pub fn build_dir_of(binary: &Path) -> Option<&Path> {
    binary
        .ancestors()
        .skip(1)
        .find(|dir| dir.join(".rustc_info.json").exists() || dir.join("CACHEDIR.TAG").exists())
}

/// Run as the git hook: read the push from stdin and deploy it if it
/// touched the branch. `Ok(None)`: nothing to deploy.
///
/// Pushes queue on the deploy lock, and git runs their hooks in no
/// particular order, so what a push carries is only decided under the
/// lock:
/// - post-receive (the ref has moved already): deploy the branch's tip as
///   it is now. A push overtaken by a later one deploys that later tip, or
///   nothing when it is live already, so the last deploy is always the
///   branch's last state.
/// - pre-receive (git moves the ref after the hook, and only if it still
///   holds the push's old value): refuse the push if the branch moved while
///   it waited, since git would reject it after the deploy and leave live a
///   revision on no branch. After a deploy, the lock stays held (by a small
///   child process) until git has moved the ref or given up, so the next
///   push checks against the ref as it ends up.
pub fn run(ctx: &Ctx, mode: Mode, branch: Option<&str>) -> Result<Option<Outcome>> {
    let branch = branch.unwrap_or(&ctx.config.source.branch).to_string();
    crate::gitref::check_ref(&branch)?;
    let mut input = String::new();
    std::io::stdin()
        .take(STDIN_LIMIT)
        .read_to_string(&mut input)
        .map_err(|e| Error::usage("could not read the push from stdin").cause(e))?;
    let (old, new) = match parse(&input, &branch) {
        Push::Untouched => {
            ctx.ui.step(
                "Skipping",
                format!("the push did not touch {branch}: nothing to deploy"),
            );
            return Ok(None);
        }
        Push::Deleted => {
            ctx.ui.warn(format!(
                "{branch} was deleted; nothing was deployed and the live release is unchanged"
            ));
            return Ok(None);
        }
        Push::Deploy { old, new } => {
            let from = if is_zero(&old) {
                "a new branch".to_string()
            } else {
                short(&old).to_string()
            };
            ctx.ui
                .step("Received", format!("{branch}: {from} -> {}", short(&new)));
            (old, new)
        }
    };
    let repo = {
        let dir = std::env::var_os("GIT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        std::path::absolute(&dir).unwrap_or(dir)
    };
    let mut req = Request {
        reference: Some(new.clone()),
        no_rollback: false,
        pushed_repo: (mode == Mode::PreReceive).then(|| repo.clone()),
        branch: Some(branch.clone()),
        skip_migrate: false,
    };
    deploy::preflight(ctx, &req)?;
    // A push that arrives during a deploy queues behind it (bounded).
    let (lock, state) = crate::mutation::begin_reading(ctx, Some(ctx.config.lock.wait))?;
    let now = branch_tip(&repo, &branch)?;
    match mode {
        Mode::PostReceive => {
            let Some(tip) = now else {
                ctx.ui.warn(format!(
                    "{branch} was deleted while this push waited; nothing was deployed"
                ));
                return Ok(None);
            };
            if live_revision(ctx).as_deref() == Some(tip.as_str()) {
                ctx.ui.step(
                    "Skipping",
                    format!(
                        "{}, the tip of {branch}, is live already: nothing to deploy",
                        short(&tip)
                    ),
                );
                return Ok(None);
            }
            if tip != new {
                ctx.ui.step(
                    "Superseded",
                    format!(
                        "{branch} moved on to {} while this push waited: deploying that",
                        short(&tip)
                    ),
                );
                req.reference = Some(tip);
            }
            deploy::run(ctx, &req, state).map(Some)
        }
        Mode::PreReceive => {
            let expected = (!is_zero(&old)).then_some(old.as_str());
            if now.as_deref() != expected {
                let live = store::read_current(&ctx.layout)
                    .map(|c| c.describe())
                    .unwrap_or_else(|_| "unknown".into());
                return Err(Error::usage(format!(
                    "{branch} moved to {} while this push waited for the deploy lock",
                    now.as_deref().map(short).unwrap_or("nothing (deleted)")
                ))
                .cause(format!(
                    "git would reject this push (it expects {branch} at {}), so {} was not deployed",
                    expected.map(short).unwrap_or("nothing"),
                    short(&new)
                ))
                .live(live)
                .hint(format!(
                    "fetch, merge or rebase onto the new {branch}, and push again"
                )));
            }
            let outcome = deploy::run(ctx, &req, state)?;
            hold_until_ref_moves(lock, &repo, &branch, &old);
            Ok(Some(outcome))
        }
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

/// A git command on the pushed repository, without the hook's environment
/// (the ref store is not quarantined; only new objects are).
fn git_in(repo: &Path) -> std::process::Command {
    let mut git = std::process::Command::new("git");
    git.arg("--git-dir")
        .arg(repo)
        .stdin(std::process::Stdio::null());
    crate::procs::without_git_env(&mut git);
    git
}

/// Where `branch` points in `repo` now (`None`: it does not exist).
fn branch_tip(repo: &Path, branch: &str) -> Result<Option<String>> {
    let out = git_in(repo)
        .args(["rev-parse", "-q", "--verify"])
        .arg(format!("refs/heads/{branch}^{{commit}}"))
        .output()
        .map_err(|e| Error::internal("could not run git").cause(e))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match out.status.code() {
        Some(0) if !text.is_empty() => Ok(Some(text)),
        // `--verify -q` says "no such ref" with status 1 and nothing else.
        Some(0) | Some(1) => Ok(None),
        _ => Err(
            Error::usage(format!("could not read {branch} in {}", repo.display()))
                .cause(String::from_utf8_lossy(&out.stderr).trim())
                .hint(
                    "`shipit hook post-receive` and `pre-receive` run as git hooks, where \
                     GIT_DIR names the repository; install them with `shipit hook install`",
                ),
        ),
    }
}

/// The revision of the live release, if shipit recorded one.
fn live_revision(ctx: &Ctx) -> Option<String> {
    let current = store::read_current(&ctx.layout).ok()?;
    store::read_metadata(&ctx.layout, current.id()?)
        .ok()
        .flatten()?
        .revision
}

/// Keep the deploy lock held after this hook exits, until git has moved
/// `branch` off `old` (the push landed) or the receiving git process has
/// exited (the push failed), at most two minutes. A child process gets the
/// locked file as its stdin: the flock stays held while it runs. It has its
/// own process group and no output, so git neither waits for it nor kills
/// it with the hook.
fn hold_until_ref_moves(lock: crate::lock::Lock, repo: &Path, branch: &str, old: &str) {
    const WAIT: &str = r#"
        receiver=$1 ref=$2 old=$3 i=0
        while [ "$i" -lt 2400 ] && kill -0 "$receiver" 2>/dev/null; do
            now=$(git rev-parse -q --verify "$ref" </dev/null)
            [ "$now" = "$old" ] || exit 0
            sleep 0.05
            i=$((i + 1))
        done
    "#;
    let Ok(held) = lock.into_shared() else { return };
    let receiver = nix::unistd::getppid().to_string();
    let reference = format!("refs/heads/{branch}");
    let mut sh = std::process::Command::new("sh");
    crate::procs::without_git_env(&mut sh);
    let old = if is_zero(old) { "" } else { old };
    let _ = sh
        .args(["-c", WAIT, "shipit-hold-lock", &receiver, &reference, old])
        .env("GIT_DIR", repo)
        .stdin(held)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn parse_finds_the_branch() {
        let input = format!("{A} {B} refs/heads/feature\n{A} {B} refs/heads/main\n");
        assert_eq!(
            parse(&input, "main"),
            Push::Deploy {
                old: A.into(),
                new: B.into()
            }
        );
        assert_eq!(parse(&input, "release"), Push::Untouched);
        assert_eq!(
            parse(&format!("{A} {Z} refs/heads/main\n"), "main"),
            Push::Deleted
        );
        assert_eq!(
            parse(&format!("{A} {B} refs/tags/main\n"), "main"),
            Push::Untouched
        );
        assert_eq!(parse("garbage\n\n", "main"), Push::Untouched);
    }

    #[test]
    fn quoting_survives_hostile_text() {
        for text in [
            "plain",
            "it's",
            "$(touch x)",
            "`id`",
            "a;b",
            "'; rm -rf / #",
        ] {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("printf %s {}", shell_quote(text))])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
        }
    }

    /// Regression: values were substituted one placeholder after another,
    /// so a config path holding `@BRANCH@` had the (quoted) branch spliced
    /// into its own quotes, where the branch's `$(...)` ran.
    #[test]
    fn a_value_holding_a_placeholder_is_not_substituted_again() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("x@BRANCH@y.toml");
        let branch = "$(touch pwned)";
        let script = render(
            Mode::PostReceive,
            Path::new("/bin/echo"),
            &config,
            Some(branch),
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "--config {} hook post-receive --branch {branch}\n",
                config.display()
            )
        );
        assert!(
            !dir.path().join("pwned").exists(),
            "the branch ran:\n{script}"
        );
    }

    #[test]
    fn rendered_hook_is_valid_sh() {
        let script = render(
            Mode::PreReceive,
            Path::new("/usr/local/bin/shipit"),
            Path::new("/srv/app/ship it.toml"),
            Some("$(touch x)"),
        );
        assert!(script.contains(MARKER));
        assert!(
            script.contains("hook pre-receive --branch '$(touch x)'"),
            "{script}"
        );
        let status = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .status()
            .unwrap();
        assert!(status.success());
    }
}
