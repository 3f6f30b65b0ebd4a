//! The one error type of shipit.
//!
//! An on-call operator reading a failure needs four things: what failed, why,
//! what is serving traffic now, and what to do next. Every error therefore
//! carries a message, a chain of causes, an optional `live now:` line and an
//! optional `hint:`. Its [`Kind`] decides the process exit code, so the exit
//! code always says which phase a deploy reached (see the README's table,
//! which a test checks against [`Kind::ALL`]).

use std::fmt;
use std::io;
use std::path::Path;

/// What kind of failure this is; each kind has its own exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Something unexpected (an I/O error outside a deploy, a bug).
    Internal,
    /// Bad command line, bad config or bad input: nothing was changed.
    Usage,
    /// A deploy failed before `current` moved: nothing live was changed.
    BeforeSwap,
    /// A deploy failed after the swap and the previous state was restored.
    RolledBack,
    /// A rollback (manual or automatic) failed: the site may be down.
    RollbackFailed,
    /// Another shipit command holds the deploy lock.
    LockBusy,
    /// A deploy failed after the swap and `--no-rollback` left it live.
    LeftLive,
    /// Fleet: a host failed, and every host runs what it ran before.
    FleetReverted,
    /// Fleet: a host failed, and the hosts do not all run what they ran
    /// before (a switch back failed, or `--no-revert` left them).
    FleetNotReverted,
    /// Interrupted by SIGINT or SIGTERM; cleaned up or rolled back first.
    Interrupted,
}

impl Kind {
    /// Every kind, in exit-code order (used by the README table test).
    pub const ALL: [Kind; 10] = [
        Kind::Internal,
        Kind::Usage,
        Kind::BeforeSwap,
        Kind::RolledBack,
        Kind::RollbackFailed,
        Kind::LockBusy,
        Kind::LeftLive,
        Kind::FleetReverted,
        Kind::FleetNotReverted,
        Kind::Interrupted,
    ];

    /// What the exit code tells a script, for `--help` and the man page.
    pub fn meaning(self) -> &'static str {
        match self {
            Kind::Internal => {
                "an unexpected error (I/O or permissions outside a deploy, a bug); the message says what failed"
            }
            Kind::Usage => "bad command line, config or input; nothing was changed",
            Kind::BeforeSwap => "the deploy failed before the swap; nothing live changed",
            Kind::RolledBack => {
                "the deploy failed after the swap (or in its slot) and what was live is live again"
            }
            Kind::RollbackFailed => {
                "a rollback (manual or automatic) did not prove healthy: the site may be down"
            }
            Kind::LockBusy => "another shipit command holds the deploy lock",
            Kind::LeftLive => "the deploy failed and --no-rollback left it live",
            Kind::FleetReverted => {
                "fleet: a host failed; every host runs what it ran before the rollout"
            }
            Kind::FleetNotReverted => {
                "fleet: a host failed; not every host runs what it ran before (see the table)"
            }
            Kind::Interrupted => {
                "interrupted (SIGINT, SIGTERM, SIGHUP); cleaned up or rolled back first"
            }
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Internal => 1,
            Kind::Usage => 2,
            Kind::BeforeSwap => 3,
            Kind::RolledBack => 4,
            Kind::RollbackFailed => 5,
            Kind::LockBusy => 6,
            Kind::LeftLive => 7,
            Kind::FleetReverted => 8,
            Kind::FleetNotReverted => 9,
            Kind::Interrupted => 130,
        }
    }

    /// The short name used in `--json` outcomes and in history.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Internal => "error",
            Kind::Usage => "usage",
            Kind::BeforeSwap => "failed-before-swap",
            Kind::RolledBack => "rolled-back",
            Kind::RollbackFailed => "rollback-failed",
            Kind::LockBusy => "lock-busy",
            Kind::LeftLive => "failed-left-live",
            Kind::FleetReverted => "fleet-reverted",
            Kind::FleetNotReverted => "fleet-not-reverted",
            Kind::Interrupted => "interrupted",
        }
    }

    /// The kind [`Kind::name`] names.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A kind crosses the fleet's wire as its JSON name.
impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Kind, D::Error> {
        let name = String::deserialize(d)?;
        Kind::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown outcome {name:?}")))
    }
}

