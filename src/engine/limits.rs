//! The rate limits' state: GCRA (the generic cell rate algorithm governor implements), kept
//! as one stored time per limiter so that it is exact across restarts and reloads, and pure
//! so that `plan()` and `simulate` can ask without spending.
//!
//! A limiter of `runs` per `per` lets `runs` runbooks through at once and then one per `per`
//! (governor's `Quota::with_period(per).allow_burst(runs)`). Its whole state is the
//! theoretical arrival time (TAT): a run is allowed at `now` when `now >= tat - (runs - 1) *
//! per`, and then `tat` becomes `max(tat, now) + per`. The engine stores the new TAT in the
//! commit that starts the run. A limiter with no stored state (a store from before, or a
//! limit a reload changed) starts from the runs of the last `per`, replayed, as governor's
//! in-memory limiters did after a restart. The tests hold these semantics to governor's own.

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use crate::domain::LimitState;

/// A quota: `runs` at once, then one per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    pub runs: u32,
    pub per: Duration,
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Gcra {
    pub fn new(runs: u32, per: Duration) -> Gcra {
        Gcra {
            runs: runs.max(1),
            per: per.max(Duration::from_millis(1)),
        }
    }

    /// The burst tolerance: `(runs - 1) * per`.
    fn tolerance(self) -> chrono::Duration {
        chrono(self.per) * (self.runs.saturating_sub(1) as i32)
    }

    /// Whether a run fits at `now` given the state `tat`: `Ok(new state)` or `Err(wait)`.
    pub fn check(
        self,
        tat: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<LimitState, Duration> {
        let tat = tat.unwrap_or(now);
        let allowed_at = tat - self.tolerance();
        if now < allowed_at {
            return Err((allowed_at - now).to_std().unwrap_or_default());
        }
        Ok(LimitState {
            tat: tat.max(now) + chrono(self.per),
            runs: self.runs,
            per: self.per,
        })
    }

    /// The state from a stored one if it was computed under this quota, else from the runs
    /// that started at `history` (oldest first), replayed.
    pub fn state(
        self,
        stored: Option<LimitState>,
        history: &[DateTime<Utc>],
    ) -> Option<DateTime<Utc>> {
        if let Some(s) = stored.filter(|s| s.runs == self.runs && s.per == self.per) {
            return Some(s.tat);
        }
        let mut tat = None;
        for t in history {
            if let Ok(next) = self.check(tat, *t) {
                tat = Some(next.tat);
            }
        }
        tat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use governor::clock::FakeRelativeClock;
    use governor::{Quota, RateLimiter};
    use std::num::NonZeroU32;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap()
    }

    /// Attempts at the given offsets (seconds), each allowed or not, by governor and by us.
    fn both(runs: u32, per_s: u64, attempts: &[u64]) -> (Vec<bool>, Vec<bool>) {
        let per = Duration::from_secs(per_s);
        let clock = FakeRelativeClock::default();
        let quota = Quota::with_period(per)
            .unwrap()
            .allow_burst(NonZeroU32::new(runs).unwrap());
        let limiter = RateLimiter::direct_with_clock(quota, clock.clone());
        let gcra = Gcra::new(runs, per);
        let (mut theirs, mut ours) = (Vec::new(), Vec::new());
        let mut tat = None;
        let mut at = 0;
        for &a in attempts {
            clock.advance(Duration::from_secs(a - at));
            at = a;
            theirs.push(limiter.check().is_ok());
            let now = t0() + chrono::Duration::seconds(a as i64);
            match gcra.check(tat, now) {
                Ok(next) => {
                    tat = Some(next.tat);
                    ours.push(true);
                }
                Err(_) => ours.push(false),
            }
        }
        (theirs, ours)
    }

    #[test]
    fn a_crash_loop_at_the_limit_gets_the_burst_then_one_run_per_period_as_governor_does() {
        // runs: 3 per 1h, a container that crashes every 20 minutes for 6 hours.
        let attempts: Vec<u64> = (0..=18).map(|i| i * 1200).collect();
        let (theirs, ours) = both(3, 3600, &attempts);
        assert_eq!(ours, theirs);
        let allowed = ours.iter().filter(|a| **a).count();
        assert_eq!(allowed, 3 + 6, "the burst, then one an hour: {ours:?}");
    }

    #[test]
    fn the_same_decisions_as_governor_on_many_sequences() {
        // A deterministic pseudo-random walk over burst sizes, periods and gaps.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let runs = (next() % 5 + 1) as u32;
            let per = next() % 600 + 1;
            let mut at = 0;
            let attempts: Vec<u64> = (0..40)
                .map(|_| {
                    at += next() % (per * 2);
                    at
                })
                .collect();
            let (theirs, ours) = both(runs, per, &attempts);
            assert_eq!(ours, theirs, "runs {runs} per {per}s at {attempts:?}");
        }
    }

    #[test]
    fn a_stored_state_is_used_only_under_the_quota_it_was_computed_with() {
        let g = Gcra::new(2, Duration::from_secs(3600));
        let at = |m: i64| t0() + chrono::Duration::minutes(m);
        let stored = g.check(None, at(0)).unwrap();
        let stored = g.check(Some(stored.tat), at(1)).unwrap();
        assert!(g.check(g.state(Some(stored), &[]), at(2)).is_err());
        // After a reload to 5 per hour the two runs are replayed under the new quota.
        let looser = Gcra::new(5, Duration::from_secs(3600));
        assert!(looser
            .check(looser.state(Some(stored), &[at(0), at(1)]), at(2))
            .is_ok());
        let wait = g.check(g.state(None, &[at(0), at(1)]), at(2)).unwrap_err();
        assert!(wait > Duration::from_secs(3000), "{wait:?}");
    }
}
