//! Incidents opened by a person instead of an alert: `remediator run` (origin `manual`) and
//! `remediator drill` (origin `drill`), both through the intake and the plan like any alert.
//! Here is only what differs. No Alertmanager holds their alert, so it is not asked before
//! the first destructive step, and nothing but remediator resolves them: a drill when its
//! handling ends whatever the outcome, a manual run once it recovered or was skipped without
//! a page (one that failed stays open for the people paged, as an alert's would). A drill
//! without `--live` is planned as under `engine.dry_run`; a live drill with `--break` breaks
//! its target before the first step, once the thread's announcement has gone out.

use super::*;
use crate::domain::Started;

/// How long a live drill's break waits for the announcement to be delivered (or logged).
const ANNOUNCED_WITHIN: Duration = Duration::from_secs(10);

/// The thread's first reply for a synthetic incident: who started it, and for a drill that
/// it is one and that nobody is paged.
pub(super) fn announcement(started: &Started, rule: &str) -> Notice {
    let text = if started.is_drill() {
        let how = match (started.dry_run, started.break_with) {
            (true, _) => "dry-run: the plan and the guards are recorded, no step runs".to_owned(),
            (false, Some(b)) => {
                format!("live: the target is broken by {b} first, then the runbook runs")
            }
            (false, None) => "live: the runbook runs against the compose project".to_owned(),
        };
        format!(
            "DRILL of rule {rule}, started by {} ({how}). This is a test of the DR plan: nobody is paged",
            started.by
        )
    } else {
        format!("runbook {rule} started by hand by {}", started.by)
    };
    Notice::Message { text }
}

/// Whether a synthetic incident's handling ending with `phase` resolves it.
pub(super) fn ends_with(started: Option<&Started>, phase: Phase) -> bool {
    match started {
        None => false,
        Some(s) if s.is_drill() => true,
        Some(_) => matches!(phase, Phase::Recovered | Phase::Skipped),
    }
}

impl Engine {
    /// A live drill's `--break`, before the first step, once the announcement is out. `Err`:
    /// the break failed and the run ends there (recorded, never paged: it is a drill).
    pub(super) async fn drill_break(
        &self,
        inc: &IncidentRecord,
        ctx: &StepContext,
    ) -> Result<Result<(), String>, StoreError> {
        let Some(how) = inc.started.as_ref().and_then(|s| s.break_with) else {
            return Ok(Ok(()));
        };
        // The stakeholders hear of the drill before anything is broken.
        let deadline = tokio::time::Instant::now() + ANNOUNCED_WITHIN;
        while tokio::time::Instant::now() < deadline {
            let sent = self.store.messages(inc.id)?;
            if !sent.is_empty() && sent.iter().all(|m| m.delivered_at.is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = tokio::time::Instant::now();
        let result = self.outside.steps.break_target(ctx, how).await;
        let took = started.elapsed();
        let (verdict, reason) = match &result {
            Ok(out) => (
                Verdict::Continue,
                format!(
                    "drill: broke {} by {how} in {}: {}",
                    ctx.target.key(),
                    crate::domain::duration::format(took),
                    out.summary
                ),
            ),
            Err(e) => (
                Verdict::Skip,
                format!("drill: could not break {} by {how}: {e}", ctx.target.key()),
            ),
        };
        let mut c = self.commit_now(inc.id);
        c.decision(DecisionKind::Runbook, verdict, &reason).notice(
            Sink::Slack,
            Notice::Message {
                text: reason.clone(),
            },
        );
        if result.is_err() {
            c.finish_run(RunOutcome::Failed)
                .phase(Phase::Failed)
                .resolve_synthetic();
        }
        self.persist(|| self.store.commit(&c)).await?;
        if result.is_err() {
            self.wake.notify_one();
        }
        Ok(result.map(|_| ()).map_err(|e| e.to_string()))
    }
}
