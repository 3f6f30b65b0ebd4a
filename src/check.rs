//! `shipit check`: validate the config and the environment, changing nothing.
//!
//! Every check is read-only: no directory is created, the mirror is not
//! touched (the source is asked with `git ls-remote`), the lock file is not
//! opened for writing. Each check says what it found and, when it fails,
//! the fix.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, access};
use serde::Serialize;

use crate::config::Config;
use crate::health;
use crate::layout::Layout;
use crate::source;
use crate::store::{self, Current};
use crate::ui::Ui;

/// With `[fleet]`: the controller checks what it does itself (the config,
/// the source, the build's programs), and each host what it does there
/// (`deploy_to`, shared files, the programs of the hooks that run there),
/// asked of the host over ssh; see [`crate::fleet::check`].
fn fleet_checks(config: &Config, fleet: &crate::config::FleetConfig, ui: &Ui) -> Vec<Check> {
    use crate::fleet::check::Agent;
    let mut checks = vec![pass("config", format!("{} parses", config.file.display()))];
    checks.push(source_reachable(config));
    checks.extend(programs(config));
    let on_hosts = host_programs(config);
    let mut names: Vec<String> = on_hosts.iter().map(|(_, p, _)| p.clone()).collect();
    // fleet.keep_special_files hands each release tar to the host's `tar`
    // (else the agent unpacks it itself): looked up after the hooks'.
    let tar = fleet.keep_special_files.then(|| {
        names.push("tar".into());
        names.len() - 1
    });
    // Through sudo too, as on one host.
    let systemctl = on_hosts.iter().find(|(_, _, command)| {
        simple_commands(command)
            .iter()
            .any(|part| invoked_program(part).is_some_and(|(p, _)| base_name(p) == "systemctl"))
    });
    let deploy_to = config.deploy_to.display().to_string();
    let mine = crate::fleet::install::local_platform();
    let protocol = crate::fleet::protocol::VERSION;
    for host in crate::fleet::check::run(ui, config, fleet, &names) {
        let on = |mut c: Check| {
            c.host = Some(host.host.clone());
            c
        };
        let answer = match host.answer {
            Ok(answer) => answer,
            // The connection (the BatchMode fix), or what came after it.
            Err(e) if e.message.starts_with("could not connect") => {
                checks.push(on(fail(
                    "host",
                    format!("unreachable: {}", one_line(&e.to_string())),
                    "check that `ssh <host>` works from here without a prompt (BatchMode), with fleet.ssh_options",
                )));
                continue;
            }
            Err(e) => {
                checks.push(on(fail(
                    "host",
                    format!(
                        "reachable, but it could not be checked: {}",
                        one_line(&e.to_string())
                    ),
                    e.hint
                        .clone()
                        .unwrap_or_else(|| "run `ssh <host> true` and read what it prints".into()),
                )));
                continue;
            }
        };
        checks.push(on(pass("host", "reachable over ssh")));
        let platform = &answer.platform;
        let theirs = |named: &str| match &answer.theirs {
            Some((path, Ok(hello))) => pass(
                "agent",
                format!(
                    "{platform}: runs the shipit installed at {path}: shipit {} (fleet protocol \
                     {protocol})",
                    hello.version
                ),
            ),
            Some((path, Err(why))) => fail(
                "agent",
                format!("{platform}: the shipit installed at {path} cannot be used: {why}"),
                format!("install a shipit of fleet protocol {protocol} there"),
            ),
            None => fail(
                "agent",
                format!("{platform}: {named}"),
                format!(
                    "set fleet.binary to a shipit built for {platform}, or install shipit \
                     (fleet protocol {protocol}) on its PATH or at fleet.host_shipit"
                ),
            ),
        };
        let differs = fleet.binary.is_none() && *platform != mine;
        checks.push(on(if let Some(named) = &fleet.host_shipit {
            theirs(&format!("fleet.host_shipit = {named:?} is not installed there"))
        } else if differs {
            theirs(&format!(
                "this controller is {mine}: it cannot run this controller's shipit, and no \
                 shipit is on the PATH there"
            ))
        } else {
            match &answer.agent {
            Agent::Speaks(hello) => pass(
                "agent",
                format!(
                    "shipit {} (fleet protocol {}) of this build is installed",
                    hello.version,
                    crate::fleet::protocol::VERSION
                ),
            ),
            Agent::Absent if answer.others.is_empty() => pass(
                "agent",
                "no shipit of this build is installed: the first deploy installs it",
            ),
            Agent::Absent => pass(
                "agent",
                format!(
                    "no shipit of this build is installed (it has {}): the next deploy installs it",
                    answer.others.join(", ")
                ),
            ),
            Agent::Broken(why) => fail(
                "agent",
                format!("the shipit of this build installed there does not answer: {why}"),
                format!(
                    "remove {deploy_to}/.shipit/bin on that host; the next deploy installs it again"
                ),
            ),
            }
        }));
        let user = answer.user.as_str();
        checks.push(on(match answer.deploy_to.as_str() {
            "writable" => pass("deploy_to", format!("{deploy_to} exists and is writable")),
            "creatable" => pass(
                "deploy_to",
                format!("{deploy_to} will be created on the first deploy"),
            ),
            "not-a-directory" => fail(
                "deploy_to",
                format!("{deploy_to} exists and is not a directory"),
                "move it away or point deploy_to elsewhere",
            ),
            "unwritable" => fail(
                "deploy_to",
                format!("{deploy_to} is not writable by {user} (or its filesystem is read-only)"),
                format!("chown {user} {deploy_to} there (or make its filesystem writable)"),
            ),
            other => fail(
                "deploy_to",
                format!(
                    "{deploy_to} does not exist and cannot be created by {user} ({} is not writable)",
                    other.strip_prefix("uncreatable ").unwrap_or("its parent")
                ),
                format!("sudo mkdir -p {deploy_to} && sudo chown {user} {deploy_to} there"),
            ),
        }));
        for ((rel, is_dir), state) in config.shared_paths().iter().zip(&answer.shared) {
            let path = config.deploy_to.join("shared").join(rel);
            let path = path.display();
            checks.push(on(match state.as_str() {
                "file" => pass("shared", format!("{path} exists")),
                "dir" => pass("shared", format!("{path} is a directory")),
                "not-dir" => fail(
                    "shared",
                    format!("{path} is not a directory"),
                    "move it away (entries ending in / are directories)",
                ),
                "not-file" => fail(
                    "shared",
                    format!("{path} is not a file"),
                    "move it away and put the file there",
                ),
                _ if *is_dir => pass("shared", format!("{path} will be created")),
                _ => fail(
                    "shared",
                    format!("shared file {path} is missing"),
                    format!("create it there (e.g. install -D /dev/null {path})"),
                ),
            }));
        }
        if let Some(env_file) = &config.env_file {
            let path = config.deploy_to.join(env_file);
            let path = path.display();
            let state = answer.shared.get(config.shared_paths().len());
            checks.push(on(match state.map(String::as_str) {
                Some("file") => pass("env_file", format!("{path} exists")),
                Some("not-file") => fail(
                    "env_file",
                    format!("env_file {path} is not a file"),
                    "move it away and put the dotenv file there",
                ),
                _ => fail(
                    "env_file",
                    format!("env_file {path} is missing"),
                    "create it there (dotenv lines, KEY=value; each host reads its own), or \
                     remove env_file from shipit.toml",
                ),
            }));
        }
        for ((key, program, command), found) in on_hosts.iter().zip(&answer.programs) {
            checks.push(on(if *found {
                pass("hooks", format!("{program} (in {key}) is on PATH"))
            } else {
                fail(
                    "hooks",
                    format!("{program} (in {key}: `{command}`) is not on PATH"),
                    format!("install {program} there, or give its full path in {key}"),
                )
            }));
        }
        if let Some(found) = tar.and_then(|i| answer.programs.get(i)) {
            checks.push(on(if *found {
                pass(
                    "tar",
                    "tar is on PATH (fleet.keep_special_files = true unpacks releases with it)",
                )
            } else {
                fail(
                    "tar",
                    "tar is not on PATH, and fleet.keep_special_files = true unpacks releases \
                     with it: a deploy would fail there before any host is switched",
                    "install tar there, or set fleet.keep_special_files = false",
                )
            }));
        }
        if let Some((key, _, command)) = systemctl
            && !answer.systemd
        {
            checks.push(on(fail(
                "hooks",
                format!(
                    "{key} runs systemctl (`{command}`), but systemd is not running there ({SYSTEMD_BOOTED} does not exist)"
                ),
                "reload through the process manager that runs the app there",
            )));
        }
    }
    checks
}

