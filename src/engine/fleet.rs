//! Fleet mode: the claim before a decision point, the loser's quiet record, the winner's
//! renewal and done marker, and the survivor's watch over the claims it lost.
//!
//! The decision point itself stays synchronous (one store transaction); the claim is asked
//! just before it, for the opened incidents at the head of the queue ([`Engine::claim_queued`]),
//! and its answer waits in `claims` for [`Engine::process_pending`], which stops at the first
//! opened entry with no answer yet. Nothing of a decision is committed or told before its
//! claim is answered. A repeat delivery never reaches the queue, so it never reaches Redis.
//!
//! The target is known only once planned: a won claim whose plan would run is answered a
//! second time, with the fleet's limits spent and the target held ([`Claimed::Taking`] →
//! [`Claimed::Took`]), and its decision point plans again with that answer laid over the
//! store's facts ([`Overlay`]); a refusal reads as the local guard's would.

use std::future::Future;

use super::guards::{rule_limit_key, BUDGET_LIMIT_KEY};
use super::limits::{Gcra, LimitState};
use super::*;
use crate::domain::OnRedisDown;
use crate::rules::{Rule, TargetRef};

/// Queue entries looked at ahead by one claim pass.
const CLAIM_AHEAD: usize = 256;

/// Claimed incidents whose winner is checked per pass of the watch.
const WATCH_PAGE: usize = 64;

/// The answer to an incident's claim, waiting for its decision point.
#[derive(Debug, Clone)]
pub(super) enum Claimed {
    Won(Won),
    /// Won, and its run is to start: the fleet's limits and the target's lock are asked
    /// before the decision point.
    Taking {
        won: Won,
        take: Take,
    },
    /// What Redis answered for `take` (`Err`: it did not answer, why).
    Took {
        won: Won,
        take: Take,
        answer: Result<Taken, String>,
    },
    Lost {
        by: String,
    },
    /// Redis did not answer; the policy is applied at the decision point.
    Down {
        why: String,
        policy: OnRedisDown,
    },
    /// Not new any more (decided before a restart): nothing to claim.
    Settled,
}

impl Engine {
    /// Whether the opened incident `id` may be decided now: no coordination, or its claim
    /// (and the fleet's limits and target lock, once asked for) answered.
    pub(super) fn claim_answered(&self, id: i64) -> bool {
        self.outside.coordinator.is_none()
            || matches!(
                self.claims.lock().unwrap_or_else(|p| p.into_inner()).get(&id),
                Some(c) if !matches!(c, Claimed::Taking { .. })
            )
    }

    /// Asks for the fleet's limits and target lock of `id`'s run before it is decided again.
    pub(super) fn ask_fleet(&self, id: i64, won: Won, take: Take) {
        self.answer(id, Claimed::Taking { won, take });
    }

