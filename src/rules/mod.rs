//! Rule files (`rules/*.yaml`) compiled into a [`RuleSet`].
//!
//! Pure: [`compile_in`] takes the files' names and texts and either returns a rule set or every
//! error it found, each with `file:line:column`. `serve`, `check`, `simulate` and hot reload
//! all go through it, so what `check` accepts is exactly what the service runs.
//!
//! Each file is parsed into a tree of YAML nodes that keep their place (`yaml.rs`); the rules
//! are read from it field by field (`read.rs`), so a problem in one field, step, rule or file
//! does not hide the next one.
//!
//! A rule file holds `rules:`, `maintenance_windows:` (see `windows.rs`) or both; the file
//! named `escalation.yaml` holds the contacts and the per-priority policies that rules'
//! `owner` and `page` steps refer to.

mod argv;
mod escalation;
mod matcher;
mod read;
mod steps;
mod synthetic;
mod windows;
mod yaml;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::alert::Labels;
use crate::domain::WindowFact;
use read::Fields;
use yaml::Node;

pub use argv::{expand as expand_argv, Template, DEFAULT_ARGV_PATTERN};
pub use escalation::{Contact, Escalation, Policy, Tier, TierAfter};
pub use matcher::{MatchOp, Matcher};
pub use steps::{Step, StepKind, UP_WITHIN};
pub use synthetic::synthetic_labels;
pub use windows::{MaintenanceWindow, Range, TimeInterval, TimeRange, WINDOWS_KEY};
pub use yaml::Pos;

/// The name of the file that holds contacts and escalation policies.
pub const ESCALATION_FILE: &str = "escalation.yaml";

/// One file's name and text, as read by the caller.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// One problem in one file: `file:line:column: message`, or `file: message` for a problem of
/// the whole file (missing, unreadable, empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleError {
    pub path: PathBuf,
    pub pos: Option<Pos>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(pos) => write!(f, "{}:{pos}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Every error found in a rule directory.
#[derive(Debug, Clone, thiserror::Error)]
pub struct RuleErrors(pub Vec<RuleError>);

impl RuleErrors {
    /// "3 errors in 2 files".
    pub fn summary(&self) -> String {
        let files: HashSet<&Path> = self.0.iter().map(|e| e.path.as_path()).collect();
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        format!(
            "{} in {}",
            plural(self.0.len(), "error"),
            plural(files.len(), "file")
        )
    }
}

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

pub use crate::domain::Priority;

/// What a rule acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A compose service of the configured project.
    Service(String),
    /// A container, by exact name.
    Container(String),
    /// A compose service named by an alert label; only values in `allow` are accepted.
    Label { label: String, allow: Vec<String> },
    /// Nothing to act on (checks, notifications and pages only).
    None,
}

/// A resolved target: what the guards lock and rate-limit, and what the steps act on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum TargetRef {
    Service(String),
    Container(String),
    None,
}

impl TargetRef {
    /// A stable key such as `service:postgres`.
    pub fn key(&self) -> String {
        match self {
            TargetRef::Service(s) => format!("service:{s}"),
            TargetRef::Container(c) => format!("container:{c}"),
            TargetRef::None => "none".to_string(),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            TargetRef::Service(s) | TargetRef::Container(s) => s,
            TargetRef::None => "",
        }
    }

    /// The target a stored [`TargetRef::key`] names (`service:postgres`, `none`).
    pub fn from_key(key: &str) -> Option<TargetRef> {
        if key == "none" {
            return Some(TargetRef::None);
        }
        match key.split_once(':')? {
            ("service", s) if !s.is_empty() => Some(TargetRef::Service(s.to_owned())),
            ("container", c) if !c.is_empty() => Some(TargetRef::Container(c.to_owned())),
            _ => None,
        }
    }

    /// The service a stored [`TargetRef::key`] names, when it names one.
    pub fn service_in_key(key: &str) -> Option<&str> {
        key.strip_prefix("service:")
    }
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// At most `runs` runbook runs per rule × target in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limit {
    pub runs: u32,
    #[serde(with = "crate::rules::duration_text")]
    pub per: Duration,
}

