//! Get the code: from git through the real `git` binary, or from a directory.
//!
//! Git sources are fetched into a bare mirror under `.shipit/repo.git`, so
//! each deploy fetches only what is new, and exported with `git archive |
//! tar -x` (which honours `export-ignore` and never leaves a `.git` in the
//! release). Every git command runs with the `GIT_*` variables removed: in a
//! git hook `GIT_DIR` points at the pushed repository, and would silently
//! redirect commands meant for the mirror (SPEC §6). Refs come from outside
//! and are passed as single arguments after `--end-of-options`, never through
//! a shell.
//!
//! git must not tidy the mirror behind shipit's back: `git fetch` starts a
//! detached `git maintenance run --auto` (or `gc --auto`) that outlives
//! shipit and holds locks in the mirror while the next deploy fetches. So
//! every git command here runs with automatic gc and maintenance off (on
//! the command line: a fetch writes no config), and shipit runs `git gc
//! --auto` itself after each fetch, in the foreground, bounded, under the
//! deploy lock, so the mirror still does not grow without bound.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use duct::{Expression, cmd};

use crate::config::Config;
use crate::error::{Error, IoContext, Kind, Result};
use crate::gitref::check_ref;
use crate::interrupt;
use crate::layout::Layout;
use crate::procs;
use crate::ui::Ui;

/// Bound on one git step (fetch, export), so a hung remote cannot hold the
/// deploy lock forever.
const GIT_TIMEOUT: Duration = Duration::from_secs(900);
/// Bound on the mirror's maintenance after a fetch (`git gc --auto`): it
/// rarely has anything to do, but then it repacks.
const MAINTENANCE_TIMEOUT: Duration = Duration::from_secs(300);
/// For every git command aimed at the mirror: no automatic gc or
/// maintenance (see the module doc).
const NO_AUTO_GC: [&str; 4] = ["-c", "gc.auto=0", "-c", "maintenance.auto=false"];
/// How often a wait for git wakes to check for an interrupt (the signal
/// handler only sets a flag); git's exit itself is noticed at once.
const TICK: Duration = Duration::from_millis(50);

/// What is about to be deployed.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Full commit sha (git sources only).
    pub revision: Option<String>,
    /// The branch or ref that was asked for.
    pub branch: Option<String>,
    /// Where it came from (repository or directory), for metadata.
    pub source: String,
    /// Where to export it from.
    pub origin: Origin,
    /// What went wrong that the deploy can live with (the mirror's
    /// maintenance), for the caller to show.
    pub warning: Option<String>,
}

#[derive(Clone, Debug)]
pub enum Origin {
    /// The bare mirror under `.shipit/repo.git`.
    Mirror,
    /// A repository being pushed to, read from inside its git hook. In a
    /// pre-receive hook the pushed objects are quarantined: git shows them
    /// only to commands that run with the hook's own environment
    /// (`GIT_OBJECT_DIRECTORY`, `GIT_ALTERNATE_OBJECT_DIRECTORIES`), so
    /// these commands keep it, and name the repository explicitly.
    PushedRepo(PathBuf),
    /// A directory source.
    Directory,
}

/// What a deploy asks for.
pub struct Wanted<'a> {
    /// Branch, tag or sha; `None` means `source.branch`.
    pub reference: Option<&'a str>,
    /// Read the revision from this repository with the hook environment
    /// (push to deploy) instead of the mirror.
    pub pushed_repo: Option<&'a Path>,
    /// The branch to record instead of the reference (a push deploys a sha
    /// but is a deploy of its branch).
    pub branch: Option<&'a str>,
}

/// A git command aimed at `git_dir`, with git's hook environment removed
/// and no automatic gc.
fn git(git_dir: &Path, args: &[&str]) -> Expression {
    let dir = format!("--git-dir={}", git_dir.display());
    let mut argv = vec![dir.as_str()];
    argv.extend_from_slice(args);
    git_command(&argv)
}

/// A git command with git's hook environment removed and no automatic gc.
fn git_command(args: &[&str]) -> Expression {
    let mut argv = NO_AUTO_GC.to_vec();
    argv.extend_from_slice(args);
    plain_git(&argv)
}

/// A git command with git's hook environment removed.
fn plain_git(args: &[&str]) -> Expression {
    let mut expr = cmd("git", args);
    for key in procs::git_env() {
        expr = expr.env_remove(key);
    }
    unattended(expr)
}

/// What every git command here needs: no prompt nobody will answer, no
/// stdin, and death together with shipit.
fn unattended(expr: Expression) -> Expression {
    expr.env("GIT_TERMINAL_PROMPT", "0")
        .stdin_null()
        .before_spawn(|command| {
            procs::die_with_shipit(command);
            Ok(())
        })
}