    /// Asks Redis, all at once, for the limits and target locks the decision points waiting
    /// on them need.
    async fn take_asked(&self, coord: &Arc<dyn Coordinator>) {
        let asked: Vec<(i64, Won, Take)> = self
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(id, c)| match c {
                Claimed::Taking { won, take } => Some((*id, won.clone(), take.clone())),
                _ => None,
            })
            .collect();
        let answers = futures_util::future::join_all(asked.into_iter().map(|(id, won, take)| {
            let coord = coord.clone();
            async move {
                let answer = coord
                    .take(&won, &take)
                    .await
                    .map_err(|Unavailable(why)| why);
                (id, won, take, answer)
            }
        }))
        .await;
        for (id, won, take, answer) in answers {
            self.answer(id, Claimed::Took { won, take, answer });
        }
    }

    /// What a run of `rule` on `target` for incident `id` needs of the fleet.
    fn take_for(
        &self,
        rule: &Rule,
        target: &TargetRef,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Take, StoreError> {
        let budget = Gcra::new(self.settings.budget_runs, self.settings.budget_per);
        let rule_gcra = Gcra::new(rule.limit.runs, rule.limit.per);
        let mut limits = Vec::new();
        for (key, g) in [
            (rule_limit_key(&rule.name, target), rule_gcra),
            (BUDGET_LIMIT_KEY.to_owned(), budget),
        ] {
            let local_ahead = self
                .store
                .limit(&key)?
                .filter(|s| s.runs == g.runs && s.per == g.per)
                .map(|s| (s.tat - now).to_std().unwrap_or_default());
            limits.push(SharedLimit {
                key,
                runs: g.runs,
                per: g.per,
                local_ahead,
            });
        }
        Ok(Take {
            target: (!matches!(target, TargetRef::None)).then(|| target.key()),
            incident: id,
            limits,
        })
    }

    /// Fleet mode, at the decision point of a claim this replica won: a run starts only
    /// with the fleet's limits spent and its target held in Redis. `Some(take)`: ask Redis
    /// for it first (nothing is decided now). `None`: go on with `plan` as it stands (the
    /// answer was used, or Redis did not answer and `coordination.on_redis_down` applied).
    pub(super) fn fleet_gate(
        &self,
        claim: Option<&Claimed>,
        won: &mut Won,
        plan: &mut Plan<'_>,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<Take>, StoreError> {
        let held = match claim {
            Some(Claimed::Took {
                take,
                answer: Ok(Taken::Held { .. }),
                ..
            }) => take.target.clone(),
            _ => None,
        };
        let (Action::Run { target, .. }, Some(m)) = (&plan.action, &plan.matched) else {
            // Nothing runs after all: a lock taken for it is let go.
            self.let_go(won, held, id);
            return Ok(None);
        };
        let need = self.take_for(m.rule, target, id, now)?;
        let Some(Claimed::Took { take, answer, .. }) = claim else {
            return Ok(Some(need));
        };
        if !same_take(take, &need) {
            self.let_go(won, held, id);
            return Ok(Some(need));
        }
        match answer {
            Ok(Taken::Held { .. }) => {
                won.target = need.target.map(|t| (t, id));
                Ok(None)
            }
            // The answer refused, yet the plan runs (facts changed meanwhile): ask again.
            Ok(_) => Ok(Some(need)),
            Err(why) => {
                let policy = self
                    .outside
                    .coordinator
                    .as_ref()
                    .map_or(OnRedisDown::Page, |c| c.on_down());
                redis_down(plan, why.clone(), policy);
                Ok(None)
            }
        }
    }

    /// Lets go, in the background, of the target lock `won` took for incident `id`.
    fn let_go(&self, won: &Won, held: Option<String>, id: i64) {
        let (Some(target), Some(coord)) = (held, self.outside.coordinator.clone()) else {
            return;
        };
        let won = Won {
            target: Some((target, id)),
            ..won.clone()
        };
        tokio::spawn(async move {
            if let Err(e) = coord.release(&won).await {
                tracing::warn!(error = %e, "could not let go of a target lock whose run did not start; it expires by itself");
            }
        });
    }

    /// Crash recovery in fleet mode, before [`Engine::recover`]: for each incident this
    /// replica left `remediating`, replaces its claim by the done marker `interrupted`, and
    /// learns whether a survivor already took it for a crash and paged (then recovery pages
    /// nobody: one page per incident). Redis unreachable: recovery pages.
    pub(super) async fn recover_claims(&self) -> Result<(), StoreError> {
        let Some(coord) = self.outside.coordinator.clone() else {
            return Ok(());
        };
        for id in self.store.incidents_in_phase(Phase::Remediating)? {
            if self
                .fleet_recovery
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&id)
            {
                continue;
            }
            let Ok(Some(inc)) = self.store.incident_without_annotations(id) else {
                continue;
            };
            let firing = Firing {
                fingerprint: inc.fingerprint,
                starts_at: inc.starts_at,
            };
            let pages = match coord.recovered(&firing).await {
                Ok(pages) => pages,
                Err(e) => {
                    tracing::warn!(error = %e, incident = id, "crash recovery could not tell Redis; it pages (a survivor may page too)");
                    true
                }
            };
            self.fleet_recovery
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, pages);
        }
        Ok(())
    }

    /// Whether crash recovery is to page for `id` (another replica may have already).
    pub(super) fn recovery_pages(&self, id: i64) -> bool {
        self.fleet_recovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
            .unwrap_or(true)
    }

    pub(super) fn take_claim(&self, id: i64) -> Option<Claimed> {
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
    }

    /// Claims, all at once, the new incidents at the head of the queue that have no answer
    /// yet. Returns how many it asked about.
    pub async fn claim_queued(&self) -> Result<usize, StoreError> {
        let Some(coord) = self.outside.coordinator.clone() else {
            return Ok(0);
        };
        self.take_asked(&coord).await;
        let mut ask = Vec::new();
        for entry in self.store.queued_events(CLAIM_AHEAD)? {
            // A damaged entry is the decision point's to quarantine.
            let Ok(q) = entry else { continue };
            let IncidentEvent::Opened(id) = q.event else {
                continue;
            };
            if self
                .claims
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&id)
            {
                continue;
            }
            match self.store.incident_without_annotations(id) {
                Ok(Some(inc)) if inc.phase == Phase::New => ask.push((
                    id,
                    Firing {
                        fingerprint: inc.fingerprint,
                        starts_at: inc.starts_at,
                    },
                )),
                Ok(_) => self.answer(id, Claimed::Settled),
                // The decision point meets it again and quarantines it.
                Err(e) if e.damaged_row().is_some() => self.answer(id, Claimed::Settled),
                Err(e) => return Err(e),
            }
        }
        let n = ask.len();
        let answers = futures_util::future::join_all(ask.into_iter().map(|(id, firing)| {
            let coord = coord.clone();
            async move { (id, coord.claim(&firing).await) }
        }))
        .await;
        for (id, answer) in answers {
            let claimed = match answer {
                Ok(Claim::Won(w)) => Claimed::Won(w),
                Ok(Claim::Lost { by }) => Claimed::Lost { by },
                Err(Unavailable(why)) => {
                    self.metrics.claim("unavailable");
                    Claimed::Down {
                        why,
                        policy: coord.on_down(),
                    }
                }
            };
            self.answer(id, claimed);
        }
        Ok(n)
    }

    fn answer(&self, id: i64, claimed: Claimed) {
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, claimed);
    }

    /// The coordination's state for `/-/ready`; `None` with no Redis configured.
    pub fn coordination_status(&self) -> Option<String> {
        self.outside.coordinator.as_ref().map(|c| c.status())
    }

    /// Whether the last pass of the queue reached its end (no opened entry left unclaimed).
    pub(super) fn claims_caught_up(&self) -> bool {
        !std::mem::take(&mut *self.unclaimed.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// What writes the done marker of a claim this replica won once its decision point is
    /// committed with no runbook to run, in the background.
    pub(super) fn claim_done(&self, won: Option<Won>, phase: Phase) -> impl FnOnce() + 'static {
        let coord = self.outside.coordinator.clone();
        move || {
            if let (Some(won), Some(coord)) = (won, coord) {
                finish_claim(coord, won, phase);
            }
        }
    }
}

