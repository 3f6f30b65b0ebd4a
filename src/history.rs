//! The append-only audit log, `.shipit/history.jsonl`.
//!
//! One JSON object per line, written with a single `write(2)` on an
//! `O_APPEND` descriptor and synced, so a crash loses at most the line being
//! written and never interleaves two. A torn last line is closed before the
//! next append; readers skip (and count) lines they cannot read.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::layout::{Layout, ReleaseId};
use crate::state;

/// The command an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Deploy,
    Rollback,
    Prune,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Deploy => "deploy",
            EventKind::Rollback => "rollback",
            EventKind::Prune => "prune",
        }
    }
}

/// How an event ended, written as its name (`ok`, `refused`,
/// `failed-nothing-live`, or the exit code's name: `failed-before-swap`,
/// `rolled-back`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Outcome {
    Ok,
    /// A release refused before anything was switched (with slots: it
    /// failed its gate in the idle slot). It exits as `rolled-back` does
    /// (users reach what they reached before), but nothing was rolled back.
    Refused,
    /// A first deploy that failed after its swap: `current` was removed
    /// again, so nothing is live.
    FailedNothingLive,
    /// Failed as the exit code of this kind says.
    Failed(crate::error::Kind),
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::FailedNothingLive => "failed-nothing-live",
            Outcome::Failed(kind) => kind.name(),
        }
    }
}

impl From<Outcome> for String {
    fn from(outcome: Outcome) -> String {
        outcome.name().into()
    }
}

