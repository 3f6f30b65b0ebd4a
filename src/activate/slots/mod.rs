//! Slots: blue-green on one host (SPEC §7).
//!
//! The reload strategy gates a release after users can reach it. Here the
//! release is started in the idle slot, gated on that slot's own socket,
//! and only then does the front's link (`run/app.sock`) move to it, by one
//! rename(2). nginx resolves a `unix:` upstream path at every new
//! connection, so the switch needs no proxy reload and closes no client
//! connection; a release that fails its gate is stopped before any user
//! request reached it.
//!
//! The sequence, for a deploy and for a rollback alike:
//! 1. the idle slot is the one the link does not name (blue when none is
//!    live); whatever a record says still runs there is stopped first;
//! 2. `start`, then the gate on the slot's socket (`[health]` rules);
//!    refused: stopped, and the live slot is checked to still serve users
//!    (a start hook that bound the live slot's socket took it down);
//! 3. may the front's workers connect to the slot's socket ([`reach`])?
//!    The gate probed it as shipit's user, often root;
//! 4. switch the link, swap `current`, probe `health.url` through the front
//!    until answers name the new release (a pooled upstream connection to
//!    the old slot must not vouch for it: the old slot closes them once the
//!    link names the other slot); failure: switch back at once, the old
//!    slot still runs;
//! 5. retire the old slot: wait `retire_delay` so that connections already
//!    queued on its socket are accepted and answered, then `stop` (or keep
//!    it running with `warm_standby`, which makes the next rollback a
//!    rename).
// An activation fails at most once per run: a large `Err` costs nothing.
#![allow(clippy::result_large_err)]

pub mod reach;
pub mod state;

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::time::Duration;

use crate::activate::live::{self, Failed, Live};
use crate::config::SlotsConfig;
use crate::context::Ctx;
use crate::error::{Error, Kind, Result};
use crate::health::{self, Target};
use crate::hooks::{self, Hook};
use crate::interrupt;
use crate::layout::{Layout, ReleaseId};
use crate::store::{self, Status};
use crate::swap;

pub use state::{Slot, Slots};

/// Deploy: start the new release in the idle slot, gate, switch.
pub fn deploy(ctx: &Ctx, config: &SlotsConfig, live: &Live) -> Result<(), Failed> {
    Dance::new(ctx, config, live, Purpose::Deploy).run()
}

/// Rollback: the same dance with an existing release; only a rename when
/// the target still runs, healthy, in the idle slot.
pub fn rollback(ctx: &Ctx, config: &SlotsConfig, live: &Live) -> Result<(), Failed> {
    Dance::new(ctx, config, live, Purpose::Rollback).run()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Deploy,
    Rollback,
}

struct Dance<'a> {
    ctx: &'a Ctx,
    config: &'a SlotsConfig,
    slots: Slots,
    live: &'a Live<'a>,
    purpose: Purpose,
    /// The live slot's socket (device, inode) before anything started: a
    /// start hook that binds the live slot's socket instead of its own
    /// replaces it, and its users with it.
    live_socket: Option<(Slot, (u64, u64))>,
}

/// A socket's identity on the disk.
fn socket_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// The environment of a slot hook: the usual variables for `release`, and
/// which slot, on which socket or port.
fn slot_env(slots: &Slots, layout: &Layout, live: &Live, slot: Slot) -> Vec<(String, String)> {
    let mut env = live::hook_env(layout, live);
    env.push(("SHIPIT_SLOT".into(), slot.to_string()));
    env.push((
        "SHIPIT_SLOT_SOCKET".into(),
        slots.socket(slot).display().to_string(),
    ));
    // The link the front follows: a slot is live while it names the
    // slot's socket (or, with ports, the slot).
    env.push((
        "SHIPIT_SLOT_LINK".into(),
        slots.pointer().display().to_string(),
    ));
    if let Some(port) = slots.port(slot) {
        env.push(("SHIPIT_SLOT_PORT".into(), port.to_string()));
    }
    env
}

impl<'a> Dance<'a> {
    fn new(ctx: &'a Ctx, config: &'a SlotsConfig, live: &'a Live, purpose: Purpose) -> Self {
        let slots = Slots::new(&ctx.layout, config);
        let live_socket = match slots.live() {
            Ok(Some(slot)) if config.ports.is_none() => {
                socket_id(&slots.socket(slot)).map(|id| (slot, id))
            }
            _ => None,
        };
        Dance {
            ctx,
            config,
            slots,
            live,
            purpose,
            live_socket,
        }
    }

    fn id(&self) -> &ReleaseId {
        self.live.id
    }

    /// `live now:` for the state before this dance changed anything.
    fn unchanged(&self, live_slot: Option<Slot>) -> String {
        match (self.live.previous, live_slot) {
            (Some(p), Some(s)) => format!("{} (unchanged, in slot {s})", Layout::display(p)),
            (Some(p), None) => format!("{} (unchanged)", Layout::display(p)),
            (None, _) => "nothing (no release was live, and none is now)".into(),
        }
    }

