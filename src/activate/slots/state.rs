//! What is true of the two slots, read from and written to the disk.
//!
//! Two facts, kept apart on purpose:
//! - Which slot is live: the target of `run/app.sock` (with TCP ports,
//!   `run/live`, a link that names the slot). Users reach whatever it
//!   names, so it is the one truth about the live slot, moved only by
//!   rename(2) through [`crate::swap::point_link`].
//! - Which release each slot runs: `.shipit/slots/<slot>.json`, written
//!   (atomically) before the slot's `start` hook runs and removed once its
//!   `stop` hook succeeded. A record left by a crash therefore means "this
//!   slot may still run that release": the next deploy stops it before
//!   reusing the slot, and prune keeps that release.
//!
//! With a switch hook (TCP ports need one), the proxy follows the hook,
//! not the link, and the two cannot move together. So a switch writes
//! `.shipit/slots/switch.json` before it moves either, and marks it
//! `settled` once both name the new slot. An unsettled record found later
//! means "the proxy may reach either slot": the next mutating command
//! points link and proxy back at the slot that was live before, which
//! still runs (a slot is retired only after the record is gone).

use std::fmt;
use std::io;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::SlotsConfig;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::layout::{Layout, ReleaseId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub const BOTH: [Slot; 2] = [Slot::Blue, Slot::Green];

    pub fn name(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where one deploy directory's slots live, and how they are reached.
#[derive(Clone, Debug)]
pub struct Slots {
    layout: Layout,
    ports: Option<(u16, u16)>,
}

/// What `.shipit/slots/<slot>.json` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub release: ReleaseId,
    pub started_at: DateTime<Utc>,
}

/// What `.shipit/slots/switch.json` says: a switch with a switch hook,
/// from `back_to` (the slot live before, running `back_to_release`) to
/// `to` (running `release`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switching {
    pub back_to: Option<Slot>,
    pub back_to_release: Option<ReleaseId>,
    pub to: Slot,
    pub release: ReleaseId,
    /// The link names `to` and the switch hook told the proxy so. Until
    /// then, the proxy may reach either slot.
    pub settled: bool,
    pub started_at: DateTime<Utc>,
}

impl Slots {
    pub fn new(layout: &Layout, config: &SlotsConfig) -> Slots {
        Slots {
            layout: layout.clone(),
            ports: config.ports.map(|p| (p.blue, p.green)),
        }
    }

    /// `run/<slot>.sock`.
    pub fn socket(&self, slot: Slot) -> PathBuf {
        self.layout.run().join(format!("{slot}.sock"))
    }

    /// `run/<slot>.release`: a link to the release the slot was started
    /// for, so that a unit file can say "the release of this slot"
    /// (`run/%i.release`) without being rewritten per release. Set before
    /// `start`, removed once `stop` succeeded.
    pub fn release_link(&self, slot: Slot) -> PathBuf {
        self.layout.run().join(format!("{slot}.release"))
    }

    /// What the release link contains for `release` (relative, like
    /// `current`).
    pub fn release_link_target(release: &ReleaseId) -> PathBuf {
        PathBuf::from("..").join(Layout::current_target(release))
    }

    /// The slot's TCP port, in the port variant.
    pub fn port(&self, slot: Slot) -> Option<u16> {
        self.ports.map(|(blue, green)| match slot {
            Slot::Blue => blue,
            Slot::Green => green,
        })
    }

    /// The link that names the live slot.
    pub fn pointer(&self) -> PathBuf {
        match self.ports {
            None => self.layout.app_socket(),
            Some(_) => self.layout.run().join("live"),
        }
    }

    /// What the pointer contains when `slot` is live (relative, so the
    /// deploy directory can move).
    pub fn pointer_target(&self, slot: Slot) -> PathBuf {
        match self.ports {
            None => PathBuf::from(format!("{slot}.sock")),
            Some(_) => PathBuf::from(slot.name()),
        }
    }

