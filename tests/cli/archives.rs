//! CI artifacts: `source.archive` and `deploy --archive FILE|-`, and
//! every way an archive can try to write outside the release, in tar and
//! in zip.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use sha2::{Digest, Sha256};

use crate::sandbox::{Run, Sandbox};

/// One entry of a hand-made archive.
enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Fifo(&'a str),
    CharDevice(&'a str),
}

/// Write `bytes` into a raw header field (the tar crate's setters refuse
/// the hostile names these tests need).
fn raw(field: &mut [u8], bytes: &str) {
    field.fill(0);
    field[..bytes.len()].copy_from_slice(bytes.as_bytes());
}

/// A tar archive of `entries`, exactly as given.
fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_old();
        let (name, kind, data, mode, link): (&str, tar::EntryType, &[u8], u32, &str) = match entry {
            Entry::File(n, d, m) => (n, tar::EntryType::Regular, d, *m, ""),
            Entry::Dir(n) => (n, tar::EntryType::Directory, b"", 0o755, ""),
            Entry::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", 0o777, t),
            Entry::Hardlink(n, t) => (n, tar::EntryType::Link, b"", 0o644, t),
            Entry::Fifo(n) => (n, tar::EntryType::Fifo, b"", 0o644, ""),
            Entry::CharDevice(n) => (n, tar::EntryType::Char, b"", 0o644, ""),
        };
        raw(&mut header.as_old_mut().name, name);
        raw(&mut header.as_old_mut().linkname, link);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A zip archive of `entries` (files, directories, symlinks; a fifo is
/// a file entry with the fifo's mode).
fn zip(entries: &[Entry]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for entry in entries {
        match entry {
            Entry::File(n, d, m) => {
                // The whole mode, setuid bits included (unix_permissions
                // keeps only 0o777).
                let mode = SimpleFileOptions::default().external_attributes((0o100000 | m) << 16);
                w.start_file(*n, mode).unwrap();
                w.write_all(d).unwrap();
            }
            Entry::Dir(n) => w.add_directory(*n, SimpleFileOptions::default()).unwrap(),
            Entry::Symlink(n, t) => w.add_symlink(*n, *t, SimpleFileOptions::default()).unwrap(),
            Entry::Fifo(n) => {
                let fifo = SimpleFileOptions::default().external_attributes(0o010644 << 16);
                w.start_file(*n, fifo).unwrap();
            }
            Entry::Hardlink(..) | Entry::CharDevice(_) => unreachable!("not in zip"),
        }
    }
    w.finish().unwrap().into_inner()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `shipit args` with `input` on stdin.
fn run_with_stdin(sb: &Sandbox, args: &[&str], input: &[u8]) -> Run {
    let mut child = sb
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run::from(args, out)
}

fn site(version: &str) -> Vec<u8> {
    tar(&[
        Entry::Dir("./"),
        Entry::File("./index.html", version.as_bytes(), 0o644),
        Entry::Dir("./bin/"),
        Entry::File("./bin/start", b"#!/bin/sh\n", 0o755),
        Entry::Symlink("./home.html", "index.html"),
    ])
}

#[test]
fn an_artifact_from_stdin_deploys_and_records_its_digest() {
    let sb = Sandbox::new();
    sb.write_config("[hooks]\nbuild = [\"printf %s \\\"$SHIPIT_REVISION\\\" > revision.txt\"]\n");
    let artifact = gzip(&site("from ci\n"));
    run_with_stdin(&sb, &["deploy", "--archive", "-"], &artifact)
        .ok()
        .says("Unpacking");
    assert_eq!(sb.served(), "from ci\n");
    let current = sb.deploy_to().join("current");
    assert_eq!(
        fs::read_link(current.join("home.html")).unwrap(),
        Path::new("index.html")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(current.join("bin/start"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "modes are kept");
    let digest = sha256(&artifact);
    assert_eq!(
        fs::read_to_string(current.join("revision.txt")).unwrap(),
        digest
    );
    let json = sb.releases_json();
    assert_eq!(json["releases"][0]["revision"], digest.as_str());
    assert_eq!(json["releases"][0]["source"], "archive stdin");
    // Nothing of the artifact is left in staging.
    assert!(crate::sandbox::dir_names(&sb.deploy_to().join(".shipit/staging")).is_empty());
}

#[test]
fn ref_and_archive_together_are_a_usage_error() {
    let sb = Sandbox::new();
    sb.run(&["deploy", "--ref", "main", "--archive", "-"])
        .code(2);
    assert!(!sb.deploy_to().exists());
}

#[test]
fn source_archive_in_each_format_and_its_digest() {
    let sb = Sandbox::new();
    let tarball = site("plain tar\n");
    let zstd = {
        let out = std::process::Command::new("zstd")
            .args(["-q", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(&site("zstd\n"))?;
                child.wait_with_output()
            });
        out.ok().filter(|o| o.status.success()).map(|o| o.stdout)
    };
    let zipped = zip(&[
        Entry::File("index.html", b"zip\n", 0o644),
        Entry::Dir("assets/"),
    ]);
    let mut cases = vec![
        ("site.tar", tarball, "plain tar\n"),
        ("site.zip", zipped, "zip\n"),
    ];
    match zstd {
        Some(bytes) => cases.push(("site.tar.zst", bytes, "zstd\n")),
        None => eprintln!("*** zstd(1) is missing: the .tar.zst case is skipped ***"),
    }
    for (name, bytes, served) in cases {
        fs::write(sb.path().join(name), &bytes).unwrap();
        sb.write_raw_config(&format!(
            "deploy_to = \"deploy\"\n[source]\narchive = \"{name}\"\nsha256 = \"{}\"\n",
            sha256(&bytes)
        ));
        sb.run(&["deploy"]).ok();
        assert_eq!(sb.served(), served, "{name}");
    }
    // A digest that does not match refuses the artifact before unpacking.
    let releases = sb.releases();
    sb.write_raw_config(&format!(
        "deploy_to = \"deploy\"\n[source]\narchive = \"site.tar\"\nsha256 = \"{}\"\n",
        "0".repeat(64)
    ));
    sb.run(&["deploy"]).code(2).says("not the 0000");
    assert_eq!(sb.releases(), releases);
}

/// A directory beside the deploy that no entry may reach.
fn outside(sb: &Sandbox) -> PathBuf {
    let dir = sb.path().join("outside");
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[track_caller]
fn refused(sb: &Sandbox, name: &str, bytes: &[u8], says: &str) {
    let before = sb.releases();
    let current = sb.current();
    let run = run_with_stdin(sb, &["deploy", "--archive", "-"], bytes);
    assert_eq!(run.code, 2, "{name}: {}", run.stderr);
    run.says(says);
    assert_eq!(sb.releases(), before, "{name}: nothing published");
    assert_eq!(sb.current(), current);
    assert!(
        crate::sandbox::dir_names(&sb.deploy_to().join(".shipit/staging")).is_empty(),
        "{name}: staging is cleared"
    );
    assert!(
        crate::sandbox::dir_names(&outside(sb)).is_empty(),
        "{name}: something was written outside: {:?}",
        crate::sandbox::dir_names(&outside(sb))
    );
}

#[test]
fn every_escape_from_a_tar_is_refused() {
    let sb = Sandbox::new();
    sb.deploy();
    let out = outside(&sb).display().to_string();
    let abs = format!("{out}/abs.txt");
    let through = out.clone();
    let hard = format!("{out}/../outside/x");
    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        ("absolute", vec![Entry::File(&abs, b"x", 0o644)], "absolute"),
        (
            "dotdot",
            vec![Entry::File("../../outside/up.txt", b"x", 0o644)],
            "`..`",
        ),
        (
            "link out",
            vec![Entry::Symlink("a", &through)],
            "outside the release",
        ),
        (
            "relative link out",
            vec![Entry::Symlink("a", "../../../outside")],
            "outside the release",
        ),
        (
            "link then through it",
            vec![
                Entry::Symlink("a", "."),
                Entry::Symlink("a/b", "x"),
                Entry::File("a/x", b"x", 0o644),
            ],
            "not a directory",
        ),
        (
            "hardlink out",
            vec![Entry::Hardlink("h", &hard)],
            "hardlink",
        ),
        (
            "hardlink to /etc",
            vec![Entry::Hardlink("h", "/etc/passwd")],
            "hardlink",
        ),
        ("device", vec![Entry::CharDevice("null")], "device"),
        ("fifo", vec![Entry::Fifo("pipe")], "fifo"),
        (
            "setuid",
            vec![Entry::File("run", b"#!/bin/sh\n", 0o4755)],
            "setuid",
        ),
    ];
    for (name, entries, says) in cases {
        let mut all = vec![Entry::File("index.html", b"evil\n", 0o644)];
        all.extend(entries);
        refused(&sb, name, &gzip(&tar(&all)), says);
    }
    // Through a link an earlier entry made to outside the release.
    refused(
        &sb,
        "a -> outside, then a/x",
        &tar(&[
            Entry::Symlink("a", &through),
            Entry::File("a/x", b"x", 0o644),
        ]),
        "outside the release",
    );
    assert_eq!(sb.served(), "v1\n");
}

#[test]
fn every_escape_from_a_zip_is_refused() {
    let sb = Sandbox::new();
    sb.deploy();
    let out = outside(&sb).display().to_string();
    let abs = format!("{out}/abs.txt");
    let cases: Vec<(&str, Vec<Entry>, &str)> = vec![
        ("absolute", vec![Entry::File(&abs, b"x", 0o644)], "absolute"),
        (
            "dotdot",
            vec![Entry::File("../../outside/up.txt", b"x", 0o644)],
            "`..`",
        ),
        (
            "link out",
            vec![Entry::Symlink("a", &out)],
            "outside the release",
        ),
        (
            "link then through it",
            vec![Entry::Symlink("a", "."), Entry::Symlink("a/b", "x")],
            "not a directory",
        ),
        ("fifo", vec![Entry::Fifo("pipe")], "fifo"),
        (
            "setuid",
            vec![Entry::File("run", b"#!/bin/sh\n", 0o4755)],
            "setuid",
        ),
    ];
    for (name, entries, says) in cases {
        let mut all = vec![Entry::File("index.html", b"evil\n", 0o644)];
        all.extend(entries);
        refused(&sb, name, &zip(&all), says);
    }
    assert_eq!(sb.served(), "v1\n");
}
