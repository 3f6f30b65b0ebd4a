//! Sources as users have them: submodules, a subdirectory of a
//! monorepo, signed commits, the commit time, the config found from a
//! subdirectory.

use std::fs;
use std::path::{Path, PathBuf};

use crate::sandbox::{Sandbox, git};

/// A second repository `name` next to the app, with one commit of `file`.
fn side_repo(sb: &Sandbox, name: &str, file: &str, content: &str) -> PathBuf {
    let dir = sb.path().join(name);
    fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    fs::write(dir.join(file), content).unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "first"]);
    dir
}

/// Add `url` as a submodule at `path` of the repository `repo`, commit.
fn add_submodule(repo: &Path, url: &str, path: &str) {
    git(
        repo,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            url,
            path,
        ],
    );
    git(repo, &["commit", "-q", "-m", &format!("add {path}")]);
}

/// Regression: a submodule was deployed as an empty directory, exit
/// 0, no warning.
#[test]
fn a_submodule_is_deployed_with_its_files() {
    let sb = Sandbox::new();
    let lib = side_repo(&sb, "lib", "lib.txt", "lib v1\n");
    add_submodule(&sb.repo(), lib.to_str().unwrap(), "vendor/lib");
    let id = sb.deploy();
    let release = sb.deploy_to().join("releases").join(&id);
    assert_eq!(
        fs::read_to_string(release.join("vendor/lib/lib.txt")).unwrap_or_default(),
        "lib v1\n",
        "the submodule's files are in the release"
    );
    assert!(!release.join("vendor/lib/.git").exists());
}

/// Nothing was published and nothing is live.
#[track_caller]
fn nothing_published(sb: &Sandbox) {
    assert!(sb.releases().is_empty(), "{:?}", sb.releases());
    assert!(sb.current().is_none());
    let staging = sb.deploy_to().join(".shipit/staging");
    assert!(crate::sandbox::dir_names(&staging).is_empty());
}

#[test]
fn relative_and_nested_submodules_are_fetched_from_where_git_would() {
    let sb = Sandbox::new();
    let inner = side_repo(&sb, "inner", "inner.txt", "inner v1\n");
    let lib = side_repo(&sb, "lib", "lib.txt", "lib v1\n");
    add_submodule(&lib, inner.to_str().unwrap(), "deps/inner");
    // Relative to the superproject's URL, as git resolves it.
    add_submodule(&sb.repo(), "../lib", "vendor/lib");
    let id = sb.deploy();
    let release = sb.deploy_to().join("releases").join(&id);
    assert_eq!(
        fs::read_to_string(release.join("vendor/lib/deps/inner/inner.txt")).unwrap(),
        "inner v1\n"
    );
    // The pinned commit, not the submodule's newest one.
    fs::write(lib.join("lib.txt"), "lib v2\n").unwrap();
    git(&lib, &["commit", "-q", "-am", "v2"]);
    sb.commit("index.html", "v2\n");
    let id = sb.deploy();
    let release = sb.deploy_to().join("releases").join(&id);
    assert_eq!(
        fs::read_to_string(release.join("vendor/lib/lib.txt")).unwrap(),
        "lib v1\n"
    );
}

#[test]
fn submodules_false_skips_them_and_names_them() {
    let sb = Sandbox::new();
    let lib = side_repo(&sb, "lib", "lib.txt", "lib v1\n");
    add_submodule(&sb.repo(), lib.to_str().unwrap(), "vendor/lib");
    sb.write_config_replacing("branch = \"main\"", "branch = \"main\"\nsubmodules = false");
    let run = sb.run(&["deploy"]);
    run.ok().says("vendor/lib");
    assert!(run.stderr.contains("submodules = false"), "{}", run.stderr);
    let release = sb.deploy_to().join("releases").join(sb.current().unwrap());
    assert!(!release.join("vendor/lib/lib.txt").exists());
}