impl TryFrom<String> for Outcome {
    type Error = String;
    fn try_from(name: String) -> std::result::Result<Outcome, String> {
        [Outcome::Ok, Outcome::Refused, Outcome::FailedNothingLive]
            .into_iter()
            .chain(crate::error::Kind::ALL.map(Outcome::Failed))
            .find(|o| o.name() == name)
            .ok_or_else(|| format!("unknown outcome {name:?}"))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What became of a deploy's `hooks.migrate` (and, as `fleet-agent
/// activate --migrate`, what a fleet host is told of its rollout's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Migrate {
    /// It ran to success.
    Ran,
    /// It failed, timed out or was interrupted: it may have changed the
    /// database in part.
    #[value(skip)]
    Failed,
    /// `--skip-migrate`.
    Skipped,
}

impl Migrate {
    pub fn name(self) -> &'static str {
        match self {
            Migrate::Ran => "ran",
            Migrate::Failed => "failed",
            Migrate::Skipped => "skipped",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub time: DateTime<Utc>,
    pub event: EventKind,
    pub outcome: Outcome,
    pub release: Option<ReleaseId>,
    /// What was live before.
    pub previous: Option<ReleaseId>,
    /// What is live after.
    pub live: Option<ReleaseId>,
    pub revision: Option<String>,
    pub branch: Option<String>,
    pub user: String,
    pub host: String,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the failure came from, outermost first (the `caused by:` lines
    /// shipit printed); only on failures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<ReleaseId>,
    /// A fleet rollout recorded on the controller: every host and how it
    /// fared (the `hosts` array of `deploy --json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<serde_json::Value>,
    /// What became of a deploy's `hooks.migrate`; absent when none is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate: Option<Migrate>,
    /// When the migrate hook of `release` started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_time: Option<DateTime<Utc>>,
}

impl Event {
    pub fn new(event: EventKind, outcome: Outcome) -> Event {
        Event {
            time: Utc::now(),
            event,
            outcome,
            release: None,
            previous: None,
            live: None,
            revision: None,
            branch: None,
            user: crate::whoami::user(),
            host: crate::whoami::host(),
            duration_ms: 0,
            message: None,
            causes: Vec::new(),
            removed: Vec::new(),
            hosts: None,
            migrate: None,
            migrate_time: None,
        }
    }
}

/// Finish `event` (duration since `started`, what is live after, the
/// outcome of `error`, unless the caller set a failure outcome that says more,
/// like [`Outcome::Refused`]) and append it; a failure to append only warns, since
/// the deploy or rollback it describes has already happened. Refused input
/// (a bad ref, an unknown id) changed nothing and is not recorded.
pub fn record(
    layout: &Layout,
    ui: &crate::ui::Ui,
    mut event: Event,
    started: std::time::Instant,
    error: Option<&Error>,
    live: Option<ReleaseId>,
) {
    event.duration_ms = started.elapsed().as_millis() as u64;
    event.live = live;
    if let Some(e) = error {
        if e.kind == crate::error::Kind::Usage {
            return;
        }
        if event.outcome == Outcome::Ok {
            event.outcome = outcome_of(&event, e.kind);
        }
        event.message = Some(e.message.clone());
        event.causes = e.causes.clone();
    }
    if let Err(e) = append(layout, &event) {
        ui.warn(format!("could not record history: {e}"));
    }
    *recorded().lock().unwrap_or_else(|e| e.into_inner()) = Some(event);
}

/// The last event [`record`] finished in this process: what the notify
/// hook is told once the command is over ([`crate::notify`]).
pub fn take_recorded() -> Option<Event> {
    recorded().lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn recorded() -> &'static std::sync::Mutex<Option<Event>> {
    static LAST: std::sync::Mutex<Option<Event>> = std::sync::Mutex::new(None);
    &LAST
}

/// The outcome name of a failed event: the exit code's name, except that
/// a first deploy that failed after its swap had nothing to roll back to.
fn outcome_of(event: &Event, kind: crate::error::Kind) -> Outcome {
    match kind {
        crate::error::Kind::RolledBack
            if event.event == EventKind::Deploy && event.previous.is_none() =>
        {
            Outcome::FailedNothingLive
        }
        kind => Outcome::Failed(kind),
    }
}

/// The releases newer than `target` whose migrate hook ran (or started and
/// failed), oldest first: the database may have been changed for them, and
/// `target` may not expect that. The history outlives pruning, so this
/// holds for releases long gone too.
pub fn migrated_after(layout: &Layout, target: &ReleaseId) -> Vec<ReleaseId> {
    let Ok(log) = read(layout) else {
        return Vec::new();
    };
    let mut ids: Vec<ReleaseId> = log
        .events
        .iter()
        .filter(|e| e.event == EventKind::Deploy)
        .filter(|e| matches!(e.migrate, Some(Migrate::Ran | Migrate::Failed)))
        .filter_map(|e| e.release.clone())
        .filter(|id| id > target)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The warning for making `target` live again when the releases `newer`
/// ran their migrations; `None` when there are none.
pub fn migrate_warning(target: &ReleaseId, newer: &[ReleaseId]) -> Option<String> {
    if newer.is_empty() {
        return None;
    }
    let names: Vec<String> = newer.iter().map(Layout::display).collect();
    Some(format!(
        "the database may be newer than {} expects: the migrate hook ran for {} (a rollback \
         never runs migrations backwards; write migrations that the previous release can live \
         with)",
        Layout::display(target),
        names.join(", ")
    ))
}

impl Event {
    /// What the event did, in a few words: `A -> B` for a rollback or a
    /// deploy that went live, with where a failed one left things.
    pub fn what(&self) -> String {
        let id = |r: &Option<ReleaseId>| r.as_ref().map(|r| r.to_string());
        let from = id(&self.previous).unwrap_or_else(|| "nothing".into());
        let to = id(&self.live).unwrap_or_else(|| "nothing".into());
        match (self.event, self.outcome) {
            (EventKind::Rollback, _) => format!("{from} -> {to}"),
            (EventKind::Deploy, Outcome::Ok) => format!("{from} -> {to}"),
            (EventKind::Deploy, _) if self.release.is_some() && self.release == self.live => {
                format!("{from} -> {to} (left live, failing)")
            }
            (EventKind::Deploy, _) => {
                let release = id(&self.release).unwrap_or_else(|| "a new release".into());
                format!("{release} not live; live: {to}")
            }
            (EventKind::Prune, _) => format!("removed {}", self.removed.len()),
        }
    }

    /// What a failed event said: its message, then each cause.
    pub fn said(&self) -> Option<String> {
        let message = self.message.as_ref()?;
        let mut text = message.clone();
        for cause in &self.causes {
            text.push_str("; caused by: ");
            text.push_str(cause);
        }
        Some(text.replace('\n', "; "))
    }
}

pub fn append(layout: &Layout, event: &Event) -> Result<()> {
    let path = layout.history();
    // No secret of `env_file` goes into the audit log (an error message
    // can quote a hook's output).
    let mut line =
        crate::hookenv::redact_json(&serde_json::to_string(event).expect("event serializes"))
            .into_owned();
    line.push('\n');
    let mut file = state::open_or_explain(
        &path,
        OpenOptions::new().create(true).append(true).read(true),
        "the history",
    )?;
    // A crash mid-write leaves a torn last line; appending to it would glue
    // this event onto it and lose both. Start a fresh line instead.
    let len = file.metadata().with_path("could not inspect", &path)?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.read_exact_at(&mut last, len - 1)
            .with_path("could not read", &path)?;
        if last[0] != b'\n' {
            line.insert(0, '\n');
        }
    }
    file.write_all(line.as_bytes())
        .and_then(|_| file.sync_data())
        .with_path("could not append to", &path)
}

/// What [`read`] found: the events, oldest first, and how many lines it
/// skipped because they were not events (torn by a crash, damaged on disk).
#[derive(Debug, Default)]
pub struct Log {
    pub events: Vec<Event>,
    pub skipped: usize,
    /// Where each skipped line was: how many events came before it.
    pub damaged: Vec<usize>,
}

/// All readable events. An unreadable line (invalid UTF-8, not JSON, torn)
/// is skipped and counted, never fatal: one bad byte must not hide the
/// whole audit log.
pub fn read(layout: &Layout) -> Result<Log> {
    let path = layout.history();
    let mut file = match state::open(&path, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Log::default()),
        Err(e) => return Err(state::explain(&path, "the history", e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_path("could not read", &path)?;
    Ok(parse(&bytes))
}

/// The newest event that `wanted` accepts, read from the end of the log
/// in blocks: `status` and a fleet host's state want the last deploy, and
/// a log of years (10,000 events, 3 MB) cost them 40 ms to parse whole.
/// Unreadable lines are skipped, as by [`read`].
pub fn newest(layout: &Layout, wanted: impl Fn(&Event) -> bool) -> Result<Option<Event>> {
    let mut found = None;
    newest_first(layout, |event| {
        if wanted(&event) {
            found = Some(event);
            false
        } else {
            true
        }
    })?;
    Ok(found)
}

/// Hand `more` each readable event, newest first, until it answers
/// `false` or the log's start is reached. Reads at most one block past
/// the events it hands out.
pub fn newest_first(layout: &Layout, mut more: impl FnMut(Event) -> bool) -> Result<()> {
    const BLOCK: u64 = 64 * 1024;
    let path = layout.history();
    let file = match state::open(&path, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(state::explain(&path, "the history", e)),
    };
    let mut end = file.metadata().with_path("could not read", &path)?.len();
    // The start of the line cut by the block boundary, read earlier.
    let mut rest: Vec<u8> = Vec::new();
    loop {
        let start = end.saturating_sub(BLOCK);
        let mut block = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut block, start)
            .with_path("could not read", &path)?;
        block.extend_from_slice(&rest);
        // Unless at the start of the file, the first line may be cut.
        let whole = if start == 0 {
            0
        } else {
            match block.iter().position(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => block.len(),
            }
        };
        for line in block[whole..].rsplit(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Ok(event) = serde_json::from_slice::<Event>(line)
                && !more(event)
            {
                return Ok(());
            }
        }
        if start == 0 {
            return Ok(());
        }
        block.truncate(whole);
        rest = block;
        end = start;
    }
}

fn parse(bytes: &[u8]) -> Log {
    let mut log = Log::default();
    for line in bytes.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(event) => log.events.push(event),
            Err(_) => {
                log.skipped += 1;
                log.damaged.push(log.events.len());
            }
        }
    }
    log
}

/// Which releases could have been `current` when, as the history tells.
///
/// Every deploy and rollback is recorded once it ends, with what was live
/// before (`previous`), the release it made live or tried to (`release`),
/// what was live after (`live`), when it began (`time`) and how long it took.
/// Between two events `current` does not move (every command that moves it
/// holds the lock and records itself), so the history accounts for every
/// moment: during an event, any of the releases it names may have been
/// current; between events, the one the earlier event left live. What the
/// history cannot account for is said so ([`Timeline::current_during`]
/// answers `None`), and callers fall back to not knowing.
#[derive(Debug, Default)]
pub struct Timeline {
    /// One per event, by start.
    spans: Vec<Span>,
    /// Stretches the log cannot account for: a line between two events was
    /// unreadable. `None` is unbounded.
    damaged: Vec<(Bound, Bound)>,
    /// Releases whose activation began at a time the log may not record (a
    /// deploy killed before it could append its event), and until when they
    /// may have been current.
    activations: Vec<(ReleaseId, DateTime<Utc>, Bound)>,
    /// What is current now.
    now: Option<ReleaseId>,
}

/// One end of a stretch of time; `None` is unbounded.
type Bound = Option<DateTime<Utc>>;

#[derive(Debug)]
struct Span {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// What was current as it began: `previous`, or for a prune (which
    /// moves nothing and records only `live`), `live`.
    before: Option<ReleaseId>,
    named: Vec<ReleaseId>,
    live: Option<ReleaseId>,
}

impl Timeline {
    /// `activations`: each release and when its activation last began
    /// (from its metadata); `now`: what `current` names now.
    pub fn new(
        log: &Log,
        activations: impl IntoIterator<Item = (ReleaseId, DateTime<Utc>)>,
        now: Option<ReleaseId>,
    ) -> Timeline {
        let end = |e: &Event| e.time + chrono::TimeDelta::milliseconds(e.duration_ms as i64);
        let mut spans: Vec<Span> = log
            .events
            .iter()
            .map(|e| Span {
                start: e.time,
                end: end(e),
                before: if e.event == EventKind::Prune {
                    e.live.clone()
                } else {
                    e.previous.clone()
                },
                named: [&e.previous, &e.release, &e.live]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect(),
                live: e.live.clone(),
            })
            .collect();
        // The line before a damaged one ended before it began, and the line
        // after it began after it ended (commands that record hold the lock).
        let damaged = log
            .damaged
            .iter()
            .map(|&at| {
                let before = at.checked_sub(1).and_then(|i| log.events.get(i));
                (before.map(|e| e.time), log.events.get(at).map(end))
            })
            .collect();
        spans.sort_by_key(|s| s.start);
        // A deploy killed mid-activation never recorded its event; the
        // release may have been current until the next command, which
        // began after it died.
        let activations = activations
            .into_iter()
            .map(|(id, began)| {
                let until = spans.iter().map(|s| s.end).filter(|e| *e >= began).min();
                (id, began, until)
            })
            .collect();
        Timeline {
            spans,
            damaged,
            activations,
            now,
        }
    }

