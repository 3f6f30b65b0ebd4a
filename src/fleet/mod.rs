//! Fleet: rolling deploys over SSH (SPEC §8).
//!
//! With `[fleet]` in the config, `deploy`, `rollback`, `releases` and
//! `status` run on a controller and act on every host through the system
//! `ssh`. The controller fixes what is deployed (one revision, one build,
//! one release id) and the order; each host runs the single-host code it
//! would run alone, through the hidden `fleet-agent` subcommand, with all of
//! its guarantees (lock, atomic publish and swap, gate, automatic
//! rollback, history).
//!
//! - [`ssh`]: the ssh invocations (multiplexing, timeouts, quoting).
//! - [`install`]: the host's shipit binary and config.
//! - [`build`]: the one build, on the controller, packed for shipping.
//! - [`check`]: `shipit check` on every host, read-only.
//! - [`rollout`]: reach → prepare → roll, and the revert.
//! - [`agent`]: the host side.
//! - [`report`]: per-host outcomes, the table and the JSON.
//! - [`reuse`]: `[[reuse]]` on the controller, from rollouts that went well.

pub mod agent;
pub mod build;
pub mod check;
pub mod install;
pub mod mux;
pub mod parallel;
pub mod protocol;
pub mod report;
pub mod reuse;
pub mod rollout;
pub mod ssh;
pub mod untar;

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::config::FleetConfig;
use crate::context::Ctx;
use crate::error::{Error, Kind, Result};
use crate::history::{self, Event, EventKind};
use crate::layout::{Layout, ReleaseId};
use crate::ui;
use protocol::HostState;
use report::{HostReport, HostRow, HostView, Outcome, ViewRow};
use rollout::{Fleet, Switch};
use ssh::Held;

/// What a fleet deploy or rollback asks for.
pub struct Request {
    /// A deploy or a rollback.
    pub event: EventKind,
    pub reference: Option<String>,
    pub to: Option<ReleaseId>,
    pub no_revert: bool,
    pub json: bool,
    pub wait: Option<Duration>,
    /// `rollback --force`: a target that failed or never proved itself
    /// live on some host is accepted (and gated again).
    pub force: bool,
    /// `deploy --skip-migrate`: `hooks.migrate` does not run (recorded in
    /// the history).
    pub skip_migrate: bool,
}

/// `shipit deploy` / `shipit rollback` with a fleet.
pub fn run(ctx: &Ctx, config: &FleetConfig, req: &Request) -> Result<()> {
    if let Some(reference) = &req.reference {
        crate::gitref::check_ref(reference)?;
    }
    let started = Instant::now();
    let fleet = Fleet::open(ctx, config, false)?;
    let _lock = crate::mutation::begin(ctx, req.wait)?;
    crate::release::clear_staging(ctx);
    reuse::forget(ctx);
    let mut event = Event::new(req.event, history::Outcome::Ok);
    let mut hosts: Vec<HostReport> = config.hosts.iter().map(|h| HostReport::new(h)).collect();
    let result = sequence(&fleet, req, &mut hosts, &mut event);
    let rows: Vec<HostRow> = hosts.iter().map(HostReport::row).collect();
    event.hosts = Some(serde_json::to_value(&rows).expect("host rows serialize"));
    let live = shared_live(&hosts);
    history::record(
        &ctx.layout,
        &ctx.ui,
        event.clone(),
        started,
        result.as_ref().err(),
        live,
    );
    // Only now is it known whether this rollout's build is a source.
    reuse::forget(ctx);
    let outcome = match &result {
        Ok(()) => history::Outcome::Ok,
        Err(e) => history::Outcome::Failed(e.kind),
    };
    if req.json {
        let report = RolloutReport {
            event: req.event,
            outcome,
            release: event.release.as_ref(),
            revision: event.revision.as_deref(),
            branch: event.branch.as_deref(),
            hosts: rows,
            duration_ms: started.elapsed().as_millis() as u64,
            error: error_inside(&result),
        };
        let _ = ui::out_json(&serde_json::to_value(&report).expect("a report serializes"));
    } else if ctx.ui.quiet() && result.is_ok() {
        // As on one host: a quiet deploy's result is its release id, a
        // quiet rollback's its exit code. A failed rollout still prints
        // the table: what each host runs is then the result.
        if let (true, Some(id)) = (req.event == EventKind::Deploy, &event.release) {
            let _ = ui::out(&format!("{id}\n"));
        }
    } else {
        let _ = ui::out(&report::table(&hosts));
    }
    if result.is_ok() {
        let verb = if req.event == EventKind::Deploy {
            "Rolled out"
        } else {
            "Rolled back"
        };
        ctx.ui.step(
            verb,
            format!(
                "{} to {} host(s) in {:.1}s",
                event
                    .release
                    .as_ref()
                    .map(Layout::display)
                    .unwrap_or_default(),
                hosts.len(),
                started.elapsed().as_secs_f64()
            ),
        );
    }
    result
}

