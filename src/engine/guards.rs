//! The guards between a matched rule and its runbook, as pure functions of the facts the
//! engine (or `simulate`) gathered. Each returns a [`Decision`] with a reason a person can
//! act on; the engine stores every one and stops at the first `Skip`.
//!
//! Order: dedup, flapping, pause, maintenance window, deploy in progress, dry-run, rate limit
//! (rule × target), global action budget, busy target. What people do (a pause, a window, a
//! deploy) and dry-run come before the limiters so that they never spend their budget; none of
//! them pages: the incident still opens, is told and escalates, only its runbook is skipped.
//!
//! The limiters are GCRA limiters (see [`super::limits`]) with a burst of `runs` and one run
//! replenished per `per`. Their state is stored with each run's start, so a restart keeps it
//! exactly, `simulate` sees what the engine sees, and a runbook that a later guard stopped
//! spends nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::limits::{Gcra, LimitState};

use crate::domain::duration::{format as human, round_up_secs};
use crate::domain::hold::until_text;
use crate::domain::{Cleared, DecisionKind, DeployFact, PauseFact, Verdict, WindowFact};
use crate::rules::{Rule, TargetRef};

/// One guard's verdict and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub guard: DecisionKind,
    pub verdict: Verdict,
    pub reason: String,
    /// Whether a skip should page people (dedup and busy skips do not: another incident's
    /// runbook is already on it).
    #[serde(skip)]
    pub pages: bool,
    /// What a guard that let the runbook go found, for the thread's one "go" reply.
    #[serde(skip)]
    pub cleared: Option<Cleared>,
}

impl Decision {
    pub(crate) fn go(guard: DecisionKind, reason: impl Into<String>) -> Self {
        Decision {
            guard,
            verdict: Verdict::Continue,
            reason: reason.into(),
            pages: false,
            cleared: None,
        }
    }

    /// A guard let the runbook go, having found `cleared`.
    pub(crate) fn cleared(reason: impl Into<String>, cleared: Cleared) -> Self {
        Decision {
            cleared: Some(cleared.clone()),
            ..Decision::go(cleared.guard(), reason)
        }
    }

    /// What the guard found, for the "go" reply: its facts, or its reason.
    pub fn cleared_fact(&self) -> Cleared {
        self.cleared.clone().unwrap_or_else(|| Cleared::Said {
            guard: self.guard,
            reason: self.reason.clone(),
        })
    }

    pub(crate) fn skip(guard: DecisionKind, reason: impl Into<String>, pages: bool) -> Self {
        Decision {
            guard,
            verdict: Verdict::Skip,
            reason: reason.into(),
            pages,
            cleared: None,
        }
    }
}

/// Guard settings (`engine:` in the configuration file).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSettings {
    /// Record what would run, run nothing.
    pub dry_run: bool,
    /// Set by the engine for a drill without `--live` (never configured).
    #[serde(skip)]
    pub dry_run_drill: bool,
    /// This many firings of one alert within `flapping_window` → page, don't act.
    pub flapping_firings: u32,
    #[serde(with = "crate::domain::duration::serde_text")]
    pub flapping_window: Duration,
    /// At most this many runbooks in `budget_per`, across all rules (the breaker).
    pub budget_runs: u32,
    #[serde(with = "crate::domain::duration::serde_text")]
    pub budget_per: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            dry_run: false,
            dry_run_drill: false,
            flapping_firings: 4,
            flapping_window: Duration::from_secs(3600),
            budget_runs: 10,
            budget_per: Duration::from_secs(600),
        }
    }
}

/// What the guards look at for one incident of a rule on a target, gathered before they run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardFacts {
    /// Another open incident of the same rule and target that has run its runbook.
    pub open_run: Option<i64>,
    /// Incidents of this fingerprint that started within the flapping window.
    pub firings: i64,
    /// Start times of the runs of this rule on this target within the rule's `limit.per`.
    pub rule_runs: Vec<DateTime<Utc>>,
    /// Start times of every run within the budget's window.
    pub all_runs: Vec<DateTime<Utc>>,
    /// The stored state of this rule × target's limiter, and of the global budget's.
    pub rule_limit: Option<LimitState>,
    pub budget_limit: Option<LimitState>,
    /// The incident whose runbook holds the target now.
    pub busy: Option<i64>,
    /// Fleet mode: the replica whose runbook holds it (`busy` is that replica's incident);
    /// `None` for this replica's own.
    pub busy_replica: Option<String>,
    /// A pause that covers this rule or target now.
    pub pause: Option<PauseFact>,
    /// A maintenance window in force now that covers this rule or target. `plan()` sets it
    /// from the rule set; a [`super::plan::GuardState`] leaves it `None`.
    pub window: Option<WindowFact>,
    /// A deploy of the target seen within the deploy grace.
    pub deploy: Option<DeployFact>,
}