    fn run(self) -> Result<(), Failed> {
        let live_slot = match self.slots.live() {
            Ok(live) => live,
            Err(e) => {
                return Err(self.not_started(
                    e.context(format!(
                        "could not tell which slot is live, so {} was not started",
                        Layout::display(self.id())
                    )),
                    None,
                ));
            }
        };
        let idle = live_slot.map_or(Slot::Blue, Slot::other);
        if let Err(e) = std::fs::create_dir_all(self.ctx.layout.run()) {
            let e = Error::io("could not create", &self.ctx.layout.run(), e);
            return Err(self.not_started(e, live_slot));
        }

        // A rollback to the release that still runs in the idle slot
        // (warm standby) is only the switch, once it answers.
        let warm = self.purpose == Purpose::Rollback
            && self
                .slots
                .record(idle)
                .ok()
                .flatten()
                .is_some_and(|r| &r.release == self.id())
            && self.answers_once(idle);
        if warm {
            self.ctx.ui.step(
                "Warm",
                format!(
                    "{} still runs in slot {idle} and answers",
                    Layout::display(self.id())
                ),
            );
        } else {
            if let Err(e) = self.stop_stale(idle) {
                return Err(self.not_started(e, live_slot));
            }
            if let Err(e) = self.start_and_gate(idle) {
                return Err(self.refused(idle, live_slot, e, Phase::Gate));
            }
        }
        if let Err(e) = self.front_may_connect(idle) {
            return Err(self.refused(idle, live_slot, e, Phase::Reach));
        }
        self.switch(idle, live_slot)?;
        // Proven: it passed its gate and the front reaches it. Recorded
        // before the old slot is retired, so a crash while it drains does
        // not cost this release its place as a rollback target.
        if self.purpose == Purpose::Deploy
            && let Err(e) = store::mark_proven(&self.ctx.layout, self.id(), Status::Live)
        {
            self.ctx.ui.warn(format!(
                "could not record {} as proven live: {e}",
                Layout::display(self.id())
            ));
        }
        if let Some(old) = live_slot {
            self.retire(old);
        }
        Ok(())
    }

    /// A failure before anything was started: nothing changed for users. A
    /// deploy's release never ran, so it is removed, as a build that fails
    /// before the swap is.
    fn not_started(&self, e: Error, live_slot: Option<Slot>) -> Failed {
        if self.purpose == Purpose::Deploy {
            let _ = store::remove_release(&self.ctx.layout, self.id());
        }
        Failed {
            error: e.in_phase(Kind::BeforeSwap).live(self.unchanged(live_slot)),
            live: self.live.previous.cloned(),
            refused: false,
        }
    }

    /// How a slot is probed: its socket, or its TCP port.
    fn target(&self, slot: Slot) -> Target {
        match self.slots.port(slot) {
            Some(port) => Target::Url(format!(
                "http://127.0.0.1:{port}{}",
                health::url_path(&self.health().url)
            )),
            None => Target::Socket {
                path: self.slots.socket(slot),
                url: self.health().url.clone(),
            },
        }
    }

    /// One probe of a slot with the gate's rules.
    fn answers_once(&self, slot: Slot) -> bool {
        let health = self.health();
        let body = self.expected_body();
        let seen = match self.target(slot) {
            Target::Url(url) => health::probe(
                &health::agent(health.request_timeout),
                &url,
                health.expect_status,
                body.as_deref(),
            ),
            Target::Socket { path, url } => health::probe_socket(
                &path,
                &url,
                health.request_timeout,
                health.expect_status,
                body.as_deref(),
            ),
        };
        seen.passed
    }

    fn health(&self) -> &crate::config::HealthConfig {
        self.ctx
            .config
            .health
            .as_ref()
            .expect("config validation requires [health] with [slots]")
    }

    fn expected_body(&self) -> Option<String> {
        self.health()
            .expect_body
            .as_deref()
            .map(|t| health::expected_body(t, self.id().as_str(), self.live.revision))
    }

    /// Stop whatever a record says still runs in `slot` (a crash, a warm
    /// standby), so that its socket is free and the gate cannot be answered
    /// by an old process.
    fn stop_stale(&self, slot: Slot) -> Result<()> {
        let Some(record) = self.slots.record(slot)? else {
            return Ok(());
        };
        self.ctx.ui.step(
            "Stopping",
            format!(
                "slot {slot} ({} still runs there)",
                Layout::display(&record.release)
            ),
        );
        self.stop(slot, &record.release).map_err(|e| {
            e.context(format!(
                "could not free slot {slot}, so {} was not started",
                Layout::display(self.id())
            ))
            .hint(format!(
                "stop slot {slot} by hand, then remove {} and deploy again",
                self.slots.record_path(slot).display()
            ))
        })
    }

    /// Run a slot hook for `release`, its output kept in that release's log.
    fn hook(
        &self,
        kind: hooks::Kind,
        command: &str,
        (timeout, timeout_key): (Duration, &str),
        slot: Slot,
        release: &ReleaseId,
    ) -> Result<()> {
        let layout = &self.ctx.layout;
        let meta = store::read_metadata(layout, release).ok().flatten();
        let subject = Live {
            id: release,
            revision: meta.as_ref().and_then(|m| m.revision.as_deref()),
            branch: meta.as_ref().and_then(|m| m.branch.as_deref()),
            previous: self.live.previous,
        };
        let env = slot_env(&self.slots, layout, &subject, slot);
        let log_path = layout.build_log(release);
        // Never through a link planted at the log's path.
        let mut log =
            crate::state::open(&log_path, OpenOptions::new().create(true).append(true)).ok();
        // The deploy root, never the release: a process manager started
        // from here must not hold a release as its working directory.
        let hook = Hook {
            kind,
            command,
            cwd: layout.root(),
            env: &env,
            timeout,
            timeout_key,
        };
        hooks::run(&hook, &self.ctx.ui, log.as_mut())
    }

