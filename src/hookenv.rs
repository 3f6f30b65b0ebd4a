//! The environment shipit gives every hook besides its own variables:
//! `[env]` (plain values) and `env_file` (a dotenv file of secrets), and
//! the redaction of those secrets from everything shipit writes.
//!
//! Both reach every hook through [`crate::hooks::run`], the one place a
//! hook is started, so no hook (build, migrate, reload, slot start/stop,
//! drain, notify) can be forgotten. `env_file` is read on the machine the
//! hook runs on: a host reads `<deploy_to>/<env_file>`; a fleet's
//! controller, whose `deploy_to` is a path on the hosts, reads none (its
//! build and drain hooks get `[env]` and the controller's environment).
//!
//! Redaction: a value from `env_file` at least [`MIN_SECRET`] characters
//! long is replaced by `***` in shipit's own output, in hook output as it
//! is streamed and logged, in the history, in release metadata, in every
//! `--json` and in the notify payload. Shorter values (`1`, `true`,
//! `prod`) cannot be told from ordinary text: replacing them would garble
//! every line that happens to contain them, so they are passed but not
//! hidden. A multi-line value is hidden line by line as well, since hook
//! output is handled a line at a time.
//!
//! The state is process-wide, set once by [`init`] when the config is
//! loaded: shipit runs one command per process.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{OnceLock, RwLock};

use crate::config::Config;
use crate::error::{Error, Kind, Result};

/// Values shorter than this are not redacted (see the module docs).
pub const MIN_SECRET: usize = 6;
/// What a secret is replaced with.
pub const MASK: &str = "***";

#[derive(Default)]
struct State {
    /// `[env]` then `env_file`, as hooks get them.
    vars: Vec<(String, String)>,
    /// Longest first, so a secret that contains another is hidden whole.
    secrets: Vec<String>,
    /// Why `env_file` could not be read, for [`require`].
    problem: Option<Error>,
    /// The file that was read, for `check`.
    file: Option<PathBuf>,
}

fn state() -> &'static RwLock<State> {
    static STATE: OnceLock<RwLock<State>> = OnceLock::new();
    STATE.get_or_init(Default::default)
}

/// Read `[env]` and, on a host, `env_file`, and remember the secrets. A
/// file that cannot be read is remembered as well: [`require`] reports it
/// where a command needs it (a deploy's pre-flight check), while read-only
/// commands still work.
pub fn init(config: &Config) {
    let mut st = State {
        vars: config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..State::default()
    };
    if let (Some(rel), None) = (&config.env_file, &config.fleet) {
        let path = config.deploy_to.join(rel);
        match read(&path) {
            Ok(vars) => {
                for (_, value) in &vars {
                    remember(&mut st.secrets, value);
                }
                st.vars.extend(vars);
            }
            Err(e) => st.problem = Some(e),
        }
        st.file = Some(path);
    }
    st.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    st.secrets.dedup();
    *state().write().unwrap_or_else(|e| e.into_inner()) = st;
}

/// [`init`] again, for a process that serves several requests (a fleet
/// host's lock holder, for a whole rollout): `env_file` as it is now, so a
/// rotated value or a fixed file is seen; every secret read before stays
/// redacted.
pub fn refresh(config: &Config) {
    let before = std::mem::take(&mut state().write().unwrap_or_else(|e| e.into_inner()).secrets);
    init(config);
    let mut st = state().write().unwrap_or_else(|e| e.into_inner());
    st.secrets.extend(before);
    st.secrets
        .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    st.secrets.dedup();
}

fn remember(secrets: &mut Vec<String>, value: &str) {
    if value.chars().count() >= MIN_SECRET {
        secrets.push(value.to_string());
    }
    if value.contains('\n') {
        for line in value.lines() {
            if line.trim().chars().count() >= MIN_SECRET {
                secrets.push(line.trim().to_string());
            }
        }
    }
}

/// Hide `secret` from now on, as if `env_file` had held it (unit tests).
#[cfg(test)]
pub fn add_secret_for_test(secret: &str) {
    let mut st = state().write().unwrap_or_else(|e| e.into_inner());
    st.secrets.push(secret.to_string());
    st.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// `Err` when `env_file` is set but could not be read (missing, or a bad
/// line): a release must not start without its secrets.
pub fn require() -> Result<()> {
    match &state().read().unwrap_or_else(|e| e.into_inner()).problem {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    }
}

/// What `check` says about `env_file`: `None` without one (or on a fleet's
/// controller), else the file and how reading it went.
pub fn status() -> Option<(PathBuf, Result<usize>)> {
    let st = state().read().unwrap_or_else(|e| e.into_inner());
    let file = st.file.clone()?;
    Some(match &st.problem {
        Some(e) => (file, Err(e.clone())),
        None => (file, Ok(st.vars.len())),
    })
}

/// The variables every hook gets on top of its own.
pub fn vars() -> Vec<(String, String)> {
    state()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .vars
        .clone()
}

/// The longest secret's length in bytes (0 without secrets): how much of a
/// stream must be held back so that no secret is cut in two.
pub fn longest() -> usize {
    state()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .secrets
        .first()
        .map_or(0, |s| s.len())
}

/// `text` with every secret replaced by [`MASK`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let st = state().read().unwrap_or_else(|e| e.into_inner());
    if !st.secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for secret in &st.secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// JSON text with every secret replaced, in the form it has inside a JSON
/// string (quotes, backslashes and newlines escaped) as well as raw.
pub fn redact_json(text: &str) -> Cow<'_, str> {
    let st = state().read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for secret in &st.secrets {
        let quoted = serde_json::to_string(secret).expect("a string serializes");
        let escaped = &quoted[1..quoted.len() - 1];
        for form in [escaped, secret.as_str()] {
            if out.contains(form) {
                out = Cow::Owned(out.replace(form, MASK));
            }
        }
    }
    out
}