impl Default for Limit {
    /// Used when a rule says nothing: three runs an hour.
    fn default() -> Self {
        Limit {
            runs: 3,
            per: Duration::from_secs(3600),
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    pub line: u64,
    pub matchers: Vec<Matcher>,
    pub priority: Priority,
    /// Take the priority from this label when its value is P1..P4.
    pub priority_label: Option<String>,
    pub rto: Duration,
    pub owner: String,
    pub customer_impacting: bool,
    pub target: Target,
    pub limit: Limit,
    pub dry_run: bool,
    pub steps: Vec<Step>,
    pub on_failure: Vec<Step>,
    /// Run when a step of `steps` fails, stopping at the first that fails; when the last one
    /// passes, the incident is recovered. When one fails, `on_failure` runs. Empty: a failed
    /// step goes straight to `on_failure`.
    pub fallback: Vec<Step>,
}

impl Rule {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }

    pub fn priority_for(&self, labels: &Labels) -> Priority {
        self.priority_label
            .as_ref()
            .and_then(|l| labels.get(l))
            .and_then(|v| Priority::parse(v))
            .unwrap_or(self.priority)
    }

    /// The services the rule's steps name besides its target (`stop`, `start`, `remove`,
    /// `up`, `exec.service`), in its steps and its `on_failure` steps.
    pub fn step_services(&self) -> impl Iterator<Item = &str> + '_ {
        self.steps
            .iter()
            .chain(&self.on_failure)
            .chain(&self.fallback)
            .flat_map(|s| match &s.kind {
                StepKind::Stop { services, .. }
                | StepKind::Start { services, .. }
                | StepKind::Remove { services, .. } => {
                    services.iter().map(String::as_str).collect()
                }
                StepKind::Up { groups, .. } => {
                    groups.iter().flatten().map(String::as_str).collect()
                }
                StepKind::Exec {
                    service: Some(s), ..
                } => vec![s.as_str()],
                _ => Vec::new(),
            })
    }

    /// Every service the rule may act on: its target's (each one a label may name) and its
    /// steps'.
    pub fn services(&self) -> BTreeSet<&str> {
        let mut out: BTreeSet<&str> = self.step_services().collect();
        match &self.target {
            Target::Service(s) => {
                out.insert(s);
            }
            Target::Label { allow, .. } => out.extend(allow.iter().map(String::as_str)),
            Target::Container(_) | Target::None => {}
        }
        out
    }

    /// Resolves the target for one alert. Refuses label values that are not plain names in
    /// the rule's allowlist: an alert can never choose an arbitrary container.
    pub fn resolve_target(&self, labels: &Labels) -> Result<TargetRef, String> {
        match &self.target {
            Target::Service(s) => Ok(TargetRef::Service(s.clone())),
            Target::Container(c) => Ok(TargetRef::Container(c.clone())),
            Target::None => Ok(TargetRef::None),
            Target::Label { label, allow } => {
                let value = labels.get(label).ok_or_else(|| {
                    format!("the alert has no {label:?} label to pick the target from")
                })?;
                validate_name(value).map_err(|e| format!("label {label}={value:?}: {e}"))?;
                if allow.iter().any(|a| a == value) {
                    Ok(TargetRef::Service(value.clone()))
                } else {
                    Err(format!(
                        "label {label}={value:?} names a service outside the rule's allowlist ({})",
                        allow.join(", ")
                    ))
                }
            }
        }
    }
}

/// All rules (first match wins, in file-name then file order), the escalation policy and the
/// maintenance windows.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub escalation: Escalation,
    /// In file-name then file order.
    pub windows: Vec<MaintenanceWindow>,
}

impl RuleSet {
    pub fn find(&self, labels: &Labels) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(labels))
    }

    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Every compose service a rule may act on (see [`Rule::services`]), sorted.
    pub fn services(&self) -> std::collections::BTreeSet<&str> {
        self.rules.iter().flat_map(|r| r.services()).collect()
    }

    /// The first maintenance window in force at `now` that holds back `rule`'s runbook on
    /// `service` (the target's compose service, if it is one).
    pub fn window_for(
        &self,
        rule: &Rule,
        service: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<WindowFact> {
        self.windows
            .iter()
            .filter(|w| w.covers(rule, service))
            .find_map(|w| w.fact(now))
    }
}

