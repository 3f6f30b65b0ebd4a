//! `shipit.toml`: its schema, its defaults, and loading it.
//!
//! A typo in a deploy config must never be silently ignored (a misspelled
//! `reload` would skip the reload and serve old code), so unknown keys are
//! errors that name the key and the nearest valid one. Validation happens
//! here, before any command touches the disk, so bad config changes nothing.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

pub const DEFAULT_FILE: &str = "shipit.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The app's name, for the files `init --template` writes (unit,
    /// upstream and pm2 names); default: the last part of `deploy_to`.
    pub app: Option<String>,
    /// Absolute after loading (relative paths resolve against the file).
    pub deploy_to: PathBuf,
    /// Where the live link goes instead of `<deploy_to>/current` (a web
    /// root a host cannot change, like `/var/www/html`). Absolute.
    pub current_path: Option<PathBuf>,
    #[serde(default = "default_keep")]
    pub keep_releases: usize,
    #[serde(default)]
    pub shared: Vec<String>,
    pub source: SourceConfig,
    #[serde(default)]
    pub hooks: HooksConfig,
    pub health: Option<HealthConfig>,
    #[serde(default)]
    pub lock: LockConfig,
    /// Blue-green on one host (SPEC §7): with it, a release is gated in the
    /// idle slot before any user request reaches it.
    pub slots: Option<SlotsConfig>,
    /// Rolling deploys over SSH (SPEC §8): with it, deploy, rollback,
    /// releases and status act on every host from this machine.
    pub fleet: Option<FleetConfig>,
    /// Directories a build produces from a few key files (`node_modules`
    /// from `package-lock.json`): reused from the newest proven release
    /// whose key was the same, instead of built again (`[[reuse]]`).
    #[serde(default)]
    pub reuse: Vec<ReuseConfig>,
    /// A dotenv file of secrets for every hook and the app, relative to
    /// `deploy_to` on the host where each hook runs (never resolved against
    /// the config file). Its values are redacted from everything shipit
    /// writes ([`crate::hookenv`]).
    pub env_file: Option<PathBuf>,
    /// Plain (not secret) variables for every hook.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where the config was read from (set by [`load`]).
    #[serde(skip)]
    pub file: PathBuf,
}

