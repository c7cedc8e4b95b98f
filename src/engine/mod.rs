//! Incident → plan → one commit → runbook → escalation.
//!
//! The intake writer applies every delivery to the incidents in the transaction that stores
//! it, and queues what needs acting on (see `store::apply`). The engine takes that queue in
//! order. For a newly opened incident it asks the pure [`plan()`] what to do and writes what
//! was decided as one [`Commit`]: the match, every guard decision, the notices they produce,
//! the phase, the start of the run (fsynced) and the removal of the queue entry, together or
//! not at all. Only then does the runbook start. A crash before that commit leaves the entry
//! queued and nothing written, so the next start decides once more from scratch; a crash
//! after it finds the incident decided (not `new`) and the entry gone. Nothing is written
//! twice and no runbook starts twice. For a resolved incident it records the time to recover
//! against the RTO in the same way. Runbooks for different targets run concurrently; one
//! target runs one runbook at a time.
//!
//! Crash recovery ([`Engine::recover`]): incidents left `remediating` are marked
//! `interrupted`, their running step recorded as such, and people are paged. A runbook is
//! never started twice for one firing: an interrupted one is handed to a human instead.
//!
//! The engine depends only on the [`Store`], a [`StepExecutor`] and a [`Clock`], so its tests
//! use a recording executor and tokio's paused clock. It emits typed [`Notice`]s; `notify`
//! renders them.

mod approve;
mod buttons;
mod coordinator;
mod escalation;
mod executor;
mod fleet;
pub mod guards;
pub mod limits;
mod pauses;
mod pending;
pub mod plan;
mod recheck;
mod recovery;
mod runbook;
mod synthetic;

use pending::Pending;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::domain::notice::{Page, RunOutcome, StateChange};
use crate::domain::{
    Clock, Contact, DecisionKind, Notice, Phase, Priority, RunPhase, Sink, Verdict,
};
use crate::metrics::Metrics;
use crate::rules::{RuleSet, TierAfter};
use crate::store::{Commit, IncidentEvent, IncidentRecord, Store, StoreError};
use crate::telemetry::events::{
    GuardDecided, GuardsPassed, IncidentOpened, IncidentResolved, InternalEvent, RowQuarantined,
};
use crate::telemetry::{spans, trace_context};

pub use approve::{Answered, Answerer};
pub use coordinator::{
    Claim, Coordinator, Firing, Holder, SharedLimit, Take, Taken, Unavailable, Won,
};
pub use executor::{
    AlertCheck, DeployWatch, NoDeploys, NoDocker, Outside, StepContext, StepError, StepExecutor,
    StepOutput,
};
pub use guards::{Decision, GuardFacts, GuardSettings, Mode};
pub use pauses::PauseError;
pub use plan::{plan, Action, FactsQuery, GuardState, Matched, Plan};

/// The rule set in force; replaced whole by a successful reload.
pub type SharedRules = Arc<RwLock<Arc<RuleSet>>>;

/// Queue entries read at a time.
const BATCH: usize = 32;

pub struct Engine {
    store: Arc<Store>,
    rules: SharedRules,
    outside: Outside,
    clock: Arc<dyn Clock>,
    settings: GuardSettings,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    /// Target key → the incident whose runbook holds it.
    busy: Mutex<HashMap<String, i64>>,
    runbooks: Mutex<Vec<JoinHandle<()>>>,
    /// Damaged rows passed over where they stand (table, id), told once per process: the
    /// escalation timers meet them every second.
    passed_over: Mutex<HashSet<(&'static str, i64)>>,
    /// Fleet mode: the claims answered for opened incidents not yet decided.
    claims: Mutex<HashMap<i64, fleet::Claimed>>,
    /// Set when a pass of the queue stopped at an opened incident whose claim is unanswered.
    unclaimed: Mutex<bool>,
    /// Where the watch over lost claims resumes.
    watch_after: Mutex<i64>,
    /// Fleet mode: crash recovery's answer per incident left `remediating` (`false`: another
    /// replica already paged for it).
    fleet_recovery: Mutex<HashMap<i64, bool>>,
}

/// The store and the running runbooks, as the guards see them.
struct Live<'a> {
    store: &'a Store,
    busy: &'a HashMap<String, i64>,
    deploys: &'a dyn DeployWatch,
    /// Fleet mode: what Redis answered for this run's limits and target.
    fleet: Option<&'a fleet::Overlay>,
}

