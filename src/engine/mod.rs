//! Incident → rule match → guards → runbook → escalation.
//!
//! The intake writer applies every delivery to the incidents in the transaction that stores
//! it, and queues what needs acting on (see `store::apply`). The engine takes that queue in
//! order: for every newly opened incident it matches a rule, runs the guards and, when they all
//! pass, spawns its runbook; for every resolved one it records the time to recover and tells
//! people. Each queue entry is removed once handled, and handling is idempotent (an incident
//! no longer in phase `new`, a resolution already recorded, is passed over), so a crash between
//! the two does not act twice. Runbooks for different targets run concurrently; one target
//! runs one runbook at a time.
//!
//! Crash recovery ([`Engine::recover`]): queued entries are simply still queued; incidents left
//! `remediating` are marked `interrupted`, their running step recorded as such, and people are
//! paged. A runbook is never started twice for one firing: an interrupted one is handed to a
//! human instead.
//!
//! The engine depends only on the [`Store`], a [`StepExecutor`] and a [`Clock`], so its tests
//! use a recording executor and tokio's paused clock.

pub mod clock;
mod executor;
pub mod guards;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::alert::Labels;
use crate::metrics::Metrics;
use crate::rules::duration_text::format as human;
use crate::rules::{Priority, Rule, RuleSet, Step, StepKind, TargetRef};
use crate::store::{IncidentEvent, IncidentRecord, Store, StoreError};

pub use clock::{Clock, SystemClock, TokioClock};
pub use executor::{NoDocker, StepContext, StepError, StepExecutor, StepOutput};
pub use guards::{Decision, GuardSettings, Guards, Subject, Verdict};

/// The rule set in force; replaced whole by a successful reload.
pub type SharedRules = Arc<RwLock<Arc<RuleSet>>>;

/// Queue entries read at a time.
const BATCH: usize = 32;

pub struct Engine {
    store: Arc<Store>,
    rules: SharedRules,
    executor: Arc<dyn StepExecutor>,
    clock: Arc<dyn Clock>,
    guards: Mutex<Guards>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    runbooks: Mutex<Vec<JoinHandle<()>>>,
    /// Webhook requests waiting for their commit (see [`Engine::give_way_to`]).
    ingress: Mutex<Option<Arc<std::sync::atomic::AtomicUsize>>>,
}

/// How a runbook ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunOutcome {
    Recovered,
    Failed,
}

