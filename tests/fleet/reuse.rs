//! `[[reuse]]` on a fleet: the controller's one build copies a directory
//! from the newest rollout that went well on every host when its key did
//! not change, and the hosts receive it in the tree as they receive any
//! build.

use std::fs;

use crate::{Options, World};

/// How many times the `run` of the `[[reuse]]` entry ran on the controller.
fn runs(w: &World) -> usize {
    fs::read_to_string(w.path().join("runs.log"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// What `deps/content` holds in `id` on every host.
fn contents(w: &World, id: &str) -> Vec<Option<String>> {
    w.hosts
        .hosts
        .iter()
        .map(|h| {
            let file = h.deploy().join("releases").join(id).join("deps/content");
            fs::read_to_string(file).ok()
        })
        .collect()
}

#[test]
fn the_controller_reuses_what_a_rollout_that_went_well_everywhere_built() {
    let w = World::new(2, Options::default());
    let log = w.path().join("runs.log");
    let config = fs::read_to_string(w.config()).unwrap();
    fs::write(
        w.config(),
        format!(
            "{config}\n[[reuse]]\npath = \"deps\"\nkey = [\"deps.lock\"]\nrun = [\"echo run >> '{}' && mkdir deps && cat deps.lock > deps/content\"]\n",
            log.display()
        ),
    )
    .unwrap();
    w.commit("deps.lock", "a\n");
    let first = w.deploy_ok();
    assert_eq!(runs(&w), 1);
    assert_eq!(contents(&w, &first), vec![Some("a\n".to_string()); 2]);

    // The key did not change: the directory comes from the first build.
    w.commit("VERSION", "1\n");
    let run = w.shipit(&["deploy", "--json"]);
    run.code(0);
    run.says(&format!("Reused deps from releases/{first} (key unchanged"));
    let second = run.json()["release"].as_str().unwrap().to_string();
    assert_eq!(runs(&w), 1, "run ran again with an unchanged key");
    assert_eq!(w.currents(), vec![Some(second.clone()); 2]);
    assert_eq!(contents(&w, &second), vec![Some("a\n".to_string()); 2]);

    // A changed key builds it again.
    w.commit("deps.lock", "b\n");
    let third = w.deploy_ok();
    assert_eq!(runs(&w), 2);
    assert_eq!(contents(&w, &third), vec![Some("b\n".to_string()); 2]);

    // A rollout that failed on host2 and was reverted built a new key...
    w.commit("deps.lock", "c\n");
    w.commit("BROKEN_ON", "host2\n");
    let run = w.shipit(&["deploy", "--json"]);
    run.code(8);
    assert_eq!(run.json()["outcome"], "fleet-reverted");
    assert_eq!(runs(&w), 3);
    // ...but it is no source: the same key is built again.
    w.commit("BROKEN_ON", "nobody\n");
    let run = w.shipit(&["deploy", "--json"]);
    run.code(0);
    run.says("Building deps (no release that proved itself has this key)");
    let fifth = run.json()["release"].as_str().unwrap().to_string();
    assert_eq!(runs(&w), 4, "a reverted rollout was a source");
    assert_eq!(contents(&w, &fifth), vec![Some("c\n".to_string()); 2]);

    // The controller keeps the copies of the last few rollouts that went
    // well, and none of the reverted one.
    let kept = w.path().join("controller/.shipit-fleet/.shipit/reuse");
    let mut names: Vec<String> = fs::read_dir(&kept)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected = vec![
        first.clone(),
        third.clone(),
        fifth.clone(),
        format!("{second}.json"),
        format!("{third}.json"),
        format!("{fifth}.json"),
    ];
    expected.sort();
    assert_eq!(names, expected);
}
