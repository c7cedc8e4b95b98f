//! Acknowledgements and the escalation tiers timed from the rule's RTO.

use super::*;

/// Open incidents read at once by the escalation timers.
const ESCALATION_PAGE: usize = 256;

impl Engine {
    /// Records who acknowledged; stops the escalation tiers. `None` when there is no such
    /// incident, `Some(false)` when it was already acknowledged.
    pub fn acknowledge(
        &self,
        id: i64,
        by: &str,
        slack_user: Option<&str>,
    ) -> Result<Option<bool>, StoreError> {
        let now = self.clock.now();
        if self.store.incident(id)?.is_none() {
            return Ok(None);
        }
        let notice = Notice::Acknowledged {
            by: by.to_owned(),
            slack_user: slack_user.map(str::to_owned),
        };
        let mut c = Commit::new(id, now);
        c.acknowledge(by, slack_user)
            .decision(DecisionKind::Ack, Verdict::Continue, &notice.summary())
            .notice(Sink::Slack, notice.clone())
            .notice(
                Sink::Slack,
                Notice::State {
                    change: StateChange::Acknowledged,
                },
            );
        c.follow_up(notice);
        match self.store.commit(&c) {
            Ok(()) => Ok(Some(true)),
            Err(StoreError::AlreadyAcknowledged(_)) => Ok(Some(false)),
            Err(e) => Err(e),
        }
    }

    /// Fires the escalation tiers that are due: open, unacknowledged incidents, timed from
    /// when the incident opened as a share of the rule's RTO (or a delay). Fired tiers are
    /// stored with their decision and notice, so a restart neither loses a timer nor fires
    /// one twice. An incident that does not read is passed over (quarantined, told once).
    pub fn escalation_tick(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let rules = self.rules();
        let mut fired = 0;
        // An incident younger than the earliest tier of any rule has nothing due: a storm's
        // incidents are not read every second until then.
        let Some(earliest) = earliest_tier(&rules) else {
            return Ok(0);
        };
        let opened_by = now - chrono::Duration::from_std(earliest).unwrap_or_default();
        // A damaged incident (or fired tier) is passed over; the others still escalate.
        let pass_over = |e, incident| {
            self.pass_over(
                e,
                incident,
                "the escalation timers pass over this incident: no tier fires for it",
                "its tiers fire once it reads",
            )
        };
        // A page at a time: a storm leaves tens of thousands of incidents open, and holding
        // them all at once every second was most of the service's memory.
        let mut after = 0;
        loop {
            let page = self
                .store
                .escalation_candidates(after, ESCALATION_PAGE, opened_by)?;
            let (full, from) = (page.len() == ESCALATION_PAGE, after);
            for candidate in page {
                let inc = match candidate {
                    Ok(inc) => {
                        after = after.max(inc.id);
                        inc
                    }
                    Err(e) => {
                        if let Some((_, row)) = e.damaged_row() {
                            after = after.max(row);
                        }
                        pass_over(e, None)?;
                        continue;
                    }
                };
                // Another replica acts on it and tells: its thread escalates, not ours.
                if matches!(inc.phase, Phase::Claimed | Phase::ActedElsewhere) {
                    continue;
                }
                let Some(rule) = inc.rule.as_deref().and_then(|r| rules.get(r)) else {
                    continue;
                };
                let priority = inc.priority.unwrap_or(rule.priority);
                let done = match self.store.fired_tiers(inc.id) {
                    Ok(done) => done,
                    Err(e) => {
                        pass_over(e, Some(inc.id))?;
                        continue;
                    }
                };
                let mut c = Commit::new(inc.id, now);
                let mut n = 0;
                for (i, tier) in rules.escalation.policy(priority).tiers.iter().enumerate() {
                    if tier.customer_impacting_only && !rule.customer_impacting {
                        continue;
                    }
                    let delay = tier.after.delay(rule.rto);
                    let due =
                        inc.first_seen + chrono::Duration::from_std(delay).unwrap_or_default();
                    if now < due || done.contains(&i) {
                        continue;
                    }
                    let notice = Notice::Tier {
                        tier: i,
                        who: plan::contacts(&rules, &tier.notify),
                        after: delay,
                        share: match tier.after {
                            TierAfter::RtoShare(f) => Some(f),
                            TierAfter::Delay(_) => None,
                        },
                        rto: rule.rto,
                    };
                    c.fire_tier(i)
                        .decision(DecisionKind::Tier, Verdict::Continue, &notice.summary())
                        .notice(Sink::Slack, notice);
                    n += 1;
                }
                if n > 0 {
                    self.store.commit(&c)?;
                    fired += n;
                }
            }
            if !full || after == from {
                break;
            }
        }
        Ok(fired)
    }
}

/// The shortest delay of any tier for any rule (`None`: no tier anywhere).
fn earliest_tier(rules: &RuleSet) -> Option<Duration> {
    rules
        .rules
        .iter()
        .flat_map(|rule| {
            rules
                .escalation
                .policies
                .values()
                .flat_map(|p| p.tiers.iter())
                .map(|tier| tier.after.delay(rule.rto))
        })
        .min()
}