/// Whether to stop at the first skip (acting) or evaluate every guard (`simulate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Act,
    Simulate,
}

/// What a runbook that starts spends: the limiters' new states, stored with its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    pub rule: LimitState,
    pub budget: LimitState,
}

/// The guards' verdicts, and what a run would spend when none refused.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub decisions: Vec<Decision>,
    pub spent: Option<Spent>,
}

/// The key of a rule × target limiter in the store.
pub fn rule_limit_key(rule: &str, target: &TargetRef) -> String {
    format!("rule\t{rule}\t{}", target.key())
}

/// The key of the global action budget's limiter in the store.
pub const BUDGET_LIMIT_KEY: &str = "budget";

/// Evaluates the guards in order against `facts`.
pub fn evaluate(
    settings: &GuardSettings,
    rule: &Rule,
    target: &TargetRef,
    facts: &GuardFacts,
    now: DateTime<Utc>,
    mode: Mode,
) -> Evaluation {
    let mut out = Vec::new();
    let target_key = target.key();
    let rule_gcra = Gcra::new(rule.limit.runs, rule.limit.per);
    let rule_check = rule_gcra.check(rule_gcra.state(facts.rule_limit, &facts.rule_runs), now);
    let budget_gcra = Gcra::new(settings.budget_runs, settings.budget_per);
    let budget_check =
        budget_gcra.check(budget_gcra.state(facts.budget_limit, &facts.all_runs), now);
    let checks: [&dyn Fn() -> Decision; 9] = [
        // dedup: another open incident of this rule and target already ran its runbook.
        &|| {
            match facts.open_run {
            Some(other) => Decision::skip(
                DecisionKind::Dedup,
                format!("incident #{other} (same rule {}, same target {target_key}) is still open and has run its runbook; not running it twice", rule.name),
                false,
            ),
            None => Decision::cleared(
                format!("no other open incident of rule {} on {target_key} has run", rule.name),
                Cleared::Dedup,
            ),
        }
        },
        &|| {
            let window = settings.flapping_window;
            let limit = i64::from(settings.flapping_firings.max(2));
            let firings = facts.firings;
            if firings >= limit {
                Decision::skip(
                    DecisionKind::Flapping,
                    format!("flapping: this alert fired {firings} times in the last {} (threshold {limit}); paging instead of acting", human(window)),
                    true,
                )
            } else {
                Decision::cleared(
                    format!(
                        "{firings} firing(s) in the last {} (threshold {limit})",
                        human(window)
                    ),
                    Cleared::Flapping {
                        firings,
                        threshold: limit,
                        window,
                    },
                )
            }
        },
        &|| match &facts.pause {
            Some(p) => Decision::skip(
                DecisionKind::Pause,
                format!(
                    "paused by {} until {}: {}",
                    p.by,
                    until_text(p.until, now),
                    p.reason
                ),
                false,
            ),
            None => Decision::cleared("no pause covers it", Cleared::Pause),
        },
        &|| match &facts.window {
            Some(w) => Decision::skip(
                DecisionKind::Window,
                match w.until {
                    Some(until) => format!(
                        "inside maintenance window {} (until {})",
                        w.name,
                        until_text(until, now)
                    ),
                    None => format!("inside maintenance window {}", w.name),
                },
                false,
            ),
            None => Decision::cleared("no maintenance window in force", Cleared::Window),
        },
        &|| match &facts.deploy {
            Some(d) => Decision::skip(
                DecisionKind::Deploy,
                format!(
                    "a deploy of {} is in progress (container {} {} ago)",
                    d.service,
                    d.action,
                    ago_text((now - d.at).to_std().unwrap_or_default())
                ),
                false,
            ),
            None => Decision::cleared("no deploy in progress", Cleared::Deploy),
        },
        &|| {
            if settings.dry_run || rule.dry_run {
                let whose = if rule.dry_run {
                    "the rule"
                } else if settings.dry_run_drill {
                    "a drill without --live"
                } else {
                    "the service"
                };
                let plan: Vec<&str> = rule.steps.iter().map(|st| st.name).collect();
                Decision::skip(
                    DecisionKind::DryRun,
                    format!(
                        "dry-run ({whose}): would run {} on {target_key}",
                        plan.join(", ")
                    ),
                    false,
                )
            } else {
                Decision::cleared("live", Cleared::DryRun)
            }
        },
        &|| {
            let used = facts.rule_runs.len();
            let (runs, per) = (rule.limit.runs, rule.limit.per);
            match rule_check {
                Ok(_) => Decision::cleared(
                    format!("run {} of {runs} allowed for {target_key} in {}", used + 1, human(per)),
                    Cleared::RateLimit {
                        run: used + 1,
                        of: runs,
                        target: target.name().to_owned(),
                        per,
                    },
                ),
                Err(wait) => Decision::skip(
                    DecisionKind::RateLimit,
                    format!(
                        "rate limited: {used} of {runs} runs for {target_key} in the last {}; next run allowed in {}",
                        human(per),
                        human(round_up_secs(wait))
                    ),
                    true,
                ),
            }
        },
        &|| {
            let (runs, per) = (settings.budget_runs, settings.budget_per);
            match budget_check {
                Ok(_) => Decision::cleared(
                    format!("within the global budget of {runs} runbooks per {}", human(per)),
                    Cleared::Budget {
                        run: facts.all_runs.len() + 1,
                        of: runs,
                        per,
                    },
                ),
                Err(wait) => Decision::skip(
                    DecisionKind::Budget,
                    format!(
                        "global action budget spent: {runs} runbooks in {}; automation is paused (breaker open) for {}",
                        human(per),
                        human(round_up_secs(wait))
                    ),
                    true,
                ),
            }
        },
        // one runbook per target at a time
        &|| {
            match (target, facts.busy) {
            (TargetRef::None, _) => {
                Decision::cleared("no container target", Cleared::Busy { target: None })
            }
            (_, Some(holder)) => Decision::skip(
                DecisionKind::Busy,
                format!(
                    "the runbook of incident #{holder}{} is still running on {target_key}; one runbook per container at a time",
                    facts.busy_replica.as_ref().map(|r| format!(" of replica {r}")).unwrap_or_default()
                ),
                false,
            ),
            (_, None) => Decision::cleared(
                format!("{target_key} is free"),
                Cleared::Busy {
                    target: Some(target.name().to_owned()),
                },
            ),
        }
        },
    ];
    for check in checks {
        let d = check();
        let stop = d.verdict == Verdict::Skip && mode == Mode::Act;
        out.push(d);
        if stop {
            break;
        }
    }
    let spent = match (rule_check, budget_check) {
        (Ok(rule), Ok(budget)) if out.iter().all(|d| d.verdict == Verdict::Continue) => {
            Some(Spent { rule, budget })
        }
        _ => None,
    };
    Evaluation {
        decisions: out,
        spent,
    }
}

