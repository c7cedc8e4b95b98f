//! Rule files (`rules/*.yaml`) compiled into a [`RuleSet`].
//!
//! Pure: [`compile`] takes the files' names and texts and either returns a rule set or every
//! error it found, each with `file:line`. `serve`, `check`, `simulate` and hot reload all go
//! through it, so what `check` accepts is exactly what the service runs.
//!
//! A rule file holds `rules:`; the file named `escalation.yaml` holds the contacts and the
//! per-priority policies that rules' `owner` and `page` steps refer to.

mod escalation;
mod matcher;
mod steps;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_saphyr::Spanned;

use crate::alert::Labels;

pub use escalation::{Contact, Escalation, Policy, Tier, TierAfter};
pub use matcher::{MatchOp, Matcher};
pub use steps::{Step, StepKind};

/// The name of the file that holds contacts and escalation policies.
pub const ESCALATION_FILE: &str = "escalation.yaml";

/// One file's name and text, as read by the caller.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// One problem in one file, at one line (0 when the line is not known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub path: PathBuf,
    pub line: u64,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

/// Every error found in a rule directory.
#[derive(Debug, Clone, thiserror::Error)]
pub struct RuleErrors(pub Vec<RuleError>);

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

/// All rules (first match wins, in file-name then file order) and the escalation policy.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub escalation: Escalation,
}

impl RuleSet {
    pub fn find(&self, labels: &Labels) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(labels))
    }

    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// A compose service or container name: letters, digits, `_`, `.`, `-`; no path, no glob.
