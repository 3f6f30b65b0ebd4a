//! What the controller and a host say to each other: serde types that both
//! sides compile from this one file, framed on the host's stdout, with a
//! protocol version.
//!
//! A host's stdout is not ours alone: a `.bashrc` that echoes, a login
//! banner, a profile script that prints a fortune all land on it before the
//! agent runs. So a message is one line that starts with [`MARK`] and the
//! protocol version (`@@shipit-fleet/1 {...}`); every other line is stray,
//! ignored, and quoted in the diagnosis when no message came. Reading a
//! reply by string index (`state["current"]`) or matching outcome strings
//! breaks silently when one side changes; a typed message fails loudly, and
//! a host whose agent speaks another version is named with both versions.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind};
use crate::history::{Event, Migrate};
use crate::layout::ReleaseId;
use crate::views::{Probe, ReleaseRow};

/// The variable in which the controller's reach hands the agent the text
/// of the rollout's config ([`crate::fleet::install::Payload::reach`]): in
/// the environment, which only its user and root may read, not on the
/// agent's command line, which `ps` shows everyone for as long as the
/// lock holder lives (the config may name a git URL with a token).
pub const PIN_VAR: &str = "SHIPIT_FLEET_PIN";

/// Bumped whenever a message changes shape or a side expects another
/// exchange (2: the agent holding the fleet lock serves [`Request`]s; 3:
/// it answers an activation once live, and [`Request::Recorded`] once
/// recorded). The
/// version keeps a host whose agent was installed by another build from
/// being misread, or waited on for an answer it never gives.
pub const VERSION: u32 = 3;

/// How a message line starts: `@@shipit-fleet/<version> <json>`.
pub const MARK: &str = "@@shipit-fleet/";

/// One message, framed.
pub fn frame<T: Serialize>(message: &T) -> String {
    format!(
        "{MARK}{VERSION} {}\n",
        serde_json::to_string(message).expect("a protocol message serializes")
    )
}

/// Why no message could be read from a host's stdout.
#[derive(Debug)]
pub enum Unframed {
    /// No message line at all; the stray lines it printed instead.
    Missing { stray: Vec<String> },
    /// A message of another protocol version.
    Version { theirs: String },
    /// A message line that does not parse as the expected type.
    Garbled { why: String },
}

impl Unframed {
    /// The diagnosis, naming the host.
    pub fn to_error(&self, host: &str, code: i32) -> Error {
        match self {
            Unframed::Missing { stray } if stray.is_empty() => Error::internal(format!(
                "{host} gave no answer (the remote command exited with status {code})"
            )),
            Unframed::Missing { stray } => Error::internal(format!(
                "{host} gave no answer (the remote command exited with status {code}); \
                 it printed only lines that are not shipit's"
            ))
            .cause(quote_stray(stray))
            .hint(
                "a login script (.bashrc, .profile) or a banner prints on stdout there; \
                 that output is ignored, but shipit's own answer never came",
            ),
            Unframed::Version { theirs } => Error::internal(format!(
                "{host} speaks fleet protocol version {theirs}; this controller speaks version {VERSION}"
            ))
            .hint("run the same shipit version on the controller and the host (a deploy from this controller installs its own)"),
            Unframed::Garbled { why } => {
                Error::internal(format!("{host} sent an answer this controller cannot read"))
                    .cause(why.clone())
            }
        }
    }
}