/// Run `expr` to completion; returns captured stdout. `what` names the
/// step in errors. A thread blocks in `wait` (no polling: git's exit is
/// seen at once), while this one wakes every [`TICK`] only to notice an
/// interrupt or the timeout, and then kills the command.
fn run(expr: Expression, what: &str) -> Result<String> {
    run_within(expr, what, GIT_TIMEOUT, false)
}

/// [`run`] with a timeout of its own. With `group`, the command runs in a
/// process group of its own, and a stop kills the whole group: `git gc`
/// leaves its work to children (`git repack`) that would outlive it.
fn run_within(expr: Expression, what: &str, timeout: Duration, group: bool) -> Result<String> {
    let expr = if group {
        expr.before_spawn(|command| {
            std::os::unix::process::CommandExt::process_group(command, 0);
            Ok(())
        })
    } else {
        expr
    };
    let handle = expr
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .start()
        .map_err(|e| {
            Error::internal(format!("could not run git to {what}"))
                .cause(e)
                .hint("install git (apt-get install git)")
        })?;
    let deadline = crate::clock::after(timeout);
    let handle = std::sync::Arc::new(handle);
    let (tx, rx) = mpsc::channel();
    // Detached, not scoped: after a kill, `wait` also waits for git's
    // output pipes, which a child of git (ssh, a remote helper) may hold
    // for as long as it likes. The deploy must not wait for it.
    let waiter = std::sync::Arc::clone(&handle);
    std::thread::spawn(move || {
        let _ = tx.send(waiter.wait().cloned());
    });
    let (output, stopped) = loop {
        match rx.recv_timeout(TICK) {
            Ok(output) => break (output, None),
            // Never: the waiter sends before it ends.
            Err(RecvTimeoutError::Disconnected) => {
                break (Err(std::io::Error::other("the waiting thread died")), None);
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        let stopped = if interrupt::requested() {
            Error::new(Kind::Interrupted, "interrupted by a signal")
        } else if Instant::now() >= deadline {
            Error::internal(format!(
                "could not {what}: no answer within {}",
                humantime::format_duration(timeout)
            ))
        } else {
            continue;
        };
        if group && let Some(&pid) = handle.pids().first() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = handle.kill();
        break (Err(std::io::Error::other("stopped")), Some(stopped));
    };
    if let Some(e) = stopped {
        return Err(e);
    }
    let output = output.map_err(|e| Error::internal(format!("could not {what}")).cause(e))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).trim().to_string());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    Err(Error::internal(format!("could not {what}")).cause(stderr))
}

/// Update the mirror (git) and decide exactly what to deploy.
pub fn resolve(config: &Config, layout: &Layout, wanted: &Wanted) -> Result<Resolved> {
    let _timing = crate::ui::Timing::start("fetch+resolve");
    if let Some(dir) = &config.source.path {
        if !dir.is_dir() {
            return Err(
                Error::usage(format!("source.path {} is not a directory", dir.display()))
                    .hint("point [source] path at the directory to ship"),
            );
        }
        return Ok(Resolved {
            revision: None,
            branch: None,
            source: dir.display().to_string(),
            origin: Origin::Directory,
            warning: None,
        });
    }
    let url = config
        .source
        .git
        .as_deref()
        .expect("validated: git or path");
    let reference = wanted.reference.unwrap_or(&config.source.branch);
    check_ref(reference)?;
    let branch = wanted.branch.unwrap_or(reference).to_string();
    if let Some(repo) = wanted.pushed_repo {
        let revision = resolve_rev(|args| in_pushed_repo(repo, args), reference)?;
        return Ok(Resolved {
            revision: Some(revision),
            branch: Some(branch),
            source: repo.display().to_string(),
            origin: Origin::PushedRepo(repo.to_path_buf()),
            warning: None,
        });
    }
    fetch_mirror(url, layout)?;
    let mirror = layout.mirror();
    let warning = maintain(&mirror).err().map(|e| {
        format!(
            "the maintenance of {} (`git gc --auto`) failed; the deploy goes on: {e}",
            mirror.display()
        )
        .replace('\n', "; ")
    });
    let revision = resolve_rev(|args| git(&mirror, args), reference).map_err(|e| {
        let hint = if wanted.reference.is_some() {
            format!("check the ref: `git ls-remote {url}` lists branches and tags")
        } else {
            format!(
                "check source.branch in {} against `git ls-remote {url}`",
                config.file.display()
            )
        };
        e.hint(hint)
    })?;
    Ok(Resolved {
        revision: Some(revision),
        branch: Some(branch),
        source: url.to_string(),
        origin: Origin::Mirror,
        warning,
    })
}