/// One `[[reuse]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReuseConfig {
    /// The directory, relative to the release.
    pub path: String,
    /// Files (globs allowed) whose content decides whether the directory
    /// can be reused.
    pub key: Vec<String>,
    /// Environment variables whose values are part of the key.
    #[serde(default)]
    pub env: Vec<String>,
    /// A command whose output is part of the key (`node --version`).
    pub command: Option<String>,
    /// What builds the directory (in the release, before `hooks.build`);
    /// skipped when the directory is reused. One command or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub run: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub git: Option<String>,
    pub path: Option<PathBuf>,
    /// A CI artifact to deploy (`.tar`, `.tar.gz`, `.tar.zst`, `.zip`);
    /// `-` (from `deploy --archive -`) is stdin.
    pub archive: Option<PathBuf>,
    /// The artifact's sha256 (hex), checked before it is unpacked.
    pub sha256: Option<String>,
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Deploy this directory of the repository (a monorepo's app): the
    /// release holds its contents at its root.
    pub subdir: Option<String>,
    /// Export the repository's submodules, at the commits it pins.
    #[serde(default = "default_true")]
    pub submodules: bool,
    /// What the deployed commit must prove before it is exported.
    #[serde(default)]
    pub verify: Verify,
    /// The ssh keys whose signatures `verify = "signed"` accepts, in
    /// git's allowed-signers format (`gpg.ssh.allowedSignersFile`).
    pub allowed_signers: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// Deploy any commit.
    #[default]
    None,
    /// Deploy only a commit with a good signature by a key in
    /// `source.allowed_signers` (`git verify-commit`).
    Signed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    #[serde(default)]
    pub build: Vec<String>,
    pub reload: Option<String>,
    #[serde(default = "default_build_timeout", deserialize_with = "duration")]
    pub build_timeout: Duration,
    #[serde(default = "default_reload_timeout", deserialize_with = "duration")]
    pub reload_timeout: Duration,
    /// Told of every outcome (the history event as JSON on stdin), after
    /// the lock is released; its failure is only a warning.
    pub notify: Option<String>,
    #[serde(default = "default_notify_timeout", deserialize_with = "duration")]
    pub notify_timeout: Duration,
    /// Run once per deploy in the published release, before users can
    /// reach it (database migrations).
    #[serde(default, deserialize_with = "one_or_many")]
    pub migrate: Vec<String>,
    #[serde(default = "default_migrate_timeout", deserialize_with = "duration")]
    pub migrate_timeout: Duration,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            build: Vec::new(),
            reload: None,
            build_timeout: default_build_timeout(),
            reload_timeout: default_reload_timeout(),
            notify: None,
            notify_timeout: default_notify_timeout(),
            migrate: Vec::new(),
            migrate_timeout: default_migrate_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    pub url: String,
    #[serde(default = "default_health_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_interval", deserialize_with = "duration")]
    pub interval: Duration,
    #[serde(default = "default_successes")]
    pub successes: u32,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    pub expect_body: Option<String>,
    #[serde(default = "default_request_timeout", deserialize_with = "duration")]
    pub request_timeout: Duration,
    #[serde(default, deserialize_with = "duration")]
    pub initial_delay: Duration,
    /// Consecutive answers with an error status (4xx/5xx but 502-504) that
    /// fail the gate at once; 0 waits out the whole `timeout`.
    #[serde(default = "default_fail_after")]
    pub fail_after: u32,
    /// Reload path: after the reload hook returned, how long a refused
    /// connection or a 502/503/504 is "still starting"; after it, such
    /// probes count towards `fail_after`.
    #[serde(default = "default_grace", deserialize_with = "duration")]
    pub grace: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    /// How long `--wait` (without a value) and push-to-deploy wait.
    #[serde(default = "default_lock_wait", deserialize_with = "duration")]
    pub wait: Duration,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            wait: default_lock_wait(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotsConfig {
    /// Start `$SHIPIT_RELEASE_PATH` in slot `$SHIPIT_SLOT`, listening on
    /// `$SHIPIT_SLOT_SOCKET` (or `$SHIPIT_SLOT_PORT`).
    pub start: String,
    /// Stop slot `$SHIPIT_SLOT` gracefully.
    pub stop: String,
    #[serde(default = "default_slot_hook_timeout", deserialize_with = "duration")]
    pub start_timeout: Duration,
    #[serde(default = "default_slot_hook_timeout", deserialize_with = "duration")]
    pub stop_timeout: Duration,
    /// How long the old slot keeps running after the switch before `stop`:
    /// connections already queued on its socket are accepted and answered.
    #[serde(default = "default_retire_delay", deserialize_with = "duration")]
    pub retire_delay: Duration,
    /// Keep the old slot running after the switch (rollback is then only a
    /// rename); it is stopped when the next deploy needs the slot.
    #[serde(default)]
    pub warm_standby: bool,
    /// TCP variant: the port of each slot, for apps that cannot listen on a
    /// unix socket. Needs `switch`.
    pub ports: Option<SlotPorts>,
    /// Runs after the live slot changed (env `SHIPIT_SLOT`, and
    /// `SHIPIT_SLOT_PORT` with ports): with ports it must point the proxy
    /// at the slot, e.g. rewrite an upstream and `nginx -s reload`.
    pub switch: Option<String>,
    /// After the switch, probe `health.url` (through the front proxy) and
    /// switch back if the front cannot reach the new slot.
    #[serde(default = "default_true")]
    pub front_check: bool,
    /// The user the front proxy's workers run as, whose permissions on the
    /// slot's socket are checked before the switch; default: the running
    /// nginx workers' (read from /proc).
    pub front_user: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// OpenSSH destinations (`user@host`, `ssh://user@host:port`), in
    /// rollout order.
    pub hosts: Vec<String>,
    /// Extra arguments for every `ssh` call (`-i`, `-o`, `-J`...).
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// How long a host's ssh master connection outlives the command that
    /// opened it, for the next command to reuse; `"0s"`: closed at the end
    /// of each command.
    #[serde(default = "default_ssh_persist", deserialize_with = "duration")]
    pub ssh_persist: Duration,
    /// Hosts switched at a time.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Hosts contacted at a time in the parallel phases (reach, send,
    /// discard; a batch's switches).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Runs on the controller before a host is switched (env `SHIPIT_HOST`).
    pub drain: Option<String>,
    /// Runs on the controller after that host passed its gate.
    pub undrain: Option<String>,
    #[serde(default = "default_reload_timeout", deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// The controller's own directory: the build, the git mirror, the lock
    /// and the rollout history (relative to the config file).
    #[serde(default = "default_fleet_state")]
    pub state: PathBuf,
    /// The shipit to install on the hosts instead of the controller's own
    /// (one built for the hosts' OS and architecture; relative to the
    /// config file).
    pub binary: Option<PathBuf>,
    /// A shipit installed on the hosts to run instead of installing one
    /// (a command on their PATH or an absolute path there); it must speak
    /// this controller's fleet protocol.
    pub host_shipit: Option<String>,
    /// Unpack the release on the hosts as the build made it: setuid and
    /// setgid bits, devices and fifos included (cleared and left out by
    /// default).
    #[serde(default)]
    pub keep_special_files: bool,
    /// The host that runs `hooks.migrate`, once per rollout (one of
    /// `hosts`; the first of them when unset).
    pub primary: Option<String>,
}

fn default_batch() -> usize {
    1
}
/// Below sshd's default `MaxStartups` (10:30:100 starts refusing at 10
/// unauthenticated connections, all from this controller when the hosts
/// sit behind one bastion) would be 8; 16 halves the reach of a large
/// fleet, and a bastion with the default can set it lower.
fn default_concurrency() -> usize {
    16
}
/// As Ansible's `ControlPersist`: a deploy, then a `status` or a
/// rollback, pay for one key exchange per host.
fn default_ssh_persist() -> Duration {
    Duration::from_secs(60)
}
fn default_fleet_state() -> PathBuf {
    PathBuf::from(".shipit-fleet")
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotPorts {
    pub blue: u16,
    pub green: u16,
}

fn default_slot_hook_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_retire_delay() -> Duration {
    Duration::from_secs(2)
}

fn default_keep() -> usize {
    5
}
fn default_branch() -> String {
    "main".into()
}
/// A string, or a list of strings.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

fn default_build_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_migrate_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_reload_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_notify_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_grace() -> Duration {
    Duration::from_secs(5)
}

fn default_fail_after() -> u32 {
    5
}

fn default_health_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_successes() -> u32 {
    2
}
fn default_status() -> u16 {
    200
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_lock_wait() -> Duration {
    Duration::from_secs(600)
}

/// Every valid key, by table. [`check_keys`] uses it to name the nearest
/// valid key; a unit test keeps it in step with the structs above.
pub const SCHEMA: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "app",
            "deploy_to",
            "current_path",
            "keep_releases",
            "shared",
            "source",
            "hooks",
            "health",
            "lock",
            "slots",
            "fleet",
            "reuse",
            "env_file",
            "env",
        ],
    ),
    ("reuse", &["path", "key", "env", "command", "run"]),
    (
        "source",
        &[
            "git",
            "path",
            "archive",
            "sha256",
            "branch",
            "subdir",
            "submodules",
            "verify",
            "allowed_signers",
        ],
    ),
    (
        "hooks",
        &[
            "build",
            "reload",
            "build_timeout",
            "reload_timeout",
            "notify",
            "notify_timeout",
            "migrate",
            "migrate_timeout",
        ],
    ),
    (
        "health",
        &[
            "url",
            "timeout",
            "interval",
            "successes",
            "expect_status",
            "expect_body",
            "request_timeout",
            "initial_delay",
            "fail_after",
            "grace",
        ],
    ),
    ("lock", &["wait"]),
    (
        "slots",
        &[
            "start",
            "stop",
            "start_timeout",
            "stop_timeout",
            "retire_delay",
            "warm_standby",
            "ports",
            "switch",
            "front_check",
            "front_user",
        ],
    ),
    ("slots.ports", &["blue", "green"]),
    (
        "fleet",
        &[
            "hosts",
            "ssh_options",
            "ssh_persist",
            "batch",
            "concurrency",
            "drain",
            "undrain",
            "drain_timeout",
            "state",
            "binary",
            "host_shipit",
            "keep_special_files",
            "primary",
        ],
    ),
];

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// An environment variable's name: letters, digits and `_`, not starting
/// with a digit (for `[env]` and the lines of `env_file`).
pub fn is_var_name(key: &str) -> bool {
    key.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// App names become file names, nginx upstream names and unit names.
pub fn check_app(app: &str) -> Result<()> {
    let ok = !app.is_empty()
        && app.len() <= 64
        && !app.starts_with(['.', '-'])
        && app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!("{app:?} is not a usable app name"))
            .hint("use letters, digits, '.', '_' and '-', e.g. --app myapp"))
    }
}

/// The longest each duration key may be. humantime reads
/// "18446744073709551615s" as a duration, and a deadline that far away
/// overflows the clock: unbounded, such a value passed `check` and panicked
/// mid-deploy, after the switch. Every bound is far above any real use.
pub fn duration_limit(key: &str) -> Duration {
    match key {
        "hooks.build_timeout" | "hooks.migrate_timeout" | "lock.wait" | "--wait" => DAY,
        "health.interval" | "health.request_timeout" => 10 * MINUTE,
        "hooks.reload_timeout"
        | "health.timeout"
        | "health.initial_delay"
        | "health.grace"
        | "slots.start_timeout"
        | "slots.stop_timeout"
        | "slots.retire_delay"
        | "fleet.drain_timeout"
        | "fleet.ssh_persist"
        | "hooks.notify_timeout" => HOUR,
        _ => unreachable!("{key} is not a duration key"),
    }
}

/// Refuse a config duration above [`duration_limit`] for `key`.
fn check_limit(key: &str, value: Duration, file: &Path) -> Result<()> {
    let limit = duration_limit(key);
    if value <= limit {
        return Ok(());
    }
    let limit = humantime::format_duration(limit);
    Err(Error::usage(format!(
        "{key} in {} is longer than its limit of {limit}",
        file.display()
    ))
    .hint(format!(
        "give {key} a duration of at most {limit} (docs/configuration.md lists every key's limit)"
    )))
}