/// The stray lines, quoted (the last few, each cut short).
pub fn quote_stray(stray: &[String]) -> String {
    let from = stray.len().saturating_sub(3);
    stray[from..]
        .iter()
        .map(|l| {
            let cut: String = l.chars().take(120).collect();
            format!("{cut:?}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The last message on `stdout`; other lines are stray.
pub fn unframe<T: DeserializeOwned>(stdout: &str) -> std::result::Result<T, Unframed> {
    let mut stray = Vec::new();
    let mut found: Option<(&str, &str)> = None;
    for line in stdout.lines() {
        match line.trim_end_matches('\r').strip_prefix(MARK) {
            Some(rest) => {
                let (version, body) = rest.split_once(' ').unwrap_or((rest, ""));
                found = Some((version, body));
            }
            None if line.trim().is_empty() => {}
            None => stray.push(line.to_string()),
        }
    }
    let Some((version, body)) = found else {
        return Err(Unframed::Missing { stray });
    };
    if version != VERSION.to_string() {
        return Err(Unframed::Version {
            theirs: version.to_string(),
        });
    }
    serde_json::from_str(body).map_err(|e| Unframed::Garbled { why: e.to_string() })
}

/// What every agent action answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply {
    /// What this host runs now, by its own report.
    pub live: Option<ReleaseId>,
    /// `Ok`: what the action did; `Err`: why it failed.
    pub result: std::result::Result<Done, Failure>,
}

/// A failed action: the error's kind (its outcome) and what failed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    pub kind: Kind,
    /// What failed, and the first reason why.
    pub message: String,
}

/// What a successful action did.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Done {
    State(Box<HostState>),
    Received {
        release: ReleaseId,
    },
    Activated {
        release: ReleaseId,
        removed: Vec<ReleaseId>,
    },
    /// The agent holding the fleet lock was asked to activate `release`:
    /// it is live and passed its gate; the host records that now (proven,
    /// prune, history), and answers [`Request::Recorded`] with
    /// [`Done::Activated`] once done.
    Live {
        release: ReleaseId,
    },
    /// `to: None`: `current` was removed (nothing was live before).
    Switched {
        from: Option<ReleaseId>,
        to: Option<ReleaseId>,
    },
    Discarded {
        removed: Option<ReleaseId>,
        kept: Option<ReleaseId>,
    },
    /// The fleet lock is held by this agent until its stdin closes.
    Locked,
    /// `hooks.migrate` ran to success in `release`.
    Migrated {
        release: ReleaseId,
    },
}

/// What a host has, for the controller's preflight, `releases` and
/// `status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostState {
    /// The agent's shipit version.
    pub version: String,
    pub hostname: String,
    pub current: Option<ReleaseId>,
    /// `current` in words (`releases/<id>`, or nothing live).
    pub describe: String,
    /// Newest first.
    pub releases: Vec<ReleaseRow>,
    pub foreign: Vec<String>,
    pub rollback_target: Option<ReleaseId>,
    /// `state --probe` with `[health]`: the probe made on the host now.
    pub health: Option<Probe>,
    pub last_deploy: Option<Event>,
}

impl HostState {
    pub fn has(&self, id: &ReleaseId) -> bool {
        self.releases.iter().any(|r| &r.id == id)
    }

    pub fn row(&self, id: &ReleaseId) -> Option<&ReleaseRow> {
        self.releases.iter().find(|r| &r.id == id)
    }
}

impl Reply {
    pub fn failure(&self) -> Option<&Failure> {
        self.result.as_ref().err()
    }
}

/// What a controller asks of the agent that holds a host's fleet lock, on
/// that agent's stdin, framed like the answers; each is answered with one
/// [`Reply`]. A rollout's release and switches go this way: no new
/// session, login shell and agent process on the host for each, which is
/// most of what a switch costs when the host has no reload hook (and about
/// 140 ms each where the login shell starts pyenv). The same request can
/// be made in a session of its own ([`Request::args`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "ask")]
pub enum Request {
    /// `fleet-agent receive`: the release, as a tar of exactly `bytes`
    /// bytes right after the request line (in a session of its own, the
    /// rest of stdin).
    Receive {
        id: ReleaseId,
        source: String,
        deployed_by: String,
        build_ms: u64,
        revision: Option<String>,
        revision_time: Option<chrono::DateTime<chrono::Utc>>,
        branch: Option<String>,
        keep_special_files: bool,
        bytes: u64,
    },
    /// `fleet-agent activate`.
    Activate {
        id: ReleaseId,
        migrate: Option<Migrate>,
    },
    /// `fleet-agent switch`: `to` is a release id or `none`.
    Switch {
        to: String,
        wait_ms: u64,
        force: bool,
    },
    /// `fleet-agent discard`.
    Discard { id: ReleaseId },
    /// Whether release `id`, answered as [`Done::Live`], is recorded
    /// (proven live, pruned, in the history): the agent that made it
    /// answers once it has recorded it; `fleet-agent recorded`, in a
    /// process of its own (that agent's session is gone), once nothing
    /// holds the host's deploy lock, from what the disk says.
    Recorded { id: ReleaseId },
}

