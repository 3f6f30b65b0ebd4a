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
//! 3. switch the link, swap `current`, probe `health.url` through the front
//!    (failure: switch back at once: the old slot still runs);
//! 4. retire the old slot: wait `retire_delay` so that connections already
//!    queued on its socket are accepted and answered, then `stop` (or keep
//!    it running with `warm_standby`, which makes the next rollback a
//!    rename).
// An activation fails at most once per run: a large `Err` costs nothing.
#![allow(clippy::result_large_err)]

pub mod state;

use std::fs::OpenOptions;
use std::path::PathBuf;

use crate::activate::{self, Failed, Live};
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
}

/// The environment of a slot hook: the usual variables for `release`, and
/// which slot, on which socket or port.
fn slot_env(slots: &Slots, layout: &Layout, live: &Live, slot: Slot) -> Vec<(String, String)> {
    let mut env = activate::hook_env(layout, live);
    env.push(("SHIPIT_SLOT".into(), slot.to_string()));
    env.push((
        "SHIPIT_SLOT_SOCKET".into(),
        slots.socket(slot).display().to_string(),
    ));
    if let Some(port) = slots.port(slot) {
        env.push(("SHIPIT_SLOT_PORT".into(), port.to_string()));
    }
    env
}

impl<'a> Dance<'a> {
    fn new(ctx: &'a Ctx, config: &'a SlotsConfig, live: &'a Live, purpose: Purpose) -> Self {
        Dance {
            ctx,
            config,
            slots: Slots::new(&ctx.layout, config),
            live,
            purpose,
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
        let before = |e: Error| Failed {
            error: e,
            live: self.live.previous.cloned(),
        };
        let live_slot = self.slots.live().map_err(|e| {
            before(
                e.in_phase(Kind::BeforeSwap)
                    .live(self.unchanged(None))
                    .context(format!(
                        "could not tell which slot is live, so {} was not started",
                        Layout::display(self.id())
                    )),
            )
        })?;
        let idle = live_slot.map_or(Slot::Blue, Slot::other);
        std::fs::create_dir_all(self.ctx.layout.run())
            .map_err(|e| {
                Error::io("could not create", &self.ctx.layout.run(), e)
                    .in_phase(Kind::BeforeSwap)
                    .live(self.unchanged(live_slot))
            })
            .map_err(before)?;

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
            self.stop_stale(idle)
                .map_err(|e| before(e.live(self.unchanged(live_slot))))?;
            if let Err(e) = self.start_and_gate(idle) {
                return Err(self.refused(idle, live_slot, e));
            }
        }
        self.switch(idle, live_slot)?;
        if let Some(old) = live_slot {
            self.retire(old);
        }
        let standby = state::recorded_releases(&self.ctx.layout);
        activate::warn_stale_processes(self.ctx, self.id(), &standby);
        Ok(())
    }

