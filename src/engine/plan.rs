//! The plan: labels + rules + guard state → the decisions and the steps. Pure: the engine
//! and `simulate` both call [`plan`], handing it what they know of the past through
//! [`GuardState`] (the engine's store and running runbooks; `simulate`'s read-only store).

use chrono::{DateTime, Utc};

use super::guards::{self, ago, Decision, GuardFacts, GuardSettings, Mode, Spent};
use crate::alert::Labels;
use crate::domain::duration::format as human;
use crate::domain::{Contact, DecisionKind, Priority};
use crate::rules::{Rule, RuleSet, Step, TargetRef};

/// What the guards need to know of the past for one rule on one target.
pub trait GuardState {
    type Error;

    /// Facts for an incident (`incident`, of `fingerprint`) of `rule` on `target` at `now`.
    /// `rule_since` and `budget_since` bound the runs the limiters look at.
    fn facts(&self, q: &FactsQuery<'_>) -> Result<GuardFacts, Self::Error>;
}

/// What [`GuardState::facts`] is asked.
#[derive(Debug, Clone, Copy)]
pub struct FactsQuery<'a> {
    pub incident: i64,
    pub fingerprint: &'a str,
    pub rule: &'a str,
    pub target: &'a TargetRef,
    /// The target's compose service, when the target is one (pauses and deploys are kept
    /// per service).
    pub service: Option<&'a str>,
    pub now: DateTime<Utc>,
    pub flapping_since: DateTime<Utc>,
    pub rule_since: DateTime<Utc>,
    pub budget_since: DateTime<Utc>,
    /// Acting stops at the first skip: a state may then leave unread what only the guards
    /// after a skip would look at (the engine reads nothing more once dedup skips, the first
    /// guard). Simulating evaluates every guard and needs every fact.
    pub mode: Mode,
}

/// The rule an alert matched, and what follows from it alone.
#[derive(Debug, Clone)]
pub struct Matched<'a> {
    pub rule: &'a Rule,
    pub priority: Priority,
    /// The target, or why the alert's labels cannot choose one.
    pub target: Result<TargetRef, String>,
    /// Who hears of the incident when it opens: the priority's `notify` list and the owner.
    pub told: Vec<Contact>,
    /// The rule's owner (the root names them, and only them, as the owner).
    pub owner: Contact,
}

/// What the engine is to do.
#[derive(Debug, Clone)]
pub enum Action<'a> {
    /// No rule matches: nothing.
    Nothing,
    /// A guard (or the target) refused; `pages` when people must be paged.
    Skip { pages: bool, reason: String },
    /// Run the rule's steps on the target; the run spends `spent` of its limits.
    Run {
        target: TargetRef,
        steps: &'a [Step],
        on_failure: &'a [Step],
        spent: Spent,
    },
}

/// The plan for one alert.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub matched: Option<Matched<'a>>,
    /// In order: the match, then the target's refusal or each guard.
    pub decisions: Vec<Decision>,
    pub action: Action<'a>,
}

/// The contacts named, in order, each once; a name not in `escalation.yaml` is kept as is.
pub fn contacts<'n>(rules: &RuleSet, names: impl IntoIterator<Item = &'n String>) -> Vec<Contact> {
    let mut out: Vec<Contact> = Vec::new();
    for name in names {
        if out.iter().any(|c| &c.key == name) {
            continue;
        }
        out.push(match rules.escalation.contacts.get(name) {
            Some(c) => Contact {
                key: name.clone(),
                name: c.name.clone(),
                email: c.email.clone(),
                slack_user: c.slack_user.clone(),
            },
            None => Contact::unknown(name),
        });
    }
    out
}

/// Who is paged for an incident of `priority` whose rule is owned by `owner`.
pub fn paged(rules: &RuleSet, priority: Priority, owner: Option<&str>) -> Vec<Contact> {
    let policy = rules.escalation.policy(priority);
    let owner = owner.map(str::to_owned);
    contacts(rules, policy.page.iter().chain(owner.as_ref()))
}

