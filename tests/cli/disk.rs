//! Disk per release: `releases` shows what each release costs (allocated
//! bytes) and what it shares with no other file, and the total; `prune
//! --dry-run` says what it would free at least. The figures are measured
//! when a release is published (and when prune removes others) and kept in
//! its metadata; a release published before that shows `?`. On ext4 and
//! tmpfs releases share nothing; on XFS with reflink a reused directory is
//! shared with its pristine copy, and a clone becomes a release's own once
//! the release it shared with is pruned.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::loopfs::{Fs, LoopMount};
use crate::sandbox::Sandbox;

const BIG: usize = 200_000;

fn figure(row: &Value, field: &str) -> u64 {
    row[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {row}"))
}

/// Drop the disk figures from a release's metadata, as shipit wrote it
/// before it measured releases.
fn forget_figures(release: &Path) {
    let path = release.join(".shipit-release.json");
    let mut meta: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert!(meta.get("disk").is_some(), "measured at publish: {meta}");
    meta.as_object_mut().unwrap().remove("disk");
    fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

#[test]
fn releases_show_each_size_what_is_unshared_and_the_total() {
    let sb = Sandbox::new();
    let mut ids = Vec::new();
    for n in 0..3 {
        fs::write(sb.repo().join("big.txt"), format!("{n}").repeat(BIG)).unwrap();
        sb.commit("n.txt", &format!("{n}\n"));
        ids.push(sb.deploy());
    }
    let json = sb.releases_json();
    let rows = json["releases"].as_array().unwrap();
    let (mut size, mut unshared) = (0, 0);
    for row in rows {
        let s = figure(row, "size_bytes");
        let u = figure(row, "unshared_bytes");
        assert!(s >= BIG as u64, "{row}");
        // The sandbox is on ext4 or tmpfs: releases share nothing.
        assert_eq!(u, s, "{row}");
        size += s;
        unshared += u;
    }
    assert_eq!(json["disk"]["size_bytes"], size);
    assert_eq!(json["disk"]["unshared_bytes"], unshared);
    assert_eq!(json["disk"]["unmeasured"], 0);
    let text = sb.run(&["releases"]).ok().stdout.clone();
    assert!(text.contains("SIZE") && text.contains("UNSHARED"), "{text}");
    assert!(text.contains("total: "), "{text}");
    assert!(text.contains("in 3 release(s)"), "{text}");

    // Metadata written before shipit measured releases still reads.
    forget_figures(&sb.deploy_to().join("releases").join(&ids[0]));
    let json = sb.releases_json();
    let oldest = &json["releases"][2];
    assert_eq!(oldest["id"], ids[0].as_str());
    assert!(oldest["size_bytes"].is_null(), "{oldest}");
    assert_eq!(json["disk"]["unmeasured"], 1);
    assert!(figure(&json["disk"], "size_bytes") < size);
    let text = sb.run(&["releases"]).ok().stdout.clone();
    let line = text.lines().find(|l| l.contains(&ids[0])).unwrap();
    assert!(line.contains(" ? "), "{line}");
    assert!(text.contains("1 release has no figure"), "{text}");
}

#[test]
fn a_dry_run_prune_says_what_it_would_free_at_least() {
    let sb = Sandbox::new();
    let mut ids = Vec::new();
    for n in 0..4 {
        // Each release a different size, so the figure names which ones.
        fs::write(
            sb.repo().join("big.txt"),
            format!("{n}").repeat(BIG * (n + 1)),
        )
        .unwrap();
        sb.commit("n.txt", &format!("{n}\n"));
        ids.push(sb.deploy());
    }
    let json = sb.releases_json();
    let unshared = |id: &str| {
        let rows = json["releases"].as_array().unwrap();
        let row = rows.iter().find(|r| r["id"] == id).unwrap();
        figure(row, "unshared_bytes")
    };
    let plan = sb
        .run(&["prune", "--keep", "1", "--dry-run", "--json"])
        .ok()
        .json();
    let removed: Vec<&str> = plan["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(removed, [ids[0].as_str(), ids[1].as_str()]);
    let expected: u64 = removed.iter().map(|id| unshared(id)).sum();
    assert!(expected >= 2 * BIG as u64);
    assert_eq!(plan["would_free"]["unshared_bytes"], expected, "{plan}");
    let run = sb.run(&["prune", "--keep", "1", "--dry-run"]);
    let said = format!("Would free at least {}", human(expected));
    run.ok().says(&said);
    assert_eq!(sb.releases().len(), 4, "a dry run removes nothing");
}

/// As shipit prints bytes (`disk::human`).
fn human(bytes: u64) -> String {
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", ["KiB", "MiB", "GiB"][unit])
}

/// On XFS with reflink: a reused directory shares its extents with its
/// pristine copy (unshared ≪ size), and a release cloned from a directory
/// source shares them with that source until it is the last to hold them;
/// prune measures the remaining releases again.
#[test]
fn on_xfs_a_reused_directory_is_shared_and_prune_measures_again() {
    const DEPS: u64 = 8 << 20;
    let sb = Sandbox::new();
    let disk = sb.path().join("disk");
    let Some(_mount) = LoopMount::create(&sb.path().join("xfs.img"), &disk, Fs::XfsReflink) else {
        return;
    };
    let site = disk.join("site");
    fs::create_dir_all(&site).unwrap();
    fs::write(site.join("lock"), "v1\n").unwrap();
    sb.write_raw_config(&format!(
        "deploy_to = \"{}\"\nkeep_releases = 5\n[source]\npath = \"{}\"\n\
         [[reuse]]\npath = \"deps\"\nkey = [\"lock\"]\n\
         run = [\"mkdir -p deps && head -c {DEPS} /dev/urandom > deps/blob\"]\n",
        disk.join("deploy").display(),
        site.display()
    ));
    let deploy = || sb.run(&["deploy"]).ok().stdout.clone();
    deploy();
    fs::write(site.join("index.html"), "v2\n").unwrap();
    deploy();
    let json = sb.run(&["releases", "--json"]).ok().json();
    for row in json["releases"].as_array().unwrap() {
        let size = figure(row, "size_bytes");
        let unshared = figure(row, "unshared_bytes");
        assert!(size >= DEPS, "{row}");
        assert!(unshared < DEPS / 8, "a reflinked directory: {row}");
    }

    // A large file cloned from the source into one release shares its
    // extents with the source. Once the source lets it go, the release is
    // the last to hold them: the next prune that removes anything
    // measures the remaining releases again and finds it unshared.
    let big = vec![7u8; DEPS as usize];
    fs::write(site.join("big.bin"), &big).unwrap();
    deploy();
    let with_big = json_id(&sb, 0);
    let before = unshared_of(&sb, &with_big);
    assert!(before < DEPS / 8, "cloned from the source: {before}");
    fs::remove_file(site.join("big.bin")).unwrap();
    deploy();
    sb.run(&["prune", "--keep", "1"]).ok();
    assert!(sb_releases_contain(&sb, &with_big), "the rollback target");
    let after = unshared_of(&sb, &with_big);
    assert!(
        after >= DEPS,
        "its clone is its own once the source dropped it and prune ran: {after}"
    );
}

fn json_id(sb: &Sandbox, index: usize) -> String {
    let json = sb.run(&["releases", "--json"]).ok().json();
    json["releases"][index]["id"].as_str().unwrap().to_string()
}

fn unshared_of(sb: &Sandbox, id: &str) -> u64 {
    let json = sb.run(&["releases", "--json"]).ok().json();
    let rows = json["releases"].as_array().unwrap();
    figure(
        rows.iter().find(|r| r["id"] == id).unwrap(),
        "unshared_bytes",
    )
}

fn sb_releases_contain(sb: &Sandbox, id: &str) -> bool {
    let json = sb.run(&["releases", "--json"]).ok().json();
    let rows = json["releases"].as_array().unwrap();
    rows.iter().any(|r| r["id"] == id)
}