/// The release every host ran before the rollout, if they all ran the
/// same one.
fn shared_before(hosts: &[HostReport]) -> Option<ReleaseId> {
    let first = hosts.first()?.before.clone();
    hosts.iter().all(|h| h.before == first).then_some(first)?
}

/// The release every host runs, if they all run the same one.
fn shared_live(hosts: &[HostReport]) -> Option<ReleaseId> {
    let first = hosts.first()?.live.clone();
    hosts.iter().all(|h| h.live == first).then_some(first)?
}

fn sequence(
    fleet: &Fleet,
    req: &Request,
    hosts: &mut [HostReport],
    event: &mut Event,
) -> Result<()> {
    let ctx = fleet.ctx;
    // Reach every host before building anything.
    ctx.ui.step(
        "Connecting",
        format!("to {} host(s)", fleet.config.hosts.len()),
    );
    let reach = crate::ui::Timing::start("fleet reach");
    let connecting = crate::ui::Timing::start("fleet connect");
    let connected = parallel::parallel(fleet.config.concurrency, &fleet.config.hosts, |host| {
        fleet.ssh.connect(host)
    });
    drop(connecting);
    let command: Vec<String> = std::env::args().collect();
    let command = command.join(" ");
    // One remote command per host when all is in place; else the longer
    // way, one step at a time.
    let quick = connected
        .iter()
        .all(Result::is_ok)
        .then(|| fleet.reach_locked(&command))
        .flatten();
    let (fleet_lock, states) = match quick {
        Some((held, states)) => (held, states.into_iter().map(Ok).collect()),
        None => {
            let installed = parallel::parallel(
                fleet.config.concurrency,
                &fleet
                    .config
                    .hosts
                    .iter()
                    .zip(&connected)
                    .collect::<Vec<_>>(),
                |(host, connected)| match connected {
                    Ok(()) => fleet.install(host).err(),
                    Err(_) => None,
                },
            );
            let mut unreachable = Vec::new();
            for ((host, connected), installed) in hosts.iter_mut().zip(connected).zip(installed) {
                if let Some(e) = connected.err().or(installed) {
                    host.outcome = Outcome::Unreachable;
                    host.message = Some(e.to_string().replace('\n', "; "));
                    unreachable.push((host.host.clone(), e));
                }
            }
            if !unreachable.is_empty() {
                return Err(not_ready(&unreachable)
                    .live("unchanged on every host: nothing was sent or switched"));
            }
            // One rollout at a time across controllers: the fleet lock of
            // every host, held to the end of the rollout (its revert
            // included), taken in host order when it has to be waited for.
            let held = fleet.lock_all(req.wait, &command)?;
            let states =
                parallel::parallel(fleet.config.concurrency, &fleet.config.hosts, |host| {
                    fleet.state(host, false)
                });
            (held, states)
        }
    };
    drop(reach);
    let mut unreachable = Vec::new();
    let mut taken: Vec<ReleaseId> = Vec::new();
    let mut infos: Vec<HostState> = Vec::new();
    for (host, state) in hosts.iter_mut().zip(states) {
        match state {
            Ok(state) => {
                host.before = state.current.clone();
                host.live = host.before.clone();
                taken.extend(state.releases.iter().map(|r| r.id.clone()));
                infos.push(state);
            }
            Err(e) => {
                host.outcome = Outcome::Unreachable;
                host.message = Some(e.to_string().replace('\n', "; "));
                unreachable.push((host.host.clone(), e));
            }
        }
    }
    if !unreachable.is_empty() {
        return Err(
            not_ready(&unreachable).live("unchanged on every host: nothing was sent or switched")
        );
    }
    // What the fleet ran before, when every host ran the same.
    event.previous = shared_before(hosts);
    let switch = match req.event {
        EventKind::Deploy => {
            let _timing = crate::ui::Timing::start("fleet build+prepare");
            let Switch::Activate(id, _) = prepare(fleet, &fleet_lock, req, hosts, &taken, event)?
            else {
                unreachable!("a deploy activates the release it prepared")
            };
            crate::crashpoint::hit("fleet:after-prepare");
            migrate(fleet, req, hosts, &id, event)?;
            Switch::Activate(id, event.migrate)
        }
        _ => {
            let to = rollback_target(hosts, &infos, req.to.as_ref(), req.force)?;
            // What the release is, as the hosts recorded it.
            let row = infos.iter().find_map(|i| i.row(&to));
            event.revision = row.and_then(|r| r.revision.clone());
            event.branch = row.and_then(|r| r.branch.clone());
            event.release = Some(to.clone());
            Switch::To(to, req.force)
        }
    };
    let roll = crate::ui::Timing::start("fleet roll");
    let failure = rollout::roll(fleet, &fleet_lock, hosts, &switch, req.no_revert);
    drop(roll);
    let Some(failure) = failure else {
        return Ok(());
    };
    if let Switch::Activate(id, _) = &switch {
        discard_unswitched(fleet, hosts, id);
    }
    let as_before = hosts.iter().all(HostReport::as_before);
    let kind = match (as_before, failure.kind) {
        (true, Kind::Interrupted) => Kind::Interrupted,
        (true, _) => Kind::FleetReverted,
        (false, _) => Kind::FleetNotReverted,
    };
    let live = if as_before {
        "every host runs what it ran before the rollout".to_string()
    } else if req.no_revert {
        "the hosts switched before the failure stay switched (--no-revert); each host's outcome says what it runs".to_string()
    } else {
        "not every host could be put back; each host's outcome says what it runs".to_string()
    };
    let mut e = failure;
    e.kind = kind;
    e.hint = None;
    e.live = None;
    let what = match req.event {
        EventKind::Deploy => "rollout",
        _ => "fleet rollback",
    };
    let target = event
        .release
        .as_ref()
        .map(Layout::display)
        .unwrap_or_default();
    let hint = if as_before {
        "fix the failing host (its log names the cause) and deploy again; `shipit releases` shows every host"
    } else {
        "`shipit releases` shows every host; `shipit rollback --to <id>` puts the fleet on one release"
    };
    Err(e
        .context(format!("{what} of {target} stopped"))
        .live(live)
        .hint(hint))
}