    /// The live slot, if any. A pointer that names neither slot is an
    /// error: shipit will not guess which slot users reach.
    pub fn live(&self) -> Result<Option<Slot>> {
        let pointer = self.pointer();
        let target = match std::fs::read_link(&pointer) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io("could not read the slot link", &pointer, e)
                    .hint("it must be a symlink made by shipit; move it aside and deploy again"));
            }
        };
        Slot::BOTH
            .into_iter()
            .find(|s| target == self.pointer_target(*s))
            .map(Some)
            .ok_or_else(|| {
                Error::usage(format!(
                    "{} points at {}, which is not a slot",
                    pointer.display(),
                    target.display()
                ))
                .hint(format!(
                    "point it at {} or {} (`ln -s` to a temporary name, then `mv -T`), or \
                     remove it if nothing is live",
                    self.pointer_target(Slot::Blue).display(),
                    self.pointer_target(Slot::Green).display()
                ))
            })
    }

    pub fn record_path(&self, slot: Slot) -> PathBuf {
        self.layout.slots_state().join(format!("{slot}.json"))
    }

    /// What runs in `slot`, as far as shipit knows. An unreadable record is
    /// an error that names the file: shipit will not guess.
    pub fn record(&self, slot: Slot) -> Result<Option<Record>> {
        let path = self.record_path(slot);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::internal(format!("could not parse {}", path.display()))
                    .cause(e)
                    .hint(format!(
                        "stop slot {slot} by hand with your stop command, then remove {}",
                        path.display()
                    ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("could not read", &path, e)),
        }
    }

    /// Record that `slot` runs (or is being started with) `release`.
    pub fn set_record(&self, slot: Slot, release: &ReleaseId) -> Result<()> {
        let dir = self.layout.slots_state();
        std::fs::create_dir_all(&dir).with_path("could not create", &dir)?;
        let record = Record {
            release: release.clone(),
            started_at: Utc::now(),
        };
        let mut bytes = serde_json::to_vec_pretty(&record).expect("a record serializes");
        bytes.push(b'\n');
        let path = self.record_path(slot);
        fsutil::atomic_write(&path, &bytes).with_path("could not write", &path)
    }

    fn switching_path(&self) -> PathBuf {
        self.layout.slots_state().join("switch.json")
    }

    /// The switch record, if a switch with a switch hook has not finished.
    pub fn switching(&self) -> Result<Option<Switching>> {
        let path = self.switching_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::internal(format!("could not parse {}", path.display()))
                    .cause(e)
                    .hint(format!(
                        "run your switch command for the slot users should reach, point {} at \
                         it, then remove {}",
                        self.pointer().display(),
                        path.display()
                    ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("could not read", &path, e)),
        }
    }

    /// Write (atomically, durably) the switch record.
    pub fn set_switching(&self, switching: &Switching) -> Result<()> {
        let dir = self.layout.slots_state();
        std::fs::create_dir_all(&dir).with_path("could not create", &dir)?;
        let mut bytes = serde_json::to_vec_pretty(switching).expect("a record serializes");
        bytes.push(b'\n');
        let path = self.switching_path();
        fsutil::atomic_write(&path, &bytes).with_path("could not write", &path)
    }

    /// The switch finished, or was undone: link and proxy agree.
    pub fn clear_switching(&self) -> Result<()> {
        let path = self.switching_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("could not remove", &path, e)),
        }
    }

    /// The slot users reach, as far as shipit can tell: the link's, unless
    /// an unsettled switch says the proxy may still reach the slot that
    /// was live before (the next mutating command makes that true).
    pub fn reached(&self) -> Result<Option<Slot>> {
        if self.ports.is_none() {
            return self.live();
        }
        match self.switching()? {
            Some(s) if !s.settled => Ok(s.back_to),
            _ => self.live(),
        }
    }

    /// `slot` was stopped: it runs nothing.
    pub fn clear_record(&self, slot: Slot) -> Result<()> {
        let path = self.record_path(slot);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("could not remove", &path, e)),
        }
    }
}

/// The releases recorded in either slot of `layout` (whatever the config
/// says now: a record is on disk until its slot was stopped). An unreadable
/// record is an error: prune must not delete what a slot may run.
pub fn recorded_releases(layout: &Layout) -> Result<Vec<ReleaseId>> {
    let mut releases = Vec::new();
    for slot in Slot::BOTH {
        let path = layout.slots_state().join(format!("{slot}.json"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("could not read", &path, e)),
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
            Error::internal(format!("could not parse {}", path.display()))
                .cause(e)
                .hint(format!(
                    "stop slot {slot} by hand if it runs, then remove {}",
                    path.display()
                ))
        })?;
        releases.push(record.release);
    }
    Ok(releases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SlotPorts;

    fn config(ports: Option<SlotPorts>) -> SlotsConfig {
        SlotsConfig {
            start: "true".into(),
            stop: "true".into(),
            start_timeout: std::time::Duration::from_secs(1),
            stop_timeout: std::time::Duration::from_secs(1),
            retire_delay: std::time::Duration::ZERO,
            warm_standby: false,
            ports,
            switch: None,
            front_check: true,
            front_user: None,
        }
    }

    #[test]
    fn the_pointer_names_the_live_slot() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let slots = Slots::new(&layout, &config(None));
        assert_eq!(slots.live().unwrap(), None);
        std::fs::create_dir_all(layout.run()).unwrap();
        std::os::unix::fs::symlink("green.sock", layout.app_socket()).unwrap();
        assert_eq!(slots.live().unwrap(), Some(Slot::Green));
        std::fs::remove_file(layout.app_socket()).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", layout.app_socket()).unwrap();
        let e = slots.live().unwrap_err();
        assert!(e.message.contains("/etc/passwd"), "{e}");
    }

    #[test]
    fn the_port_variant_uses_its_own_pointer() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let slots = Slots::new(
            &layout,
            &config(Some(SlotPorts {
                blue: 3001,
                green: 3002,
            })),
        );
        std::fs::create_dir_all(layout.run()).unwrap();
        std::os::unix::fs::symlink("blue", layout.run().join("live")).unwrap();
        assert_eq!(slots.live().unwrap(), Some(Slot::Blue));
        assert_eq!(slots.port(Slot::Green), Some(3002));
    }

    #[test]
    fn records_round_trip_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let slots = Slots::new(&layout, &config(None));
        let id = ReleaseId::parse("20260101000000").unwrap();
        assert_eq!(slots.record(Slot::Blue).unwrap(), None);
        slots.set_record(Slot::Blue, &id).unwrap();
        assert_eq!(slots.record(Slot::Blue).unwrap().unwrap().release, id);
        assert_eq!(recorded_releases(&layout).unwrap(), vec![id]);
        slots.clear_record(Slot::Blue).unwrap();
        assert_eq!(slots.record(Slot::Blue).unwrap(), None);
        slots.clear_record(Slot::Blue).unwrap();
    }
}
