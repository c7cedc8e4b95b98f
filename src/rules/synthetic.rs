//! The labels of a synthetic alert for a rule (`remediator run`, `remediator drill`): the
//! rule's equality matchers, the first plain alternative of a regex matcher such as
//! `alertname=~"ServiceDown|ContainerUnhealthy"`, the service, and the labels given. Pure.

use super::{MatchOp, Rule, RuleSet, Target};
use crate::alert::Labels;

/// The labels that make `rule` the first match, or every problem at once (each naming what
/// is missing or in the way, for a 400).
pub fn synthetic_labels(
    set: &RuleSet,
    rule: &Rule,
    service: Option<&str>,
    given: &Labels,
) -> Result<Labels, Vec<String>> {
    let mut problems = Vec::new();
    let mut labels = Labels::new();
    for m in &rule.matchers {
        match m.op {
            MatchOp::Equal if !m.value.is_empty() => {
                labels.insert(m.name.clone(), m.value.clone());
            }
            MatchOp::Regex => {
                if let Some(first) = plain_alternative(&m.value) {
                    labels.insert(m.name.clone(), first.to_owned());
                }
            }
            _ => {}
        }
    }
    if let Some(service) = service {
        match &rule.target {
            Target::Label { label, .. } => {
                labels.insert(label.clone(), service.to_owned());
            }
            Target::Service(s) if s != service => problems.push(format!(
                "service: rule {} always acts on {s}, not {service}",
                rule.name
            )),
            Target::Service(_) => {}
            Target::Container(_) | Target::None => problems.push(format!(
                "service: rule {} does not act on a service picked by the alert; leave it out",
                rule.name
            )),
        }
    }
    for (k, v) in given {
        labels.insert(k.clone(), v.clone());
    }
    for m in &rule.matchers {
        if !m.matches(&labels) {
            problems.push(format!(
                "labels: the rule's matcher {m} is not satisfied by {}; give the label with --label {}=VALUE (\"labels\": {{\"{}\": ...}})",
                labels.get(&m.name).map_or_else(
                    || format!("a missing {}", m.name),
                    |v| format!("{}={v:?}", m.name)
                ),
                m.name,
                m.name
            ));
        }
    }
    if let Target::Label { label, .. } = &rule.target {
        match rule.resolve_target(&labels) {
            Err(e) if labels.contains_key(label) => problems.push(format!("service: {e}")),
            Err(_) => problems.push(format!(
                "service: rule {} picks its target from the {label:?} label; give --service (\"service\")",
                rule.name
            )),
            Ok(_) => {}
        }
    }
    if problems.is_empty() {
        if let Some(first) = set.find(&labels).filter(|r| r.name != rule.name) {
            problems.push(format!(
                "labels: these labels match rule {} first (first match wins); give labels that only {} matches",
                first.name, rule.name
            ));
        }
    }
    if problems.is_empty() {
        Ok(labels)
    } else {
        Err(problems)
    }
}

/// The first alternative of a regex made of plain words (`A|B|C`), if it is one.
fn plain_alternative(pattern: &str) -> Option<&str> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | ' '))
    };
    let first = pattern.split('|').next()?;
    pattern.split('|').all(plain).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(yaml: &str) -> RuleSet {
        let escalation = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rules/escalation.yaml"
        ))
        .unwrap();
        let source = |path: &str, text: &str| super::super::Source {
            path: path.into(),
            text: text.to_owned(),
        };
        super::super::compile(&[
            source("rules/10-r.yaml", yaml),
            source("rules/escalation.yaml", &escalation),
        ])
        .unwrap()
    }

    const RULES: &str = r#"
rules:
  - name: single
    matchers: ['alertname=~"ServiceDown|ContainerUnhealthy"', 'env!="staging"']
    priority: P2
    rto: 15m
    owner: infra
    target: { label: service, allow: [redis, backend] }
    steps: [ { restart: {} } ]
  - name: bring-up
    matchers: ['alertname="FullBringUp"', 'site=~"eu-.*"']
    priority: P1
    rto: 1h
    owner: infra
    target: { none: true }
    steps: [ { wait: { duration: 1s } } ]
"#;

    #[test]
    fn the_first_plain_alternative_and_the_service_make_the_labels() {
        let set = set(RULES);
        let labels = synthetic_labels(
            &set,
            set.get("single").unwrap(),
            Some("redis"),
            &Labels::new(),
        )
        .unwrap();
        assert_eq!(
            labels,
            Labels::from([
                ("alertname".into(), "ServiceDown".into()),
                ("service".into(), "redis".into())
            ])
        );
    }

    #[test]
    fn a_matcher_the_given_labels_cannot_satisfy_is_named() {
        let set = set(RULES);
        let rule = set.get("bring-up").unwrap();
        let err = synthetic_labels(&set, rule, None, &Labels::new()).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].contains(r#"site=~"eu-.*""#), "{err:?}");
        assert!(err[0].contains("--label site=VALUE"), "{err:?}");
        let given = Labels::from([("site".into(), "eu-1".into())]);
        assert!(synthetic_labels(&set, rule, None, &given).is_ok());
    }

    #[test]
    fn a_service_outside_the_allowlist_or_missing_is_refused() {
        let set = set(RULES);
        let rule = set.get("single").unwrap();
        let err = synthetic_labels(&set, rule, Some("postgres"), &Labels::new()).unwrap_err();
        assert!(err[0].contains("allowlist"), "{err:?}");
        let err = synthetic_labels(&set, rule, None, &Labels::new()).unwrap_err();
        assert!(err[0].contains("give --service"), "{err:?}");
    }
}
