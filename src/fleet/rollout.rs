//! The phases of a rollout, and the revert.
//!
//! - Reach: every host is connected and given shipit and the rollout's
//!   pinned config, its fleet lock is taken (one rollout at a time, across
//!   controllers) and it is asked what it has; `fleet.concurrency` hosts
//!   at a time. When this build is on the hosts, that is one remote
//!   command per host, every lock asked at once without waiting
//!   ([`Fleet::reach_locked`]): each remote command is an sshd session and
//!   a run of the login shell's start-up, which is what a large fleet pays
//!   for. Otherwise (the first rollout, a lock taken, another platform)
//!   step by step: install, the locks in host order ([`Fleet::lock_all`],
//!   waiting if asked), the states. All before anything is built or sent:
//!   a host that cannot be reached stops the rollout with nothing changed.
//! - Prepare: every host receives and publishes the release, in parallel
//!   (asked, like the switches below, of the agent that holds the host's
//!   fleet lock, on its session: [`Fleet::ask`]);
//!   nothing goes live. A failure removes the release from the hosts that
//!   got it (a release that never went live must not become a rollback
//!   target later).
//! - Migrate: with `hooks.migrate`, the primary host runs it once, every
//!   host still on the previous release (see `fleet::migrate`).
//! - Roll: `batch` hosts at a time, in host order: drain (on the
//!   controller) → the host's own single-host activation (swap, reload or
//!   slots, gate, automatic rollback) → undrain. The first host that fails
//!   stops the rollout: it has rolled itself back, hosts not reached stay
//!   untouched, and the hosts switched in this rollout are switched back
//!   to what each ran before (drained around the switch, like any switch),
//!   unless `--no-revert`.
//!
//! Peers differ here, and this is the behaviour they get wrong: stopping at
//! the failing host but leaving the switched ones on the new version, or
//! moving on to the next batch. A fleet that runs two versions after a
//! failed rollout is the state operators least want to find.

use std::time::Duration;

use crate::config::FleetConfig;
use crate::context::Ctx;
use crate::error::{Error, Kind, Result};
use crate::fleet::install::{self, Payload};
use crate::fleet::parallel::parallel;
use crate::fleet::protocol::{self, Done, HostState};
use crate::fleet::report::{HostReport, Outcome, Recording};
use crate::fleet::ssh::{self, Held, Ssh};
use crate::hooks::{self, Hook};
use crate::layout::ReleaseId;
use crate::lock::Holder;

/// How long a switch back waits for the host's lock: an activation may
/// still run there (its controller's session was cut, by a SIGTERM to the
/// controller's whole process tree, and the host finishes it or rolls it
/// back on its own). Longer than any activation should take; bounded so a
/// host stuck forever does not hold the revert of the others.
pub const REVERT_LOCK_WAIT: Duration = Duration::from_secs(600);

/// What an agent call answered.
#[derive(Debug)]
pub struct Reply {
    pub code: i32,
    /// The host's own answer; `None` when ssh failed or no answer came.
    pub answer: Option<protocol::Reply>,
    /// What the host runs now, by its own report.
    pub live: Option<ReleaseId>,
    /// Why it failed: the host's error, or ssh's.
    pub message: String,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.code == 0 && self.answer.as_ref().is_some_and(|a| a.result.is_ok())
    }

    /// The kind of the host's failure, when it answered with one.
    pub fn kind(&self) -> Option<Kind> {
        Some(self.answer.as_ref()?.failure()?.kind)
    }

    /// The host's state, when it answered `state`.
    pub fn state(self) -> Option<HostState> {
        match self.answer?.result {
            Ok(Done::State(state)) => Some(*state),
            _ => None,
        }
    }
}

/// One controller run against the fleet: its ssh connections and what it
/// installs.
pub struct Fleet<'a> {
    pub ctx: &'a Ctx,
    pub config: &'a FleetConfig,
    pub ssh: Ssh,
    pub payload: Payload,
    /// `status` and `releases`: install nothing, write nothing.
    pub read_only: bool,
    /// The hosts that run a shipit installed there (its path), not ours.
    pub theirs: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        // One `ssh -O exit` per host, no remote command: in parallel, or
        // a large fleet waits for them one by one after its report.
        let ssh = &self.ssh;
        parallel(self.config.concurrency, &self.config.hosts, |host| {
            ssh.close(host)
        });
    }
}