/// A compose service or container name: letters, digits, `_`, `.`, `-`; no path, no glob.
pub fn validate_name(s: &str) -> Result<(), String> {
    match name_problem(s) {
        None => Ok(()),
        Some(NameProblem::Empty) => Err("the name is empty".into()),
        Some(NameProblem::TooLong) => Err("the name is longer than 128 characters".into()),
        Some(p @ NameProblem::NotPlain) => Err(format!("{s:?} {p}")),
    }
}

/// What is wrong with a would-be service or container name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameProblem {
    Empty,
    TooLong,
    NotPlain,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameProblem::Empty => "is empty",
            NameProblem::TooLong => "is longer than 128 characters",
            NameProblem::NotPlain => "is not a plain container or service name (letters, digits, '_', '.', '-'; starting with a letter or digit)",
        })
    }
}

fn name_problem(s: &str) -> Option<NameProblem> {
    if s.is_empty() {
        return Some(NameProblem::Empty);
    }
    if s.len() > 128 {
        return Some(NameProblem::TooLong);
    }
    let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || s.contains("..") {
        return Some(NameProblem::NotPlain);
    }
    None
}

/// A duration written as text: `30s`, `2m`, `1h`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// Durations as humans write them in rule files and read them in output.
pub use crate::domain::duration as duration_text;

// ---------------------------------------------------------------------------------------
// Compilation: every file parsed into a node tree, every field of every rule read from it,
// every problem recorded; a rule set only when there was none.

/// Whether `path` is [`ESCALATION_FILE`].
fn is_escalation(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == ESCALATION_FILE)
}

/// Compiles rule files whose directory is that of the first file. See [`compile_in`].
pub fn compile(sources: &[Source]) -> Result<RuleSet, RuleErrors> {
    let dir = sources
        .first()
        .and_then(|s| s.path.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    compile_in(&dir, sources, Vec::new())
}

/// Compiles the rule files of `dir`, taken in file-name order; [`ESCALATION_FILE`] must be
/// among them. `unreadable` holds the problems of files the caller found but could not read:
/// they are reported with the rest (and such a file is not also reported missing).
///
/// Every problem of every rule in every file is reported, sorted by file, line and column,
/// each once.
pub fn compile_in(
    dir: &Path,
    sources: &[Source],
    unreadable: Vec<RuleError>,
) -> Result<RuleSet, RuleErrors> {
    let mut errors = unreadable;
    let mut sources: Vec<&Source> = sources.iter().collect();
    sources.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));

    let escalation = match sources.iter().find(|s| is_escalation(&s.path)) {
        Some(src) => escalation::compile(src, &mut errors),
        None => {
            if !errors.iter().any(|e| is_escalation(&e.path)) {
                errors.push(RuleError {
                    path: dir.join(ESCALATION_FILE),
                    pos: None,
                    message: "missing: the contacts and escalation policies live here; copy the one shipped in rules/".into(),
                });
            }
            None
        }
    };

    let mut rules = Vec::new();
    let mut names = BTreeMap::new();
    // Windows name rules and services, so they are read once every rule is.
    let mut with_windows = Vec::new();
    for src in sources.iter().filter(|s| !is_escalation(&s.path)) {
        let mut e = read::Errors::new(&src.path, &src.text, &mut errors);
        if let Some(doc) = rule_file(src, &mut e, escalation.as_ref(), &mut names, &mut rules) {
            with_windows.push((*src, doc));
        }
    }
    let known = windows::Known {
        rules: &names,
        services: errors.is_empty().then(|| {
            rules
                .iter()
                .flat_map(|r| r.services())
                .map(str::to_owned)
                .collect()
        }),
    };
    let mut windows = Vec::new();
    let mut window_names = BTreeMap::new();
    for (src, doc) in &with_windows {
        let mut found = Vec::new();
        let mut e = read::Errors::new(&src.path, &src.text, &mut found);
        if let Some(list) = top_level(doc).and_then(|f| f.get(WINDOWS_KEY)) {
            windows::read_windows(
                &mut e,
                list,
                &src.path,
                &known,
                &mut window_names,
                &mut windows,
            );
        } else if let Some(pos) = top_level(doc).and_then(|f| f.key_pos(WINDOWS_KEY)) {
            e.at(
                Some(pos),
                format!("`{WINDOWS_KEY}` has no value; list windows, or remove the key"),
            );
        }
        errors.extend(found);
    }

    if errors.is_empty() {
        if let Some(escalation) = escalation {
            return Ok(RuleSet {
                rules,
                escalation,
                windows,
            });
        }
    }
    // Sorted by file then place (a problem with no place, such as a missing file, first);
    // the sort is stable, so problems at one place stay in the order the fields are read.
    errors.sort_by(|a, b| (&a.path, a.pos).cmp(&(&b.path, b.pos)));
    let mut seen = HashSet::new();
    errors.retain(|e| seen.insert(e.clone()));
    Err(RuleErrors(errors))
}