impl GuardState for Live<'_> {
    type Error = StoreError;

    fn facts(&self, q: &FactsQuery<'_>) -> Result<GuardFacts, StoreError> {
        let key = q.target.key();
        let open_run = self.store.open_run_for(q.rule, &key, q.incident)?;
        // Dedup is the first guard and acting stops at the first skip: when another open
        // incident of this rule and target has run, nothing else is read (most incidents of a
        // storm of new firings end here, and the other facts are six more queries).
        if open_run.is_some() && q.mode == Mode::Act {
            return Ok(GuardFacts {
                open_run,
                ..GuardFacts::default()
            });
        }
        let mut facts = GuardFacts {
            open_run,
            firings: self.store.count_firings(q.fingerprint, q.flapping_since)?,
            rule_runs: starts(self.store.runs_since(q.rule_since, Some((q.rule, &key)))?),
            all_runs: starts(self.store.runs_since(q.budget_since, None)?),
            rule_limit: self
                .store
                .limit(&guards::rule_limit_key(q.rule, q.target))?,
            budget_limit: self.store.limit(guards::BUDGET_LIMIT_KEY)?,
            busy: self.busy.get(&key).copied(),
            busy_replica: None,
            pause: self.store.active_pause(q.rule, q.service, q.now)?,
            window: None,
            deploy: q.service.and_then(|s| self.deploys.recent(s, q.now)),
        };
        if let Some(overlay) = self.fleet {
            overlay.apply(q, &mut facts);
        }
        Ok(facts)
    }
}

/// The guards' view of a store alone, with no runbook running, for an alert that is not in
/// it (`simulate`): its own firing counts towards flapping, as the engine's stored one does.
pub struct Recorded<'a>(pub &'a Store);

impl GuardState for Recorded<'_> {
    type Error = StoreError;

    fn facts(&self, q: &FactsQuery<'_>) -> Result<GuardFacts, StoreError> {
        let mut facts = Live {
            store: self.0,
            busy: &HashMap::new(),
            deploys: &NoDeploys,
            fleet: None,
        }
        .facts(q)?;
        facts.firings += 1;
        Ok(facts)
    }
}

fn starts(runs: Vec<crate::store::RunRecord>) -> Vec<DateTime<Utc>> {
    runs.into_iter().map(|r| r.started_at).collect()
}