/// The hosts a rollout could not start on, and what failed on each: the
/// connection (the BatchMode hint), or what came after it (the install, an
/// agent's answer), which no ssh setting fixes.
fn not_ready(hosts: &[(String, Error)]) -> Error {
    let names: Vec<&str> = hosts.iter().map(|(h, _)| h.as_str()).collect();
    let connect = hosts.iter().any(|(_, e)| is_connect(e));
    let mut e = Error::new(
        Kind::BeforeSwap,
        format!("could not reach {}", names.join(", ")),
    );
    if hosts.iter().all(|(_, e)| !is_connect(e)) {
        e.message = format!("could not start on {}", names.join(", "));
    }
    for (host, why) in hosts {
        e = e.cause(format!("{host}: {}", why.to_string().replace('\n', "; ")));
    }
    if connect {
        e.hint(
            "check that `ssh <host>` works from here without a prompt (BatchMode), then run again",
        )
    } else {
        e.hint("fix what the host named above reports, then run again")
    }
}

fn is_connect(e: &Error) -> bool {
    e.message.starts_with("could not connect to")
}

/// Phase 1: build once, ship to every host, publish; nothing live.
fn prepare(
    fleet: &Fleet,
    held: &Held,
    req: &Request,
    hosts: &mut [HostReport],
    taken: &[ReleaseId],
    event: &mut Event,
) -> Result<Switch> {
    let ctx = fleet.ctx;
    let timing = crate::ui::Timing::start("fleet build");
    let mut built = build::build(ctx, req.reference.as_deref(), taken).map_err(|e| {
        e.in_phase(Kind::BeforeSwap)
            .live("unchanged on every host: nothing was sent or switched")
    })?;
    drop(timing);
    event.release = Some(built.id.clone());
    event.revision = built.revision.clone();
    event.branch = built.branch.clone();
    ctx.ui.step(
        "Sending",
        format!("{} to {} host(s)", Layout::display(&built.id), hosts.len()),
    );
    let deployed_by = format!("{}@{}", crate::whoami::user(), crate::whoami::host());
    let bytes = std::fs::metadata(&built.tarball)
        .map_err(|e| {
            Error::io("could not read", &built.tarball, e)
                .in_phase(Kind::BeforeSwap)
                .live("unchanged on every host: nothing was sent or switched")
        })?
        .len();
    let request = protocol::Request::Receive {
        id: built.id.clone(),
        source: built.source.clone(),
        deployed_by,
        build_ms: built.build_ms,
        revision: built.revision.clone(),
        revision_time: built.revision_time,
        branch: built.branch.clone(),
        keep_special_files: fleet.config.keep_special_files,
        bytes,
    };
    let names: Vec<String> = hosts.iter().map(|h| h.host.clone()).collect();
    let replies = parallel::parallel(fleet.config.concurrency, &names, |host| {
        fleet.ask(held, host, &request, Some(&built.tarball))
    });
    built.remove();
    let mut failed = Vec::new();
    for (host, reply) in hosts.iter_mut().zip(&replies) {
        if reply.ok() {
            host.outcome = Outcome::Received;
        } else {
            host.outcome = Outcome::Failed;
            host.message = Some(reply.message.clone());
            failed.push(format!(
                "{}: {}",
                host.host,
                reply.message.replace('\n', "; ")
            ));
        }
    }
    if failed.is_empty() {
        for host in hosts.iter_mut() {
            host.outcome = Outcome::Untouched;
        }
        return Ok(Switch::Activate(built.id, None));
    }
    // Nothing went live: take the release back from every host that may
    // have it (a receive whose answer was lost may have published it).
    let got: Vec<usize> = (0..hosts.len())
        .filter(|&i| hosts[i].outcome != Outcome::Unreachable)
        .collect();
    let names: Vec<String> = got.iter().map(|&i| hosts[i].host.clone()).collect();
    let discard = protocol::Request::Discard {
        id: built.id.clone(),
    };
    let replies = parallel::parallel(fleet.config.concurrency, &names, |host| {
        fleet.ask(held, host, &discard, None)
    });
    for (&i, reply) in got.iter().zip(replies) {
        if reply.ok() {
            if hosts[i].outcome == Outcome::Received {
                hosts[i].outcome = Outcome::Discarded;
            }
        } else {
            hosts[i].message = Some(format!("could not remove it again: {}", reply.message));
        }
    }
    Err(Error::new(
        Kind::BeforeSwap,
        format!(
            "could not prepare {} on every host",
            Layout::display(&built.id)
        ),
    )
    .cause(failed.join("\n"))
    .live("unchanged on every host: nothing was switched")
    .hint("fix the host named above and deploy again"))
}