/// Parse a duration such as `30s`, `500ms`, `2m` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        Error::usage(format!("{text:?} is not a duration"))
            .cause(e)
            .hint("write durations like \"30s\", \"500ms\", \"2m\" or \"1h 30m\"")
    })
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration ({e}); write durations like \"30s\", \"500ms\" or \"2m\""
        ))
    })
}

/// Where `init` writes a new config: `--config`, else `$SHIPIT_CONFIG`,
/// else `./shipit.toml`.
pub fn locate(flag: Option<&Path>) -> PathBuf {
    explicit(flag).unwrap_or_else(|| PathBuf::from(DEFAULT_FILE))
}

/// `--config`, else `$SHIPIT_CONFIG`.
fn explicit(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.to_path_buf());
    }
    match std::env::var_os("SHIPIT_CONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => None,
    }
}

/// The config a command uses: `--config`, else `$SHIPIT_CONFIG`, else
/// the first `shipit.toml` in the current directory or one of its parents,
/// as git finds `.git` and cargo `Cargo.toml`. The search stops at the
/// filesystem root or where another filesystem is mounted (a parent on
/// another device is someone else's tree). It refuses a config it finds
/// inside a release: repositories often commit their `shipit.toml`, and a
/// command run from `current/` must not take the release's copy for the
/// deploy's own.
pub fn find(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit(flag) {
        return Ok(path);
    }
    let start = std::env::current_dir()
        .map_err(|e| Error::usage("could not read the current directory").cause(e))?;
    let found = search(&start).ok_or_else(|| {
        Error::usage(format!(
            "no config file ({DEFAULT_FILE}) in {} or any directory above it",
            start.display()
        ))
        .hint("run `shipit init` to write one, or pass --config PATH (or set SHIPIT_CONFIG)")
    })?;
    if let Some(release) = inside_release(&found) {
        return Err(Error::usage(format!(
            "the {DEFAULT_FILE} found from {} is {}, inside the release {}",
            start.display(),
            found.display(),
            release.display()
        ))
        .hint(
            "that is the copy the repository shipped, not the deploy's config: run shipit from \
             the directory that holds the deploy's shipit.toml, or pass --config PATH (or set SHIPIT_CONFIG)",
        ));
    }
    Ok(found)
}

/// The first `shipit.toml` in `start` or above, on `start`'s filesystem.
fn search(start: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let device = |dir: &Path| std::fs::metadata(dir).ok().map(|m| m.dev());
    let mut dir = start.to_path_buf();
    let home = device(&dir);
    loop {
        let candidate = dir.join(DEFAULT_FILE);
        if candidate.is_file() {
            return Some(candidate);
        }
        if !dir.pop() || device(&dir) != home {
            return None;
        }
    }
}

/// The release directory (`releases/<id>` of a deploy directory, or its
/// staging directory while it is built) that holds `file`, if any.
pub fn inside_release(file: &Path) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(file.parent()?).ok()?;
    dir.ancestors()
        .find(|d| {
            let parent = d.parent().and_then(|p| p.file_name());
            let grandparent = d.parent().and_then(Path::parent);
            let in_releases = parent.is_some_and(|p| p == "releases")
                && grandparent.is_some_and(|g| g.join(".shipit").is_dir());
            let in_staging = parent.is_some_and(|p| p == "staging")
                && grandparent.is_some_and(|g| g.file_name().is_some_and(|n| n == ".shipit"));
            d.join(crate::layout::METADATA_FILE).is_file() || in_releases || in_staging
        })
        .map(Path::to_path_buf)
}

pub fn load(flag: Option<&Path>) -> Result<Config> {
    let file = find(flag)?;
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                Error::usage(format!("no config file at {}", file.display())).hint(
                    "run `shipit init` to write one, or pass --config PATH (or set SHIPIT_CONFIG)",
                ),
            );
        }
        Err(e) => {
            return Err(Error::usage(format!("could not read config {}", file.display())).cause(e));
        }
    };
    let file = std::path::absolute(&file).unwrap_or(file);
    parse(&text, &file)
}

/// Parse and validate config text as if it were read from `file`.
pub fn parse(text: &str, file: &Path) -> Result<Config> {
    let bad =
        |message: String| Error::usage(format!("invalid config {}", file.display())).cause(message);
    let table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    check_keys(&table, file)?;
    let mut config: Config = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    config.file = file.to_path_buf();
    if config.fleet.is_some() && !config.deploy_to.is_absolute() {
        return Err(Error::usage(format!(
            "deploy_to = {:?} in {} is relative, but with [fleet] it is a path on the hosts",
            config.deploy_to,
            file.display()
        ))
        .hint(
            "give the absolute path of the deploy directory on every host, e.g. \"/srv/myapp\"",
        ));
    }
    let base = file.parent().unwrap_or(Path::new("."));
    config.resolve_paths(base);
    config.validate()?;
    Ok(config)
}

fn check_keys(table: &toml::Table, file: &Path) -> Result<()> {
    let schema: BTreeMap<&str, &[&str]> = SCHEMA.iter().copied().collect();
    let mut tables = vec![(String::new(), table)];
    while let Some((name, table)) = tables.pop() {
        let valid = schema[name.as_str()];
        let qualify = |key: &str| {
            if name.is_empty() {
                key.to_string()
            } else {
                format!("{name}.{key}")
            }
        };
        for (key, value) in table {
            let full = qualify(key);
            if !valid.contains(&key.as_str()) {
                // A key cut short (`retire` for `retire_delay`) is nearest
                // to the key it begins; otherwise the smallest edit.
                let nearest = valid
                    .iter()
                    .min_by_key(|k| (!k.starts_with(key.as_str()), strsim::levenshtein(k, key)))
                    .map(|k| qualify(k))
                    .unwrap_or_default();
                return Err(
                    Error::usage(format!("unknown key `{full}` in {}", file.display())).hint(
                        format!(
                            "did you mean `{nearest}`? (`shipit init` writes a config that documents every key)"
                        ),
                    ),
                );
            }
            if let Some(sub) = value.as_table()
                && schema.contains_key(full.as_str())
            {
                tables.push((full.clone(), sub));
            }
            // An array of tables (`[[reuse]]`): each element is checked.
            if let Some(items) = value.as_array()
                && schema.contains_key(full.as_str())
            {
                for sub in items.iter().filter_map(|i| i.as_table()) {
                    tables.push((full.clone(), sub));
                }
            }
        }
    }
    Ok(())
}

/// Does `source.git` name a remote (URL or scp-like `host:path`) rather than
/// a local path?
fn is_remote(git: &str) -> bool {
    git.contains("://") || (git.contains(':') && !git.starts_with('/') && !git.starts_with('.'))
}

impl Config {
    fn resolve_paths(&mut self, base: &Path) {
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        self.deploy_to = clean(&base.join(&self.deploy_to));
        if let Some(path) = &self.source.path {
            self.source.path = Some(clean(&base.join(path)));
        }
        if let Some(path) = &self.source.archive {
            self.source.archive = Some(clean(&base.join(path)));
        }
        if let Some(path) = &self.source.allowed_signers {
            self.source.allowed_signers = Some(clean(&base.join(path)));
        }
        if let Some(fleet) = &mut self.fleet {
            fleet.state = clean(&base.join(&fleet.state));
            if let Some(binary) = &fleet.binary {
                fleet.binary = Some(clean(&base.join(binary)));
            }
        }
        if let Some(git) = &self.source.git
            && !is_remote(git)
        {
            self.source.git = Some(clean(&base.join(git)).display().to_string());
        }
    }

