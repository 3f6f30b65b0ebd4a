//! What a fleet command reports, per host: the view data behind the final
//! table and `--json` (printing itself is `ui`'s).

use serde::Serialize;

use crate::fleet::protocol::HostState;
use crate::layout::ReleaseId;

/// How one host fared in a rollout (or a fleet rollback).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Not reached by the rollout: runs what it ran before.
    Untouched,
    /// Could not be reached (connect, install or state failed).
    Unreachable,
    /// Received the release while preparing (replaced by the outcome of
    /// the roll, or by `Discarded` when the prepare failed elsewhere).
    Received,
    /// Received the release, which was removed again when the rollout
    /// stopped before any host was switched.
    Discarded,
    /// Switched to the new release and passed its gate.
    Switched,
    /// Already ran the target (a fleet rollback).
    AlreadyLive,
    /// Failed its switch (drain, activation and gate, or undrain).
    Failed,
    /// Switched in this rollout, then switched back to what it ran before.
    Reverted,
    /// Switched in this rollout; switching it back failed.
    RevertFailed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Untouched => "untouched",
            Outcome::Unreachable => "unreachable",
            Outcome::Received => "received",
            Outcome::Discarded => "discarded",
            Outcome::Switched => "switched",
            Outcome::AlreadyLive => "already-live",
            Outcome::Failed => "failed",
            Outcome::Reverted => "reverted",
            Outcome::RevertFailed => "revert-failed",
        }
    }
}

#[derive(Clone, Debug)]
pub struct HostReport {
    pub host: String,
    /// What it ran when the rollout began.
    pub before: Option<ReleaseId>,
    /// What it runs now, as far as the controller knows.
    pub live: Option<ReleaseId>,
    pub outcome: Outcome,
    pub message: Option<String>,
    /// Contact was lost during a switch: `live` is not known.
    pub unknown: bool,
    /// What it runs did not prove healthy (its own rollback, or a switch
    /// back, failed its gate): never back into rotation.
    pub unhealthy: bool,
    /// Answered its activation as live; it records the outcome (proven,
    /// prune, history) meanwhile, and is asked what it recorded before the
    /// rollout ends.
    pub recording: Recording,
    /// Back into rotation after its switch (its undrain hook ran).
    pub undrained: bool,
}

/// Whether a host records an activation it answered as live, and whether
/// it was asked what it recorded ([`HostReport::recording`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recording {
    #[default]
    No,
    /// Asked at once, on its session; the answer is still to read.
    Asked,
    /// Still to ask.
    ToAsk,
}

impl HostReport {
    pub fn new(host: &str) -> HostReport {
        HostReport {
            host: host.to_string(),
            before: None,
            live: None,
            outcome: Outcome::Untouched,
            message: None,
            unknown: false,
            unhealthy: false,
            recording: Recording::No,
            undrained: false,
        }
    }

    /// Does it run what it ran before the rollout, proven healthy? A host
    /// that had nothing live before and was activated may still run the
    /// app its reload hook started (removing `current` stops nothing), so
    /// it does not count as put back.
    pub fn as_before(&self) -> bool {
        let activated_from_nothing = self.before.is_none()
            && matches!(
                self.outcome,
                Outcome::Failed | Outcome::Reverted | Outcome::RevertFailed
            );
        !self.unknown
            && !self.unhealthy
            && self.outcome != Outcome::RevertFailed
            && !activated_from_nothing
            && self.live == self.before
    }

    /// Why [`HostReport::as_before`] is false, for the warning that keeps
    /// the host drained.
    pub fn why_not_as_before(&self) -> &'static str {
        if self.unknown {
            "what it runs is unknown"
        } else if self.unhealthy {
            "what it runs did not prove healthy"
        } else if self.before.is_none() && self.live.is_none() {
            "it had nothing live before, and the app this rollout started there may still run: \
             stop it"
        } else if self.outcome == Outcome::RevertFailed {
            "switching it back failed"
        } else {
            "it does not run what it ran before"
        }
    }

    /// The host's entry of `deploy --json` and of the controller's
    /// history.
    pub fn row(&self) -> HostRow<'_> {
        HostRow {
            host: &self.host,
            before: self.before.as_ref(),
            live: self.live.as_ref(),
            live_known: !self.unknown,
            live_healthy: !self.unknown && !self.unhealthy,
            outcome: self.outcome,
            message: self.message.as_deref(),
        }
    }
}

/// One host in `deploy --json` (and `rollback --json`) with a fleet.
#[derive(Debug, Serialize)]
pub struct HostRow<'a> {
    pub host: &'a str,
    /// What it ran when the rollout began.
    pub before: Option<&'a ReleaseId>,
    /// What it runs now, as far as the controller knows.
    pub live: Option<&'a ReleaseId>,
    pub live_known: bool,
    pub live_healthy: bool,
    pub outcome: Outcome,
    pub message: Option<&'a str>,
}

fn id_or_none(id: Option<&ReleaseId>) -> String {
    id.map_or_else(|| "-".to_string(), |i| i.to_string())
}

