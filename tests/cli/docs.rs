//! The documentation holds together: every relative link between the
//! README, `CONTRIBUTING.md` and the pages under `docs/` names a file that
//! exists and, with a `#fragment`, a heading of that file (GitHub's
//! anchors: lower case, punctuation dropped, spaces as hyphens).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The markdown files whose links are checked.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("a docs directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The lines of `text` outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's anchor for a heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .into_iter()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// `(target, fragment)` of every relative `[text](target)` link.
fn links(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            rest = &rest[start + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            rest = &rest[end..];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (path, fragment) = match target.split_once('#') {
                Some((p, f)) => (p.to_string(), Some(f.to_string())),
                None => (target.to_string(), None),
            };
            out.push((path, fragment));
        }
    }
    out
}

fn broken_links(page: &Path) -> Vec<String> {
    let text = fs::read_to_string(page).unwrap();
    let dir = page.parent().unwrap();
    let mut broken = Vec::new();
    for (path, fragment) in links(&text) {
        let target = if path.is_empty() {
            page.to_path_buf()
        } else {
            dir.join(&path)
        };
        if !target.exists() {
            broken.push(format!("{path}: no such file"));
            continue;
        }
        if let Some(fragment) = fragment
            && target.extension().is_some_and(|e| e == "md")
            && !anchors(&fs::read_to_string(&target).unwrap()).contains(&fragment)
        {
            broken.push(format!("{path}#{fragment}: no such heading"));
        }
    }
    broken
}

#[test]
fn every_link_between_the_readme_and_the_docs_resolves() {
    let mut broken = Vec::new();
    for page in pages() {
        for b in broken_links(&page) {
            broken.push(format!(
                "{}: {b}",
                page.strip_prefix(root()).unwrap().display()
            ));
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_a_front_page_that_links_every_page_of_the_docs() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "the README has {lines} lines; move detail into docs/"
    );
    let linked: BTreeSet<String> = links(&readme).into_iter().map(|(p, _)| p).collect();
    for page in pages().iter().skip(1) {
        let name = page.strip_prefix(root()).unwrap().display().to_string();
        assert!(linked.contains(&name), "the README does not link {name}");
    }
}

#[test]
fn a_broken_link_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.md");
    fs::write(
        dir.path().join("other.md"),
        "# Other page\n\n## A `code` heading\n",
    )
    .unwrap();
    fs::write(
        &page,
        "[ok](other.md#a-code-heading) [bad](other.md#missing) [gone](gone.md)\n\
         ```\n[in code](ignored.md)\n```\n",
    )
    .unwrap();
    assert_eq!(
        broken_links(&page),
        vec![
            "other.md#missing: no such heading".to_string(),
            "gone.md: no such file".to_string()
        ]
    );
}
