//! What the controller reports and records is what happened (issue #22).

use std::fs;

use crate::hosts::git;
use crate::{Options, World};

/// The controller's history used to record `previous: null` for every
/// rollout (`nothing -> R2` while every host ran R1), and a fleet rollback
/// without its revision.
#[test]
fn the_controllers_history_names_what_the_fleet_ran_before_and_the_revision() {
    let w = World::new(2, Options::default());
    let first = w.deploy_ok();
    let sha = git(&w.path().join("app"), &["rev-parse", "HEAD"]);
    w.commit("VERSION", "2\n");
    let second = w.deploy_ok();
    w.shipit(&["rollback"]).code(0);
    let history = w.shipit(&["history", "--json"]);
    history.code(0);
    let events = history.json();
    let events = events.as_array().unwrap();
    assert_eq!(events[0]["event"], "rollback", "{events:?}");
    assert_eq!(events[0]["release"], first.as_str());
    assert_eq!(events[0]["previous"], second.as_str());
    assert_eq!(events[0]["revision"], sha.as_str());
    assert_eq!(events[1]["release"], second.as_str());
    assert_eq!(events[1]["previous"], first.as_str());
    assert_eq!(events[2]["release"], first.as_str());
    assert!(events[2]["previous"].is_null());
}

/// A host where the install fails after the connection worked (a full
/// disk, here a `bin` that is not a directory) used to be reported "could
/// not reach" with the BatchMode hint: the report says what failed.
#[test]
fn a_host_where_the_install_fails_is_not_called_unreachable() {
    let w = World::new(2, Options::default());
    let state = w.hosts.hosts[1].deploy().join(".shipit");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("bin"), "not a directory\n").unwrap();
    let run = w.shipit(&["deploy", "--json"]);
    run.code(3);
    assert!(
        !run.stderr.contains("could not reach") && !run.stderr.contains("BatchMode"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("could not start on {}", w.hosts.hosts[1].dest)),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("could not install the config"),
        "{}",
        run.stderr
    );
    let json = run.json();
    assert!(
        json["hosts"][1]["message"]
            .as_str()
            .unwrap()
            .contains("could not install the config"),
        "{json}"
    );
    assert_eq!(w.currents(), vec![None, None]);
}
