//! What every mutating command (deploy, rollback, prune, a push) does
//! before it changes anything: route signals to the interrupt flag, check
//! and create the deploy directory's skeleton, take the lock.

use std::time::Duration;

use crate::context::Ctx;
use crate::error::{Error, Kind, Result};
use crate::interrupt;
use crate::lock::{self, Lock};
use crate::store;

/// Everything a mutating command does first: route signals to the flag,
/// create the deploy directory's skeleton, take the lock, put right what
/// a crash left.
pub fn begin(ctx: &Ctx, wait: Option<Duration>) -> Result<Lock> {
    let lock = take_lock(ctx, wait)?;
    // The controller of a fleet has no releases of its own.
    if ctx.config.fleet.is_none() {
        after_a_crash(ctx)?;
    }
    Ok(lock)
}

/// [`begin`], and the state the command acts on: read once, under the
/// lock, once what a crash left is put right.
pub fn begin_reading(ctx: &Ctx, wait: Option<Duration>) -> Result<(Lock, store::Snapshot)> {
    let lock = take_lock(ctx, wait)?;
    let state = after_a_crash(ctx)?;
    Ok((lock, state))
}

fn take_lock(ctx: &Ctx, wait: Option<Duration>) -> Result<Lock> {
    interrupt::install();
    let layout = &ctx.layout;
    for dir in [
        layout.root().to_path_buf(),
        layout.releases(),
        layout.state(),
    ] {
        // Missing is not unwritable: another command may create it in
        // this very moment (a `dir.exists()` after the access would see it
        // and misreport the race).
        let writable = nix::unistd::access(
            &dir,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        );
        if writable.is_err_and(|e| e != nix::errno::Errno::ENOENT) {
            return Err(Error::usage(format!(
                "{} is not writable by {}",
                dir.display(),
                crate::whoami::user()
            ))
            .hint("run shipit as the owner of deploy_to, or fix its owner and permissions"));
        }
    }
    crate::state::check(layout)?;
    store::ensure_dirs(&ctx.layout).map_err(|e| {
        e.in_phase(Kind::Usage).hint(format!(
            "deploy_to must be a directory that {} can write; check its owner and permissions",
            crate::whoami::user()
        ))
    })?;
    let command: Vec<String> = std::env::args().collect();
    let lock = lock::acquire(&ctx.layout, wait, &command.join(" ")).map_err(|e| {
        // Refused: say what is serving, as of now (the holder may change it).
        match store::read_current(layout) {
            Ok(current) if e.kind == Kind::LockBusy => e.live(live_while_busy(layout, &current)),
            _ => e,
        }
    })?;
    Ok(lock)
}

/// What a command killed mid-way (SIGKILL, OOM, power cut) left, put right
/// under the lock before anything else happens: `current` follows the
/// slot the front reaches, and a release whose activation was cut short
/// before it proved itself is marked failed, so it is never a rollback
/// target and prune removes it first. Its slot, if it was started, is
/// stopped by the next deploy or rollback before the slot is reused.
/// Returns the state as it is then.
fn after_a_crash(ctx: &Ctx) -> Result<store::Snapshot> {
    crate::activate::slots::reconcile(ctx)?;
    let layout = &ctx.layout;
    let mut state = store::snapshot(layout)?;
    let current = state.current.id().cloned();
    for release in &mut state.listing.releases {
        if !release.interrupted() || current.as_ref() == Some(&release.id) {
            continue;
        }
        let why = "interrupted: shipit was stopped while making it live, before it passed its \
                   gate";
        ctx.ui.step(
            "Marking",
            format!(
                "{} failed ({why})",
                crate::layout::Layout::display(&release.id)
            ),
        );
        store::set_status(layout, &release.id, store::Status::Failed, Some(why.into()))?;
        if let Some(meta) = &mut release.meta {
            meta.status = store::Status::Failed;
            meta.failure = Some(why.into());
        }
    }
    Ok(state)
}

/// What is live while another command holds the lock. A release that is
/// current but not yet marked live (`ready`, or `rolled-back` for a
/// rollback's target) was put there by that command, which has not
/// finished checking it; one marked `failed` was left live failing.
fn live_while_busy(layout: &crate::layout::Layout, current: &store::Current) -> String {
    let status = current.id().and_then(|id| {
        store::read_metadata(layout, id)
            .ok()
            .flatten()
            .map(|m| m.status)
    });
    match status {
        Some(store::Status::Ready | store::Status::RolledBack) => format!(
            "{} (put live by the running command, which has not finished checking it)",
            current.describe()
        ),
        Some(store::Status::Failed) => format!("{} (failed, but left live)", current.describe()),
        _ => current.describe(),
    }
}
