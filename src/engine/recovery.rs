//! Picking up after a crash, and passing over damaged rows: incidents left `remediating` are
//! interrupted and paged (never run again), except a runbook that was waiting at an `approve`
//! step, which is resumed at that step (see [`Engine::resume_point`]); incidents an older
//! version matched get the RTO and told list their root shows, and a queue entry or row that
//! does not read is quarantined so that everything else goes on.

use std::sync::Arc;

use super::runbook::ResumeAt;
use super::*;
use crate::domain::RunPhase;

impl Engine {
    /// Picks up after a crash (see the module documentation): one commit per incident.
    /// Incidents an older version matched get the RTO and told list their thread's root
    /// shows, from the rules in force.
    pub fn recover(self: &Arc<Self>) -> Result<(), StoreError> {
        let now = self.clock.now();
        let rules = self.rules();
        for id in self.store.incidents_missing_match_facts()? {
            let Some(inc) = self.store.incident(id)? else {
                continue;
            };
            let Some(rule) = inc.rule.as_deref().and_then(|r| rules.get(r)) else {
                continue;
            };
            let priority = inc.priority.unwrap_or(rule.priority);
            let told = plan::contacts(
                &rules,
                rules
                    .escalation
                    .policy(priority)
                    .notify
                    .iter()
                    .chain([&rule.owner]),
            );
            let mut c = Commit::new(id, now);
            let owner = plan::contacts(&rules, [&rule.owner]).pop();
            c.matched(
                &rule.name,
                priority,
                inc.target.clone(),
                rule.rto,
                told,
                owner,
            );
            self.store.commit(&c)?;
        }
        for id in self.store.incidents_in_phase(Phase::Remediating)? {
            let inc = match self.store.incident(id) {
                Ok(Some(inc)) => inc,
                Ok(None) => continue,
                Err(e) => {
                    self.pass_over(
                        e,
                        Some(id),
                        "crash recovery passed over it: it stays `remediating`, not marked interrupted, and nobody is paged for it",
                        "the next start marks it interrupted and pages for it",
                    )?;
                    continue;
                }
            };
            if let Some(at) = self.resume_point(&inc, &rules)? {
                self.resume(inc, at, now)?;
                continue;
            }
            let mut c = Commit::new(id, now);
            c.interrupt_running_steps()
                .finish_run(RunOutcome::Interrupted)
                .phase(Phase::Interrupted)
                .decision(
                    DecisionKind::Recovery,
                    Verdict::Skip,
                    "the service restarted while this runbook ran; it is not run again, a human takes over",
                );
            // Fleet mode: another replica took the expired claim for a crash and paged.
            if !self.recovery_pages(id) {
                c.decision(
                    DecisionKind::Page,
                    Verdict::Skip,
                    "another replica of the fleet already paged for this interrupted runbook",
                );
                self.store.commit(&c)?;
                continue;
            }
            let who = paged(&rules, &inc);
            let page = self.page(
                &mut c,
                &inc,
                who,
                "the runbook was interrupted by a restart of remediator",
            );
            self.store.commit(&c)?;
            page.sent(&self.metrics);
        }
        Ok(())
    }