impl<'a> Fleet<'a> {
    pub fn open(ctx: &'a Ctx, config: &'a FleetConfig, read_only: bool) -> Result<Fleet<'a>> {
        Ok(Fleet {
            ctx,
            config,
            ssh: Ssh::new(&config.ssh_options, config.ssh_persist)?,
            payload: Payload::prepare(&ctx.config)?,
            read_only,
            theirs: Default::default(),
        })
    }

    /// `fleet-agent <args>` on `host`.
    pub fn agent(&self, host: &str, args: &[&str], stdin: Option<&std::path::Path>) -> Reply {
        let argv = self.argv(host, args);
        self.answer(host, self.ssh.run(&self.ctx.ui, host, &argv, stdin))
    }

    /// `request` of `host`'s agent: of the one holding the host's fleet
    /// lock for this rollout, on its session, when there is one (no new
    /// session, login shell and process there); else, or when that session
    /// is gone and nothing was sent, in a session of its own.
    /// `body`: the file whose bytes follow the request (a receive's tar).
    pub fn ask(
        &self,
        held: &Held,
        host: &str,
        request: &protocol::Request,
        body: Option<&std::path::Path>,
    ) -> Reply {
        self.ask_held(held, host, request, body)
            .unwrap_or_else(|| self.ask_anew(host, request, body))
    }

    /// `request` of the agent holding `host`'s fleet lock, on its session;
    /// `None` when there is none or nothing could be sent on it.
    fn ask_held(
        &self,
        held: &Held,
        host: &str,
        request: &protocol::Request,
        body: Option<&std::path::Path>,
    ) -> Option<Reply> {
        // A poisoned session may have been left inside a request's body:
        // not asked again.
        let mut session = held.on(host)?.lock().ok()?;
        let asked = match body {
            None => session.ask(&protocol::frame(request), None, protocol::MARK),
            Some(path) => match std::fs::File::open(path) {
                Err(e) => {
                    return Some(self.answer(host, Err(Error::io("could not open", path, e))));
                }
                Ok(mut file) => {
                    let bytes = request.body_len();
                    session.ask(
                        &protocol::frame(request),
                        Some((&mut file, bytes)),
                        protocol::MARK,
                    )
                }
            },
        };
        asked.ok().map(|out| self.answer(host, Ok(out)))
    }

    /// Send `request` to the agent holding `host`'s fleet lock, its answer
    /// read later by [`Fleet::answer_held`] (before anything else is asked
    /// on that session); `false` when there is no such session or nothing
    /// could be sent on it.
    fn send_held(&self, held: &Held, host: &str, request: &protocol::Request) -> bool {
        let Some(Ok(mut session)) = held.on(host).map(|s| s.lock()) else {
            return false;
        };
        session.send(&protocol::frame(request)).is_ok()
    }

    /// The answer to what [`Fleet::send_held`] sent to `host`.
    fn answer_held(&self, held: &Held, host: &str) -> Option<Reply> {
        let mut session = held.on(host)?.lock().ok()?;
        let out = session.answer(
            protocol::MARK,
            Some(crate::clock::after(ssh::RECORDED_ANSWER_WAIT)),
        );
        Some(self.answer(host, Ok(out)))
    }

    /// `request` of a `fleet-agent` in a session of its own on `host`.
    fn ask_anew(
        &self,
        host: &str,
        request: &protocol::Request,
        body: Option<&std::path::Path>,
    ) -> Reply {
        let args = request.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.agent(host, &args, body)
    }

    /// `fleet-agent <args>` on `host`, its stdin kept open until it
    /// answered or this controller is interrupted: the agent learns from
    /// its end that this controller is gone or stopping (the migrate hook
    /// is stopped then, as a single host stops it).
    pub fn agent_attached(&self, host: &str, args: &[&str]) -> Reply {
        let argv = self.argv(host, args);
        let held = self
            .ssh
            .hold_until_interrupted(&self.ctx.ui, host, &argv, protocol::MARK);
        // The answer is in; the session is let go (the agent exits).
        self.answer(host, held.map(|(out, _session)| out))
    }

    fn argv(&self, host: &str, args: &[&str]) -> Vec<String> {
        let mut argv = if self.read_only {
            self.payload.read_only_agent()
        } else {
            self.agent_argv(host)
        };
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// What a remote agent command answered.
    fn answer(&self, host: &str, ran: Result<ssh::Output>) -> Reply {
        match ran {
            Err(e) => Reply {
                code: ssh::SSH_FAILED,
                answer: None,
                live: None,
                message: e.to_string(),
            },
            Ok(out) if install::said(&out.stdout, install::ABSENT).is_some() => Reply {
                code: 1,
                answer: None,
                live: None,
                message: format!(
                    "no shipit agent of this build is installed there ({} with the config of a \
                     rollout); read-only commands install nothing: the next deploy or rollback \
                     from this controller installs it",
                    self.payload.name
                ),
            },
            Ok(out) => match protocol::unframe::<protocol::Reply>(&out.stdout) {
                Ok(answer) => Reply {
                    code: out.code,
                    live: answer.live.clone(),
                    message: match answer.failure() {
                        Some(f) => f.message.clone(),
                        None => install::last_words(&out),
                    },
                    answer: Some(answer),
                },
                Err(unframed) => {
                    let message = match &unframed {
                        // Cut short (killed, ssh dropped): what it said last.
                        protocol::Unframed::Missing { stray } if out.code != 0 => {
                            let mut m = format!(
                                "the session ended (status {}) before the host answered; \
                                 the last it said: {}",
                                out.code,
                                install::last_words(&out).trim()
                            );
                            if !stray.is_empty() {
                                m.push_str(&format!(
                                    " (it printed on stdout: {})",
                                    protocol::quote_stray(stray)
                                ));
                            }
                            m
                        }
                        _ => unframed.to_error(host, out.code).to_string(),
                    };
                    Reply {
                        code: if out.code == 0 { 1 } else { out.code },
                        answer: None,
                        live: None,
                        message,
                    }
                }
            },
        }
    }

    /// The agent's argv on `host`: ours, or the shipit installed there.
    fn agent_argv(&self, host: &str) -> Vec<String> {
        let theirs = self.theirs.lock().expect("not poisoned");
        match theirs.get(host) {
            Some(path) => self.payload.agent_at(path),
            None => self.payload.agent(),
        }
    }

    /// Connect, install (unless read-only), and ask for the state of every
    /// host, in parallel.
    pub fn reach(&self, probe: bool) -> Vec<Result<HostState>> {
        parallel(self.config.concurrency, &self.config.hosts, |host| {
            self.connect(host)?;
            self.state(host, probe)
        })
    }

    /// Connect to `host`; for a rollout, install the agent and the config.
    pub fn connect(&self, host: &str) -> Result<()> {
        self.ssh.connect(host)?;
        self.install(host)
    }

    /// For a rollout, install the agent and the config on `host`.
    pub fn install(&self, host: &str) -> Result<()> {
        if !self.read_only
            && let install::Installed::Host(path) =
                install::ensure(&self.ssh, &self.ctx.ui, host, &self.payload)?
        {
            self.theirs
                .lock()
                .expect("not poisoned")
                .insert(host.to_string(), path);
        }
        Ok(())
    }

    /// A rollout's reach when everything is in place, in one remote
    /// command per host (master connections up): install the pinned
    /// config, take the fleet lock without waiting, and answer the state
    /// ([`Payload::reach`]). The hosts are asked `concurrency` at a time,
    /// all locks held at once, so no order is needed: nobody waits.
    ///
    /// `None`, with every lock it took let go, when any host needs more
    /// (an upload, another platform, a shipit of its own), refuses (the
    /// lock is taken, something failed) or does not answer: the caller
    /// then takes the longer path ([`Fleet::install`], [`Fleet::lock_all`]
    /// in host order, [`Fleet::state`]), which does and says the same as
    /// before, waiting for the locks in order when asked to.
    pub fn reach_locked(&self, command: &str) -> Option<(Held, Vec<HostState>)> {
        let holder = serde_json::to_string(&Holder::me(command)).expect("a holder serializes");
        let remote = self.payload.reach(&[
            "lock".to_string(),
            format!("--holder={holder}"),
            "--wait-ms=0".into(),
            "--state".into(),
        ])?;
        let ui = &self.ctx.ui;
        // Sessions of the master connections start no process: asked
        // from `concurrency` threads, each host's as soon as a thread is
        // free.
        let mut answers: Vec<Option<ssh::Answer>> = parallel(
            self.config.concurrency,
            &self.config.hosts,
            |host| match self.ssh.start_on_master(host, &remote) {
                Ok(Some(started)) => Some(ssh::await_answer(ui, host, started, protocol::MARK)),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            },
        );
        // Where a master cannot be asked, an ssh process is started here:
        // ssh dies with the thread that started it, and this one keeps the
        // sessions. Their answers are awaited in parallel.
        let missing: Vec<usize> = (0..answers.len())
            .filter(|&i| answers[i].is_none())
            .collect();
        for chunk in missing.chunks(self.config.concurrency.max(1)) {
            let started: Vec<ssh::Started> = chunk
                .iter()
                .map(|&i| self.ssh.start(&self.config.hosts[i], &remote))
                .collect::<Result<_>>()
                .ok()?;
            let hosts = &self.config.hosts;
            let awaited: Vec<_> = std::thread::scope(|scope| {
                let waiting: Vec<_> = chunk
                    .iter()
                    .zip(started)
                    .map(|(&i, started)| {
                        scope.spawn(move || {
                            ssh::await_answer(ui, &hosts[i], started, protocol::MARK)
                        })
                    })
                    .collect();
                waiting.into_iter().map(|w| w.join()).collect()
            });
            for (&i, answer) in chunk.iter().zip(awaited) {
                answers[i] =
                    Some(answer.unwrap_or_else(|_| {
                        Err(Error::internal("the wait for an answer panicked"))
                    }));
            }
        }
        let mut held = Held::default();
        let mut states = Vec::new();
        let mut complete = true;
        for (host, answer) in self.config.hosts.iter().zip(answers) {
            match answer {
                Some(Ok((out, Some(session)))) => {
                    held.push(host, session);
                    match protocol::unframe::<protocol::Reply>(&out.stdout) {
                        Ok(protocol::Reply {
                            result: Ok(Done::State(state)),
                            ..
                        }) => states.push(*state),
                        _ => complete = false,
                    }
                }
                _ => complete = false,
            }
        }
        if !complete {
            return None;
        }
        Some((held, states))
    }

    /// What `host` has.
    pub fn state(&self, host: &str, probe: bool) -> Result<HostState> {
        let args: &[&str] = if probe {
            &["state", "--probe"]
        } else {
            &["state"]
        };
        let reply = self.agent(host, args, None);
        if !reply.ok() {
            return Err(
                Error::internal(format!("could not read the state of {host}")).cause(reply.message),
            );
        }
        reply
            .state()
            .ok_or_else(|| Error::internal(format!("{host} answered `state` with something else")))
    }

    /// Take the fleet lock of every host, in host order (two controllers
    /// with the same hosts never hold part of the fleet each), each within
    /// what is left of `wait`. Held until the sessions are dropped, or the
    /// controller dies (its session with it, the host's agent sees its
    /// stdin close, the kernel releases the flock). Refused: every lock
    /// taken so far is let go, and the error names the holder.
    pub fn lock_all(&self, wait: Option<Duration>, command: &str) -> Result<Held> {
        let holder = serde_json::to_string(&Holder::me(command)).expect("a holder serializes");
        let deadline = wait.map(crate::clock::after);
        let mut held = Held::default();
        for host in &self.config.hosts {
            let left = deadline
                .map(|d| d.saturating_duration_since(std::time::Instant::now()))
                .unwrap_or_default();
            let mut argv = self.agent_argv(host);
            argv.extend([
                "lock".to_string(),
                format!("--holder={holder}"),
                format!("--wait-ms={}", left.as_millis()),
            ]);
            let (out, session) = self.ssh.hold(&self.ctx.ui, host, &argv, protocol::MARK)?;
            let refused = |e: Error| {
                e.context(format!("could not lock the fleet on {host}"))
                    .in_phase(Kind::BeforeSwap)
                    .live("unchanged on every host: nothing was sent or switched")
            };
            match protocol::unframe::<protocol::Reply>(&out.stdout) {
                Ok(protocol::Reply { result: Ok(_), .. }) if session.is_some() => {
                    held.push(host, session.expect("checked"));
                }
                Ok(protocol::Reply { result: Err(f), .. }) => {
                    let e = Error::new(f.kind, f.message);
                    return Err(if f.kind == Kind::LockBusy {
                        e.live(
                            "unchanged on every host by this command: nothing was sent or switched",
                        )
                        .hint("wait for that rollout to end, or queue behind it with --wait")
                    } else {
                        refused(e)
                    });
                }
                Ok(_) => {
                    return Err(refused(Error::internal(install::last_words(&out))));
                }
                Err(unframed) => return Err(refused(unframed.to_error(host, out.code))),
            }
        }
        Ok(held)
    }

    /// After a failed switch: what does `host` run now? Its own report when
    /// it gave one; when the connection broke instead, ask again; when that
    /// fails too, it is unknown (and the host is not put back in rotation).
    pub fn learn_live(&self, host: &mut HostReport, reply: &Reply) {
        // The host's own rollback (or switch back) swapped, but what it
        // swapped to did not prove healthy.
        if matches!(reply.kind(), Some(Kind::RollbackFailed | Kind::LeftLive)) {
            host.unhealthy = true;
        }
        if reply.answer.is_some() {
            host.live = reply.live.clone();
            host.unknown = false;
            return;
        }
        let again = self.agent(&host.host, &["state"], None);
        let message = again.message.clone();
        match again.state() {
            Some(state) => {
                host.live = state.current;
                host.unknown = false;
            }
            None => {
                host.unknown = true;
                self.ctx.ui.warn(format!(
                    "lost contact with {}: what it runs now is unknown ({})",
                    host.host,
                    message.replace('\n', "; ")
                ));
            }
        }
    }

    /// Run the drain or undrain hook for `host` on the controller.
    pub fn run_hook(
        &self,
        kind: hooks::Kind,
        command: Option<&String>,
        host: &HostReport,
        target: Option<&ReleaseId>,
    ) -> Result<()> {
        let Some(command) = command else {
            return Ok(());
        };
        let verb = if kind == hooks::Kind::Drain {
            "Draining"
        } else {
            "Undraining"
        };
        self.ctx.ui.step(verb, &host.host);
        let env = vec![
            ("SHIPIT_HOST".to_string(), host.host.clone()),
            (
                "SHIPIT_RELEASE".to_string(),
                target.map(|t| t.to_string()).unwrap_or_default(),
            ),
            (
                "SHIPIT_PREVIOUS_RELEASE".to_string(),
                host.before
                    .as_ref()
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            ),
            (
                "SHIPIT_DEPLOY_TO".to_string(),
                self.ctx.config.deploy_to.display().to_string(),
            ),
        ];
        let cwd = self
            .ctx
            .config
            .file
            .parent()
            .unwrap_or(std::path::Path::new("/"))
            .to_path_buf();
        let key = format!("fleet.drain_timeout ({})", kind.name());
        let hook = Hook {
            kind,
            command,
            cwd: &cwd,
            env: &env,
            timeout: self.config.drain_timeout,
            timeout_key: &key,
        };
        hooks::run(&hook, &self.ctx.ui, None)
    }
}

