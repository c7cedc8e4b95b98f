//! The module dependency rule of ARCHITECTURE.md, checked on the source: every
//! `use crate::…` (and `crate::…` path, grouped imports `crate::{a, b::c}` included) of a
//! module must be one its row allows, and no two sibling files of a module may use each
//! other in a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which top-level modules each module may use (besides itself). Keep in step with
/// ARCHITECTURE.md's "Dependencies" table.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("alert", &["domain"]),
    ("rules", &["domain", "alert"]),
    ("loader", &["domain", "rules"]),
    ("metrics", &["domain"]),
    ("telemetry", &["domain", "metrics"]),
    ("store", &["domain", "alert", "telemetry"]),
    (
        "engine",
        &["domain", "alert", "rules", "store", "metrics", "telemetry"],
    ),
    (
        "actions",
        &["domain", "alert", "rules", "engine", "metrics", "telemetry"],
    ),
    ("alertmanager", &["domain", "alert", "engine"]),
    ("notify", &["domain", "store", "metrics", "telemetry"]),
    ("coordination", &["domain", "engine", "metrics"]),
    ("history", &["domain", "store", "metrics", "telemetry"]),
    ("report", &["domain", "store"]),
    (
        "settings",
        &[
            "domain",
            "engine",
            "actions",
            "alertmanager",
            "notify",
            "coordination",
            "history",
        ],
    ),
    (
        "http",
        &[
            "domain",
            "alert",
            "rules",
            "engine",
            "store",
            "alertmanager",
            "notify",
            "history",
            "metrics",
            "settings",
            "telemetry",
            "report",
        ],
    ),
    (
        "startup",
        &[
            "domain",
            "alert",
            "rules",
            "loader",
            "store",
            "engine",
            "actions",
            "alertmanager",
            "notify",
            "coordination",
            "history",
            "http",
            "metrics",
            "settings",
            "telemetry",
            "report",
        ],
    ),
    (
        "cli",
        &[
            "domain",
            "alert",
            "rules",
            "loader",
            "store",
            "engine",
            "actions",
            "alertmanager",
            "notify",
            "coordination",
            "history",
            "http",
            "metrics",
            "settings",
            "telemetry",
            "report",
            "startup",
        ],
    ),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `text` with its line comments (`//`, `///`, `//!`) cut off, its lines kept.
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn skip_ws(s: &[u8], at: &mut usize) {
    while s.get(*at).is_some_and(u8::is_ascii_whitespace) {
        *at += 1;
    }
}

/// Reads one use tree at `s[*at..]` (`a::b`, `a::{b, c::{d}}`, `a as b`, `*`), pushing the
/// path of each leaf, `path` first, onto `out`; a glob adds nothing beyond its prefix.
fn use_tree(s: &[u8], at: &mut usize, mut path: Vec<String>, out: &mut Vec<Vec<String>>) {
    if s.get(*at) == Some(&b'{') {
        *at += 1;
        loop {
            skip_ws(s, at);
            match s.get(*at) {
                None => return,
                Some(b'}') => {
                    *at += 1;
                    return;
                }
                Some(b',') => *at += 1,
                Some(_) => {
                    let from = *at;
                    use_tree(s, at, path.clone(), out);
                    // Something no path starts with (a stray token): step over it.
                    if *at == from {
                        *at += 1;
                    }
                }
            }
        }
    }
    let start = *at;
    while s.get(*at).copied().is_some_and(is_ident) {
        *at += 1;
    }
    if *at > start {
        path.push(String::from_utf8_lossy(&s[start..*at]).into_owned());
        // `a::b`, `a::{…}`, `a::*` go on; `a::<T>` (a turbofish) ends the path.
        let next = s.get(*at + 2).copied();
        if s[*at..].starts_with(b"::")
            && next.is_some_and(|c| is_ident(c) || c == b'{' || c == b'*')
        {
            *at += 2;
            return use_tree(s, at, path, out);
        }
        // `a as b`: the rename is not a path.
        let mut look = *at;
        skip_ws(s, &mut look);
        if s[look..].starts_with(b"as") && s.get(look + 2).is_some_and(u8::is_ascii_whitespace) {
            look += 2;
            skip_ws(s, &mut look);
            while s.get(look).copied().is_some_and(is_ident) {
                look += 1;
            }
            *at = look;
        }
    } else if s.get(*at) == Some(&b'*') {
        *at += 1;
    }
    if !path.is_empty() {
        out.push(path);
    }
}

