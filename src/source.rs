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

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use duct::{Expression, cmd};

use crate::config::{Config, Verify};
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
    /// What the deploy can live with but the user must hear about (the
    /// mirror's maintenance failed, submodules left out), for the caller
    /// to show.
    pub warnings: Vec<String>,
    /// When the revision was committed (its committer date).
    pub revision_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The submodules to export into the release, parents before the
    /// submodules inside them.
    pub submodules: Vec<Submodule>,
}

/// A submodule at the commit its superproject pins, fetched into a
/// mirror of its own.
#[derive(Clone, Debug)]
pub struct Submodule {
    /// Where it goes, relative to the release's root.
    pub path: PathBuf,
    pub commit: String,
    pub url: String,
    pub mirror: PathBuf,
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
    /// A CI artifact, copied into staging (see [`crate::archive`]).
    Archive(PathBuf),
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
    if let Some(archive) = &config.source.archive {
        return resolve_archive(config, layout, archive);
    }
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
            warnings: Vec::new(),
            revision_time: None,
            submodules: Vec::new(),
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
        let (revision, revision_time) = resolve_rev(|args| in_pushed_repo(repo, args), reference)?;
        let mut resolved = Resolved {
            revision: Some(revision),
            branch: Some(branch),
            source: repo.display().to_string(),
            origin: Origin::PushedRepo(repo.to_path_buf()),
            warnings: Vec::new(),
            revision_time,
            submodules: Vec::new(),
        };
        inspect(config, layout, url, &mut resolved)?;
        return Ok(resolved);
    }
    fetch_mirror(url, &layout.mirror(), layout, false)?;
    let mirror = layout.mirror();
    let (revision, revision_time) =
        resolve_rev(|args| git(&mirror, args), reference).map_err(|e| {
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
    let mut resolved = Resolved {
        revision: Some(revision),
        branch: Some(branch),
        source: url.to_string(),
        origin: Origin::Mirror,
        warnings: Vec::new(),
        revision_time,
        submodules: Vec::new(),
    };
    // git's gc runs (when it is due) beside the inspection of the resolved
    // commit, which only reads objects by their sha (git finds an object
    // again when a repack moves it), and is waited for before anything
    // reads a ref or exports: a small deploy no longer pays for a git run
    // that finds nothing to do, and no git outlives the deploy's lock.
    let (maintained, inspected) = std::thread::scope(|scope| {
        let gc = scope.spawn(|| {
            if gc_due(&mirror) {
                maintain(&mirror)
            } else {
                Ok(())
            }
        });
        let inspected = inspect(config, layout, url, &mut resolved);
        let maintained = gc
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the thread that ran git gc panicked")));
        (maintained, inspected)
    });
    if let Err(e) = maintained {
        resolved.warnings.insert(
            0,
            format!(
                "the maintenance of {} (`git gc --auto`) failed; the deploy goes on: {e}",
                mirror.display()
            )
            .replace('\n', "; "),
        );
    }
    inspected?;
    Ok(resolved)
}

/// Copy the artifact into staging and check its digest. For an archive,
/// the revision is its sha256 (hex): what `releases` shows and hooks get
/// as `SHIPIT_REVISION`.
fn resolve_archive(config: &Config, layout: &Layout, archive: &Path) -> Result<Resolved> {
    if config.source.verify == Verify::Signed {
        return Err(Error::usage(format!(
            "source.verify = \"signed\" in {} refuses an archive: it has no commit signature to verify",
            config.file.display()
        ))
        .hint("deploy a signed commit from git, or remove verify to deploy artifacts"));
    }
    let input = crate::archive::Input::from_arg(archive);
    let (spool, digest) = crate::archive::spool(&input, &layout.staging_dir())?;
    if let Some(want) = &config.source.sha256
        && !want.eq_ignore_ascii_case(&digest)
    {
        let _ = fs::remove_file(&spool);
        return Err(Error::usage(format!(
            "the archive {} has sha256 {digest}, not the {want} that source.sha256 in {} expects",
            input.describe(),
            config.file.display()
        ))
        .hint("deploy the artifact that digest names, or update sha256 (`sha256sum <file>`)"));
    }
    Ok(Resolved {
        revision: Some(digest),
        branch: None,
        source: format!("archive {}", input.describe()),
        origin: Origin::Archive(spool),
        warnings: Vec::new(),
        revision_time: None,
        submodules: Vec::new(),
    })
}

/// A git command aimed at the repository `origin` names.
fn origin_git<'a>(origin: &'a Origin, layout: &'a Layout) -> impl Fn(&[&str]) -> Expression + 'a {
    move |args: &[&str]| match origin {
        Origin::PushedRepo(repo) => in_pushed_repo(repo, args),
        _ => git(&layout.mirror(), args),
    }
}

/// The pre-flight checks of a resolved revision, before anything is
/// staged: `source.subdir` exists there, and every
/// submodule it pins is fetched and has its commit.
fn inspect(config: &Config, layout: &Layout, url: &str, resolved: &mut Resolved) -> Result<()> {
    let sha = resolved.revision.clone().expect("a git source");
    let repo = origin_git(&resolved.origin, layout);
    if config.source.verify == Verify::Signed {
        let signers = config.source.allowed_signers.as_deref().expect("validated");
        verify_signed(&repo, &sha, signers, config)?;
    }
    let subdir = config
        .source
        .subdir
        .as_deref()
        .map(|s| s.trim_end_matches('/'));
    let links = check_subdir(config, resolved, &repo, &sha, subdir)
        .and_then(|_| gitlinks(&repo, &sha, subdir))?;
    if links.is_empty() {
        return Ok(());
    }
    if !config.source.submodules {
        let paths: Vec<String> = links.iter().map(|(p, _)| p.display().to_string()).collect();
        resolved.warnings.push(format!(
            "source.submodules = false: the release leaves out the submodule{} {} (empty directories)",
            if paths.len() == 1 { "" } else { "s" },
            paths.join(", ")
        ));
        return Ok(());
    }
    let modules = gitmodules(&repo, &sha)?;
    let mut queue: Vec<Pending> = links
        .into_iter()
        .map(|(path, commit)| Pending {
            path: path.clone(),
            in_tree: match subdir {
                Some(s) => Path::new(s).join(&path),
                None => path,
            },
            commit,
            modules: modules.clone(),
            base: url.to_string(),
            depth: 1,
        })
        .collect();
    queue.reverse();
    while let Some(pending) = queue.pop() {
        let sub = fetch_submodule(layout, &pending)?;
        let mirror_git = |args: &[&str]| git(&sub.mirror, args);
        let inner = gitlinks(&mirror_git, &sub.commit, None)?;
        if !inner.is_empty() {
            if pending.depth >= MAX_SUBMODULE_DEPTH {
                return Err(Error::usage(format!(
                    "submodule {} nests submodules more than {MAX_SUBMODULE_DEPTH} deep",
                    sub.path.display()
                ))
                .hint("a submodule that contains itself never ends; set source.submodules = false to skip them"));
            }
            let modules = gitmodules(&mirror_git, &sub.commit)?;
            for (path, commit) in inner.into_iter().rev() {
                queue.push(Pending {
                    path: sub.path.join(&path),
                    in_tree: path,
                    commit,
                    modules: modules.clone(),
                    base: sub.url.clone(),
                    depth: pending.depth + 1,
                });
            }
        }
        resolved.submodules.push(sub);
    }
    Ok(())
}

/// `source.subdir` must be a directory at `sha`.
fn check_subdir(
    config: &Config,
    resolved: &Resolved,
    repo: &impl Fn(&[&str]) -> Expression,
    sha: &str,
    subdir: Option<&str>,
) -> Result<()> {
    if let Some(subdir) = subdir {
        let object = format!("{sha}:{subdir}");
        let kind = match run(repo(&["cat-file", "-t", &object]), "look up source.subdir") {
            Ok(kind) => kind,
            // An interrupt is not an answer about the path.
            Err(e) if e.kind == Kind::Interrupted => return Err(e),
            Err(_) => String::new(),
        };
        if kind != "tree" {
            let what = if kind == "commit" {
                "is a submodule, not a directory"
            } else {
                "does not exist"
            };
            return Err(Error::usage(format!(
                "source.subdir {subdir:?} {what} at revision {sha} ({})",
                resolved.branch.as_deref().unwrap_or("-")
            ))
            .hint(format!(
                "check the path with `git ls-tree -d {sha} -- {subdir}`, or fix subdir in {}",
                config.file.display()
            )));
        }
    }
    Ok(())
}

/// Refuse `sha` unless it carries a good ssh signature by a key in
/// `signers`. The trust store is that file alone, named in the config: not
/// whichever `gpg.ssh.allowedSignersFile` or gpg keyring the user running
/// shipit (a deploy user, CI, a push hook) happens to have. So a gpg
/// signature, which only a keyring could vouch for, is refused too.
fn verify_signed(
    repo: &impl Fn(&[&str]) -> Expression,
    sha: &str,
    signers: &Path,
    config: &Config,
) -> Result<()> {
    let refuse = |why: String| {
        Error::usage(format!("commit {sha} is not signed by an allowed key: {why}")).hint(format!(
            "source.verify = \"signed\" in {} deploys only commits signed with an ssh key listed in {}: \
             sign it (`git commit -S` with gpg.format = ssh) with such a key, or add the signer's key there",
            config.file.display(),
            signers.display()
        ))
    };
    let object = run(
        repo(&["cat-file", "commit", sha]),
        &format!("read commit {sha}"),
    )?;
    let header = object.split("\n\n").next().unwrap_or("");
    let signature = header.lines().find_map(|l| {
        l.strip_prefix("gpgsig ")
            .or_else(|| l.strip_prefix("gpgsig-sha256 "))
    });
    match signature {
        None => return Err(refuse("it carries no signature".into())),
        Some(s) if !s.starts_with("-----BEGIN SSH SIGNATURE-----") => {
            return Err(refuse(
                "it is signed with gpg or x509, and shipit trusts only the ssh keys in source.allowed_signers"
                    .into(),
            ));
        }
        Some(_) => {}
    }
    let file = format!("gpg.ssh.allowedSignersFile={}", signers.display());
    match run(
        repo(&["-c", &file, "verify-commit", "--end-of-options", sha]),
        "verify the signature",
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.kind == Kind::Interrupted => Err(e),
        Err(e) => {
            let why = e.causes.join("; ").replace('\n', "; ");
            Err(refuse(if why.is_empty() {
                "git verify-commit refused it".into()
            } else {
                format!("git says: {why}")
            }))
        }
    }
}

/// Submodules inside submodules, at most this deep (a repository can pin
/// itself).
const MAX_SUBMODULE_DEPTH: usize = 8;

/// A submodule found in a tree, not fetched yet.
struct Pending {
    /// Where it goes in the release.
    path: PathBuf,
    /// Its path in the tree that pins it (the key in `.gitmodules`).
    in_tree: PathBuf,
    commit: String,
    /// That tree's `.gitmodules`: path → url.
    modules: BTreeMap<String, String>,
    /// The URL of the repository that pins it (relative URLs resolve
    /// against it).
    base: String,
    depth: usize,
}

/// Fetch a submodule's repository into its mirror (one per URL) and make
/// sure it has the pinned commit.
fn fetch_submodule(layout: &Layout, pending: &Pending) -> Result<Submodule> {
    let shown = pending.path.display();
    let key = pending.in_tree.display().to_string();
    let Some(raw) = pending.modules.get(&key) else {
        return Err(Error::usage(format!(
            "submodule {shown} has no url in .gitmodules"
        ))
        .hint("add it with `git submodule add <url> <path>` in the repository, or set source.submodules = false to deploy without it"));
    };
    let url = crate::gitref::join_url(&pending.base, raw);
    let transport = crate::gitref::check_url(&url).map_err(|why| {
        Error::usage(format!(
            "submodule {shown} has the url {raw:?} in .gitmodules, which shipit refuses: {why}"
        ))
        .hint("point the submodule at an https, ssh or git URL, or a path (`git submodule set-url`), or set source.submodules = false")
    })?;
    // Only hex: it came from a tree, but it becomes an argument.
    if !(pending.commit.len() >= 40 && pending.commit.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(Error::usage(format!(
            "submodule {shown} pins {:?}, which is not a commit id",
            pending.commit
        )));
    }
    let mirror = layout.module_mirror(&url);
    let local = transport == crate::gitref::Transport::Local;
    fetch_mirror(&url, &mirror, layout, local)
        .map_err(|e| e.context(format!("could not fetch submodule {shown}")))?;
    let want = format!("{}^{{commit}}", pending.commit);
    let has = |mirror: &Path| {
        run(
            git(mirror, &["cat-file", "-e", &want]),
            "look up the pinned commit",
        )
        .is_ok()
    };
    if !has(&mirror) {
        // Not on any branch or tag: servers may still give it by id.
        let mut args = fetch_args(local);
        args.extend(["fetch", "--quiet", "--", &url, &pending.commit]);
        let _ = run(git(&mirror, &args), "fetch the pinned commit");
        if !has(&mirror) {
            return Err(Error::usage(format!(
                "submodule {shown} pins commit {}, which {url} does not have",
                pending.commit
            ))
            .hint("push that commit to the submodule's repository, or commit the submodule at a commit it has"));
        }
    }
    Ok(Submodule {
        path: pending.path.clone(),
        commit: pending.commit.clone(),
        url,
        mirror,
    })
}

/// The submodules (gitlinks) in `sha`'s tree, under `subdir` if given:
/// (path relative to `subdir` or the root, pinned commit).
fn gitlinks(
    git: &impl Fn(&[&str]) -> Expression,
    sha: &str,
    subdir: Option<&str>,
) -> Result<Vec<(PathBuf, String)>> {
    let mut args = vec!["--literal-pathspecs", "ls-tree", "-r", "-z", sha];
    if let Some(subdir) = subdir {
        args.extend(["--", subdir]);
    }
    let out = run(git(&args), &format!("list the tree of {sha}"))?;
    let mut links = Vec::new();
    for entry in out.split('\0').filter(|e| !e.is_empty()) {
        let Some((info, path)) = entry.split_once('\t') else {
            continue;
        };
        let mut info = info.split(' ');
        let (Some(_mode), Some(kind), Some(commit)) = (info.next(), info.next(), info.next())
        else {
            continue;
        };
        if kind != "commit" {
            continue;
        }
        let rel = match subdir {
            Some(s) => path
                .strip_prefix(s)
                .and_then(|p| p.strip_prefix('/'))
                .unwrap_or(path),
            None => path,
        };
        crate::gitref::check_tree_path(rel).map_err(|why| {
            Error::usage(format!(
                "the submodule path {path:?} at {sha} is not usable: {why}"
            ))
        })?;
        links.push((PathBuf::from(rel), commit.to_string()));
    }
    Ok(links)
}

/// `.gitmodules` of `sha`: each submodule's path and url.
fn gitmodules(git: &impl Fn(&[&str]) -> Expression, sha: &str) -> Result<BTreeMap<String, String>> {
    let blob = format!("--blob={sha}:.gitmodules");
    let out = match run(
        git(&[
            "config",
            &blob,
            "-z",
            "--get-regexp",
            r"^submodule\..*\.(path|url)$",
        ]),
        "read .gitmodules",
    ) {
        Ok(out) => out,
        // No .gitmodules (or nothing in it): every gitlink lacks a url.
        Err(_) => return Ok(BTreeMap::new()),
    };
    let mut paths = BTreeMap::new();
    let mut urls = BTreeMap::new();
    for entry in out.split('\0').filter(|e| !e.is_empty()) {
        let Some((key, value)) = entry.split_once('\n') else {
            continue;
        };
        if let Some(name) = key
            .strip_prefix("submodule.")
            .and_then(|k| k.strip_suffix(".path"))
        {
            paths.insert(name.to_string(), value.trim_end_matches('/').to_string());
        } else if let Some(name) = key
            .strip_prefix("submodule.")
            .and_then(|k| k.strip_suffix(".url"))
        {
            urls.insert(name.to_string(), value.to_string());
        }
    }
    Ok(paths
        .into_iter()
        .filter_map(|(name, path)| urls.remove(&name).map(|url| (path, url)))
        .collect())
}

/// The options of a fetch shipit makes itself: a local path the user's
/// repository names is allowed whatever `protocol.file.allow` says (git
/// applies that setting to submodule URLs; this mirror is shipit's own).
fn fetch_args(local: bool) -> Vec<&'static str> {
    if local {
        vec!["-c", "protocol.file.allow=always"]
    } else {
        Vec::new()
    }
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

/// Bring the bare mirror `mirror` of `url` up to date, creating it first
/// if need be. `local`: `url` is a path on this machine (see
/// [`fetch_args`]).
fn fetch_mirror(url: &str, mirror: &Path, layout: &Layout, local: bool) -> Result<()> {
    let allow = fetch_args(local);
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
        let mut args = allow.clone();
        args.extend(["clone", "--mirror", "--quiet", "--", url, &target]);
        run(git_command(&args), &format!("clone {url}")).map_err(|e| {
            e.hint(format!(
                "check that {url} is reachable: `git ls-remote {url}`"
            ))
        })?;
        if mirror.exists() {
            fs::remove_dir_all(mirror).with_path("could not remove the broken mirror", mirror)?;
        }
        if let Some(parent) = mirror.parent() {
            fs::create_dir_all(parent).with_path("could not create", parent)?;
        }
        fs::rename(fresh.keep(), mirror).with_path("could not create", mirror)?;
    }
    clear_stale_git_locks(mirror)?;
    // Fetch from the URL with an explicit refspec rather than through the
    // mirror's `origin` settings: a changed source.git takes effect, and a
    // mirror from an older or interrupted run is put right, with no
    // `git config` writes (two more git runs) on every deploy.
    let mut args = allow;
    args.extend([
        "fetch",
        "--quiet",
        "--prune",
        "--force",
        "--",
        url,
        "+refs/*:refs/*",
    ]);
    run(git(mirror, &args), &format!("fetch {url}")).map_err(|e| {
        e.hint(format!(
            "check that {url} is reachable: `git ls-remote {url}`"
        ))
    })?;
    Ok(())
}