    fn validate(&self) -> Result<()> {
        let file = self.file.display();
        let err = |msg: String, hint: &str| Error::usage(msg).hint(hint.to_string());
        if let Some(app) = &self.app
            && check_app(app).is_err()
        {
            return Err(err(
                format!("app = {app:?} in {file} is not a usable app name"),
                "use letters, digits, '.', '_' and '-' (it names units, upstreams and pm2 apps), e.g. app = \"myapp\"",
            ));
        }
        if self.deploy_to.as_os_str().is_empty() || self.deploy_to == Path::new("/") {
            return Err(err(
                format!(
                    "deploy_to = {:?} in {file} is not a deploy directory",
                    self.deploy_to
                ),
                "set deploy_to to a directory of its own, e.g. \"/srv/myapp\"",
            ));
        }
        if self.deploy_to.exists() && !self.deploy_to.is_dir() {
            return Err(err(
                format!(
                    "deploy_to {} exists and is not a directory",
                    self.deploy_to.display()
                ),
                "point deploy_to at a directory (it is created on the first deploy), or move that file away",
            ));
        }
        if let Some(link) = &self.current_path {
            let inside = |dir: &str| link.starts_with(self.deploy_to.join(dir));
            if !link.is_absolute()
                || link.parent().is_none_or(|p| p == Path::new("/"))
                || link.file_name().is_none()
                || link == &self.deploy_to
                || ["releases", ".shipit", "shared", "run"]
                    .iter()
                    .any(|d| inside(d))
                || link
                    .components()
                    .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
            {
                return Err(err(
                    format!(
                        "current_path = {:?} in {file} is not a place for the live link",
                        link
                    ),
                    "give the absolute path the web server reads, in a directory of its own, \
                     outside releases/, shared/ and .shipit/, e.g. current_path = \"/var/www/html\"",
                ));
            }
            // With [fleet] it is a path on the hosts.
            let parent = link.parent().expect("checked above");
            if self.fleet.is_none() && !parent.is_dir() {
                return Err(err(
                    format!(
                        "current_path = {:?} in {file}: its directory {} does not exist",
                        link,
                        parent.display()
                    ),
                    "create that directory (the live link is made inside it), or fix current_path",
                ));
            }
        }
        if self.keep_releases == 0 {
            return Err(err(
                format!("keep_releases = 0 in {file} would delete the live release"),
                "set keep_releases to 1 or more (5 is a good default)",
            ));
        }
        let kinds = [
            self.source.git.is_some(),
            self.source.path.is_some(),
            self.source.archive.is_some(),
        ];
        match kinds.iter().filter(|k| **k).count() {
            0 => {
                return Err(err(
                    format!("[source] in {file} sets none of git, path and archive"),
                    "add git = \"<repo path or URL>\", path = \"<dir>\" or archive = \"<file>\"",
                ));
            }
            1 => {}
            _ => {
                return Err(err(
                    format!("[source] in {file} sets more than one of git, path and archive"),
                    "keep one: git = \"<repo>\" to deploy a branch, path = \"<dir>\" to ship a \
                     directory, or archive = \"<file>\" to ship a CI artifact",
                ));
            }
        }
        match (&self.source.git, &self.source.path) {
            (Some(git), None) if git.trim().is_empty() || git.starts_with('-') => {
                return Err(err(
                    format!("source.git = {git:?} in {file} is not a repository"),
                    "set it to a repository path or URL",
                ));
            }
            _ => {}
        }
        if let Some(path) = &self.source.path
            && contains(path, &self.deploy_to)
        {
            return Err(err(
                format!(
                    "source.path {} in {file} contains deploy_to {}: each release would copy \
                     the releases before it",
                    path.display(),
                    self.deploy_to.display()
                ),
                "ship a build directory outside deploy_to (e.g. path = \"./dist\"), or move deploy_to out of it",
            ));
        }
        crate::gitref::check_ref(&self.source.branch)
            .map_err(|e| e.context(format!("source.branch in {file} is not usable")))?;
        self.source.validate(&self.file)?;
        for entry in &self.shared {
            shared_entry(entry)
                .map_err(|e| e.context(format!("bad entry in shared = [...] in {file}")))?;
        }
        for key in self.env.keys() {
            if !is_var_name(key) {
                return Err(err(
                    format!("[env] in {file} sets {key:?}, which is not a variable name"),
                    "name variables with letters, digits and _ (not starting with a digit)",
                ));
            }
        }
        for (key, value) in self.durations() {
            check_limit(key, value, &self.file)?;
        }
        for (name, d) in [
            ("hooks.build_timeout", self.hooks.build_timeout),
            ("hooks.reload_timeout", self.hooks.reload_timeout),
            ("hooks.notify_timeout", self.hooks.notify_timeout),
            ("hooks.migrate_timeout", self.hooks.migrate_timeout),
        ] {
            if d.is_zero() {
                return Err(err(
                    format!("{name} in {file} is zero"),
                    "give hooks time to run, e.g. \"10m\"",
                ));
            }
        }
        if let Some(health) = &self.health {
            health.validate(&self.file)?;
        }
        if let Some(slots) = &self.slots {
            slots.validate(self)?;
        }
        if let Some(fleet) = &self.fleet {
            fleet.validate(&self.file)?;
        }
        for (i, reuse) in self.reuse.iter().enumerate() {
            reuse.validate(self)?;
            if let Some(other) = self.reuse[..i]
                .iter()
                .find(|o| o.dir().starts_with(reuse.dir()) || reuse.dir().starts_with(o.dir()))
            {
                return Err(err(
                    format!(
                        "[[reuse]] in {file} lists path = {:?} and path = {:?}, which overlap",
                        other.path, reuse.path
                    ),
                    "give each directory one [[reuse]] entry, and none inside another",
                ));
            }
        }
        Ok(())
    }

    /// Every duration key that is set (or defaulted), with its value.
    fn durations(&self) -> Vec<(&'static str, Duration)> {
        let mut all = vec![
            ("hooks.build_timeout", self.hooks.build_timeout),
            ("hooks.reload_timeout", self.hooks.reload_timeout),
            ("hooks.notify_timeout", self.hooks.notify_timeout),
            ("hooks.migrate_timeout", self.hooks.migrate_timeout),
            ("lock.wait", self.lock.wait),
        ];
        if let Some(h) = &self.health {
            all.extend([
                ("health.timeout", h.timeout),
                ("health.interval", h.interval),
                ("health.request_timeout", h.request_timeout),
                ("health.initial_delay", h.initial_delay),
                ("health.grace", h.grace),
            ]);
        }
        if let Some(s) = &self.slots {
            all.extend([
                ("slots.start_timeout", s.start_timeout),
                ("slots.stop_timeout", s.stop_timeout),
                ("slots.retire_delay", s.retire_delay),
            ]);
        }
        if let Some(f) = &self.fleet {
            all.push(("fleet.drain_timeout", f.drain_timeout));
            all.push(("fleet.ssh_persist", f.ssh_persist));
        }
        all
    }