/// The closing table of a rollout: every host, what it ran before, what
/// it runs now, how it fared.
pub fn table(hosts: &[HostReport]) -> String {
    let width = hosts.iter().map(|h| h.host.len()).max().unwrap_or(4).max(4);
    let mut text = format!(
        "{:<width$}  {:<14}  {:<14}  {}\n",
        "HOST", "BEFORE", "NOW", "OUTCOME"
    );
    for h in hosts {
        let message = h
            .message
            .as_deref()
            .map(|m| format!(": {}", m.lines().next().unwrap_or("")))
            .unwrap_or_default();
        text.push_str(&format!(
            "{:<width$}  {:<14}  {:<14}  {}{message}\n",
            h.host,
            id_or_none(h.before.as_ref()),
            if h.unknown {
                "unknown".to_string()
            } else {
                id_or_none(h.live.as_ref())
            },
            h.outcome.name(),
        ));
    }
    text
}

/// What a host said about itself (`fleet-agent state`), for `releases` and
/// `status`.
#[derive(Clone, Debug)]
pub struct HostView {
    pub host: String,
    /// `None`: the host could not be reached; `error` says why.
    pub state: Option<HostState>,
    pub error: Option<String>,
}

impl HostView {
    pub fn current(&self) -> Option<&str> {
        self.state.as_ref()?.current.as_ref().map(ReleaseId::as_str)
    }

    fn live_revision(&self) -> Option<&str> {
        let state = self.state.as_ref()?;
        state.row(state.current.as_ref()?)?.revision.as_deref()
    }
}

/// Do all reachable hosts run the same release (and is any unreachable)?
pub fn agree(views: &[HostView]) -> bool {
    let mut lives = views.iter().map(|v| (v.state.is_some(), v.current()));
    let first = lives.next();
    first.is_none_or(|f| f.0 && lives.all(|l| l == f))
}

/// `shipit releases` with a fleet: one line per host, then every release
/// any host has, with the hosts that have it and run it.
pub fn releases_text(views: &[HostView]) -> String {
    let width = views.iter().map(|h| h.host.len()).max().unwrap_or(4).max(4);
    let majority = majority_live(views);
    let mut text = format!(
        "{:<width$}  {:<14}  {:<10}  {:>10}  {:>10}  {}\n",
        "HOST", "LIVE", "REVISION", "DISK", "UNSHARED", "RELEASES"
    );
    for v in views {
        let Some(state) = &v.state else {
            text.push_str(&format!(
                "{:<width$}  unreachable: {}\n",
                v.host,
                v.error.as_deref().unwrap_or("")
            ));
            continue;
        };
        let count = state.releases.len();
        let differs = majority.is_some() && v.current() != majority.as_deref();
        // The host's releases together; "?" when one has no figure.
        let sum = |bytes: fn(&crate::views::ReleaseRow) -> Option<u64>| {
            state
                .releases
                .iter()
                .map(bytes)
                .sum::<Option<u64>>()
                .map_or_else(|| "?".to_string(), crate::disk::human)
        };
        text.push_str(&format!(
            "{:<width$}  {:<14}  {:<10}  {:>10}  {:>10}  {count}{}\n",
            v.host,
            v.current().unwrap_or("-"),
            v.live_revision().map_or("-", |r| &r[..r.len().min(10)]),
            sum(|r| r.size_bytes),
            sum(|r| r.unshared_bytes),
            if differs { "  (differs)" } else { "" }
        ));
    }
    let reachable = views.iter().filter(|v| v.state.is_some()).count();
    // Each release once: its revision and its largest size on any host.
    let mut ids: Vec<(String, Option<String>, Option<u64>)> = Vec::new();
    for v in views {
        let Some(state) = &v.state else {
            continue;
        };
        for r in &state.releases {
            match ids.iter_mut().find(|(i, _, _)| i == r.id.as_str()) {
                Some(seen) => seen.2 = seen.2.max(r.size_bytes),
                None => ids.push((r.id.to_string(), r.revision.clone(), r.size_bytes)),
            }
        }
    }
    ids.sort_by(|a, b| b.0.cmp(&a.0));
    if ids.is_empty() {
        return text;
    }
    text.push_str(&format!(
        "\n  {:<14}  {:<10}  {:>10}  {:<7}  {}\n",
        "ID", "REVISION", "SIZE", "ON", "LIVE ON"
    ));
    for (id, revision, size) in ids {
        let has = |v: &&HostView| {
            v.state
                .as_ref()
                .is_some_and(|s| s.releases.iter().any(|r| r.id.as_str() == id))
        };
        let on = views.iter().filter(has).count();
        let live: Vec<&str> = views
            .iter()
            .filter(|v| v.current() == Some(id.as_str()))
            .map(|v| v.host.as_str())
            .collect();
        let live_on = if live.is_empty() {
            "-".to_string()
        } else if live.len() == reachable {
            "all".to_string()
        } else {
            live.join(", ")
        };
        text.push_str(&format!(
            "{} {:<14}  {:<10}  {:>10}  {:<7}  {live_on}\n",
            if live.is_empty() { " " } else { "*" },
            id,
            revision.as_deref().map_or("-", |r| &r[..r.len().min(10)]),
            size.map_or_else(|| "?".to_string(), crate::disk::human),
            format!("{on}/{}", views.len()),
        ));
    }
    text
}