fn finish_claim(coord: Arc<dyn Coordinator>, won: Won, phase: Phase) {
    {
        tokio::spawn(async move {
            if let Err(e) = coord.done(&won, phase).await {
                tracing::warn!(error = %e, "could not write the done marker of a claim; the other replicas will take its expiry for a crash and page a human");
            }
        });
    }
}

impl Engine {
    /// Runs `runbook` holding `won`: renewed while it runs, replaced by its done marker when
    /// it ends.
    pub(super) async fn hold_claim(
        &self,
        won: Option<Won>,
        id: i64,
        runbook: impl Future<Output = ()>,
    ) {
        let (Some(won), Some(coord)) = (won, self.outside.coordinator.clone()) else {
            runbook.await;
            return;
        };
        tokio::pin!(runbook);
        let every = coord.renew_every();
        loop {
            tokio::select! {
                _ = &mut runbook => break,
                _ = tokio::time::sleep(every) => {
                    match coord.renew(&won).await {
                        Ok(true) => {}
                        Ok(false) => tracing::error!(incident = id, "this replica's claim expired while its runbook ran (the replica stalled); the other replicas page a human"),
                        Err(e) => tracing::warn!(error = %e, incident = id, "could not renew the claim; retrying"),
                    }
                }
            }
        }
        let phase = match self.store.incident_without_annotations(id) {
            Ok(Some(inc)) => inc.phase,
            _ => Phase::Interrupted,
        };
        if let Err(e) = coord.done(&won, phase).await {
            tracing::warn!(error = %e, "could not write the done marker of a claim; the other replicas will take its expiry for a crash and page a human");
        }
    }

