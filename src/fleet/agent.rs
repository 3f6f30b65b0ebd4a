//! The host side of a fleet rollout: `shipit fleet-agent ...`, run on each
//! host by the controller over ssh, with the config the controller
//! installed (`<deploy_to>/.shipit/fleet.toml`, no `[fleet]` in it).
//!
//! Each action is a piece of the single-host sequence, with its guarantees:
//! it takes the host's lock, publishes with one no-replace rename, and goes
//! live through the same activation as `shipit deploy` and `shipit
//! rollback` ([`crate::deploy::go_live`], [`crate::rollback::run`]), so a
//! host's gate, automatic rollback, statuses, pruning and history are the
//! ones it would have alone. Every action prints one framed
//! [`protocol::Reply`] on stdout (what this host runs now, and what the
//! action did or the kind and message of its failure) and exits with the
//! code of its outcome; progress and errors go to stderr, which the
//! controller shows prefixed with the host. The agent holding the fleet
//! lock does the same for each [`protocol::Request`] the controller sends
//! on its stdin ([`serve`]), so a rollout needs one session per host.

use std::fs;
use std::io::{Read, Seek, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::fcntl::{Flock, FlockArg};

use crate::cli::{FleetAgentAction, FleetAgentArgs};
use crate::context::Ctx;
use crate::deploy::{self, Published};
use crate::error::{Error, IoContext, Kind, Result};
use crate::fleet::protocol::{self, Done, Failure, HostState, PIN_VAR, Reply, Request};
use crate::history::{self, Event};
use crate::layout::{Layout, ReleaseId};
use crate::lock::Holder;
use crate::release::Staging;
use crate::store::{self, Current, Metadata, Status};
use crate::ui;
use crate::views::ReleaseRow;

pub fn run(ctx: &Ctx, args: &FleetAgentArgs) -> Result<()> {
    store::delete_later();
    let result = match &args.action {
        FleetAgentAction::State { probe } => state(ctx, *probe),
        FleetAgentAction::Receive {
            id,
            revision,
            revision_time,
            branch,
            source,
            deployed_by,
            build_ms,
            keep_special_files,
        } => ReleaseId::parse(id).and_then(|id| {
            let request = Request::Receive {
                id,
                source: source.clone(),
                deployed_by: deployed_by.clone(),
                build_ms: *build_ms,
                revision: revision.clone(),
                revision_time: *revision_time,
                branch: branch.clone(),
                keep_special_files: *keep_special_files,
                bytes: 0,
            };
            perform(ctx, request, &mut std::io::stdin().lock())
        }),
        FleetAgentAction::Activate { id, migrate } => ReleaseId::parse(id).and_then(|id| {
            let request = Request::Activate {
                id,
                migrate: *migrate,
            };
            perform(ctx, request, &mut std::io::empty())
        }),
        FleetAgentAction::Migrate { id, host } => migrate(ctx, &ReleaseId::parse(id)?, host),
        FleetAgentAction::Switch { to, wait_ms, force } => {
            let request = Request::Switch {
                to: to.clone(),
                wait_ms: *wait_ms,
                force: *force,
            };
            perform(ctx, request, &mut std::io::empty())
        }
        FleetAgentAction::Discard { id } => ReleaseId::parse(id)
            .and_then(|id| perform(ctx, Request::Discard { id }, &mut std::io::empty())),
        FleetAgentAction::Recorded { id } => ReleaseId::parse(id)
            .and_then(|id| perform(ctx, Request::Recorded { id }, &mut std::io::empty())),
        FleetAgentAction::Lock {
            holder,
            wait_ms,
            state: with_state,
        } => {
            return hold(ctx, holder, Duration::from_millis(*wait_ms), *with_state);
        }
    };
    let reply = answer(ctx, &result);
    let _ = ui::out(&protocol::frame(&reply));
    after_answer(ctx, &result);
    result.map(|_| ())
}

/// What waits until the controller has its answer: deleting the releases
/// a request pruned (moved into the trash, see [`store::delete_later`];
/// at `batch = 1` the next host is switched meanwhile), then measuring
/// again what the releases left share on disk. The trash is this
/// process's own: deleting it needs no lock. What cannot be deleted now
/// stays trash, which the next command on this host clears.
struct Tidying {
    later: Vec<std::path::PathBuf>,
    /// What the request pruned, to measure again once deleted.
    removed: Vec<ReleaseId>,
}

impl Tidying {
    /// What the request just answered left to do, if anything.
    fn after(result: &Result<Done>) -> Option<Tidying> {
        let later = store::take_later();
        if later.is_empty() {
            return None;
        }
        let removed = match result {
            Ok(Done::Activated { removed, .. }) => removed.clone(),
            _ => Vec::new(),
        };
        Some(Tidying { later, removed })
    }

    /// Delete; what was pruned, to [`remeasure`] once deleted.
    fn delete(self, ctx: &Ctx) -> Vec<ReleaseId> {
        crate::crashpoint::hit("fleet-agent:before-deleting-pruned");
        for (path, e) in store::delete_trash(&self.later) {
            ctx.ui.warn(format!(
                "could not delete {} yet ({e}); the next command on this host deletes it",
                path.display()
            ));
        }
        self.removed
    }
}

/// Measure again what the releases share on disk once `removed` are
/// deleted, under the host's deploy lock; skipped if another command holds
/// it (`shipit releases` keeps the older figure until the next deploy
/// here).
fn remeasure(ctx: &Ctx, removed: &[ReleaseId]) {
    if removed.is_empty() {
        return;
    }
    if let Ok(_lock) = crate::lock::acquire(
        &ctx.layout,
        None,
        "shipit fleet-agent (measuring the releases)",
    ) {
        crate::prune::remeasure(ctx, removed);
    }
}

/// [`Tidying`] once the answer is out, in this process.
fn after_answer(ctx: &Ctx, result: &Result<Done>) {
    if let Some(tidying) = Tidying::after(result) {
        let removed = tidying.delete(ctx);
        remeasure(ctx, &removed);
    }
}

/// What this host runs now, and what an action did or why it failed.
fn answer(ctx: &Ctx, result: &Result<Done>) -> Reply {
    let live = store::read_current(&ctx.layout)
        .ok()
        .and_then(|c| c.id().cloned());
    Reply {
        live,
        result: match result {
            Ok(done) => Ok(done.clone()),
            Err(e) => Err(Failure {
                kind: e.kind,
                // What failed, and the first reason why.
                message: match e.causes.first() {
                    Some(cause) => format!("{}: {cause}", e.message),
                    None => e.message.clone(),
                },
            }),
        },
    }
}

/// Do what the controller asks, in a process of its own or in the one
/// that holds the fleet lock ([`serve`]); `input` is what follows the
/// request (the release's tar for a receive).
fn perform(ctx: &Ctx, request: Request, input: &mut dyn Read) -> Result<Done> {
    match request {
        Request::Receive {
            id,
            source,
            deployed_by,
            build_ms,
            revision,
            revision_time,
            branch,
            keep_special_files,
            bytes: _,
        } => {
            let meta = Metadata {
                id,
                status: Status::Ready,
                revision,
                revision_time,
                branch,
                source,
                deployed_by,
                created_at: Utc::now(),
                build_duration_ms: build_ms,
                previous: None,
                failure: None,
                proven: Some(false),
                activation_started: None,
                reuse: Default::default(),
                disk: None,
            };
            receive(ctx, meta, keep_special_files, input)
        }
        Request::Activate { id, migrate } => activate(ctx, &id, migrate)?.record(ctx),
        Request::Switch { to, wait_ms, force } => {
            let wait = (wait_ms > 0).then(|| Duration::from_millis(wait_ms));
            switch(ctx, &to, wait, force)
        }
        Request::Discard { id } => discard(ctx, &id),
        Request::Recorded { id } => recorded(ctx, &id),
    }
}

/// Answer the controller's requests on stdin, one at a time, until it
/// closes stdin (see [`Request`]): the process holding the fleet lock
/// receives the release and makes the switches, so they cost no new
/// session and no new process here. Each is done and reported as if it
/// had a process of its own: `env_file` read again, its error on stderr,
/// the framed answer on stdout. A receive's tar follows its request line,
/// `bytes` long, and is read to its end whatever became of the receive, so
/// the next request is read from where it starts. Lines that are not
/// requests are ignored; a request line that cannot be read ends the
/// serving (where its body would end is unknown).
///
/// SIGINT, SIGTERM and SIGHUP raise the interrupt flag from here on, as
/// the requests' own steps would set them to: one that comes during a
/// request is handled as that command handles it (an activation finishes
/// or rolls back), and the holder ends after answering; one that comes
/// while it waits ends it at once. Either way the fleet lock goes with it,
/// as it did when a signal killed a holder that served nothing.
fn serve(ctx: &Ctx, fleet_lock: Flock<fs::File>) {
    use std::io::BufRead;
    use std::os::fd::AsFd;
    crate::interrupt::install();
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return;
    };
    let mut input = std::io::BufReader::new(fs::File::from(fd));
    std::thread::scope(|scope| {
        // What the last request left to delete, on a thread of its own
        // while this one waits for the next request; done (and measured
        // again) before that request is performed.
        let mut tidying: Option<std::thread::ScopedJoinHandle<Vec<ReleaseId>>> = None;
        let finish = |t: std::thread::ScopedJoinHandle<Vec<ReleaseId>>| match t.join() {
            Ok(removed) => remeasure(ctx, &removed),
            Err(_) => ctx
                .ui
                .warn("deleting the pruned releases failed; the next command here deletes them"),
        };
        // The activation last answered as live, recorded on a thread of
        // its own meanwhile (at `batch = 1` the controller switches the
        // next host); done before the next request is performed, and its
        // outcome is the answer to `Recorded`.
        let mut recording: Option<Recording> = None;
        while wait_for_input(&input) {
            let mut line = String::new();
            match input.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if !line.starts_with(protocol::MARK) {
                continue;
            }
            if let Some(t) = tidying.take() {
                finish(t);
            }
            let request = protocol::unframe::<Request>(&line)
                .map_err(|unframed| unframed.to_error("the controller's request", 0));
            let ended = request.is_err();
            let bytes = request.as_ref().map_or(0, Request::body_len);
            let mut body = (&mut input).take(bytes);
            // Recorded before this request's env_file is read again (the
            // recording redacts its secrets).
            let recorded = recording.take().map(|r| r.join(ctx));
            crate::hookenv::refresh(&ctx.config);
            let result =
                match (request, recorded) {
                    (
                        Ok(Request::Recorded { id }),
                        Some(Ok(Done::Activated { release, removed })),
                    ) if release == id => Ok(Done::Activated { release, removed }),
                    (Ok(Request::Recorded { id }), Some(Err(e))) => Err(e.context(format!(
                        "{} is live here, but was not recorded",
                        Layout::display(&id)
                    ))),
                    (request, recorded) => {
                        // Not asked for: what it recorded or failed to is said
                        // here, and its pruned releases are deleted first.
                        if let Some(recorded) = recorded {
                            if let Err(e) = &recorded {
                                ctx.ui.error(e);
                            }
                            after_answer(ctx, &recorded);
                        }
                        request.and_then(|request| match request {
                            Request::Activate { id, migrate } => activate(ctx, &id, migrate)
                                .and_then(|activation| {
                                    Recording::start(ctx, scope, activation, &mut recording)
                                }),
                            request => perform(ctx, request, &mut body),
                        })
                    }
                };
            let _ = std::io::copy(&mut body, &mut std::io::sink());
            if let Err(e) = &result {
                ctx.ui.error(e);
            }
            let _ = ui::out(&protocol::frame(&answer(ctx, &result)));
            if let Some(r) = recording.as_mut() {
                r.go(ctx);
            }
            // An activation being recorded prunes on its own thread: what
            // it leaves to delete is taken once it is done.
            if recording.is_none()
                && let Some(t) = Tidying::after(&result)
            {
                tidying = Some(scope.spawn(move || t.delete(ctx)));
            }
            if ended || crate::interrupt::requested() {
                break;
            }
        }
        // The controller let go (or is gone). The activation it was
        // answered is recorded first, under this host's fleet lock (the
        // next rollout would find the deploy lock taken). Then the fleet
        // lock goes, at once. A deletion still running finishes after it,
        // holding no lock (the next rollout may begin meanwhile), and
        // `shipit releases` keeps its older figures on disk until a later
        // prune here; one already done is measured first.
        if let Some(r) = recording.take() {
            let recorded = r.join(ctx);
            if let Err(e) = &recorded {
                ctx.ui.error(e);
            }
            if let Some(t) = Tidying::after(&recorded) {
                tidying = Some(scope.spawn(move || t.delete(ctx)));
            }
        }
        match tidying.take() {
            Some(t) if t.is_finished() => {
                finish(t);
                drop(fleet_lock);
            }
            Some(t) => {
                drop(fleet_lock);
                if t.join().is_err() {
                    ctx.ui.warn(
                        "deleting the pruned releases failed; the next command here deletes them",
                    );
                }
            }
            None => drop(fleet_lock),
        }
    });
}