/// Is git's automatic gc due in `mirror`, by git's own default thresholds
/// and the way git estimates them: more than 27 loose objects in
/// `objects/17` (gc.auto = 6700 spread over 256 directories), or more than
/// 50 packs without a `.keep` (gc.autoPackLimit)? Read from the directory
/// instead of asking `git gc --auto`, which costs a process on every
/// deploy to find nothing to do. (A lower gc.auto in the user's git config
/// takes effect once these are reached; gc.auto = 0 still turns gc off.)
fn gc_due(mirror: &Path) -> bool {
    const LOOSE_IN_17: usize = 6700_usize.div_ceil(256);
    const PACKS: usize = 50;
    let objects = mirror.join("objects");
    let loose = fs::read_dir(objects.join("17")).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.as_encoded_bytes();
                // SHA-1 or SHA-256 object names, less their first two digits.
                matches!(name.len(), 38 | 62)
                    && name.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            })
            .count()
    });
    if loose > LOOSE_IN_17 {
        return true;
    }
    let packs = fs::read_dir(objects.join("pack")).map_or(0, |entries| {
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".pack")?.to_string();
                Some(stem)
            })
            .filter(|stem| !objects.join("pack").join(format!("{stem}.keep")).exists())
            .count()
    });
    packs > PACKS
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

