//! What a host needs to take part: this very shipit binary and the config,
//! installed by the controller under `<deploy_to>/.shipit/`. A host needs
//! only sshd, a POSIX shell, tar and coreutils.
//!
//! - The binary is `bin/shipit-<version>-<first 12 hex of its sha256>`: the
//!   name says what it is, so "is it installed" is one `test -x`, and a
//!   controller of another build never runs a host's stale copy. It is
//!   uploaded to a temporary name, its sha256 checked on the host, and only
//!   then renamed into place: a cut transfer or a corrupted copy is never
//!   run.
//! - The config is the controller's, without `[fleet]` and the build hooks
//!   (the build runs on the controller), written to `fleet.toml` through a
//!   temporary file and a rename on every rollout, so a changed gate or
//!   reload hook takes effect everywhere at once.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::fleet::ssh::Ssh;
use crate::ui::Ui;

/// The controller's binary and host config, ready to install.
pub struct Payload {
    pub binary: PathBuf,
    /// `shipit-<version>-<sha12>`.
    pub name: String,
    pub sha256: String,
    /// The host config, in a temp file (ssh reads it as stdin).
    pub config: tempfile::NamedTempFile,
    pub deploy_to: PathBuf,
}

impl Payload {
    pub fn prepare(config: &Config) -> Result<Payload> {
        let binary = std::env::current_exe()
            .map_err(|e| Error::internal("could not find the shipit binary to install").cause(e))?;
        let sha256 = sha256_file(&binary)?;
        let name = format!("shipit-{}-{}", env!("CARGO_PKG_VERSION"), &sha256[..12]);
        let text = host_config(config)?;
        let mut file = tempfile::NamedTempFile::new()
            .map_err(|e| Error::internal("could not write the host config").cause(e))?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .map_err(|e| Error::internal("could not write the host config").cause(e))?;
        Ok(Payload {
            binary,
            name,
            sha256,
            config: file,
            deploy_to: config.deploy_to.clone(),
        })
    }

    fn state_dir(&self) -> String {
        self.deploy_to.join(".shipit").display().to_string()
    }

    /// The host's shipit, and the arguments every agent call starts with.
    pub fn agent(&self) -> Vec<String> {
        let state = self.deploy_to.join(".shipit");
        vec![
            state.join("bin").join(&self.name).display().to_string(),
            "--config".into(),
            state.join("fleet.toml").display().to_string(),
            "fleet-agent".into(),
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

/// Write the config; say whether the binary is there. One round trip.
const CONFIG_SCRIPT: &str = r#"set -e
state="$1"; bin="$2"
command -v tar >/dev/null 2>&1 || { echo "tar is not installed on this host" >&2; exit 3; }
mkdir -p "$state/bin"
tmp="$state/.fleet.toml.$$"
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
mv -f "$tmp" "$state/fleet.toml"
trap - EXIT
if [ -x "$state/bin/$bin" ]; then echo present; else echo missing; fi
"#;

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

/// Install the config, and the binary if this host lacks it. `Ok(true)`
/// when the binary was uploaded.
pub fn ensure(ssh: &Ssh, ui: &Ui, dest: &str, payload: &Payload) -> Result<bool> {
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
        &script(CONFIG_SCRIPT, &[&state, &payload.name]),
        Some(payload.config.path()),
    )?;
    let said = out.stdout.trim();
    if out.code != 0 || !(said == "present" || said == "missing") {
        return Err(
            Error::internal(format!("could not install the config in {state} on {dest}"))
                .cause(last_words(&out)),
        );
    }
    if said == "present" {
        return Ok(false);
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
    Ok(true)
}

/// What a failed remote command said last (or how it ended).
pub fn last_words(out: &crate::fleet::ssh::Output) -> String {
    match out.stderr_tail.iter().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => line.clone(),
        None => format!("exit status {}", out.code),
    }
}