/// The release most hosts run (ties: the newest).
pub fn majority_live(views: &[HostView]) -> Option<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for v in views {
        if let Some(c) = v.current() {
            match counts.iter_mut().find(|(id, _)| *id == c) {
                Some(entry) => entry.1 += 1,
                None => counts.push((c, 1)),
            }
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)))
        .map(|(id, _)| id.to_string())
}

/// One host in `releases --json` and `status --json` with a fleet.
#[derive(Debug, Serialize)]
pub struct ViewRow<'a> {
    pub host: &'a str,
    pub reachable: bool,
    pub current: Option<&'a str>,
    /// The host's own report, as its agent sent it.
    pub state: Option<&'a HostState>,
    pub error: Option<&'a str>,
}

pub fn view_rows(views: &[HostView]) -> Vec<ViewRow<'_>> {
    views
        .iter()
        .map(|v| ViewRow {
            host: &v.host,
            reachable: v.state.is_some(),
            current: v.current(),
            state: v.state.as_ref(),
            error: v.error.as_deref(),
        })
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn state(current: Option<&str>) -> HostState {
        HostState {
            version: "0".into(),
            hostname: "h".into(),
            current: current.map(|c| ReleaseId::parse(c).unwrap()),
            describe: String::new(),
            releases: Vec::new(),
            foreign: Vec::new(),
            rollback_target: None,
            health: None,
            last_deploy: None,
        }
    }

    /// A proven release `id`, with no figures.
    pub fn row(id: &str) -> crate::views::ReleaseRow {
        crate::views::ReleaseRow {
            id: ReleaseId::parse(id).unwrap(),
            current: false,
            status: "ready".into(),
            proven: true,
            revision: None,
            revision_time: None,
            branch: None,
            source: None,
            deployed_by: None,
            created_at: None,
            build_duration_ms: None,
            previous: None,
            failure: None,
            path: "/".into(),
            slot: None,
            reuse: Default::default(),
            size_bytes: None,
            unshared_bytes: None,
        }
    }

    #[test]
    fn releases_show_what_each_host_and_each_release_costs_on_disk() {
        let sized = |id: &str, size: u64, unshared: u64| {
            let mut r = row(id);
            r.size_bytes = Some(size);
            r.unshared_bytes = Some(unshared);
            r
        };
        let mut web1 = view("web1", Some("20260101000002"));
        web1.state.as_mut().unwrap().releases = vec![
            sized("20260101000002", 3 << 20, 1 << 20),
            sized("20260101000001", 2 << 20, 2 << 20),
        ];
        let mut web2 = view("web2", Some("20260101000002"));
        // Published before shipit measured releases: no figure.
        web2.state.as_mut().unwrap().releases = vec![
            sized("20260101000002", 4 << 20, 4 << 20),
            row("20260101000001"),
        ];
        let text = releases_text(&[web1, web2]);
        let line = |start: &str| {
            text.lines()
                .find(|l| l.trim_start_matches(['*', ' ']).starts_with(start))
                .unwrap_or_else(|| panic!("no line {start}:\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(text.lines().next().unwrap().contains("DISK"), "{text}");
        assert_eq!(line("web1"), "web1 20260101000002 - 5.0 MiB 3.0 MiB 2");
        assert_eq!(line("web2"), "web2 20260101000002 - ? ? 2");
        // A release's size: the largest on any host.
        assert_eq!(line("20260101000002"), "* 20260101000002 - 4.0 MiB 2/2 all");
        assert_eq!(line("20260101000001"), "20260101000001 - 2.0 MiB 2/2 -");
    }

    fn view(host: &str, current: Option<&str>) -> HostView {
        HostView {
            host: host.into(),
            state: Some(state(current)),
            error: None,
        }
    }

    #[test]
    fn agreement() {
        let a = view("a", Some("20260101000001"));
        let b = view("b", Some("20260101000001"));
        let c = view("c", Some("20260101000000"));
        assert!(agree(&[a.clone(), b.clone()]));
        assert!(!agree(&[a.clone(), b.clone(), c.clone()]));
        let gone = HostView {
            host: "d".into(),
            state: None,
            error: Some("no route".into()),
        };
        assert!(!agree(&[a.clone(), gone]));
        assert_eq!(majority_live(&[a, b, c]).as_deref(), Some("20260101000001"));
    }

    #[test]
    fn the_table_names_every_host() {
        let mut r = HostReport::new("deploy@web1");
        r.outcome = Outcome::Reverted;
        r.message = Some("gate failed\nmore".into());
        let text = table(&[r, HostReport::new("web2")]);
        assert!(text.contains("deploy@web1"), "{text}");
        assert!(text.contains("reverted: gate failed\n"), "{text}");
        assert!(
            text.contains("web2") && text.contains("untouched"),
            "{text}"
        );
    }
}
