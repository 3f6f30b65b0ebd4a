//! The modules of `src/` import each other without cycles: every `.rs`
//! file is a node, and an edge goes from a file to each file it takes a
//! name from (`use crate::…`, an inline `crate::…` path, `super::…`,
//! `self::…`, a path through a child module, nested `use {…}` groups).
//! A cycle is printed with the names that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// The module path of a file under `src/` (`src/fleet/mod.rs` is
/// `["fleet"]`, `src/main.rs` is `[]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "main" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// The source with comments, string and char literals blanked out, so a
/// `crate::` in a doc comment or a message is not an import.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            while i < b.len() {
                if text[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if text[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some((opening, hashes)) =
            raw_string_start(rest).filter(|_| i == 0 || !is_ident(b[i - 1]))
        {
            // r#"…"#: skip to the closing quote and as many hashes.
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + opening;
            i = match text[body..].find(&close) {
                Some(end) => body + end + close.len(),
                None => b.len(),
            };
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && is_char_literal(rest) {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// For a raw string at the start of `rest`: the length of its opening
/// (`r#"`, `br"`…) and its number of hashes.
fn raw_string_start(rest: &str) -> Option<(usize, usize)> {
    let tail = rest.strip_prefix("br").or_else(|| rest.strip_prefix('r'))?;
    let hashes = tail.len() - tail.trim_start_matches('#').len();
    let prefix = rest.len() - tail.len();
    tail[hashes..]
        .starts_with('"')
        .then_some((prefix + hashes + 1, hashes))
}

/// `'a'`, `'\n'`, `'\''`, not a lifetime (`'a` without a closing quote).
fn is_char_literal(rest: &str) -> bool {
    let mut chars = rest.chars().skip(1);
    match chars.next() {
        Some('\\') => true,
        Some(_) => chars.next() == Some('\''),
        None => false,
    }
}

/// Every path a piece of code names: `a::b::c` sequences, with `use`
/// trees (`use a::{b, c::{d}}`) expanded into whole paths.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        found.extend(plain_paths(&rest[..at]));
        let after = &rest[at + 3..];
        let end = after.find(';').unwrap_or(after.len());
        expand_use(&after[..end], Vec::new(), &mut found);
        rest = &after[(end + 1).min(after.len())..];
    }
    found.extend(plain_paths(rest));
    found
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(word) {
        let at = from + i;
        let before = at == 0 || !is_ident(b[at - 1]);
        let after = at + word.len() >= b.len() || !is_ident(b[at + word.len()]);
        if before && after {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `a::b::c` sequences outside `use`: each with at least one `::`.
fn plain_paths(code: &str) -> Vec<Vec<String>> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if is_ident(b[i]) && (i == 0 || !(is_ident(b[i - 1]) || b[i - 1] == b':')) {
            let mut path = Vec::new();
            let mut j = i;
            loop {
                let start = j;
                while j < b.len() && is_ident(b[j]) {
                    j += 1;
                }
                path.push(code[start..j].to_string());
                if code[j..].starts_with("::") && j + 2 < b.len() && is_ident(b[j + 2]) {
                    j += 2;
                } else {
                    break;
                }
            }
            if path.len() > 1 {
                found.push(path);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    found
}

/// Expand one `use` tree: `crate::a::{b, c::{d, e}}` gives `crate::a::b`,
/// `crate::a::c::d`, `crate::a::c::e`.
fn expand_use(tree: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let mut path = prefix.clone();
        path.extend(segments(&tree[..open]));
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        for part in split_top(inner) {
            expand_use(part, path.clone(), out);
        }
    } else {
        let mut path = prefix;
        let tree = tree.split(" as ").next().unwrap();
        path.extend(segments(tree));
        if !path.is_empty() {
            out.push(path);
        }
    }
}

fn segments(text: &str) -> Vec<String> {
    text.split("::")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Split at the commas outside braces.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// `mod name;` declarations: the file's child modules.
fn children(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "mod") {
        let after = rest[at + 3..].trim_start();
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if after[name.len()..].trim_start().starts_with(';') {
            names.insert(name);
        }
        rest = &rest[at + 3..];
    }
    names
}

/// The code cut into pieces, each with the inline modules it is in
/// (`mod tests { … }`), so that `super::` inside one means its parent.
fn inline_modules(code: &str) -> Vec<(Vec<String>, &str)> {
    let b = code.as_bytes();
    let mut pieces = Vec::new();
    let mut open: Vec<(String, usize)> = Vec::new();
    let (mut depth, mut start, mut i) = (0usize, 0, 0);
    let names = |open: &[(String, usize)]| open.iter().map(|(n, _)| n.clone()).collect();
    while i < b.len() {
        match b[i] {
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if open.last().is_some_and(|(_, d)| depth < *d) {
                    pieces.push((names(&open), &code[start..i]));
                    open.pop();
                    start = i + 1;
                }
            }
            b'm' if (i == 0 || !is_ident(b[i - 1])) && code[i..].starts_with("mod ") => {
                let after = code[i + 4..].trim_start();
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let tail = after[name.len()..].trim_start();
                if !name.is_empty() && tail.starts_with('{') {
                    let brace = code.len() - tail.len();
                    pieces.push((names(&open), &code[start..i]));
                    depth += 1;
                    open.push((name, depth));
                    start = brace + 1;
                    i = brace + 1;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    pieces.push((names(&open), &code[start..]));
    pieces
}

struct Graph {
    files: BTreeMap<Vec<String>, PathBuf>,
    /// from file → to file → the names taken.
    edges: BTreeMap<PathBuf, BTreeMap<PathBuf, BTreeSet<String>>>,
}

impl Graph {
    fn of(src: &Path) -> Graph {
        let mut files = BTreeMap::new();
        for entry in walkdir::WalkDir::new(src) {
            let entry = entry.unwrap();
            if entry.path().extension().is_some_and(|e| e == "rs") {
                files.insert(module_of(src, entry.path()), entry.path().to_path_buf());
            }
        }
        let mut graph = Graph {
            files,
            edges: BTreeMap::new(),
        };
        let modules: Vec<(Vec<String>, PathBuf)> = graph
            .files
            .iter()
            .map(|(m, f)| (m.clone(), f.clone()))
            .collect();
        for (module, file) in modules {
            let code = code_only(&fs::read_to_string(&file).unwrap());
            let kids = children(&code);
            let none = BTreeSet::new();
            for (inline, piece) in inline_modules(&code) {
                let mut within = module.clone();
                within.extend(inline.iter().cloned());
                let kids = if inline.is_empty() { &kids } else { &none };
                for path in paths_in(piece) {
                    if let Some(absolute) = absolute(&within, kids, &path) {
                        graph.add(&file, &absolute);
                    }
                }
            }
        }
        graph
    }

    /// The file that the longest module prefix of `path` names, and the
    /// name after it.
    fn add(&mut self, from: &Path, path: &[String]) {
        for len in (0..=path.len()).rev() {
            if let Some(to) = self.files.get(&path[..len]) {
                if to != from && len < path.len() {
                    let name = path[len..].join("::");
                    self.edges
                        .entry(from.to_path_buf())
                        .or_default()
                        .entry(to.clone())
                        .or_default()
                        .insert(name);
                }
                return;
            }
        }
    }

    /// A cycle, as a list of files, if there is one.
    fn cycle(&self) -> Option<Vec<PathBuf>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut mark: BTreeMap<&PathBuf, Mark> =
            self.files.values().map(|f| (f, Mark::New)).collect();
        let none = BTreeMap::new();
        for start in self.files.values() {
            if mark[start] != Mark::New {
                continue;
            }
            // Iterative depth-first search with the path kept as a stack.
            let mut stack: Vec<(&PathBuf, Vec<&PathBuf>)> = vec![(
                start,
                self.edges.get(start).unwrap_or(&none).keys().collect(),
            )];
            mark.insert(start, Mark::Open);
            while let Some((node, next)) = stack.last_mut() {
                match next.pop() {
                    Some(to) => match mark[to] {
                        Mark::Open => {
                            let at = stack.iter().position(|(n, _)| *n == to).unwrap();
                            return Some(stack[at..].iter().map(|(n, _)| (*n).clone()).collect());
                        }
                        Mark::New => {
                            mark.insert(to, Mark::Open);
                            let outs = self.edges.get(to).unwrap_or(&none).keys().collect();
                            stack.push((to, outs));
                        }
                        Mark::Done => {}
                    },
                    None => {
                        mark.insert(node, Mark::Done);
                        stack.pop();
                    }
                }
            }
        }
        None
    }

    fn describe(&self, cycle: &[PathBuf]) -> String {
        let root = Path::new(MANIFEST);
        let mut text = String::new();
        for (i, from) in cycle.iter().enumerate() {
            let to = &cycle[(i + 1) % cycle.len()];
            let names: Vec<&str> = self.edges[from][to].iter().map(String::as_str).collect();
            text.push_str(&format!(
                "  {} -> {}: {}\n",
                from.strip_prefix(root).unwrap_or(from).display(),
                to.strip_prefix(root).unwrap_or(to).display(),
                names.join(", ")
            ));
        }
        text
    }
}

/// `path` as a path from the crate root, if it names something of this
/// crate: `crate::`, `super::`, `self::`, or a child module of the file.
fn absolute(module: &[String], kids: &BTreeSet<String>, path: &[String]) -> Option<Vec<String>> {
    let mut base = module.to_vec();
    let mut rest = path;
    match rest.first()?.as_str() {
        "crate" => {
            base.clear();
            rest = &rest[1..];
        }
        "self" => rest = &rest[1..],
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        first if kids.contains(first) => {}
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

#[test]
fn the_modules_of_src_import_each_other_without_cycles() {
    let src = Path::new(MANIFEST).join("src");
    let graph = Graph::of(&src);
    assert!(
        graph.edges.values().map(BTreeMap::len).sum::<usize>() > 50,
        "the import graph was read ({} files)",
        graph.files.len()
    );
    // Each cycle found is printed, then cut at its last edge to look for
    // the next, so one run names every knot.
    let mut report = String::new();
    let mut cut = Graph {
        files: graph.files.clone(),
        edges: graph.edges.clone(),
    };
    let mut cycles = 0;
    while let Some(cycle) = cut.cycle() {
        cycles += 1;
        report.push_str(&format!("cycle {cycles}:\n{}", graph.describe(&cycle)));
        let (last, first) = (&cycle[cycle.len() - 1], &cycle[0]);
        cut.edges.get_mut(last).unwrap().remove(first);
    }
    assert!(
        cycles == 0,
        "import cycles in src/ (each line: the names the first file takes from the second):\n{report}\
         Move the names that close each one down to a module both sides can import."
    );
}

#[test]
fn the_import_graph_sees_every_form_of_path() {
    let code = code_only(
        r#"
        use crate::a::{b, c::{d, e as f}};
        use super::g;
        // use crate::commented::out;
        fn x() { crate::h::i(); kid::j(); let s = "crate::in_a_string"; }
        mod tests { use super::super::o; fn y() { let c = '{'; } }
        fn z() { super::p::q(); }
        "#,
    );
    let kids: BTreeSet<String> = ["kid".to_string()].into();
    let module = vec!["m".to_string(), "n".to_string()];
    let mut found = BTreeSet::new();
    for (inline, piece) in inline_modules(&code) {
        let mut within = module.clone();
        within.extend(inline);
        for path in paths_in(piece) {
            if let Some(p) = absolute(&within, &kids, &path) {
                found.insert(p.join("::"));
            }
        }
    }
    let want: BTreeSet<String> = [
        "a::b",
        "a::c::d",
        "a::c::e",
        "m::g",
        "h::i",
        "m::n::kid::j",
        "m::o",
        "m::p::q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(found, want);
}
