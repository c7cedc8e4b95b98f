//! Typed values read out of a [`Node`] tree, each problem recorded with its place and the
//! reader carrying on, so one run reports every problem of every rule.
//!
//! Paths in messages name the key as written, dotted from the rule (`limit.per`,
//! `restart.grace`); the line and column say which list element.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::yaml::{Node, Pos, Value};
use super::{duration_text, RuleError};

/// Where one file's problems go, each prefixed with what they are about (`rule `x`: `).
pub(super) struct Errors<'a> {
    path: &'a Path,
    source: &'a str,
    out: &'a mut Vec<RuleError>,
    context: String,
}

impl<'a> Errors<'a> {
    pub fn new(path: &'a Path, source: &'a str, out: &'a mut Vec<RuleError>) -> Errors<'a> {
        Errors {
            path,
            source,
            out,
            context: String::new(),
        }
    }

    /// What the following problems are about, e.g. "rule `postgres-down`"; empty for none.
    pub fn set_context(&mut self, context: impl Into<String>) {
        self.context = context.into();
    }

    pub fn at(&mut self, pos: Option<Pos>, message: impl fmt::Display) {
        let message = if self.context.is_empty() {
            message.to_string()
        } else {
            format!("{}: {message}", self.context)
        };
        self.out.push(RuleError {
            path: self.path.to_path_buf(),
            pos,
            message,
        });
    }

    /// How many problems so far (to tell whether a part read cleanly).
    pub fn count(&self) -> usize {
        self.out.len()
    }

    /// A scalar as text: a string as it is, a plain number or boolean as written.
    pub fn scalar_text(&self, n: &Node) -> Option<String> {
        match &n.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(_) | Value::Int(_) | Value::Float => {
                n.raw(self.source).map(|s| s.trim().to_string())
            }
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// How a node looks, for "must be X, not Y".
    pub fn shown(&self, n: &Node) -> String {
        match &n.value {
            Value::Null => "empty".to_string(),
            Value::Seq(items) if items.is_empty() => "an empty list".to_string(),
            Value::Seq(_) => "a list".to_string(),
            Value::Map(entries) if entries.is_empty() => "an empty mapping".to_string(),
            Value::Map(_) => "a mapping".to_string(),
            _ => match self.scalar_text(n) {
                Some(s) => format!("`{s}`"),
                None => "a scalar".to_string(),
            },
        }
    }

    fn wrong_type(&mut self, n: &Node, what: &str, expected: &str) {
        let found = self.shown(n);
        self.at(n.pos, format!("{what} must be {expected}, not {found}"));
    }
}

/// A mapping's entries, keyed by their text, in file order.
pub(super) struct Fields<'n> {
    pub pos: Option<Pos>,
    /// The mapping's path, `""` at a rule's top.
    path: String,
    entries: Vec<(String, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// Reads a mapping at `path`; records a problem and gives `None` when `n` is not one.
    /// `example` follows "must be a mapping" in that problem.
    pub fn of(e: &mut Errors<'_>, n: &'n Node, path: &str, example: &str) -> Option<Fields<'n>> {
        Self::of_named(e, n, path, path, example)
    }

    /// As [`Fields::of`], with the problem naming `subject` ("a rule", "the file") rather
    /// than the path.
    pub fn of_named(
        e: &mut Errors<'_>,
        n: &'n Node,
        path: &str,
        subject: &str,
        example: &str,
    ) -> Option<Fields<'n>> {
        match &n.value {
            Value::Map(entries) => Some(Fields {
                pos: n.pos,
                path: path.to_string(),
                entries: entries
                    .iter()
                    .map(|(k, v)| {
                        let key = e.scalar_text(k).unwrap_or_else(|| e.shown(k));
                        (key, k, v)
                    })
                    .collect(),
            }),
            _ => {
                e.wrong_type(n, subject, &format!("a mapping{example}"));
                None
            }
        }
    }