/// Phase 1½: `hooks.migrate`, exactly once per rollout, on the primary
/// host (`fleet.primary`, or the first of `hosts`), once every host has
/// the release and before any is switched; through the agent, which runs
/// it as a single host does (see `agent::migrate`) for as long as this
/// controller's session lasts. The fleet lock of every host is held
/// meanwhile: no other rollout starts beside it. A failure stops the
/// rollout with nothing switched anywhere: the primary keeps the release,
/// marked failed with the cause (its build log has the hook's output), the
/// other hosts remove it.
fn migrate(
    fleet: &Fleet,
    req: &Request,
    hosts: &mut [HostReport],
    id: &ReleaseId,
    event: &mut Event,
) -> Result<()> {
    let ctx = fleet.ctx;
    if !crate::deploy::migrate_wanted(ctx, req.skip_migrate, event) {
        return Ok(());
    }
    let primary = fleet.config.migrate_host();
    ctx.ui.step(
        "Migrating",
        format!("on {primary}, in {}", Layout::display(id)),
    );
    event.migrate_time = Some(chrono::Utc::now());
    event.migrate = Some(history::Migrate::Failed);
    let reply = fleet.agent_attached(
        primary,
        &[
            "migrate",
            &format!("--id={id}"),
            &format!("--host={primary}"),
        ],
    );
    if reply.ok() {
        event.migrate = Some(history::Migrate::Ran);
        return Ok(());
    }
    if let Some(host) = hosts.iter_mut().find(|h| h.host == primary) {
        host.outcome = Outcome::Failed;
        host.message = Some(format!("its migrate hook failed: {}", reply.message));
    }
    let others: Vec<String> = hosts
        .iter()
        .filter(|h| h.host != primary)
        .map(|h| h.host.clone())
        .collect();
    let id_arg = format!("--id={id}");
    let replies = parallel::parallel(fleet.config.concurrency, &others, |host| {
        fleet.agent(host, &["discard", &id_arg], None)
    });
    for (name, reply) in others.iter().zip(replies) {
        let host = hosts
            .iter_mut()
            .find(|h| &h.host == name)
            .expect("one of the hosts");
        if reply.ok() {
            host.outcome = Outcome::Discarded;
        } else {
            host.message = Some(format!("could not remove it again: {}", reply.message));
        }
    }
    if crate::interrupt::requested() {
        return Err(Error::new(
            Kind::Interrupted,
            format!("interrupted: the migrate hook on {primary} was stopped"),
        )
        .cause(reply.message.replace('\n', "; "))
        .live("unchanged on every host: nothing was switched")
        .hint(format!(
            "{} is kept on {primary}, marked failed; the migration may have changed the \
             database in part: check it before the next deploy",
            Layout::display(id)
        )));
    }
    Err(Error::new(
        Kind::BeforeSwap,
        format!("the migrate hook failed on {primary}"),
    )
    .cause(reply.message.replace('\n', "; "))
    .live("unchanged on every host: nothing was switched")
    .hint(format!(
        "{} is kept on {primary}, marked failed; its build log there has the hook's output; \
         fix the migration and deploy again",
        Layout::display(id)
    )))
}

