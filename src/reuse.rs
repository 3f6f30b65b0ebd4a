//! Dependency directories reused when what they are built from did not
//! change (`[[reuse]]`, SPEC §11).
//!
//! Each entry names a directory of the release (`node_modules`), the files
//! it is built from (`package-lock.json`; globs allowed), optionally
//! environment variables and a command whose output belong to the key
//! (`node --version`: a native module built for another runtime is not
//! the same tree), and the commands that build it. Before the build hooks,
//! the key is hashed; when the newest release that **was proven live** has
//! the same key, the directory is copied into the new release from a
//! pristine copy kept when it was built (never from a live release, whose
//! directory the app may have written into at runtime), and the commands
//! are skipped. Otherwise they run, and a pristine copy of what they built
//! is kept under `.shipit/reuse/<release>/`.
//!
//! The copy is the new release's own: cloned where the filesystem allows,
//! copied otherwise (see `copy`), never hardlinked. A failed, refused or
//! rolled-back release is never a source. The key's hash is recorded in
//! the release's metadata; the values it was made from are never printed.
//!
//! Pristine copies go when no release refers to them any more (after a
//! prune, and before a deploy for what a crash left).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::ReuseConfig;
use crate::context::Ctx;
use crate::copy::Copier;
use crate::error::{Error, IoContext, Result};
use crate::hooks;
use crate::layout::{Layout, ReleaseId};
use crate::store::{self, Release, ReuseRecord as Record, Status};

/// How long the key's command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the pristine copies of `release`'s built directories live.
pub fn pristine_dir(layout: &Layout, release: &ReleaseId) -> PathBuf {
    layout.state().join("reuse").join(release.as_str())
}

/// Reuse or build every `[[reuse]]` directory of the release in `staging`,
/// before the build hooks. `env` is the hooks' environment; it gains
/// `SHIPIT_REUSED`, the reused directories separated by spaces. The
/// copies come from `releases`, this host's releases.
pub fn prepare(
    ctx: &Ctx,
    id: &ReleaseId,
    staging: &Path,
    env: &mut Vec<(String, String)>,
    log: &mut File,
    releases: &[store::Release],
) -> Result<BTreeMap<String, Record>> {
    if ctx.config.reuse.is_empty() {
        return Ok(BTreeMap::new());
    }
    let find = |path: &str, key: &str| source(&ctx.layout, releases, path, key);
    prepare_from(ctx, id, staging, env, log, &find)
}

/// Where a reused directory may come from: for a `[[reuse]]` path and its
/// key's hash, the newest release that proved itself with that key (whose
/// pristine copy is on disk) and its record.
pub type Sources<'a> = dyn Fn(&str, &str) -> Option<(ReleaseId, Record)> + 'a;

