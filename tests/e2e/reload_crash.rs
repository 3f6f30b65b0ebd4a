//! The reload path with a release that crashes at startup: pm2 in cluster
//! mode (the generated pm2 file) behind nginx (the generated site), under
//! keep-alive load. pm2 replaces the workers anyway and nginx answers 502;
//! before `health.grace`, refused connections and 502-504 never counted
//! towards `health.fail_after` and users met errors for the whole
//! `health.timeout`. Counted: failed requests during each deploy and while
//! its gate ran.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::load;
use crate::report::{self, Kind, Mark};
use crate::{CONNECTIONS, MANIFEST, World, expect};

#[test]
fn a_release_that_crashes_at_startup_fails_after_the_grace() {
    let mut world = World::new();
    let (site, hook) = crate::reload_path_site(&world);
    expect(&world.shipit(&["deploy"]), 0, "first deploy");
    let live = world.current();
    world.start_nginx_with_site(&site);
    world.front().wait_for(&live);

    let load = load::Load::start(world.front().addr(), CONNECTIONS);
    let mut marks: Vec<Mark> = Vec::new();
    world.front().wait_for(&live);
    world.commit("CRASH", Some(""));
    // First as before health.grace existed (a grace as long as the
    // timeout: down never counts), then with a grace of 1 s.
    let settings = [
        (Kind::Broken, "grace = \"8s\"\n"),
        (Kind::BrokenFailFast, "grace = \"1s\"\n"),
    ];
    let mut runs = Vec::new();
    for (kind, health) in settings {
        world.write_reload_config_with(&hook, health);
        let start = load.now();
        let (out, lines) = world.shipit_noting(&["deploy"], &load);
        let end = load.now();
        marks.push(Mark { kind, start, end });
        let at = |verb: &str| {
            lines
                .iter()
                .find(|(_, l)| l.trim_start().starts_with(verb))
                .map(|(t, _)| *t)
                .unwrap_or_else(|| panic!("no {verb:?} line in:\n{lines:#?}"))
        };
        let gate = (at("Checking"), at("Rolling back"));
        let said = expect(&out, 4, "the crashing release is rolled back");
        assert_eq!(world.current(), live);
        world.front().wait_for(&live);
        runs.push((start, end, gate, said));
    }
    let settle = load.now() + Duration::from_secs(1);
    while load.now() < settle {
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = load.now();
    let samples = load.finish();
    let failed = |from: Duration, to: Duration| {
        samples
            .iter()
            .filter(|s| s.at >= from && s.at <= to && !s.outcome.ok())
            .count()
    };
    let figures: Vec<_> = runs
        .iter()
        .map(|(start, end, (gate_from, gate_to), _)| Figures {
            all: failed(*start, *end),
            secs: (*end - *start).as_secs_f64(),
            gate: failed(*gate_from, *gate_to),
            gate_secs: (*gate_to - *gate_from).as_secs_f64(),
            reload_in: (*gate_from - *start).as_secs_f64(),
            reload_back: (*end - *gate_to).as_secs_f64(),
        })
        .collect();
    let outside = samples
        .iter()
        .filter(|s| !s.outcome.ok() && report::window_of(&marks, s.at).is_none())
        .count();
    let table = report::table(&samples, &marks, run);
    let line = |f: &Figures| {
        format!(
            "the gate ran {:.1} s and users got {} failed requests during it; {} failed requests \
             in the whole deploy ({:.1} s: the reload hook into the release {:.1} s, the gate, \
             the rollback's reload {:.1} s)",
            f.gate_secs, f.gate, f.all, f.secs, f.reload_in, f.reload_back
        )
    };
    let text = format!(
        "A release that crashes at startup on the reload path: pm2 cluster (2 workers, the \
         generated pm2 file) behind nginx (the generated site), {CONNECTIONS} keep-alive \
         connections of load for {:.0} s; health.timeout = 8s, interval 200ms, successes 3, \
         fail_after 5 (the default):\n\n{table}\n\
         - grace = 8s (refused connections and 502-504 never count, as before): {};\n\
         - grace = 1s: {}.\n\
         Failed requests outside the two deploys: {outside}.\n",
        run.as_secs_f64(),
        line(&figures[0]),
        line(&figures[1]),
    );
    println!("{text}");
    let out_dir = Path::new(MANIFEST).join("target/e2e");
    fs::create_dir_all(&out_dir).unwrap();
    fs::write(out_dir.join("reload-crash-report.md"), &text).unwrap();

    let (slow, fast) = (&runs[0].3, &runs[1].3);
    assert!(
        slow.contains("0 of 3 consecutive probes passed within 8s"),
        "{slow}"
    );
    assert!(
        fast.contains("health.grace = 1s") && fast.contains("health.fail_after = 5"),
        "the message names both settings:\n{fast}"
    );
    assert!(figures[0].gate > 0, "users met the crash\n{text}");
    assert!(
        figures[1].gate < figures[0].gate,
        "with a grace, users meet fewer errors while the gate runs\n{text}"
    );
    assert_eq!(outside, 0, "{text}");
}

/// What one deploy of the crashing release cost.
struct Figures {
    all: usize,
    secs: f64,
    gate: usize,
    gate_secs: f64,
    reload_in: f64,
    reload_back: f64,
}