    fn stop(&self, slot: Slot, release: &ReleaseId) -> Result<()> {
        let config = self.config;
        let timeout = (config.stop_timeout, "slots.stop_timeout");
        self.hook(hooks::Kind::SlotStop, &config.stop, timeout, slot, release)?;
        self.slots.clear_record(slot)?;
        let link = self.slots.release_link(slot);
        match std::fs::remove_file(&link) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("could not remove", &link, e))
            }
            _ => Ok(()),
        }
    }

    fn start_and_gate(&self, slot: Slot) -> Result<()> {
        interrupt::check()?;
        self.slots.set_record(slot, self.id())?;
        swap::point_link(
            &self.slots.release_link(slot),
            &Slots::release_link_target(self.id()),
        )
        .map(|s| s.report(&self.ctx.ui))?;
        self.ctx.ui.step(
            "Starting",
            format!("{} in slot {slot}", Layout::display(self.id())),
        );
        let config = self.config;
        let timeout = (config.start_timeout, "slots.start_timeout");
        self.hook(
            hooks::Kind::SlotStart,
            &config.start,
            timeout,
            slot,
            self.id(),
        )?;
        crate::crashpoint::hit("slots:after-start");
        if let Some(what) = self.live_socket_taken() {
            return Err(Error::internal(format!(
                "the start hook of slot {slot} took the live slot's socket: {what}"
            ))
            .cause(format!(
                "it must listen on its own socket, $SHIPIT_SLOT_SOCKET = {}",
                self.slots.socket(slot).display()
            )));
        }
        self.ctx.ui.step(
            "Checking",
            format!(
                "{} in slot {slot}, before any user can reach it",
                Layout::display(self.id())
            ),
        );
        let passed = health::gate_on(
            self.health(),
            &self.target(slot),
            self.expected_body().as_deref(),
            &self.ctx.ui,
        );
        crate::crashpoint::hit("slots:after-gate");
        passed
    }

    /// The new slot did not prove itself, or the switch to it did not take:
    /// stop it (if it was started) and say so. Whatever the link named
    /// before is what users reach.
    fn refused(&self, slot: Slot, live_slot: Option<Slot>, failure: Error, phase: Phase) -> Failed {
        let layout = &self.ctx.layout;
        let interrupted = failure.kind == Kind::Interrupted;
        // Stopping must run even though a signal arrived.
        interrupt::clear();
        // A deploy whose release never proved itself must never look like
        // a good rollback target.
        let why = failure.to_string().replace('\n', "; ");
        if self.purpose == Purpose::Deploy
            && let Err(e) = store::set_status(layout, self.id(), Status::Failed, Some(why))
        {
            self.ctx.ui.warn(format!(
                "could not mark {} failed: {e}",
                Layout::display(self.id())
            ));
        }
        let started = self
            .slots
            .record(slot)
            .ok()
            .flatten()
            .is_some_and(|r| &r.release == self.id());
        // Before it is stopped: did the refused release take the live
        // slot's socket?
        let taken = match live_slot {
            Some(_) if !interrupted && matches!(phase, Phase::Gate | Phase::Reach) => {
                self.live_socket_taken()
            }
            _ => None,
        };
        let stopped = if started {
            self.ctx.ui.step("Stopping", format!("slot {slot}"));
            self.stop(slot, self.id())
        } else {
            Ok(())
        };
        let release = Layout::display(self.id());
        // Refused before the switch: users are on the live slot, unless
        // the refused release took its socket (then stopping it took the
        // live slot's socket away too). Checked, not assumed.
        let lost = match live_slot {
            Some(old) if !interrupted && matches!(phase, Phase::Gate | Phase::Reach) => {
                self.live_slot_lost(old, taken)
            }
            _ => None,
        };
        if let (Some(old), Some(lost)) = (live_slot, lost) {
            return self.live_slot_down(slot, old, failure, lost, stopped);
        }
        let headline = match (interrupted, phase) {
            (true, _) => format!(
                "{} of {release} was interrupted; it is not live",
                self.what()
            ),
            (false, Phase::Gate) => {
                format!("{release} failed its gate in slot {slot}; no user request reached it")
            }
            (false, Phase::Reach) => format!(
                "the front may not connect to {release}'s socket in slot {slot}; it was refused \
                 before the switch, no user request reached it"
            ),
            (false, Phase::Switch) => {
                format!("the switch to {release} in slot {slot} failed; it was undone")
            }
            (false, Phase::Front) => format!(
                "the front could not reach {release} in slot {slot}; {}",
                match live_slot {
                    Some(old) => format!("switched back to slot {old}"),
                    None => "the switch was undone".into(),
                }
            ),
        };
        let mut error = failure;
        error.live = None;
        // The reach check's hint is the fix; other failures' are replaced
        // by where to look.
        let fix = error.hint.take().filter(|_| matches!(phase, Phase::Reach));
        error.kind = match (interrupted, self.purpose) {
            (true, _) => Kind::Interrupted,
            (false, Purpose::Deploy) => Kind::RolledBack,
            (false, Purpose::Rollback) => Kind::RollbackFailed,
        };
        let mut error = error.context(headline).live(self.unchanged(live_slot));
        let inspect = format!(
            "inspect {} and its log {}",
            layout.release(self.id()).display(),
            layout.build_log(self.id()).display()
        );
        let inspect = match self.purpose {
            Purpose::Deploy => inspect,
            Purpose::Rollback => format!(
                "{inspect}; users are still on what was live; `shipit rollback --to <id>` picks \
                 another release (`shipit releases` lists them)"
            ),
        };
        error = match stopped {
            Ok(()) => error.hint(fix.unwrap_or(inspect)),
            Err(e) => error
                .cause(format!("and slot {slot} could not be stopped: {e}"))
                .hint(format!(
                    "stop slot {slot} by hand (the front does not reach it), then remove {}",
                    self.slots.record_path(slot).display()
                )),
        };
        Failed {
            error,
            live: self.live.previous.cloned(),
            // Only a gate failure switched nothing: a failed switch or
            // front check was undone, which is a rollback.
            refused: !interrupted && matches!(phase, Phase::Gate | Phase::Reach),
        }
    }

    /// What a start hook did to the live slot's socket, if it removed it
    /// or bound it for this release (a replaced socket that answers as
    /// this release; the live app restarting itself is not that).
    fn live_socket_taken(&self) -> Option<String> {
        let (slot, before) = self.live_socket?;
        let path = self.slots.socket(slot);
        match socket_id(&path) {
            None => return Some(format!("{} (slot {slot}) is gone", path.display())),
            Some(now) if now == before => return None,
            Some(_) => {}
        }
        let health = self.health();
        let body = self.expected_body().filter(|_| names_release(health))?;
        let seen = health::probe_socket(
            &path,
            &health.url,
            health.request_timeout,
            health.expect_status,
            Some(&body),
        );
        seen.passed.then(|| {
            format!(
                "{} (slot {slot}) was replaced, and answers as {}",
                path.display(),
                Layout::display(self.id())
            )
        })
    }

    /// After a refusal: does the live slot still answer through the front
    /// (its own release, by `health.expect_body`)? `Some(why)` when not.
    fn live_slot_lost(&self, old: Slot, taken: Option<String>) -> Option<String> {
        let health = self.health();
        let answers = if self.config.front_check {
            let prev = self.live.previous?;
            let revision = store::revision(&self.ctx.layout, prev);
            let body = health
                .expect_body
                .as_deref()
                .map(|t| health::expected_body(t, prev.as_str(), revision.as_deref()));
            let agent = health::agent(health.request_timeout);
            // A few probes, a pause apart: one lost race is not an outage.
            let mut last = None;
            for attempt in 0..3 {
                if attempt > 0 {
                    std::thread::sleep(health.interval);
                }
                let seen =
                    health::probe(&agent, &health.url, health.expect_status, body.as_deref());
                if seen.passed {
                    last = None;
                    break;
                }
                last = Some(seen.detail);
            }
            last.map(|detail| {
                format!(
                    "{} through the front does not answer from slot {old}: {detail}",
                    crate::urls::redact_url(&health.url)
                )
            })
        } else {
            None
        };
        match (taken, answers) {
            (None, None) => None,
            (Some(t), None) => Some(format!(
                "{t}: user requests reached the refused release until it was stopped"
            )),
            (None, Some(a)) => Some(a),
            (Some(t), Some(a)) => Some(format!(
                "{t}: user requests reached the refused release until it was stopped; now {a}"
            )),
        }
    }

    /// A refused release that took the live slot down with it: say so, as
    /// a failed rollback (the site may be down), never as "no user request
    /// reached it".
    fn live_slot_down(
        &self,
        slot: Slot,
        old: Slot,
        failure: Error,
        lost: String,
        stopped: Result<()>,
    ) -> Failed {
        let release = Layout::display(self.id());
        let prev = self
            .live
            .previous
            .map(Layout::display)
            .unwrap_or_else(|| "nothing".into());
        let mut error = failure;
        error.live = None;
        error.hint = None;
        error.kind = Kind::RollbackFailed;
        let mut error = error
            .context(format!(
                "{release} was refused in slot {slot}, but the live slot {old} does not serve \
                 users as it did"
            ))
            .cause(lost);
        if let Err(e) = stopped {
            error = error.cause(format!("and slot {slot} could not be stopped: {e}"));
        }
        Failed {
            error: error
                .live(format!(
                    "{prev} in slot {old}, which the front may not reach (check it now)"
                ))
                .hint(format!(
                    "restart slot {old}'s app with your process manager, or deploy a good \
                     revision (`shipit deploy` starts it in slot {slot} and switches to it); make \
                     slots.start listen only on $SHIPIT_SLOT_SOCKET"
                )),
            live: self.live.previous.cloned(),
            refused: false,
        }
    }

    fn what(&self) -> &'static str {
        match self.purpose {
            Purpose::Deploy => "deploy",
            Purpose::Rollback => "rollback",
        }
    }

    /// Before the switch: may the front's workers connect to the slot's
    /// socket, through the link, as they will (see [`reach`])? The gate
    /// probed it as shipit's user, who may be root.
    fn front_may_connect(&self, slot: Slot) -> Result<()> {
        if self.slots.port(slot).is_some() {
            return Ok(());
        }
        let fronts = match &self.config.front_user {
            Some(user) => vec![reach::configured(user)?],
            None => reach::nginx_workers(),
        };
        let socket = self.slots.socket(slot);
        if fronts.is_empty() {
            self.ctx.ui.warn(format!(
                "no nginx worker runs and slots.front_user is not set, so whether the front may \
                 connect to {} was not checked",
                socket.display()
            ));
            return Ok(());
        }
        let chain = reach::chain(&self.slots.pointer(), &socket)
            .map_err(|e| Error::io("could not read the permissions of", &socket, e))?;
        for front in &fronts {
            if let Some(denied) = reach::denial(front, &chain) {
                let fix = if denied.path == socket
                    || chain.last().is_some_and(|n| n.path == denied.path)
                {
                    "make the app create its socket writable by the front: mode 0666, or 0660 with \
                     the front's group (the example app chmods it 0666; a systemd socket unit: \
                     SocketMode=0660 and SocketGroup=www-data)"
                        .to_string()
                } else {
                    format!(
                        "give the front search permission on {}: `chmod o+x {}` (or g+x with the \
                         front's group)",
                        denied.path.display(),
                        denied.path.display()
                    )
                };
                return Err(Error::internal(format!(
                    "{} may not connect to {}: it needs {} permission on {}",
                    front.name,
                    socket.display(),
                    denied.permission,
                    denied.path.display()
                ))
                .cause(denied.detail)
                .hint(fix));
            }
        }
        self.ctx.ui.step(
            "Reachable",
            format!(
                "{} by {}",
                socket.display(),
                fronts
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        Ok(())
    }

    /// Point the front at `slot`, swap `current`, check the front. If any
    /// of it fails, everything is pointed back while the old slot still
    /// runs, and the new slot is stopped.
    fn switch(&self, slot: Slot, old: Option<Slot>) -> Result<(), Failed> {
        let ui = &self.ctx.ui;
        let layout = &self.ctx.layout;
        ui.step(
            "Switching",
            format!(
                "{} -> slot {slot} ({})",
                self.slots.pointer().display(),
                Layout::display(self.id())
            ),
        );
        // With TCP ports the proxy follows the switch hook, not the link,
        // and the two move one after the other: the record says so until
        // both name the new slot. (With sockets the link is the truth.)
        let mut switching = self.config.ports.is_some().then(|| state::Switching {
            back_to: old,
            back_to_release: self.live.previous.cloned(),
            to: slot,
            release: self.id().clone(),
            settled: false,
            started_at: chrono::Utc::now(),
        });
        if let Some(record) = &switching
            && let Err(e) = self.slots.set_switching(record)
        {
            return Err(self.refused(slot, old, e, Phase::Switch));
        }
        // `Err` from point_link means the link did not move.
        if let Err(e) = interrupt::check().and_then(|_| self.point_link(slot)) {
            self.forget_switching();
            return Err(self.refused(slot, old, e, Phase::Switch));
        }
        crate::crashpoint::hit("slots:after-link");
        let switched = self
            .tell_proxy(slot, self.id())
            .and_then(|_| match &mut switching {
                Some(record) => {
                    record.settled = true;
                    self.slots.set_switching(record)
                }
                None => Ok(()),
            })
            .map_err(|e| (e, Phase::Switch));
        let swapped = switched.and_then(|_| {
            ui.step(
                "Swapping",
                format!("current -> {}", Layout::display(self.id())),
            );
            let swapped = swap::point_current(layout, self.id()).map(|s| s.report(ui));
            crate::crashpoint::hit("slots:after-current");
            swapped.map_err(|e| {
                (
                    e.context("current could not follow the switch"),
                    Phase::Switch,
                )
            })
        });
        let checked = swapped.and_then(|_| {
            if self.config.front_check {
                self.front_check().map_err(|e| (e, Phase::Front))
            } else {
                Ok(())
            }
        });
        let Err((failure, phase)) = checked else {
            self.forget_switching();
            return Ok(());
        };
        // Undo, whatever signal arrives meanwhile.
        interrupt::clear();
        // From here the proxy may reach either slot until the switch back
        // is done: a crash now must lead the next command back to `old`.
        if let Some(record) = &mut switching {
            record.settled = false;
            if let Err(e) = self.slots.set_switching(record) {
                self.ctx.ui.warn(format!("{e}"));
            }
        }
        if let Err(e) = self.switch_back(old) {
            let error = failure
                .context(format!(
                    "the switch to {} in slot {slot} failed, and so did the switch back",
                    Layout::display(self.id())
                ))
                .cause(e)
                .live(format!(
                    "{} in slot {slot} (the front may not reach it)",
                    Layout::display(self.id())
                ))
                .hint(match old {
                    Some(old) => format!(
                        "point {} at {} by hand now",
                        self.slots.pointer().display(),
                        self.slots.pointer_target(old).display()
                    ),
                    None => format!("remove {} by hand now", self.slots.pointer().display()),
                });
            return Err(Failed {
                error: Error {
                    kind: Kind::RollbackFailed,
                    ..error
                },
                live: Some(self.id().clone()),
                refused: false,
            });
        }
        self.forget_switching();
        Err(self.refused(slot, old, failure, phase))
    }

    /// Link and proxy agree again: the switch record goes. Failing to
    /// remove it only warns: a settled record is harmless, and an
    /// unsettled one leads the next command back to the old slot.
    fn forget_switching(&self) {
        if self.config.ports.is_some()
            && let Err(e) = self.slots.clear_switching()
        {
            self.ctx.ui.warn(format!("{e}"));
        }
    }

    /// Undo a switch: the link (and the proxy) back to `old`, or no link
    /// when none was live; `current` back to what it was.
    fn switch_back(&self, old: Option<Slot>) -> Result<()> {
        let ui = &self.ctx.ui;
        let layout = &self.ctx.layout;
        match old {
            Some(old) => {
                ui.step("Switching", format!("back to slot {old}"));
                self.point_link(old)?;
                if let Some(prev) = self.live.previous {
                    self.tell_proxy(old, prev)?;
                }
            }
            None => {
                ui.step("Removing", self.slots.pointer().display().to_string());
                match std::fs::remove_file(self.slots.pointer()) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::io("could not remove", &self.slots.pointer(), e));
                    }
                    _ => {}
                }
            }
        }
        match self.live.previous {
            Some(prev) => swap::point_current(layout, prev).map(|s| s.report(ui)),
            None => swap::remove_current(layout),
        }
    }

    /// Move the link; `Err` means it did not move.
    fn point_link(&self, slot: Slot) -> Result<()> {
        swap::point_link(&self.slots.pointer(), &self.slots.pointer_target(slot))
            .map(|s| s.report(&self.ctx.ui))
    }

    /// With a switch hook (TCP ports need one), tell the proxy that `slot`,
    /// running `release`, is live.
    fn tell_proxy(&self, slot: Slot, release: &ReleaseId) -> Result<()> {
        match &self.config.switch {
            Some(command) => {
                let timeout = (self.ctx.config.hooks.reload_timeout, "hooks.reload_timeout");
                self.hook(hooks::Kind::SlotSwitch, command, timeout, slot, release)
            }
            None => Ok(()),
        }
    }

    /// `health.url` through the front, after the switch. Only answers that
    /// name the new release count (`{release}` in `health.expect_body`): a
    /// pooled upstream connection to the old slot must never vouch for it.
    /// The old slot learns at the switch that it is no longer live
    /// (`SHIPIT_SLOT_LINK` no longer names its socket) and answers with
    /// `Connection: close`, so the pool moves to the new slot within a
    /// request per connection. The slot passed its own gate, so a 502, 503
    /// or 504 here means the front cannot reach it: that fails at once, as
    /// does an error status; a probe that timed out does not (a busy
    /// machine), it only fails to pass.
    fn front_check(&self) -> Result<()> {
        let health = self.health();
        let url = health.url.clone();
        let body = self.expected_body().filter(|_| names_release(health));
        self.ctx.ui.step(
            "Checking",
            match &body {
                Some(_) => format!(
                    "{} through the front, until it answers from {}",
                    crate::urls::redact_url(&url),
                    Layout::display(self.id())
                ),
                None => format!("{} through the front", crate::urls::redact_url(&url)),
            },
        );
        // A probe that timed out is a busy front or app, not a front that
        // cannot reach the slot: it only fails to pass.
        let gate = health::Gate::new(health.successes, health.timeout, 1)
            .down_counts_after(
                Duration::ZERO,
                "the slot passed its own gate, so through the front a refused connection or \
                 502/503/504 fails at once",
            )
            .timeouts_wait();
        health::run_gate(
            health,
            &Target::Url(url),
            body.as_deref(),
            gate,
            &self.ctx.ui,
        )
        .map_err(|e| {
            let old = self.live.previous.map(Layout::display);
            let pooled = e.causes.iter().any(|c| c.contains("does not contain"));
            match (pooled, old) {
                (true, Some(old)) => e.hint(format!(
                    "the front kept answering without naming {}: most likely pooled upstream \
                         connections to the old slot ({old}); the app of a slot must answer with \
                         `Connection: close` once $SHIPIT_SLOT_LINK no longer names its socket \
                         (the example app does)",
                    Layout::display(self.id())
                )),
                _ => e,
            }
        })
    }

    /// The old slot after a good switch: let it finish what was queued,
    /// then stop it (unless it stays as a warm standby). Failures only warn:
    /// the new release is live and healthy.
    fn retire(&self, old: Slot) {
        let ui = &self.ctx.ui;
        let record = match self.slots.record(old) {
            Ok(Some(record)) => record,
            Ok(None) => {
                ui.warn(format!(
                    "slot {old} has no record of what runs there, so it was not stopped; if an \
                     app still runs in it, stop it with your stop command"
                ));
                return;
            }
            Err(e) => {
                ui.warn(format!("slot {old} was not stopped: {e}"));
                return;
            }
        };
        if self.config.warm_standby {
            ui.step(
                "Keeping",
                format!(
                    "slot {old} ({}) running as a warm standby",
                    Layout::display(&record.release)
                ),
            );
            return;
        }
        if !self.config.retire_delay.is_zero() {
            ui.step(
                "Draining",
                format!(
                    "slot {old} for {}",
                    humantime::format_duration(self.config.retire_delay)
                ),
            );
            // An interrupt cuts the wait short.
            let _ = health::sleep_interruptibly(self.config.retire_delay);
        }
        crate::crashpoint::hit("slots:retire");
        // The new release is live: the stop must run even after a signal.
        interrupt::clear();
        ui.step(
            "Stopping",
            format!("slot {old} ({})", Layout::display(&record.release)),
        );
        if let Err(e) = self.stop(old, &record.release) {
            ui.warn(format!(
                "{} is live in slot {}, but slot {old} could not be stopped: {e}; the next deploy \
                 stops it before reusing the slot",
                Layout::display(self.id()),
                old.other()
            ));
        }
    }
}