/// Could `reference` be a commit sha (which no remote can be asked about)?
fn looks_like_sha(reference: &str) -> bool {
    (4..=64).contains(&reference.len()) && reference.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Check a `--ref` against the remote before anything is fetched or locked,
/// so a misspelled (or hostile) ref changes nothing on disk. Branch and tag
/// names are looked up with `git ls-remote` (read-only); a sha can only be
/// checked after fetching.
pub fn check_remote_ref(url: &str, reference: &str) -> Result<()> {
    check_ref(reference)?;
    if looks_like_sha(reference) {
        return Ok(());
    }
    let refs = run(git_command(&["ls-remote", url]), &format!("reach {url}"))?;
    let names = [
        format!("refs/heads/{reference}"),
        format!("refs/tags/{reference}"),
        reference.to_string(),
    ];
    let found = refs
        .lines()
        .filter_map(|l| l.split('\t').nth(1))
        .any(|name| names.iter().any(|n| n == name));
    if found {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "{reference:?} is not a branch, tag or commit in {url}"
        ))
        .hint(format!(
            "`git ls-remote {url}` lists branches and tags; a commit is given by its sha"
        )))
    }
}

/// Does the remote at `url` have `branch`? Read-only (`git ls-remote`).
pub fn remote_has_branch(url: &str, branch: &str) -> Result<bool> {
    let pattern = format!("refs/heads/{branch}");
    let out = run(
        git_command(&["ls-remote", "--heads", url, &pattern]),
        &format!("reach {url}"),
    )?;
    Ok(out.lines().any(|l| l.ends_with(&pattern)))
}

/// A git command on the repository a hook runs for, keeping the hook's
/// environment (see [`Origin::PushedRepo`]).
fn in_pushed_repo(repo: &Path, args: &[&str]) -> Expression {
    let mut argv = vec![format!("--git-dir={}", repo.display())];
    argv.extend(args.iter().map(|a| a.to_string()));
    unattended(cmd("git", argv).env("GIT_DIR", repo))
}

fn fetch_mirror(url: &str, layout: &Layout) -> Result<()> {
    let mirror = layout.mirror();
    if !mirror.join("HEAD").exists() {
        // Create the mirror under staging and rename it into place, so a
        // crash mid-creation leaves a leftover to clear, never a mirror that
        // looks initialised but lacks its fetch refspec.
        let staging = layout.staging_dir();
        fs::create_dir_all(&staging).with_path("could not create", &staging)?;
        let fresh = tempfile::Builder::new()
            .prefix("mirror-")
            .tempdir_in(&staging)
            .with_path("could not create a directory in", &staging)?;
        // `clone --mirror` of a local repository hardlinks its objects
        // instead of re-packing them: much faster for a first deploy.
        let target = fresh.path().display().to_string();
        run(
            git_command(&["clone", "--mirror", "--quiet", "--", url, &target]),
            &format!("clone {url}"),
        )
        .map_err(|e| {
            e.hint(format!(
                "check that {url} is reachable: `git ls-remote {url}`"
            ))
        })?;
        if mirror.exists() {
            fs::remove_dir_all(&mirror).with_path("could not remove the broken mirror", &mirror)?;
        }
        fs::rename(fresh.keep(), &mirror).with_path("could not create", &mirror)?;
    }
    clear_stale_git_locks(&mirror)?;
    // Fetch from the URL with an explicit refspec rather than through the
    // mirror's `origin` settings: a changed source.git takes effect, and a
    // mirror from an older or interrupted run is put right, with no
    // `git config` writes (two more git runs) on every deploy.
    run(
        git(
            &mirror,
            &[
                "fetch",
                "--quiet",
                "--prune",
                "--force",
                "--",
                url,
                "+refs/*:refs/*",
            ],
        ),
        &format!("fetch {url}"),
    )
    .map_err(|e| {
        e.hint(format!(
            "check that {url} is reachable: `git ls-remote {url}`"
        ))
    })?;
    Ok(())
}

/// What git's automatic gc would do, in the foreground and bounded: `git gc
/// --auto` does nothing until loose objects or packs pile up (gc.auto,
/// gc.autoPackLimit), then repacks. It runs under the deploy lock, so no
/// other shipit git command meets its locks.
fn maintain(mirror: &Path) -> Result<()> {
    let dir = format!("--git-dir={}", mirror.display());
    let args = [
        dir.as_str(),
        "-c",
        "gc.autoDetach=false",
        "-c",
        "maintenance.autoDetach=false",
        "gc",
        "--auto",
        "--quiet",
    ];
    run_within(
        plain_git(&args),
        "tidy the mirror",
        MAINTENANCE_TIMEOUT,
        true,
    )
    .map(drop)
}

