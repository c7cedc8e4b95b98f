//! A rule file as a tree of YAML nodes, each with the place it was written.
//!
//! serde-saphyr parses the text (anchors, aliases and merge keys included) and hands every node
//! to [`Node`]'s `Deserialize`, which keeps it with its [`Spanned`] location instead of fitting
//! it into a typed struct. Typed deserialisation stops at the first problem; a tree lets
//! `read.rs` check every field of every rule and report all of them.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Location, Spanned};

/// A place in a file: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    /// `None` for serde-saphyr's "unknown" location (line 0).
    pub(super) fn of(l: &Location) -> Option<Pos> {
        (l.line() > 0).then(|| Pos {
            line: l.line(),
            column: l.column().max(1),
        })
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[derive(Debug, Clone)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    /// No field takes a fraction; the number's text, as written, is all that is used.
    Float,
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order; a repeated key appears twice (the reader reports it).
    Map(Vec<(Node, Node)>),
}

/// One YAML node: its value, where it is used and, for a plain scalar, its text as written.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub value: Value,
    /// Where the node is used (for an alias, the `*alias`).
    pub pos: Option<Pos>,
    /// Byte range of the scalar's definition, to recover `1.50` or `yes` as written when a
    /// string is wanted.
    raw: Option<(usize, usize)>,
}

impl Node {
    /// The text of a scalar as written in `source` (plain scalars only; quoted ones are `Str`).
    pub fn raw<'s>(&self, source: &'s str) -> Option<&'s str> {
        let (start, len) = self.raw?;
        source.get(start..start + len)
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Value>::deserialize(d)?;
        let span = s.defined.span();
        let raw = match (&s.value, span.byte_offset(), span.byte_len()) {
            (Value::Seq(_) | Value::Map(_), _, _) => None,
            (_, Some(off), Some(len)) => Some((off as usize, len as usize)),
            _ => None,
        };
        Ok(Node {
            value: s.value,
            pos: Pos::of(&s.referenced),
            raw,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        // Beyond i128 no rule field can use it; keep it as a (too large) number.
        Ok(Value::Int(i128::try_from(v).unwrap_or(i128::MAX)))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Float)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Node>()? {
            let v = map.next_value::<Node>()?;
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

/// A YAML syntax error: where, and what the parser said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyntaxError {
    pub pos: Option<Pos>,
    pub message: String,
}

/// Parses one document; `None` when the file holds no document (empty, or only comments).
pub(super) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    // Repeated keys reach the reader, which reports each one with its line; serde-saphyr's
    // own check would stop the whole file at the first.
    let options = serde_saphyr::options! {
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
    };
    serde_saphyr::from_str_with_options::<Option<Node>>(text, options).map_err(|e| SyntaxError {
        pos: e.location().as_ref().and_then(Pos::of),
        message: syntax_message(&e),
    })
}

fn syntax_message(e: &serde_saphyr::Error) -> String {
    // The crate's Display adds a source snippet; its first line is the message, prefixed
    // with "error: line N column M: ", which file:line:column already says.
    let text = e.to_string();
    let mut message = text.lines().next().unwrap_or("invalid YAML").trim();
    message = message.strip_prefix("error: ").unwrap_or(message);
    if message.starts_with("line ") {
        if let Some((_, rest)) = message.split_once(": ") {
            message = rest;
        }
    }
    let message = message.trim_end_matches('.');
    if message.starts_with("multiple YAML documents") {
        // The crate's advice names its own functions; the user's fix is in the file.
        return "a rule file holds one YAML document; a second one starts here: move it to a file of its own".to_string();
    }
    if message.is_empty() {
        "invalid YAML".to_string()
    } else {
        format!("invalid YAML: {message}")
    }
}
