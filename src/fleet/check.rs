//! `shipit check` with a fleet: what each host would refuse or fail on,
//! asked of the host itself (the controller's own paths say nothing about
//! them).
//!
//! Read-only, as `check` is everywhere (SPEC §10): nothing is installed or
//! written. Each host gets its master connection (`BatchMode`, bounded by
//! the connect timeout) and one remote command, a POSIX shell script that
//! answers everything at once in tagged lines (`@@shipit-check ...`; a
//! login script may print other lines around them, which are ignored). The
//! config's paths and programs are its arguments, never part of its text,
//! and it names them back by index only. When this controller's build of
//! the agent is installed there, the script asks it `fleet-hello`, which
//! answers in the fleet protocol's own frame: its version and protocol.
//! Hosts are checked in parallel.

use crate::config::{Config, FleetConfig};
use crate::error::{Error, Result};
use crate::fleet::install::{self, Payload};
use crate::fleet::protocol;
use crate::fleet::ssh::Ssh;
use crate::ui::Ui;

/// `shipit fleet-hello`: the version, in the protocol's frame (which
/// carries the protocol version). Needs no config.
pub fn hello() -> Result<()> {
    let hello = protocol::Hello {
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let _ = crate::ui::out(&protocol::frame(&hello));
    Ok(())
}

/// How a check line starts.
const TAG: &str = "@@shipit-check ";

/// Arguments: deploy_to, the agent's file name, a shipit of the host's to
/// ask about (or empty) and the platform where it is not needed (empty:
/// always), the number of shared entries, then each shared path and `d`
/// or `f`, then the programs.
const SCRIPT: &str = r#"d="$1"; bin="$2"; cand="$3"; mine="$4"; n="$5"; shift 5
say() { printf '@@shipit-check %s\n' "$*"; }
plat=$(uname -sm 2>/dev/null || echo unknown)
say platform "$plat"
if [ -n "$cand" ] && [ "$plat" != "$mine" ]; then
  if p=$(command -v "$cand" 2>/dev/null); then
    say theirs "$p"
    h=$("$p" fleet-hello </dev/null 2>/dev/null | grep '^@@shipit-fleet/' | tail -n 1)
    say theirs-hello "$h"
  else
    say theirs-absent
  fi
fi
if [ -d "$d" ]; then
  if [ -w "$d" ] && [ -x "$d" ]; then say deploy_to writable; else say deploy_to unwritable; fi
elif [ -e "$d" ] || [ -L "$d" ]; then say deploy_to not-a-directory
else
  p="$d"
  while [ ! -e "$p" ]; do p=$(dirname -- "$p"); done
  if [ -d "$p" ] && [ -w "$p" ] && [ -x "$p" ]; then say deploy_to creatable; else say deploy_to uncreatable "$p"; fi
fi
i=0
while [ "$i" -lt "$n" ]; do
  p="$1"; k="$2"; shift 2
  if [ "$k" = d ]; then
    if [ -d "$p" ]; then s=dir; elif [ -e "$p" ]; then s=not-dir; else s=absent; fi
  else
    if [ -f "$p" ]; then s=file; elif [ -e "$p" ]; then s=not-file; else s=absent; fi
  fi
  say shared "$i" "$s"
  i=$((i+1))
done
i=0
for p in "$@"; do
  case "$p" in
    /*) if [ -f "$p" ] && [ -x "$p" ]; then s=found; else s=missing; fi ;;
    *) if command -v "$p" >/dev/null 2>&1; then s=found; else s=missing; fi ;;
  esac
  say program "$i" "$s"
  i=$((i+1))
done
if [ -d /run/systemd/system ]; then say systemd yes; else say systemd no; fi
say user "$(id -un 2>/dev/null || echo "the ssh user")"
a="$d/.shipit/bin/$bin"
if [ -n "$bin" ] && [ -f "$a" ] && [ -x "$a" ]; then
  "$a" fleet-hello 2>/dev/null </dev/null || say agent broken
else
  say agent absent
  for f in "$d"/.shipit/bin/shipit-*; do
    if [ -x "$f" ]; then say other "${f##*/}"; fi
  done
fi
say done
"#;

/// What a host said about itself.
#[derive(Debug, Default)]
pub struct Answer {
    /// `writable`, `creatable`, `unwritable`, `not-a-directory` or
    /// `uncreatable <the existing parent>`.
    pub deploy_to: String,
    /// Per shared entry, in config order: `file`, `dir`, `absent`,
    /// `not-file` or `not-dir`.
    pub shared: Vec<String>,
    /// Per program asked about: found on PATH there.
    pub programs: Vec<bool>,
    pub systemd: bool,
    /// Who the checks ran as there.
    pub user: String,
    pub agent: Agent,
    /// Other shipit builds installed there (when this one is not).
    pub others: Vec<String>,
    /// `uname -sm` there.
    pub platform: String,
    /// A shipit installed there, when asked about: its path and what its
    /// `fleet-hello` said (`None`: none is installed).
    pub theirs: Option<(String, std::result::Result<protocol::Hello, String>)>,
}

/// This controller's build of the agent on a host.
#[derive(Debug, Default)]
pub enum Agent {
    #[default]
    Absent,
    Speaks(protocol::Hello),
    /// It is there but does not answer as this build would.
    Broken(String),
}

/// One host's result: what it said, or why it could not be asked.
pub struct HostCheck {
    pub host: String,
    pub answer: Result<Answer>,
}