/// After a failed rollout, every host where the release never went live
/// (not reached by the roll, or stopped before its switch) gets rid of it:
/// they are left exactly as they were, and a release that never went live
/// can never become their rollback target. The host removes it only if it
/// never went live there.
fn discard_unswitched(fleet: &Fleet, hosts: &mut [HostReport], id: &ReleaseId) {
    let untouched: Vec<usize> = (0..hosts.len())
        .filter(|&i| {
            hosts[i].outcome != Outcome::Unreachable
                && !hosts[i].unknown
                && hosts[i].live.as_ref() != Some(id)
        })
        .collect();
    let names: Vec<String> = untouched.iter().map(|&i| hosts[i].host.clone()).collect();
    let id = id.to_string();
    let replies = parallel::parallel(fleet.config.concurrency, &names, |host| {
        fleet.agent(host, &["discard", "--id", &id], None)
    });
    for (&i, reply) in untouched.iter().zip(replies) {
        if !reply.ok() {
            // Said after what the host's outcome already says.
            let kept = format!(
                "kept the unused release {id}: could not remove it: {}",
                reply.message
            );
            let message = &mut hosts[i].message;
            *message = Some(match message.take() {
                Some(why) => format!("{why}; {kept}"),
                None => kept,
            });
        }
    }
}

/// The release a fleet rollback goes to: `--to`, which every host must
/// have; or the rollback target every host agrees on.
fn rollback_target(
    hosts: &[HostReport],
    infos: &[HostState],
    to: Option<&ReleaseId>,
    force: bool,
) -> Result<ReleaseId> {
    let has = |info: &HostState, id: &ReleaseId| info.has(id);
    if let Some(id) = to {
        let missing: Vec<&str> = hosts
            .iter()
            .zip(infos)
            .filter(|(_, info)| !has(info, id))
            .map(|(h, _)| h.host.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(Error::usage(format!(
                "{} is not on {}",
                Layout::display(id),
                missing.join(", ")
            ))
            .live("unchanged on every host")
            .hint("`shipit releases` lists the releases every host has"));
        }
        // A release that failed, or never proved itself live, on some host
        // (prepared everywhere by a rollout that stopped, say) is not a
        // place to go without --force, as on one host.
        let unproven: Vec<String> = hosts
            .iter()
            .zip(infos)
            .filter_map(|(h, info)| {
                let row = info.row(id)?;
                let bad = !row.current && (row.status == "failed" || !row.proven);
                bad.then(|| format!("{}: {}", h.host, row.status))
            })
            .collect();
        if !unproven.is_empty() && !force {
            return Err(Error::usage(format!(
                "{} never proved itself live on every host ({})",
                Layout::display(id),
                unproven.join(", ")
            ))
            .live("unchanged on every host")
            .hint(format!(
                "pick a proven release (`shipit releases` lists them), or pass --force to make {} \
                 live anyway (each host gates it again)",
                Layout::display(id)
            )));
        }
        return Ok(id.clone());
    }
    let lives: Vec<Option<&ReleaseId>> = hosts.iter().map(|h| h.before.as_ref()).collect();
    if lives.windows(2).any(|w| w[0] != w[1]) {
        let listed: Vec<String> = hosts
            .iter()
            .map(|h| {
                format!(
                    "{} runs {}",
                    h.host,
                    h.before.as_ref().map_or("nothing".into(), Layout::display)
                )
            })
            .collect();
        return Err(Error::usage(format!(
            "the hosts do not agree about what is live ({}), so there is no one release to step back from",
            listed.join(", ")
        ))
        .live("unchanged on every host")
        .hint("pick the release for every host: `shipit rollback --to <id>` (`shipit releases` lists them)"));
    }
    let targets: Vec<Option<&ReleaseId>> =
        infos.iter().map(|i| i.rollback_target.as_ref()).collect();
    match targets.first().copied().flatten() {
        Some(t) if targets.iter().all(|x| *x == Some(t)) => Ok(t.clone()),
        _ => Err(Error::usage(
            "the hosts have no common release to roll back to",
        )
        .live("unchanged on every host")
        .hint("`shipit releases` lists what each host has; pick one with `shipit rollback --to <id>`")),
    }
}