/// [`prepare`], with the releases that proved themselves told by `find`
/// (a fleet's controller keeps no releases, but its history says which
/// rollouts went well on every host).
pub fn prepare_from(
    ctx: &Ctx,
    id: &ReleaseId,
    staging: &Path,
    env: &mut Vec<(String, String)>,
    log: &mut File,
    find: &Sources,
) -> Result<BTreeMap<String, Record>> {
    let mut records = BTreeMap::new();
    if ctx.config.reuse.is_empty() {
        return Ok(records);
    }
    let layout = &ctx.layout;
    let mut reused = Vec::new();
    let mut excluded: Vec<PathBuf> = ctx.config.reuse.iter().map(|e| e.dir()).collect();
    excluded.push(PathBuf::from(".git"));
    env.push(("SHIPIT_BUILD_PATH".into(), staging.display().to_string()));
    for entry in &ctx.config.reuse {
        crate::interrupt::check()?;
        let (key, unmatched) = key_of(entry, staging, env, &excluded)?;
        for pattern in unmatched {
            ctx.ui.warn(format!(
                "key pattern {pattern:?} of [[reuse]] path = {:?} matches no file in the \
                 release: it cannot tell when {} must be built again",
                entry.path, entry.path
            ));
        }
        let dir = entry.dir();
        let target = staging.join(&dir);
        refuse_links(staging, &dir, &entry.path)?;
        match find(&entry.path, &key) {
            Some((from, record)) => {
                let pristine = pristine_dir(layout, &record.built_by).join(&dir);
                remove_any(&target)?;
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).with_path("could not create", parent)?;
                }
                fs::create_dir(&target).with_path("could not create", &target)?;
                let mut copier = Copier::new();
                copier.tree(&pristine, &target)?;
                ctx.ui.step(
                    "Reused",
                    format!(
                        "{} from {} (key unchanged; {})",
                        entry.path,
                        Layout::display(&from),
                        copier.summary()
                    ),
                );
                records.insert(
                    entry.path.clone(),
                    Record {
                        key,
                        built_by: record.built_by,
                        reused_from: Some(from),
                    },
                );
                reused.push(entry.path.clone());
            }
            None => {
                ctx.ui.step(
                    "Building",
                    format!(
                        "{} (no release that proved itself has this key)",
                        entry.path
                    ),
                );
                set_reused(env, &reused);
                hooks::run_each(
                    hooks::Kind::Build,
                    "Building",
                    &entry.run,
                    (staging, env),
                    (ctx.config.hooks.build_timeout, "hooks.build_timeout"),
                    &ctx.ui,
                    log,
                )?;
                if !target.is_dir() {
                    return Err(Error::internal(format!(
                        "the run commands of [[reuse]] path = {:?} did not create {}",
                        entry.path,
                        target.display()
                    ))
                    .hint("make run build that directory, or fix path"));
                }
                // A tree that names where it was built (a Python venv)
                // breaks once that path is gone: it is no source to copy.
                let places = [staging.to_path_buf(), layout.release(id)];
                if let Some(file) = names_its_build_path(&target, &places) {
                    ctx.ui.warn(format!(
                        "{} is not kept for reuse: {} names the path it was built in, which \
                         will not exist once the release is published or pruned, so a copy \
                         of it would not work; the next deploy builds it again\n\
                         hint: build it with relative paths, or leave it out of [[reuse]]",
                        entry.path,
                        file.strip_prefix(staging).unwrap_or(&file).display()
                    ));
                    continue;
                }
                let pristine = pristine_dir(layout, id).join(&dir);
                remove_any(&pristine)?;
                fs::create_dir_all(&pristine).with_path("could not create", &pristine)?;
                Copier::new().tree(&target, &pristine)?;
                records.insert(
                    entry.path.clone(),
                    Record {
                        key,
                        built_by: id.clone(),
                        reused_from: None,
                    },
                );
            }
        }
    }
    env.retain(|(k, _)| k != "SHIPIT_BUILD_PATH");
    set_reused(env, &reused);
    Ok(records)
}

/// Nothing on the way to a reused directory, nor the directory itself,
/// may be a symlink: removing or filling it would act outside the release.
fn refuse_links(staging: &Path, dir: &Path, shown: &str) -> Result<()> {
    let mut at = staging.to_path_buf();
    for part in dir.components() {
        at.push(part);
        if at.is_symlink() {
            return Err(Error::internal(format!(
                "[[reuse]] path = {shown:?} goes through a symlink in the release ({})",
                at.display()
            ))
            .hint("reuse the real directory (name it in path), or remove the symlink from the repository"));
        }
    }
    Ok(())
}

/// How much of an executable file is read for its `#!` line.
const SHEBANG_BYTES: usize = 512;
/// How much of a `pyvenv.cfg` is read.
const CONFIG_BYTES: u64 = 64 << 10;

/// The first file of the tree at `dir` that names one of `places` (the
/// paths the tree was built in): a `#!` line of an executable file (the
/// scripts of a virtualenv, the start of what a build can write), or a
/// `pyvenv.cfg`. Cheap on purpose: it reads only the first
/// [`SHEBANG_BYTES`] of files that have an execute bit, and no other
/// file's content, so a 30,000-file `node_modules` costs a walk.
fn names_its_build_path(dir: &Path, places: &[PathBuf]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for place in places {
        for path in [Some(place.clone()), place.canonicalize().ok()]
            .into_iter()
            .flatten()
        {
            let bytes = path.into_os_string().into_encoded_bytes();
            if !needles.contains(&bytes) {
                needles.push(bytes);
            }
        }
    }
    let names = |text: &[u8]| {
        needles
            .iter()
            .any(|n| text.windows(n.len()).any(|w| w == n.as_slice()))
    };
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.path();
        if entry.file_name() == "pyvenv.cfg" {
            let mut text = Vec::new();
            let read = File::open(path).and_then(|f| f.take(CONFIG_BYTES).read_to_end(&mut text));
            if read.is_ok() && names(&text) {
                return Some(path.to_path_buf());
            }
            continue;
        }
        let executable = entry
            .metadata()
            .is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
        if !executable {
            continue;
        }
        let mut head = Vec::with_capacity(SHEBANG_BYTES);
        let Ok(_) =
            File::open(path).and_then(|f| f.take(SHEBANG_BYTES as u64).read_to_end(&mut head))
        else {
            continue;
        };
        if let Some(line) = head.strip_prefix(b"#!") {
            let line = line.split(|b| *b == b'\n').next().unwrap_or(line);
            if names(line) {
                return Some(path.to_path_buf());
            }
        }
    }
    None
}

