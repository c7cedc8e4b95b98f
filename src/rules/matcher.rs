//! Alertmanager label matchers: `name="value"`, `name!="value"`, `name=~"regex"`,
//! `name!~"regex"`. As in Alertmanager, a missing label matches as the empty string and
//! regexes are anchored at both ends.

use std::fmt;

use regex::Regex;

use crate::alert::Labels;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    /// Parses one matcher. The error (one line) says what is wrong and how a valid one looks.
    pub fn parse(input: &str) -> Result<Matcher, String> {
        let s = input.trim();
        let name_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let name = &s[..name_end];
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !valid_name {
            return Err(format!(
                "matcher `{input}` must start with a label name, as in alertname=\"PostgresDown\"",
            ));
        }
        let rest = s[name_end..].trim_start();
        let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
            (MatchOp::Regex, r)
        } else if let Some(r) = rest.strip_prefix("!~") {
            (MatchOp::NotRegex, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (MatchOp::Equal, r)
        } else {
            return Err(format!(
                "matcher `{input}` needs one of the operators =, !=, =~, !~ after `{name}`",
            ));
        };
        let value = unquote(rest.trim()).map_err(|e| format!("matcher `{input}`: {e}"))?;
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                    format!(
                        "matcher `{input}`: invalid regular expression: {}",
                        regex_problem(&e)
                    )
                })?)
            }
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value,
            regex,
        })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(v),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(v),
            // parse() always compiles a regex for the regex operators.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// A double-quoted value with `\"`, `\\` and `\n` escapes, or a bare word as Alertmanager's
/// newer parser allows.
fn unquote(s: &str) -> Result<String, String> {
    let Some(inner) = s.strip_prefix('"') else {
        if s.contains(['"', ',', '{', '}', ' ']) {
            return Err(format!("value `{s}` must be double-quoted"));
        }
        return Ok(s.to_string());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some(other) => {
                    // Keep unknown escapes for the regex engine (e.g. `\d`).
                    out.push('\\');
                    out.push(other);
                }
                None => return Err("value ends inside an escape".into()),
            },
            '"' => {
                return if chars.as_str().trim().is_empty() {
                    Ok(out)
                } else {
                    Err(format!(
                        "unexpected text after the closing quote: `{}`",
                        chars.as_str()
                    ))
                };
            }
            c => out.push(c),
        }
    }
    Err("value is missing its closing double quote".into())
}

/// The regex crate's message without its multi-line drawing of the pattern (which shows the
/// anchored `^(?:...)$` we built, not what the user wrote).
fn regex_problem(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().next().unwrap_or("invalid"))
        .trim()
        .to_string()
}