/// What phase 2 does to each host.
#[derive(Clone, Debug)]
pub enum Switch {
    /// Activate the received release (a deploy); what became of its
    /// migrate hook (`ran`, `skipped`), for each host's history.
    Activate(ReleaseId, Option<crate::history::Migrate>),
    /// Go to an existing release (a fleet rollback); `true`: forced
    /// (`rollback --force`).
    To(ReleaseId, bool),
}

impl Switch {
    fn target(&self) -> &ReleaseId {
        match self {
            Switch::Activate(id, _) | Switch::To(id, _) => id,
        }
    }
}

/// Phase 2: switch the hosts (`hosts[i].before` filled in, outcome
/// `Untouched`), `batch` at a time, each asked of the agent that holds its
/// fleet lock (`held`); on the first failure stop, and revert unless
/// `no_revert`. Returns the failure, if any.
pub fn roll(
    fleet: &Fleet,
    held: &Held,
    hosts: &mut [HostReport],
    switch: &Switch,
    no_revert: bool,
) -> Option<Error> {
    let target = switch.target().clone();
    let order: Vec<usize> = (0..hosts.len())
        .filter(|&i| {
            if hosts[i].before.as_ref() == Some(&target) {
                hosts[i].outcome = Outcome::AlreadyLive;
                false
            } else {
                true
            }
        })
        .collect();
    let mut failure: Option<Error> = None;
    for batch in order.chunks(fleet.config.batch) {
        if crate::interrupt::requested() {
            failure = Some(interrupted());
            break;
        }
        failure = switch_batch(fleet, held, hosts, batch, switch);
        if failure.is_some() {
            break;
        }
        crate::crashpoint::hit("fleet:after-first-batch");
    }
    let unrecorded = recorded(fleet, held, hosts, &target);
    let failure = failure.or(unrecorded)?;
    if !no_revert {
        // An interrupt stopped the roll; the revert (and its hooks) must
        // still run to its end.
        crate::interrupt::clear();
        revert(fleet, held, hosts);
    }
    Some(failure)
}