/// A resolved commit: its full sha and its commit time.
type Rev = (String, Option<chrono::DateTime<chrono::Utc>>);

/// Resolve `wanted` (branch, tag, sha) to a full commit sha, and read its
/// commit time in the same git run, with `git` (which builds a git command
/// aimed at the right repository). A branch name wins over a tag of the
/// same name: a deploy of "main" means the branch.
fn resolve_rev(git: impl Fn(&[&str]) -> Expression, wanted: &str) -> Result<Rev> {
    let branch = format!("refs/heads/{wanted}^{{commit}}");
    let any = format!("{wanted}^{{commit}}");
    for candidate in [&branch, &any] {
        // One commit, named after `--end-of-options` and before `--` (never
        // an option, never a path); its signature is not checked here
        // (log.showSignature), `source.verify` does that.
        let args = [
            "show",
            "-s",
            "--no-show-signature",
            "--format=%H %ct",
            "--end-of-options",
            candidate,
            "--",
        ];
        let shown = run(git(&args), "resolve the ref").map(|out| {
            let mut words = out.split_whitespace();
            let sha = words.next().unwrap_or_default().to_string();
            let time = words
                .next()
                .and_then(|t| t.parse::<i64>().ok())
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0));
            (sha, time)
        });
        match shown {
            Ok((sha, time)) if sha.len() >= 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) => {
                return Ok((sha, time));
            }
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