/// An activation answered as live ([`Done::Live`]), recorded on a thread
/// of its own ([`Activation::record`]) once the answer is out.
struct Recording<'scope> {
    thread: std::thread::ScopedJoinHandle<'scope, Option<Result<Done>>>,
    /// Handed to the thread by [`Recording::go`].
    waiting: Option<(std::sync::mpsc::Sender<Activation>, Activation)>,
    /// Recorded here: the thread could not take it.
    recorded: Option<Result<Done>>,
}

impl<'scope> Recording<'scope> {
    /// A thread of `scope` to record `activation`, kept in `recording`;
    /// what to answer now. A release that was live already, or a thread
    /// that cannot be started, is recorded here, and answered as such.
    fn start<'env>(
        ctx: &'env Ctx,
        scope: &'scope std::thread::Scope<'scope, 'env>,
        activation: Activation,
        recording: &mut Option<Recording<'scope>>,
    ) -> Result<Done> {
        if matches!(activation, Activation::Already(_)) {
            return activation.record(ctx);
        }
        let (hand, take) = std::sync::mpsc::channel::<Activation>();
        let spawned = std::thread::Builder::new()
            .name("recording".into())
            .spawn_scoped(scope, move || {
                let activation = take.recv().ok()?;
                crate::crashpoint::hit("fleet-agent:before-recording");
                Some(activation.record(ctx))
            });
        match spawned {
            Ok(thread) => {
                let release = activation.release().clone();
                *recording = Some(Recording {
                    thread,
                    waiting: Some((hand, activation)),
                    recorded: None,
                });
                Ok(Done::Live { release })
            }
            Err(_) => activation.record(ctx),
        }
    }

    /// The answer is out: record now.
    fn go(&mut self, ctx: &Ctx) {
        if let Some((hand, activation)) = self.waiting.take()
            && let Err(std::sync::mpsc::SendError(activation)) = hand.send(activation)
        {
            self.recorded = Some(activation.record(ctx));
        }
    }

    /// What it recorded, once done.
    fn join(mut self, ctx: &Ctx) -> Result<Done> {
        self.go(ctx);
        match (self.thread.join(), self.recorded) {
            (Ok(Some(done)), _) | (_, Some(done)) => done,
            _ => Err(Error::internal(
                "recording the activation failed: the release is live, but may not be marked \
                 proven, pruned or in the history",
            )),
        }
    }
}