#[test]
fn a_submodule_url_git_would_refuse_is_refused_before_anything_is_staged() {
    for (url, says) in [
        ("ext::sh -c touch% pwned", "`ext::`"),
        ("-uhttps://example.invalid/x", "'-'"),
        ("ftp://example.invalid/x.git", "`ftp://`"),
    ] {
        let sb = Sandbox::new();
        let lib = side_repo(&sb, "lib", "lib.txt", "lib v1\n");
        add_submodule(&sb.repo(), lib.to_str().unwrap(), "vendor/lib");
        git(
            &sb.repo(),
            &[
                "config",
                "-f",
                ".gitmodules",
                "submodule.vendor/lib.url",
                url,
            ],
        );
        git(&sb.repo(), &["commit", "-q", "-am", "hostile url"]);
        let run = sb.run(&["deploy"]);
        assert_ne!(run.code, 0, "{url}");
        run.says("vendor/lib").says(says);
        nothing_published(&sb);
        assert!(!sb.path().join("pwned").exists());
        assert!(!sb.deploy_to().join(".shipit/modules").exists());
    }
}

#[test]
fn a_pinned_commit_missing_upstream_is_a_preflight_error() {
    let sb = Sandbox::new();
    let lib = side_repo(&sb, "lib", "lib.txt", "lib v1\n");
    add_submodule(&sb.repo(), lib.to_str().unwrap(), "vendor/lib");
    // Committed in the superproject's checkout of the submodule, never
    // pushed to its repository.
    let checkout = sb.repo().join("vendor/lib");
    fs::write(checkout.join("lib.txt"), "unpushed\n").unwrap();
    git(&checkout, &["commit", "-q", "-am", "unpushed"]);
    let pinned = git(&checkout, &["rev-parse", "HEAD"]);
    git(
        &sb.repo(),
        &["commit", "-q", "-am", "pin an unpushed commit"],
    );
    let run = sb.run(&["deploy"]);
    assert_ne!(run.code, 0);
    run.says("vendor/lib").says(&pinned);
    nothing_published(&sb);
}

/// A monorepo: two apps, a root `.gitattributes`, a submodule inside one
/// app.
fn monorepo(sb: &Sandbox) {
    sb.commit("apps/web/index.html", "web\n");
    sb.commit("apps/web/notes.md", "not for production\n");
    sb.commit("apps/api/index.html", "api\n");
    sb.commit(".gitattributes", "*.md export-ignore\n");
}

#[test]
fn a_subdirectory_of_the_repository_is_the_release_root() {
    let sb = Sandbox::new();
    monorepo(&sb);
    let lib = side_repo(&sb, "lib", "lib.txt", "lib v1\n");
    add_submodule(&sb.repo(), lib.to_str().unwrap(), "apps/web/vendor/lib");
    for (app, served) in [("apps/web", "web\n"), ("apps/api/", "api\n")] {
        let deploy_to = format!("deploy-{}", &app[5..8]);
        sb.write_config_replacing(
            "deploy_to = \"deploy\"",
            &format!("deploy_to = \"{deploy_to}\""),
        );
        sb.write_config_replacing(
            "branch = \"main\"",
            &format!("branch = \"main\"\nsubdir = \"{app}\""),
        );
        sb.run(&["deploy"]).ok();
        let current = sb.path().join(&deploy_to).join("current");
        assert_eq!(
            fs::read_to_string(current.join("index.html")).unwrap(),
            served
        );
        assert!(
            !current.join("apps").exists(),
            "only the subdir is exported"
        );
        // The root's .gitattributes applies inside the subdir.
        assert!(!current.join("notes.md").exists());
        sb.write_config("");
    }
    let web = sb.path().join("deploy-web/current");
    assert_eq!(
        fs::read_to_string(web.join("vendor/lib/lib.txt")).unwrap(),
        "lib v1\n",
        "a submodule inside the subdir is exported"
    );
}

#[test]
fn a_subdirectory_missing_at_the_revision_is_refused_naming_it() {
    let sb = Sandbox::new();
    let head = git(&sb.repo(), &["rev-parse", "HEAD"]);
    sb.write_config_replacing(
        "branch = \"main\"",
        "branch = \"main\"\nsubdir = \"apps/web\"",
    );
    let run = sb.run(&["deploy"]);
    assert_ne!(run.code, 0);
    run.says("\"apps/web\" does not exist").says(&head);
    nothing_published(&sb);
}

/// An ssh signing key made for the test: its private key's path and its
/// allowed-signers line.
fn signing_key(sb: &Sandbox, name: &str) -> (PathBuf, String) {
    let key = sb.path().join(name);
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ssh-keygen runs");
    crate::sandbox::succeeded(&out);
    let public = fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut parts = public.split_whitespace();
    let line = format!(
        "test@example.invalid {} {}\n",
        parts.next().unwrap(),
        parts.next().unwrap()
    );
    (key, line)
}