    /// A mapping with nothing in it, at `pos` (for `- diagnose:` written without `{}`).
    pub fn empty(pos: Option<Pos>, path: &str) -> Fields<'n> {
        Fields {
            pos,
            path: path.to_string(),
            entries: Vec::new(),
        }
    }

    /// Reports keys given twice and, unless `allowed` is `None`, keys it does not know.
    pub fn check_keys(&self, e: &mut Errors<'_>, allowed: Option<&[&str]>) {
        let mut first: HashMap<&str, Option<Pos>> = HashMap::new();
        for (key, k, _) in &self.entries {
            if let Some(earlier) = first.get(key.as_str()) {
                let at = earlier
                    .map(|p| format!(" (first at line {})", p.line))
                    .unwrap_or_default();
                e.at(
                    k.pos,
                    format!("key `{}` is given twice{at}", self.child(key)),
                );
                continue;
            }
            first.insert(key, k.pos);
            if let Some(allowed) = allowed {
                if !allowed.contains(&key.as_str()) {
                    e.at(
                        k.pos,
                        format!(
                            "unknown key `{}` (expected one of: {})",
                            self.child(key),
                            allowed.join(", ")
                        ),
                    );
                }
            }
        }
    }

    /// The value of `key`; `None` when it is absent or empty (`key:` or `key: ~`).
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, _, v)| *v)
            .filter(|v| !v.is_null())
    }

    /// Whether `key` is written at all, even empty.
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _, _)| k == key)
    }

    /// The key node of `key`, for problems about the key itself.
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .and_then(|(_, k, _)| k.pos)
    }

    /// The value of a key the mapping must have; records "missing key" (with `hint`, such as
    /// " (e.g. rto: 30m)") when it is absent or empty.
    pub fn require(&self, e: &mut Errors<'_>, key: &str, hint: &str) -> Option<&'n Node> {
        let v = self.get(key);
        if v.is_none() {
            let (pos, what) = match self.entries.iter().find(|(k, _, _)| k == key) {
                Some((_, k, _)) => (k.pos, "has no value"),
                None => (self.pos, ""),
            };
            if what.is_empty() {
                e.at(pos, format!("missing key `{}`{hint}", self.child(key)));
            } else {
                e.at(pos, format!("`{}` {what}{hint}", self.child(key)));
            }
        }
        v
    }

    /// Every entry, for mappings of names (contacts, policies).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &'n Node, &'n Node)> + '_ {
        self.entries.iter().map(|(k, kn, v)| (k.as_str(), *kn, *v))
    }

    /// The path of a key of this mapping: `target.service`.
    pub fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

pub(super) fn string(e: &mut Errors<'_>, n: &Node, what: &str) -> Option<String> {
    let s = e.scalar_text(n);
    if s.is_none() {
        e.wrong_type(n, what, "a string");
    }
    s
}

pub(super) fn boolean(e: &mut Errors<'_>, n: &Node, what: &str) -> Option<bool> {
    match n.value {
        Value::Bool(b) => Some(b),
        _ => {
            e.wrong_type(n, what, "true or false");
            None
        }
    }
}

/// A whole number in `range`, described to the user as `expected`.
pub(super) fn integer(
    e: &mut Errors<'_>,
    n: &Node,
    what: &str,
    range: std::ops::RangeInclusive<i128>,
    expected: &str,
) -> Option<i128> {
    let v = match &n.value {
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.trim().parse::<i128>().ok(),
        _ => None,
    };
    match v {
        Some(i) if range.contains(&i) => Some(i),
        _ => {
            e.wrong_type(n, what, expected);
            None
        }
    }
}

pub(super) fn duration(e: &mut Errors<'_>, n: &Node, what: &str) -> Option<Duration> {
    let s = e.scalar_text(n);
    let Some(s) = s else {
        e.wrong_type(n, what, "a duration such as 30s, 2m or 1h");
        return None;
    };
    match duration_text::parse(&s) {
        Ok(d) => Some(d),
        Err(problem) => {
            e.at(n.pos, format!("{what} {problem}"));
            None
        }
    }
}

/// A list's items; `None` (recorded) when `n` is not a list.
pub(super) fn list<'n>(e: &mut Errors<'_>, n: &'n Node, what: &str) -> Option<&'n [Node]> {
    match &n.value {
        Value::Seq(items) => Some(items),
        _ => {
            e.wrong_type(n, what, "a list");
            None
        }
    }
}

/// A list of strings, each with its place; `None` when the list or any item is not right.
pub(super) fn strings(
    e: &mut Errors<'_>,
    n: &Node,
    what: &str,
) -> Option<Vec<(String, Option<Pos>)>> {
    let items = list(e, n, what)?;
    let before = e.count();
    let out: Vec<_> = items
        .iter()
        .filter_map(|item| string(e, item, what).map(|s| (s, item.pos)))
        .collect();
    (e.count() == before).then_some(out)
}

/// A list of contact names, each checked against `contacts` when they are known.
pub(super) fn contact_list<V>(
    e: &mut Errors<'_>,
    n: &Node,
    what: &str,
    contacts: Option<&BTreeMap<String, V>>,
    in_file: &str,
) -> Option<Vec<String>> {
    let names = strings(e, n, what)?;
    let before = e.count();
    if let Some(contacts) = contacts {
        for (who, pos) in &names {
            if !contacts.contains_key(who) {
                e.at(
                    *pos,
                    format!(
                        "{what} `{who}` is not a contact{in_file} (known: {})",
                        super::names_of(contacts)
                    ),
                );
            }
        }
    }
    (e.count() == before).then(|| names.into_iter().map(|(s, _)| s).collect())
}