/// Wait until `input` has something to read (or its end), looking for a
/// signal at least every 100 ms; `false` once one has arrived.
fn wait_for_input(input: &std::io::BufReader<fs::File>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    while input.buffer().is_empty() && !crate::interrupt::requested() {
        let mut fds = [PollFd::new(input.get_ref().as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            // Readable, at its end, or poll itself failed: the read says.
            Ok(_) | Err(_) => break,
        }
    }
    !crate::interrupt::requested()
}

/// The fleet lock of this host: flock(2) on `.shipit/fleet.lock`, apart
/// from the host's deploy lock (which each step of the rollout takes and
/// releases). A controller holds it on every host, in host order, for its
/// whole rollout, through this agent: taken, said so, then held until
/// stdin closes, which happens when the controller lets go, exits, or
/// dies (the master connection ends its session, and sshd closes it). The kernel
/// releases the flock with this process, however it ends.
///
/// `with_state`: the answer is the host's state, read under the lock (a
/// rollout's reach is then one remote command per host, not two).
fn hold(ctx: &Ctx, holder: &str, wait: Duration, with_state: bool) -> Result<()> {
    let reply = |live, result| {
        let _ = ui::out(&protocol::frame(&Reply { live, result }));
    };
    let live = store::read_current(&ctx.layout)
        .ok()
        .and_then(|c| c.id().cloned());
    // This build was just used: the newest by mtime, so a rollout that
    // prunes `.shipit/bin` while this one waits for the lock keeps it.
    // (A read-only descriptor: a running executable cannot be opened for
    // writing, and futimens(2) needs none.)
    if let Ok(exe) = std::env::current_exe() {
        let _ = fs::File::open(exe).and_then(|f| f.set_modified(std::time::SystemTime::now()));
    }
    let locked = take_fleet_lock(ctx, holder, wait).and_then(|locked| {
        let done = if with_state {
            state(ctx, false)?
        } else {
            Done::Locked
        };
        Ok((locked, done))
    });
    match locked {
        Err(e) => {
            reply(
                live,
                Err(Failure {
                    kind: e.kind,
                    message: e.message.clone(),
                }),
            );
            Err(e)
        }
        Ok((locked, done)) => {
            reply(live, Ok(done));
            // Held until the controller closes our stdin (or is gone),
            // doing what it asks meanwhile.
            serve(ctx, locked);
            Ok(())
        }
    }
}

/// Who holds the fleet lock. A holder writes its name right after it took
/// the lock: a moment's wait for it (bounded) beats an anonymous refusal.
fn read_fleet_holder(file: &mut fs::File) -> Option<Holder> {
    let deadline = crate::clock::after(Duration::from_secs(1));
    loop {
        let mut text = String::new();
        let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
        let holder = serde_json::from_str::<Holder>(text.trim()).ok();
        if holder.is_some() || Instant::now() >= deadline {
            return holder;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn take_fleet_lock(ctx: &Ctx, holder: &str, wait: Duration) -> Result<Flock<fs::File>> {
    let holder: Holder = serde_json::from_str(holder)
        .map_err(|e| Error::usage("the controller sent an unreadable lock holder").cause(e))?;
    let path = ctx.layout.state().join("fleet.lock");
    let deadline = crate::clock::after(wait);
    let mut locked = loop {
        let file = crate::state::open_or_explain(
            &path,
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            "the fleet lock",
        )?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => break locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                if Instant::now() >= deadline {
                    let who = read_fleet_holder(&mut file).map_or_else(
                        || "a controller that has not said who it is".to_string(),
                        |h| h.describe(),
                    );
                    let waited = if wait.is_zero() {
                        String::new()
                    } else {
                        format!(" (waited {})", humantime::format_duration(wait))
                    };
                    return Err(Error::new(
                        Kind::LockBusy,
                        format!("another rollout holds the fleet{waited}: {who}"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err((_, errno)) => {
                return Err(Error::io(
                    "could not lock",
                    &path,
                    std::io::Error::from(errno),
                ));
            }
        }
    };
    let line = serde_json::to_string(&holder).expect("a holder serializes");
    locked
        .set_len(0)
        .and_then(|_| locked.rewind())
        .and_then(|_| locked.write_all(format!("{line}\n").as_bytes()))
        .with_path("could not write", &path)?;
    prune_binaries(ctx);
    // The config of the rollout that holds the fleet becomes the one the
    // read-only commands use (its health URL).
    let text = fs::read(&ctx.config.file).with_path("could not read", &ctx.config.file)?;
    let copy = ctx.layout.state().join("fleet.toml");
    if fs::read(&copy).ok().as_deref() != Some(&text[..]) {
        crate::fsutil::atomic_write(&copy, &text).with_path("could not write", &copy)?;
    }
    Ok(locked)
}

/// Remove the shipit builds this host no longer needs from `.shipit/bin`
/// (see [`crate::fleet::install::binaries_to_prune`]); under the fleet
/// lock, which no other controller can hold meanwhile. Best effort: a
/// binary that stays is only disk space.
fn prune_binaries(ctx: &Ctx) {
    use crate::fleet::install::{KEEP_BINARIES, binaries_to_prune};
    let dir = ctx.layout.state().join("bin");
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    let found: Vec<(String, std::time::SystemTime)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let mtime = e.metadata().ok()?.modified().ok()?;
            Some((e.file_name().to_str()?.to_string(), mtime))
        })
        .collect();
    let in_use = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.file_name()?.to_str()?.to_string()))
        .unwrap_or_default();
    for name in binaries_to_prune(&found, &in_use, KEEP_BINARIES) {
        let path = dir.join(&name);
        match fs::remove_file(&path) {
            Ok(()) => ctx
                .ui
                .step("Removed", format!("{} (an older shipit)", path.display())),
            Err(e) => ctx
                .ui
                .warn(format!("could not remove {}: {e}", path.display())),
        }
    }
}

static PINNED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Take [`PIN_VAR`] out of the environment, keeping its text for [`pin`],
/// so that no hook or other child inherits it. Called first thing in
/// `main`, before any thread exists.
pub fn take_pin_from_env() {
    let text = std::env::var_os(PIN_VAR);
    if text.is_some() {
        // SAFETY: called at the start of main, while this process has one
        // thread: nothing reads the environment meanwhile.
        unsafe { std::env::remove_var(PIN_VAR) };
    }
    // Taken out whatever it holds; text that is not UTF-8 is no config.
    let _ = PINNED.set(text.and_then(|t| t.into_string().ok()));
}

/// Write the rollout's config that the reach handed over ([`PIN_VAR`])
/// where `--config` points, before anything reads it (one remote command
/// per host). Unless the file holds exactly this text already (it is
/// named by the text's digest, so only an edit on the host makes it
/// differ), it is written whole, mode 0600 like `fleet.toml` (it may name
/// a token), and renamed into place: no reader sees half of it.
pub fn pin(path: Option<&std::path::Path>) -> Result<()> {
    let Some(text) = PINNED.get().and_then(Option::as_deref) else {
        return Ok(());
    };
    let Some(path) = path else {
        return Err(Error::usage(format!(
            "{PIN_VAR} is set but there is no --config to pin it to"
        )));
    };
    if fs::read(path).ok().as_deref() == Some(text.as_bytes()) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_path("could not create", dir)?;
    }
    crate::fsutil::atomic_write_mode(path, text.as_bytes(), Some(0o600))
        .with_path("could not write", path)
}

/// What this host has, for the controller's preflight, `releases` and
/// `status`. Read-only: no lock.
fn state(ctx: &Ctx, probe: bool) -> Result<Done> {
    let layout = &ctx.layout;
    let listing = store::list(layout)?;
    let current = store::read_current(layout)?;
    let releases: Vec<ReleaseRow> = listing
        .releases
        .iter()
        .rev()
        .map(|r| ReleaseRow::of(ctx, r, current.id() == Some(&r.id), None))
        .collect();
    let rollback_target = current
        .id()
        .and_then(|c| crate::rollback::target(&listing.releases, c));
    let health = if probe {
        let meta = current
            .id()
            .and_then(|id| store::read_metadata(layout, id).ok().flatten());
        crate::views::probe(ctx, &current, meta.as_ref())
    } else {
        None
    };
    let last_deploy = history::newest(layout, |e| e.event == crate::history::EventKind::Deploy)
        .ok()
        .flatten();
    Ok(Done::State(Box::new(HostState {
        version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: crate::whoami::host(),
        current: current.id().cloned(),
        describe: current.describe(),
        releases,
        foreign: listing.foreign,
        rollback_target,
        health,
        last_deploy,
    })))
}

/// Unpack the release arriving on stdin (a tar of the tree the controller
/// built), link the shared paths, record what it is, and publish it under
/// `releases/`. Nothing goes live.
fn receive(
    ctx: &Ctx,
    mut meta: Metadata,
    keep_special: bool,
    input: &mut dyn Read,
) -> Result<Done> {
    let layout = &ctx.layout;
    let id = meta.id.clone();
    store::require_sane_current(layout)?;
    // This host's hooks need its env_file: refuse before anything changes.
    crate::hookenv::require()?;
    let (_lock, state) = crate::mutation::begin_reading(ctx, None)?;
    let store::Snapshot { listing, current } = state;
    if let Some(warning) = listing.stray_warning(layout) {
        ctx.ui.warn(warning);
    }
    let current = store::sane(layout, current)?;
    crate::release::clear_leftovers(ctx);
    if listing.get(&id).is_some() || layout.release(&id).exists() {
        return Err(Error::usage(format!(
            "{} exists on this host already",
            Layout::display(&id)
        ))
        .live(current.describe())
        .hint("deploy again: the next rollout picks a new release id"));
    }
    crate::release::check_shared(ctx).map_err(|e| e.live(current.describe()))?;
    meta.previous = current.id().cloned();
    let received = Staging::begin(ctx, &id).and_then(|staging| {
        unpack(ctx, &meta, staging.dir(), keep_special, input)?;
        crate::release::link_shared(ctx, staging.dir())?;
        staging.publish(meta)
    });
    received.map_err(|e| e.in_phase(Kind::BeforeSwap).live(current.describe()))?;
    ctx.ui.step("Received", Layout::display(&id));
    Ok(Done::Received { release: id })
}

fn unpack(
    ctx: &Ctx,
    meta: &Metadata,
    staging: &std::path::Path,
    keep_special: bool,
    release: &mut dyn Read,
) -> Result<()> {
    crate::release::log::open_build_log(
        &ctx.layout,
        &meta.id,
        &crate::release::log::Origin {
            source: &meta.source,
            revision: meta.revision.as_deref(),
            branch: meta.branch.as_deref(),
        },
        &crate::release::log::Made::Received {
            by: &meta.deployed_by,
        },
    )?;
    // Files belong to the user shipit runs as here, whoever built them;
    // no setuid bit or device passes (see `untar`) unless the config
    // says to keep them: then GNU tar makes them.
    let filtered = if keep_special {
        untar_keeping_special_files(staging, release)?;
        Ok(crate::fleet::untar::Filtered::default())
    } else {
        crate::fleet::untar::unpack(
            release,
            staging,
            crate::fleet::untar::Permissions::of_this_process(),
        )
    };
    let filtered = filtered.map_err(|e| {
        Error::internal(format!(
            "could not unpack the release the controller sent into {}",
            staging.display()
        ))
        .cause(e)
        .hint("the transfer was cut, or the disk is full; deploy again")
    })?;
    // A name is shown whole up to 200 characters (a crafted one can be
    // megabytes long).
    let names = |paths: &[std::path::PathBuf]| {
        paths
            .iter()
            .map(|p| {
                let name = p.display().to_string();
                match name.char_indices().nth(200) {
                    Some((end, _)) => format!("{}…", &name[..end]),
                    None => name,
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !filtered.cleared.is_empty() {
        ctx.ui.warn(format!(
            "cleared the setuid/setgid bits of {} (a release never brings its own)",
            names(&filtered.cleared)
        ));
    }
    if !filtered.skipped.is_empty() {
        ctx.ui.warn(format!(
            "left out {}: devices and fifos are not unpacked",
            names(&filtered.skipped)
        ));
    }
    if !filtered.escaping.is_empty() {
        ctx.ui.warn(format!(
            "left out {}: a path that leaves the release, or is longer than 4096 bytes, is not \
             unpacked",
            names(&filtered.escaping)
        ));
    }
    Ok(())
}

/// `tar -x --no-same-owner` of the release, into `staging`: devices,
/// fifos and setuid bits as archived (`fleet.keep_special_files`).
fn untar_keeping_special_files(staging: &std::path::Path, release: &mut dyn Read) -> Result<()> {
    let mut tar = Command::new("tar")
        .args(["-x", "-f", "-", "--no-same-owner", "-C"])
        .arg(staging)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| {
            Error::internal("could not run tar")
                .cause(e)
                .hint("install tar on this host, or set fleet.keep_special_files = false")
        })?;
    // Dropped once copied: tar sees the end of its input.
    let mut input = tar.stdin.take().expect("piped");
    let copied = std::io::copy(release, &mut input);
    drop(input);
    let status = tar
        .wait()
        .map_err(|e| Error::internal("could not wait for tar").cause(e))?;
    if !status.success() {
        return Err(Error::internal(format!(
            "could not unpack the release into {} (tar exited with {status})",
            staging.display()
        ))
        .hint("the transfer was cut, or the disk is full; deploy again"));
    }
    copied.map(drop).map_err(|e| {
        Error::internal("could not read the release the controller sent")
            .cause(e)
            .hint("the transfer was cut, or the disk is full; deploy again")
    })
}

/// The metadata of release `id`, which the controller sent earlier in
/// this rollout; an error saying what is live when it never arrived.
fn received(layout: &Layout, id: &ReleaseId, current: &store::Current) -> Result<store::Metadata> {
    store::read_metadata(layout, id)?.ok_or_else(|| {
        Error::usage(format!(
            "{} was not received on this host",
            Layout::display(id)
        ))
        .live(current.describe())
        .hint("deploy again from the controller")
    })
}

/// Make a received release live: exactly what `shipit deploy` does once
/// its release is published (activation with its gate and automatic
/// rollback, statuses, prune, history).
///
/// `migrate`: what became of the rollout's migrate hook (`ran`,
/// `skipped`), kept in this host's deploy event so that a rollback here
/// warns that the database may be newer, as it would on a single host.
fn activate(ctx: &Ctx, id: &ReleaseId, migrate: Option<history::Migrate>) -> Result<Activation> {
    let started = Instant::now();
    let layout = &ctx.layout;
    let current = store::require_sane_current(layout)?;
    crate::activate::slots::preflight(ctx)?;
    let meta = received(layout, id, &current)?;
    let lock = crate::mutation::begin(ctx, None)?;
    let current = store::require_sane_current(layout)?;
    if current.id() == Some(id) {
        ctx.ui
            .step("Live", format!("{} already", Layout::display(id)));
        return Ok(Activation::Already(id.clone()));
    }
    let previous = current.id().cloned();
    let mut event = Event::new(
        crate::history::EventKind::Deploy,
        crate::history::Outcome::Ok,
    );
    event.previous = previous.clone();
    event.release = Some(id.clone());
    event.revision = meta.revision.clone();
    event.branch = meta.branch.clone();
    event.migrate = migrate;
    let published = Published {
        id: id.clone(),
        revision: meta.revision,
        branch: meta.branch,
        previous,
    };
    let switched = deploy::switch_to(ctx, published, false, event, started)?;
    Ok(Activation::Switched(Box::new(switched), lock))
}

/// A received release this host made live: already, or just now (passed
/// its gate), its outcome still to record under the deploy lock taken for
/// it ([`deploy::Switched::record`]).
enum Activation {
    Already(ReleaseId),
    Switched(Box<deploy::Switched>, crate::lock::Lock),
}

impl Activation {
    fn release(&self) -> &ReleaseId {
        match self {
            Activation::Already(id) => id,
            Activation::Switched(switched, _) => switched.release(),
        }
    }

    /// Record the outcome (statuses, prune, history); the deploy lock is
    /// let go after it. A release that could not be marked proven is an
    /// error, as [`recorded`] would read it from the disk.
    fn record(self, ctx: &Ctx) -> Result<Done> {
        match self {
            Activation::Already(release) => Ok(Done::Activated {
                release,
                removed: Vec::new(),
            }),
            Activation::Switched(switched, lock) => {
                let outcome = switched.record(ctx);
                drop(lock);
                match outcome.unproven {
                    Some(why) => Err(Error::internal(why).live(Layout::display(&outcome.release))),
                    None => Ok(Done::Activated {
                        release: outcome.release,
                        removed: outcome.removed,
                    }),
                }
            }
        }
    }
}

/// Run `hooks.migrate` in a received release, for a rollout's controller,
/// before any host is switched: the single-host migration
/// ([`deploy::run_migrate`]: the hook environment plus `SHIPIT_HOST`, the
/// [env] and env_file of this host, `hooks.migrate_timeout`, the output
/// streamed to the controller and appended to the release's build log).
/// A failure marks the release failed here, with its cause.
///
/// A migration lives no longer than its controller: stdin is the
/// controller's ssh session, and when it closes (the controller exited,
/// died, or lost the connection) the migration is stopped as on a Ctrl-C
/// (SIGTERM to its process group, SIGKILL after the grace period) and the
/// release is marked failed. A migration left running with nobody to
/// decide what comes after it would be worse: no host would be switched
/// to the release it was made for, and the next rollout could start a
/// second one beside it.
fn migrate(ctx: &Ctx, id: &ReleaseId, host: &str) -> Result<Done> {
    let layout = &ctx.layout;
    store::require_sane_current(layout)?;
    crate::hookenv::require()?;
    let _lock = crate::mutation::begin(ctx, None)?;
    let current = store::require_sane_current(layout)?;
    let meta = received(layout, id, &current)?;
    // The controller's session ends: stop the migration.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        crate::interrupt::request();
    });
    let live = crate::activate::Live {
        id,
        revision: meta.revision.as_deref(),
        branch: meta.branch.as_deref(),
        previous: current.id(),
    };
    let mut event = Event::new(
        crate::history::EventKind::Deploy,
        crate::history::Outcome::Ok,
    );
    let env = [("SHIPIT_HOST".to_string(), host.to_string())];
    if let Err(e) = deploy::run_migrate(ctx, &live, &env, &mut event) {
        let e = e.in_phase(Kind::BeforeSwap).live(current.describe());
        if let Err(mark) = store::set_status(layout, id, Status::Failed, Some(e.to_string())) {
            ctx.ui.warn(format!(
                "could not record {} as failed: {mark}",
                Layout::display(id)
            ));
        }
        return Err(e);
    }
    Ok(Done::Migrated {
        release: id.clone(),
    })
}

/// Go to an existing release (a fleet rollback, or a revert to what this
/// host ran before), through `shipit rollback`'s sequence; `none` removes
/// `current`, for a host that had nothing live before the rollout.
fn switch(ctx: &Ctx, to: &str, wait: Option<Duration>, force: bool) -> Result<Done> {
    let layout = &ctx.layout;
    if to == "none" {
        let started = Instant::now();
        store::require_sane_current(layout)?;
        let _lock = crate::mutation::begin(ctx, wait)?;
        let Current::Release(from) = store::require_sane_current(layout)? else {
            return Ok(Done::Switched {
                from: None,
                to: None,
            });
        };
        ctx.ui.step(
            "Removing",
            "current (nothing was live here before this rollout)",
        );
        crate::swap::remove_current(layout)?;
        crate::rollback::mark(ctx, &from, Status::RolledBack);
        let mut event = Event::new(
            crate::history::EventKind::Rollback,
            crate::history::Outcome::Ok,
        );
        event.previous = Some(from);
        history::record(layout, &ctx.ui, event.clone(), started, None, None);
        return Ok(Done::Switched {
            from: event.previous,
            to: None,
        });
    }
    let id = ReleaseId::parse(to)?;
    // Under the lock: an activation still running here (its controller
    // vanished) decides what is current until it ends.
    let lock = crate::mutation::begin(ctx, wait)?;
    if store::read_current(layout)?.id() == Some(&id) {
        ctx.ui
            .step("Live", format!("{} already", Layout::display(&id)));
        return Ok(Done::Switched {
            from: Some(id.clone()),
            to: Some(id),
        });
    }
    // The controller chose it: what this host ran before the rollout
    // (forced: it ran it), or the fleet's rollback target (forced only by
    // the controller's `rollback --force`).
    crate::rollback::choose(ctx, Some(&id), force)?;
    let _lock = lock;
    let outcome = crate::rollback::run(ctx, Some(&id), force)?;
    Ok(Done::Switched {
        from: outcome.from,
        to: Some(outcome.to),
    })
}

/// How long `fleet-agent recorded` waits for the deploy lock: an agent
/// whose session is gone records the activation it answered before it
/// exits. Longer than a recording should take; bounded.
const RECORDING_WAIT: Duration = Duration::from_secs(60);

/// How long `fleet-agent recorded` waits for the deploy lock when the
/// release is marked proven already (the rest of a recording takes
/// milliseconds).
const RECORDED_GRACE: Duration = Duration::from_secs(5);

/// Whether `id` is live here and recorded as proven; asked in a process of
/// its own when the session of the agent that switched is gone, and
/// answered from the disk once nothing holds the deploy lock (that agent
/// may still be recording). Marked proven, it is answered after
/// [`RECORDED_GRACE`] whatever holds the lock. Not yet, a lock still busy
/// after [`RECORDING_WAIT`] is a `LockBusy` failure: whether it will be
/// recorded is unknown.
fn recorded(ctx: &Ctx, id: &ReleaseId) -> Result<Done> {
    let layout = &ctx.layout;
    let read = || -> Result<(Current, bool)> {
        let current = store::read_current(layout)?;
        let proven = current.id() == Some(id)
            && store::read_metadata(layout, id)?.and_then(|m| m.proven) == Some(true);
        Ok((current, proven))
    };
    let command = "shipit fleet-agent recorded";
    // Marked proven, the agent that switched may still be writing the prune
    // and the history: waited for a moment, not for a lock held longer by
    // something else (a cron `shipit prune`). Then read again.
    let _lock = if read()?.1 {
        crate::lock::acquire(layout, Some(RECORDED_GRACE), command).ok()
    } else {
        Some(crate::lock::acquire(layout, Some(RECORDING_WAIT), command)?)
    };
    let (current, proven) = read()?;
    if current.id() != Some(id) {
        return Err(
            Error::internal(format!("{} is not live here", Layout::display(id)))
                .live(current.describe()),
        );
    }
    if !proven {
        return Err(Error::internal(format!(
            "{} is live here but not recorded as proven: the agent that switched to it ended \
             before recording it",
            Layout::display(id)
        ))
        .live(current.describe()));
    }
    Ok(Done::Activated {
        release: id.clone(),
        removed: Vec::new(),
    })
}

/// Remove a release that was received but never went live (a rollout that
/// stopped before any host was switched).
fn discard(ctx: &Ctx, id: &ReleaseId) -> Result<Done> {
    let layout = &ctx.layout;
    let _lock = crate::mutation::begin(ctx, None)?;
    if store::read_current(layout)?.id() == Some(id) {
        return Err(Error::usage(format!(
            "{} is live on this host; it is not removed",
            Layout::display(id)
        )));
    }
    if !layout.release(id).exists() {
        return Ok(Done::Discarded {
            removed: None,
            kept: None,
        });
    }
    // Only a release that never went live here: a failed one is kept for
    // inspection (and is never a rollback target), like a single-host
    // deploy keeps it.
    let status = store::read_metadata(layout, id)?.map(|m| m.status);
    if status != Some(Status::Ready) {
        return Ok(Done::Discarded {
            removed: None,
            kept: Some(id.clone()),
        });
    }
    store::remove_release(layout, id)?;
    ctx.ui.step("Removed", Layout::display(id));
    Ok(Done::Discarded {
        removed: Some(id.clone()),
        kept: None,
    })
}