/// Write the source tree into `dest` (an empty, existing directory): the
/// revision (or `source.subdir` of it), then each submodule into its
/// directory.
pub fn export(
    config: &Config,
    layout: &Layout,
    resolved: &Resolved,
    dest: &Path,
    ui: &Ui,
) -> Result<()> {
    let _timing = crate::ui::Timing::start("export");
    if let Origin::Archive(spool) = &resolved.origin {
        let shown = config.source.archive.as_deref().map_or("-".into(), |a| {
            crate::archive::Input::from_arg(a).describe()
        });
        let result = crate::archive::unpack(spool, dest, &shown);
        let _ = fs::remove_file(spool);
        return result;
    }
    let Some(sha) = &resolved.revision else {
        let src = config.source.path.as_ref().expect("path source");
        return copy_tree(src, dest, ui);
    };
    // The subdir is archived as a path of the whole tree, not as the tree
    // `<rev>:<subdir>`: only then does git apply the root's
    // `.gitattributes` (export-ignore, export-subst). tar strips the
    // leading directories.
    let subdir = config
        .source
        .subdir
        .as_deref()
        .map(|s| s.trim_end_matches('/'));
    let mut args = vec![
        "--literal-pathspecs",
        "archive",
        "--format=tar",
        sha.as_str(),
    ];
    if let Some(subdir) = subdir {
        args.extend(["--", subdir]);
    }
    let archive = origin_git(&resolved.origin, layout)(&args);
    let strip = subdir.map_or(0, |s| s.split('/').count());
    untar(archive, dest, strip, &format!("export revision {sha}"))?;
    for sub in &resolved.submodules {
        let into = dest.join(&sub.path);
        // git archive writes a submodule as an empty directory; one that
        // is not there was left out on purpose (export-ignore). Nothing
        // on the way may be a symlink: it could lead out of the release.
        let mut at = dest.to_path_buf();
        let mut missing = false;
        for part in sub.path.components() {
            at.push(part);
            match fs::symlink_metadata(&at) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(Error::internal(format!(
                        "submodule {} goes through {}, which is not a directory",
                        sub.path.display(),
                        at.display()
                    )));
                }
                Err(_) => missing = true,
            }
            if missing {
                break;
            }
        }
        if missing {
            continue;
        }
        let archive = git(&sub.mirror, &["archive", "--format=tar", &sub.commit]);
        untar(
            archive,
            &into,
            0,
            &format!("export submodule {} at {}", sub.path.display(), sub.commit),
        )?;
    }
    Ok(())
}