    /// One probe of a slot with the gate's rules.
    fn answers_once(&self, slot: Slot) -> bool {
        let health = self.health();
        health::probe_socket(
            &self.slots.socket(slot),
            &health.url,
            health.request_timeout,
            health.expect_status,
            self.expected_body().as_deref(),
        )
        .passed
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
        let record = self
            .slots
            .record(slot)
            .map_err(|e| e.in_phase(Kind::BeforeSwap))?;
        let Some(record) = record else {
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
            e.in_phase(Kind::BeforeSwap)
                .context(format!(
                    "could not free slot {slot}, so {} was not started",
                    Layout::display(self.id())
                ))
                .hint(format!(
                    "stop slot {slot} by hand, then remove {} and deploy again",
                    self.ctx
                        .layout
                        .slots_state()
                        .join(format!("{slot}.json"))
                        .display()
                ))
        })
    }

    /// Run a slot hook for `release`, its output kept in that release's log.
    fn hook(&self, name: &str, command: &str, slot: Slot, release: &ReleaseId) -> Result<()> {
        let layout = &self.ctx.layout;
        let meta = store::read_metadata(layout, release).ok().flatten();
        let subject = Live {
            id: release,
            revision: meta.as_ref().and_then(|m| m.revision.as_deref()),
            branch: meta.as_ref().and_then(|m| m.branch.as_deref()),
            previous: self.live.previous,
        };
        let env = slot_env(&self.slots, layout, &subject, slot);
        let timeout = match name {
            "start" => self.config.start_timeout,
            "stop" => self.config.stop_timeout,
            _ => self.ctx.config.hooks.reload_timeout,
        };
        let log_path = layout.build_log(release);
        // Never through a link planted at the log's path.
        let mut log =
            crate::state::open(&log_path, OpenOptions::new().create(true).append(true)).ok();
        // The deploy root, never the release: a process manager started
        // from here must not hold a release as its working directory.
        let hook = Hook {
            name,
            command,
            cwd: layout.root(),
            env: &env,
            timeout,
        };
        hooks::run(&hook, &self.ctx.ui, log.as_mut())
    }

    fn stop(&self, slot: Slot, release: &ReleaseId) -> Result<()> {
        self.hook("stop", &self.config.stop, slot, release)?;
        self.slots.clear_record(slot)
    }

    fn start_and_gate(&self, slot: Slot) -> Result<()> {
        interrupt::check()?;
        self.slots.set_record(slot, self.id())?;
        self.ctx.ui.step(
            "Starting",
            format!("{} in slot {slot}", Layout::display(self.id())),
        );
        self.hook("start", &self.config.start, slot, self.id())?;
        let target = match self.slots.port(slot) {
            Some(port) => Target::Url(format!(
                "http://127.0.0.1:{port}{}",
                health::url_path(&self.health().url)
            )),
            None => Target::Socket {
                path: self.slots.socket(slot),
                url: self.health().url.clone(),
            },
        };
        self.ctx.ui.step(
            "Checking",
            format!(
                "{} in slot {slot}, before any user can reach it",
                Layout::display(self.id())
            ),
        );
        health::gate_on(
            self.health(),
            &target,
            self.expected_body().as_deref(),
            &self.ctx.ui,
        )
    }

    /// The new slot did not prove itself: stop it; users never saw it.
    fn refused(&self, slot: Slot, live_slot: Option<Slot>, failure: Error) -> Failed {
        let layout = &self.ctx.layout;
        let interrupted = failure.kind == Kind::Interrupted;
        // Stopping must run even though a signal arrived.
        interrupt::clear();
        let why = failure.to_string().replace('\n', "; ");
        if !interrupted
            && self.purpose == Purpose::Deploy
            && let Err(e) = store::set_status(layout, self.id(), Status::Failed, Some(why))
        {
            self.ctx.ui.warn(format!(
                "could not mark {} failed: {e}",
                Layout::display(self.id())
            ));
        }
        self.ctx.ui.step("Stopping", format!("slot {slot}"));
        let stopped = self.stop(slot, self.id());
        let what = match self.purpose {
            Purpose::Deploy => "deploy",
            Purpose::Rollback => "rollback",
        };
        let headline = if interrupted {
            format!(
                "{what} of {} was interrupted before it went live",
                Layout::display(self.id())
            )
        } else {
            format!(
                "{} failed its gate in slot {slot}; no user request reached it",
                Layout::display(self.id())
            )
        };
        let mut error = failure;
        error.live = None;
        error.hint = None;
        error.kind = match (interrupted, self.purpose) {
            (true, _) => Kind::Interrupted,
            (false, Purpose::Deploy) => Kind::RolledBack,
            (false, Purpose::Rollback) => Kind::RollbackFailed,
        };
        let mut error = error.context(headline).live(self.unchanged(live_slot));
        error = match stopped {
            Ok(()) => error.hint(format!(
                "inspect {} and its log {}",
                layout.release(self.id()).display(),
                layout.build_log(self.id()).display()
            )),
            Err(e) => error
                .cause(format!("and slot {slot} could not be stopped: {e}"))
                .hint(format!(
                    "stop slot {slot} by hand; users do not reach it (the link names the other slot)"
                )),
        };
        Failed {
            error,
            live: self.live.previous.cloned(),
        }
    }

    /// Point the front at `slot`, swap `current`, check the front. On a
    /// failed front check, everything is pointed back while the old slot
    /// still runs.
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
        if let Err(e) = self.point(slot) {
            return Err(self.refused(slot, old, e));
        }
        // Users are on the new slot now: `current` follows. Its failure
        // only warns; the link is what users reach.
        ui.step(
            "Swapping",
            format!("current -> {}", Layout::display(self.id())),
        );
        match swap::point_current(layout, self.id()) {
            Ok(swapped) => swapped.report(ui),
            Err(e) => ui.warn(format!(
                "slot {slot} is live, but current could not follow: {e}"
            )),
        }
        let checked = if self.config.front_check {
            self.front_check()
        } else {
            Ok(())
        };
        let Err(failure) = checked else {
            return Ok(());
        };
        interrupt::clear();
        let interrupted = failure.kind == Kind::Interrupted;
        let Some(old) = old else {
            // A first deploy: there is nothing to switch back to.
            let _ = std::fs::remove_file(self.slots.pointer());
            let _ = swap::remove_current(layout);
            return Err(self.refused(slot, None, failure));
        };
        ui.step("Switching", format!("back to slot {old}"));
        let back = self.point(old);
        if let Some(prev) = self.live.previous {
            match swap::point_current(layout, prev) {
                Ok(swapped) => swapped.report(ui),
                Err(e) => ui.warn(format!("current could not follow the switch back: {e}")),
            }
        }
        if let Err(e) = back {
            let error = failure
                .context(format!(
                    "the front could not reach {} in slot {slot}, and the switch back failed",
                    Layout::display(self.id())
                ))
                .cause(e)
                .live(format!(
                    "{} in slot {slot} (the front may not reach it)",
                    Layout::display(self.id())
                ))
                .hint(format!(
                    "point {} at {} by hand now",
                    self.slots.pointer().display(),
                    self.slots.pointer_target(old).display()
                ));
            return Err(Failed {
                error: Error {
                    kind: Kind::RollbackFailed,
                    ..error
                },
                live: Some(self.id().clone()),
            });
        }
        let mut failed = self.refused(slot, Some(old), failure);
        if !interrupted {
            failed.error.message = format!(
                "the front could not reach {} in slot {slot}; switched back to slot {old}",
                Layout::display(self.id())
            );
        }
        Err(failed)
    }

    /// Move the link (and, with TCP ports, tell the proxy).
    fn point(&self, slot: Slot) -> Result<()> {
        swap::point_link(&self.slots.pointer(), &self.slots.pointer_target(slot))
            .map(|s| s.report(&self.ctx.ui))?;
        if let Some(command) = &self.config.switch {
            self.hook("switch", command, slot, self.id())?;
        }
        Ok(())
    }

    /// `health.url` through the front, status only: pooled upstream
    /// connections may still reach the old slot for a while (it closes them
    /// as it drains), so the body cannot be asked to name the new release.
    fn front_check(&self) -> Result<()> {
        let health = self.health();
        let url = health.url.clone();
        self.ctx
            .ui
            .step("Checking", format!("{url} through the front"));
        health::gate_on(health, &Target::Url(url), None, &self.ctx.ui)
    }

    /// The old slot after a good switch: let it finish what was queued,
    /// then stop it (unless it stays as a warm standby). Failures only warn:
    /// the new release is live and healthy.
    fn retire(&self, old: Slot) {
        let ui = &self.ctx.ui;
        let Ok(Some(record)) = self.slots.record(old) else {
            return;
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
            // An interrupt cuts the wait short; the stop still runs.
            let _ = health::sleep_interruptibly(self.config.retire_delay);
            interrupt::clear();
        }
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

/// What to show for each slot: the release its record names, if any.
pub fn describe(ctx: &Ctx, config: &SlotsConfig) -> Result<SlotView> {
    let slots = Slots::new(&ctx.layout, config);
    let live = slots.live()?;
    let mut view = SlotView {
        live,
        blue: None,
        green: None,
        pointer: slots.pointer(),
    };
    for slot in Slot::BOTH {
        let release = slots.record(slot).ok().flatten().map(|r| r.release);
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
        serde_json::json!({
            "live": self.live,
            "link": self.pointer,
            "blue": self.blue,
            "green": self.green,
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
                let role = match (self.live == Some(slot), self.release_in(slot).is_some()) {
                    (true, _) => "live (the front connects here)",
                    (false, true) => "running, not live (warm standby or left by a crash)",
                    (false, false) => "idle",
                };
                format!("{:<5}  {release:<24}  {role}", slot.name())
            })
            .collect()
    }
}
