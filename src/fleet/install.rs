//! What a host needs to take part: this very shipit binary and the config,
//! installed by the controller under `<deploy_to>/.shipit/`. A host needs
//! only sshd, a POSIX shell and coreutils (and tar for
//! `fleet.keep_special_files`).
//!
//! - The binary is `bin/shipit-<version>-<first 12 hex of its sha256>`: the
//!   name says what it is, so "is it installed" is one `test -x`, and a
//!   controller of another build never runs a host's stale copy. It is
//!   uploaded to a temporary name, its sha256 checked on the host, and only
//!   then renamed into place: a cut transfer or a corrupted copy is never
//!   run. A rollout that holds a host's fleet lock keeps the
//!   [`KEEP_BINARIES`] newest there, the one it runs always among them.
//! - A host of another platform (`uname -sm`, said in the same round trip
//!   as the config) cannot run this binary: it runs `fleet.binary` (a
//!   build for it, installed the same way), or a shipit installed there
//!   (`fleet.host_shipit`, or one on its PATH) that speaks this fleet
//!   protocol; with neither it is refused, naming both platforms.
//! - The config is the controller's, without `[fleet]` and the build hooks
//!   (the build runs on the controller). A rollout pins it by digest: it
//!   is written to `config/<sha256 of its text, 16 hex>.toml` (a temporary
//!   file and a rename; the name says what it holds, so rewriting it never
//!   changes it) and every step of that rollout on that host (receive,
//!   activate, its own rollback, the switch back, discard) runs with that
//!   file. Another controller with another config writes another file, so
//!   it can never change the hooks or the gate of a rollout in flight.
//!   `fleet.toml` is a copy of the config of the latest rollout (made once
//!   it holds the fleet lock), for the read-only commands (`status` probes its health URL) and for running
//!   shipit by hand on the host.
//! - Read-only commands (`status`, `releases`) install and write nothing:
//!   they run the agent only if this controller's build of it is already
//!   there, and report a host without it as such.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::fleet::protocol::PIN_VAR;
use crate::fleet::ssh::{Ssh, quote, remote_command};
use crate::ui::Ui;

/// The controller's binary and host config, ready to install.
pub struct Payload {
    pub binary: PathBuf,
    /// `fleet.binary`: a shipit for the hosts' platform, not this one.
    pub foreign_binary: bool,
    /// `fleet.host_shipit`: run the shipit installed on the hosts.
    pub host_shipit: Option<String>,
    /// `uname -sm` here, compared with each host's.
    pub platform: String,
    /// `shipit-<version>-<sha12>`.
    pub name: String,
    pub sha256: String,
    /// The first 16 hex digits of the host config's sha256: its name on
    /// the host, `config/<digest>.toml`.
    pub config_digest: String,
    /// The host config, in a temp file (ssh reads it as stdin).
    pub config: tempfile::NamedTempFile,
    /// The same text, for [`Payload::reach`].
    config_text: String,
    pub deploy_to: PathBuf,
}