pub fn validate_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the name is empty".into());
    }
    if s.len() > 128 {
        return Err("the name is longer than 128 characters".into());
    }
    let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || s.contains("..") {
        return Err(format!(
            "{s:?} is not a plain container or service name (letters, digits, '_', '.', '-'; starting with a letter or digit)"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Raw YAML shapes. Unknown keys are errors everywhere.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleFile {
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    description: String,
    matchers: Vec<Spanned<String>>,
    priority: Spanned<String>,
    #[serde(default)]
    priority_label: Option<String>,
    rto: Dur,
    owner: Spanned<String>,
    #[serde(default)]
    customer_impacting: bool,
    target: Spanned<RawTarget>,
    #[serde(default)]
    limit: Option<Spanned<RawLimit>>,
    #[serde(default)]
    dry_run: bool,
    steps: Vec<Spanned<StepKind>>,
    #[serde(default)]
    on_failure: Vec<Spanned<StepKind>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    allow: Option<Vec<String>>,
    #[serde(default)]
    none: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    runs: u32,
    per: Dur,
}

/// A duration written as text: `30s`, `2m`, `1h`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = String::deserialize(de)?;
        duration_text::parse(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// Durations as humans write them in rule files and read them in output.
pub use crate::domain::duration as duration_text;

// ---------------------------------------------------------------------------------------
// Compilation.

struct Collector<'a> {
    path: &'a PathBuf,
    errors: &'a mut Vec<RuleError>,
}

impl Collector<'_> {
    fn err(&mut self, line: u64, message: impl Into<String>) {
        self.errors.push(RuleError {
            path: self.path.clone(),
            line,
            message: message.into(),
        });
    }
}

fn yaml_error(path: &std::path::Path, e: &serde_saphyr::Error) -> RuleError {
    let line = e.location().map(|l| l.line()).unwrap_or(0);
    // The crate's Display adds a source snippet; the first line is the message itself.
    let text = e.to_string();
    let mut message = text.lines().next().unwrap_or("invalid YAML").trim();
    // The crate prefixes "error: line N column M: "; file:line already says where.
    message = message.strip_prefix("error: ").unwrap_or(message);
    if message.starts_with("line ") {
        if let Some((_, rest)) = message.split_once(": ") {
            message = rest;
        }
    }
    let message = message.to_string();
    RuleError {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// Compiles rule files. Files are taken in name order; [`ESCALATION_FILE`] must be among them.
pub fn compile(sources: &[Source]) -> Result<RuleSet, RuleErrors> {
    let mut errors = Vec::new();
    let mut sources: Vec<&Source> = sources.iter().collect();
    sources.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));

    let escalation = match sources
        .iter()
        .find(|s| s.path.file_name().is_some_and(|n| n == ESCALATION_FILE))
    {
        Some(src) => escalation::compile(src, &mut errors),
        None => {
            errors.push(RuleError {
                path: sources
                    .first()
                    .and_then(|s| s.path.parent())
                    .map(|p| p.join(ESCALATION_FILE))
                    .unwrap_or_else(|| PathBuf::from(ESCALATION_FILE)),
                line: 0,
                message: "missing: the contacts and escalation policies live here; copy the one shipped in rules/".into(),
            });
            None
        }
    };

    let mut rules = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for src in sources
        .iter()
        .filter(|s| s.path.file_name().is_some_and(|n| n != ESCALATION_FILE))
    {
        let raw: RawRuleFile = match serde_saphyr::from_str(&src.text) {
            Ok(r) => r,
            Err(e) => {
                errors.push(yaml_error(&src.path, &e));
                continue;
            }
        };
        let mut c = Collector {
            path: &src.path,
            errors: &mut errors,
        };
        if raw.rules.is_empty() {
            c.err(
                1,
                "the file has no rules; add a `rules:` list or remove the file",
            );
        }
        for spanned in raw.rules {
            let line = spanned.referenced.line();
            if let Some(rule) = compile_rule(spanned.value, line, &mut c, escalation.as_ref()) {
                if !seen.insert(rule.name.clone()) {
                    c.err(
                        line,
                        format!(
                            "rule name {:?} is used twice; names must be unique",
                            rule.name
                        ),
                    );
                    continue;
                }
                rules.push(Rule {
                    file: src.path.clone(),
                    ..rule
                });
            }
        }
    }

    match escalation {
        Some(escalation) if errors.is_empty() => Ok(RuleSet { rules, escalation }),
        _ => Err(RuleErrors(errors)),
    }
}

fn compile_rule(
    raw: RawRule,
    line: u64,
    c: &mut Collector<'_>,
    escalation: Option<&Escalation>,
) -> Option<Rule> {
    let before = c.errors.len();
    if raw.name.trim().is_empty() {
        c.err(line, "rule name is empty");
    }
    let name = raw.name.clone();
    let ctx = |m: String| format!("rule {name:?}: {m}");

    if raw.matchers.is_empty() {
        c.err(
            line,
            ctx("needs at least one matcher, e.g. alertname=\"PostgresDown\"".into()),
        );
    }
    let mut matchers = Vec::new();
    for m in &raw.matchers {
        match Matcher::parse(&m.value) {
            Ok(p) => matchers.push(p),
            Err(e) => c.err(m.referenced.line(), ctx(e)),
        }
    }

    let priority = Priority::parse(&raw.priority.value).unwrap_or_else(|| {
        c.err(
            raw.priority.referenced.line(),
            ctx(format!(
                "priority {:?} is not one of P1, P2, P3, P4",
                raw.priority.value
            )),
        );
        Priority::P4
    });

    if let Some(esc) = escalation {
        if !esc.contacts.contains_key(&raw.owner.value) {
            c.err(
                raw.owner.referenced.line(),
                ctx(format!(
                    "owner {:?} is not a contact in {ESCALATION_FILE} (known: {})",
                    raw.owner.value,
                    esc.contact_names()
                )),
            );
        }
    }

    let tline = raw.target.referenced.line();
    let t = raw.target.value;
    if t.allow.is_some() && t.label.is_none() {
        c.err(tline, ctx("`allow` only goes with a `label` target".into()));
    }
    let chosen = [
        t.service.is_some(),
        t.container.is_some(),
        t.label.is_some(),
        t.none == Some(true),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let target = if chosen != 1 {
        c.err(
            tline,
            ctx("target must have exactly one of service, container, label or none: true".into()),
        );
        Target::None
    } else if let Some(s) = t.service {
        check_name(c, tline, &ctx, &s);
        Target::Service(s)
    } else if let Some(n) = t.container {
        check_name(c, tline, &ctx, &n);
        Target::Container(n)
    } else if let Some(label) = t.label {
        let allow = t.allow.unwrap_or_default();
        if allow.is_empty() {
            c.err(
                tline,
                ctx(format!(
                    "target label {label:?} needs an `allow` list of the services it may name"
                )),
            );
        }
        for a in &allow {
            check_name(c, tline, &ctx, a);
        }
        Target::Label { label, allow }
    } else {
        Target::None
    };

    let limit = match raw.limit {
        Some(l) => {
            if l.value.runs == 0 {
                c.err(
                    l.referenced.line(),
                    ctx("limit.runs must be at least 1".into()),
                );
            }
            Limit {
                runs: l.value.runs,
                per: l.value.per.0,
            }
        }
        None => Limit::default(),
    };

    if raw.steps.is_empty() {
        c.err(line, ctx("needs at least one step".into()));
    }
    let compile_steps = |raw_steps: Vec<Spanned<StepKind>>, c: &mut Collector<'_>| {
        raw_steps
            .into_iter()
            .map(|s| {
                let sline = s.referenced.line();
                if let Err(e) = s.value.validate(escalation) {
                    c.err(sline, ctx(e));
                }
                Step::new(s.value, sline)
            })
            .collect::<Vec<_>>()
    };
    let steps = compile_steps(raw.steps, c);
    let on_failure = compile_steps(raw.on_failure, c);

    if c.errors.len() > before {
        return None;
    }
    Some(Rule {
        name: raw.name,
        description: raw.description,
        file: PathBuf::new(),
        line,
        matchers,
        priority,
        priority_label: raw.priority_label,
        rto: raw.rto.0,
        owner: raw.owner.value,
        customer_impacting: raw.customer_impacting,
        target,
        limit,
        dry_run: raw.dry_run,
        steps,
        on_failure,
    })
}

fn check_name(c: &mut Collector<'_>, line: u64, ctx: &dyn Fn(String) -> String, name: &str) {
    if let Err(e) = validate_name(name) {
        c.err(line, ctx(format!("target: {e}")));
    }
}

/// Sorted, comma-separated keys, for error messages.
fn names<V>(m: &BTreeMap<String, V>) -> String {
    m.keys().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
