//! Refs and branch names come from outside (a `--ref`, a config, a push):
//! the one check they pass before git sees them, kept apart so that the
//! config and the source code can both use it without needing each other.

use crate::error::{Error, Result};

/// Reject refs that git could take for an option or that cannot be a
/// revision. Anything else is passed to git as one argument.
pub fn check_ref(reference: &str) -> Result<()> {
    let bad = reference.is_empty()
        || reference.len() > 255
        || reference.starts_with('-')
        || reference.contains("..")
        || reference
            .chars()
            .any(|c| c.is_control() || c.is_whitespace());
    if bad {
        return Err(
            Error::usage(format!("{reference:?} is not a usable git ref")).hint(
                "give a branch, tag or commit sha, e.g. --ref main, --ref v1.2.0 or --ref 3f2a9c1",
            ),
        );
    }
    Ok(())
}

/// How a repository URL is reached, once it passed [`check_url`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A path on this machine (or `file://`): git refuses it for
    /// submodules unless told (`protocol.file.allow`).
    Local,
    /// http(s), ssh, git: what git allows for submodules by default.
    Network,
}

/// Check a repository URL that came from a repository's `.gitmodules`
/// (untrusted: whoever can push to the repository wrote it) before git
/// sees it. Refused: a leading `-` (git or ssh would take it for an
/// option), control characters, git's `<helper>::` transports (`ext::`
/// runs any command), and schemes other than the ones git allows for
/// submodules by default (http, https, ssh, git) or a local path.
pub fn check_url(url: &str) -> std::result::Result<Transport, String> {
    if url.is_empty() {
        return Err("it is empty".into());
    }
    if url.starts_with('-') {
        return Err("it begins with '-', which git would take for an option".into());
    }
    if url.chars().any(|c| c.is_control()) {
        return Err("it contains control characters".into());
    }
    if let Some((helper, _)) = url.split_once("::")
        && !helper.contains('/')
    {
        let why = if helper == "ext" {
            " (it runs a command)"
        } else {
            ""
        };
        return Err(format!(
            "it uses git's `{helper}::` transport{why}, which git itself refuses for submodules"
        ));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let host = rest.split(['/', '@']).find(|s| !s.is_empty()).unwrap_or("");
        let after_user = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        if after_user.starts_with('-') || host.starts_with('-') {
            return Err("its host begins with '-', which ssh would take for an option".into());
        }
        return match scheme {
            "file" => Ok(Transport::Local),
            "http" | "https" | "ssh" | "git" | "git+ssh" | "ssh+git" => Ok(Transport::Network),
            other => Err(format!(
                "its scheme `{other}://` is not one git allows for submodules (https, http, ssh, git, file)"
            )),
        };
    }
    if url.starts_with('/') {
        return Ok(Transport::Local);
    }
    // scp-like `[user@]host:path`: ssh.
    match url.split_once(':') {
        Some((host, _)) if !host.contains('/') => Ok(Transport::Network),
        // Relative URLs were resolved against the repository's URL
        // ([`join_url`]); what is left would be relative to wherever
        // shipit runs.
        _ => Err(
            "it is a relative path that does not begin with ./ or ../, so it names no repository"
                .into(),
        ),
    }
}

/// Resolve a submodule URL against the URL of the repository that names
/// it, as git does: `./x` and `../x` are relative to the superproject's
/// URL (each `../` drops one path component; for `host:path` the colon
/// stops it); anything else is already absolute.
pub fn join_url(base: &str, url: &str) -> String {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return url.to_string();
    }
    let mut base = base.trim_end_matches('/').to_string();
    let mut rest = url;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            rest = r;
            match base.rfind(['/', ':']) {
                Some(i) if base.as_bytes()[i] == b':' => base.truncate(i + 1),
                Some(i) => base.truncate(i),
                None => base = ".".into(),
            }
        } else {
            break;
        }
    }
    if base.ends_with(':') {
        format!("{base}{rest}")
    } else {
        format!("{base}/{rest}")
    }
}

/// A path inside a repository tree that shipit will turn into a path on
/// disk (`source.subdir`, a submodule's path): relative, no `.` or `..`
/// component, no `.git`, no control characters. Returns its components.
pub fn check_tree_path(path: &str) -> std::result::Result<Vec<&str>, String> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("it is empty".into());
    }
    if trimmed.starts_with('/') {
        return Err("it is absolute; give it relative to the repository's root".into());
    }
    if trimmed.starts_with('-') || trimmed.starts_with(':') {
        return Err(
            "it begins with '-' or ':', which git would read as an option or pathspec magic".into(),
        );
    }
    if trimmed.chars().any(|c| c.is_control()) {
        return Err("it contains control characters".into());
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    for part in &parts {
        if part.is_empty() || *part == "." || *part == ".." {
            return Err(format!("it has a {part:?} component"));
        }
        if part.eq_ignore_ascii_case(".git") {
            return Err("it goes through a .git directory".into());
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_submodule_urls_resolve_as_git_resolves_them() {
        let cases = [
            ("/srv/git/app", "../lib", "/srv/git/lib"),
            ("/srv/git/app/", "./lib", "/srv/git/app/lib"),
            (
                "https://h/org/app.git",
                "../lib.git",
                "https://h/org/lib.git",
            ),
            ("git@h:org/app.git", "../lib.git", "git@h:org/lib.git"),
            ("git@h:app.git", "../lib.git", "git@h:lib.git"),
            (
                "https://h/org/app",
                "../../other/lib",
                "https://h/other/lib",
            ),
            ("/srv/app", "https://h/x.git", "https://h/x.git"),
        ];
        for (base, url, want) in cases {
            assert_eq!(join_url(base, url), want, "{base} + {url}");
        }
    }

    #[test]
    fn dangerous_submodule_urls_are_refused_and_say_why() {
        for (url, why) in [
            ("ext::sh -c touch% /tmp/pwned", "ext::"),
            ("fd::17", "fd::"),
            ("-upload-pack=touch x", "'-'"),
            ("ssh://-oProxyCommand=x/y", "'-'"),
            ("ftp://h/x.git", "ftp://"),
            ("https://h/x\n.git", "control"),
            ("lib", "relative path"),
        ] {
            let err = check_url(url).expect_err(url);
            assert!(err.contains(why), "{url}: {err}");
        }
        assert_eq!(check_url("/srv/lib"), Ok(Transport::Local));
        assert_eq!(check_url("file:///srv/lib"), Ok(Transport::Local));
        assert_eq!(check_url("https://h/lib.git"), Ok(Transport::Network));
        assert_eq!(check_url("git@h:org/lib.git"), Ok(Transport::Network));
    }

    #[test]
    fn tree_paths_stay_inside() {
        assert_eq!(check_tree_path("apps/web/"), Ok(vec!["apps", "web"]));
        for bad in [
            "", "/etc", "../x", "a/../b", "a/./b", "a//b", ".git/x", "-x", ":(glob)x",
        ] {
            assert!(check_tree_path(bad).is_err(), "{bad:?}");
        }
    }
}