/// A file's top-level mapping, read once more without recording problems (they were, when
/// the file was first read).
fn top_level(doc: &Node) -> Option<Fields<'_>> {
    let mut ignored = Vec::new();
    let mut e = read::Errors::new(Path::new(""), "", &mut ignored);
    Fields::of_named(&mut e, doc, "", "the file", "")
}

/// Where `name` was first used, as `file:line:column`, when it was.
fn first_use(names: &Names, name: &str) -> Option<String> {
    let (path, pos) = names.get(name)?;
    Some(match pos {
        Some(p) => format!("{}:{p}", path.display()),
        None => path.display().to_string(),
    })
}

const NO_RULES: &str = "the file has no rules; add a `rules:` list or remove the file";

/// Where each rule (or window) name was first used, to refuse a second use.
type Names = BTreeMap<String, (PathBuf, Option<Pos>)>;

/// Reads a rule file's rules; gives its document back when it also lists maintenance
/// windows, to be read once every rule is.
fn rule_file(
    src: &Source,
    e: &mut read::Errors<'_>,
    escalation: Option<&Escalation>,
    names: &mut Names,
    rules: &mut Vec<Rule>,
) -> Option<Node> {
    let doc = match yaml::parse(&src.text) {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            e.at(None, NO_RULES);
            return None;
        }
        Err(syntax) => {
            e.at(syntax.pos, syntax.message);
            return None;
        }
    };
    let has_windows = {
        let top = Fields::of_named(e, &doc, "", "the file", " with a `rules:` list")?;
        top.check_keys(e, Some(&["rules", WINDOWS_KEY]));
        let has_windows = top.has(WINDOWS_KEY);
        // A file of windows alone needs no rules.
        if top.has("rules") || !has_windows {
            rules_of(src, e, &top, escalation, names, rules);
        }
        has_windows
    };
    has_windows.then_some(doc)
}

fn rules_of(
    src: &Source,
    e: &mut read::Errors<'_>,
    top: &Fields<'_>,
    escalation: Option<&Escalation>,
    names: &mut Names,
    rules: &mut Vec<Rule>,
) {
    let Some(list) = top.get("rules") else {
        // `rules:` written empty is a place; no `rules:` at all is the whole file.
        return e.at(top.key_pos("rules"), NO_RULES);
    };
    let Some(items) = read::list(e, list, "rules") else {
        return;
    };
    if items.is_empty() {
        return e.at(list.pos, NO_RULES);
    }
    let contacts = escalation.map(|esc| &esc.contacts);
    for (i, item) in items.iter().enumerate() {
        e.set_context(format!("rule #{}", i + 1));
        if let Some(rule) = compile_rule(item, e, contacts, &src.path, names) {
            rules.push(rule);
        }
        e.set_context("");
    }
}

const RULE_KEYS: &[&str] = &[
    "name",
    "description",
    "matchers",
    "priority",
    "priority_label",
    "rto",
    "owner",
    "customer_impacting",
    "target",
    "limit",
    "dry_run",
    "steps",
    "on_failure",
    "fallback",
];