/// The programs of the hooks that run on a fleet's hosts (everything but
/// the build): `(key, program, command)`.
fn host_programs(config: &Config) -> Vec<(&'static str, String, String)> {
    let slots = config.slots.as_ref();
    let hooks: Vec<(&'static str, &String)> = config
        .hooks
        .reload
        .iter()
        .filter(|_| slots.is_none())
        .map(|c| ("hooks.reload", c))
        .chain(slots.map(|s| ("slots.start", &s.start)))
        .chain(slots.map(|s| ("slots.stop", &s.stop)))
        .chain(
            slots
                .and_then(|s| s.switch.as_ref())
                .map(|c| ("slots.switch", c)),
        )
        .collect();
    let mut out = Vec::new();
    for (key, command) in hooks {
        for part in simple_commands(command) {
            if let Some(program) = program_of(part)
                && !out.iter().any(|(_, p, _): &(_, String, _)| *p == program)
            {
                out.push((key, program, command.clone()));
            }
        }
    }
    out
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    /// With `[fleet]`: the host this check was made on (none: the
    /// controller).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub ok: bool,
    pub detail: String,
    pub fix: Option<String>,
}

fn pass(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        host: None,
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        host: None,
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// Run every check against a loaded config.
pub fn run(config: &Config, ui: &Ui) -> Vec<Check> {
    // What `env_file` holds is hidden from what check prints, too.
    crate::hookenv::init(config);
    if let Some(fleet) = &config.fleet {
        return fleet_checks(config, fleet, ui);
    }
    let layout = Layout::new(config.deploy_to.clone());
    let mut checks = vec![pass("config", format!("{} parses", config.file.display()))];
    checks.push(deploy_to(&layout));
    checks.push(releases(&layout));
    checks.push(state_files(&layout));
    let current = store::read_current(&layout).unwrap_or(Current::Missing);
    checks.push(current_link(&layout, &current));
    checks.push(source_reachable(config));
    checks.extend(shared(config, &layout));
    checks.extend(env_file());
    checks.extend(programs(config));
    checks.push(health_now(config, &layout, &current));
    if let Some(slots) = &config.slots {
        checks.extend(slot_checks(slots, &layout));
        checks.extend(slots_front(config, slots, &layout));
    }
    checks
}

/// With slots, `health.url` is how a deploy proves the front reaches the
/// slot it switched to (SPEC §7: the front check), so it must go through
/// the front to `run/app.sock`. Read-only: one probe of the live slot
/// directly (its socket, or its port) and one of `health.url`, compared.
fn slots_front(
    config: &Config,
    slots_config: &crate::config::SlotsConfig,
    layout: &Layout,
) -> Option<Check> {
    use crate::activate::slots::{Slot, Slots};
    let h = config.health.as_ref()?;
    let url = crate::urls::redact_url(&h.url);
    let slots = Slots::new(layout, slots_config);
    let url_port = health_url_port(&h.url);
    if let Some(slot) = Slot::BOTH
        .into_iter()
        .find(|s| url_port.is_some() && slots.port(*s) == url_port)
    {
        return Some(fail(
            "front",
            format!(
                "health.url {url} is slot {slot}'s own port, not the front: it probes that \
                 slot whichever is live, so the check after a switch proves nothing"
            ),
            "point health.url at the front proxy (the nginx site), which forwards to the live slot",
        ));
    }
    let front = match &slots_config.ports {
        Some(_) => "the live slot".to_string(),
        None => layout.app_socket().display().to_string(),
    };
    let live = slots.live().ok().flatten();
    let record = live.and_then(|slot| slots.record(slot).ok().flatten().map(|r| (slot, r)));
    let Some((slot, record)) = record else {
        return Some(pass(
            "front",
            format!("no slot runs a release yet: {url} is checked against {front} once one does"),
        ));
    };
    let release = &record.release;
    let revision = store::revision(layout, release);
    let body = h
        .expect_body
        .as_deref()
        .map(|t| health::expected_body(t, release.as_str(), revision.as_deref()));
    let (direct_name, direct) = match slots.port(slot) {
        Some(port) => {
            let direct_url = format!("http://127.0.0.1:{port}{}", health::url_path(&h.url));
            let seen = health::probe(
                &health::agent(h.request_timeout),
                &direct_url,
                h.expect_status,
                body.as_deref(),
            );
            (direct_url, seen)
        }
        None => {
            let socket = slots.socket(slot);
            let seen = health::probe_socket(
                &socket,
                &h.url,
                h.request_timeout,
                h.expect_status,
                body.as_deref(),
            );
            (socket.display().to_string(), seen)
        }
    };
    let through = health::probe(
        &health::agent(h.request_timeout),
        &h.url,
        h.expect_status,
        body.as_deref(),
    );
    let live_name = format!("slot {slot} ({})", Layout::display(release));
    if !direct.passed {
        return Some(fail(
            "front",
            format!(
                "the live {live_name} does not pass on {direct_name}: {}; {url} cannot be \
                 compared with it",
                direct.detail
            ),
            format!("check the app of slot {slot}, or `shipit rollback`"),
        ));
    }
    let fix = match &slots_config.ports {
        Some(_) => "point health.url at the front proxy, and make slots.switch point the front \
                    at the live slot's port"
            .to_string(),
        None => format!(
            "proxy the front to unix:{} (`shipit init --template nginx-slots` writes such a \
             site) and point health.url at the front",
            layout.app_socket().display()
        ),
    };
    if !through.passed {
        return Some(fail(
            "front",
            format!(
                "{url} does not reach the live {live_name}: the slot answers on {direct_name} \
                 ({}), {url} gives {}; a deploy's front check would fail and switch back",
                direct.detail, through.detail
            ),
            fix,
        ));
    }
    // Without a release-specific expect_body both can pass while the
    // front reaches something else: an answer that names the live release
    // on the slot and not through the front gives that away.
    let names = |detail: &str| detail.contains(release.as_str());
    if names(&direct.detail) && !names(&through.detail) {
        return Some(fail(
            "front",
            format!(
                "{url} answers, but not as the live {live_name} does: the slot answers on \
                 {direct_name} ({}), {url} gives {}",
                direct.detail, through.detail
            ),
            fix,
        ));
    }
    Some(pass(
        "front",
        format!(
            "{url} reaches the live {live_name} through the front, as on {direct_name}: {}",
            through.detail
        ),
    ))
}

/// The port of an `http://host:port/...` URL (80 without one).
fn health_url_port(url: &str) -> Option<u16> {
    let rest = url.trim().strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host.rsplit_once(':') {
        Some((_, port)) if !host.ends_with(']') => port.parse().ok(),
        _ => Some(80),
    }
}

/// The slots' run directory, link and sockets (SPEC §7).
fn slot_checks(slots_config: &crate::config::SlotsConfig, layout: &Layout) -> Vec<Check> {
    use crate::activate::slots::{Slot, Slots};
    use std::os::unix::fs::FileTypeExt;
    let slots = Slots::new(layout, slots_config);
    let run = layout.run();
    let mut checks = Vec::new();
    if run.exists() && !run.is_dir() {
        checks.push(fail(
            "slots",
            format!("{} is not a directory", run.display()),
            "move it away: shipit keeps the slot sockets and link there",
        ));
        return checks;
    }
    let live = match slots.live() {
        Ok(live) => live,
        Err(e) => {
            checks.push(fail("slots", e.message.clone(), e.hint.unwrap_or_default()));
            return checks;
        }
    };
    checks.push(match live {
        Some(slot) => pass(
            "slots",
            format!(
                "{} names slot {slot}{}",
                slots.pointer().display(),
                match slots.record(slot).ok().flatten() {
                    Some(r) => format!(", which runs {}", Layout::display(&r.release)),
                    None => String::new(),
                }
            ),
        ),
        None => pass(
            "slots",
            "no slot is live yet (the first deploy starts blue)",
        ),
    });
    if slots_config.ports.is_some() {
        return checks;
    }
    for slot in Slot::BOTH {
        let socket = slots.socket(slot);
        let Ok(meta) = fs::symlink_metadata(&socket) else {
            if live == Some(slot) {
                checks.push(fail(
                    "slots",
                    format!("{} is live but {} does not exist", slot, socket.display()),
                    format!(
                        "the app of slot {slot} is not listening: check it, or `shipit rollback`"
                    ),
                ));
            }
            continue;
        };
        if !meta.file_type().is_socket() {
            checks.push(fail(
                "slots",
                format!("{} is not a socket", socket.display()),
                "move it away; the slot's app binds a unix socket there",
            ));
            continue;
        }
        let recorded = slots.record(slot).ok().flatten();
        let answers = std::os::unix::net::UnixStream::connect(&socket).is_ok();
        if !answers && recorded.is_none() {
            checks.push(fail(
                "slots",
                format!(
                    "{} is stale: nothing listens and no release runs in slot {slot}",
                    socket.display()
                ),
                format!(
                    "remove it (`rm {}`); an app that binds without removing it first fails with EADDRINUSE",
                    socket.display()
                ),
            ));
            continue;
        }
        // nginx workers run as another user, and connecting to a unix
        // socket needs write permission on it.
        let mode = meta.permissions().mode();
        if mode & 0o022 == 0 {
            checks.push(fail(
                "slots",
                format!(
                    "{} has mode {:o}: a proxy running as another user (nginx's www-data) \
                     cannot connect (502, \"Permission denied\")",
                    socket.display(),
                    mode & 0o777
                ),
                "make the app chmod its socket 0666 (or 0660 with the proxy's group); with a \
                 systemd socket unit set SocketMode=0660 and SocketGroup=www-data",
            ));
        } else {
            checks.push(pass(
                "slots",
                format!(
                    "{} ({}) is connectable by the proxy's user or group",
                    socket.display(),
                    if answers {
                        "listening"
                    } else {
                        "not answering"
                    }
                ),
            ));
        }
    }
    checks
}

fn deploy_to(layout: &Layout) -> Check {
    let root = layout.root();
    let user = crate::whoami::user();
    if root.is_dir() {
        return match access(root, AccessFlags::W_OK | AccessFlags::X_OK) {
            Ok(()) => pass(
                "deploy_to",
                format!("{} exists and is writable", root.display()),
            ),
            Err(_) => fail(
                "deploy_to",
                format!("{} is not writable by {user}", root.display()),
                format!(
                    "chown {user} {} (or run shipit as its owner)",
                    root.display()
                ),
            ),
        };
    }
    if root.exists() {
        return fail(
            "deploy_to",
            format!("{} exists and is not a directory", root.display()),
            "move it away or point deploy_to elsewhere",
        );
    }
    let mut parent: PathBuf = root.to_path_buf();
    while !parent.exists() {
        if !parent.pop() {
            break;
        }
    }
    match access(&parent, AccessFlags::W_OK | AccessFlags::X_OK) {
        Ok(()) => pass(
            "deploy_to",
            format!("{} will be created on the first deploy", root.display()),
        ),
        Err(_) => fail(
            "deploy_to",
            format!(
                "{} does not exist and {} is not writable by {user}",
                root.display(),
                parent.display()
            ),
            format!("sudo mkdir -p {0} && sudo chown {user} {0}", root.display()),
        ),
    }
}

fn releases(layout: &Layout) -> Check {
    match store::list(layout) {
        Ok(listing) if listing.foreign.is_empty() => {
            pass("releases", format!("{} releases", listing.releases.len()))
        }
        // Not a failure: deploy and prune work around them and warn.
        Ok(listing) => Check {
            fix: Some(
                "move them out of releases/ if they should not be there (release directories \
                 are named like 20261121174500; shipit never deletes what it did not create)"
                    .into(),
            ),
            ..pass(
                "releases",
                format!(
                    "{} releases; releases/ also holds entries that are not releases, which \
                     shipit leaves alone: {}",
                    listing.releases.len(),
                    listing.foreign.join(", ")
                ),
            )
        },
        Err(e) => fail(
            "releases",
            e.to_string(),
            "check the permissions of releases/",
        ),
    }
}

/// What a mutating command would refuse or fail on in `.shipit/`: links,
/// another user's directory, a lock file this user cannot open.
fn state_files(layout: &Layout) -> Check {
    if let Err(e) = crate::state::check(layout) {
        return fail(
            "state",
            one_line(&e.to_string()),
            e.hint.unwrap_or_default(),
        );
    }
    let lock = layout.lock();
    if lock.exists()
        && let Err(errno) = access(&lock, AccessFlags::R_OK | AccessFlags::W_OK)
    {
        let e = crate::state::explain(&lock, "the lock file", std::io::Error::from(errno));
        return fail(
            "state",
            one_line(&e.to_string()),
            e.hint.unwrap_or_default(),
        );
    }
    let detail = if layout.state().exists() {
        format!(
            "{} is {}'s to write",
            layout.state().display(),
            crate::whoami::user()
        )
    } else {
        format!(
            "{} will be created on the first deploy",
            layout.state().display()
        )
    };
    pass("state", detail)
}

fn current_link(layout: &Layout, current: &Current) -> Check {
    let path = layout.current();
    match current {
        Current::Missing => pass("current", "nothing deployed yet"),
        Current::Release(id) => pass("current", format!("points at {}", Layout::display(id))),
        Current::Dangling(target) => fail(
            "current",
            format!(
                "{} points at {}, which is not a release",
                path.display(),
                target.display()
            ),
            "`shipit rollback --to <id>` with an id from `shipit releases`",
        ),
        Current::NotSymlink => fail(
            "current",
            format!("{} is not a symlink", path.display()),
            format!("move it aside: mv {0} {0}.old", path.display()),
        ),
    }
}

fn source_reachable(config: &Config) -> Check {
    if let Some(archive) = &config.source.archive {
        return if archive.is_file() {
            pass("source", format!("{} is a file", archive.display()))
        } else {
            fail(
                "source",
                format!("source.archive {} is not a file", archive.display()),
                "put the CI artifact there, or deploy one with `shipit deploy --archive FILE`",
            )
        };
    }
    if let Some(dir) = &config.source.path {
        return if dir.is_dir() {
            pass("source", format!("{} is a directory", dir.display()))
        } else {
            fail(
                "source",
                format!("source.path {} is not a directory", dir.display()),
                "build it first, or point [source] path at it",
            )
        };
    }
    let url = config.source.git.as_deref().unwrap_or_default();
    let branch = &config.source.branch;
    match source::remote_has_branch(url, branch) {
        Ok(true) => pass("source", format!("{url} has branch {branch}")),
        Ok(false) => fail(
            "source",
            format!("{url} has no branch {branch:?}"),
            format!(
                "push {branch} there, or set source.branch to one of `git ls-remote --heads {url}`"
            ),
        ),
        Err(e) => fail(
            "source",
            one_line(&e.to_string()),
            format!("check the URL and access: `git ls-remote {url}`"),
        ),
    }
}

/// Join the non-empty lines of a (git) message.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("; ")
}

/// `env_file`, as [`crate::hookenv::init`] read it: present and readable,
/// or what is wrong (missing, the bad line).
fn env_file() -> Option<Check> {
    let (path, read) = crate::hookenv::status()?;
    Some(match read {
        Ok(count) => pass(
            "env_file",
            format!("{} exists ({count} variables for hooks)", path.display()),
        ),
        Err(e) => fail(
            "env_file",
            e.message.clone(),
            e.hint.clone().unwrap_or_default(),
        ),
    })
}

fn shared(config: &Config, layout: &Layout) -> Vec<Check> {
    let mut checks = Vec::new();
    for (rel, is_dir) in config.shared_paths() {
        let path = layout.shared().join(&rel);
        let check = match (is_dir, path.exists()) {
            (true, true) if path.is_dir() => {
                pass("shared", format!("{} is a directory", path.display()))
            }
            (true, true) => fail(
                "shared",
                format!("{} is not a directory", path.display()),
                "move it away (entries ending in / are directories)",
            ),
            (true, false) => pass("shared", format!("{} will be created", path.display())),
            (false, true) if path.is_file() => pass("shared", format!("{} exists", path.display())),
            (false, _) => fail(
                "shared",
                format!("shared file {} is missing", path.display()),
                format!("create it (e.g. install -D /dev/null {})", path.display()),
            ),
        };
        checks.push(check);
    }
    checks
}

/// Shell words that are not programs to look for on PATH.
const BUILTINS: &[&str] = &[
    "cd", "export", "echo", "printf", "test", "[", "true", "false", "set", "unset", "exec", "eval",
    "source", ".", ":", "if", "for", "while", "until", "case", "{", "(", "!", "exit", "return",
    "wait", "read", "trap", "umask", "command", "type", "kill", "then", "else", "elif", "fi", "do",
    "done", "esac", "}",
];

/// The program a hook command starts, when it can be told without a shell.
pub fn program_of(command: &str) -> Option<String> {
    let mut words = command.split_whitespace().skip_while(|w| {
        w.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    });
    let mut word = words.next()?;
    if word == "exec" {
        word = words.next()?;
    }
    let shell_syntax = word.contains([
        '$', '`', '"', '\'', '(', ')', ';', '|', '&', '<', '>', '*', '?',
    ]);
    if shell_syntax || BUILTINS.contains(&word) {
        return None;
    }
    // A relative path is relative to the release, which does not exist yet.
    if word.contains('/') && !word.starts_with('/') {
        return None;
    }
    Some(word.to_string())
}

fn on_path(program: &str) -> bool {
    let runnable = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.starts_with('/') {
        return runnable(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| runnable(&dir.join(program))))
}

/// The simple commands of a compound one (`cd x && pm2 start y`), split
/// where a shell would run the next command.
/// An `&` that is part of a redirection (`2>&1`, `>&2`, `<&3`, `&>file`)
/// separates nothing.
fn simple_commands(command: &str) -> Vec<&str> {
    let bytes = command.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let split = match b {
            b'\n' | b';' | b'|' => true,
            b'&' => {
                let after_redirect = i > 0 && matches!(bytes[i - 1], b'>' | b'<');
                let before_redirect = bytes.get(i + 1) == Some(&b'>');
                !after_redirect && !before_redirect
            }
            _ => false,
        };
        if split {
            parts.push(&command[start..i]);
            start = i + 1;
        }
    }
    parts.push(&command[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

fn programs(config: &Config) -> Vec<Check> {
    let slots = config.slots.as_ref();
    let mut checks = Vec::new();
    // Slots start and stop the app themselves: a reload hook left from the
    // reload path never runs, and checking its programs would vouch for it.
    let reload = match (slots, &config.hooks.reload) {
        (Some(_), Some(command)) => {
            checks.push(fail(
                "hooks",
                format!(
                    "hooks.reload (`{command}`) is set, but with [slots] no deploy or rollback \
                     runs it: slots.start and slots.stop start and stop the app"
                ),
                "remove hooks.reload from [hooks]",
            ));
            None
        }
        // With [fleet] it runs on the hosts, and is checked there.
        (_, _) if config.fleet.is_some() => None,
        (_, reload) => reload.as_ref(),
    };
    let hooks: Vec<(&str, &String)> = config
        .hooks
        .build
        .iter()
        .map(|c| ("hooks.build", c))
        .chain(
            config
                .hooks
                .migrate
                .iter()
                .filter(|_| config.fleet.is_none())
                .map(|c| ("hooks.migrate", c)),
        )
        .chain(reload.map(|c| ("hooks.reload", c)))
        .chain(
            slots
                .filter(|_| config.fleet.is_none())
                .map(|s| ("slots.start", &s.start)),
        )
        .chain(
            slots
                .filter(|_| config.fleet.is_none())
                .map(|s| ("slots.stop", &s.stop)),
        )
        .chain(
            slots
                .filter(|_| config.fleet.is_none())
                .and_then(|s| s.switch.as_ref())
                .map(|c| ("slots.switch", c)),
        )
        .collect();
    // With [fleet] the hooks run on the hosts, and whether this machine
    // (the controller) runs systemd or holds a pm2 file says nothing there.
    let on_this_host = config.fleet.is_none();
    let systemd = !on_this_host || systemd_running();
    for (key, command) in hooks {
        let parts = simple_commands(command);
        let mut said_systemd = false;
        for (i, part) in parts.iter().enumerate() {
            let invoked = invoked_program(part);
            let runs_systemctl = invoked
                .as_ref()
                .is_some_and(|(p, _)| base_name(p) == "systemctl");
            if runs_systemctl && !systemd && !said_systemd {
                checks.push(fail(
                    "hooks",
                    format!(
                        "{key} runs systemctl (`{command}`), but systemd is not running on \
                             this machine ({SYSTEMD_BOOTED} does not exist): the hook would fail \
                             with \"System has not been booted with systemd\""
                    ),
                    "deploy where systemd is PID 1 (a container booted with systemd as \
                         its init), or reload through the process manager that runs the app \
                         here (e.g. pm2: `shipit init --template pm2`)",
                ));
                said_systemd = true;
            }
            if let Some((program, args)) = invoked
                && on_this_host
                && base_name(program) == "pm2"
                && let Some(file) = pm2_file(&args, &parts[..i], &config.deploy_to)
            {
                checks.push(pm2_file_check(key, &file));
            }
            let Some(program) = program_of(part) else {
                continue;
            };
            if runs_systemctl && !systemd && base_name(&program) == "systemctl" {
                // Being on PATH is not the point: said above.
                continue;
            }
            checks.push(if on_path(&program) {
                pass("hooks", format!("{program} (in {key}) is on PATH"))
            } else {
                fail(
                    "hooks",
                    format!("{program} (in {key}: `{command}`) is not on PATH"),
                    format!("install {program}, or give its full path in {key}"),
                )
            });
        }
    }
    checks
}

/// How systemd itself tells that it runs as the init system (sd_booted(3)):
/// `systemctl` fails anywhere else.
const SYSTEMD_BOOTED: &str = "/run/systemd/system";

fn systemd_running() -> bool {
    Path::new(SYSTEMD_BOOTED).is_dir()
}

fn base_name(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// The program a simple command runs and its arguments, quotes removed,
/// looking through `VAR=x`, `exec`, `sudo`/`doas` and their options.
fn invoked_program(command: &str) -> Option<(&str, Vec<&str>)> {
    let mut words = command
        .split_whitespace()
        .map(|w| w.trim_matches(['"', '\'']))
        .skip_while(|w| {
            w.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        })
        .peekable();
    while let Some(w) = words.peek() {
        if matches!(base_name(w), "exec" | "sudo" | "doas") || w.starts_with('-') {
            words.next();
        } else {
            break;
        }
    }
    let program = words.next()?;
    Some((program, words.collect()))
}

/// The file a pm2 command is given (`pm2 startOrReload
/// shared/ecosystem.config.js`), where it can be told before the hook runs:
/// an absolute path, one under `$SHIPIT_DEPLOY_TO`, or a relative one after
/// a `cd` to either. A path relative to the release is not known yet.
fn pm2_file(args: &[&str], before: &[&str], deploy_to: &Path) -> Option<PathBuf> {
    let file = args.iter().find(|a| {
        let name = base_name(a);
        !a.starts_with('-')
            && (name.ends_with(".config.js")
                || name.ends_with(".config.cjs")
                || name.starts_with("ecosystem."))
    })?;
    let resolve = |word: &str| -> Option<PathBuf> {
        for var in ["$SHIPIT_DEPLOY_TO", "${SHIPIT_DEPLOY_TO}"] {
            if word == var {
                return Some(deploy_to.to_path_buf());
            }
            if let Some(rest) = word.strip_prefix(var).and_then(|r| r.strip_prefix('/')) {
                return Some(deploy_to.join(rest.trim_matches('"')));
            }
        }
        word.starts_with('/').then(|| PathBuf::from(word))
    };
    if let Some(path) = resolve(file) {
        return Some(path);
    }
    if file.contains('$') {
        return None;
    }
    // The last `cd` before the pm2 command decides what a relative path means.
    let dir = before.iter().rev().find_map(|part| {
        let mut words = part.split_whitespace();
        (words.next() == Some("cd")).then(|| words.next().map(|w| w.replace('"', "")))
    })??;
    resolve(&dir).map(|d| d.join(file))
}

fn pm2_file_check(key: &str, file: &Path) -> Check {
    if file.is_file() {
        return pass(
            "hooks",
            format!("{} (the pm2 file in {key}) exists", file.display()),
        );
    }
    let template = if base_name(&file.display().to_string()) == "slots.config.js" {
        "pm2-slots"
    } else {
        "pm2"
    };
    fail(
        "hooks",
        format!(
            "{} (the pm2 file in {key}) does not exist: pm2 cannot start the app from it",
            file.display()
        ),
        format!(
            "`shipit init --template {template}` writes one: review it and copy it to {}",
            file.display()
        ),
    )
}

fn health_now(config: &Config, layout: &Layout, current: &Current) -> Check {
    let Some(h) = &config.health else {
        return pass("health", "no [health] section: deploys are not gated");
    };
    let url = crate::urls::redact_url(&h.url);
    let Some(id) = current.id() else {
        return pass(
            "health",
            format!("{url} is well formed (nothing live to probe)"),
        );
    };
    let revision = store::revision(layout, id);
    let body = h
        .expect_body
        .as_deref()
        .map(|t| health::expected_body(t, id.as_str(), revision.as_deref()));
    let seen = health::probe(
        &health::agent(h.request_timeout),
        &h.url,
        h.expect_status,
        body.as_deref(),
    );
    if seen.passed {
        pass(
            "health",
            format!("{url} answers for {}: {}", Layout::display(id), seen.detail),
        )
    } else {
        fail(
            "health",
            format!(
                "{url} does not pass for the live {}: {}",
                Layout::display(id),
                seen.detail
            ),
            "check the app and its process manager; `shipit status` probes again",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_of_hook_commands() {
        assert_eq!(program_of("npm ci --omit=dev").as_deref(), Some("npm"));
        assert_eq!(
            program_of("NODE_ENV=production npm run build").as_deref(),
            Some("npm")
        );
        assert_eq!(
            program_of("exec /usr/bin/pm2 reload x").as_deref(),
            Some("/usr/bin/pm2")
        );
        assert_eq!(program_of("cd web && make"), None);
        assert_eq!(program_of("./bin/build"), None);
        assert_eq!(program_of("$HOME/bin/x"), None);
        assert_eq!(program_of("echo hi"), None);
        // The words of `if ...; then ...; fi` split at `;` are not programs.
        assert_eq!(program_of("then export BROKEN=1"), None);
        assert_eq!(program_of("fi"), None);
    }

    #[test]
    fn the_program_a_command_invokes_is_found_through_sudo_and_quotes() {
        let (p, args) = invoked_program("sudo -n systemctl restart a.service").unwrap();
        assert_eq!((p, args), ("systemctl", vec!["restart", "a.service"]));
        let (p, _) = invoked_program("FOO=1 exec /usr/bin/pm2 reload x").unwrap();
        assert_eq!(base_name(p), "pm2");
        assert_eq!(invoked_program("").map(|(p, _)| p), None);
    }

    #[test]
    fn the_pm2_file_is_resolved_where_a_hook_says_where_it_is() {
        let root = Path::new("/srv/shop");
        let parts = simple_commands(
            "cd \"$SHIPIT_DEPLOY_TO\" && pm2 startOrReload shared/ecosystem.config.js --update-env",
        );
        let (_, args) = invoked_program(parts[1]).unwrap();
        assert_eq!(
            pm2_file(&args, &parts[..1], root),
            Some(PathBuf::from("/srv/shop/shared/ecosystem.config.js"))
        );
        let file = |hook: &str| {
            let (_, args) = invoked_program(hook).unwrap();
            pm2_file(&args, &[], root)
        };
        assert_eq!(
            file("pm2 start \"$SHIPIT_DEPLOY_TO/shared/slots.config.js\" --only a"),
            Some(PathBuf::from("/srv/shop/shared/slots.config.js"))
        );
        assert_eq!(
            file("pm2 reload /etc/pm2/ecosystem.config.js"),
            Some(PathBuf::from("/etc/pm2/ecosystem.config.js"))
        );
        // Relative to the release, which does not exist yet: not checked.
        assert_eq!(file("pm2 startOrReload ecosystem.config.js"), None);
        assert_eq!(file("pm2 reload all"), None);
    }

    #[test]
    fn the_port_of_a_health_url() {
        assert_eq!(health_url_port("http://127.0.0.1:3001/up"), Some(3001));
        assert_eq!(health_url_port("http://u:p@front/up"), Some(80));
        assert_eq!(health_url_port("http://[::1]:8080/"), Some(8080));
        assert_eq!(health_url_port("http://[::1]/"), Some(80));
    }

    #[test]
    fn compound_commands_split_where_a_shell_runs_the_next_one() {
        assert_eq!(
            simple_commands("cd \"$X\" && pm2 startOrReload a; b | c\nd & e"),
            ["cd \"$X\"", "pm2 startOrReload a", "b", "c", "d", "e"]
        );
        // Redirections are not separators.
        assert_eq!(
            simple_commands("npm ci >/dev/null 2>&1 && make &>log; x <&3 >&2"),
            ["npm ci >/dev/null 2>&1", "make &>log", "x <&3 >&2"]
        );
    }
}
