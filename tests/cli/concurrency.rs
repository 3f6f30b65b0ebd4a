//! Eight deploys started at once: without --wait exactly one runs and the
//! others fail fast naming the holder; with --wait all run, one after
//! another, each recorded once and each release whole.

use std::collections::BTreeSet;
use std::process::{Output, Stdio};

use crate::sandbox::Sandbox;

const N: usize = 8;

fn start_all(sb: &Sandbox, args: &[&str]) -> Vec<Output> {
    let children: Vec<_> = (0..N)
        .map(|_| {
            sb.command(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

fn ok_deploys(sb: &Sandbox) -> Vec<String> {
    sb.history_json()
        .iter()
        .filter(|e| e["event"] == "deploy" && e["outcome"] == "ok")
        .map(|e| e["release"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn without_wait_exactly_one_of_eight_runs() {
    let sb = Sandbox::new();
    sb.write_config("keep_releases = 20\n[hooks]\nbuild = [\"sleep 1\"]\n");
    let outputs = start_all(&sb, &["deploy"]);
    let winners: Vec<_> = outputs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(winners.len(), 1, "exactly one deploy runs");
    for o in outputs.iter().filter(|o| !o.status.success()) {
        let said = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(6), "{said}");
        assert!(
            said.contains("held by pid") && said.contains("shipit deploy"),
            "{said}"
        );
    }
    assert_eq!(sb.releases().len(), 1);
    assert_eq!(ok_deploys(&sb).len(), 1);
}

#[test]
fn with_wait_all_eight_run_one_after_another() {
    let sb = Sandbox::new();
    sb.write_config(
        "keep_releases = 20\n[hooks]\nbuild = [\"sleep 0.2; echo done > built.txt\"]\n",
    );
    let outputs = start_all(&sb, &["deploy", "--wait=120s"]);
    for o in &outputs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let releases = sb.releases();
    assert_eq!(releases.len(), N);
    for r in &releases {
        let dir = sb.deploy_to().join("releases").join(r);
        assert!(
            dir.join(".shipit-release.json").is_file() && dir.join("built.txt").is_file(),
            "{r} is whole"
        );
    }
    let recorded = ok_deploys(&sb);
    assert_eq!(recorded.len(), N, "each deploy is in the history once");
    let distinct: BTreeSet<_> = recorded.iter().collect();
    assert_eq!(distinct.len(), N);
    assert_eq!(distinct.into_iter().cloned().collect::<Vec<_>>(), releases);
}