/// Ask every host what it has. Read-only: nothing is installed or written
/// (SPEC §10); a host without this build's agent is reported as such.
fn views(ctx: &Ctx, config: &FleetConfig, probe: bool) -> Result<Vec<HostView>> {
    let fleet = Fleet::open(ctx, config, true)?;
    let states = fleet.reach(probe);
    Ok(config
        .hosts
        .iter()
        .zip(states)
        .map(|(host, state)| match state {
            Ok(state) => HostView {
                host: host.clone(),
                state: Some(state),
                error: None,
            },
            Err(e) => HostView {
                host: host.clone(),
                state: None,
                error: Some(e.to_string().replace('\n', "; ")),
            },
        })
        .collect())
}

/// One JSON document: a failure goes inside the report (the `error`
/// object every failing `--json` command prints), and is not printed again
/// ([`ui::out_json_error`]).
fn error_inside(result: &Result<()>) -> Option<Value> {
    result.as_ref().err()?.to_json().get("error").cloned()
}

/// `deploy --json` and `rollback --json` with a fleet.
#[derive(Serialize)]
struct RolloutReport<'a> {
    event: EventKind,
    outcome: history::Outcome,
    release: Option<&'a ReleaseId>,
    revision: Option<&'a str>,
    branch: Option<&'a str>,
    hosts: Vec<HostRow<'a>>,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// `releases --json` with a fleet.
#[derive(Serialize)]
struct ReleasesReport<'a> {
    hosts: Vec<ViewRow<'a>>,
    agree: bool,
    live: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// `status --json` with a fleet.
#[derive(Serialize)]
struct StatusReport<'a> {
    hosts: Vec<ViewRow<'a>>,
    agree: bool,
    last_rollout: Option<&'a Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

fn unreachable_error(views: &[HostView]) -> Result<()> {
    let gone: Vec<(String, Error)> = views
        .iter()
        .filter(|v| v.state.is_none())
        .map(|v| {
            (
                v.host.clone(),
                Error::internal(v.error.clone().unwrap_or_default()),
            )
        })
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    let mut e = not_ready(&gone);
    e.kind = Kind::Internal;
    Err(e)
}

