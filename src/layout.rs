//! Pure path arithmetic over `<deploy_to>`, and the release id type.
//!
//! Nothing here touches the disk. Keeping the layout in one place means the
//! rest of the code never builds a path by hand, and a release id can only
//! be made by [`ReleaseId::parse`] (which accepts exactly 14 digits that form
//! a valid UTC time) or [`ReleaseId::allocate`]: no `..`, no `/`, no spaces
//! can ever reach a path join.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const ID_FORMAT: &str = "%Y%m%d%H%M%S";

/// A release id: a UTC timestamp `%Y%m%d%H%M%S`, so lexical order is
/// chronological order (Capistrano's format).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReleaseId(String);

impl ReleaseId {
    /// Parse untrusted text (a `--to` argument, a directory name).
    pub fn parse(text: &str) -> Result<ReleaseId> {
        let valid = text.len() == 14
            && text.bytes().all(|b| b.is_ascii_digit())
            && NaiveDateTime::parse_from_str(text, ID_FORMAT).is_ok();
        if valid {
            Ok(ReleaseId(text.to_owned()))
        } else {
            Err(Error::usage(format!("{text:?} is not a release id")).hint(
                "a release id is a UTC timestamp like 20261121174500; `shipit releases` lists them",
            ))
        }
    }

    pub fn from_time(time: DateTime<Utc>) -> ReleaseId {
        ReleaseId(time.format(ID_FORMAT).to_string())
    }

    pub fn time(&self) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(&self.0, ID_FORMAT)
            .expect("a ReleaseId is always a valid timestamp")
            .and_utc()
    }

    /// The id for a new release: `now`, or one second after the newest id
    /// already taken, whichever is later. Two deploys in the same second (or
    /// a clock that stepped back) still get distinct, ordered ids. Callers
    /// hold the deploy lock, so `taken` cannot change underneath.
    pub fn allocate(now: DateTime<Utc>, taken: &[ReleaseId]) -> ReleaseId {
        let candidate = ReleaseId::from_time(now);
        match taken.iter().max() {
            Some(newest) if *newest >= candidate => {
                ReleaseId::from_time(newest.time() + TimeDelta::seconds(1))
            }
            _ => candidate,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ReleaseId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ReleaseId::parse(&s).map_err(|e| e.message)
    }
}

impl From<ReleaseId> for String {
    fn from(id: ReleaseId) -> String {
        id.0
    }
}

/// Where everything lives under one deploy directory.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
    /// `current_path`: the live link somewhere else (a fixed web root).
    current: Option<PathBuf>,
}

