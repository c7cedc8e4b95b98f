//! The guards between a matched rule and its runbook. Each returns a [`Decision`] with a
//! reason a person can act on; the engine stores every one and stops at the first `Skip`.
//!
//! Order: dedup, flapping, dry-run, rate limit (rule × target), global action budget, busy
//! target. Dry-run comes before the limiters so that it never spends their budget.
//!
//! The limiters are governor GCRA limiters on the engine's clock with a burst of `runs` and
//! one run replenished per `per`: never more than `runs` in any window of `per`. They live in
//! memory and are rebuilt from the stored runs (replayed at their start times) whenever a
//! limiter is created: at start, and after a reload changes a rule's limit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::clock::{Clock, GovernorClock};
use crate::rules::duration_text::format as human;
use crate::rules::{Limit, Rule, TargetRef};
use crate::store::{Store, StoreError};

type KeyedLimiter = RateLimiter<
    String,
    HashMapStateStore<String>,
    GovernorClock,
    NoOpMiddleware<std::time::SystemTime>,
>;
type DirectLimiter =
    RateLimiter<NotKeyed, InMemoryState, GovernorClock, NoOpMiddleware<std::time::SystemTime>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Continue,
    Skip,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Continue => "continue",
            Verdict::Skip => "skip",
        }
    }
}

/// One guard's verdict and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub guard: &'static str,
    pub verdict: Verdict,
    pub reason: String,
    /// Whether a skip should page people (dedup and busy skips do not: another incident's
    /// runbook is already on it).
    #[serde(skip)]
    pub pages: bool,
}

impl Decision {
    fn go(guard: &'static str, reason: impl Into<String>) -> Self {
        Decision {
            guard,
            verdict: Verdict::Continue,
            reason: reason.into(),
            pages: false,
        }
    }