fn set_reused(env: &mut Vec<(String, String)>, reused: &[String]) {
    env.retain(|(k, _)| k != "SHIPIT_REUSED");
    env.push(("SHIPIT_REUSED".into(), reused.join(" ")));
}

fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).with_path("could not remove", path),
        Ok(_) => fs::remove_file(path).with_path("could not remove", path),
        Err(_) => Ok(()),
    }
}

/// The newest release that proved itself, is neither failed nor rolled
/// back, has `key` for `path`, and whose pristine copy is on disk.
fn source(
    layout: &Layout,
    releases: &[Release],
    path: &str,
    key: &str,
) -> Option<(ReleaseId, Record)> {
    releases.iter().rev().find_map(|release| {
        let meta = release.meta.as_ref()?;
        let usable = release.proven && !matches!(meta.status, Status::Failed | Status::RolledBack);
        let record = meta.reuse.get(path)?;
        let dir = pristine_dir(layout, &record.built_by).join(path.trim_end_matches('/'));
        (usable && record.key == key && dir.is_dir()).then(|| (release.id.clone(), record.clone()))
    })
}

/// The key's hash: the directory's name and the commands that build it,
/// the key files (path and a digest of the content, in path order; a
/// pattern that matches nothing counts too), the variables (name and
/// value), and the command's output. Also the patterns that matched
/// nothing, for a warning (a typo would otherwise keep the key constant).
fn key_of(
    entry: &ReuseConfig,
    staging: &Path,
    env: &[(String, String)],
    excluded: &[PathBuf],
) -> Result<(String, Vec<String>)> {
    let mut hash = Sha256::new();
    let mut field = |parts: &[&[u8]]| {
        for part in parts {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
    };
    field(&[b"shipit-reuse-2", entry.path.as_bytes()]);
    for run in &entry.run {
        field(&[b"run", run.as_bytes()]);
    }
    let root = staging
        .canonicalize()
        .with_path("could not resolve", staging)?;
    let mut unmatched = Vec::new();
    for (pattern, files) in key_files(entry, staging, excluded)? {
        if files.is_empty() {
            field(&[b"no match", pattern.as_bytes()]);
            unmatched.push(pattern);
        }
        for rel in files {
            let path = staging.join(&rel);
            // A key file may be a link, but not to outside the release:
            // its content would then decide nothing about the release.
            let real = path.canonicalize().with_path("could not resolve", &path)?;
            if !real.starts_with(&root) {
                return Err(Error::internal(format!(
                    "key file {} of [[reuse]] path = {:?} leads out of the release (to {})",
                    rel.display(),
                    entry.path,
                    real.display()
                ))
                .hint("key files must be files of the release: commit the file itself, not a link to it"));
            }
            let mut digest = Sha256::new();
            File::open(&real)
                .and_then(|mut f| std::io::copy(&mut f, &mut digest))
                .with_path("could not read the key file", &path)?;
            field(&[
                b"file",
                rel.as_os_str().as_encoded_bytes(),
                &digest.finalize(),
            ]);
        }
    }
    for name in &entry.env {
        match std::env::var_os(name) {
            Some(value) => field(&[b"env", name.as_bytes(), value.as_encoded_bytes()]),
            None => field(&[b"env unset", name.as_bytes()]),
        }
    }
    if let Some(command) = &entry.command {
        let output = command_output(command, staging, env).map_err(|e| {
            e.context(format!(
                "the key command of [[reuse]] path = {:?}",
                entry.path
            ))
        })?;
        field(&[b"command", command.as_bytes(), &output]);
    }
    Ok((format!("{:x}", hash.finalize()), unmatched))
}

/// The files each key pattern matches (links to files included), relative
/// to `staging`, sorted. `excluded` directories (the reused ones, `.git`)
/// are never searched.
fn key_files(
    entry: &ReuseConfig,
    staging: &Path,
    excluded: &[PathBuf],
) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    for pattern in &entry.key {
        let is_glob = pattern.contains(['*', '?', '[', '{']);
        if !is_glob {
            let path = PathBuf::from(pattern);
            let found = staging.join(&path).is_file();
            out.push((pattern.clone(), if found { vec![path] } else { vec![] }));
            continue;
        }
        let matcher = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::usage(format!("key pattern {pattern:?}: {e}")))?
            .compile_matcher();
        let mut files = Vec::new();
        let walk = walkdir::WalkDir::new(staging)
            .min_depth(1)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                let rel = e.path().strip_prefix(staging).unwrap_or(e.path());
                !excluded.iter().any(|d| rel == d.as_path())
            });
        for e in walk {
            let e = e.map_err(|e| Error::internal("could not search the release").cause(e))?;
            // A link counts when it leads to a file (checked to stay in the
            // release when it is read).
            if !e.path().is_file() {
                continue;
            }
            let rel = e
                .path()
                .strip_prefix(staging)
                .unwrap_or(e.path())
                .to_path_buf();
            if matcher.is_match(&rel) {
                files.push(rel);
            }
        }
        files.sort();
        out.push((pattern.clone(), files));
    }
    Ok(out)
}

