//! The guards between a matched rule and its runbook, as pure functions of the facts the
//! engine (or `simulate`) gathered. Each returns a [`Decision`] with a reason a person can
//! act on; the engine stores every one and stops at the first `Skip`.
//!
//! Order: dedup, flapping, dry-run, rate limit (rule × target), global action budget, busy
//! target. Dry-run comes before the limiters so that it never spends their budget.
//!
//! The limiters are governor GCRA limiters with a burst of `runs` and one run replenished per
//! `per`: never more than `runs` in any window of `per`. Their state is the stored runs: each
//! check replays the runs of the window into a fresh limiter at their start times and asks
//! whether one more fits now. So a restart, a reload that changes a limit, and `simulate` all
//! see the same limits, and a runbook that was never started spends nothing.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::domain::duration::{format as human, round_up_secs};
use crate::domain::{DecisionKind, Verdict};
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
}

impl Decision {
    pub(crate) fn go(guard: DecisionKind, reason: impl Into<String>) -> Self {
        Decision {
            guard,
            verdict: Verdict::Continue,
            reason: reason.into(),
            pages: false,
        }
    }

    pub(crate) fn skip(guard: DecisionKind, reason: impl Into<String>, pages: bool) -> Self {
        Decision {
            guard,
            verdict: Verdict::Skip,
            reason: reason.into(),
            pages,
        }
    }
}

/// Guard settings (`engine:` in the configuration file).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSettings {
    /// Record what would run, run nothing.
    pub dry_run: bool,
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
    /// The incident whose runbook holds the target now.
    pub busy: Option<i64>,
}

/// Whether to stop at the first skip (acting) or evaluate every guard (`simulate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Act,
    Simulate,
}

/// Evaluates the guards in order against `facts`.
pub fn evaluate(
    settings: &GuardSettings,
    rule: &Rule,
    target: &TargetRef,
    facts: &GuardFacts,
    now: DateTime<Utc>,
    mode: Mode,
) -> Vec<Decision> {
    let mut out = Vec::new();
    let target_key = target.key();
    let checks: [&dyn Fn() -> Decision; 6] = [
        // dedup: another open incident of this rule and target already ran its runbook.
        &|| {
            match facts.open_run {
            Some(other) => Decision::skip(
                DecisionKind::Dedup,
                format!("incident #{other} (same rule {}, same target {target_key}) is still open and has run its runbook; not running it twice", rule.name),
                false,
            ),
            None => Decision::go(
                DecisionKind::Dedup,
                format!("no other open incident of rule {} on {target_key} has run", rule.name),
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
                Decision::go(
                    DecisionKind::Flapping,
                    format!(
                        "{firings} firing(s) in the last {} (threshold {limit})",
                        human(window)
                    ),
                )
            }
        },
        &|| {
            if settings.dry_run || rule.dry_run {
                let whose = if rule.dry_run {
                    "the rule"
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
                Decision::go(DecisionKind::DryRun, "live")
            }
        },
        &|| {
            let used = facts.rule_runs.len();
            let (runs, per) = (rule.limit.runs, rule.limit.per);
            match one_more(runs, per, &facts.rule_runs, now) {
                Ok(()) => Decision::go(
                    DecisionKind::RateLimit,
                    format!("run {} of {runs} allowed for {target_key} in {}", used + 1, human(per)),
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
            match one_more(runs, per, &facts.all_runs, now) {
                Ok(()) => Decision::go(
                    DecisionKind::Budget,
                    format!("within the global budget of {runs} runbooks per {}", human(per)),
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
            (TargetRef::None, _) => Decision::go(DecisionKind::Busy, "no container target"),
            (_, Some(holder)) => Decision::skip(
                DecisionKind::Busy,
                format!("the runbook of incident #{holder} is still running on {target_key}; one runbook per container at a time"),
                false,
            ),
            (_, None) => Decision::go(DecisionKind::Busy, format!("{target_key} is free")),
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
    out
}

fn quota(runs: u32, per: Duration) -> Quota {
    let burst = NonZeroU32::new(runs.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(per.max(Duration::from_millis(1)))
        .unwrap_or_else(|| Quota::per_hour(burst))
        .allow_burst(burst)
}

/// A governor clock that reads what it is set to: the limiter replays history on it.
#[derive(Clone, Default)]
struct ReplayClock(Arc<Mutex<Option<SystemTime>>>);

impl ReplayClock {
    fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.into());
    }
}

impl governor::clock::Clock for ReplayClock {
    type Instant = SystemTime;

    fn now(&self) -> SystemTime {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, ReplayClock, NoOpMiddleware<SystemTime>>;

/// Whether one more run fits at `now` after the runs that started at `history` (oldest
/// first); if not, how long until one does.
fn one_more(
    runs: u32,
    per: Duration,
    history: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Result<(), Duration> {
    let clock = ReplayClock::default();
    let limiter: Limiter = RateLimiter::direct_with_clock(quota(runs, per), clock.clone());
    for t in history {
        clock.set(*t);
        let _ = limiter.check();
    }
    clock.set(now);
    limiter
        .check()
        .map_err(|not_until| not_until.wait_time_from(clock.now()))
}

/// `now` minus a std duration, saturating.
pub(crate) fn ago(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(d).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_limit_replays_history_with_governors_semantics() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap();
        let hour = Duration::from_secs(3600);
        let at = |m: i64| t0 + chrono::Duration::minutes(m);
        assert!(one_more(2, hour, &[], at(0)).is_ok());
        assert!(one_more(2, hour, &[at(0)], at(1)).is_ok());
        let wait = one_more(2, hour, &[at(0), at(1)], at(2)).unwrap_err();
        assert!(wait > Duration::from_secs(3000), "{wait:?}");
        assert!(one_more(2, hour, &[at(0), at(1)], at(61)).is_ok());
    }
}