    /// Every release that may have been `current` at some moment from
    /// `from` to `to`, or `None` when the history cannot say (no events, or
    /// an unreadable line in that stretch).
    pub fn current_during(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Option<std::collections::BTreeSet<ReleaseId>> {
        let first = self.spans.first()?;
        // Before the first event the log knows only that nothing was live,
        // if its first event says so (the first deploy ever); a log that
        // begins with something already live (a directory that shipit took
        // over, a rotated log) does not reach back that far.
        if from < first.start && first.before.is_some() {
            return None;
        }
        let overlaps = |start: Bound, end: Bound| {
            start.is_none_or(|s| s <= to) && end.is_none_or(|e| e >= from)
        };
        if self.damaged.iter().any(|(s, e)| overlaps(*s, *e)) {
            return None;
        }
        let mut found = std::collections::BTreeSet::new();
        for span in &self.spans {
            if overlaps(Some(span.start), Some(span.end)) {
                found.extend(span.named.iter().cloned());
            }
        }
        // What was current as the stretch began: what the last event before
        // it left live, which is also what the next event found live.
        if let Some(before) = self
            .spans
            .iter()
            .filter(|s| s.end < from)
            .max_by_key(|s| s.end)
        {
            found.extend(before.live.clone());
        }
        match self.spans.iter().find(|s| s.start > from) {
            Some(after) => found.extend(after.before.clone()),
            None => found.extend(self.now.clone()),
        }
        for (id, began, until) in &self.activations {
            if overlaps(Some(*began), *until) {
                found.insert(id.clone());
            }
        }
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_events_are_read_from_the_end_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.history().parent().unwrap()).unwrap();
        assert!(newest(&layout, |_| true).unwrap().is_none(), "no log");
        // Long lines, so that blocks end inside them; a damaged line and
        // a torn last line are skipped.
        let mut text = String::new();
        for i in 0..3000 {
            let mut event = Event::new(
                if i % 3 == 0 {
                    EventKind::Deploy
                } else {
                    EventKind::Prune
                },
                Outcome::Ok,
            );
            event.message = Some(format!("{i} {}", "x".repeat(i % 97)));
            text.push_str(&serde_json::to_string(&event).unwrap());
            text.push('\n');
            if i == 1500 {
                text.push_str("{not json\n\n");
            }
        }
        text.push_str("{\"time\":\"2026");
        std::fs::write(layout.history(), &text).unwrap();
        let whole = read(&layout).unwrap();
        let mut seen = Vec::new();
        newest_first(&layout, |e| {
            seen.push(e.message.unwrap());
            true
        })
        .unwrap();
        let expected: Vec<String> = whole
            .events
            .iter()
            .rev()
            .map(|e| e.message.clone().unwrap())
            .collect();
        assert_eq!(seen.len(), 3000);
        assert_eq!(seen, expected);
        let last_deploy = newest(&layout, |e| e.event == EventKind::Deploy).unwrap();
        assert!(last_deploy.unwrap().message.unwrap().starts_with("2997 "));
        let first = newest(&layout, |e| {
            e.message.as_deref().is_some_and(|m| m.starts_with("0 "))
        })
        .unwrap();
        assert!(first.is_some(), "the first event is reached");
    }