/// "40 s", "2 min 5 s": how long ago something was seen, in whole seconds (rounded up).
fn ago_text(d: Duration) -> String {
    match (
        round_up_secs(d).as_secs() / 60,
        round_up_secs(d).as_secs() % 60,
    ) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

/// `now` minus a std duration, saturating.
pub(crate) fn ago(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(d).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_skip_says_what_happened_to_the_container_and_how_long_ago() {
        let text = |f: &str| {
            std::fs::read_to_string(format!("{}/rules/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap()
        };
        let set = crate::rules::compile(&[
            crate::rules::Source {
                path: "escalation.yaml".into(),
                text: text("escalation.yaml"),
            },
            crate::rules::Source {
                path: "10-postgres.yaml".into(),
                text: text("10-postgres.yaml"),
            },
        ])
        .unwrap();
        let rule = set.rules[0].clone();
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 2, 3, 0, 0).unwrap();
        let facts = GuardFacts {
            deploy: Some(DeployFact {
                service: "backend".into(),
                action: crate::domain::DeployAction::Recreated,
                at: now - chrono::Duration::milliseconds(39_400),
            }),
            ..GuardFacts::default()
        };
        let target = TargetRef::Service("backend".into());
        let e = evaluate(
            &GuardSettings::default(),
            &rule,
            &target,
            &facts,
            now,
            Mode::Act,
        );
        let last = e.decisions.last().unwrap();
        assert_eq!(last.guard, DecisionKind::Deploy);
        assert_eq!(last.verdict, Verdict::Skip);
        assert_eq!(
            last.reason,
            "a deploy of backend is in progress (container recreated 40 s ago)"
        );
        assert!(!last.pages, "a deploy is people at work: told, not paged");
        assert_eq!(ago_text(Duration::from_secs(125)), "2 min 5 s");
        assert_eq!(ago_text(Duration::from_secs(300)), "5 min");
    }
}
