//! Fleet mode: the claim before a decision point, the loser's quiet record, the winner's
//! renewal and done marker, and the survivor's watch over the claims it lost.
//!
//! The decision point itself stays synchronous (one store transaction); the claim is asked
//! just before it, for the opened incidents at the head of the queue ([`Engine::claim_queued`]),
//! and its answer waits in `claims` for [`Engine::process_pending`], which stops at the first
//! opened entry with no answer yet. Nothing of a decision is committed or told before its
//! claim is answered. A repeat delivery never reaches the queue, so it never reaches Redis.

use std::future::Future;

use super::*;
use crate::domain::OnRedisDown;

/// Queue entries looked at ahead by one claim pass.
const CLAIM_AHEAD: usize = 256;

/// Claimed incidents whose winner is checked per pass of the watch.
const WATCH_PAGE: usize = 64;

/// The answer to an incident's claim, waiting for its decision point.
#[derive(Debug, Clone)]
pub(super) enum Claimed {
    Won(Won),
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
    /// answered.
    pub(super) fn claim_answered(&self, id: i64) -> bool {
        self.outside.coordinator.is_none()
            || self
                .claims
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&id)
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
        let mut ask = Vec::new();
        for entry in self.store.queued_events(CLAIM_AHEAD)? {
            // A damaged entry is the decision point's to quarantine.
            let Ok(q) = entry else { continue };
            let IncidentEvent::Opened(id) = q.event else {
                continue;
            };
            if self.claim_answered(id) {
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