/// `releases/<id>`, or what `none` means.
fn shown(to: &str) -> String {
    if to == "none" {
        "nothing live (as before this rollout)".into()
    } else {
        format!("releases/{to}")
    }
}

fn interrupted() -> Error {
    Error::new(
        crate::error::Kind::Interrupted,
        "interrupted by a signal: no further host is switched",
    )
}

/// Drain each host of the batch in host order, switch them together,
/// undrain the healthy ones in host order.
fn switch_batch(
    fleet: &Fleet,
    held: &Held,
    hosts: &mut [HostReport],
    batch: &[usize],
    switch: &Switch,
) -> Option<Error> {
    let target = switch.target();
    let mut failure = None;
    let mut drained = Vec::new();
    for &i in batch {
        match fleet.run_hook(
            hooks::Kind::Drain,
            fleet.config.drain.as_ref(),
            &hosts[i],
            Some(target),
        ) {
            Ok(()) => drained.push(i),
            Err(e) => {
                hosts[i].outcome = Outcome::Failed;
                hosts[i].message = Some(format!("drain failed: {}", e.message));
                failure = Some(e.context(format!("the drain hook failed for {}", hosts[i].host)));
                // It may be half out of rotation: put it back.
                drained.push(i);
                break;
            }
        }
    }
    if failure.is_none() {
        let request = match switch {
            Switch::Activate(id, migrate) => protocol::Request::Activate {
                id: id.clone(),
                migrate: *migrate,
            },
            Switch::To(id, force) => protocol::Request::Switch {
                to: id.to_string(),
                wait_ms: 0,
                force: *force,
            },
        };
        for &i in batch {
            fleet.ctx.ui.step(
                "Switching",
                format!("{} to releases/{target}", hosts[i].host),
            );
        }
        let names: Vec<String> = batch.iter().map(|&i| hosts[i].host.clone()).collect();
        let recorded = protocol::Request::Recorded { id: target.clone() };
        let replies = parallel(fleet.config.concurrency, &names, |host| {
            let reply = fleet.ask(held, host, &request, None);
            // Live, and recording: asked at once what it recorded, read
            // before the rollout ends (the host answers when it has,
            // while the next one is switched).
            let recording = match &reply.answer {
                Some(protocol::Reply {
                    result: Ok(Done::Live { .. }),
                    ..
                }) if reply.ok() => {
                    if fleet.send_held(held, host, &recorded) {
                        Recording::Asked
                    } else {
                        Recording::ToAsk
                    }
                }
                _ => Recording::No,
            };
            (reply, recording)
        });
        for (&i, (reply, recording)) in batch.iter().zip(replies) {
            let host = &mut hosts[i];
            if reply.ok() {
                host.live = Some(target.clone());
                host.outcome = Outcome::Switched;
                host.recording = recording;
                fleet
                    .ctx
                    .ui
                    .step("Switched", format!("{} to releases/{target}", host.host));
            } else {
                fleet.learn_live(host, &reply);
                host.outcome = Outcome::Failed;
                host.message = Some(reply.message.clone());
                if failure.is_none() {
                    failure = Some(
                        Error::internal(format!("{} failed its switch", host.host))
                            .cause(reply.message.replace('\n', "; ")),
                    );
                }
            }
        }
    }
    // A signal that came during the switches stops the rollout after them;
    // putting the batch back into rotation must still happen.
    // A host that failed because the signal cut its session failed
    // because of the signal: the rollout was interrupted.
    if crate::interrupt::requested() {
        crate::interrupt::clear();
        let mut stopped = interrupted();
        if let Some(f) = failure {
            stopped = stopped.cause(f.to_string().replace('\n', "; "));
        }
        failure = Some(stopped);
    }
    for &i in &drained {
        // Back into rotation when healthy: switched, or on what it ran
        // before (by its own rollback, or never switched at all).
        let healthy = hosts[i].outcome == Outcome::Switched || hosts[i].as_before();
        if !healthy {
            fleet.ctx.ui.warn(format!(
                "{} stays drained: {}",
                hosts[i].host,
                hosts[i].why_not_as_before()
            ));
            continue;
        }
        let undrained = fleet.run_hook(
            hooks::Kind::Undrain,
            fleet.config.undrain.as_ref(),
            &hosts[i],
            Some(target),
        );
        hosts[i].undrained = undrained.is_ok();
        if let Err(e) = undrained {
            let host = &mut hosts[i];
            if host.outcome == Outcome::Switched {
                host.outcome = Outcome::Failed;
            }
            host.message = Some(format!("undrain failed: {}", e.message));
            if failure.is_none() {
                failure = Some(e.context(format!("the undrain hook failed for {}", host.host)));
            }
        }
    }
    failure
}