/// Pipe the tar that `archive` writes into `tar -x` in `dest`.
fn untar(archive: Expression, dest: &Path, strip: usize, what: &str) -> Result<()> {
    let strip = format!("--strip-components={strip}");
    let untar = cmd!("tar", "-x", "--no-same-owner", strip, "-f", "-", "-C", dest);
    run(archive.pipe(untar), what)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn loose(mirror: &Path, names: impl IntoIterator<Item = String>) {
        let dir = mirror.join("objects/17");
        fs::create_dir_all(&dir).unwrap();
        for name in names {
            fs::write(dir.join(name), "").unwrap();
        }
    }

    #[test]
    fn gc_is_due_past_gits_default_thresholds_only() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path();
        assert!(!gc_due(mirror), "an empty mirror");
        loose(mirror, (0..27).map(|n| format!("{n:038x}")));
        // Not objects, as git counts them: other lengths, upper case.
        loose(mirror, ["abc".to_string(), format!("{:038X}", 0xABCDEFu64)]);
        assert!(!gc_due(mirror), "27 loose objects are within gc.auto");
        loose(mirror, [format!("{:038x}", 999)]);
        assert!(gc_due(mirror), "28 loose objects are past gc.auto");

        let dir = tempfile::tempdir().unwrap();
        loose(dir.path(), (0..28).map(|n| format!("{n:062x}")));
        assert!(
            gc_due(dir.path()),
            "28 loose objects of a SHA-256 repository"
        );

        let dir = tempfile::tempdir().unwrap();
        let packs = dir.path().join("objects/pack");
        fs::create_dir_all(&packs).unwrap();
        for n in 0..51 {
            fs::write(packs.join(format!("pack-{n}.pack")), "").unwrap();
        }
        fs::write(packs.join("pack-0.keep"), "").unwrap();
        assert!(!gc_due(dir.path()), "50 packs without a .keep");
        fs::write(packs.join("pack-51.pack"), "").unwrap();
        assert!(gc_due(dir.path()), "51 packs without a .keep");
    }
}
