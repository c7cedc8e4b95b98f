//! Templated `exec` argv: `{{ labels.NAME }}` and `{{ approval.choice }}`, each a whole argv
//! item, filled in when the step runs with a value that must match the step's pattern. Never
//! a shell string: a value is one argv item, whatever it holds, and a value that does not
//! match refuses the step. Pure.

use regex::Regex;

use crate::alert::Labels;

/// What a value put into an argv item must match, when the step sets no `pattern`.
pub const DEFAULT_ARGV_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._:-]*$";

/// An argv item filled in when the step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Template {
    /// `{{ labels.NAME }}`: the alert's label NAME.
    Label(String),
    /// `{{ approval.choice }}`: what the approver chose at the run's latest `approve` step.
    Choice,
}

impl Template {
    /// The template as written, for messages.
    pub fn shown(&self) -> String {
        match self {
            Template::Label(name) => format!("{{{{ labels.{name} }}}}"),
            Template::Choice => "{{ approval.choice }}".into(),
        }
    }
}

/// Reads one argv item: `Ok(None)` for plain text, `Ok(Some)` for a template that is the whole
/// item, and why not otherwise (a template inside other text, an unknown name).
pub fn template_of(item: &str) -> Result<Option<Template>, String> {
    if !item.contains("{{") && !item.contains("}}") {
        return Ok(None);
    }
    let inner = item
        .strip_prefix("{{")
        .and_then(|r| r.strip_suffix("}}"))
        .filter(|inner| !inner.contains("{{") && !inner.contains("}}"))
        .ok_or_else(|| {
            format!(
                "`{item}` holds a template inside other text: a template must be a whole argv item, e.g. [restore.sh, \"{{{{ approval.choice }}}}\"] (never part of a string, never a shell line)"
            )
        })?
        .trim();
    if inner == "approval.choice" {
        return Ok(Some(Template::Choice));
    }
    if let Some(name) = inner.strip_prefix("labels.") {
        let plain = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if plain {
            return Ok(Some(Template::Label(name.to_owned())));
        }
        return Err(format!(
            "`{item}`: `{name}` is not a label name (letters, digits and _, not starting with a digit)"
        ));
    }
    Err(format!(
        "unknown template `{item}` (expected `{{{{ labels.NAME }}}}` or `{{{{ approval.choice }}}}`)"
    ))
}

/// Compiles a step's pattern; the whole value must match it.
pub fn compile_pattern(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| format!("`{pattern}` is not a regular expression: {e}"))
}

/// The argv a step runs: every template filled in from `labels` and `choice`, each value
/// checked against `pattern` (or [`DEFAULT_ARGV_PATTERN`]). The error says which value was
/// refused and why; nothing is run then.
pub fn expand(
    argv: &[String],
    pattern: Option<&str>,
    labels: &Labels,
    choice: Option<&str>,
) -> Result<Vec<String>, String> {
    let pattern = pattern.unwrap_or(DEFAULT_ARGV_PATTERN);
    let mut compiled = None;
    argv.iter()
        .map(|item| {
            let Some(t) = template_of(item)? else {
                return Ok(item.clone());
            };
            let value = match &t {
                Template::Label(name) => labels.get(name).map(String::as_str).ok_or_else(|| {
                    format!("refused: the alert has no label `{name}` for {}", t.shown())
                })?,
                Template::Choice => choice.ok_or_else(|| {
                    format!(
                        "refused: {} has no value: no approval with a choice was given in this run",
                        t.shown()
                    )
                })?,
            };
            let re = match &compiled {
                Some(re) => re,
                None => compiled.insert(compile_pattern(pattern)?),
            };
            if !re.is_match(value) {
                return Err(format!(
                    "refused: {} is {value:?}, which does not match the pattern `{pattern}`; nothing was run",
                    t.shown()
                ));
            }
            Ok(value.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn templates_are_whole_items_with_known_names() {
        assert_eq!(template_of("plain"), Ok(None));
        assert_eq!(
            template_of("{{ labels.backup }}"),
            Ok(Some(Template::Label("backup".into())))
        );
        assert_eq!(
            template_of("{{approval.choice}}"),
            Ok(Some(Template::Choice))
        );
        for bad in [
            "--file={{ labels.backup }}",
            "{{ labels.a }}{{ labels.b }}",
            "x }}",
            "{{ labels.1x }}",
            "{{ labels.a-b }}",
            "{{ approval.by }}",
            "{{ env.HOME }}",
        ] {
            assert!(template_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_fill_whole_items_and_must_match_the_pattern() {
        let l = labels(&[("backup", "voiceai_20240101_020000.sql.gz")]);
        assert_eq!(
            expand(&argv(&["verify.sh", "{{ labels.backup }}"]), None, &l, None),
            Ok(argv(&["verify.sh", "voiceai_20240101_020000.sql.gz"]))
        );
        assert_eq!(
            expand(
                &argv(&["r.sh", "{{ approval.choice }}"]),
                None,
                &l,
                Some("b1")
            ),
            Ok(argv(&["r.sh", "b1"]))
        );
        for hostile in ["x; rm -rf /", "--flag", "-rf", "$(id)", "a b", "", "../etc"] {
            let l = labels(&[("backup", hostile)]);
            let err =
                expand(&argv(&["v.sh", "{{ labels.backup }}"]), None, &l, None).expect_err(hostile);
            assert!(err.contains("does not match the pattern"), "{err}");
        }
        let err = expand(
            &argv(&["v.sh", "{{ labels.backup }}"]),
            None,
            &labels(&[]),
            None,
        )
        .unwrap_err();
        assert!(err.contains("no label `backup`"), "{err}");
        let err = expand(&argv(&["v.sh", "{{ approval.choice }}"]), None, &l, None).unwrap_err();
        assert!(err.contains("no approval"), "{err}");
        // A step's own pattern; the whole value must match it.
        assert_eq!(
            expand(
                &argv(&["{{ labels.backup }}"]),
                Some("[a-z]+"),
                &labels(&[("backup", "abc")]),
                None
            ),
            Ok(argv(&["abc"]))
        );
        assert!(expand(
            &argv(&["{{ labels.backup }}"]),
            Some("[a-z]+"),
            &labels(&[("backup", "abc1")]),
            None
        )
        .is_err());
    }
}