/// Ask every host, in parallel. `programs` are looked up on each host's
/// PATH (absolute ones as they are).
pub fn run(ui: &Ui, config: &Config, fleet: &FleetConfig, programs: &[String]) -> Vec<HostCheck> {
    let ssh = match Ssh::new(&fleet.ssh_options, fleet.ssh_persist) {
        Ok(ssh) => ssh,
        Err(e) => {
            let text = e.to_string();
            return fleet
                .hosts
                .iter()
                .map(|h| HostCheck {
                    host: h.clone(),
                    answer: Err(Error::internal(text.clone())),
                })
                .collect();
        }
    };
    let name = match &fleet.binary {
        Some(binary) => install::sha256_file(binary)
            .map(|sha| install::agent_file_name(&sha))
            .unwrap_or_default(),
        None => Payload::agent_name().unwrap_or_default(),
    };
    // As a rollout does: the shipit named by fleet.host_shipit, or one on
    // the PATH of a host whose platform is not ours (without fleet.binary).
    let (cand, mine) = match (&fleet.host_shipit, &fleet.binary) {
        (Some(named), _) => (named.clone(), String::new()),
        (None, None) => ("shipit".to_string(), install::local_platform()),
        (None, Some(_)) => (String::new(), String::new()),
    };
    let mut argv: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        SCRIPT.into(),
        "shipit-check".into(),
        config.deploy_to.display().to_string(),
        name,
        cand,
        mine,
    ];
    let mut shared: Vec<(std::path::PathBuf, bool)> = config
        .shared_paths()
        .into_iter()
        .map(|(rel, is_dir)| (config.deploy_to.join("shared").join(rel), is_dir))
        .collect();
    // env_file is probed like a shared file, after them: each host reads
    // its own.
    if let Some(env_file) = &config.env_file {
        shared.push((config.deploy_to.join(env_file), false));
    }
    argv.push(shared.len().to_string());
    for (path, is_dir) in &shared {
        argv.push(path.display().to_string());
        argv.push(if *is_dir { "d" } else { "f" }.into());
    }
    argv.extend(programs.iter().cloned());
    let answers = crate::fleet::parallel::parallel(fleet.concurrency, &fleet.hosts, |host| {
        let answer = ssh.connect(host).and_then(|()| {
            let out = ssh.run(ui, host, &argv, None)?;
            parse(host, &out, shared.len(), programs.len())
        });
        ssh.close(host);
        answer
    });
    fleet
        .hosts
        .iter()
        .zip(answers)
        .map(|(host, answer)| HostCheck {
            host: host.clone(),
            answer,
        })
        .collect()
}

/// Read the script's lines (and the agent's framed hello).
fn parse(
    host: &str,
    out: &crate::fleet::ssh::Output,
    shared: usize,
    programs: usize,
) -> Result<Answer> {
    let mut answer = Answer {
        shared: vec![String::new(); shared],
        programs: vec![false; programs],
        ..Answer::default()
    };
    let mut done = false;
    let mut agent_said: Option<String> = None;
    for line in out.stdout.lines() {
        let Some(rest) = line.trim_end_matches('\r').strip_prefix(TAG) else {
            continue;
        };
        let mut words = rest.splitn(3, ' ');
        let (key, a, b) = (words.next(), words.next(), words.next());
        match (key, a) {
            (Some("deploy_to"), Some(state)) => {
                answer.deploy_to = match b {
                    Some(more) => format!("{state} {more}"),
                    None => state.to_string(),
                };
            }
            (Some("shared"), Some(i)) => {
                if let (Ok(i), Some(s)) = (i.parse::<usize>(), b)
                    && i < shared
                {
                    answer.shared[i] = s.to_string();
                }
            }
            (Some("program"), Some(i)) => {
                if let Ok(i) = i.parse::<usize>()
                    && i < programs
                {
                    answer.programs[i] = b == Some("found");
                }
            }
            (Some("platform"), Some(first)) => {
                answer.platform = [Some(first), b]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            (Some("theirs"), Some(first)) => {
                let path = [Some(first), b]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                answer.theirs = Some((path, Err("it did not answer".into())));
            }
            (Some("theirs-hello"), rest) => {
                let line = [rest, b]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                if let Some((_, said)) = &mut answer.theirs {
                    *said = protocol::unframe::<protocol::Hello>(&line)
                        .map_err(|e| e.to_error(host, 0).message.replace('\n', "; "));
                }
            }
            (Some("systemd"), Some(yes)) => answer.systemd = yes == "yes",
            (Some("user"), Some(user)) => {
                answer.user = match b {
                    Some(more) => format!("{user} {more}"),
                    None => user.to_string(),
                };
            }
            (Some("agent"), Some(state)) => agent_said = Some(state.to_string()),
            (Some("other"), Some(name)) => answer.others.push(name.to_string()),
            (Some("done"), _) => done = true,
            _ => {}
        }
    }
    if !done {
        let e = protocol::unframe::<protocol::Hello>("").unwrap_err();
        let stray: Vec<String> = out
            .stdout
            .lines()
            .filter(|l| !l.starts_with(TAG) && !l.trim().is_empty())
            .map(String::from)
            .collect();
        let mut e = match e {
            protocol::Unframed::Missing { .. } => protocol::Unframed::Missing { stray },
            other => other,
        }
        .to_error(host, out.code);
        if out.code != 0 {
            e = e.cause(install::last_words(out));
        }
        return Err(e);
    }
    answer.agent = match agent_said.as_deref() {
        Some("absent") => Agent::Absent,
        Some(other) => Agent::Broken(format!("it did not answer ({other})")),
        None => match protocol::unframe::<protocol::Hello>(&out.stdout) {
            Ok(hello) => Agent::Speaks(hello),
            Err(e) => Agent::Broken(e.to_error(host, out.code).to_string().replace('\n', "; ")),
        },
    };
    Ok(answer)
}
