//! The append-only audit log, `.shipit/history.jsonl`.
//!
//! One JSON object per line, written with a single `write(2)` on an
//! `O_APPEND` descriptor and synced, so a crash loses at most the line being
//! written and never interleaves two. Readers skip a torn last line.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::layout::{Layout, ReleaseId};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub time: DateTime<Utc>,
    /// `deploy`, `rollback` or `prune`.
    pub event: String,
    /// `ok`, or the failure kind (`failed-before-swap`, `rolled-back`, ...).
    pub outcome: String,
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<ReleaseId>,
}

impl Event {
    pub fn new(event: &str, outcome: &str) -> Event {
        Event {
            time: Utc::now(),
            event: event.into(),
            outcome: outcome.into(),
            release: None,
            previous: None,
            live: None,
            revision: None,
            branch: None,
            user: crate::whoami::user(),
            host: crate::whoami::host(),
            duration_ms: 0,
            message: None,
            removed: Vec::new(),
        }
    }
}

/// Finish `event` (duration since `started`, what is live after, the
/// outcome of `error`) and append it; a failure to append only warns, since
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
        event.outcome = e.kind.name().into();
        event.message = Some(e.message.clone());
    }
    if let Err(e) = append(layout, &event) {
        ui.warn(format!("could not record history: {e}"));
    }
}

pub fn append(layout: &Layout, event: &Event) -> Result<()> {
    let path = layout.history();
    let mut line = serde_json::to_string(event).expect("event serializes");
    line.push('\n');
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_path("could not open", &path)?;
    file.write_all(line.as_bytes())
        .and_then(|_| file.sync_data())
        .with_path("could not append to", &path)
}

/// All events, oldest first.
pub fn read(layout: &Layout) -> Result<Vec<Event>> {
    let path = layout.history();
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("could not read", &path, e)),
    };
    let mut events = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.with_path("could not read", &path)?;
        if let Ok(event) = serde_json::from_str(&line) {
            events.push(event);
        }
    }
    Ok(events)
}