/// The rule an alert's labels match, with its priority, target and who is told.
pub fn matching<'a>(labels: &Labels, rules: &'a RuleSet) -> Option<Matched<'a>> {
    let rule = rules.find(labels)?;
    let priority = rule.priority_for(labels);
    let policy = rules.escalation.policy(priority);
    Some(Matched {
        rule,
        priority,
        target: rule.resolve_target(labels),
        told: contacts(rules, policy.notify.iter().chain([&rule.owner])),
        owner: contacts(rules, [&rule.owner])
            .pop()
            .unwrap_or_else(|| Contact::unknown(&rule.owner)),
    })
}

/// Plans what to do for an alert (see the module docs). `incident` is 0 when simulating.
#[allow(clippy::too_many_arguments)]
pub fn plan<'a, S: GuardState>(
    labels: &Labels,
    fingerprint: &str,
    incident: i64,
    rules: &'a RuleSet,
    settings: &GuardSettings,
    state: &S,
    now: DateTime<Utc>,
    mode: Mode,
) -> Result<Plan<'a>, S::Error> {
    let Some(matched) = matching(labels, rules) else {
        return Ok(Plan {
            matched: None,
            decisions: vec![Decision::skip(
                DecisionKind::Match,
                "no rule matches this alert's labels; nothing to do",
                false,
            )],
            action: Action::Nothing,
        });
    };
    let rule = matched.rule;
    let mut decisions = vec![Decision::go(
        DecisionKind::Match,
        format!(
            "rule {} ({}:{}), {}, RTO {}",
            rule.name,
            rule.file.display(),
            rule.line,
            matched.priority,
            human(rule.rto)
        ),
    )];
    let target = match &matched.target {
        Ok(t) => t.clone(),
        Err(why) => {
            let d = Decision::skip(DecisionKind::Target, format!("refused: {why}"), true);
            let reason = d.reason.clone();
            decisions.push(d);
            return Ok(Plan {
                matched: Some(matched),
                decisions,
                action: Action::Skip {
                    pages: true,
                    reason,
                },
            });
        }
    };
    let service = match &target {
        TargetRef::Service(s) => Some(s.as_str()),
        _ => None,
    };
    let mut facts = state.facts(&FactsQuery {
        incident,
        fingerprint,
        rule: &rule.name,
        target: &target,
        service,
        now,
        flapping_since: ago(now, settings.flapping_window),
        rule_since: ago(now, rule.limit.per),
        budget_since: ago(now, settings.budget_per),
        mode,
    })?;
    // Maintenance windows are part of the rule set and need only `now`: judged here, so the
    // engine and `simulate` (with its `--at`) see the same.
    facts.window = rules.window_for(rule, service, now);
    let evaluation = guards::evaluate(settings, rule, &target, &facts, now, mode);
    let skip = evaluation
        .decisions
        .iter()
        .find(|d| d.verdict == crate::domain::Verdict::Skip);
    let action = match (skip, evaluation.spent) {
        (Some(skip), _) => Action::Skip {
            pages: skip.pages,
            reason: skip.reason.clone(),
        },
        (None, Some(spent)) => Action::Run {
            target,
            steps: &rule.steps,
            on_failure: &rule.on_failure,
            spent,
        },
        // Every guard continued, so both limits had room: `spent` is always there.
        (None, None) => Action::Skip {
            pages: true,
            reason: "the rate limits could not be computed; a human decides".into(),
        },
    };
    decisions.extend(evaluation.decisions);
    Ok(Plan {
        matched: Some(matched),
        decisions,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{compile, Source};
    use chrono::TimeZone;

    struct Facts(GuardFacts);

    impl GuardState for Facts {
        type Error = std::convert::Infallible;
        fn facts(&self, _: &FactsQuery<'_>) -> Result<GuardFacts, Self::Error> {
            Ok(self.0.clone())
        }
    }

    fn rules() -> RuleSet {
        let esc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rules/escalation.yaml"
        ))
        .unwrap();
        let pg = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rules/10-postgres.yaml"
        ))
        .unwrap();
        compile(&[
            Source {
                path: "escalation.yaml".into(),
                text: esc,
            },
            Source {
                path: "10-postgres.yaml".into(),
                text: pg,
            },
        ])
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_matching_alert_with_no_history_runs_its_steps() {
        let rules = rules();
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap();
        let p = plan(
            &labels(&[("alertname", "PostgresDown")]),
            "0123abcd",
            1,
            &rules,
            &GuardSettings::default(),
            &Facts(GuardFacts::default()),
            now,
            Mode::Act,
        )
        .unwrap();
        let kinds: Vec<_> = p.decisions.iter().map(|d| d.guard.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "match",
                "dedup",
                "flapping",
                "pause",
                "window",
                "deploy",
                "dry_run",
                "rate_limit",
                "budget",
                "busy"
            ]
        );
        assert!(matches!(p.action, Action::Run { .. }), "{:?}", p.action);
        let m = p.matched.unwrap();
        assert!(m.told.iter().any(|c| c.key == m.rule.owner));
    }

    #[test]
    fn acting_stops_at_the_first_skip_and_simulating_does_not() {
        let rules = rules();
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap();
        let busy = Facts(GuardFacts {
            open_run: Some(7),
            busy: Some(7),
            ..GuardFacts::default()
        });
        let l = labels(&[("alertname", "PostgresDown")]);
        let s = GuardSettings::default();
        let act = plan(&l, "ab", 1, &rules, &s, &busy, now, Mode::Act).unwrap();
        assert_eq!(act.decisions.len(), 2, "{:?}", act.decisions);
        assert!(matches!(act.action, Action::Skip { pages: false, .. }));
        let sim = plan(&l, "ab", 0, &rules, &s, &busy, now, Mode::Simulate).unwrap();
        assert_eq!(sim.decisions.len(), 10);
        assert!(matches!(sim.action, Action::Skip { pages: false, .. }));
    }

    #[test]
    fn a_window_in_force_skips_the_runbook_without_paging_and_only_then() {
        let mut sources = vec![Source {
            path: "maintenance.yaml".into(),
            text: "maintenance_windows:\n  - name: pg-upgrade\n    services: [postgres]\n    time_intervals:\n      - weekdays: [wednesday]\n        times: [ { start_time: '02:00', end_time: '04:00' } ]\n".into(),
        }];
        for file in ["escalation.yaml", "10-postgres.yaml"] {
            sources.push(Source {
                path: file.into(),
                text: std::fs::read_to_string(
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("rules")
                        .join(file),
                )
                .unwrap(),
            });
        }
        let rules = crate::rules::compile_in(std::path::Path::new(""), &sources, vec![])
            .unwrap_or_else(|e| panic!("{e}"));
        let l = labels(&[("alertname", "PostgresDown")]);
        let s = GuardSettings::default();
        let none = Facts(GuardFacts::default());
        // Wednesday 2026-11-25, 03:00 UTC.
        let inside = Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap();
        let p = plan(&l, "ab", 1, &rules, &s, &none, inside, Mode::Act).unwrap();
        let last = p.decisions.last().unwrap();
        assert_eq!(last.guard, DecisionKind::Window);
        assert_eq!(
            last.reason,
            "inside maintenance window pg-upgrade (until 04:00 UTC)"
        );
        assert!(
            matches!(&p.action, Action::Skip { pages: false, reason } if *reason == last.reason),
            "{:?}",
            p.action
        );
        // A week later at 04:00: out of it again.
        let after = inside + chrono::Duration::days(7) + chrono::Duration::hours(1);
        let p = plan(&l, "ab", 1, &rules, &s, &none, after, Mode::Act).unwrap();
        assert!(matches!(p.action, Action::Run { .. }), "{:?}", p.action);
        let window = p.decisions.iter().find(|d| d.guard == DecisionKind::Window);
        assert_eq!(window.unwrap().reason, "no maintenance window in force");
    }

    #[test]
    fn no_rule_is_one_decision_and_nothing_to_do() {
        let rules = rules();
        let p = plan(
            &labels(&[("alertname", "Nope")]),
            "ab",
            1,
            &rules,
            &GuardSettings::default(),
            &Facts(GuardFacts::default()),
            Utc::now(),
            Mode::Act,
        )
        .unwrap();
        assert!(p.matched.is_none());
        assert!(matches!(p.action, Action::Nothing));
        assert_eq!(p.decisions[0].guard, DecisionKind::Match);
    }
}