    fn skip(guard: &'static str, reason: impl Into<String>, pages: bool) -> Self {
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
    #[serde(with = "crate::settings::duration_serde")]
    pub flapping_window: Duration,
    /// At most this many runbooks in `budget_per`, across all rules (the breaker).
    pub budget_runs: u32,
    #[serde(with = "crate::settings::duration_serde")]
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

/// What the guards look at for one incident.
pub struct Subject<'a> {
    pub incident_id: i64,
    pub fingerprint: &'a str,
    pub rule: &'a Rule,
    pub target: &'a TargetRef,
}

pub struct Guards {
    settings: GuardSettings,
    clock: Arc<dyn Clock>,
    per_rule: HashMap<String, (Limit, GovernorClock, KeyedLimiter)>,
    budget: Option<(GovernorClock, DirectLimiter)>,
    /// Target key → the incident whose runbook holds it.
    busy: HashMap<String, i64>,
}

fn quota(runs: u32, per: Duration) -> Quota {
    let burst = NonZeroU32::new(runs.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(per.max(Duration::from_millis(1)))
        .unwrap_or_else(|| Quota::per_hour(burst))
        .allow_burst(burst)
}

impl Guards {
    pub fn new(settings: GuardSettings, clock: Arc<dyn Clock>) -> Guards {
        Guards {
            settings,
            clock,
            per_rule: HashMap::new(),
            budget: None,
            busy: HashMap::new(),
        }
    }

    pub fn settings(&self) -> &GuardSettings {
        &self.settings
    }

    /// Evaluates the guards in order. With `all`, keeps going after a skip (for `simulate`);
    /// otherwise stops at the first skip. On a full pass the target is marked busy.
    pub fn evaluate(
        &mut self,
        store: &Store,
        s: &Subject<'_>,
        all: bool,
    ) -> Result<Vec<Decision>, StoreError> {
        let now = self.clock.now();
        let mut out = Vec::new();
        let target_key = s.target.key();
        let rule = s.rule;

        let push = |out: &mut Vec<Decision>, d: Decision| -> bool {
            let stop = d.verdict == Verdict::Skip && !all;
            out.push(d);
            stop
        };

        // dedup: another open incident of this rule and target already ran its runbook.
        let d = match store.open_run_for(&rule.name, &target_key, s.incident_id)? {
            Some(other) => Decision::skip(
                "dedup",
                format!("incident #{other} (same rule {}, same target {target_key}) is still open and has run its runbook; not running it twice", rule.name),
                false,
            ),
            None => Decision::go("dedup", format!("no other open incident of rule {} on {target_key} has run", rule.name)),
        };
        if push(&mut out, d) {
            return Ok(out);
        }

        // flapping
        let window = self.settings.flapping_window;
        let since = ago(now, window);
        let firings = store.count_firings(s.fingerprint, since)?;
        let limit = i64::from(self.settings.flapping_firings.max(2));
        let d = if firings >= limit {
            Decision::skip(
                "flapping",
                format!("flapping: this alert fired {firings} times in the last {} (threshold {limit}); paging instead of acting", human(window)),
                true,
            )
        } else {
            Decision::go(
                "flapping",
                format!(
                    "{firings} firing(s) in the last {} (threshold {limit})",
                    human(window)
                ),
            )
        };
        if push(&mut out, d) {
            return Ok(out);
        }

        // dry-run
        let plan: Vec<&str> = rule.steps.iter().map(|st| st.name).collect();
        let d = if self.settings.dry_run || rule.dry_run {
            let whose = if rule.dry_run {
                "the rule"
            } else {
                "the service"
            };
            Decision::skip(
                "dry_run",
                format!(
                    "dry-run ({whose}): would run {} on {target_key}",
                    plan.join(", ")
                ),
                false,
            )
        } else {
            Decision::go("dry_run", "live")
        };
        if push(&mut out, d) {
            return Ok(out);
        }

        // rate limit, rule × target
        let used = store.count_runs(&rule.name, &target_key, ago(now, rule.limit.per))?;
        let limiter = self.rule_limiter(store, rule)?;
        let d = match limiter.check_key(&target_key) {
            Ok(()) => Decision::go(
                "rate_limit",
                format!(
                    "run {} of {} allowed for {target_key} in {}",
                    used + 1,
                    rule.limit.runs,
                    human(rule.limit.per)
                ),
            ),
            Err(not_until) => {
                let wait = not_until.wait_time_from(GovernorClock::new(self.clock.clone()).now());
                Decision::skip(
                    "rate_limit",
                    format!(
                        "rate limited: {used} of {} runs for {target_key} in the last {}; next run allowed in {}",
                        rule.limit.runs,
                        human(rule.limit.per),
                        human(round_secs(wait))
                    ),
                    true,
                )
            }
        };
        if push(&mut out, d) {
            return Ok(out);
        }

        // global action budget (breaker)
        let (runs, per) = (self.settings.budget_runs, self.settings.budget_per);
        let budget = self.budget_limiter(store)?;
        let d = match budget.check() {
            Ok(()) => Decision::go(
                "budget",
                format!(
                    "within the global budget of {runs} runbooks per {}",
                    human(per)
                ),
            ),
            Err(not_until) => {
                let wait = not_until.wait_time_from(GovernorClock::new(self.clock.clone()).now());
                Decision::skip(
                    "budget",
                    format!(
                        "global action budget spent: {runs} runbooks in {}; automation is paused (breaker open) for {}",
                        human(per),
                        human(round_secs(wait))
                    ),
                    true,
                )
            }
        };
        if push(&mut out, d) {
            return Ok(out);
        }

        // one runbook per target at a time
        let d = match (s.target, self.busy.get(&target_key)) {
            (TargetRef::None, _) => Decision::go("busy", "no container target"),
            (_, Some(holder)) => Decision::skip(
                "busy",
                format!("the runbook of incident #{holder} is still running on {target_key}; one runbook per container at a time"),
                false,
            ),
            (_, None) => Decision::go("busy", format!("{target_key} is free")),
        };
        if push(&mut out, d) {
            return Ok(out);
        }
        if !all && !matches!(s.target, TargetRef::None) {
            self.busy.insert(target_key, s.incident_id);
        }
        Ok(out)
    }

    /// Frees the target when a runbook ends.
    pub fn release(&mut self, target: &TargetRef, incident_id: i64) {
        let key = target.key();
        if self.busy.get(&key) == Some(&incident_id) {
            self.busy.remove(&key);
        }
    }

    fn rule_limiter(&mut self, store: &Store, rule: &Rule) -> Result<&KeyedLimiter, StoreError> {
        let stale = self
            .per_rule
            .get(&rule.name)
            .is_none_or(|(l, _, _)| *l != rule.limit);
        if stale {
            let clock = GovernorClock::new(self.clock.clone());
            let limiter = RateLimiter::hashmap_with_clock(
                quota(rule.limit.runs, rule.limit.per),
                clock.clone(),
            );
            let since = ago(self.clock.now(), rule.limit.per);
            for run in store
                .runs_since(since)?
                .into_iter()
                .filter(|r| r.rule == rule.name)
            {
                let _ = clock.at(run.started_at, || limiter.check_key(&run.target));
            }
            self.per_rule
                .insert(rule.name.clone(), (rule.limit, clock, limiter));
        }
        Ok(&self.per_rule[&rule.name].2)
    }

    fn budget_limiter(&mut self, store: &Store) -> Result<&DirectLimiter, StoreError> {
        if self.budget.is_none() {
            let clock = GovernorClock::new(self.clock.clone());
            let limiter = RateLimiter::direct_with_clock(
                quota(self.settings.budget_runs, self.settings.budget_per),
                clock.clone(),
            );
            let since = ago(self.clock.now(), self.settings.budget_per);
            for run in store.runs_since(since)? {
                let _ = clock.at(run.started_at, || limiter.check());
            }
            self.budget = Some((clock, limiter));
        }
        Ok(self.budget.as_ref().map(|(_, l)| l).expect("set above"))
    }
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// `now` minus a std duration, saturating.
pub(crate) fn ago(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(d).unwrap_or_default()
}