/// Which part of the dance failed.
#[derive(Clone, Copy)]
enum Phase {
    /// The gate on the slot's own socket (or its start).
    Gate,
    /// The front's permissions on the slot's socket, before the switch.
    Reach,
    /// Moving the link, telling the proxy, or swapping `current`.
    Switch,
    /// The check through the front after the switch.
    Front,
}

/// Whether `health.expect_body` makes an answer name the release.
fn names_release(health: &crate::config::HealthConfig) -> bool {
    health
        .expect_body
        .as_deref()
        .is_some_and(|b| b.contains("{release}"))
}

/// Why a slots deploy that succeeded did not prove that users reach the
/// new release through the front, if it did not: the check through the
/// front was turned off, or its answers cannot name the release. Said in
/// the output and kept in the history, so that `ok` never claims more than
/// was checked.
pub fn front_unproven(ctx: &Ctx) -> Option<String> {
    let config = ctx.config.slots.as_ref()?;
    let health = ctx.config.health.as_ref()?;
    if !config.front_check {
        return Some(
            "the front was not checked (slots.front_check = false): the slot passed its own \
             gate, but whether users reach it through the front is unproven"
                .into(),
        );
    }
    (!names_release(health)).then(|| {
        "the front was checked by status only (health.expect_body has no {release}): its answers \
         could come from the old slot's pooled connections, so whether users reach the new \
         release is unproven"
            .into()
    })
}