/// Every path written after `prefix` (`crate::`, `super::`) in the code, comments stripped
/// and grouped imports expanded: `use crate::{a::{b, c}, d as e};` is `a::b`, `a::c`, `d`.
/// `prefix` inside a longer path (`mycrate::`, `super::super::`) does not start one.
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let code = code(text);
    let s = code.as_bytes();
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        if i > 0 && (is_ident(s[i - 1]) || s[i - 1] == b':') {
            continue;
        }
        let mut at = i + prefix.len();
        use_tree(s, &mut at, Vec::new(), &mut out);
    }
    out
}

/// The first segment of every path after `prefix`: the modules (or, after `super::`, the
/// sibling files and items) the code names.
fn used_after(text: &str, prefix: &str) -> BTreeSet<String> {
    paths_after(text, prefix)
        .into_iter()
        .filter_map(|p| p.into_iter().next())
        .collect()
}

#[test]
fn used_after_sees_plain_grouped_and_nested_paths_but_not_comments() {
    let text = "\
use crate::{a::{b, c}, d};
use crate::e::F;
let x = crate::g::h::<u8>();
// crate::x
/// crate::y
//! crate::z
use super::{p, q as r};
use super::*;
use super::super::s;
use mycrate::w;
use crate::{
    m::N,
    o::{self, O},
};
";
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        used_after(text, "crate::"),
        set(&["a", "d", "e", "g", "m", "o"])
    );
    assert_eq!(used_after(text, "super::"), set(&["p", "q", "super"]));
    assert_eq!(
        used_after("use crate::{a::{b, c}, d};", "crate::"),
        set(&["a", "d"])
    );
    let path = |p: &str| p.split("::").map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        paths_after("use crate::{a::{b, c}, d as e, f::*};", "crate::"),
        vec![path("a::b"), path("a::c"), path("d"), path("f")]
    );
}

#[test]
fn modules_use_only_what_the_architecture_allows_and_siblings_form_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut broken = Vec::new();
    // (module dir, file stem) → sibling stems it uses.
    let mut siblings: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        let top = parts[0].clone();
        // The crate root, and unit tests (test code may reach for any helper).
        if matches!(top.as_str(), "lib" | "main") || parts.last().is_some_and(|p| p == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let Some(ok) = allowed.get(top.as_str()) else {
            broken.push(format!(
                "{}: module {top} has no row in ALLOWED",
                rel.display()
            ));
            continue;
        };
        for used in used_after(&text, "crate::") {
            let used = used.as_str();
            if used != top && !ok.contains(used) {
                broken.push(format!("{}: {top} uses crate::{used}", rel.display()));
            }
        }
        // Sibling files of one module directory: `super::x` and `crate::top::x` (for
        // `src/top/sub/me.rs`, `crate::top::sub::x`).
        if parts.len() >= 2 {
            let here = &parts[..parts.len() - 1];
            let me = parts[parts.len() - 1].clone();
            if me == "mod" || me == "tests" {
                continue;
            }
            let mut uses = used_after(&text, "super::");
            uses.extend(
                paths_after(&text, "crate::")
                    .into_iter()
                    .filter(|p| p.len() > here.len() && p.starts_with(here))
                    .map(|p| p[here.len()].clone()),
            );
            siblings.insert((here.join("/"), me), uses);
        }
    }
    let names: BTreeSet<(String, String)> = siblings.keys().cloned().collect();
    for ((dir, me), uses) in &siblings {
        for other in uses {
            let back = (dir.clone(), other.clone());
            if other != me && names.contains(&back) && siblings[&back].contains(me) {
                broken.push(format!("src/{dir}: {me}.rs and {other}.rs use each other"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "module dependency rule broken:\n{}",
        broken.join("\n")
    );
}