/// Bytes with every secret replaced (hook output, which need not be UTF-8).
pub fn redact_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let st = state().read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(bytes);
    for secret in &st.secrets {
        let needle = secret.as_bytes();
        if out.windows(needle.len()).any(|w| w == needle) {
            let mut replaced = Vec::with_capacity(out.len());
            let mut rest: &[u8] = &out;
            while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
                replaced.extend_from_slice(&rest[..at]);
                replaced.extend_from_slice(MASK.as_bytes());
                rest = &rest[at + needle.len()..];
            }
            replaced.extend_from_slice(rest);
            out = Cow::Owned(replaced);
        }
    }
    out
}

/// Read a dotenv file: `KEY=value` lines, `export KEY=value`, blank lines
/// and `#` comments; a value may be in single quotes (taken as is) or
/// double quotes (`\n`, `\"`, `\\` escapes; may span lines). A bad line is
/// an error naming the file and the line.
pub fn read(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "is missing"
        } else {
            "cannot be read"
        };
        Error::new(
            Kind::BeforeSwap,
            format!("env_file {} {what}", path.display()),
        )
        .cause(e)
        .hint(
            "create it on this host (dotenv lines, KEY=value), or remove env_file from \
                 shipit.toml",
        )
    })?;
    parse(&text).map_err(|(line, why)| {
        Error::new(
            Kind::BeforeSwap,
            format!("env_file {} line {line}: {why}", path.display()),
        )
        .hint("write each variable as KEY=value (quote values with spaces or #)")
    })
}

/// Parse dotenv text; `Err((line number, why))`.
pub fn parse(text: &str) -> std::result::Result<Vec<(String, String)>, (usize, String)> {
    let mut vars = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let number = i + 1;
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err((number, "expected KEY=value".into()));
        };
        let key = key.trim();
        if !crate::config::is_var_name(key) {
            return Err((
                number,
                format!("{key:?} is not a variable name (letters, digits and _)"),
            ));
        }
        let value = value.trim_start();
        let value = if let Some(rest) = value.strip_prefix('\'') {
            match rest.find('\'') {
                Some(end)
                    if rest[end + 1..].trim().is_empty()
                        || rest[end + 1..].trim().starts_with('#') =>
                {
                    rest[..end].to_string()
                }
                _ => {
                    return Err((
                        number,
                        "unterminated or trailing text after a '...' value".into(),
                    ));
                }
            }
        } else if let Some(rest) = value.strip_prefix('"') {
            let mut out = String::new();
            let mut current = rest.to_string();
            loop {
                let mut chars = current.chars();
                let mut closed = None;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some('n') => out.push('\n'),
                            Some(other) => out.push(other),
                            None => out.push('\\'),
                        },
                        '"' => {
                            closed = Some(chars.as_str().to_string());
                            break;
                        }
                        c => out.push(c),
                    }
                }
                match closed {
                    Some(tail) => {
                        let tail = tail.trim();
                        if !(tail.is_empty() || tail.starts_with('#')) {
                            return Err((number, "trailing text after a \"...\" value".into()));
                        }
                        break;
                    }
                    None if i < lines.len() => {
                        out.push('\n');
                        current = lines[i].to_string();
                        i += 1;
                    }
                    None => return Err((number, "unterminated \"...\" value".into())),
                }
            }
            out
        } else {
            // An unquoted value ends at a ` #` comment.
            let end = value.find(" #").unwrap_or(value.len());
            value[..end].trim_end().to_string()
        };
        vars.push((key.to_string(), value));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines() {
        let vars = parse(
            "# comment\n\nA=1\nexport B = two words # note\nC='x # y'\nD=\"l1\\nl2\"\nE=\"multi\nline\"\n",
        )
        .unwrap();
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("A"), "1");
        assert_eq!(get("B"), "two words");
        assert_eq!(get("C"), "x # y");
        assert_eq!(get("D"), "l1\nl2");
        assert_eq!(get("E"), "multi\nline");
    }

    #[test]
    fn redaction_covers_raw_json_and_bytes() {
        add_secret_for_test("qq\"json-secret");
        assert_eq!(redact("a qq\"json-secret b"), "a *** b");
        let json = serde_json::to_string("x qq\"json-secret").unwrap();
        assert_eq!(redact_json(&json), "\"x ***\"");
        assert_eq!(&*redact_bytes(b"qq\"json-secret!"), b"***!");
    }

    #[test]
    fn a_value_spanning_lines_is_hidden_line_by_line_and_short_values_not_at_all() {
        let mut secrets = Vec::new();
        remember(&mut secrets, "-----BEGIN KEY-----\nabc\nMIIEvQIBADANBg\n");
        remember(&mut secrets, "prod");
        assert!(
            secrets.contains(&"MIIEvQIBADANBg".to_string()),
            "{secrets:?}"
        );
        assert!(secrets.contains(&"-----BEGIN KEY-----".to_string()));
        assert!(
            !secrets.iter().any(|s| s == "abc" || s == "prod"),
            "{secrets:?}"
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        assert_eq!(parse("A=1\nnot a line\n").unwrap_err().0, 2);
        assert_eq!(parse("A=1\n\n1X=2\n").unwrap_err().0, 3);
        assert_eq!(parse("A=\"open\n").unwrap_err().0, 1);
    }
}