/// Before anything is built or locked: with slots, the link must name a
/// slot (a bad one is found now, not after a build).
/// The slots' view for `status` and `releases`, or `None` without slots. A
/// bad link must not hide the rest of what is live: it is a warning here.
pub fn describe_or_warn(ctx: &Ctx) -> Option<SlotView> {
    let config = ctx.config.slots.as_ref()?;
    let view = describe(ctx, config)
        .map_err(|e| ctx.ui.warn(format!("{e}")))
        .ok()?;
    for (slot, why) in &view.unreadable {
        ctx.ui.warn(format!("slot {slot}: {why}"));
    }
    if let Some(s) = &view.switching {
        let back = match (s.back_to, &s.back_to_release) {
            (Some(slot), Some(release)) => {
                format!(
                    "points it back at slot {slot} ({})",
                    Layout::display(release)
                )
            }
            _ => "removes the link".into(),
        };
        ctx.ui.warn(format!(
            "the switch to slot {} ({}) was cut short: the proxy may reach either slot until \
             the next deploy or rollback, which {back}",
            s.to,
            Layout::display(&s.release)
        ));
    }
    Some(view)
}

/// After a crash between moving the front's link and swapping `current`,
/// users reach one release while `current` names another. The link is
/// what users reach, so `current` follows it, and the operator is told.
/// Callers hold the deploy lock.
pub fn reconcile(ctx: &Ctx) -> Result<()> {
    let Some(config) = &ctx.config.slots else {
        return Ok(());
    };
    let slots = Slots::new(&ctx.layout, config);
    match slots.switching()? {
        // Without ports the link is what the front follows: a record left
        // from a TCP configuration says nothing any more.
        Some(_) if config.ports.is_none() => slots.clear_switching()?,
        Some(switching) => finish_switch(ctx, config, &slots, &switching)?,
        None => {}
    }
    let Some(live) = slots.live()? else {
        return Ok(());
    };
    let Some(record) = slots.record(live)? else {
        return Ok(());
    };
    let current = store::read_current(&ctx.layout)?;
    if current.id() == Some(&record.release) || !ctx.layout.release(&record.release).is_dir() {
        return Ok(());
    }
    ctx.ui.step(
        "Repairing",
        format!(
            "current -> {} (the front reaches slot {live}, which runs it; current still named {}: \
             shipit was stopped between the two switches)",
            Layout::display(&record.release),
            current.describe()
        ),
    );
    swap::point_current(&ctx.layout, &record.release).map(|s| s.report(&ctx.ui))
}

