//! Activation: making a published release the one users reach.
//!
//! Deploy and rollback differ in where the release comes from (a fresh
//! build, or one already under `releases/`) but not in how it goes live, so
//! both call the two entry points here, [`deploy`] and [`rollback`], and
//! this module picks the strategy from the config:
//! - [`reload`]: swap `current`, run the reload hook, gate on health, and
//!   swap back when the gate fails. Users meet the new release during the
//!   gate.
//! - [`slots`]: start the release in the idle slot, gate it on its own
//!   socket, and only then move the front's link to it. Users never meet a
//!   release that failed its gate.
//!
//! Either way `current` is moved only by [`crate::swap`], and the outcome is
//! one whole release live (or, after a failed first deploy, none).
// An activation fails at most once per run: a large `Err` costs nothing.
#![allow(clippy::result_large_err)]

pub mod live;
pub mod reload;
pub mod slots;
pub mod stale;

pub use live::{Failed, Live, hook_env};

use crate::context::Ctx;
use crate::error::Result;
use crate::layout::{Layout, ReleaseId};
use crate::procs;

/// Deploy: make the freshly published `live.id` live. On failure, what was
/// live before is live again (unless `no_rollback` left the new one live),
/// and the error's kind says which.
pub fn deploy(ctx: &Ctx, live: &Live, no_rollback: bool) -> Result<Activated, Failed> {
    // Durably, before anything moves: if shipit dies from here on, the next
    // command knows this release began to go live and never proved itself.
    if let Err(e) = crate::store::mark_activation_started(&ctx.layout, live.id) {
        let was = live.previous.map_or("nothing".into(), Layout::display);
        return Err(Failed {
            error: e
                .context(format!(
                    "could not record that {} is going live, so it was not",
                    Layout::display(live.id)
                ))
                .in_phase(crate::error::Kind::BeforeSwap)
                .live(format!("{was} (unchanged)")),
            live: live.previous.cloned(),
            refused: false,
        });
    }
    crate::crashpoint::hit("activation-started");
    match &ctx.config.slots {
        Some(slots) => self::slots::deploy(ctx, slots, live),
        None => reload::deploy(ctx, live, no_rollback),
    }?;
    Ok(Activated::after(ctx, live.id))
}

/// Rollback: make the existing release `live.id` live again (no rebuild).
/// `live.previous` is what is live now.
pub fn rollback(ctx: &Ctx, live: &Live) -> Result<Activated, Failed> {
    match &ctx.config.slots {
        Some(slots) => self::slots::rollback(ctx, slots, live),
        None => reload::rollback(ctx, live),
    }?;
    Ok(Activated::after(ctx, live.id))
}

/// What a successful activation leaves running: one look through `/proc`
/// once it is over (the gate passed, an old slot retired), taken on a
/// thread of its own while the caller records the outcome (writes made
/// durable: mostly waiting on the disk). Processes still in a release
/// other than the live one (or a warm standby slot's) are named when it
/// is read ([`Activated::running`]); a deploy's prune decides from the
/// same look instead of taking another (each costs a readlink of every
/// process's cwd and exe).
pub struct Activated {
    look: Option<std::thread::JoinHandle<procs::Usage>>,
    live: ReleaseId,
    /// A standby slot runs its release on purpose.
    expected: Vec<ReleaseId>,
}

impl Activated {
    fn after(ctx: &Ctx, live: &ReleaseId) -> Activated {
        let layout = ctx.layout.clone();
        let look = std::thread::Builder::new()
            .name("look-through-proc".into())
            .spawn(move || procs::scan(&layout))
            .ok();
        let expected = match ctx.config.slots {
            Some(_) => self::slots::state::recorded_releases(&ctx.layout).unwrap_or_default(),
            None => Vec::new(),
        };
        Activated {
            look,
            live: live.clone(),
            expected,
        }
    }

    /// The look through `/proc` taken when the activation was over, once
    /// it is done; processes still running from another release are named
    /// now.
    pub fn running(mut self, ctx: &Ctx) -> procs::Usage {
        let running = self
            .look
            .take()
            .and_then(|look| look.join().ok())
            .unwrap_or_else(|| procs::scan(&ctx.layout));
        stale::warn_stale_processes(ctx, &running, &self.live, &self.expected);
        running
    }
}