    #[test]
    fn what_an_event_did_reads_true_for_each_ending() {
        let a = ReleaseId::parse("20260101000000").unwrap();
        let b = ReleaseId::parse("20260102000000").unwrap();
        let event =
            |name: EventKind, outcome: Outcome, release: &ReleaseId, previous, live| Event {
                release: Some(release.clone()),
                previous,
                live,
                ..Event::new(name, outcome)
            };
        let ok = event(
            EventKind::Deploy,
            Outcome::Ok,
            &b,
            Some(a.clone()),
            Some(b.clone()),
        );
        assert_eq!(ok.what(), "20260101000000 -> 20260102000000");
        let back = event(
            EventKind::Rollback,
            Outcome::Ok,
            &a,
            Some(b.clone()),
            Some(a.clone()),
        );
        assert_eq!(back.what(), "20260102000000 -> 20260101000000");
        let rolled = event(
            EventKind::Deploy,
            Outcome::Failed(crate::error::Kind::RolledBack),
            &b,
            Some(a.clone()),
            Some(a.clone()),
        );
        assert_eq!(
            rolled.what(),
            "20260102000000 not live; live: 20260101000000"
        );
        let first = event(
            EventKind::Deploy,
            Outcome::FailedNothingLive,
            &b,
            None,
            None,
        );
        assert_eq!(first.what(), "20260102000000 not live; live: nothing");
        let left = event(
            EventKind::Deploy,
            Outcome::Failed(crate::error::Kind::LeftLive),
            &b,
            Some(a.clone()),
            Some(b.clone()),
        );
        assert_eq!(
            left.what(),
            "20260101000000 -> 20260102000000 (left live, failing)"
        );
    }