/// A switch with a switch hook that shipit did not finish. Settled: link
/// and proxy both name the new slot, only the record is left. Unsettled:
/// the proxy may reach either slot, so both are pointed back at the slot
/// that was live before (it still runs: a slot is retired only after the
/// switch finished), and the new release is left unproven.
fn finish_switch(
    ctx: &Ctx,
    config: &SlotsConfig,
    slots: &Slots,
    switching: &state::Switching,
) -> Result<()> {
    if switching.settled {
        return slots.clear_switching();
    }
    let ui = &ctx.ui;
    let new = format!(
        "slot {} ({})",
        switching.to,
        Layout::display(&switching.release)
    );
    // The release of the slot to go back to: its record, else what
    // `current` named when the switch began.
    let back_release = switching.back_to.and_then(|back| {
        slots
            .record(back)
            .ok()
            .flatten()
            .map(|r| r.release)
            .or_else(|| switching.back_to_release.clone())
    });
    match (switching.back_to, &back_release) {
        (Some(back), Some(release)) => {
            ui.step(
                "Repairing",
                format!(
                    "the switch to {new} was cut short, so the proxy may reach either slot; \
                     pointing it back at slot {back} ({})",
                    Layout::display(release)
                ),
            );
            let meta = store::read_metadata(&ctx.layout, release).ok().flatten();
            let live = Live {
                id: release,
                revision: meta.as_ref().and_then(|m| m.revision.as_deref()),
                branch: meta.as_ref().and_then(|m| m.branch.as_deref()),
                previous: None,
            };
            let dance = Dance::new(ctx, config, &live, Purpose::Rollback);
            dance
                .tell_proxy(back, release)
                .and_then(|_| dance.point_link(back))
                .map_err(|e| {
                    e.context(format!(
                        "the switch to {new} was cut short, and pointing the proxy back at slot \
                         {back} failed"
                    ))
                    .live(format!(
                        "unknown: slot {back} ({}) or {new}",
                        Layout::display(release)
                    ))
                    .hint(format!(
                        "run your switch command for slot {back} by hand, point {} at {}, then \
                         remove {}",
                        slots.pointer().display(),
                        slots.pointer_target(back).display(),
                        ctx.layout.slots_state().join("switch.json").display()
                    ))
                })?;
        }
        (Some(back), None) => {
            // A live slot whose release shipit cannot name: point the link
            // back (the proxy is told by the next switch), never remove it.
            ui.step(
                "Repairing",
                format!(
                    "the switch to {new} was cut short; pointing {} back at slot {back}",
                    slots.pointer().display()
                ),
            );
            swap::point_link(&slots.pointer(), &slots.pointer_target(back))
                .map(|s| s.report(ui))?;
        }
        (None, _) => {
            // Nothing was live before: nothing to go back to.
            ui.step(
                "Repairing",
                format!(
                    "the switch to {new} was cut short before it was checked; removing {}",
                    slots.pointer().display()
                ),
            );
            match std::fs::remove_file(slots.pointer()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("could not remove", &slots.pointer(), e));
                }
                _ => {}
            }
        }
    }
    slots.clear_switching()
}