impl Payload {
    pub fn prepare(config: &Config) -> Result<Payload> {
        let fleet = config.fleet.as_ref();
        let foreign = fleet.and_then(|f| f.binary.clone());
        let binary = match &foreign {
            Some(binary) => binary.clone(),
            None => std::env::current_exe().map_err(|e| {
                Error::internal("could not find the shipit binary to install").cause(e)
            })?,
        };
        let sha256 = sha256_file(&binary).map_err(|e| match &foreign {
            Some(_) => e.hint(
                "fleet.binary names the shipit to install on the hosts: build it, or fix the path",
            ),
            None => e,
        })?;
        let name = agent_file_name(&sha256);
        let text = host_config(config)?;
        let config_digest: String = Sha256::digest(text.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut file = tempfile::NamedTempFile::new()
            .map_err(|e| Error::internal("could not write the host config").cause(e))?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .map_err(|e| Error::internal("could not write the host config").cause(e))?;
        Ok(Payload {
            binary,
            foreign_binary: foreign.is_some(),
            host_shipit: fleet.and_then(|f| f.host_shipit.clone()),
            platform: local_platform(),
            name,
            sha256,
            config_digest,
            config: file,
            config_text: text,
            deploy_to: config.deploy_to.clone(),
        })
    }

    /// The file name this controller's own binary has on a host.
    pub fn agent_name() -> Result<String> {
        let binary = std::env::current_exe()
            .map_err(|e| Error::internal("could not find the shipit binary").cause(e))?;
        Ok(agent_file_name(&sha256_file(&binary)?))
    }

    fn state_dir(&self) -> String {
        self.deploy_to.join(".shipit").display().to_string()
    }

    fn binary_path(&self) -> String {
        self.deploy_to
            .join(".shipit/bin")
            .join(&self.name)
            .display()
            .to_string()
    }

    /// The config this rollout pinned on every host.
    pub fn pinned_config(&self) -> String {
        self.deploy_to
            .join(".shipit/config")
            .join(format!("{}.toml", self.config_digest))
            .display()
            .to_string()
    }

    /// The host's shipit, and the arguments every agent call starts with:
    /// with the config this rollout pinned.
    pub fn agent(&self) -> Vec<String> {
        self.agent_at(&self.binary_path())
    }

    /// The same, with the shipit at `binary` on the host.
    pub fn agent_at(&self, binary: &str) -> Vec<String> {
        vec![
            binary.to_string(),
            "--config".into(),
            self.pinned_config(),
            "fleet-agent".into(),
        ]
    }

    /// A rollout's one remote command per host when all is in place:
    /// check that this build is there, and run the agent with `args`,
    /// which first pins the config (its text is handed to the agent in its
    /// environment: stdin is the session that holds the fleet lock). Where
    /// anything else is needed (an upload) it says so on a [`SAYS`] line
    /// and runs nothing: [`ensure`] does the rest.
    ///
    /// The host's login shell runs it itself, with builtins only (`[`,
    /// `echo`, `export`, `exec`), every word quoted: its process becomes
    /// the agent, with no `sh` started between them.
    ///
    /// The platform is not asked again: this build is put on a host only
    /// once [`ensure`] found the host's `uname -sm` to be the
    /// controller's (or it is `fleet.binary`, built for the hosts). A host
    /// whose platform changed under its `deploy_to` since fails to run it
    /// (`Exec format error`, status 126); that answer is no state, so the
    /// rollout takes the longer path, where [`ensure`] compares the
    /// platforms again. (Where an emulator is registered for the
    /// controller's platform, the build runs there, emulated.)
    /// `None` when this path does not apply: `fleet.host_shipit`, or a
    /// command too long for one argument.
    pub fn reach(&self, args: &[String]) -> Option<String> {
        if self.host_shipit.is_some() {
            return None;
        }
        let binary = quote(&self.binary_path());
        let mut agent = self.agent_at(&self.binary_path());
        agent.extend(args.iter().cloned());
        let command = format!(
            "[ -x {binary} ] || {{ echo {missing}; exit 0; }}; export {PIN_VAR}={config}; \
             exec {agent}",
            missing = quote("@@shipit-install missing"),
            config = quote(&self.config_text),
            agent = remote_command(&agent),
        );
        // Linux limits one argument (the login shell's command) to 128 KiB
        // (MAX_ARG_STRLEN); a config is a few KiB, quoted.
        (command.len() <= MAX_REACH_COMMAND).then_some(command)
    }

    /// The same for a read-only command: the agent of this build and the
    /// host's config of its latest rollout, only if both are there; a
    /// [`ABSENT`] line otherwise. Nothing is written.
    pub fn read_only_agent(&self) -> Vec<String> {
        let state = self.deploy_to.join(".shipit");
        vec![
            "sh".into(),
            "-c".into(),
            READ_ONLY_SCRIPT.into(),
            "shipit-agent".into(),
            self.host_shipit
                .clone()
                .unwrap_or_else(|| self.binary_path()),
            state.join("fleet.toml").display().to_string(),
            // Without this build there, a shipit on the host's PATH (a
            // host this controller cannot install itself on runs one).
            if self.host_shipit.is_none() && !self.foreign_binary {
                "path".into()
            } else {
                String::new()
            },
        ]
    }
}

/// The host's config: the controller's, less `[fleet]` and the build hooks,
/// with `deploy_to` and the source as the controller resolved them.
fn host_config(config: &Config) -> Result<String> {
    let text = std::fs::read_to_string(&config.file)
        .map_err(|e| Error::io("could not read", &config.file, e))?;
    let mut table: toml::Table = toml::from_str(&text)
        .map_err(|e| Error::usage(format!("invalid config {}", config.file.display())).cause(e))?;
    table.remove("fleet");
    table.insert(
        "deploy_to".into(),
        toml::Value::String(config.deploy_to.display().to_string()),
    );
    if let Some(toml::Value::Table(hooks)) = table.get_mut("hooks") {
        hooks.remove("build");
        hooks.remove("build_timeout");
    }
    let mut source = toml::Table::new();
    match (&config.source.git, &config.source.path) {
        (Some(git), _) => {
            source.insert("git".into(), toml::Value::String(git.clone()));
        }
        (None, Some(path)) => {
            source.insert(
                "path".into(),
                toml::Value::String(path.display().to_string()),
            );
        }
        (None, None) => {
            // A CI artifact (`deploy --archive`): hosts never read it, but
            // their config must name a source.
            if let Some(archive) = &config.source.archive {
                source.insert(
                    "archive".into(),
                    toml::Value::String(archive.display().to_string()),
                );
            }
        }
    }
    source.insert(
        "branch".into(),
        toml::Value::String(config.source.branch.clone()),
    );
    table.insert("source".into(), toml::Value::Table(source));
    let header = format!(
        "# Written by the shipit fleet controller from {} on every rollout;\n\
         # edit that file, not this one. The build runs on the controller.\n",
        config.file.display()
    );
    Ok(header + &toml::to_string(&table).expect("a table serializes"))
}

/// How many shipit builds a host keeps in `.shipit/bin`: every distinct
/// controller build installs one (about 5 MB), and a host would keep them
/// all forever.
pub const KEEP_BINARIES: usize = 3;

/// Which of the binaries found in `.shipit/bin` (name, mtime) to remove:
/// all but the `keep` newest, the one in use always kept (and counted).
/// Only installed builds (`shipit-...`): an upload in flight has a hidden
/// temporary name. Run under the fleet lock only: the rollout that holds
/// it runs the one in use, and no other controller runs one meanwhile.
pub fn binaries_to_prune(
    found: &[(String, std::time::SystemTime)],
    in_use: &str,
    keep: usize,
) -> Vec<String> {
    let mut builds: Vec<&(String, std::time::SystemTime)> = found
        .iter()
        .filter(|(name, _)| name.starts_with("shipit-"))
        .collect();
    // Newest first; by name among equals, so the plan is the same each time.
    builds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut kept = usize::from(builds.iter().any(|(name, _)| name == in_use));
    let mut gone = Vec::new();
    for (name, _) in builds {
        if name == in_use {
            continue;
        }
        if kept < keep {
            kept += 1;
        } else {
            gone.push(name.clone());
        }
    }
    gone
}

/// `shipit-<version>-<first 12 hex of its sha256>`.
pub fn agent_file_name(sha256: &str) -> String {
    format!("shipit-{}-{}", env!("CARGO_PKG_VERSION"), &sha256[..12])
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("could not read", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("could not read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The longest command [`Payload::reach`] hands a host's login shell, with
/// room to spare below Linux's 128 KiB for one argument.
const MAX_REACH_COMMAND: usize = 120 * 1024;

/// What the install and read-only scripts say, on a line of its own (a
/// login script may print other lines around it).
pub const SAYS: &str = "@@shipit-install ";
/// What the read-only script says when the agent or its config is absent.
pub const ABSENT: &str = "@@shipit-absent ";

/// Write the pinned config (the copy for read-only commands is made once
/// the fleet lock is taken); say the host's platform, whether the binary
/// is there, and, when asked (`$4`, on a host whose platform is not `$5`),
/// which shipit is installed there and what it speaks. One round trip.
const CONFIG_SCRIPT: &str = r#"set -e
state="$1"; bin="$2"; digest="$3"
mkdir -p "$state/bin" "$state/config"
tmp="$state/config/.$digest.$$"
trap 'rm -f "$tmp"' EXIT
(umask 077; cat > "$tmp")
mv -f "$tmp" "$state/config/$digest.toml"
trap - EXIT
plat=$(uname -sm 2>/dev/null || echo unknown)
echo "@@shipit-platform $plat"
if [ -n "$4" ] && [ "$plat" != "$5" ] && p=$(command -v "$4" 2>/dev/null); then
  echo "@@shipit-host-shipit $p"
  "$p" fleet-hello </dev/null 2>/dev/null || true
fi
if [ -x "$state/bin/$bin" ]; then echo "@@shipit-install present"; else echo "@@shipit-install missing"; fi
"#;

/// `uname -sm` of the controller (what a host's is compared with).
pub fn local_platform() -> String {
    std::process::Command::new("uname")
        .arg("-sm")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{} {}", std::env::consts::OS, std::env::consts::ARCH))
}

/// What the config script says of the host's platform and of a shipit
/// installed there.
const PLATFORM: &str = "@@shipit-platform ";
const HOST_SHIPIT: &str = "@@shipit-host-shipit ";

/// How a host runs its agent after [`ensure`].
pub enum Installed {
    /// This controller's build (or `fleet.binary`), in `.shipit/bin`.
    Ours,
    /// The shipit installed on the host, at this path.
    Host(String),
}

/// Run the agent of this build (or the host's own shipit, see
/// [`Payload::read_only_agent`]) with the config of the host's latest
/// rollout, if both are there; change nothing either way.
const READ_ONLY_SCRIPT: &str = r#"bin="$1"; config="$2"; mine="$3"; shift 3
case "$bin" in */*) ;; *) bin=$(command -v "$bin" 2>/dev/null) || bin= ;; esac
if [ ! -x "$bin" ] && [ -n "$mine" ]; then bin=$(command -v shipit 2>/dev/null) || bin=; fi
if [ ! -x "$bin" ]; then echo "@@shipit-absent agent"; exit 0; fi
if [ ! -f "$config" ]; then echo "@@shipit-absent config"; exit 0; fi
exec "$bin" --config "$config" fleet-agent "$@"
"#;

/// What a line-tagged script said: the last line that starts with `tag`.
pub fn said<'a>(stdout: &'a str, tag: &str) -> Option<&'a str> {
    stdout
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(tag))
        .next_back()
}

/// Receive the binary under a temporary name, check its sha256, rename.
const BINARY_SCRIPT: &str = r#"set -e
state="$1"; bin="$2"; want="$3"
tmp="$state/bin/.$bin.$$"
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
if command -v sha256sum >/dev/null 2>&1; then got=$(sha256sum "$tmp")
elif command -v shasum >/dev/null 2>&1; then got=$(shasum -a 256 "$tmp")
else echo "neither sha256sum nor shasum is installed on this host (coreutils)" >&2; exit 3
fi
got=${got%% *}
if [ "$got" != "$want" ]; then
  echo "the uploaded shipit is damaged: sha256 $got, expected $want" >&2; exit 4
fi
chmod 755 "$tmp"
mv -f "$tmp" "$state/bin/$bin"
trap - EXIT
"#;

/// Install the config; then say which shipit the host runs: the one
/// installed there when `fleet.host_shipit` names it, or when this
/// controller's binary cannot run there (another `uname -sm`, and no
/// `fleet.binary`) and one of this fleet protocol is on its PATH; else
/// ours (or `fleet.binary`), uploaded if the host lacks it. A host that
/// can run none of these is refused, naming both platforms. One round
/// trip, two when the binary is uploaded.
pub fn ensure(ssh: &Ssh, ui: &Ui, dest: &str, payload: &Payload) -> Result<Installed> {
    let script = |body: &str, args: &[&str]| {
        let mut argv = vec![
            "sh".to_string(),
            "-c".into(),
            body.into(),
            "shipit-install".into(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    };
    let state = payload.state_dir();
    let out = ssh.run(
        ui,
        dest,
        &script(
            CONFIG_SCRIPT,
            &[
                &state,
                &payload.name,
                &payload.config_digest,
                // The shipit of the host, asked about when the config
                // names one, or in case this one cannot run there.
                payload
                    .host_shipit
                    .as_deref()
                    .unwrap_or(if payload.foreign_binary { "" } else { "shipit" }),
                // Asked only where it is needed: always when named, else
                // on a host whose platform is not ours.
                if payload.host_shipit.is_some() {
                    ""
                } else {
                    &payload.platform
                },
            ],
        ),
        Some(payload.config.path()),
    )?;
    let answer = said(&out.stdout, SAYS);
    if out.code != 0 || !matches!(answer, Some("present" | "missing")) {
        let mut e = Error::internal(format!("could not install the config in {state} on {dest}"))
            .cause(last_words(&out));
        let stray: Vec<String> = out
            .stdout
            .lines()
            .filter(|l| !l.starts_with(SAYS) && !l.trim().is_empty())
            .map(String::from)
            .collect();
        if !stray.is_empty() {
            e = e.cause(format!(
                "it printed on stdout: {}",
                crate::fleet::protocol::quote_stray(&stray)
            ));
        }
        return Err(e);
    }
    let platform = said(&out.stdout, PLATFORM).unwrap_or("unknown").trim();
    let theirs = said(&out.stdout, HOST_SHIPIT).map(|path| {
        let hello = crate::fleet::protocol::unframe::<crate::fleet::protocol::Hello>(&out.stdout);
        (path.to_string(), hello)
    });
    let usable = |(path, hello): &(String, std::result::Result<_, _>)| -> Result<String> {
        match hello {
            Ok(crate::fleet::protocol::Hello { .. }) => Ok(path.clone()),
            Err(e) => Err(
                crate::fleet::protocol::Unframed::to_error(e, dest, out.code)
                    .context(format!("the shipit on {dest} ({path}) cannot be used")),
            ),
        }
    };
    if let Some(wanted) = &payload.host_shipit {
        return match &theirs {
            Some(found) => usable(found).map(Installed::Host),
            None => Err(Error::internal(format!(
                "fleet.host_shipit = {wanted:?} is not installed on {dest} ({platform})"
            ))
            .hint("install shipit there, or name its path in fleet.host_shipit")),
        };
    }
    if !payload.foreign_binary && platform != payload.platform {
        // This binary cannot run there; a shipit installed there can.
        return match &theirs {
            Some(found) => usable(found).map(Installed::Host),
            None => Err(Error::internal(format!(
                "{dest} is {platform}, this controller is {}: it cannot run this controller's shipit",
                payload.platform
            ))
            .hint(format!(
                "set fleet.binary to a shipit built for {platform}, or install shipit \
                 (fleet protocol {}) on that host's PATH or at fleet.host_shipit",
                crate::fleet::protocol::VERSION
            ))),
        };
    }
    if answer == Some("present") {
        return Ok(Installed::Ours);
    }
    ui.step("Installing", format!("{} on {dest}", payload.name));
    let out = ssh.run(
        ui,
        dest,
        &script(BINARY_SCRIPT, &[&state, &payload.name, &payload.sha256]),
        Some(&payload.binary),
    )?;
    if out.code != 0 {
        return Err(
            Error::internal(format!("could not install shipit in {state}/bin on {dest}"))
                .cause(last_words(&out)),
        );
    }
    Ok(Installed::Ours)
}

/// What a failed remote command said last (or how it ended).
pub fn last_words(out: &crate::fleet::ssh::Output) -> String {
    match out.stderr_tail.iter().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => line.clone(),
        None => format!("exit status {}", out.code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_host_keeps_the_newest_builds_and_always_the_one_in_use() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let found: Vec<(String, SystemTime)> = [
            ("shipit-1-a", 1),
            ("shipit-1-b", 2),
            ("shipit-1-c", 3),
            ("shipit-1-d", 4),
            ("shipit-1-e", 5),
            (".shipit-1-f.123", 0),
            ("notes", 0),
        ]
        .iter()
        .map(|(n, s)| (n.to_string(), at(*s)))
        .collect();
        // The one in use is the newest: the two next newest stay.
        assert_eq!(
            binaries_to_prune(&found, "shipit-1-e", 3),
            ["shipit-1-b", "shipit-1-a"]
        );
        // The one in use is the oldest: it stays, with the two newest.
        assert_eq!(
            binaries_to_prune(&found, "shipit-1-a", 3),
            ["shipit-1-c", "shipit-1-b"]
        );
        // Not among them (a shipit installed elsewhere): the three newest.
        assert_eq!(
            binaries_to_prune(&found, "shipit", 3),
            ["shipit-1-b", "shipit-1-a"]
        );
        assert!(binaries_to_prune(&found[..2], "shipit-1-a", 3).is_empty());
    }

    fn payload(deploy_to: &Path, config_text: &str) -> Payload {
        Payload {
            binary: PathBuf::from("/nonexistent"),
            foreign_binary: false,
            host_shipit: None,
            platform: String::new(),
            name: "shipit-test".into(),
            sha256: String::new(),
            config_digest: "0123456789abcdef".into(),
            config: tempfile::NamedTempFile::new().unwrap(),
            config_text: config_text.into(),
            deploy_to: deploy_to.to_path_buf(),
        }
    }

    /// The reach, run by a POSIX shell as a login shell runs it: with the
    /// binary there, it becomes that binary with every argument and the
    /// config in its environment byte for byte; without, it says so.
    #[test]
    fn the_reach_becomes_the_agent_with_its_arguments_and_config_intact() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = "a = \"it's $HOME `id` $(id) \\ !! ~ *\"\nb = '\"'\n";
        let args = [
            "lock".to_string(),
            "--holder={\"who\":\"o'brien $x\"}".into(),
        ];
        let reach = payload(dir.path(), config).reach(&args).unwrap();
        let run = || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(&reach)
                .output()
                .unwrap()
        };
        let out = run();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "@@shipit-install missing\n"
        );
        let bin = dir.path().join(".shipit/bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(
            bin.join("shipit-test"),
            "#!/bin/sh\nprintf '%s\\0' \"$0\" \"$@\" \"$SHIPIT_FLEET_PIN\"\n",
        )
        .unwrap();
        fs::set_permissions(bin.join("shipit-test"), fs::Permissions::from_mode(0o755)).unwrap();
        let out = run();
        let said: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .split_terminator('\0')
            .map(String::from)
            .collect();
        let pinned = dir.path().join(".shipit/config/0123456789abcdef.toml");
        assert_eq!(
            said,
            [
                bin.join("shipit-test").display().to_string(),
                "--config".into(),
                pinned.display().to_string(),
                "fleet-agent".into(),
                args[0].clone(),
                args[1].clone(),
                config.into(),
            ]
        );
    }

    /// A command longer than one argument may be is not tried: quoting
    /// makes each `'` four bytes.
    #[test]
    fn a_reach_too_long_for_one_argument_is_not_tried() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            payload(dir.path(), &"'".repeat(20 * 1024))
                .reach(&[])
                .is_some()
        );
        assert!(
            payload(dir.path(), &"'".repeat(40 * 1024))
                .reach(&[])
                .is_none()
        );
    }
}