/// Name of the metadata file inside every release.
pub const METADATA_FILE: &str = ".shipit-release.json";

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout {
            root: root.into(),
            current: None,
        }
    }

    /// The same layout with the live link at `link` (`current_path`)
    /// instead of `<root>/current`.
    pub fn with_current(mut self, link: Option<PathBuf>) -> Layout {
        self.current = link;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The live link: `<root>/current`, or `current_path`.
    pub fn current(&self) -> PathBuf {
        self.current
            .clone()
            .unwrap_or_else(|| self.root.join("current"))
    }
    /// What the live link should contain to point at `id`: relative where
    /// it can be (so the deploy directory can be moved or mounted
    /// elsewhere), from the link's own directory.
    pub fn link_target(&self, id: &ReleaseId) -> PathBuf {
        let Some(link) = &self.current else {
            return Layout::current_target(id);
        };
        let release = self.release(id);
        let from = link.parent().and_then(|d| std::fs::canonicalize(d).ok());
        let to = std::fs::canonicalize(self.releases()).ok();
        match (from, to) {
            (Some(from), Some(to)) => relative(&from, &to).join(id.as_str()),
            _ => release,
        }
    }
    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }
    pub fn release(&self, id: &ReleaseId) -> PathBuf {
        self.releases().join(id.as_str())
    }
    pub fn metadata(&self, id: &ReleaseId) -> PathBuf {
        self.release(id).join(METADATA_FILE)
    }
    pub fn shared(&self) -> PathBuf {
        self.root.join("shared")
    }
    pub fn state(&self) -> PathBuf {
        self.root.join(".shipit")
    }
    pub fn lock(&self) -> PathBuf {
        self.state().join("lock")
    }
    pub fn history(&self) -> PathBuf {
        self.state().join("history.jsonl")
    }
    pub fn mirror(&self) -> PathBuf {
        self.state().join("repo.git")
    }
    /// The bare mirror of a submodule's repository: one per URL, named by
    /// a digest of it (the URL comes from a repository's `.gitmodules`
    /// and must not choose a path).
    pub fn module_mirror(&self, url: &str) -> PathBuf {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(url.as_bytes());
        let name: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        self.state().join("modules").join(format!("{name}.git"))
    }
    pub fn staging_dir(&self) -> PathBuf {
        self.state().join("staging")
    }
    pub fn staging(&self, id: &ReleaseId) -> PathBuf {
        self.staging_dir().join(id.as_str())
    }
    pub fn trash(&self) -> PathBuf {
        self.state().join("trash")
    }
    pub fn logs(&self) -> PathBuf {
        self.state().join("logs")
    }
    pub fn build_log(&self, id: &ReleaseId) -> PathBuf {
        self.logs().join(format!("{id}.log"))
    }
    /// Slot sockets and the link the front proxy connects through (SPEC §7).
    pub fn run(&self) -> PathBuf {
        self.root.join("run")
    }
    /// `run/app.sock`: a symlink to the live slot's socket.
    pub fn app_socket(&self) -> PathBuf {
        self.run().join("app.sock")
    }
    /// What shipit knows about each slot (which release it runs).
    pub fn slots_state(&self) -> PathBuf {
        self.state().join("slots")
    }
    /// What `current` should contain to point at `id` (relative, so the
    /// whole deploy directory can be moved or mounted elsewhere).
    pub fn current_target(id: &ReleaseId) -> PathBuf {
        Path::new("releases").join(id.as_str())
    }
    /// A human name for a release, as printed in messages.
    pub fn display(id: &ReleaseId) -> String {
        format!("releases/{id}")
    }
}

/// The relative path from directory `from` to `to` (both absolute and
/// canonical).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &to[common..] {
        out.push(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn relative_paths_between_directories() {
        for (from, to, want) in [
            ("/var/www", "/srv/app/releases", "../../srv/app/releases"),
            ("/srv/app", "/srv/app/releases", "releases"),
            ("/srv/app/public", "/srv/app/releases", "../releases"),
        ] {
            assert_eq!(relative(Path::new(from), Path::new(to)), Path::new(want));
        }
    }

    fn id(s: &str) -> ReleaseId {
        ReleaseId::parse(s).unwrap()
    }

    #[test]
    fn parse_accepts_only_timestamps() {
        assert!(ReleaseId::parse("20261121174500").is_ok());
        for bad in [
            "",
            "..",
            "../../etc",
            "2026112117450",
            "202611211745000",
            "20261121174500/",
            "2026112117450a",
            "20261399174500",
            "20261121256000",
            " 20261121174500",
            "-0261121174500",
        ] {
            let err = ReleaseId::parse(bad).unwrap_err();
            assert!(err.message.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn allocate_uses_now_when_free() {
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 17, 45, 0).unwrap();
        assert_eq!(ReleaseId::allocate(now, &[]), id("20261121174500"));
        assert_eq!(
            ReleaseId::allocate(now, &[id("20261121174459")]),
            id("20261121174500")
        );
    }

    #[test]
    fn allocate_in_the_same_second_moves_past_the_newest() {
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 17, 45, 0).unwrap();
        let first = ReleaseId::allocate(now, &[]);
        let second = ReleaseId::allocate(now, std::slice::from_ref(&first));
        let third = ReleaseId::allocate(now, &[first.clone(), second.clone()]);
        assert!(first < second && second < third);
        assert_eq!(third, id("20261121174502"));
    }

    #[test]
    fn allocate_survives_a_clock_step_back_and_rollover() {
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 17, 45, 0).unwrap();
        assert_eq!(
            ReleaseId::allocate(now, &[id("20261231235959")]),
            id("20270101000000")
        );
    }

    #[test]
    fn time_round_trips() {
        let i = id("20261121174500");
        assert_eq!(ReleaseId::from_time(i.time()), i);
    }
}