    /// The survivor's pass: for a bounded page of the incidents this replica lost, asks Redis
    /// what became of the winner's claim. Finished: recorded (`acted_elsewhere`). Expired
    /// without a done marker: the winner stopped mid-runbook, so this replica marks the
    /// incident `interrupted` and pages a human in a thread of its own; the runbook is not
    /// run again. Redis unreachable: asked again next pass.
    pub async fn watch_claims(&self) -> Result<usize, StoreError> {
        let Some(coord) = self.outside.coordinator.clone() else {
            return Ok(0);
        };
        coord.probe().await;
        let after = *self.watch_after.lock().unwrap_or_else(|p| p.into_inner());
        let ids = self
            .store
            .incidents_in_phase_after(Phase::Claimed, after, WATCH_PAGE)?;
        let next = if ids.len() < WATCH_PAGE {
            0
        } else {
            ids.last().copied().unwrap_or(0)
        };
        *self.watch_after.lock().unwrap_or_else(|p| p.into_inner()) = next;
        let mut settled = 0;
        for id in ids {
            let Some(inc) = self.store.incident_without_annotations(id)? else {
                continue;
            };
            let firing = Firing {
                fingerprint: inc.fingerprint.clone(),
                starts_at: inc.starts_at,
            };
            let holder = match coord.holder(&firing).await {
                Ok(h) => h,
                // Unreachable: nothing is known; the next pass asks again.
                Err(_) => return Ok(settled),
            };
            let by = self.claimed_by(id)?;
            let now = self.clock.now();
            let mut c = Commit::new(id, now);
            match holder {
                Holder::Running { .. } => continue,
                Holder::Done { by, phase } => {
                    c.decision(
                        DecisionKind::Claim,
                        Verdict::Continue,
                        &format!("replica {by} finished with this incident ({phase})"),
                    )
                    .phase_silently(Phase::ActedElsewhere);
                    self.store.commit(&c)?;
                }
                Holder::Gone => {
                    let why = format!(
                        "replica {by} stopped answering mid-runbook: its claim expired without its done marker; the runbook is not run again, a human takes over"
                    );
                    c.decision(DecisionKind::Claim, Verdict::Skip, &why);
                    let rules = self.rules();
                    if let (Some(rule), Some(priority)) = (inc.rule.clone(), inc.priority) {
                        c.notice(
                            Sink::Slack,
                            Notice::Opened {
                                alertname: inc.alertname.clone(),
                                priority,
                                rule: rule.clone(),
                                rto: inc.rto.unwrap_or_default(),
                                owner: rules
                                    .get(&rule)
                                    .map(|r| r.owner.clone())
                                    .unwrap_or_default(),
                                told: inc.told.clone(),
                            },
                        );
                    }
                    c.phase(Phase::Interrupted);
                    let who = paged(&rules, &inc);
                    let page = self.page(&mut c, &inc, who, &why);
                    self.store.commit(&c)?;
                    page.sent(&self.metrics);
                    tracing::error!(incident = id, replica = %by, "the replica acting on this incident is gone mid-runbook: interrupted, a human is paged");
                }
            }
            settled += 1;
        }
        Ok(settled)
    }