/// Remove `*.lock` files that a killed git left in the mirror (git refuses
/// to update a ref whose lock file exists, so one SIGKILL mid-fetch would
/// break every later deploy). A lock file is left alone while any process
/// has it open (it is live: a `git gc` someone started by hand, say), and
/// all of them while a gc that `gc.pid` names still runs: git closes some
/// lock files before it renames them. shipit's own git commands run under
/// the deploy lock and die with the shipit that ran them.
fn clear_stale_git_locks(mirror: &Path) -> Result<()> {
    if gc_is_running(mirror) {
        return Ok(());
    }
    let walk = walkdir::WalkDir::new(mirror)
        .into_iter()
        .filter_entry(|e| e.file_name() != "objects");
    let mut locks = Vec::new();
    for entry in walk.flatten() {
        let is_lock =
            entry.file_type().is_file() && entry.file_name().to_string_lossy().ends_with(".lock");
        if is_lock && let Ok(meta) = entry.metadata() {
            locks.push((entry.into_path(), procs::file_id(&meta)));
        }
    }
    if locks.is_empty() {
        return Ok(());
    }
    let ids: Vec<procs::FileId> = locks.iter().map(|(_, id)| *id).collect();
    let open = procs::openers(&ids);
    for (path, id) in locks {
        if !open.contains_key(&id) {
            fs::remove_file(&path).with_path("could not remove the stale git lock", &path)?;
        }
    }
    Ok(())
}

/// Does `gc.pid` in the mirror name a gc that still runs on this host?
/// git writes "<pid> <hostname>" there for as long as a gc runs, and, as
/// git does, a file older than 12 hours is taken to be stale.
fn gc_is_running(mirror: &Path) -> bool {
    let path = mirror.join("gc.pid");
    let recent = fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(12 * 3600));
    let Ok(text) = fs::read_to_string(&path) else {
        return false;
    };
    if !recent {
        return false;
    }
    let mut words = text.split_whitespace();
    let (Some(pid), Some(host)) = (words.next(), words.next()) else {
        return false;
    };
    host == crate::whoami::host()
        && pid.parse::<i32>().is_ok_and(|pid| {
            pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        })
}

/// Resolve `wanted` (branch, tag, sha) to a full commit sha with `git`
/// (which builds a git command aimed at the right repository). A branch
/// name wins over a tag of the same name: a deploy of "main" means the branch.
fn resolve_rev(git: impl Fn(&[&str]) -> Expression, wanted: &str) -> Result<String> {
    let branch = format!("refs/heads/{wanted}^{{commit}}");
    let any = format!("{wanted}^{{commit}}");
    for candidate in [&branch, &any] {
        let args = [
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            candidate,
        ];
        match run(git(&args), "resolve the ref") {
            Ok(sha) if !sha.is_empty() => return Ok(sha),
            // An interrupt is not an answer about the ref.
            Err(e) if e.kind == Kind::Interrupted => return Err(e),
            _ => {}
        }
    }
    interrupt::check()?;
    Err(Error::usage(format!(
        "{wanted:?} is not a branch, tag or commit in the source repository"
    )))
}

/// Write the source tree into `dest` (an empty, existing directory).
pub fn export(
    config: &Config,
    layout: &Layout,
    resolved: &Resolved,
    dest: &Path,
    ui: &Ui,
) -> Result<()> {
    let _timing = crate::ui::Timing::start("export");
    match &resolved.revision {
        Some(sha) => {
            let args = ["archive", "--format=tar", sha.as_str()];
            let archive = match &resolved.origin {
                Origin::PushedRepo(repo) => in_pushed_repo(repo, &args),
                _ => git(&layout.mirror(), &args),
            };
            let dest_arg = dest.display().to_string();
            let untar = cmd!("tar", "-x", "--no-same-owner", "-f", "-", "-C", dest_arg);
            run(archive.pipe(untar), &format!("export revision {sha}"))?;
            Ok(())
        }
        None => {
            let src = config.source.path.as_ref().expect("path source");
            copy_tree(src, dest, ui)
        }
    }
}

/// Copy a directory as it is: symlinks stay symlinks, modes and times are
/// kept, files are cloned where the filesystem allows (see `copy`). How
/// they were copied is said once.
fn copy_tree(src: &Path, dest: &Path, ui: &Ui) -> Result<()> {
    let mut copier = crate::copy::Copier::new();
    copier.tree(src, dest)?;
    ui.step("Copied", copier.summary());
    Ok(())
}