/// Run the key command in `cwd`, in a process group of its own that dies
/// with shipit, and return a digest of its standard output. A failure, or
/// a command (or something it started) still running after
/// [`COMMAND_TIMEOUT`], is an error that quotes the start of its stderr.
fn command_output(command: &str, cwd: &Path, env: &[(String, String)]) -> Result<Vec<u8>> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    crate::procs::die_with_shipit(&mut cmd);
    crate::procs::without_git_env(&mut cmd);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::internal(format!("could not run `{command}`")).cause(e))?;
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut digest = Sha256::new();
        let _ = std::io::copy(&mut stdout, &mut digest);
        digest.finalize().to_vec()
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = (&mut stderr).take(4096).read_to_end(&mut text);
        // Keep reading so the command never blocks on a full pipe.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        text
    });
    let deadline = crate::clock::after(COMMAND_TIMEOUT);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => break None,
        }
    };
    // Whatever it left behind goes with it, so the pipes close.
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    let output = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    let said = match stderr.trim() {
        "" => String::new(),
        text => format!("; it said: {text}"),
    };
    match status {
        None => Err(Error::internal(format!(
            "`{command}` did not finish within {}s{said}",
            COMMAND_TIMEOUT.as_secs()
        ))),
        Some(status) if !status.success() => Err(Error::internal(format!(
            "`{command}` failed ({status}){said}"
        ))
        .hint("the key command must succeed; run it in the release to see why")),
        Some(_) => Ok(output),
    }
}

/// Remove the pristine copies no release refers to any more.
pub fn forget_unused(layout: &Layout) -> Vec<(PathBuf, Option<Error>)> {
    let root = layout.state().join("reuse");
    let Ok(entries) = fs::read_dir(&root) else {
        return Vec::new();
    };
    let Ok(listing) = store::list(layout) else {
        return Vec::new();
    };
    let used: Vec<ReleaseId> = listing
        .releases
        .iter()
        .filter_map(|r| r.meta.as_ref())
        .flat_map(|m| m.reuse.values().map(|r| r.built_by.clone()))
        .collect();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let keep = ReleaseId::parse(&name).is_ok_and(|id| used.contains(&id));
        if keep {
            continue;
        }
        let path = entry.path();
        let result = fs::remove_dir_all(&path)
            .map_err(|e| Error::io("could not remove", &path, e))
            .err();
        removed.push((path, result));
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn executable(path: &Path, text: &str) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A venv's scripts and `pyvenv.cfg` name where it was built; a
    /// file that only mentions the path (not executable, not a `#!` line)
    /// is not read.
    #[test]
    fn a_tree_that_names_its_build_path_is_found_by_its_shebang_or_pyvenv_cfg() {
        let dir = tempfile::tempdir().unwrap();
        let built = dir.path().join("staging/venv");
        fs::create_dir_all(built.join("bin")).unwrap();
        let places = [dir.path().join("staging")];
        let at = places[0].display().to_string();
        fs::write(
            built.join("bin/activate"),
            format!("VIRTUAL_ENV={at}/venv\n"),
        )
        .unwrap();
        executable(&built.join("bin/run"), "#!/bin/sh\necho /staging\n");
        executable(&built.join("bin/later"), &format!("#!/bin/sh\n# {at}\n"));
        assert_eq!(names_its_build_path(&built, &places), None);

        executable(
            &built.join("bin/pip"),
            &format!("#!{at}/venv/bin/python3\n"),
        );
        assert_eq!(
            names_its_build_path(&built, &places),
            Some(built.join("bin/pip"))
        );
        fs::remove_file(built.join("bin/pip")).unwrap();
        fs::write(
            built.join("pyvenv.cfg"),
            format!("home = /usr/bin\ncommand = /usr/bin/python3 -m venv {at}/venv\n"),
        )
        .unwrap();
        assert_eq!(
            names_its_build_path(&built, &places),
            Some(built.join("pyvenv.cfg"))
        );
    }
}