/// Ask each host that answered its activation as live what it recorded
/// ([`protocol::Request::Recorded`]), in parallel: at `batch = 1` each host
/// recorded while the next one was switched. A host that could not record
/// it (its agent died, say) failed its switch: what it runs is asked again,
/// and the rollout is reverted like after any failed switch.
fn recorded(
    fleet: &Fleet,
    held: &Held,
    hosts: &mut [HostReport],
    target: &ReleaseId,
) -> Option<Error> {
    let asked: Vec<(usize, String, Recording)> = hosts
        .iter_mut()
        .enumerate()
        .filter_map(|(i, h)| match std::mem::take(&mut h.recording) {
            Recording::No => None,
            recording => Some((i, h.host.clone(), recording)),
        })
        .collect();
    let request = protocol::Request::Recorded { id: target.clone() };
    let replies = parallel(fleet.config.concurrency, &asked, |(_, host, recording)| {
        let held_reply = match recording {
            Recording::Asked => fleet.answer_held(held, host),
            _ => fleet.ask_held(held, host, &request, None),
        };
        // When that agent's session is gone or ended before it answered
        // (the agent, or the master, is gone), asked once in a session of
        // its own, answered from the host's disk.
        held_reply
            .filter(|reply| reply.answer.is_some())
            .unwrap_or_else(|| fleet.ask_anew(host, &request, None))
    });
    let mut failure = None;
    for ((i, _, _), reply) in asked.iter().zip(replies) {
        if reply.ok() {
            continue;
        }
        let host = &mut hosts[*i];
        fleet.learn_live(host, &reply);
        host.outcome = Outcome::Failed;
        // A deploy lock still held there: it may record it yet.
        let known = reply.answer.is_some() && reply.kind() != Some(Kind::LockBusy);
        host.message = Some(if known {
            format!(
                "switched and passed its gate, but did not record it: {}",
                reply.message
            )
        } else {
            format!(
                "switched and passed its gate; whether it recorded it is unknown: {}",
                reply.message
            )
        });
        if failure.is_none() {
            failure = Some(
                Error::internal(format!("{} did not record its switch", host.host))
                    .cause(reply.message.replace('\n', "; ")),
            );
        }
    }
    failure
}