#[derive(Clone, Debug)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    pub causes: Vec<String>,
    pub live: Option<String>,
    pub hint: Option<String>,
    /// The config the command used, so that an error says which one (it
    /// may have been found in a parent directory).
    pub config: Option<Box<Path>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            causes: Vec::new(),
            live: None,
            hint: None,
            config: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Kind::Internal, message)
    }

    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(Kind::Usage, message)
    }

    /// An I/O failure on `path`, e.g. `Error::io("could not read", path, e)`.
    pub fn io(what: &str, path: &Path, err: io::Error) -> Error {
        Error::internal(format!("{what} {}", path.display())).cause(err)
    }

    pub fn cause(mut self, cause: impl fmt::Display) -> Error {
        let text = cause.to_string();
        if !text.is_empty() {
            self.causes.push(text);
        }
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    pub fn live(mut self, live: impl Into<String>) -> Error {
        self.live = Some(live.into());
        self
    }

    /// Re-file this error under the phase it happened in. A lock-busy,
    /// interrupt or usage error keeps its own kind: those exit codes say more
    /// than the phase does.
    pub fn in_phase(mut self, kind: Kind) -> Error {
        if self.kind == Kind::Internal {
            self.kind = kind;
        }
        self
    }

    /// Put `message` in front and keep the old message as the first cause.
    pub fn context(mut self, message: impl Into<String>) -> Error {
        let old = std::mem::replace(&mut self.message, message.into());
        self.causes.insert(0, old);
        self
    }

    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }

    /// The error as `--json` commands print it on stdout, so a script
    /// reading stdout learns of the failure as well as of success.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "outcome": self.kind.name(),
                "exit_code": self.exit_code(),
                "message": self.message,
                "causes": self.causes,
                "live": self.live,
                "hint": self.hint,
                "config": self.config,
            }
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        for cause in &self.causes {
            write!(f, "\ncaused by: {cause}")?;
        }
        if let Some(live) = &self.live {
            write!(f, "\nlive now: {live}")?;
        }
        if let Some(config) = &self.config {
            write!(f, "\nconfig: {}", config.display())?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Attach a path-naming context to an `io::Result`.
pub trait IoContext<T> {
    fn with_path(self, what: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn with_path(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e))
    }
}

/// The exit code table, as plain text.
pub fn exit_codes_help() -> String {
    let mut text = String::from("Exit codes:\n    0  ok\n");
    for kind in Kind::ALL {
        text.push_str(&format!(
            "  {:>3}  {}: {}\n",
            kind.exit_code(),
            kind.name(),
            kind.meaning()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let mut codes: Vec<u8> = Kind::ALL.iter().map(|k| k.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Kind::ALL.len());
    }

    /// The README's exit-code table is the documentation operators script
    /// against: it must list every kind with its code and outcome name.
    #[test]
    fn readme_exit_code_table_matches() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("## Exit codes")
            .nth(1)
            .expect("README has an exit code section");
        let rows: Vec<(u8, String)> = section
            .lines()
            .skip_while(|l| !l.starts_with("|---"))
            .skip(1)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (
                    cells[1].parse().unwrap(),
                    cells[2].trim_matches('`').to_string(),
                )
            })
            .collect();
        let mut expected: Vec<(u8, String)> = vec![(0, "ok".into())];
        expected.extend(
            Kind::ALL
                .iter()
                .map(|k| (k.exit_code(), k.name().to_string())),
        );
        assert_eq!(rows, expected);
    }

    /// Exit code 1 is the one a script cannot tell from its phase, so the
    /// README and `--help` must say the same thing about it.
    #[test]
    fn readme_and_help_describe_exit_code_1_alike() {
        let readme = include_str!("../README.md");
        let row = readme
            .split("## Exit codes")
            .nth(1)
            .and_then(|s| s.lines().find(|l| l.starts_with("| 1 |")))
            .expect("README's exit code table has a row for 1");
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[3], Kind::Internal.meaning());
        let help = exit_codes_help();
        assert!(
            help.contains(&format!("1  error: {}", Kind::Internal.meaning())),
            "{help}"
        );
    }

    #[test]
    fn display_has_every_part_in_order() {
        let e = Error::usage("bad thing")
            .cause("because")
            .live("releases/20260101000000")
            .hint("do this");
        assert_eq!(
            e.to_string(),
            "bad thing\ncaused by: because\nlive now: releases/20260101000000\nhint: do this"
        );
    }

    #[test]
    fn in_phase_keeps_specific_kinds() {
        assert_eq!(
            Error::internal("x").in_phase(Kind::BeforeSwap).kind,
            Kind::BeforeSwap
        );
        assert_eq!(
            Error::new(Kind::LockBusy, "x")
                .in_phase(Kind::BeforeSwap)
                .kind,
            Kind::LockBusy
        );
    }
}
