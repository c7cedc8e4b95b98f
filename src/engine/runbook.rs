//! Running a runbook: each step recorded as started before it acts, and its end, its notice
//! and (at the last step) the run's outcome committed together. Before the first step that
//! changes a container, Alertmanager is asked again (`recheck.rs`). A commit that fails is
//! retried with backoff: the step already happened, and what it did must be written.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::{Engine, StepContext, StepError, StepOutput};
use crate::domain::duration::format as human;
use crate::domain::notice::{RunOutcome, EXCERPT_CHARS};
use crate::domain::{DecisionKind, Notice, Phase, Priority, RunPhase, Sink, StepOutcome, Verdict};
use crate::rules::{Rule, Step, StepKind};
use crate::store::{Commit, IncidentRecord, StoreError};
use crate::telemetry::events::{InternalEvent, RunbookEnded, StepEnded, StepStarted};
use crate::telemetry::{spans, trace_context};
use tracing::Instrument;

/// Attempts at a runbook's commit before the runbook gives up (the incident then stays
/// `remediating`, and the next start of the service hands it to a human).
const COMMIT_ATTEMPTS: usize = 8;

/// After those, how often and how many times the hand-over to a human is tried.
const HAND_OVER_EVERY: Duration = Duration::from_secs(5);
const HAND_OVER_ATTEMPTS: usize = 60;

/// Where a run goes on: the list and the step, and (in `fallback`) what failed in `steps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ResumeAt {
    pub phase: RunPhase,
    pub seq: usize,
    pub failure: Option<String>,
}

impl ResumeAt {
    /// A run just started: its first main step.
    pub const START: ResumeAt = ResumeAt {
        phase: RunPhase::Main,
        seq: 0,
        failure: None,
    };
}

/// Where a fallback starts: what failed in `steps`, and its first step (0, or the approve
/// step a resumed run waits at).
struct FallbackFrom<'a> {
    failure: &'a str,
    seq: usize,
}

