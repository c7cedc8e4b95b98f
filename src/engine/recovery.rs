//! Picking up after a crash, and passing over damaged rows: incidents left `remediating` are
//! interrupted and paged (never run again), incidents an older version matched get the RTO
//! and told list their root shows, and a queue entry or row that does not read is quarantined
//! so that everything else goes on.

use std::sync::Arc;

use super::*;

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