    /// Shared entries as (relative path, is_directory).
    pub fn shared_paths(&self) -> Vec<(PathBuf, bool)> {
        self.shared
            .iter()
            .map(|e| shared_entry(e).expect("validated at load"))
            .collect()
    }
}

impl ReuseConfig {
    /// The directory as a path inside the release.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(self.path.trim_end_matches('/'))
    }

    fn validate(&self, config: &Config) -> Result<()> {
        let file = config.file.display();
        let (path, _) = shared_entry(&self.path)
            .map_err(|e| e.context(format!("bad path in [[reuse]] in {file}")))?;
        if path.as_os_str() == ".shipit-release.json" {
            return Err(Error::usage(format!(
                "[[reuse]] path = {:?} in {file} is shipit's own file",
                self.path
            ))
            .hint("name the directory a build produces, e.g. path = \"node_modules\""));
        }
        for (shared, _) in config.shared_paths() {
            if shared.starts_with(&path) || path.starts_with(&shared) {
                return Err(Error::usage(format!(
                    "[[reuse]] path = {:?} in {file} overlaps the shared path {}",
                    self.path,
                    shared.display()
                ))
                .hint("a shared path is the same directory for every release; reuse is for what each release gets a copy of: keep one"));
            }
        }
        if self.key.is_empty() {
            return Err(Error::usage(format!(
                "[[reuse]] path = {:?} in {file} has an empty key",
                self.path
            ))
            .hint(
                "list the files the directory is built from, e.g. key = [\"package-lock.json\"]",
            ));
        }
        for pattern in &self.key {
            let relative = Path::new(pattern)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
            if !relative || globset::Glob::new(pattern).is_err() {
                return Err(Error::usage(format!(
                    "key entry {pattern:?} of [[reuse]] path = {:?} in {file} is not a file \
                     pattern inside the release",
                    self.path
                ))
                .hint("give paths or globs relative to the release, like \"package-lock.json\" or \"**/requirements*.txt\""));
            }
        }
        for name in &self.env {
            let ok = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !ok {
                return Err(Error::usage(format!(
                    "env entry {name:?} of [[reuse]] path = {:?} in {file} is not a variable name",
                    self.path
                ))
                .hint("list variable names, like env = [\"NODE_ENV\"]"));
            }
        }
        if self.run.is_empty() || self.run.iter().any(|r| r.trim().is_empty()) {
            return Err(Error::usage(format!(
                "[[reuse]] path = {:?} in {file} needs run = [...]: the commands that build it",
                self.path
            ))
            .hint("move the install command there from hooks.build, e.g. run = [\"npm ci --omit=dev\"]"));
        }
        Ok(())
    }
}

impl SourceConfig {
    /// The git-only keys: `subdir`, `verify` and `allowed_signers`; the
    /// archive's `sha256`.
    fn validate(&self, file: &Path) -> Result<()> {
        let file = file.display();
        if let Some(digest) = &self.sha256 {
            if self.archive.is_none() {
                return Err(Error::usage(format!("source.sha256 in {file} is set without source.archive"))
                    .hint("sha256 is the digest of the archive to deploy: add archive = \"<file>\", or remove sha256"));
            }
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::usage(format!(
                    "source.sha256 = {digest:?} in {file} is not a sha256 digest"
                ))
                .hint("give the 64 hex digits `sha256sum <file>` prints"));
            }
        }
        if self.verify == Verify::Signed && self.archive.is_some() {
            return Err(Error::usage(format!(
                "source.verify = \"signed\" in {file} is set with source.archive"
            ))
            .hint(
                "an archive has no commit signature to verify: pin its digest with sha256 instead",
            ));
        }
        if let Some(subdir) = &self.subdir {
            if self.path.is_some() {
                return Err(Error::usage(format!(
                    "source.subdir in {file} is set with source.path"
                ))
                .hint("point source.path at the directory itself, and remove subdir"));
            }
            crate::gitref::check_tree_path(subdir).map_err(|why| {
                Error::usage(format!(
                    "source.subdir = {subdir:?} in {file} is not usable: {why}"
                ))
                .hint("give the directory relative to the repository's root, e.g. subdir = \"apps/web\"")
            })?;
        }
        match (self.verify, &self.allowed_signers) {
            (Verify::Signed, None) => {
                return Err(Error::usage(format!(
                    "source.verify = \"signed\" in {file} needs source.allowed_signers"
                ))
                .hint(
                    "name the file of ssh keys allowed to sign deploys (git's allowed-signers \
                     format: `<email> <key type> <key>` a line), e.g. allowed_signers = \"deploy-signers\"",
                ));
            }
            (Verify::Signed, Some(_)) if self.path.is_some() => {
                return Err(Error::usage(format!(
                    "source.verify = \"signed\" in {file} is set with source.path"
                ))
                .hint(
                    "only a git source has commits to verify: remove verify, or deploy from git",
                ));
            }
            (Verify::Signed, Some(signers)) if !signers.is_file() => {
                return Err(Error::usage(format!(
                    "source.allowed_signers {} (in {file}) is not a file",
                    signers.display()
                ))
                .hint("create it, one `<email> <key type> <key>` a line, or fix the path (relative paths are relative to the config file)"));
            }
            _ => {}
        }
        Ok(())
    }
}

impl FleetConfig {
    /// The host that runs `hooks.migrate`: `primary`, or the first host.
    pub fn migrate_host(&self) -> &str {
        self.primary.as_deref().unwrap_or(&self.hosts[0])
    }

