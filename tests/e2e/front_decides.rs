//! The front decides: "deployed" only when users get the new release
//! through nginx, and a release nginx cannot reach is refused before any
//! user meets it. Real nginx whose workers run as another user (`nobody`),
//! the generated nginx-slots site (upstream `keepalive 16`) and pm2-slots
//! file, constant keep-alive load through nginx; every figure is a count
//! of failed requests or of answers from a release users must not get.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::load::{self, Outcome, Sample};
use crate::report::{self, Kind, Mark};
use crate::{CONNECTIONS, MANIFEST, Stage, World, expect};

const PACE: Duration = Duration::from_millis(10);

/// A slots world: the templates as `shipit init` writes them, nginx in
/// front (workers as nobody), a first release live in blue. `slots` adds
/// keys to `[slots]`.
pub(crate) fn slots_world(slots: &str) -> World {
    let mut world = World::new();
    // nginx workers run as nobody: they must search the way to run/.
    fs::set_permissions(
        world.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let shared = world.path().join("deploy/shared");
    fs::create_dir_all(&shared).unwrap();
    write_slots_config(&world, slots);
    expect(
        &world.shipit(&[
            "init",
            "--template",
            "pm2-slots",
            "--template",
            "nginx-slots",
            "--app",
            "shipit-e2e",
            "--out",
            shared.to_str().unwrap(),
        ]),
        0,
        "render the slots templates",
    );
    let site = shared.join("nginx-shipit-e2e-slots.conf");
    let text = fs::read_to_string(&site).unwrap();
    assert!(text.contains("keepalive 16;"), "{text}");
    // It listens on health.url's port (the front's); on loopback only here.
    let listen = format!("listen {};", world.nginx_port);
    assert!(text.contains(&listen), "{text}");
    fs::write(
        &site,
        text.replace(&listen, &format!("listen 127.0.0.1:{};", world.nginx_port)),
    )
    .unwrap();
    assert!(world.pm2(&["ping"]).status.success());
    world.start_nginx_with_site(&site);
    expect(&world.shipit(&["deploy"]), 0, "first deploy into slot blue");
    let first = world.current();
    world.front().wait_for(&first);
    world
}

fn write_slots_config(world: &World, slots: &str) {
    fs::write(
        world.path().join("shipit.toml"),
        format!(
            r#"deploy_to = "deploy"
keep_releases = 30

[source]
git = "app"

[health]
url = "http://127.0.0.1:{port}/healthz"
expect_body = "\"release\":\"{{release}}\""
successes = 3
interval = "200ms"
timeout = "20s"

# As the pm2-slots template prints them.
[slots]
start = "cd \"$SHIPIT_DEPLOY_TO\" && pm2 start shared/slots.config.js >/dev/null"
stop = "cd \"$SHIPIT_DEPLOY_TO\" && pm2 delete shared/slots.config.js >/dev/null"
{slots}
"#,
            port = world.nginx_port
        ),
    )
    .unwrap();
}

fn answers_from(samples: &[Sample], release: &str, (after, until): (Duration, Duration)) -> usize {
    samples
        .iter()
        .filter(|s| s.at > after && s.at < until && s.release() == Some(release))
        .count()
}

fn failed_between(samples: &[Sample], from: Duration, to: Duration) -> usize {
    samples
        .iter()
        .filter(|s| s.at >= from && s.at <= to && !s.outcome.ok())
        .count()
}

/// Run `deploy` (or `rollback`) under `load` and mark it.
fn marked(
    world: &World,
    load: &load::Load,
    marks: &mut Vec<Mark>,
    kind: Kind,
    args: &[&str],
) -> (std::process::Output, Mark) {
    let start = load.now();
    let out = world.shipit(args);
    let mark = Mark {
        kind,
        start,
        end: load.now(),
    };
    marks.push(mark.clone());
    (out, mark)
}

/// Issue 19, 1: a release whose socket nginx's workers may not use passed
/// its gate (probed as root), was switched to, and was reported deployed
/// while users got 502; pooled connections to the old slot answered the
/// check through the front; with warm standby users kept the old release.
#[test]
fn slots_the_front_decides_what_deployed_means() {
    let world = slots_world("");
    // Paced (about 100 requests a second per connection), so that nginx's
    // pooled upstream connections live for seconds, as in production,
    // instead of being recycled by keepalive_requests every few ms.
    let load = load::Load::paced(world.front().addr(), CONNECTIONS, PACE);
    let mut marks: Vec<Mark> = Vec::new();
    let mut lines = Vec::new();
    world.front().wait_for(&world.current());

    // (a) A socket the workers may not connect to (0755, owned by root):
    // refused before the switch.
    let live = world.current();
    world.commit("SOCKET_MODE", Some("0755\n"));
    let (out, unreachable) = marked(&world, &load, &mut marks, Kind::Broken, &["deploy"]);
    let said = expect(&out, 4, "a release the front may not reach is refused");
    assert!(said.contains("may not connect to"), "{said}");
    assert!(said.contains("needs write permission on"), "{said}");
    assert!(said.contains("no user request reached it"), "{said}");
    let refused_socket = world.releases_json()["releases"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(world.current(), live);
    assert_eq!(
        world.front().served_release(6).as_deref(),
        Some(live.as_str())
    );

    // The same release with a front_user that is not nginx's: the check
    // before the switch is fooled, and the check through the front, after
    // the switch, must catch the 502s at once and switch back.
    write_slots_config(&world, "front_user = \"root\"");
    world.commit("VERSION", Some("fooled\n"));
    let (out, fooled) = marked(&world, &load, &mut marks, Kind::BrokenFailFast, &["deploy"]);
    let said = expect(&out, 4, "the check through the front switches back");
    assert!(said.contains("the front could not reach"), "{said}");
    assert!(said.contains("502"), "{said}");
    assert_eq!(world.current(), live);
    world.front().wait_for(&live);
    world.commit("SOCKET_MODE", None);

    // (b) Good deploys: once shipit says deployed, users get the new
    // release; the old slot closes its pooled connections at the switch,
    // also when it stays as a warm standby.
    let mut stale = Vec::new();
    for (n, slots) in [
        (1, ""),
        (2, "warm_standby = true"),
        (3, "warm_standby = true"),
    ] {
        write_slots_config(&world, slots);
        world.commit("VERSION", Some(&format!("{n}\n")));
        let old = world.current();
        let (out, mark) = marked(&world, &load, &mut marks, Kind::Deploy, &["deploy"]);
        expect(&out, 0, &format!("good deploy {n} ({slots})"));
        let new = world.current();
        assert_ne!(new, old);
        stale.push((
            format!(
                "deploy {n} ({})",
                if slots.is_empty() { "retire" } else { slots }
            ),
            old,
            mark,
        ));
    }
    // A rollback to the warm standby: a rename, and the slot it leaves
    // closes its pooled connections too.
    let old = world.current();
    let (out, mark) = marked(&world, &load, &mut marks, Kind::Rollback, &["rollback"]);
    let said = expect(&out, 0, "rollback to the warm standby");
    assert!(said.contains("Warm"), "{said}");
    stale.push(("rollback to the warm standby".into(), old, mark));
    // Give the load time to meet any pooled connection left to an old
    // slot: the same length as the pool's idle timeout (4 s).
    let settle = load.now() + Duration::from_secs(4);
    while load.now() < settle {
        std::thread::sleep(Duration::from_millis(100));
    }

    // 2. A start command that binds the live slot's socket: users meet
    // the release until it is refused and stopped, and then the live
    // slot has no socket. shipit must say so, not "no user request
    // reached it".
    write_slots_config(&world, "");
    let live = world.current();
    world.commit("WRONG_SOCKET", Some(""));
    let (out, taken) = marked(&world, &load, &mut marks, Kind::Broken, &["deploy"]);
    let said = expect(&out, 5, "a release that took the live slot's socket");
    assert!(!said.contains("no user request reached it"), "{said}");
    assert!(said.contains("does not serve users as it did"), "{said}");
    assert!(said.contains("answers as releases/"), "{said}");
    let hijacker = world.releases_json()["releases"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(world.current(), live);
    // What the message says to do: deploy a good revision.
    world.commit("WRONG_SOCKET", None);
    let (out, recovered) = marked(&world, &load, &mut marks, Kind::Deploy, &["deploy"]);
    expect(&out, 0, "a good revision after the outage");
    world.front().wait_for(&world.current());
    let settle = load.now() + Duration::from_secs(1);
    while load.now() < settle {
        std::thread::sleep(Duration::from_millis(100));
    }

    let run = load.now();
    let samples = load.finish();
    let from_refused = samples
        .iter()
        .filter(|s| s.release() == Some(refused_socket.as_str()))
        .count();
    let failed_unreachable = failed_between(&samples, unreachable.start, unreachable.end);
    let failed_fooled = failed_between(&samples, fooled.start, fooled.end);
    let bad_gateway = samples
        .iter()
        .filter(|s| s.at >= fooled.start && s.at <= fooled.end && s.outcome == Outcome::Status(502))
        .count();
    let failed_good = samples
        .iter()
        .filter(|s| {
            !s.outcome.ok()
                && !(fooled.start..=fooled.end).contains(&s.at)
                && !(taken.start..=recovered.end).contains(&s.at)
        })
        .count();
    let from_hijacker = samples
        .iter()
        .filter(|s| s.release() == Some(hijacker.as_str()))
        .count();
    let failed_taken = failed_between(&samples, taken.start, recovered.start);
    // From the end of each good deploy or rollback to the start of the
    // next one (or the end of the run).
    let mut old_after = 0;
    for (i, (what, old, mark)) in stale.iter().enumerate() {
        let until = stale.get(i + 1).map_or(run, |(_, _, next)| next.start);
        let after = answers_from(&samples, old, (mark.end, until));
        old_after += after;
        lines.push(format!(
            "- {what}: answers from the release it replaced, after shipit exited: {after}"
        ));
    }
    let table = report::table(&samples, &marks, run);
    let text = format!(
        "The front decides (slots, pm2-slots file, generated nginx-slots site with upstream \
         keepalive 16, nginx workers as nobody, {CONNECTIONS} keep-alive connections of load, each \
         pausing {PACE:?} between requests, for {:.0} s):\n\n{table}\n\
         - a release whose socket is 0755 (root's): refused before the switch, exit 4; failed \
         requests during that deploy: {failed_unreachable}; answers from it: {from_refused};\n\
         - the same with slots.front_user = \"root\" (the check before the switch fooled): the \
         check through the front failed at the first 502 and switched back, exit 4; failed \
         requests during that deploy: {failed_fooled} ({bad_gateway} of them 502);\n\
         {}\n\
         - a start command that bound the live slot's socket: refused, exit 5 (\"the live slot \
         does not serve users as it did\"); answers from that release: {from_hijacker}; failed \
         requests from its deploy until a good revision was deployed: {failed_taken};\n\
         Failed requests outside those two deploys: {failed_good}.\n",
        run.as_secs_f64(),
        lines.join("\n"),
    );
    println!("{text}");
    let out_dir = Path::new(MANIFEST).join("target/e2e");
    fs::create_dir_all(&out_dir).unwrap();
    fs::write(out_dir.join("front-decides-report.md"), &text).unwrap();

    assert!(
        samples.len() > 1000,
        "the load ran ({} requests)",
        samples.len()
    );
    assert_eq!(failed_unreachable, 0, "{text}");
    assert_eq!(from_refused, 0, "{text}");
    assert_eq!(failed_good, 0, "{text}");
    assert_eq!(
        old_after, 0,
        "users kept getting an old release after shipit said it was done\n{text}"
    );
}