impl Request {
    /// How many bytes follow the request line.
    pub fn body_len(&self) -> u64 {
        match self {
            Request::Receive { bytes, .. } => *bytes,
            _ => 0,
        }
    }

    /// The `fleet-agent` arguments that ask the same (`--key=value`: a
    /// value that starts with `-` stays a value).
    pub fn args(&self) -> Vec<String> {
        match self {
            Request::Receive {
                id,
                source,
                deployed_by,
                build_ms,
                revision,
                revision_time,
                branch,
                keep_special_files,
                bytes: _,
            } => {
                let mut args = vec![
                    "receive".to_string(),
                    format!("--id={id}"),
                    format!("--source={source}"),
                    format!("--deployed-by={deployed_by}"),
                    format!("--build-ms={build_ms}"),
                ];
                args.extend(revision.iter().map(|r| format!("--revision={r}")));
                if *keep_special_files {
                    args.push("--keep-special-files".into());
                }
                args.extend(
                    revision_time
                        .iter()
                        .map(|t| format!("--revision-time={}", t.to_rfc3339())),
                );
                args.extend(branch.iter().map(|b| format!("--branch={b}")));
                args
            }
            Request::Activate { id, migrate } => {
                let mut args = vec!["activate".into(), "--id".into(), id.to_string()];
                args.extend(migrate.map(|m| format!("--migrate={}", m.name())));
                args
            }
            Request::Switch { to, wait_ms, force } => {
                let mut args = vec!["switch".into(), "--to".into(), to.clone()];
                if *wait_ms > 0 {
                    args.push(format!("--wait-ms={wait_ms}"));
                }
                if *force {
                    args.push("--force".into());
                }
                args
            }
            Request::Discard { id } => vec!["discard".into(), "--id".into(), id.to_string()],
            Request::Recorded { id } => vec!["recorded".into(), "--id".into(), id.to_string()],
        }
    }
}

/// What `shipit fleet-hello` answers, framed: which shipit runs there.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_lines_are_ignored_and_quoted() {
        let reply = Reply {
            live: None,
            result: Err(Failure {
                kind: Kind::RollbackFailed,
                message: "gate".into(),
            }),
        };
        let out = format!("Welcome to web1\n{}motd\n", frame(&reply));
        let got: Reply = unframe(&out).unwrap();
        assert_eq!(got.failure().unwrap().kind, Kind::RollbackFailed);
        let e = unframe::<Reply>("hello from .bashrc\n").unwrap_err();
        let e = e.to_error("web1", 0);
        assert!(e.causes[0].contains("hello from .bashrc"), "{e}");
    }

    #[test]
    fn a_request_reads_back_and_asks_the_same_as_its_arguments() {
        let id = ReleaseId::parse("20260101000000").unwrap();
        let asked = Request::Activate {
            id: id.clone(),
            migrate: Some(Migrate::Skipped),
        };
        assert_eq!(unframe::<Request>(&frame(&asked)).unwrap(), asked);
        assert_eq!(
            asked.args(),
            ["activate", "--id", "20260101000000", "--migrate=skipped"]
        );
        let back = Request::Switch {
            to: "none".into(),
            wait_ms: 5,
            force: true,
        };
        assert_eq!(unframe::<Request>(&frame(&back)).unwrap(), back);
        assert_eq!(
            back.args(),
            ["switch", "--to", "none", "--wait-ms=5", "--force"]
        );
    }

    #[test]
    fn another_version_is_named() {
        let e = unframe::<Reply>("@@shipit-fleet/99 {}\n").unwrap_err();
        let e = e.to_error("web1", 0);
        assert!(e.message.contains("version 99"), "{e}");
        assert!(e.message.contains(&format!("version {VERSION}")), "{e}");
    }
}