    fn validate(&self, file: &Path) -> Result<()> {
        let file = file.display();
        if self.hosts.is_empty() {
            return Err(Error::usage(format!("fleet.hosts in {file} is empty"))
                .hint("list the hosts to deploy to, e.g. hosts = [\"deploy@web1\", \"ssh://deploy@web2:2222\"]"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for host in &self.hosts {
            crate::destination::check_destination(host)
                .map_err(|e| e.context(format!("bad entry in fleet.hosts in {file}")))?;
            if !seen.insert(host) {
                return Err(
                    Error::usage(format!("fleet.hosts in {file} lists {host:?} twice"))
                        .hint("list each host once: it would be switched twice in one rollout"),
                );
            }
        }
        if self.batch == 0 {
            return Err(
                Error::usage(format!("fleet.batch = 0 in {file} switches no host"))
                    .hint("switch at least 1 host at a time (1 is the default)"),
            );
        }
        if self.concurrency == 0 {
            return Err(
                Error::usage(format!("fleet.concurrency = 0 in {file} contacts no host"))
                    .hint("contact at least 1 host at a time (16 is the default)"),
            );
        }
        if self.drain_timeout.is_zero() {
            return Err(
                Error::usage(format!("fleet.drain_timeout in {file} is zero"))
                    .hint("give the drain and undrain hooks time to run, e.g. \"2m\""),
            );
        }
        if let Some(shipit) = &self.host_shipit
            && (shipit.trim().is_empty() || shipit.starts_with('-'))
        {
            return Err(Error::usage(format!(
                "fleet.host_shipit = {shipit:?} in {file} is not a command"
            ))
            .hint("name the shipit on the hosts, e.g. \"shipit\" or \"/usr/local/bin/shipit\""));
        }
        if self.binary.is_some() && self.host_shipit.is_some() {
            return Err(Error::usage(format!(
                "fleet.binary and fleet.host_shipit in {file} both say which shipit the hosts run"
            ))
            .hint(
                "keep one: binary installs that file, host_shipit runs the one installed there",
            ));
        }
        if let Some(primary) = &self.primary
            && !self.hosts.contains(primary)
        {
            return Err(Error::usage(format!(
                "fleet.primary = {primary:?} in {file} is not one of fleet.hosts"
            ))
            .hint(format!(
                "name the host that runs hooks.migrate exactly as fleet.hosts lists it ({}), \
                 or remove primary to use the first",
                self.hosts.join(", ")
            )));
        }
        for (key, hook) in [("drain", &self.drain), ("undrain", &self.undrain)] {
            if hook.as_deref().is_some_and(|h| h.trim().is_empty()) {
                return Err(Error::usage(format!("fleet.{key} in {file} is empty"))
                    .hint("remove the key, or give the command to run with $SHIPIT_HOST"));
            }
        }
        Ok(())
    }
}

impl SlotsConfig {
    fn validate(&self, config: &Config) -> Result<()> {
        let file = config.file.display();
        for (key, command) in [("start", &self.start), ("stop", &self.stop)] {
            if command.trim().is_empty() {
                return Err(
                    Error::usage(format!("slots.{key} in {file} is empty")).hint(
                        "give the command that starts (stop: stops) $SHIPIT_RELEASE_PATH in slot \
                     $SHIPIT_SLOT; the pm2 file `shipit init --template pm2-slots` writes prints a working pair",
                    ),
                );
            }
        }
        if config.health.is_none() {
            return Err(Error::usage(format!("[slots] in {file} needs a [health] section"))
                .hint(
                    "slots gate each release on its own socket before users reach it: add \
                     [health] with url = \"http://localhost/healthz\" (its path is probed on the slot)",
                ));
        }
        for (key, d) in [
            ("slots.start_timeout", self.start_timeout),
            ("slots.stop_timeout", self.stop_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::usage(format!("{key} in {file} is zero"))
                    .hint("give the hook time to run, e.g. \"2m\""));
            }
        }
        match (&self.ports, &self.switch) {
            (Some(ports), switch) => {
                if ports.blue == ports.green || ports.blue == 0 || ports.green == 0 {
                    return Err(Error::usage(format!(
                        "slots.ports in {file} must be two different ports (blue = {}, green = {})",
                        ports.blue, ports.green
                    ))
                    .hint("e.g. ports = { blue = 3001, green = 3002 }"));
                }
                if switch.as_deref().is_none_or(|s| s.trim().is_empty()) {
                    return Err(
                        Error::usage(format!("slots.ports in {file} needs slots.switch")).hint(
                            "with TCP ports, shipit cannot move a socket link: give a switch hook \
                         that points the proxy at $SHIPIT_SLOT_PORT (e.g. rewrite the upstream \
                         and `nginx -s reload`)",
                        ),
                    );
                }
            }
            (None, _) => {
                // A unix socket path is limited to 107 bytes (sun_path).
                let longest = config.deploy_to.join("run").join("green.sock");
                if longest.as_os_str().len() > 107 {
                    return Err(Error::usage(format!(
                        "deploy_to {} is too long for slot sockets: {} has {} bytes, unix \
                         sockets allow 107",
                        config.deploy_to.display(),
                        longest.display(),
                        longest.as_os_str().len()
                    ))
                    .hint("use a shorter deploy_to, or slots.ports for TCP slots"));
                }
            }
        }
        Ok(())
    }
}

impl HealthConfig {
    fn validate(&self, file: &Path) -> Result<()> {
        let file = file.display();
        if self.url.trim() != self.url {
            return Err(Error::usage(format!(
                "health.url = {:?} in {file} has spaces around it",
                crate::urls::redact_url(&self.url)
            ))
            .hint("remove the spaces inside the quotes: every probe would use them"));
        }
        let url = self.url.as_str();
        let rest = url.strip_prefix("http://");
        let host_ok = rest.is_some_and(|r| {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !host.contains(char::is_whitespace)
        });
        if !host_ok {
            return Err(Error::usage(format!(
                "health.url = {:?} in {file} is not an http:// URL",
                crate::urls::redact_url(&self.url)
            ))
            .hint("probe the app directly, e.g. \"http://127.0.0.1:3000/healthz\" (https is not supported for the gate)"));
        }
        if self.successes == 0 {
            return Err(Error::usage(format!(
                "health.successes = 0 in {file} would pass without a probe"
            ))
            .hint("require at least 1 passing probe (2 is the default)"));
        }
        if !(100..=599).contains(&self.expect_status) {
            return Err(Error::usage(format!(
                "health.expect_status = {} in {file} is not an HTTP status",
                self.expect_status
            ))
            .hint("use a status between 100 and 599, e.g. 200"));
        }
        if self.timeout.is_zero() || self.interval.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::usage(format!(
                "health.timeout, health.interval and health.request_timeout in {file} must be more than zero"
            ))
            .hint("e.g. timeout = \"30s\", interval = \"500ms\", request_timeout = \"2s\""));
        }
        // The budget counts from the end of the reload, initial delay
        // included: the last of the required probes must start within it.
        let soonest = self
            .initial_delay
            .saturating_add(self.interval.saturating_mul(self.successes - 1));
        if soonest >= self.timeout {
            let fmt = |d: Duration| humantime::format_duration(d).to_string();
            return Err(Error::usage(format!(
                "the health gate in {file} can never pass: health.timeout = \"{}\" is not longer \
                 than health.initial_delay = \"{}\" plus {} more probe(s) {} apart",
                fmt(self.timeout),
                fmt(self.initial_delay),
                self.successes - 1,
                fmt(self.interval)
            ))
            .hint(format!(
                "timeout includes initial_delay: make timeout longer than {} (e.g. \"{}\")",
                fmt(soonest),
                fmt(soonest.saturating_add(Duration::from_secs(30)))
            )));
        }
        Ok(())
    }
}

/// Validate one `shared` entry: a relative path inside the release, without
/// `..`; a trailing slash marks a directory.
fn shared_entry(entry: &str) -> Result<(PathBuf, bool)> {
    let is_dir = entry.ends_with('/');
    let path = PathBuf::from(entry.trim_end_matches('/'));
    let only_normal = path.components().all(|c| matches!(c, Component::Normal(_)));
    if entry.trim().is_empty() || !only_normal || path.as_os_str().is_empty() {
        return Err(Error::usage(format!("{entry:?} is not a path inside the release"))
            .hint("list paths relative to the release, like \".env\" or \"storage/\" (no leading /, no ..)"));
    }
    Ok((path, is_dir))
}

/// Is `inner` (which may not exist yet) `outer` or inside it? Compared
/// both as written and with symlinks resolved, so a link cannot hide it.
fn contains(outer: &Path, inner: &Path) -> bool {
    if inner.starts_with(outer) {
        return true;
    }
    let Ok(outer) = outer.canonicalize() else {
        return false;
    };
    // Resolve the longest existing ancestor of `inner`, then add the rest.
    let mut existing = inner.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match existing.file_name() {
            Some(name) => rest.push(name.to_os_string()),
            None => return false,
        }
        if !existing.pop() {
            return false;
        }
    }
    let Ok(mut resolved) = existing.canonicalize() else {
        return false;
    };
    resolved.extend(rest.iter().rev());
    resolved.starts_with(&outer)
}