/// `shipit releases` with a fleet.
pub fn releases(ctx: &Ctx, config: &FleetConfig, json_out: bool) -> Result<()> {
    let views = views(ctx, config, false)?;
    let agree = report::agree(&views);
    let result = unreachable_error(&views);
    if json_out {
        let report = ReleasesReport {
            hosts: report::view_rows(&views),
            agree,
            live: if agree {
                views.first().and_then(|v| v.current())
            } else {
                None
            },
            error: error_inside(&result),
        };
        let _ = ui::out_json(&serde_json::to_value(&report).expect("a report serializes"));
    } else {
        let _ = ui::out(&report::releases_text(&views));
    }
    if !agree && views.iter().all(|v| v.state.is_some()) {
        ctx.ui.warn(format!(
            "the hosts disagree about what is live ({}); `shipit rollback --to <id>` or a deploy puts them on one release",
            views
                .iter()
                .map(|v| format!("{}: {}", v.host, v.current().unwrap_or("nothing")))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    result
}

/// `shipit status` with a fleet: each host's live release and a health
/// probe made on the host now, and the controller's last rollout.
pub fn status(ctx: &Ctx, config: &FleetConfig, json_out: bool) -> Result<()> {
    let views = views(ctx, config, true)?;
    let last = history::newest(&ctx.layout, |e| {
        e.event == crate::history::EventKind::Deploy
    })
    .ok()
    .flatten();
    let agree = report::agree(&views);
    let result = unreachable_error(&views);
    if json_out {
        let report = StatusReport {
            hosts: report::view_rows(&views),
            agree,
            last_rollout: last.as_ref(),
            error: error_inside(&result),
        };
        let _ = ui::out_json(&serde_json::to_value(&report).expect("a report serializes"));
    } else {
        let mut text = String::new();
        for v in &views {
            let Some(state) = &v.state else {
                text.push_str(&format!(
                    "{}: unreachable: {}\n",
                    v.host,
                    v.error.as_deref().unwrap_or("")
                ));
                continue;
            };
            let health = match &state.health {
                Some(h) => format!(
                    "{} ({})",
                    if h.passed { "healthy" } else { "UNHEALTHY" },
                    h.detail
                ),
                None => "no [health] configured".into(),
            };
            text.push_str(&format!("{}: live {}, {health}\n", v.host, state.describe));
        }
        match &last {
            Some(e) => text.push_str(&format!(
                "last rollout: {} {} at {}\n",
                e.outcome,
                e.release.as_ref().map(Layout::display).unwrap_or_default(),
                e.time.format("%Y-%m-%d %H:%M:%S UTC")
            )),
            None => text.push_str("last rollout: none recorded here\n"),
        }
        let _ = ui::out(&text);
    }
    if !agree && views.iter().all(|v| v.state.is_some()) {
        ctx.ui
            .warn("the hosts disagree about what is live; `shipit releases` shows each");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, live: Option<&str>) -> HostReport {
        let mut h = HostReport::new(name);
        h.before = live.map(|l| ReleaseId::parse(l).unwrap());
        h
    }

    fn info(live: &str, target: Option<&str>, ids: &[&str]) -> HostState {
        let mut state = report::tests::state(Some(live));
        state.rollback_target = target.map(|t| ReleaseId::parse(t).unwrap());
        state.releases = ids.iter().map(|id| report::tests::row(id)).collect();
        state
    }

    const A: &str = "20260101000001";
    const B: &str = "20260101000002";
    const C: &str = "20260101000003";

    #[test]
    fn a_fleet_rollback_goes_where_every_host_agrees() {
        let hosts = [host("web1", Some(C)), host("web2", Some(C))];
        let infos = [info(C, Some(B), &[A, B, C]), info(C, Some(B), &[A, B, C])];
        assert_eq!(
            rollback_target(&hosts, &infos, None, false)
                .unwrap()
                .as_str(),
            B
        );
        // --to must be on every host.
        let infos = [info(C, Some(B), &[A, B, C]), info(C, Some(B), &[B, C])];
        let a = ReleaseId::parse(A).unwrap();
        let e = rollback_target(&hosts, &infos, Some(&a), false).unwrap_err();
        assert!(e.message.contains("is not on web2"), "{e}");
        // Hosts that step back to different releases are refused.
        let infos = [info(C, Some(B), &[A, B, C]), info(C, Some(A), &[A, B, C])];
        let e = rollback_target(&hosts, &infos, None, false).unwrap_err();
        assert!(e.hint.unwrap().contains("--to"));
        // So are hosts that do not run the same release.
        let hosts = [host("web1", Some(C)), host("web2", Some(B))];
        let e = rollback_target(&hosts, &infos, None, false).unwrap_err();
        assert!(e.message.contains("web2 runs releases/"), "{e}");
    }

    #[test]
    fn shared_live_needs_every_host() {
        let mut a = host("web1", None);
        let mut b = host("web2", None);
        a.live = Some(ReleaseId::parse(C).unwrap());
        b.live = a.live.clone();
        assert_eq!(shared_live(&[a.clone(), b.clone()]), a.live);
        b.live = Some(ReleaseId::parse(B).unwrap());
        assert_eq!(shared_live(&[a, b]), None);
    }
}