impl Engine {
    pub fn new(
        store: Arc<Store>,
        rules: SharedRules,
        outside: Outside,
        clock: Arc<dyn Clock>,
        settings: GuardSettings,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            store,
            rules,
            outside,
            clock,
            settings,
            metrics,
            wake,
            busy: Mutex::new(HashMap::new()),
            runbooks: Mutex::new(Vec::new()),
            passed_over: Mutex::new(HashSet::new()),
            claims: Mutex::new(HashMap::new()),
            unclaimed: Mutex::new(false),
            watch_after: Mutex::new(0),
            fleet_recovery: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn settings(&self) -> &GuardSettings {
        &self.settings
    }

    /// The deploy watch's state, for `/-/ready`.
    pub fn deploy_status(&self) -> Option<String> {
        self.outside.deploys.status()
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
                if let Err(e) = self.recover_claims().await {
                    tracing::error!(error = %e, "crash recovery could not ask Redis about its claims; retrying");
                }
                match self.recover() {
                    Ok(()) => recovered = true,
                    Err(e) => tracing::error!(error = %e, "crash recovery failed; retrying"),
                }
            }
            // Fleet mode: claims are asked until the queue's head is answered.
            let mut again = false;
            if recovered {
                let claimed = match self.claim_queued().await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "claiming new incidents failed; retrying");
                        false
                    }
                };
                // The intake writer gives way until this pass has taken what it queued.
                let pass = self.store.precedence().pass();
                match self.process_pending() {
                    // A failing store is retried after the pause, not in a tight loop.
                    Ok(_) => again = !self.claims_caught_up() && claimed,
                    Err(e) => tracing::error!(error = %e, "processing intake failed; retrying"),
                }
                self.store.precedence().taken(pass);
                if let Err(e) = self.escalation_tick() {
                    tracing::error!(error = %e, "escalation timers failed; retrying");
                }
                if let Err(e) = self.watch_claims().await {
                    tracing::error!(error = %e, "watching other replicas' claims failed; retrying");
                }
            }
            if again {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = &mut shutdown => break,
            }
        }
        self.wait_idle().await;
    }

    /// Acts on everything the intake queued (incidents opened, incidents resolved), oldest
    /// first; each entry leaves the queue in the commit that handles it, so a crash resumes
    /// with the entry it was on. An entry that cannot be handled because a row does not read
    /// (the entry itself, its incident, a row the guards read) is no reason to stop the
    /// queue: it leaves the queue into the quarantine, and the next entry is handled. Any
    /// other error (the store failing) ends the pass, to be retried. Returns how many it
    /// handled.
    ///
    /// The entries of one batch are committed together, in one transaction ([`Pending`]):
    /// in a storm of new firings that is one commit for many incidents instead of one each.
    /// What a commit changes that a later plan reads (a run started, a limit spent) is
    /// committed before that plan: an entry that starts a runbook commits the batch so far
    /// with its own, and two entries of one incident are never in one batch.
    pub fn process_pending(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut handled = 0;
        let mut pending = Pending::default();
        loop {
            let batch = self.store.queued_events(BATCH)?;
            if batch.is_empty() {
                return Ok(handled);
            }
            for entry in batch {
                let q = match entry {
                    Ok(q) => q,
                    // The entry itself does not read: its error names it.
                    Err(e) => {
                        let Some((_, queue_id)) = e.damaged_row() else {
                            return Err(e);
                        };
                        pending.commit(&self.store)?;
                        self.quarantine_entry(queue_id, None, &e)?;
                        continue;
                    }
                };
                let (id, opened) = match q.event {
                    IncidentEvent::Opened(id) => (id, true),
                    IncidentEvent::Resolved(id) => (id, false),
                };
                if pending.has(id) {
                    pending.commit(&self.store)?;
                }
                // Fleet mode: decided only once its claim is answered (the next pass asks).
                if opened && !self.claim_answered(id) {
                    pending.commit(&self.store)?;
                    *self.unclaimed.lock().unwrap_or_else(|p| p.into_inner()) = true;
                    return Ok(handled);
                }
                let span = spans::incident(q.trace.as_deref(), id);
                let result = span.in_scope(|| {
                    if opened {
                        self.handle_opened(q.id, id, &span, &mut pending)
                    } else {
                        self.handle_resolved(q.id, id, &mut pending).map(|()| true)
                    }
                });
                match result {
                    Ok(true) => handled += 1,
                    // Fleet mode: its run waits for Redis's answer on its limits and target.
                    Ok(false) => {
                        pending.commit(&self.store)?;
                        *self.unclaimed.lock().unwrap_or_else(|p| p.into_inner()) = true;
                        return Ok(handled);
                    }
                    // Nothing of the entry was committed: the rows that did not read are
                    // read before its commit.
                    Err(e) if e.damaged_row().is_some() => {
                        pending.commit(&self.store)?;
                        span.in_scope(|| self.quarantine_entry(q.id, Some(id), &e))?
                    }
                    Err(e) => return Err(e),
                }
            }
            // The next batch is read after this one left the queue.
            pending.commit(&self.store)?;
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

    /// One decision point: the plan for a newly opened incident, committed whole, then its
    /// runbook started. Runs inside the incident's `span`, which the runbook continues.
    /// `false` (nothing done) when, in fleet mode, its run must first ask Redis for its
    /// limits and target.
    fn handle_opened(
        self: &Arc<Self>,
        queue_id: i64,
        id: i64,
        span: &tracing::Span,
        pending: &mut Pending,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut c = Commit::new(id, now).traced(trace_context::current());
        c.dequeue(queue_id);
        let inc = match self.store.incident_without_annotations(id)? {
            Some(inc) if inc.phase == Phase::New => inc,
            // Handled already (or gone): only the queue entry is left to remove.
            _ => {
                pending.add(c, || {});
                return Ok(true);
            }
        };
        let claim = self.take_claim(id);
        let overlay = fleet::overlay(claim.as_ref());
        let rules = self.rules();
        let busy = self.busy.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // A drill without --live is planned as under engine.dry_run.
        let drill = inc
            .started
            .as_ref()
            .filter(|s| s.dry_run)
            .map(|_| GuardSettings {
                dry_run: true,
                dry_run_drill: true,
                ..self.settings.clone()
            });
        let guards_span = spans::guards();
        let mut plan = guards_span.in_scope(|| {
            plan(
                &inc.labels,
                &inc.fingerprint,
                id,
                &rules,
                drill.as_ref().unwrap_or(&self.settings),
                &Live {
                    store: &self.store,
                    busy: &busy,
                    deploys: self.outside.deploys.as_ref(),
                    fleet: overlay.as_ref(),
                },
                now,
                Mode::Act,
            )
        })?;
        let mut won = fleet::won(claim.as_ref());
        match claim.clone() {
            Some(fleet::Claimed::Lost { by }) => {
                let matched = plan.matched.as_ref().zip(plan.decisions.first());
                self.lost(&mut c, matched, &by);
                let (metrics, rule) = (
                    self.metrics.clone(),
                    matched.map(|(m, _)| m.rule.name.clone()),
                );
                pending.add(c, move || {
                    IncidentOpened {
                        incident_id: id,
                        fingerprint: &inc.fingerprint,
                        alertname: &inc.alertname,
                        rule: rule.as_deref(),
                    }
                    .emit(&metrics);
                });
                return Ok(true);
            }
            Some(fleet::Claimed::Down { why, policy }) => fleet::redis_down(&mut plan, why, policy),
            _ => {}
        }
        if let Some(w) = won.as_mut() {
            if let Some(take) = self.fleet_gate(claim.as_ref(), w, &mut plan, id, now)? {
                self.ask_fleet(id, w.clone(), take);
                return Ok(false);
            }
        }
        let Some(m) = &plan.matched else {
            if let Some(w) = &won {
                c.decision(
                    DecisionKind::Claim,
                    Verdict::Continue,
                    &format!("claimed by replica {} (this one)", w.replica()),
                );
            }
            for d in &plan.decisions {
                c.decision(d.guard, d.verdict, &d.reason);
            }
            c.phase_silently(Phase::NoRule);
            let (metrics, decisions) = (self.metrics.clone(), plan.decisions);
            let done = self.claim_done(won, Phase::NoRule);
            pending.add(c, move || {
                done();
                IncidentOpened {
                    incident_id: id,
                    fingerprint: &inc.fingerprint,
                    alertname: &inc.alertname,
                    rule: None,
                }
                .emit(&metrics);
                guards_span.in_scope(|| counted(&metrics, id, &decisions));
            });
            return Ok(true);
        };
        let rule = m.rule;
        let target_key = m.target.as_ref().ok().map(|t| t.key());
        c.matched(
            &rule.name,
            m.priority,
            target_key.clone(),
            rule.rto,
            m.told.clone(),
            Some(m.owner.clone()),
        );
        // The match first: the opened notice is the thread's root.
        let (first, guards) = plan
            .decisions
            .split_first()
            .expect("a matched plan has its match decision");
        c.decision(first.guard, first.verdict, &first.reason);
        if let Some(w) = &won {
            c.decision(
                DecisionKind::Claim,
                Verdict::Continue,
                &format!("claimed by replica {} (this one)", w.replica()),
            );
        }
        c.notice(
            Sink::Slack,
            Notice::Opened {
                alertname: inc.alertname.clone(),
                priority: m.priority,
                rule: rule.name.clone(),
                rto: rule.rto,
                owner: rule.owner.clone(),
                told: m.told.clone(),
            },
        );
        if let Some(started) = &inc.started {
            c.notice(Sink::Slack, synthetic::announcement(started, &rule.name));
        }
        // Every decision is stored; the thread hears of them once: the guards that let the
        // runbook go as one "go" reply, a skip as a reply of its own with its reason (a
        // refused target is told by the page that follows).
        for d in guards {
            c.decision(d.guard, d.verdict, &d.reason);
        }
        match plan.action {
            Action::Run { .. } => {
                c.notice(
                    Sink::Slack,
                    Notice::Go {
                        cleared: guards.iter().map(Decision::cleared_fact).collect(),
                    },
                );
            }
            _ => {
                for d in guards
                    .iter()
                    .filter(|d| d.verdict == Verdict::Skip && d.guard != DecisionKind::Target)
                {
                    c.notice(
                        Sink::Slack,
                        Notice::Decision {
                            guard: d.guard,
                            verdict: d.verdict,
                            reason: d.reason.clone(),
                        },
                    );
                }
            }
        }
        let (inc_fingerprint, inc_alertname) = (inc.fingerprint.clone(), inc.alertname.clone());
        let matched = IncidentRecord {
            rule: Some(rule.name.clone()),
            priority: Some(m.priority),
            target: target_key,
            ..inc
        };
        // Told once the commit is in: the incident opened, its guards' decisions, and the
        // span's outcome when no runbook will record it.
        let told = {
            let (metrics, decisions) = (self.metrics.clone(), plan.decisions.clone());
            let (rule_name, runs) = (rule.name.clone(), matches!(plan.action, Action::Run { .. }));
            let span = span.clone();
            move |outcome: Option<Phase>| {
                IncidentOpened {
                    incident_id: id,
                    fingerprint: &inc_fingerprint,
                    alertname: &inc_alertname,
                    rule: Some(&rule_name),
                }
                .emit(&metrics);
                guards_span.in_scope(|| {
                    counted(&metrics, id, &decisions);
                    if runs {
                        GuardsPassed { incident_id: id }.emit(&metrics);
                    }
                });
                if let Some(phase) = outcome {
                    span.record("outcome", phase.as_str());
                }
            }
        };
        match &plan.action {
            Action::Nothing => unreachable!("a matched plan acts or skips"),
            Action::Skip { pages, reason } => {
                let phase = if *pages {
                    Phase::Escalated
                } else {
                    Phase::Skipped
                };
                c.phase(phase);
                if synthetic::ends_with(matched.started.as_ref(), phase) {
                    c.resolve_synthetic();
                }
                let page = pages.then(|| {
                    let who = plan::paged(&rules, m.priority, Some(&rule.owner));
                    self.page(&mut c, &matched, who, reason)
                });
                let metrics = self.metrics.clone();
                let done = self.claim_done(won, phase);
                pending.add(c, move || {
                    done();
                    if let Some(page) = page {
                        page.sent(&metrics);
                    }
                    told(Some(phase));
                });
            }
            Action::Run { target, spent, .. } => {
                c.start_run(&rule.name, &target.key())
                    .limit(&guards::rule_limit_key(&rule.name, target), spent.rule)
                    .limit(guards::BUDGET_LIMIT_KEY, spent.budget);
                // The first step starts in this commit when nothing comes before it: no
                // Alertmanager question (it changes no container), no answer to wait for,
                // no drill to break the target first. Its start is then durable with the
                // run's, one write and one fsync for both.
                if let Some(step) = first_step_in_commit(rule, &matched) {
                    c.start_step(RunPhase::Main, 0, step.name, self.clock.now());
                }
                // The runbook's end records the span's outcome.
                pending.add(c, move || told(None));
                // Fsynced before the runbook starts, with the batch so far.
                pending.commit(&self.store)?;
                if !matches!(target, crate::rules::TargetRef::None) {
                    self.busy
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(target.key(), id);
                }
                let ctx = StepContext {
                    incident_id: id,
                    rule: rule.name.clone(),
                    target: target.clone(),
                    labels: matched.labels.clone(),
                };
                let engine = self.clone();
                let rule = rule.clone();
                let priority = m.priority;
                let handle = tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        let runbook = engine.run_runbook(&matched, &rule, priority, ctx);
                        engine.hold_claim(won, id, runbook).await;
                    },
                    span.clone(),
                ));
                self.runbooks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(handle);
            }
        }
        Ok(true)
    }

    fn handle_resolved(
        &self,
        queue_id: i64,
        id: i64,
        pending: &mut Pending,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut c = Commit::new(id, now).traced(trace_context::current());
        c.dequeue(queue_id);
        let Some(inc) = self.store.incident_without_annotations(id)? else {
            pending.add(c, || {});
            return Ok(());
        };
        if self.store.has_decision(id, DecisionKind::Resolved)? {
            // Handled already.
            pending.add(c, || {});
            return Ok(());
        }
        if matches!(inc.phase, Phase::Claimed | Phase::ActedElsewhere) {
            // Another replica acts on it and has the thread: recorded, told by nobody here.
            c.decision(
                DecisionKind::Resolved,
                Verdict::Continue,
                "resolved; the replica that claimed it tells the thread",
            );
            pending.add(c, || {});
            return Ok(());
        }
        let after = inc.time_to_recover().unwrap_or_default();
        let notice = Notice::Resolved {
            after,
            rto: inc.rto,
        };
        c.decision(DecisionKind::Resolved, Verdict::Continue, &notice.summary());
        // The root shows the time to recover. A reply too, for the people who were called
        // in (a page, a skip, an acknowledgement); a runbook's own recovery that nobody had
        // to look at ends on its last step's reply.
        if inc.phase != Phase::Recovered || inc.acked_by.is_some() {
            c.notice(Sink::Slack, notice.clone());
        }
        c.notice(
            Sink::Slack,
            Notice::State {
                change: StateChange::Resolved,
            },
        );
        c.follow_up(notice);
        let metrics = self.metrics.clone();
        pending.add(c, move || {
            IncidentResolved {
                incident_id: id,
                fingerprint: &inc.fingerprint,
                alertname: &inc.alertname,
                rule: inc.rule.as_deref(),
                time_to_recover: after,
                rto: inc.rto,
                origin: inc.origin.as_str(),
            }
            .emit(&metrics);
        });
        Ok(())
    }

    /// Adds a page to `c`: the decision, the Slack reply and the PagerDuty trigger. Once `c`
    /// is committed, the returned [`PageQueued::sent`] logs and counts it.
    fn page(
        &self,
        c: &mut Commit,
        inc: &IncidentRecord,
        who: Vec<Contact>,
        why: &str,
    ) -> PageQueued {
        let text = format!(
            "paging {}: {why}",
            if who.is_empty() {
                "nobody (no page list for this priority)".to_string()
            } else {
                crate::domain::notice::keys(&who)
            }
        );
        c.decision(DecisionKind::Page, Verdict::Continue, &text);
        let page = Notice::Page(Page {
            who,
            why: why.to_owned(),
            priority: inc.priority,
            alertname: inc.alertname.clone(),
            rule: inc.rule.clone(),
            target: inc.target.clone(),
            labels: inc.labels.clone(),
        });
        c.notice(Sink::Slack, page.clone());
        c.notice(Sink::PagerDuty, page);
        PageQueued {
            incident: inc.id,
            text,
        }
    }

    /// Frees the target when a runbook ends.
    fn release(&self, target: &crate::rules::TargetRef, incident_id: i64) {
        let key = target.key();
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if busy.get(&key) == Some(&incident_id) {
            busy.remove(&key);
        }
    }
}