fn compile_rule(
    node: &Node,
    e: &mut read::Errors<'_>,
    contacts: Option<&BTreeMap<String, Contact>>,
    file: &Path,
    names: &mut Names,
) -> Option<Rule> {
    let before = e.count();
    let f = Fields::of_named(e, node, "", "a rule", " of name, matchers, priority, ...")?;
    let name_node = f.require(e, "name", "");
    let name = name_node.and_then(|n| read::string(e, n, "name"));
    if let (Some(name), Some(n)) = (&name, name_node) {
        if name.trim().is_empty() {
            e.at(n.pos, "name is empty");
        } else {
            e.set_context(format!("rule `{name}`"));
            match first_use(names, name) {
                Some(at) => {
                    e.at(
                        n.pos,
                        format!("the name is already used by the rule at {at}; rule names must be unique"),
                    );
                }
                None => {
                    names.insert(name.clone(), (file.to_path_buf(), n.pos));
                }
            }
        }
    }
    f.check_keys(e, Some(RULE_KEYS));

    let description = f
        .get("description")
        .and_then(|n| read::string(e, n, "description"))
        .unwrap_or_default();

    let matchers = f
        .require(
            e,
            "matchers",
            " (e.g. matchers: ['alertname=\"PostgresDown\"'])",
        )
        .and_then(|n| {
            let items = read::strings(e, n, "matchers")?;
            if items.is_empty() {
                e.at(
                    n.pos,
                    "matchers must have at least one matcher, e.g. 'alertname=\"PostgresDown\"'",
                );
            }
            let before = e.count();
            let parsed: Vec<Matcher> = items
                .iter()
                .filter_map(|(m, pos)| Matcher::parse(m).map_err(|why| e.at(*pos, why)).ok())
                .collect();
            (e.count() == before).then_some(parsed)
        });

    let priority = f
        .require(e, "priority", " (one of P1, P2, P3, P4)")
        .and_then(|n| {
            let text = read::string(e, n, "priority")?;
            let p = Priority::parse(&text);
            if p.is_none() {
                e.at(
                    n.pos,
                    format!("priority `{text}` is not one of P1, P2, P3, P4"),
                );
            }
            p
        });

    let priority_label = f
        .get("priority_label")
        .and_then(|n| read::string(e, n, "priority_label"));

    let rto = f
        .require(e, "rto", " (the recovery time objective, e.g. rto: 30m)")
        .and_then(|n| read::duration(e, n, "rto"));

    let owner = f
        .require(e, "owner", &format!(" (a contact in {ESCALATION_FILE})"))
        .and_then(|n| {
            let owner = read::string(e, n, "owner")?;
            if let Some(contacts) = contacts {
                if !contacts.contains_key(&owner) {
                    e.at(
                        n.pos,
                        format!(
                            "owner `{owner}` is not a contact in {ESCALATION_FILE} (known: {})",
                            names_of(contacts)
                        ),
                    );
                }
            }
            Some(owner)
        });

    let customer_impacting = f
        .get("customer_impacting")
        .and_then(|n| read::boolean(e, n, "customer_impacting"))
        .unwrap_or(false);

    let target = f
        .require(e, "target", " (e.g. target: { service: postgres })")
        .and_then(|n| compile_target(e, n));

    let limit = match f.get("limit") {
        Some(n) => compile_limit(e, n),
        None => Some(Limit::default()),
    };

    let dry_run = f
        .get("dry_run")
        .and_then(|n| read::boolean(e, n, "dry_run"))
        .unwrap_or(false);

    let steps = f
        .require(e, "steps", " (e.g. steps: [ { diagnose: {} } ])")
        .and_then(|n| {
            let steps = steps::read_steps(e, n, "steps", contacts, false)?;
            if steps.is_empty() {
                e.at(n.pos, "steps must list at least one step");
            }
            Some(steps)
        });
    // Whether a list asks for an approval; a list with errors counts as asking, so that its
    // mistakes are not reported again as choices used without one.
    let approves = |s: &Option<Vec<Step>>| {
        s.as_ref()
            .is_none_or(|s| s.iter().any(|s| matches!(s.kind, StepKind::Approve { .. })))
    };
    let fallback = match f.get("fallback") {
        Some(n) => steps::read_steps(e, n, "fallback", contacts, approves(&steps)),
        None => Some(Vec::new()),
    };
    let on_failure = match f.get("on_failure") {
        Some(n) => steps::read_steps(
            e,
            n,
            "on_failure",
            contacts,
            approves(&steps) || approves(&fallback),
        ),
        None => Some(Vec::new()),
    };

    let (
        Some(name),
        Some(matchers),
        Some(priority),
        Some(rto),
        Some(owner),
        Some(target),
        Some(limit),
        Some(steps),
        Some(on_failure),
        Some(fallback),
    ) = (
        name, matchers, priority, rto, owner, target, limit, steps, on_failure, fallback,
    )
    else {
        return None;
    };
    if e.count() > before {
        return None;
    }
    Some(Rule {
        name,
        description,
        file: file.to_path_buf(),
        line: node.pos.map(|p| p.line).unwrap_or(1),
        matchers,
        priority,
        priority_label,
        rto,
        owner,
        customer_impacting,
        target,
        limit,
        dry_run,
        steps,
        on_failure,
        fallback,
    })
}