    /// The replica named in the incident's claim decision.
    fn claimed_by(&self, id: i64) -> Result<String, StoreError> {
        Ok(self
            .store
            .decisions(id)?
            .into_iter()
            .rev()
            .find(|d| d.guard == DecisionKind::Claim)
            .and_then(|d| {
                d.reason
                    .strip_prefix("claimed by replica ")
                    .and_then(|r| r.split(':').next())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "(unknown)".to_owned()))
    }

    /// The decisions of the decision point of an incident another replica claimed: the match
    /// (so that a survivor can page about it) and who acts; nothing is told.
    pub(super) fn lost(
        &self,
        c: &mut Commit,
        matched: Option<(&plan::Matched<'_>, &Decision)>,
        by: &str,
    ) {
        if let Some((m, first)) = matched {
            c.matched(
                &m.rule.name,
                m.priority,
                m.target.as_ref().ok().map(|t| t.key()),
                m.rule.rto,
                m.told.clone(),
                Some(m.owner.clone()),
            );
            c.decision(first.guard, first.verdict, &first.reason);
        }
        c.decision(
            DecisionKind::Claim,
            Verdict::Skip,
            &format!("claimed by replica {by}: it acts and tells; this replica records and watches its claim"),
        )
        .phase_silently(Phase::Claimed);
    }
}

/// Whether two takes ask for the same target, incident and limiters under the same quotas
/// (this replica's floor may have moved meanwhile).
fn same_take(a: &Take, b: &Take) -> bool {
    let quotas = |t: &Take| {
        t.limits
            .iter()
            .map(|l| (l.key.clone(), l.runs, l.per))
            .collect::<Vec<_>>()
    };
    a.target == b.target && a.incident == b.incident && quotas(a) == quotas(b)
}

/// The claim this replica won, if it did.
pub(super) fn won(claim: Option<&Claimed>) -> Option<Won> {
    match claim? {
        Claimed::Won(w) | Claimed::Taking { won: w, .. } | Claimed::Took { won: w, .. } => {
            Some(w.clone())
        }
        _ => None,
    }
}

/// What Redis answered for a run's limits and target, laid over the store's facts.
#[derive(Debug, Clone)]
pub(super) struct Overlay {
    target: Option<String>,
    busy: Option<(String, i64)>,
    limits: Vec<(SharedLimit, std::time::Duration)>,
}

/// The overlay of a claim's fleet answer, when there is one.
pub(super) fn overlay(claim: Option<&Claimed>) -> Option<Overlay> {
    let Some(Claimed::Took {
        take,
        answer: Ok(taken),
        ..
    }) = claim
    else {
        return None;
    };
    let (ahead, busy) = match taken {
        Taken::Held { ahead } | Taken::Limited { ahead } => (ahead, None),
        Taken::Busy {
            replica,
            incident,
            ahead,
        } => (ahead, Some((replica.clone(), *incident))),
    };
    Some(Overlay {
        target: take.target.clone(),
        busy,
        limits: take
            .limits
            .iter()
            .cloned()
            .zip(ahead.iter().copied())
            .collect(),
    })
}

impl Overlay {
    /// The fleet's limiter states (as this replica's clock reads them: as far ahead of `now`
    /// as Redis's clock put them) and the target's holder, in place of this replica's.
    pub(super) fn apply(&self, q: &FactsQuery<'_>, facts: &mut GuardFacts) {
        let rule_key = rule_limit_key(q.rule, q.target);
        for (limit, ahead) in &self.limits {
            let state = Some(LimitState {
                tat: q.now + chrono::Duration::from_std(*ahead).unwrap_or_default(),
                runs: limit.runs,
                per: limit.per,
            });
            if limit.key == rule_key {
                facts.rule_limit = state;
            } else if limit.key == BUDGET_LIMIT_KEY {
                facts.budget_limit = state;
            }
        }
        if let (Some((replica, incident)), Some(target)) = (&self.busy, &self.target) {
            if facts.busy.is_none() && *target == q.target.key() {
                facts.busy = Some(*incident);
                facts.busy_replica = Some(replica.clone());
            }
        }
    }
}

/// Redis did not answer: `coordination.on_redis_down` applied to `plan`, recorded as the
/// claim decision's reason.
pub(super) fn redis_down(plan: &mut Plan<'_>, why: String, policy: OnRedisDown) {
    match policy {
        OnRedisDown::Page if matches!(plan.action, Action::Run { .. }) => {
            let reason = format!("{why}; coordination.on_redis_down is page: people are paged and nothing is acted on, since another replica may act on it too");
            plan.decisions
                .push(Decision::skip(DecisionKind::Claim, reason.clone(), true));
            plan.action = Action::Skip {
                pages: true,
                reason,
            };
        }
        OnRedisDown::Page => plan.decisions.push(Decision::go(
            DecisionKind::Claim,
            format!("{why}; coordination.on_redis_down is page, and nothing was to be acted on"),
        )),
        OnRedisDown::Act => plan.decisions.push(Decision::go(
            DecisionKind::Claim,
            format!("{why}; coordination.on_redis_down is act: acting as one replica alone (another replica may act on it too)"),
        )),
    }
}