impl Engine {
    pub fn new(
        store: Arc<Store>,
        rules: SharedRules,
        executor: Arc<dyn StepExecutor>,
        clock: Arc<dyn Clock>,
        guard_settings: GuardSettings,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            guards: Mutex::new(Guards::new(guard_settings, clock.clone())),
            store,
            rules,
            executor,
            clock,
            metrics,
            wake,
            runbooks: Mutex::new(Vec::new()),
            ingress: Mutex::new(None),
        })
    }

    /// Ingress first: while webhook requests wait for their commit, the engine waits a moment
    /// and then takes the backlog in one larger batch, instead of competing for the store
    /// with every commit. Processing may lag a storm by milliseconds; Alertmanager never waits.
    pub fn give_way_to(&self, in_flight: Arc<std::sync::atomic::AtomicUsize>) {
        *self.ingress.lock().unwrap_or_else(|p| p.into_inner()) = Some(in_flight);
    }

    fn ingress_busy(&self) -> bool {
        self.ingress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|n| n.load(std::sync::atomic::Ordering::Relaxed) > 0)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn rules(&self) -> Arc<RuleSet> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs until `shutdown` resolves: recovers, then handles the queue as the intake fills it.
    /// Store errors are logged and retried; they never stop the engine.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut recovered = false;
        loop {
            if !recovered {
                match self.recover() {
                    Ok(()) => recovered = true,
                    Err(e) => tracing::error!(error = %e, "crash recovery failed; retrying"),
                }
            }
            if recovered {
                if self.ingress_busy() {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                if let Err(e) = self.process_pending() {
                    tracing::error!(error = %e, "processing intake failed; retrying");
                }
                if let Err(e) = self.escalation_tick() {
                    tracing::error!(error = %e, "escalation timers failed; retrying");
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = &mut shutdown => break,
            }
        }
        self.wait_idle().await;
    }

    /// Picks up after a crash (see the module documentation).
    pub fn recover(self: &Arc<Self>) -> Result<(), StoreError> {
        let now = self.clock.now();
        for id in self.store.incidents_in_phase("remediating")? {
            self.store.interrupt_running_steps(id, now)?;
            self.store.finish_run(id, "interrupted", now)?;
            self.set_phase(id, "interrupted")?;
            self.store.record_decision(
                id,
                "recovery",
                "skip",
                "the service restarted while this runbook ran; it is not run again, a human takes over",
                now,
            )?;
            if let Some(inc) = self.store.incident(id)? {
                self.escalate(
                    &inc,
                    "the runbook was interrupted by a restart of remediator",
                    now,
                )?;
            }
        }
        Ok(())
    }

    /// Acts on everything the intake queued (incidents opened, incidents resolved), oldest
    /// first; each entry leaves the queue once handled, so a crash resumes with the entry it
    /// was on. Returns how many it handled.
    pub fn process_pending(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut handled = 0;
        loop {
            let batch = self.store.queued_events(BATCH)?;
            if batch.is_empty() {
                return Ok(handled);
            }
            for (queue_id, event) in batch {
                match event {
                    IncidentEvent::Opened(id) => self.handle_opened(id)?,
                    IncidentEvent::Resolved(id) => self.handle_resolved(id)?,
                }
                self.store.dequeue_event(queue_id)?;
                handled += 1;
            }
        }
    }

    /// Waits for every runbook started so far to end.
    pub async fn wait_idle(&self) {
        loop {
            let handles: Vec<_> =
                std::mem::take(&mut *self.runbooks.lock().unwrap_or_else(|p| p.into_inner()));
            if handles.is_empty() {
                return;
            }
            for h in handles {
                let _ = h.await;
            }
        }
    }

    fn decide(&self, id: i64, d: &Decision, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.metrics.guard_decision(d.guard, d.verdict.as_str());
        self.store
            .record_decision(id, d.guard, d.verdict.as_str(), &d.reason, now)
    }

    #[tracing::instrument(skip(self), fields(incident = id))]
    fn handle_opened(self: &Arc<Self>, id: i64) -> Result<(), StoreError> {
        let now = self.clock.now();
        let Some(inc) = self.store.incident(id)? else {
            return Ok(());
        };
        if inc.phase != "new" {
            // Handled already: the engine stopped after acting but before dequeuing.
            return Ok(());
        }
        self.metrics.incidents_opened.inc();
        let labels = labels_of(&inc);
        let rules = self.rules();
        let Some(rule) = rules.find(&labels) else {
            self.store.record_decision(
                id,
                "match",
                "skip",
                "no rule matches this alert's labels; nothing to do",
                now,
            )?;
            self.store.set_phase(id, "no_rule")?;
            return Ok(());
        };
        let priority = rule.priority_for(&labels);
        let target = rule.resolve_target(&labels);
        let target_text = target.as_ref().ok().map(TargetRef::key);
        self.store
            .set_match(id, &rule.name, priority.as_str(), target_text.as_deref())?;
        // Escalation reads the rule and priority from the record: take the updated one.
        let inc = self.store.incident(id)?.unwrap_or(inc);
        self.store.record_decision(
            id,
            "match",
            "continue",
            &format!(
                "rule {} ({}:{}), {priority}, RTO {}",
                rule.name,
                rule.file.display(),
                rule.line,
                human(rule.rto)
            ),
            now,
        )?;
        self.announce_open(&inc, rule, priority, now)?;

        let target = match target {
            Ok(t) => t,
            Err(reason) => {
                let d = Decision {
                    guard: "target",
                    verdict: Verdict::Skip,
                    reason: format!("refused: {reason}"),
                    pages: true,
                };
                self.decide(id, &d, now)?;
                self.set_phase(id, "escalated")?;
                return self.escalate(&inc, &d.reason, now);
            }
        };

        let decisions = {
            let mut guards = self.guards.lock().unwrap_or_else(|p| p.into_inner());
            guards.evaluate(
                &self.store,
                &Subject {
                    incident_id: id,
                    fingerprint: &inc.fingerprint,
                    rule,
                    target: &target,
                },
                false,
            )?
        };
        for d in &decisions {
            self.decide(id, d, now)?;
            self.store.enqueue_message(
                id,
                "decision",
                &format!("{}: {}", d.guard, d.reason),
                now,
            )?;
        }
        if let Some(skip) = decisions.iter().find(|d| d.verdict == Verdict::Skip) {
            let phase = if skip.pages { "escalated" } else { "skipped" };
            self.set_phase(id, phase)?;
            if skip.pages {
                self.escalate(&inc, &skip.reason, now)?;
            }
            return Ok(());
        }

        self.store.start_run(id, &rule.name, &target.key(), now)?;
        self.set_phase(id, "remediating")?;
        let ctx = StepContext {
            incident_id: id,
            rule: rule.name.clone(),
            target,
            labels,
        };
        let engine = self.clone();
        let rule = rule.clone();
        let span = tracing::info_span!("runbook", incident = id, rule = %rule.name);
        let handle = tokio::spawn(tracing::Instrument::instrument(
            async move {
                engine.run_runbook(&inc, &rule, priority, ctx).await;
            },
            span,
        ));
        self.runbooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
        Ok(())
    }

    fn handle_resolved(&self, id: i64) -> Result<(), StoreError> {
        let now = self.clock.now();
        let Some(inc) = self.store.incident(id)? else {
            return Ok(());
        };
        if self.store.has_decision(id, "resolved")? {
            // Handled already: the engine stopped after acting but before dequeuing.
            return Ok(());
        }
        let ttr = inc.time_to_recover_seconds.unwrap_or_default();
        let rto = inc
            .rule
            .as_deref()
            .and_then(|r| self.rules().get(r).map(|r| r.rto));
        let vs_rto = match rto {
            Some(rto) if ttr <= rto.as_secs_f64() => format!(" (within the RTO of {})", human(rto)),
            Some(rto) => format!(" (RTO of {} missed)", human(rto)),
            None => String::new(),
        };
        if let Some(rto) = rto {
            self.metrics.recovered(ttr, rto.as_secs_f64());
        }
        let text = format!(
            "resolved after {}{vs_rto}",
            human(Duration::from_secs(ttr.max(0.0) as u64))
        );
        self.store
            .record_decision(id, "resolved", "continue", &text, now)?;
        self.store.enqueue_message(id, "resolved", &text, now)?;
        self.store.enqueue_message(id, "state", "resolved", now)?;
        if self.store.has_message(id, "pagerduty", "trigger")? {
            self.store.enqueue(
                id,
                "pagerduty",
                "resolve",
                &text,
                &serde_json::Value::Null,
                now,
            )?;
        }
        Ok(())
    }

    fn announce_open(
        &self,
        inc: &IncidentRecord,
        rule: &Rule,
        priority: Priority,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let rules = self.rules();
        let mut told: Vec<String> = rules.escalation.policy(priority).notify.clone();
        if !told.contains(&rule.owner) {
            told.push(rule.owner.clone());
        }
        let text = format!(
            "[{priority}] {} firing: rule {}, RTO {}, owner {}; telling {}",
            inc.alertname,
            rule.name,
            human(rule.rto),
            rule.owner,
            told.join(", ")
        );
        self.store
            .enqueue_message(inc.id, "opened", &text, now)
            .map(|_| ())
    }

    /// Pages the priority's `page` list and the rule's owner.
    fn escalate(
        &self,
        inc: &IncidentRecord,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let rules = self.rules();
        let priority = inc
            .priority
            .as_deref()
            .and_then(Priority::parse)
            .unwrap_or(Priority::P2);
        let mut who = rules.escalation.policy(priority).page.clone();
        if let Some(owner) = inc
            .rule
            .as_deref()
            .and_then(|r| rules.get(r))
            .map(|r| r.owner.clone())
        {
            if !who.contains(&owner) {
                who.push(owner);
            }
        }
        self.page(inc.id, &who, why, now)
    }

    fn page(
        &self,
        id: i64,
        who: &[String],
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let text = format!(
            "paging {}: {why}",
            if who.is_empty() {
                "nobody (no page list for this priority)".to_string()
            } else {
                who.join(", ")
            }
        );
        tracing::warn!(incident = id, "{text}");
        self.metrics.pages.inc();
        self.store
            .record_decision(id, "page", "continue", &text, now)?;
        let Some(inc) = self.store.incident(id)? else {
            return Ok(());
        };
        let data = crate::notify::outbox::page_data(who, &inc);
        self.store
            .enqueue(id, "slack", "page", &format!("paged: {why}"), &data, now)?;
        let summary = format!(
            "[{}] {} on {}: {why}",
            inc.priority.as_deref().unwrap_or("P?"),
            inc.alertname,
            inc.target.as_deref().unwrap_or("-")
        );
        self.store
            .enqueue(id, "pagerduty", "trigger", &summary, &data, now)
            .map(|_| ())
    }

    /// Sets the phase and tells the thread (its root is updated in place).
    fn set_phase(&self, id: i64, phase: &str) -> Result<(), StoreError> {
        self.store.set_phase(id, phase)?;
        self.store
            .enqueue_message(id, "state", phase, self.clock.now())
            .map(|_| ())
    }

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
        if !self.store.acknowledge(id, by, now)? {
            return Ok(Some(false));
        }
        let text = format!("acknowledged by {by}; escalation tiers stopped");
        self.store
            .record_decision(id, "ack", "continue", &text, now)?;
        let data = serde_json::json!({ "by": by, "slack_user": slack_user });
        self.store.enqueue(id, "slack", "ack", &text, &data, now)?;
        self.store
            .enqueue_message(id, "state", "acknowledged", now)?;
        if self.store.has_message(id, "pagerduty", "trigger")? {
            self.store.enqueue(
                id,
                "pagerduty",
                "acknowledge",
                &text,
                &serde_json::Value::Null,
                now,
            )?;
        }
        Ok(Some(true))
    }

    /// Fires the escalation tiers that are due: open, unacknowledged incidents, timed from
    /// when the incident opened as a share of the rule's RTO (or a delay). Fired tiers are
    /// stored, so a restart neither loses a timer nor fires one twice.
    pub fn escalation_tick(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let rules = self.rules();
        let mut fired = 0;
        for inc in self.store.escalation_candidates()? {
            let Some(rule) = inc.rule.as_deref().and_then(|r| rules.get(r)) else {
                continue;
            };
            let Some(opened) = chrono::DateTime::parse_from_rfc3339(&inc.first_seen).ok() else {
                continue;
            };
            let priority = inc
                .priority
                .as_deref()
                .and_then(Priority::parse)
                .unwrap_or(rule.priority);
            for (i, tier) in rules.escalation.policy(priority).tiers.iter().enumerate() {
                if tier.customer_impacting_only && !rule.customer_impacting {
                    continue;
                }
                let delay = tier.after.delay(rule.rto);
                let due = opened.with_timezone(&Utc)
                    + chrono::Duration::from_std(delay).unwrap_or_default();
                if now < due || !self.store.fire_tier(inc.id, i, now)? {
                    continue;
                }
                let share = match tier.after {
                    crate::rules::TierAfter::RtoShare(f) => {
                        format!(" ({:.0}% of the RTO of {})", f * 100.0, human(rule.rto))
                    }
                    crate::rules::TierAfter::Delay(_) => String::new(),
                };
                let text = format!(
                    "escalation: still unacknowledged and unresolved after {}{share}; telling {}",
                    human(delay),
                    tier.notify.join(", ")
                );
                self.store
                    .record_decision(inc.id, "tier", "continue", &text, now)?;
                let data = serde_json::json!({ "who": tier.notify, "tier": i });
                self.store
                    .enqueue(inc.id, "slack", "tier", &text, &data, now)?;
                fired += 1;
            }
        }
        Ok(fired)
    }

    async fn run_runbook(
        &self,
        inc: &IncidentRecord,
        rule: &Rule,
        priority: Priority,
        ctx: StepContext,
    ) {
        let outcome = match self.run_steps(inc, rule, priority, &ctx).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "the store failed during the runbook; recording it as failed");
                RunOutcome::Failed
            }
        };
        self.metrics.runbook(match outcome {
            RunOutcome::Recovered => "recovered",
            RunOutcome::Failed => "failed",
        });
        self.guards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(&ctx.target, inc.id);
    }

    async fn run_steps(
        &self,
        inc: &IncidentRecord,
        rule: &Rule,
        priority: Priority,
        ctx: &StepContext,
    ) -> Result<RunOutcome, StoreError> {
        let id = inc.id;
        let mut failure = None;
        for (seq, step) in rule.steps.iter().enumerate() {
            if let Err(why) = self.run_step(ctx, "main", seq, step, priority).await? {
                failure = Some(format!("step {} ({}) {why}", seq + 1, step.name));
                break;
            }
        }
        let now = self.clock.now();
        let Some(failure) = failure else {
            self.store.finish_run(id, "recovered", now)?;
            self.set_phase(id, "recovered")?;
            self.store.enqueue_message(
                id,
                "recovered",
                "runbook finished: every step succeeded",
                now,
            )?;
            return Ok(RunOutcome::Recovered);
        };
        self.store.record_decision(
            id,
            "runbook",
            "skip",
            &format!("failed at {failure}; running on_failure"),
            now,
        )?;
        for (seq, step) in rule.on_failure.iter().enumerate() {
            // on_failure runs to the end; a failing step there is recorded and passed over.
            let _ = self
                .run_step(ctx, "on_failure", seq, step, priority)
                .await?;
        }
        let now = self.clock.now();
        if !rule
            .on_failure
            .iter()
            .any(|s| matches!(s.kind, StepKind::Page { .. }))
        {
            if let Some(inc) = self.store.incident(id)? {
                self.escalate(&inc, &format!("automation failed: {failure}"), now)?;
            }
        }
        self.store.finish_run(id, "failed", now)?;
        self.set_phase(id, "failed")?;
        Ok(RunOutcome::Failed)
    }

    /// Runs one step with its deadline; the outer error is the store's, the inner the step's.
    async fn run_step(
        &self,
        ctx: &StepContext,
        phase: &str,
        seq: usize,
        step: &Step,
        priority: Priority,
    ) -> Result<Result<(), String>, StoreError> {
        let id = ctx.incident_id;
        let step_id = self
            .store
            .start_step(id, phase, seq, step.name, self.clock.now())?;
        let started = tokio::time::Instant::now();
        let result =
            tokio::time::timeout(step.timeout, self.execute(ctx, &step.kind, priority)).await;
        let took = started.elapsed();
        let (outcome, detail) = match result {
            Ok(Ok(out)) => ("ok", join_detail(&out.summary, &out.excerpt)),
            Ok(Err(e)) => ("failed", e.to_string()),
            Err(_) => (
                "timed_out",
                format!("did not finish within {}", human(step.timeout)),
            ),
        };
        let now = self.clock.now();
        self.store.finish_step(step_id, outcome, &detail, now)?;
        self.metrics.step(step.name, outcome, took.as_secs_f64());
        self.store.enqueue_message(
            id,
            "step",
            &format!(
                "{} {}: {outcome} ({})",
                phase,
                step.name,
                first_line(&detail)
            ),
            now,
        )?;
        Ok(if outcome == "ok" {
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
                self.store
                    .enqueue_message(ctx.incident_id, "notify", message, self.clock.now())
                    .map_err(store_err)?;
                Ok(StepOutput::new("message queued"))
            }
            StepKind::Page { to, message } => {
                let who = if to.is_empty() {
                    self.rules().escalation.policy(priority).page.clone()
                } else {
                    to.clone()
                };
                let why = message
                    .clone()
                    .unwrap_or_else(|| "the runbook asks for a human".into());
                self.page(ctx.incident_id, &who, &why, self.clock.now())
                    .map_err(store_err)?;
                Ok(StepOutput::new(format!("paged {}", who.join(", "))))
            }
            other => self.executor.run(ctx, other).await,
        }
    }
}

fn labels_of(inc: &IncidentRecord) -> Labels {
    serde_json::from_value(inc.labels.clone()).unwrap_or_default()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn join_detail(summary: &str, excerpt: &str) -> String {
    if excerpt.is_empty() {
        summary.to_string()
    } else {
        format!("{summary}\n{excerpt}")
    }
}

#[cfg(test)]
mod tests;