    #[test]
    fn outcomes_are_written_by_name_and_read_back() {
        let all = [Outcome::Ok, Outcome::Refused, Outcome::FailedNothingLive]
            .into_iter()
            .chain(crate::error::Kind::ALL.map(Outcome::Failed));
        for outcome in all {
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(json, format!("\"{}\"", outcome.name()));
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), outcome);
        }
        assert_eq!(
            serde_json::to_string(&Outcome::Failed(crate::error::Kind::BeforeSwap)).unwrap(),
            "\"failed-before-swap\""
        );
        assert!(serde_json::from_str::<Outcome>("\"sideways\"").is_err());
        let kinds = ["deploy", "rollback", "prune"].map(|k| {
            serde_json::from_value::<EventKind>(serde_json::json!(k))
                .unwrap()
                .name()
        });
        assert_eq!(kinds, ["deploy", "rollback", "prune"]);
    }

    #[test]
    fn what_a_failure_said_includes_its_causes() {
        let mut event = Event::new(EventKind::Deploy, Outcome::Refused);
        assert_eq!(event.said(), None);
        event.message = Some("the gate failed".into());
        event.causes = vec!["status 500".into(), "body \"x\"".into()];
        assert_eq!(
            event.said().unwrap(),
            "the gate failed; caused by: status 500; caused by: body \"x\""
        );
    }

    #[test]
    fn a_torn_line_does_not_swallow_the_next_event() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.state()).unwrap();
        append(&layout, &Event::new(EventKind::Deploy, Outcome::Ok)).unwrap();
        let mut torn = std::fs::read(layout.history()).unwrap();
        torn.extend_from_slice(b"{\"time\":\"2026-");
        std::fs::write(layout.history(), &torn).unwrap();
        append(&layout, &Event::new(EventKind::Rollback, Outcome::Ok)).unwrap();
        let log = read(&layout).unwrap();
        let names: Vec<_> = log.events.iter().map(|e| e.event.name()).collect();
        assert_eq!(names, ["deploy", "rollback"]);
        assert_eq!(log.skipped, 1);
    }

    #[test]
    fn unreadable_lines_are_skipped_and_counted() {
        let good = serde_json::to_string(&Event::new(EventKind::Deploy, Outcome::Ok)).unwrap();
        let mut bytes = format!("{good}\nnot json\n").into_bytes();
        bytes.extend_from_slice(b"{\"event\":\"\xff\"}\n\n");
        bytes.extend_from_slice(good.as_bytes());
        let log = parse(&bytes);
        assert_eq!((log.events.len(), log.skipped), (2, 2));
    }
}