fn compile_target(e: &mut read::Errors<'_>, n: &Node) -> Option<Target> {
    let f = Fields::of(e, n, "target", " such as { service: postgres }")?;
    let before = e.count();
    f.check_keys(e, Some(&["service", "container", "label", "allow", "none"]));
    let plain_name = |e: &mut read::Errors<'_>, key: &str| {
        let n = f.get(key)?;
        let what = f.child(key);
        let s = read::string(e, n, &what)?;
        match name_problem(&s) {
            Some(why) => {
                e.at(n.pos, format!("{what} `{s}` {why}"));
                None
            }
            None => Some(s),
        }
    };
    let service = plain_name(e, "service");
    let container = plain_name(e, "container");
    let label = f
        .get("label")
        .and_then(|n| read::string(e, n, "target.label"));
    let allow = f.get("allow").and_then(|n| {
        let items = read::strings(e, n, "target.allow")?;
        let before = e.count();
        for (s, pos) in &items {
            if let Some(why) = name_problem(s) {
                e.at(*pos, format!("target.allow `{s}` {why}"));
            }
        }
        (e.count() == before).then(|| items.into_iter().map(|(s, _)| s).collect::<Vec<_>>())
    });
    let none = f
        .get("none")
        .and_then(|n| read::boolean(e, n, "target.none"));

    if f.has("allow") && !f.has("label") {
        e.at(
            f.key_pos("allow"),
            "target.allow only goes with a `label` target",
        );
    }
    let chosen = [
        f.has("service"),
        f.has("container"),
        f.has("label"),
        none == Some(true),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if chosen != 1 {
        e.at(
            f.pos,
            "target must have exactly one of service, container, label or none: true",
        );
    }
    if let Some(label) = &label {
        if !f.has("allow") || allow.as_ref().is_some_and(|a| a.is_empty()) {
            e.at(
                f.key_pos("label"),
                format!("target.label `{label}` needs an `allow` list of the services it may name"),
            );
        }
    }
    if e.count() > before {
        return None;
    }
    Some(match (service, container, label) {
        (Some(s), _, _) => Target::Service(s),
        (_, Some(c), _) => Target::Container(c),
        (_, _, Some(label)) => Target::Label {
            label,
            allow: allow.unwrap_or_default(),
        },
        _ => Target::None,
    })
}

fn compile_limit(e: &mut read::Errors<'_>, n: &Node) -> Option<Limit> {
    let f = Fields::of(e, n, "limit", " such as { runs: 2, per: 1h }")?;
    f.check_keys(e, Some(&["runs", "per"]));
    let runs = f.require(e, "runs", " (e.g. runs: 2)").and_then(|n| {
        read::integer(
            e,
            n,
            "limit.runs",
            1..=i128::from(u32::MAX),
            "a whole number of at least 1",
        )
    });
    let per = f
        .require(e, "per", " (e.g. per: 1h)")
        .and_then(|n| read::duration(e, n, "limit.per"));
    Some(Limit {
        runs: u32::try_from(runs?).ok()?,
        per: per?,
    })
}

/// Sorted, comma-separated keys, for error messages.
fn names_of<V>(m: &BTreeMap<String, V>) -> String {
    m.keys().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_approve;