/// Commit `content` to index.html signed with `key` (None: unsigned).
fn commit_signed(sb: &Sandbox, content: &str, key: Option<&Path>) -> String {
    fs::write(sb.repo().join("index.html"), content).unwrap();
    let mut args = vec!["-c".to_string(), "gpg.format=ssh".to_string()];
    if let Some(key) = key {
        args.extend(["-c".into(), format!("user.signingkey={}", key.display())]);
    }
    args.extend(["commit", "-q", "-a", "-m", content].map(String::from));
    if key.is_some() {
        args.push("-S".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    git(&sb.repo(), &args);
    git(&sb.repo(), &["rev-parse", "HEAD"])
}

#[test]
fn verify_signed_deploys_only_commits_signed_by_an_allowed_key() {
    let sb = Sandbox::new();
    let (good, allowed) = signing_key(&sb, "good");
    let (stranger, _) = signing_key(&sb, "stranger");
    fs::write(sb.path().join("deploy-signers"), allowed).unwrap();
    sb.write_config_replacing(
        "branch = \"main\"",
        "branch = \"main\"\nverify = \"signed\"\nallowed_signers = \"deploy-signers\"",
    );

    let unsigned = commit_signed(&sb, "unsigned\n", None);
    let run = sb.run(&["deploy"]);
    assert_ne!(run.code, 0);
    run.says(&unsigned)
        .says("no signature")
        .says("deploy-signers");
    nothing_published(&sb);

    let foreign = commit_signed(&sb, "foreign\n", Some(&stranger));
    let run = sb.run(&["deploy"]);
    assert_ne!(run.code, 0);
    run.says(&foreign).says("No principal matched");
    nothing_published(&sb);

    commit_signed(&sb, "signed\n", Some(&good));
    sb.deploy();
    assert_eq!(sb.served(), "signed\n");
}

#[test]
fn the_commit_time_is_recorded_beside_the_revision() {
    let sb = Sandbox::new();
    fs::write(sb.repo().join("index.html"), "dated\n").unwrap();
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=T", "-c", "user.email=t@example.invalid"])
        .args(["commit", "-q", "-am", "dated"])
        .current_dir(sb.repo())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_COMMITTER_DATE", "2024-02-29T12:34:56+02:00")
        .output()
        .unwrap();
    crate::sandbox::succeeded(&out);
    sb.deploy();
    let json = sb.releases_json();
    let release = &json["releases"][0];
    assert_eq!(release["revision_time"], "2024-02-29T10:34:56Z");
}

impl Sandbox {
    /// `shipit deploy` that must succeed, with the live link at `link`;
    /// returns the release id it points at.
    fn deploy_in(&self, link: &Path) -> String {
        self.run(&["deploy"]).ok();
        let target = fs::read_link(link).expect("the live link exists");
        target.file_name().unwrap().to_string_lossy().into_owned()
    }
}

/// `shipit args` run in `dir`.
fn run_in(sb: &Sandbox, dir: &Path, args: &[&str]) -> crate::sandbox::Run {
    let out = sb.command(args).current_dir(dir).output().unwrap();
    crate::sandbox::Run::from(args, out)
}

#[test]
fn the_config_is_found_from_a_subdirectory_and_named() {
    let sb = Sandbox::new();
    let deep = sb.path().join("docs/guides");
    fs::create_dir_all(&deep).unwrap();
    let run = run_in(&sb, &deep, &["deploy"]);
    run.ok();
    let config = sb.config_path().display().to_string();
    let first = run.stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("Config") && first.ends_with(&config),
        "the first line names the config: {first:?}"
    );
    assert_eq!(sb.served(), "v1\n");
    // Errors name it too.
    run_in(&sb, &deep, &["rollback"])
        .code(2)
        .says(&format!("config: {config}"));
    // `check` names the file it found.
    let run = run_in(&sb, &deep, &["check"]);
    assert!(run.stdout.contains(&config), "{}", run.stdout);
}

#[test]
fn a_config_inside_a_release_is_refused() {
    let sb = Sandbox::new();
    // The repository ships a shipit.toml of its own.
    sb.commit(
        "shipit.toml",
        "deploy_to = \"/srv/elsewhere\"\n[source]\ngit = \"/nowhere\"\n",
    );
    sb.deploy();
    let before = sb.fingerprint();
    let inside = sb.deploy_to().join("current");
    let run = run_in(&sb, &inside, &["deploy"]);
    run.code(2).says("inside the release").says("--config");
    assert_eq!(sb.fingerprint(), before);
    // Explicitly named, the deploy's own config works from there.
    let config = sb.config_path().display().to_string();
    run_in(&sb, &inside, &["-c", &config, "releases"]).ok();
}

#[test]
fn current_path_puts_the_live_link_elsewhere_and_everything_follows_it() {
    let sb = Sandbox::new();
    let www = sb.path().join("var/www");
    fs::create_dir_all(&www).unwrap();
    let html = www.join("html");
    sb.write_config(&format!("current_path = \"{}\"\n", html.display()));
    let first = sb.deploy_in(&html);
    assert_eq!(
        fs::read_link(&html).unwrap(),
        Path::new("../../deploy/releases").join(&first),
        "relative, from its own directory"
    );
    assert_eq!(fs::read_to_string(html.join("index.html")).unwrap(), "v1\n");
    assert!(!sb.deploy_to().join("current").exists());
    sb.commit("index.html", "v2\n");
    let second = sb.deploy_in(&html);
    assert_ne!(first, second);
    assert_eq!(fs::read_to_string(html.join("index.html")).unwrap(), "v2\n");
    let json = sb.releases_json();
    assert_eq!(json["current"], second.as_str());
    assert_eq!(json["releases"][0]["status"], "live");
    // Rollback reads what is live through it, and moves it.
    sb.run(&["rollback"]).ok();
    assert_eq!(fs::read_to_string(html.join("index.html")).unwrap(), "v1\n");
    assert_eq!(sb.releases_json()["current"], first.as_str());
    // No temporary link is left beside it.
    assert_eq!(crate::sandbox::dir_names(&www), ["html"]);
}

#[test]
fn a_real_directory_at_current_path_is_refused_with_how_to_move_it() {
    let sb = Sandbox::new();
    let html = sb.path().join("var/www/html");
    fs::create_dir_all(&html).unwrap();
    fs::write(html.join("index.html"), "Apache2 Debian Default Page\n").unwrap();
    sb.write_config(&format!("current_path = \"{}\"\n", html.display()));
    let run = sb.run(&["deploy"]);
    run.code(2)
        .says("not a symlink")
        .says(&format!("mv {0} {0}.old", html.display()));
    assert!(sb.releases().is_empty());
    assert_eq!(
        fs::read_to_string(html.join("index.html")).unwrap(),
        "Apache2 Debian Default Page\n"
    );
}

#[test]
fn the_search_for_the_config_stops_at_a_mount_point() {
    if !crate::sandbox::root_or_say_skipped("the_search_for_the_config_stops_at_a_mount_point") {
        return;
    }
    let sb = Sandbox::new();
    let mnt = sb.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&mnt)
        .output()
        .unwrap();
    if !mount.status.success() {
        eprintln!(
            "*** SKIPPED the_search_for_the_config_stops_at_a_mount_point: mount -t tmpfs failed: {} ***",
            String::from_utf8_lossy(&mount.stderr)
        );
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let inside = mnt.join("project");
    fs::create_dir_all(&inside).unwrap();
    // The sandbox's shipit.toml is above the mount point: not this tree's.
    run_in(&sb, &inside, &["releases"])
        .code(2)
        .says("no config file")
        .says(&inside.display().to_string());
    // Within the mounted filesystem, the search goes up as usual.
    fs::write(
        mnt.join("shipit.toml"),
        fs::read_to_string(sb.config_path()).unwrap(),
    )
    .unwrap();
    run_in(&sb, &inside, &["releases"]).ok();
}

#[test]
fn a_submodule_without_a_url_is_an_error_not_an_empty_directory() {
    let sb = Sandbox::new();
    let lib = side_repo(&sb, "lib", "lib.txt", "lib v1\n");
    let pinned = git(&lib, &["rev-parse", "HEAD"]);
    // A gitlink that .gitmodules does not describe.
    git(
        &sb.repo(),
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{pinned},vendor/lib"),
        ],
    );
    git(&sb.repo(), &["commit", "-q", "-m", "gitlink only"]);
    let run = sb.run(&["deploy"]);
    assert_ne!(run.code, 0);
    run.says("vendor/lib").says("no url in .gitmodules");
    nothing_published(&sb);
}