/// What users reach with slots: the release the live slot runs (which
/// `current` names, except after a crash between the two switches, until
/// the next mutating command repairs it). `None` without slots or when
/// nothing is live.
pub fn live_release(ctx: &Ctx) -> Option<ReleaseId> {
    let config = ctx.config.slots.as_ref()?;
    let slots = Slots::new(&ctx.layout, config);
    let live = slots.reached().ok()??;
    slots.record(live).ok()?.map(|r| r.release)
}

pub fn preflight(ctx: &Ctx) -> Result<()> {
    match &ctx.config.slots {
        Some(config) => {
            if let Some(user) = &config.front_user {
                reach::configured(user)?;
            }
            Slots::new(&ctx.layout, config).live().map(|_| ())
        }
        None => Ok(()),
    }
}

/// What to show for each slot: the release its record names, if any.
pub fn describe(ctx: &Ctx, config: &SlotsConfig) -> Result<SlotView> {
    let slots = Slots::new(&ctx.layout, config);
    let switching = match config.ports {
        Some(_) => slots.switching()?.filter(|s| !s.settled),
        None => None,
    };
    let live = match &switching {
        Some(s) => s.back_to,
        None => slots.live()?,
    };
    let mut view = SlotView {
        live,
        switching,
        blue: None,
        green: None,
        pointer: slots.pointer(),
        unreadable: Vec::new(),
    };
    for slot in Slot::BOTH {
        // A torn record must not read as an idle slot: something may run
        // there, and deploy, rollback and prune refuse until it is fixed.
        let release = match slots.record(slot) {
            Ok(record) => record.map(|r| r.release),
            Err(e) => {
                let hint = e
                    .hint
                    .clone()
                    .map(|h| format!("; hint: {h}"))
                    .unwrap_or_default();
                view.unreadable
                    .push((slot, format!("unreadable record: {e}{hint}")));
                None
            }
        };
        match slot {
            Slot::Blue => view.blue = release,
            Slot::Green => view.green = release,
        }
    }
    Ok(view)
}