/// Lexically normalise `.` and `..` (the path may not exist yet).
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config> {
        parse(text, Path::new("/etc/app/shipit.toml"))
    }

    const MIN: &str = "deploy_to = \"/srv/app\"\n[source]\ngit = \"/srv/git/app.git\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse_str(MIN).unwrap();
        assert_eq!(c.keep_releases, 5);
        assert_eq!(c.source.branch, "main");
        assert_eq!(c.hooks.build_timeout, Duration::from_secs(600));
        assert!(c.health.is_none());
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let c = parse_str("deploy_to = \"../deploy\"\n[source]\ngit = \"./repo.git\"\n").unwrap();
        assert_eq!(c.deploy_to, PathBuf::from("/etc/deploy"));
        assert_eq!(c.source.git.as_deref(), Some("/etc/app/repo.git"));
        let c = parse_str("deploy_to = \"d\"\n[source]\ngit = \"git@host:app.git\"\n").unwrap();
        assert_eq!(c.source.git.as_deref(), Some("git@host:app.git"));
    }

    #[test]
    fn unknown_keys_name_the_nearest_valid_one() {
        let e = parse_str(&format!("keep_release = 3\n{MIN}")).unwrap_err();
        assert!(e.message.contains("`keep_release`"), "{e}");
        assert!(
            e.hint.as_deref().unwrap().contains("`keep_releases`"),
            "{e}"
        );
        let e = parse_str(&format!("{MIN}[hooks]\nrelaod = \"x\"\n")).unwrap_err();
        assert!(e.message.contains("`hooks.relaod`"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("`hooks.reload`"), "{e}");
    }

    #[test]
    fn schema_lists_every_field() {
        let all = r#"
            app = "shop"
            deploy_to = "/srv/app"
            current_path = "/var/www/html"
            keep_releases = 3
            shared = [".env"]
            env_file = "shared/.env"
            env = {}
            [source]
            git = "/r"
            branch = "main"
            subdir = "apps/web"
            submodules = true
            verify = "none"
            allowed_signers = "signers"
            [hooks]
            build = []
            reload = "true"
            build_timeout = "1m"
            reload_timeout = "1m"
            notify = "true"
            notify_timeout = "5s"
            migrate = ["bin/migrate"]
            migrate_timeout = "1m"
            [health]
            url = "http://127.0.0.1:1/"
            timeout = "5s"
            interval = "1s"
            successes = 1
            expect_status = 200
            expect_body = "x"
            request_timeout = "1s"
            initial_delay = "1s"
            fail_after = 3
            grace = "1s"
            [lock]
            wait = "1s"
            [slots]
            start = "true"
            stop = "true"
            start_timeout = "1s"
            stop_timeout = "1s"
            retire_delay = "1s"
            warm_standby = false
            front_check = true
            front_user = "root"
            switch = "true"
            ports = { blue = 3001, green = 3002 }
            [fleet]
            hosts = ["deploy@web1"]
            ssh_options = []
            ssh_persist = "30s"
            batch = 1
            concurrency = 8
            drain = "true"
            undrain = "true"
            drain_timeout = "1m"
            state = "fleet-state"
            binary = "shipit-for-hosts"
            keep_special_files = false
            primary = "deploy@web1"
            [[reuse]]
            path = "node_modules"
            key = ["package-lock.json"]
            env = ["NODE_ENV"]
            command = "node --version"
            run = ["npm ci"]
        "#;
        parse_str(all).unwrap();
        let table: toml::Table = toml::from_str(all).unwrap();
        let mut counted = table.len();
        let mut tables: Vec<&toml::Table> = table
            .values()
            .flat_map(|v| match v {
                toml::Value::Table(t) => vec![t],
                toml::Value::Array(items) => items.iter().filter_map(|i| i.as_table()).collect(),
                _ => vec![],
            })
            .collect();
        while let Some(t) = tables.pop() {
            counted += t.len();
            tables.extend(t.values().filter_map(|v| v.as_table()));
        }
        let in_schema: usize = SCHEMA.iter().map(|(_, keys)| keys.len()).sum();
        // `source.path`, `archive`, `sha256` and `fleet.host_shipit` are the
        // keys the document above cannot also set.
        assert_eq!(counted + 4, in_schema);
    }

    /// The configuration reference is where operators look: every key of
    /// the schema must be in its example, and the example must parse.
    #[test]
    fn the_configuration_reference_documents_every_key() {
        let reference = include_str!("../docs/configuration.md");
        let section = reference
            .split("# Configuration")
            .nth(1)
            .expect("a configuration section");
        let block = section
            .split("```toml")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a toml example");
        let mut table = "";
        let mut documented = std::collections::BTreeSet::new();
        for line in block.lines().map(|l| l.trim_start_matches('#').trim()) {
            // `[table]`, or `[[table]]` for an array of tables.
            if let Some(name) = line
                .strip_prefix('[')
                .map(|l| l.trim_start_matches('['))
                .and_then(|l| l.split(']').next())
            {
                table = name;
                documented.insert(name.to_string());
            } else if let Some((key, _)) = line.split_once(" =") {
                let full = if table.is_empty() {
                    key.to_string()
                } else {
                    format!("{table}.{key}")
                };
                documented.insert(full);
            }
        }
        for (table, keys) in SCHEMA {
            for key in *keys {
                let full = if table.is_empty() {
                    key.to_string()
                } else {
                    format!("{table}.{key}")
                };
                // An inline table (`ports = { blue = .., green = .. }`)
                // documents its keys on one line.
                assert!(
                    documented.contains(&full)
                        || (table.contains('.') && documented.contains(*table)),
                    "docs/configuration.md does not document {full}"
                );
            }
        }
        parse(block, Path::new("/etc/app/shipit.toml"))
            .expect("the example of docs/configuration.md parses");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("keep_releases = 0\n", "keep_releases = 0"),
            ("[hooks]\nbuild_timeout = \"soon\"\n", "\"soon\""),
            ("[health]\nurl = \"ftp://x\"\n", "ftp://x"),
            ("[health]\nurl = \"http://\"\n", "http://"),
            ("shared = [\"../etc\"]\n", "../etc"),
            ("shared = [\"/etc/passwd\"]\n", "/etc/passwd"),
        ];
        for (extra, needle) in cases {
            let text = if extra.starts_with('[') {
                format!("{MIN}{extra}")
            } else {
                format!("{extra}{MIN}")
            };
            let e = parse_str(&text).unwrap_err();
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn a_health_gate_that_cannot_pass_is_refused() {
        let e =
            parse_str(&format!("{MIN}[health]\nurl = \" http://127.0.0.1:1/ \"\n")).unwrap_err();
        assert!(e.message.contains("spaces around it"), "{e}");
        let e = parse_str(&format!(
            "{MIN}[health]\nurl = \"http://127.0.0.1:1/\"\ntimeout = \"5s\"\ninitial_delay = \"5s\"\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("can never pass"), "{e}");
        assert!(
            e.hint
                .as_deref()
                .unwrap()
                .contains("includes initial_delay"),
            "{e}"
        );
        // Two probes 1s apart after a 3s delay need more than 4s.
        let text =
            "[health]\nurl = \"http://127.0.0.1:1/\"\ninterval = \"1s\"\ninitial_delay = \"3s\"\n";
        assert!(parse_str(&format!("{MIN}{text}timeout = \"4s\"\n")).is_err());
        parse_str(&format!("{MIN}{text}timeout = \"5s\"\n")).unwrap();
    }

    #[test]
    fn credentials_in_a_bad_health_url_are_not_shown() {
        let e = parse_str(&format!(
            "{MIN}[health]\nurl = \"ftp://admin:hunter2@x/\"\n"
        ))
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn a_source_path_that_holds_deploy_to_is_refused() {
        for (path, deploy_to) in [(".", "deploy"), ("/srv/app", "/srv/app"), ("/", "/srv/x")] {
            let e = parse_str(&format!(
                "deploy_to = \"{deploy_to}\"\n[source]\npath = \"{path}\"\n"
            ))
            .unwrap_err();
            assert!(e.message.contains("contains deploy_to"), "{path}: {e}");
        }
        parse_str("deploy_to = \"/srv/app\"\n[source]\npath = \"/srv/app-build\"\n").unwrap();
        // Through a symlink.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("build")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("build"), dir.path().join("alias")).unwrap();
        let text = format!(
            "deploy_to = \"{}/alias/deploy\"\n[source]\npath = \"{}/build\"\n",
            dir.path().display(),
            dir.path().display()
        );
        let e = parse(&text, &dir.path().join("shipit.toml")).unwrap_err();
        assert!(e.message.contains("contains deploy_to"), "{e}");
    }

    #[test]
    fn source_subdir_and_verify_are_checked() {
        for (extra, says) in [
            ("subdir = \"../web\"\n", "source.subdir = \"../web\""),
            ("subdir = \"/apps/web\"\n", "absolute"),
            ("verify = \"signed\"\n", "needs source.allowed_signers"),
            (
                "verify = \"signed\"\nallowed_signers = \"nowhere\"\n",
                "/etc/app/nowhere",
            ),
        ] {
            let e = parse_str(&format!("{MIN}{extra}")).unwrap_err();
            assert!(e.to_string().contains(says), "{extra}: {e}");
        }
        let c = parse_str(&format!("{MIN}subdir = \"apps/web/\"\n")).unwrap();
        assert!(c.source.submodules, "submodules are exported by default");
        assert_eq!(c.source.verify, Verify::None);
    }

    #[test]
    fn source_must_be_exactly_one() {
        let e = parse_str("deploy_to = \"/a\"\n[source]\nbranch = \"main\"\n").unwrap_err();
        assert!(e.message.contains("none of"), "{e}");
        let e =
            parse_str("deploy_to = \"/a\"\n[source]\ngit = \"/r\"\npath = \"/p\"\n").unwrap_err();
        assert!(e.message.contains("more than one"), "{e}");
    }

    #[test]
    fn branch_with_leading_dash_is_refused() {
        let e =
            parse_str("deploy_to = \"/a\"\n[source]\ngit = \"/r\"\nbranch = \"--upload-pack=x\"\n")
                .unwrap_err();
        assert!(e.to_string().contains("--upload-pack=x"), "{e}");
    }

    #[test]
    fn fleet_hosts_and_settings_are_checked() {
        let fleet = |extra: &str| parse_str(&format!("{MIN}[fleet]\n{extra}"));
        let c = fleet("hosts = [\"deploy@web1\", \"ssh://deploy@web2:2222\"]\n").unwrap();
        let f = c.fleet.unwrap();
        assert_eq!((f.batch, f.concurrency, f.hosts.len()), (1, 16, 2));
        assert_eq!(f.state, PathBuf::from("/etc/app/.shipit-fleet"));
        assert_eq!(f.migrate_host(), "deploy@web1");
        let c = fleet("hosts = [\"web1\", \"web2\"]\nprimary = \"web2\"\n").unwrap();
        assert_eq!(c.fleet.unwrap().migrate_host(), "web2");
        for (extra, needle) in [
            ("hosts = []\n", "fleet.hosts"),
            ("hosts = [\"-oProxyCommand=x\"]\n", "-oProxyCommand=x"),
            ("hosts = [\"web 1\"]\n", "web 1"),
            ("hosts = [\"ssh://web1:port\"]\n", "ssh://web1:port"),
            ("hosts = [\"web1\", \"web1\"]\n", "twice"),
            ("hosts = [\"web1\"]\nbatch = 0\n", "fleet.batch = 0"),
            (
                "hosts = [\"web1\"]\nconcurrency = 0\n",
                "fleet.concurrency = 0",
            ),
            (
                "hosts = [\"web1\"]\nhost_shipit = \"-x\"\n",
                "fleet.host_shipit = \"-x\"",
            ),
            (
                "hosts = [\"web1\"]\nhost_shipit = \"shipit\"\nbinary = \"b\"\n",
                "both say which shipit",
            ),
            ("hosts = [\"web1\"]\nbach = 2\n", "`fleet.batch`"),
            (
                "hosts = [\"web1\"]\nprimary = \"web2\"\n",
                "fleet.primary = \"web2\" in /etc/app/shipit.toml is not one of fleet.hosts",
            ),
        ] {
            let e = fleet(extra).unwrap_err();
            assert!(e.to_string().contains(needle), "{extra}: {e}");
        }
        let e = parse_str(
            "deploy_to = \"srv/app\"\n[source]\ngit = \"/r\"\n[fleet]\nhosts = [\"web1\"]\n",
        )
        .unwrap_err();
        assert!(e.message.contains("relative"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("fast").is_err());
    }

    /// Regression: `retire_delay = "18446744073709551615s"` passed `check`,
    /// then panicked after the switch. Every duration key has a bound, and
    /// a value past it is refused naming the key and the bound.
    #[test]
    fn every_duration_key_is_bounded() {
        let full = format!(
            "{MIN}[health]\nurl = \"http://127.0.0.1:1/\"\n[slots]\nstart = \"s\"\nstop = \"s\"\n\
             [fleet]\nhosts = [\"web1\"]\n"
        );
        let durations = parse_str(&full).unwrap().durations();
        let keys: Vec<&str> = durations.iter().map(|(k, _)| *k).collect();
        for (table, names) in SCHEMA {
            for name in *names {
                let key = format!("{table}.{name}");
                let is_duration = key.ends_with("timeout")
                    || key.ends_with("delay")
                    || key.ends_with(".wait")
                    || key.ends_with(".grace")
                    || key.ends_with(".interval")
                    || key.ends_with("_persist");
                assert_eq!(is_duration, keys.contains(&key.as_str()), "{key}");
            }
        }
        for key in keys {
            let (table, name) = key.split_once('.').unwrap();
            let text = full.replace(
                &format!("[{table}]\n"),
                &format!("[{table}]\n{name} = \"18446744073709551615s\"\n"),
            );
            let text = if text.contains(&format!("[{table}]")) {
                text
            } else {
                format!("{text}[{table}]\n{name} = \"18446744073709551615s\"\n")
            };
            let e = parse_str(&text).unwrap_err();
            let limit = humantime::format_duration(duration_limit(key)).to_string();
            assert!(
                e.message.contains(key) && e.message.contains(&format!("limit of {limit}")),
                "{e}"
            );
            assert!(duration_limit(key) <= Duration::from_secs(7 * 24 * 3600));
        }
    }
}