    /// Where the runbook of `inc` (left `remediating`) can go on after a restart: only an
    /// `approve` step of `steps` or `fallback` that was running, with nothing started after it
    /// (on_failure never began), and the rule in force still having that approve step there. Nothing destructive runs while a runbook waits
    /// for an answer, so nothing was cut off; the steps before it ended. Never in fleet mode:
    /// the claim in Redis was this process's and lapsed with it, and the other replicas page
    /// for it, so it is interrupted as any other run.
    fn resume_point(
        &self,
        inc: &IncidentRecord,
        rules: &RuleSet,
    ) -> Result<Option<ResumeAt>, StoreError> {
        if self.outside.coordinator.is_some() {
            return Ok(None);
        }
        let Some(rule) = inc.rule.as_deref().and_then(|r| rules.get(r)) else {
            return Ok(None);
        };
        if inc
            .target
            .as_deref()
            .and_then(crate::rules::TargetRef::from_key)
            .is_none()
        {
            return Ok(None);
        }
        let steps = self.store.steps(inc.id)?;
        let mut running = steps
            .iter()
            .filter(|s| s.outcome == crate::domain::StepOutcome::Running);
        let (Some(waiting), None) = (running.next(), running.next()) else {
            return Ok(None);
        };
        // Lists run in this order; a step of a later list, or later in this one, started after.
        let order = |p: RunPhase| match p {
            RunPhase::Main => 0,
            RunPhase::Fallback => 1,
            RunPhase::OnFailure => 2,
        };
        let later = steps
            .iter()
            .any(|s| (order(s.phase), s.seq) > (order(waiting.phase), waiting.seq));
        let seq = usize::try_from(waiting.seq).unwrap_or(usize::MAX);
        let list = match waiting.phase {
            RunPhase::Main => &rule.steps,
            RunPhase::Fallback => &rule.fallback,
            RunPhase::OnFailure => return Ok(None),
        };
        let is_approve = list.get(seq).is_some_and(|s| {
            matches!(s.kind, crate::rules::StepKind::Approve { .. }) && s.name == waiting.kind
        });
        if later || !is_approve {
            return Ok(None);
        }
        // In `fallback`: what failed in `steps`, for on_failure's page if the fallback fails.
        let failure = (waiting.phase == RunPhase::Fallback).then(|| {
            steps
                .iter()
                .find(|s| {
                    s.phase == RunPhase::Main && s.outcome == crate::domain::StepOutcome::Failed
                })
                .map(|s| {
                    format!(
                        "step {} ({}) {}",
                        s.seq + 1,
                        s.kind,
                        s.detail.lines().next().unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "a step of the runbook".to_owned())
        });
        Ok(Some(ResumeAt {
            phase: waiting.phase,
            seq,
            failure,
        }))
    }

    /// Resumes `inc`'s runbook at `from` (an `approve` step, [`Engine::resume_point`]).
    /// Nothing of the run's start is written again: its run row, the limits it spent and its
    /// fleet claim (none outside fleet mode) were committed once at its decision point. The
    /// busy guard, which lives in memory, holds the target again. The step's row and its
    /// request are found in the store, so the wait goes on with the stored deadline, asking
    /// nobody again; a deadline that passed meanwhile times out at once.
    fn resume(
        self: &Arc<Self>,
        inc: IncidentRecord,
        from: ResumeAt,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        let rules = self.rules();
        let (Some(rule), Some(target)) = (
            inc.rule.as_deref().and_then(|r| rules.get(r)).cloned(),
            inc.target
                .as_deref()
                .and_then(crate::rules::TargetRef::from_key),
        ) else {
            return Ok(());
        };
        let deadline = self
            .store
            .approval_at(inc.id, from.phase, from.seq)?
            .map(|a| format!(" until {}", a.deadline.format("%H:%M UTC")))
            .unwrap_or_default();
        let mut c = Commit::new(inc.id, now);
        c.decision(
            DecisionKind::Recovery,
            Verdict::Continue,
            &format!(
                "the service restarted while this runbook waited for approval at {}step {}; the wait goes on{deadline}, nothing is asked again",
                if from.phase == RunPhase::Fallback { "fallback " } else { "" },
                from.seq + 1
            ),
        );
        self.store.commit(&c)?;
        if !matches!(target, crate::rules::TargetRef::None) {
            self.busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(target.key(), inc.id);
        }
        let ctx = StepContext {
            incident_id: inc.id,
            rule: rule.name.clone(),
            target,
            labels: inc.labels.clone(),
        };
        let priority = inc.priority.unwrap_or(rule.priority);
        let engine = self.clone();
        let span = spans::incident(None, inc.id);
        let handle = tokio::spawn(tracing::Instrument::instrument(
            async move {
                engine
                    .run_runbook_from(&inc, &rule, priority, ctx, from)
                    .await
            },
            span,
        ));
        self.runbooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
        Ok(())
    }

    /// Takes queue entry `queue_id` out of the queue into the quarantine, in one transaction,
    /// because handling it met the damaged row that `e` names; says so.
    pub(super) fn quarantine_entry(
        &self,
        queue_id: i64,
        incident: Option<i64>,
        e: &StoreError,
    ) -> Result<(), StoreError> {
        let Some((table, row)) = e.damaged_row() else {
            return Ok(());
        };
        let error = e.to_string();
        let Some(n) =
            self.store
                .quarantine_queued(queue_id, table, row, &error, self.clock.now())?
        else {
            return Ok(());
        };
        RowQuarantined {
            table,
            row_id: row,
            incident_id: incident.or((table == "incidents").then_some(row)),
            queue_id: Some(queue_id),
            error: &error,
            done: &format!(
                "engine queue entry {queue_id} is not handled: it moved to quarantine row {n}, and the engine goes on with the next"
            ),
            remedy: &format!(
                "repair row {row} of table {table} (or restore the store from a backup), then queue the entry again: \
                 INSERT INTO engine_queue (incident_id, kind, trace) SELECT incident_id, kind, trace FROM quarantine WHERE id = {n}; \
                 DELETE FROM quarantine WHERE id = {n}"
            ),
        }
        .emit(&self.metrics);
        Ok(())
    }

    /// A damaged row that `e` names is passed over where it stands (`done`): recorded in the
    /// quarantine and told once per process. Any other error is returned.
    pub(super) fn pass_over(
        &self,
        e: StoreError,
        incident: Option<i64>,
        done: &str,
        then: &str,
    ) -> Result<(), StoreError> {
        let Some((table, row)) = e.damaged_row() else {
            return Err(e);
        };
        let first = self
            .passed_over
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((table, row));
        if !first {
            return Ok(());
        }
        let error = e.to_string();
        let incident = incident.or((table == "incidents").then_some(row));
        if let Err(e) = self
            .store
            .quarantine_row(table, row, &error, incident, self.clock.now())
        {
            // Told next time, when the quarantine may be written.
            self.passed_over
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(table, row));
            return Err(e);
        }
        RowQuarantined {
            table,
            row_id: row,
            incident_id: incident,
            queue_id: None,
            error: &error,
            done,
            remedy: &format!(
                "repair row {row} of table {table} (or restore the store from a backup); {then}"
            ),
        }
        .emit(&self.metrics);
        Ok(())
    }
}