/// The slots as `releases` and `status` show them.
#[derive(Debug)]
pub struct SlotView {
    pub live: Option<Slot>,
    pub blue: Option<ReleaseId>,
    pub green: Option<ReleaseId>,
    pub pointer: PathBuf,
    /// Slots whose record could not be read, and what to do about it.
    pub unreadable: Vec<(Slot, String)>,
    /// A switch (with a switch hook) that was cut short: until the next
    /// mutating command points everything back, the proxy may reach
    /// either slot. `live` then names the slot it will be pointed back at.
    pub switching: Option<state::Switching>,
}

impl SlotView {
    /// The slot that runs `id`, if one does.
    pub fn slot_of(&self, id: &ReleaseId) -> Option<Slot> {
        if self.blue.as_ref() == Some(id) {
            Some(Slot::Blue)
        } else if self.green.as_ref() == Some(id) {
            Some(Slot::Green)
        } else {
            None
        }
    }

    pub fn release_in(&self, slot: Slot) -> Option<&ReleaseId> {
        match slot {
            Slot::Blue => self.blue.as_ref(),
            Slot::Green => self.green.as_ref(),
        }
    }

    /// `{"live": "blue", "blue": "<id>", "green": null}`
    pub fn to_json(&self) -> serde_json::Value {
        let unreadable: serde_json::Map<String, serde_json::Value> = self
            .unreadable
            .iter()
            .map(|(slot, why)| (slot.to_string(), why.clone().into()))
            .collect();
        serde_json::json!({
            "live": self.live,
            "link": self.pointer,
            "blue": self.blue,
            "green": self.green,
            "unreadable": unreadable,
            "switch_cut_short": self.switching.as_ref().map(|s| serde_json::json!({
                "to": s.to,
                "release": s.release,
                "back_to": s.back_to,
            })),
        })
    }

    /// One line per slot: `blue  releases/<id>  live`.
    pub fn lines(&self) -> Vec<String> {
        Slot::BOTH
            .into_iter()
            .map(|slot| {
                let release = self
                    .release_in(slot)
                    .map(Layout::display)
                    .unwrap_or_else(|| "-".into());
                let unreadable = self.unreadable.iter().find(|(s, _)| *s == slot);
                let role = match (self.live == Some(slot), self.release_in(slot).is_some()) {
                    _ if unreadable.is_some() => "UNKNOWN: its record is unreadable",
                    (true, _) => "live (the front connects here)",
                    (false, true) => "running, not live (warm standby or left by a crash)",
                    (false, false) => "idle",
                };
                let release = if unreadable.is_some() {
                    "?".to_string()
                } else {
                    release
                };
                format!("{:<5}  {release:<24}  {role}", slot.name())
            })
            .collect()
    }
}