impl Engine {
    /// Retries `f` (a store write) with exponential backoff from 50 ms, [`COMMIT_ATTEMPTS`]
    /// times.
    pub(super) async fn persist<T>(
        &self,
        mut f: impl FnMut() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut waits = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(COMMIT_ATTEMPTS)
            .build();
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) => match waits.next() {
                    Some(wait) => {
                        tracing::warn!(error = %e, retry_in = ?wait, "the store refused a runbook's record; retrying");
                        tokio::time::sleep(wait).await;
                    }
                    None => return Err(e),
                },
            }
        }
    }

    /// A commit for now, its notices children of the current span (the step's, or the
    /// incident's).
    pub(super) fn commit_now(&self, id: i64) -> Commit {
        Commit::new(id, self.clock.now()).traced(trace_context::current())
    }

    pub(super) async fn run_runbook(
        &self,
        inc: &IncidentRecord,
        rule: &Rule,
        priority: Priority,
        ctx: StepContext,
    ) {
        self.run_runbook_from(inc, rule, priority, ctx, ResumeAt::START)
            .await
    }

    /// The runbook from `from` on: its first main step for a run just started; after a
    /// restart, the `approve` step it was waiting at (`recovery.rs`), in `steps` or in
    /// `fallback`, whose earlier steps ran already.
    pub(super) async fn run_runbook_from(
        &self,
        inc: &IncidentRecord,
        rule: &Rule,
        priority: Priority,
        ctx: StepContext,
        from: ResumeAt,
    ) {
        let outcome = match self.run_steps(inc, rule, priority, &ctx, from).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "the store failed during the runbook; handing it to a human once the store answers");
                self.hand_over(inc, priority, &e).await;
                RunOutcome::Interrupted
            }
        };
        if inc.origin.is_synthetic() {
            // Its resolution is queued: handled now, not at the next tick.
            self.wake.notify_one();
        }
        RunbookEnded {
            incident_id: inc.id,
            rule: &rule.name,
            outcome: outcome.as_str(),
        }
        .emit(&self.metrics);
        self.release(&ctx.target, inc.id);
    }

    /// The store refused a runbook's records even after retries: once it answers again, the
    /// incident is marked `interrupted` and people are paged, as a restart would. Tried for a
    /// few minutes; after that the next start of the service does it.
    async fn hand_over(&self, inc: &IncidentRecord, priority: Priority, e: &StoreError) {
        let mut c = self.commit_now(inc.id);
        c.interrupt_running_steps()
            .finish_run(RunOutcome::Interrupted)
            .phase(Phase::Interrupted)
            .decision(
                DecisionKind::Recovery,
                Verdict::Skip,
                "the store failed while this runbook ran; it is not run again, a human takes over",
            );
        let owner = inc
            .rule
            .as_deref()
            .and_then(|r| self.rules().get(r).map(|r| r.owner.clone()));
        let who = super::plan::paged(&self.rules(), priority, owner.as_deref());
        let page = self.page(
            &mut c,
            inc,
            who,
            &format!("the store failed during the runbook: {e}"),
        );
        for _ in 0..HAND_OVER_ATTEMPTS {
            match self.store.commit(&c) {
                Ok(()) => {
                    page.sent(&self.metrics);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, incident = inc.id, "the store still refuses; retrying the hand-over");
                    tokio::time::sleep(HAND_OVER_EVERY).await;
                }
            }
        }
        tracing::error!(incident = inc.id, "could not record the hand-over; the next start of the service marks the incident interrupted and pages");
    }

    async fn run_steps(
        &self,
        inc: &IncidentRecord,
        rule: &Rule,
        priority: Priority,
        ctx: &StepContext,
        from: ResumeAt,
    ) -> Result<RunOutcome, StoreError> {
        let id = inc.id;
        let mut failure = from.failure.clone();
        let last = rule.steps.len().saturating_sub(1);
        // Where a resumed run starts in `steps`: all of them ran when it waits in `fallback`.
        let main_from = match from.phase {
            RunPhase::Main => from.seq,
            _ => rule.steps.len(),
        };
        // Alertmanager is asked once, before the first step that changes a container (never
        // for a manual run or a drill: no Alertmanager holds their alert). A resumed run
        // asked already if a step before `from` changed one.
        let mut asked = inc.origin.is_synthetic()
            || rule
                .steps
                .iter()
                .take(main_from)
                .any(|s| s.kind.is_action())
            || (from.phase == RunPhase::Fallback
                && rule
                    .fallback
                    .iter()
                    .take(from.seq)
                    .any(|s| s.kind.is_action()));
        if from == ResumeAt::START {
            if let Err(why) = self.drill_break(inc, ctx).await? {
                tracing::warn!(incident = id, "{why}");
                return Ok(RunOutcome::Failed);
            }
        }
        for (seq, step) in rule.steps.iter().enumerate().skip(main_from) {
            if step.kind.is_action()
                && !std::mem::replace(&mut asked, true)
                && !self.checked(ctx, RunPhase::Main, step).await?
            {
                return Ok(RunOutcome::Stopped);
            }
            let ok = self
                .run_step(ctx, RunPhase::Main, seq, step, priority, |c, outcome| {
                    // The last step's success and the run's end are one decision point.
                    // The thread hears of it from the root (recovered) and this step's
                    // reply; no reply of its own.
                    if seq == last && outcome == StepOutcome::Ok {
                        recovered(c, inc);
                    }
                })
                .await?;
            if let Err(why) = ok {
                failure = Some(format!("step {} ({}) {why}", seq + 1, step.name));
                break;
            }
        }
        let fallback_from = match from.phase {
            RunPhase::Fallback => from.seq,
            _ => 0,
        };
        let Some(failure) = failure else {
            if rule.steps.is_empty() {
                let mut c = self.commit_now(id);
                c.finish_run(RunOutcome::Recovered)
                    .phase(Phase::Recovered)
                    .notice(Sink::Slack, Notice::Recovered);
                if super::synthetic::ends_with(inc.started.as_ref(), Phase::Recovered) {
                    c.resolve_synthetic();
                }
                // (No step told the thread anything: this reply says the runbook ran.)
                self.persist(|| self.store.commit(&c)).await?;
            }
            return Ok(RunOutcome::Recovered);
        };
        let failure = match self
            .run_fallback(
                inc,
                rule,
                priority,
                ctx,
                FallbackFrom {
                    failure: &failure,
                    seq: fallback_from,
                },
                &mut asked,
            )
            .await?
        {
            Ok(outcome) => return Ok(outcome),
            Err(failure) => failure,
        };
        let mut c = self.commit_now(id);
        c.decision(
            DecisionKind::Runbook,
            Verdict::Skip,
            &format!("failed at {failure}; running on_failure"),
        );
        self.persist(|| self.store.commit(&c)).await?;
        for (seq, step) in rule.on_failure.iter().enumerate() {
            if step.kind.is_action()
                && !std::mem::replace(&mut asked, true)
                && !self.checked(ctx, RunPhase::OnFailure, step).await?
            {
                return Ok(RunOutcome::Stopped);
            }
            // on_failure runs to the end; a failing step there is recorded and passed over.
            let _ = self
                .run_step(ctx, RunPhase::OnFailure, seq, step, priority, |_, _| {})
                .await?;
        }
        let mut c = self.commit_now(id);
        let pages_itself = rule
            .on_failure
            .iter()
            .any(|s| matches!(s.kind, StepKind::Page { .. }));
        let page = (!pages_itself).then(|| {
            let who = super::plan::paged(&self.rules(), priority, Some(&rule.owner));
            self.page(&mut c, inc, who, &format!("automation failed: {failure}"))
        });
        c.finish_run(RunOutcome::Failed).phase(Phase::Failed);
        if super::synthetic::ends_with(inc.started.as_ref(), Phase::Failed) {
            c.resolve_synthetic();
        }
        self.persist(|| self.store.commit(&c)).await?;
        if let Some(page) = page {
            page.sent(&self.metrics);
        }
        Ok(RunOutcome::Failed)
    }

    /// The rule's `fallback` steps after `failure` in `steps`: in order, stopping at the
    /// first that fails. `Ok`: the run ended (recovered when the last step passed, or stopped
    /// by Alertmanager's answer); `Err`: what failed (`failure` itself when the rule has no
    /// fallback), so `on_failure` runs next.
    async fn run_fallback(
        &self,
        inc: &IncidentRecord,
        rule: &Rule,
        priority: Priority,
        ctx: &StepContext,
        from: FallbackFrom<'_>,
        asked: &mut bool,
    ) -> Result<Result<RunOutcome, String>, StoreError> {
        let FallbackFrom { failure, seq: from } = from;
        if rule.fallback.is_empty() {
            return Ok(Err(failure.to_owned()));
        }
        // A resumed fallback (from > 0) recorded this when it first began.
        if from == 0 {
            let mut c = self.commit_now(inc.id);
            c.decision(
                DecisionKind::Runbook,
                Verdict::Continue,
                &format!("failed at {failure}; running fallback"),
            );
            self.persist(|| self.store.commit(&c)).await?;
        }
        let last = rule.fallback.len() - 1;
        for (seq, step) in rule.fallback.iter().enumerate().skip(from) {
            if step.kind.is_action()
                && !std::mem::replace(asked, true)
                && !self.checked(ctx, RunPhase::Fallback, step).await?
            {
                return Ok(Ok(RunOutcome::Stopped));
            }
            let ok = self
                .run_step(
                    ctx,
                    RunPhase::Fallback,
                    seq,
                    step,
                    priority,
                    |c, outcome| {
                        if seq == last && outcome == StepOutcome::Ok {
                            recovered(c, inc);
                        }
                    },
                )
                .await?;
            if let Err(why) = ok {
                return Ok(Err(format!(
                    "fallback step {} ({}) {why}",
                    seq + 1,
                    step.name
                )));
            }
        }
        Ok(Ok(RunOutcome::Recovered))
    }

    /// Alertmanager's answer before the run's first destructive step, committed with what it
    /// implies (see `recheck.rs`). `false`: the run stopped.
    async fn checked(
        &self,
        ctx: &StepContext,
        phase: RunPhase,
        step: &Step,
    ) -> Result<bool, StoreError> {
        let Some(check) = self.recheck(ctx, phase, step).await else {
            return Ok(true);
        };
        let mut c = self.commit_now(ctx.incident_id);
        check.write(&mut c);
        self.persist(|| self.store.commit(&c)).await?;
        check.committed(ctx.incident_id, &self.metrics);
        Ok(check.go())
    }

    /// Runs one step with its deadline; the outer error is the store's, the inner the step's.
    /// `and` adds to the commit that records the step's end.
    async fn run_step(
        &self,
        ctx: &StepContext,
        phase: RunPhase,
        seq: usize,
        step: &Step,
        priority: Priority,
        and: impl FnOnce(&mut Commit, StepOutcome),
    ) -> Result<Result<(), String>, StoreError> {
        let span = spans::step();
        self.step_in_span(ctx, phase, seq, step, priority, and)
            .instrument(span)
            .await
    }

    async fn step_in_span(
        &self,
        ctx: &StepContext,
        phase: RunPhase,
        seq: usize,
        step: &Step,
        priority: Priority,
        and: impl FnOnce(&mut Commit, StepOutcome),
    ) -> Result<Result<(), String>, StoreError> {
        let id = ctx.incident_id;
        let step_id = self
            .persist(|| match self.store.step_at(id, phase, seq)? {
                Some(started) => Ok(started),
                None => self
                    .store
                    .start_step(id, phase, seq, step.name, self.clock.now()),
            })
            .await?;
        StepStarted {
            incident_id: id,
            phase: phase.as_str(),
            seq,
            kind: step.name,
        }
        .emit(&self.metrics);
        let started = tokio::time::Instant::now();
        let run = async {
            match &step.kind {
                StepKind::Approve { .. } => self.approve(ctx, phase, seq, &step.kind).await,
                kind => self.execute(ctx, kind, priority).await,
            }
        };
        let result = tokio::time::timeout(step.timeout, run).await;
        let took = started.elapsed();
        let (outcome, detail) = match result {
            Ok(Ok(out)) => (StepOutcome::Ok, join_detail(&out.summary, &out.excerpt)),
            Ok(Err(e)) => (StepOutcome::Failed, e.to_string()),
            Err(_) => (
                StepOutcome::TimedOut,
                format!("did not finish within {}", human(step.timeout)),
            ),
        };
        // A failed step shows its output (command output, log lines) under its reply, and so
        // does every on_failure step: the runbook failed, and that is what people read next.
        let excerpt = if outcome != StepOutcome::Ok || phase == RunPhase::OnFailure {
            excerpt(&detail)
        } else {
            String::new()
        };
        let target = Some(ctx.target.name())
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        let mut c = self.commit_now(id);
        c.finish_step(step_id, outcome, &detail).notice(
            Sink::Slack,
            Notice::Step {
                phase,
                name: step.name.to_owned(),
                outcome,
                detail: first_line(&detail).to_owned(),
                took,
                target,
                excerpt,
            },
        );
        and(&mut c, outcome);
        self.persist(|| self.store.commit(&c)).await?;
        StepEnded {
            incident_id: id,
            phase: phase.as_str(),
            seq,
            kind: step.name,
            outcome: outcome.as_str(),
            took,
            detail: first_line(&detail),
        }
        .emit(&self.metrics);
        Ok(if outcome == StepOutcome::Ok {
            Ok(())
        } else {
            Err(format!("{outcome}: {}", first_line(&detail)))
        })
    }

    async fn execute(
        &self,
        ctx: &StepContext,
        kind: &StepKind,
        priority: Priority,
    ) -> Result<StepOutput, StepError> {
        let store_err = |e: StoreError| StepError::Unavailable(e.to_string());
        match kind {
            StepKind::Wait { duration } => {
                tokio::time::sleep(duration.0).await;
                Ok(StepOutput::new(format!("waited {}", human(duration.0))))
            }
            StepKind::Notify { message } => {
                let mut c = self.commit_now(ctx.incident_id);
                c.notice(
                    Sink::Slack,
                    Notice::Message {
                        text: message.clone(),
                    },
                );
                self.persist(|| self.store.commit(&c))
                    .await
                    .map_err(store_err)?;
                Ok(StepOutput::new("message queued"))
            }
            StepKind::Page { to, message } => {
                let rules = self.rules();
                let who = if to.is_empty() {
                    super::plan::paged(&rules, priority, None)
                } else {
                    super::plan::contacts(&rules, to)
                };
                let why = message
                    .clone()
                    .unwrap_or_else(|| "the runbook asks for a human".into());
                let inc = self
                    .store
                    .incident(ctx.incident_id)
                    .map_err(store_err)?
                    .ok_or_else(|| StepError::Unavailable("the incident is gone".into()))?;
                let mut c = self.commit_now(ctx.incident_id);
                let page = self.page(&mut c, &inc, who.clone(), &why);
                self.persist(|| self.store.commit(&c))
                    .await
                    .map_err(store_err)?;
                page.sent(&self.metrics);
                Ok(StepOutput::new(format!(
                    "paged {}",
                    crate::domain::notice::keys(&who)
                )))
            }
            StepKind::Exec {
                argv,
                expect_exit,
                service,
                timeout,
                pattern,
            } => {
                // Templates are filled in here, each value checked; a refused value runs
                // nothing (see rules/argv.rs).
                let choice = if argv.iter().any(|a| a.contains("approval.choice")) {
                    self.store
                        .approved_choice(ctx.incident_id)
                        .map_err(store_err)?
                } else {
                    None
                };
                let argv = crate::rules::expand_argv(
                    argv,
                    pattern.as_deref(),
                    &ctx.labels,
                    choice.as_deref(),
                )
                .map_err(StepError::Failed)?;
                let kind = StepKind::Exec {
                    argv,
                    expect_exit: *expect_exit,
                    service: service.clone(),
                    timeout: *timeout,
                    pattern: pattern.clone(),
                };
                self.outside.steps.run(ctx, &kind).await
            }
            other => self.outside.steps.run(ctx, other).await,
        }
    }
}

/// The run's end when its last step (of `steps` or of `fallback`) passed, in that step's
/// commit.
fn recovered(c: &mut Commit, inc: &IncidentRecord) {
    c.finish_run(RunOutcome::Recovered).phase(Phase::Recovered);
    if super::synthetic::ends_with(inc.started.as_ref(), Phase::Recovered) {
        c.resolve_synthetic();
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// What a step reported after its first line, its last [`EXCERPT_CHARS`] characters (the end
/// of a log or of a command's output is what explains a failure).
fn excerpt(detail: &str) -> String {
    let rest = detail
        .split_once('\n')
        .map(|(_, r)| r.trim_end())
        .unwrap_or("");
    let count = rest.chars().count();
    if count <= EXCERPT_CHARS {
        return rest.to_owned();
    }
    let tail: String = rest.chars().skip(count - (EXCERPT_CHARS - 1)).collect();
    format!("…{tail}")
}

fn join_detail(summary: &str, excerpt: &str) -> String {
    if excerpt.is_empty() {
        summary.to_string()
    } else {
        format!("{summary}\n{excerpt}")
    }
}