/// The rule's first step, when it can start in the commit that starts the run: it changes no
/// container (the first that does is preceded by Alertmanager's answer, `recheck.rs`), it
/// does not wait for an approval (a restart resumes a waiting `approve` step from its stored
/// request, which is asked after the step starts), and no drill breaks the target before it.
fn first_step_in_commit<'r>(
    rule: &'r crate::rules::Rule,
    inc: &IncidentRecord,
) -> Option<&'r crate::rules::Step> {
    let step = rule.steps.first()?;
    let drill_breaks = inc.started.as_ref().is_some_and(|s| s.break_with.is_some());
    let waits = matches!(step.kind, crate::rules::StepKind::Approve { .. });
    (!step.kind.is_action() && !waits && !drill_breaks).then_some(step)
}

/// A page written into a commit, to log and count once that commit is stored.
#[must_use = "call sent() after the commit"]
struct PageQueued {
    incident: i64,
    text: String,
}

impl PageQueued {
    fn sent(self, metrics: &Metrics) {
        tracing::warn!(incident = self.incident, "{}", self.text);
        metrics.pages.inc();
    }
}

/// Emits the committed guard decisions (log line, metric, span attributes); the match is not
/// a guard and is not counted.
fn counted(metrics: &Metrics, id: i64, decisions: &[Decision]) {
    for d in decisions.iter().filter(|d| d.guard != DecisionKind::Match) {
        GuardDecided {
            incident_id: id,
            guard: d.guard.as_str(),
            verdict: d.verdict.as_str(),
            reason: &d.reason,
        }
        .emit(metrics);
    }
}

/// Who is paged for an incident: the priority's page list and the rule's owner.
fn paged(rules: &RuleSet, inc: &IncidentRecord) -> Vec<Contact> {
    let owner = inc
        .rule
        .as_deref()
        .and_then(|r| rules.get(r))
        .map(|r| r.owner.as_str());
    plan::paged(rules, inc.priority.unwrap_or(Priority::P2), owner)
}

#[cfg(test)]
mod tests;
