//! The module dependency rule of ARCHITECTURE.md, checked on the source: every
//! `use crate::…` (and `crate::…` path) of a module must be one its row allows, and no two
//! sibling files of a module may use each other in a cycle.

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
    ("actions", &["domain", "alert", "rules", "engine"]),
    ("notify", &["domain", "store", "metrics", "telemetry"]),
    ("settings", &["domain", "engine", "actions", "notify"]),
    (
        "http",
        &[
            "domain",
            "alert",
            "rules",
            "engine",
            "store",
            "notify",
            "metrics",
            "settings",
            "telemetry",
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
            "notify",
            "http",
            "metrics",
            "settings",
            "telemetry",
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
            "notify",
            "http",
            "metrics",
            "settings",
            "telemetry",
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

/// The first path segment after each `prefix` (`crate::`, `super::`) in code, comments
/// stripped.
fn used_after(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (i, _) in code.match_indices(prefix) {
            let seg: String = code[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !seg.is_empty() {
                out.push(seg);
            }
        }
    }
    out
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
        // Sibling files of one module directory: `super::x` and `crate::top::x`.
        if parts.len() >= 2 {
            let dir = parts[..parts.len() - 1].join("/");
            let me = parts[parts.len() - 1].clone();
            if me == "mod" || me == "tests" {
                continue;
            }
            let uses = used_after(&text, "super::").into_iter().collect();
            siblings.insert((dir, me), uses);
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