/// Switch every host this rollout moved back to what it ran before, in
/// reverse order, `batch` at a time, drained around the switch.
///
/// A host the controller lost contact with is asked once more what it
/// runs; if it still cannot be reached it is left alone: it stays drained
/// (its drain hook ran once, before its switch), it is not called
/// `revert-failed` (nothing was tried), and its message says what it runs
/// is unknown.
fn revert(fleet: &Fleet, held: &Held, hosts: &mut [HostReport]) {
    for host in hosts.iter_mut().filter(|h| h.unknown) {
        match fleet.state(&host.host, false) {
            Ok(state) => {
                host.live = state.current;
                host.unknown = false;
            }
            Err(e) => {
                let why = e.to_string().replace('\n', "; ");
                host.message = Some(if host.undrained {
                    format!(
                        "switched and passed its gate, then contact was lost and not regained \
                         ({why}): whether it recorded the switch and what it runs now are \
                         unknown; not switched back, and back in rotation since its switch"
                    )
                } else {
                    format!(
                        "contact was lost during its switch and not regained ({why}): what it \
                         runs is unknown; not switched back, left drained"
                    )
                });
            }
        }
    }
    let moved: Vec<usize> = (0..hosts.len())
        .rev()
        .filter(|&i| {
            matches!(hosts[i].outcome, Outcome::Switched | Outcome::Failed)
                && !hosts[i].as_before()
                && !hosts[i].unknown
        })
        .collect();
    for batch in moved.chunks(fleet.config.batch) {
        let mut drained = Vec::new();
        for &i in batch {
            let before = hosts[i].before.clone();
            match fleet.run_hook(
                hooks::Kind::Drain,
                fleet.config.drain.as_ref(),
                &hosts[i],
                before.as_ref(),
            ) {
                Ok(()) => drained.push(i),
                Err(e) => {
                    hosts[i].outcome = Outcome::RevertFailed;
                    hosts[i].message =
                        Some(format!("drain before the revert failed: {}", e.message));
                }
            }
        }
        let names: Vec<(usize, String, String)> = drained
            .iter()
            .map(|&i| {
                let to = hosts[i]
                    .before
                    .as_ref()
                    .map_or_else(|| "none".to_string(), |b| b.to_string());
                fleet
                    .ctx
                    .ui
                    .step("Reverting", format!("{} to {}", hosts[i].host, shown(&to)));
                (i, hosts[i].host.clone(), to)
            })
            .collect();
        let replies = parallel(fleet.config.concurrency, &names, |(_, host, to)| {
            // Back to what it ran: forced, it ran it.
            let request = protocol::Request::Switch {
                to: to.clone(),
                wait_ms: REVERT_LOCK_WAIT.as_millis() as u64,
                force: true,
            };
            fleet.ask(held, host, &request, None)
        });
        for ((i, _, _), reply) in names.iter().zip(replies) {
            let host = &mut hosts[*i];
            let failed_before = host.outcome == Outcome::Failed;
            if reply.ok() {
                host.live = host.before.clone();
                host.outcome = if failed_before {
                    Outcome::Failed
                } else {
                    Outcome::Reverted
                };
            } else {
                fleet.learn_live(host, &reply);
                host.outcome = Outcome::RevertFailed;
                host.message = Some(format!("the switch back failed: {}", reply.message));
            }
        }
        for &i in &drained {
            if !hosts[i].as_before() {
                fleet.ctx.ui.warn(format!(
                    "{} stays drained: {}",
                    hosts[i].host,
                    hosts[i].why_not_as_before()
                ));
                continue;
            }
            let before = hosts[i].before.clone();
            if let Err(e) = fleet.run_hook(
                hooks::Kind::Undrain,
                fleet.config.undrain.as_ref(),
                &hosts[i],
                before.as_ref(),
            ) {
                hosts[i].message = Some(format!("undrain after the revert failed: {}", e.message));
                hosts[i].outcome = Outcome::RevertFailed;
            }
        }
    }
}
