//! The engine against a recording executor and tokio's paused clock.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::domain::{RunPhase, TokioClock};
use crate::rules::{compile, Source, StepKind};

const RULES: &str = r#"
rules:
  - name: pg
    matchers: ['alertname="PostgresDown"']
    priority: P1
    rto: 30m
    owner: dba
    target: { service: postgres }
    limit: { runs: 2, per: 1h }
    steps:
      - diagnose: {}
      - restart: {}
      - wait_healthy: { within: 1m }
    on_failure:
      - logs: {}
  - name: disk
    matchers: ['alertname="DiskSpaceLow"']
    priority: P3
    rto: 1h
    owner: infra
    target: { none: true }
    steps:
      - diagnose: {}
  - name: svc
    matchers: ['alertname="ServiceDown"']
    priority: P2
    rto: 15m
    owner: infra
    target: { label: service, allow: [redis, backend] }
    limit: { runs: 5, per: 1h }
    steps:
      - restart: {}
      - wait: { duration: 10s }
  - name: redis-memory
    matchers: ['alertname="RedisMemoryHigh"']
    priority: P3
    rto: 15m
    owner: infra
    target: { service: redis }
    steps:
      - restart: {}
  - name: dry
    matchers: ['alertname="Dry"']
    priority: P4
    rto: 1h
    owner: infra
    dry_run: true
    target: { service: backend }
    steps:
      - restart: {}
"#;

/// Records every step it is asked to run; fails or hangs on the step kinds it is told to.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(String, String)>>,
    fail: Mutex<HashSet<&'static str>>,
    hang: Mutex<HashSet<&'static str>>,
}

impl Recorder {
    fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().unwrap().clone()
    }
    fn count(&self, step: &str) -> usize {
        self.calls().iter().filter(|(_, s)| s == step).count()
    }
}

#[async_trait]
impl StepExecutor for Recorder {
    async fn run(&self, ctx: &StepContext, step: &StepKind) -> Result<StepOutput, StepError> {
        let name = step.name();
        self.calls
            .lock()
            .unwrap()
            .push((ctx.target.key(), name.to_string()));
        if self.hang.lock().unwrap().contains(name) {
            std::future::pending::<()>().await;
        }
        if self.fail.lock().unwrap().contains(name) {
            return Err(StepError::Failed(format!("{name} failed on purpose")));
        }
        Ok(StepOutput::new(format!("{name} ok")))
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    /// One clock across restarts, as the wall clock is.
    clock: Arc<TokioClock>,
    engine: Arc<Engine>,
    exec: Arc<Recorder>,
    settings: GuardSettings,
}

fn rules() -> SharedRules {
    rules_of("test.yaml", RULES)
}

/// The shipped escalation policy and the rule file `text` (as `path`).
fn rules_of(path: &str, text: &str) -> SharedRules {
    let esc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rules/escalation.yaml"
    ))
    .unwrap();
    let set = compile(&[
        Source {
            path: "escalation.yaml".into(),
            text: esc,
        },
        Source {
            path: path.into(),
            text: text.into(),
        },
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(RwLock::new(Arc::new(set)))
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap()
}

impl Harness {
    fn new(settings: GuardSettings) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let exec = Arc::new(Recorder::default());
        let clock = Arc::new(TokioClock::starting_at(base_time()));
        let engine = Self::engine_on(&path, exec.clone(), settings.clone(), clock.clone());
        Harness {
            _dir: dir,
            dir: path,
            clock,
            engine,
            exec,
            settings,
        }
    }

    fn engine_on(
        dir: &std::path::Path,
        exec: Arc<Recorder>,
        settings: GuardSettings,
        clock: Arc<TokioClock>,
    ) -> Arc<Engine> {
        Engine::new(
            Arc::new(Store::open(dir).unwrap()),
            rules(),
            Outside::new(exec),
            clock,
            settings,
            Arc::new(Metrics::new()),
            Arc::new(Notify::new()),
        )
    }

    /// A new engine on the same store, as after a restart.
    fn restart(&mut self) {
        self.engine = Self::engine_on(
            &self.dir,
            self.exec.clone(),
            self.settings.clone(),
            self.clock.clone(),
        );
    }

    fn store(&self) -> &Store {
        self.engine.store()
    }

    /// Delivers one webhook with the given alerts: (labels, startsAt offset in minutes, status).
    async fn deliver(&self, alerts: &[(serde_json::Value, i64, &str)]) {
        deliver_only(self, alerts).await;
        self.engine.process_pending().unwrap();
        self.engine.wait_idle().await;
    }

    fn only_incident(&self) -> IncidentRecord {
        let all = self
            .store()
            .list_incidents(None, None, 100)
            .unwrap()
            .incidents;
        assert_eq!(all.len(), 1, "{all:#?}");
        all.into_iter().next().unwrap()
    }

    fn decisions(&self, id: i64) -> Vec<(String, String, String)> {
        self.store()
            .decisions(id)
            .unwrap()
            .into_iter()
            .map(|d| (d.guard.to_string(), d.verdict.to_string(), d.reason))
            .collect()
    }

    fn skipped_by(&self, id: i64) -> Option<(String, String)> {
        self.decisions(id)
            .into_iter()
            .find(|(g, v, _)| v == "skip" && g != "runbook")
            .map(|(g, _, r)| (g, r))
    }
}

fn pg() -> serde_json::Value {
    json!({"alertname": "PostgresDown", "service": "postgres"})
}

#[tokio::test(start_paused = true)]
async fn the_same_firing_delivered_ten_times_is_one_incident_and_one_runbook() {
    let h = Harness::new(GuardSettings::default());
    for _ in 0..10 {
        h.deliver(&[(pg(), 0, "firing")]).await;
    }
    let inc = h.only_incident();
    assert_eq!(
        (inc.deliveries, inc.state.as_str(), inc.phase.as_str()),
        (10, "open", "recovered")
    );
    assert_eq!(
        h.exec.calls(),
        vec![
            ("service:postgres".into(), "diagnose".into()),
            ("service:postgres".into(), "restart".into()),
            ("service:postgres".into(), "wait_healthy".into()),
        ]
    );
    let steps = h.store().steps(inc.id).unwrap();
    assert!(
        steps
            .iter()
            .all(|s| s.outcome == "ok" && s.ended_at.is_some()),
        "{steps:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn resolved_closes_the_incident_and_a_refire_opens_a_new_one() {
    let h = Harness::new(GuardSettings::default());
    h.deliver(&[(pg(), 0, "firing")]).await;
    h.deliver(&[(pg(), 0, "resolved")]).await;
    let inc = h.only_incident();
    assert_eq!(inc.state, "resolved");
    assert_eq!(inc.time_to_recover(), Some(Duration::from_secs(180)));
    let resolved = h
        .decisions(inc.id)
        .into_iter()
        .find(|(g, ..)| g == "resolved")
        .unwrap();
    assert_eq!(resolved.2, "resolved after 3m (within the RTO of 30m)");

    h.deliver(&[(pg(), 60, "firing")]).await;
    let open = h
        .store()
        .list_incidents(Some(crate::domain::IncidentState::Open), None, 10)
        .unwrap()
        .incidents;
    assert_eq!(open.len(), 1);
    assert_ne!(open[0].id, inc.id);
    assert_eq!(
        open[0].fingerprint, inc.fingerprint,
        "same labels, same fingerprint, new episode"
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limit_allows_exactly_runs_per_window_and_survives_a_restart() {
    let mut h = Harness::new(GuardSettings {
        flapping_firings: 100,
        ..Default::default()
    });
    for i in 0..4 {
        h.deliver(&[(pg(), i, "firing")]).await;
        h.deliver(&[(pg(), i, "resolved")]).await;
    }
    assert_eq!(h.exec.count("restart"), 2);
    let limited: Vec<_> = h
        .store()
        .list_incidents(None, None, 10)
        .unwrap()
        .incidents
        .into_iter()
        .filter_map(|i| h.skipped_by(i.id))
        .collect();
    assert_eq!(limited.len(), 2, "{limited:?}");
    for (guard, reason) in &limited {
        assert_eq!(guard, "rate_limit");
        assert!(reason.starts_with("rate limited: 2 of 2 runs for service:postgres in the last 1h; next run allowed in "), "{reason}");
    }

    // A restart rebuilds the limiter from the stored runs: still limited.
    h.restart();
    h.deliver(&[(pg(), 10, "firing")]).await;
    assert_eq!(h.exec.count("restart"), 2);

    // An hour later one run is allowed again.
    tokio::time::advance(Duration::from_secs(3601)).await;
    h.deliver(&[(pg(), 100, "firing")]).await;
    assert_eq!(h.exec.count("restart"), 3);
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_at_the_limit_gets_the_burst_then_one_run_an_hour_across_a_restart() {
    // pg allows 2 per hour: GCRA lets 2 through at once, then one per hour. A firing every
    // 20 minutes for 3 hours runs at 0, 20, 60, 120 and 180 minutes, and a restart at 70
    // minutes changes nothing (a window of the last hour's runs would allow 80 and 140).
    let mut h = Harness::new(GuardSettings {
        flapping_firings: 100,
        ..Default::default()
    });
    let mut ran = Vec::new();
    for i in 0..10 {
        let minute = i * 20;
        if minute == 80 {
            h.restart();
        }
        let before = h.exec.count("restart");
        h.deliver(&[(pg(), minute, "firing")]).await;
        if h.exec.count("restart") > before {
            ran.push(minute);
        }
        h.deliver(&[(pg(), minute, "resolved")]).await;
        tokio::time::advance(Duration::from_secs(20 * 60)).await;
    }
    let skips: Vec<_> = h
        .store()
        .list_incidents(None, None, 20)
        .unwrap()
        .incidents
        .into_iter()
        .filter_map(|i| h.skipped_by(i.id))
        .collect();
    assert_eq!(ran, [0, 20, 60, 120, 180], "{skips:#?}");
}

#[tokio::test(start_paused = true)]
async fn flapping_alerts_page_instead_of_acting() {
    let h = Harness::new(GuardSettings {
        flapping_firings: 3,
        ..Default::default()
    });
    let svc = json!({"alertname": "ServiceDown", "service": "redis"});
    for i in 0..3 {
        h.deliver(&[(svc.clone(), i, "firing")]).await;
        h.deliver(&[(svc.clone(), i, "resolved")]).await;
    }
    assert_eq!(h.exec.count("restart"), 2);
    let last = h
        .store()
        .list_incidents(None, None, 1)
        .unwrap()
        .incidents
        .remove(0);
    assert_eq!(last.phase, "escalated");
    let (guard, reason) = h.skipped_by(last.id).unwrap();
    assert_eq!(guard, "flapping");
    assert!(reason.contains("fired 3 times in the last 1h"), "{reason}");
    assert!(
        h.decisions(last.id)
            .iter()
            .any(|(g, _, r)| g == "page" && r.starts_with("paging oncall, infra")),
        "{:?}",
        h.decisions(last.id)
    );
}

#[tokio::test(start_paused = true)]
async fn dry_run_records_the_plan_and_touches_nothing() {
    let h = Harness::new(GuardSettings::default());
    h.deliver(&[(json!({"alertname": "Dry"}), 0, "firing")])
        .await;
    let inc = h.only_incident();
    assert_eq!(
        h.skipped_by(inc.id).unwrap(),
        (
            "dry_run".into(),
            "dry-run (the rule): would run restart on service:backend".into()
        )
    );
    assert!(h.exec.calls().is_empty());
    assert_eq!(inc.phase, "skipped");

    let h = Harness::new(GuardSettings {
        dry_run: true,
        ..Default::default()
    });
    h.deliver(&[(pg(), 0, "firing")]).await;
    assert!(h.exec.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failing_step_runs_on_failure_and_pages() {
    let h = Harness::new(GuardSettings::default());
    h.exec.fail.lock().unwrap().insert("restart");
    h.deliver(&[(pg(), 0, "firing")]).await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "failed");
    let steps: Vec<_> = h
        .store()
        .steps(inc.id)
        .unwrap()
        .into_iter()
        .map(|s| (s.phase.to_string(), s.kind, s.outcome.to_string()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("main".into(), "diagnose".into(), "ok".into()),
            ("main".into(), "restart".into(), "failed".into()),
            ("on_failure".into(), "logs".into(), "ok".into()),
        ]
    );
    let page = h
        .decisions(inc.id)
        .into_iter()
        .find(|(g, ..)| g == "page")
        .unwrap();
    assert_eq!(
        page.2,
        "paging oncall, dba: automation failed: step 2 (restart) failed: restart failed on purpose"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_step_times_out() {
    let h = Harness::new(GuardSettings::default());
    h.exec.hang.lock().unwrap().insert("wait_healthy");
    h.deliver(&[(pg(), 0, "firing")]).await;
    let inc = h.only_incident();
    let wait = h
        .store()
        .steps(inc.id)
        .unwrap()
        .into_iter()
        .find(|s| s.kind == "wait_healthy")
        .unwrap();
    assert_eq!(
        (wait.outcome.as_str(), wait.detail.as_str()),
        ("timed_out", "did not finish within 1m")
    );
    assert_eq!(inc.phase, "failed");
}

#[tokio::test(start_paused = true)]
async fn two_alerts_of_one_rule_and_target_run_once() {
    let h = Harness::new(GuardSettings::default());
    let a = json!({"alertname": "DiskSpaceLow", "mountpoint": "/"});
    let b = json!({"alertname": "DiskSpaceLow", "mountpoint": "/var/lib/docker"});
    h.deliver(&[(a, 0, "firing"), (b, 0, "firing")]).await;
    assert_eq!(h.exec.count("diagnose"), 1);
    let second = h
        .store()
        .list_incidents(None, None, 1)
        .unwrap()
        .incidents
        .remove(0);
    let (guard, reason) = h.skipped_by(second.id).unwrap();
    assert_eq!(guard, "dedup");
    assert!(
        reason.starts_with("incident #1 (same rule disk, same target none) is still open"),
        "{reason}"
    );
}

#[tokio::test(start_paused = true)]
async fn acting_reads_no_fact_past_a_dedup_skip_and_simulating_reads_them_all() {
    let h = Harness::new(GuardSettings::default());
    let a = json!({"alertname": "DiskSpaceLow", "mountpoint": "/"});
    h.deliver(&[(a, 0, "firing")]).await;
    let first = h.only_incident();
    assert_eq!(h.exec.count("diagnose"), 1);
    let now = h.clock.now();
    let q = |mode| FactsQuery {
        incident: first.id + 1,
        fingerprint: &first.fingerprint,
        rule: "disk",
        target: &crate::rules::TargetRef::None,
        service: None,
        now,
        flapping_since: now - chrono::Duration::hours(1),
        rule_since: now - chrono::Duration::hours(1),
        budget_since: now - chrono::Duration::hours(1),
        mode,
    };
    let live = Live {
        store: h.store(),
        busy: &HashMap::new(),
        deploys: &NoDeploys,
        fleet: None,
    };
    // Dedup, the first guard, skips: nothing past it is read.
    let act = live.facts(&q(Mode::Act)).unwrap();
    assert_eq!(
        act,
        GuardFacts {
            open_run: Some(first.id),
            ..GuardFacts::default()
        }
    );
    // Simulating shows every guard: every fact is read.
    let sim = Recorded(h.store()).facts(&q(Mode::Simulate)).unwrap();
    assert_eq!(sim.open_run, Some(first.id));
    assert_eq!(sim.firings, 2, "its stored firing and the simulated one");
    assert_eq!((sim.rule_runs.len(), sim.all_runs.len()), (1, 1));
    assert!(sim.rule_limit.is_some() && sim.budget_limit.is_some());
}

#[tokio::test(start_paused = true)]
async fn one_runbook_per_container_at_a_time_and_others_run_concurrently() {
    let h = Harness::new(GuardSettings::default());
    let redis = (
        json!({"alertname": "ServiceDown", "service": "redis"}),
        0,
        "firing",
    );
    let redis_memory = (json!({"alertname": "RedisMemoryHigh"}), 0, "firing");
    let backend = (
        json!({"alertname": "ServiceDown", "service": "backend"}),
        0,
        "firing",
    );
    // All three arrive together; the first redis runbook is still in its 10s wait when the
    // second rule wants the same container.
    h.deliver(&[redis, redis_memory, backend]).await;
    assert_eq!(
        h.exec
            .calls()
            .iter()
            .filter(|(t, s)| t == "service:redis" && s == "restart")
            .count(),
        1
    );
    assert_eq!(
        h.exec
            .calls()
            .iter()
            .filter(|(t, s)| t == "service:backend" && s == "restart")
            .count(),
        1
    );
    let busy = h
        .store()
        .list_incidents(None, None, 10)
        .unwrap()
        .incidents
        .into_iter()
        .filter_map(|i| h.skipped_by(i.id))
        .collect::<Vec<_>>();
    assert_eq!(busy.len(), 1, "{busy:?}");
    assert_eq!(busy[0].0, "busy");
    assert!(
        busy[0].1.contains("is still running on service:redis"),
        "{busy:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_global_budget_opens_the_breaker() {
    let h = Harness::new(GuardSettings {
        budget_runs: 2,
        ..Default::default()
    });
    for svc in ["redis", "backend"] {
        h.deliver(&[(
            json!({"alertname": "ServiceDown", "service": svc}),
            0,
            "firing",
        )])
        .await;
    }
    h.deliver(&[(pg(), 0, "firing")]).await;
    let last = h
        .store()
        .list_incidents(None, None, 1)
        .unwrap()
        .incidents
        .remove(0);
    let (guard, reason) = h.skipped_by(last.id).unwrap();
    assert_eq!(guard, "budget");
    assert!(
        reason.starts_with("global action budget spent: 2 runbooks in 10m"),
        "{reason}"
    );
    assert_eq!(last.phase, "escalated");
}

#[tokio::test(start_paused = true)]
async fn label_targets_outside_the_allowlist_are_refused_and_paged() {
    let h = Harness::new(GuardSettings::default());
    h.deliver(&[(
        json!({"alertname": "ServiceDown", "service": "postgres"}),
        0,
        "firing",
    )])
    .await;
    let inc = h.only_incident();
    assert!(h.exec.calls().is_empty());
    let (guard, reason) = h.skipped_by(inc.id).unwrap();
    assert_eq!(guard, "target");
    assert!(reason.contains("outside the rule's allowlist"), "{reason}");
    assert_eq!(inc.phase, "escalated");
}

#[tokio::test(start_paused = true)]
async fn after_a_crash_new_incidents_are_handled_and_interrupted_runbooks_are_not_rerun() {
    let mut h = Harness::new(GuardSettings::default());
    // Crash 1: the delivery is applied but the engine died before acting on it.
    let body = json!({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": pg(), "startsAt": base_time().to_rfc3339()}]});
    let bytes = body.to_string().into_bytes();
    let parsed = crate::alert::parse_webhook(&bytes).unwrap();
    h.store()
        .ingest(&bytes, &parsed, h.engine.clock.now())
        .unwrap();
    h.restart();
    h.engine.recover().unwrap();
    h.engine.process_pending().unwrap();
    h.engine.wait_idle().await;
    assert_eq!(h.exec.count("restart"), 1);
    // A crash after acting but before the queue entry was removed acts no second time.
    let inc = h.only_incident();
    h.store()
        .conn()
        .execute(
            "INSERT INTO engine_queue (incident_id, kind) VALUES (?1, 'opened')",
            [inc.id],
        )
        .unwrap();
    h.restart();
    h.engine.process_pending().unwrap();
    h.engine.wait_idle().await;
    assert_eq!(h.exec.count("restart"), 1, "handled once");

    // Crash 2: a runbook was mid-step.
    let inc = h.only_incident();
    h.store()
        .commit(&{
            let mut c = crate::store::Commit::new(inc.id, Utc::now());
            c.phase_silently(Phase::Remediating);
            c
        })
        .unwrap();
    h.store()
        .start_step(inc.id, RunPhase::Main, 1, "restart", Utc::now())
        .unwrap();
    h.restart();
    h.engine.recover().unwrap();
    h.engine.wait_idle().await;
    assert_eq!(h.exec.count("restart"), 1, "never run twice for one firing");
    let inc = h.store().incident(inc.id).unwrap().unwrap();
    assert_eq!(inc.phase, "interrupted");
    assert!(h
        .store()
        .steps(inc.id)
        .unwrap()
        .iter()
        .any(|s| s.outcome == "interrupted"));
    assert!(h
        .decisions(inc.id)
        .iter()
        .any(|(g, _, r)| g == "page" && r.contains("interrupted by a restart")));
}

#[tokio::test(start_paused = true)]
async fn tiers_fire_at_their_share_of_the_rto_once_across_restarts_and_not_after_an_ack() {
    let mut h = Harness::new(GuardSettings::default());
    h.deliver(&[(pg(), 0, "firing")]).await;
    let id = h.only_incident().id;
    // P1: the engineering lead at half the 30m RTO.
    tokio::time::advance(Duration::from_secs(14 * 60)).await;
    assert_eq!(h.engine.escalation_tick().unwrap(), 0);
    tokio::time::advance(Duration::from_secs(2 * 60)).await;
    assert_eq!(h.engine.escalation_tick().unwrap(), 1);
    assert_eq!(h.engine.escalation_tick().unwrap(), 0, "fired once");
    h.restart();
    assert_eq!(
        h.engine.escalation_tick().unwrap(),
        0,
        "a restart does not fire it again"
    );
    let tier = h
        .decisions(id)
        .into_iter()
        .find(|(g, ..)| g == "tier")
        .unwrap();
    assert_eq!(tier.2, "escalation: still unacknowledged and unresolved after 15m (50% of the RTO of 30m); telling eng-lead");
    // The 100% tier is for customer-impacting rules only; this one is not.
    tokio::time::advance(Duration::from_secs(20 * 60)).await;
    assert_eq!(h.engine.escalation_tick().unwrap(), 0);

    // A second incident, acknowledged before its first tier: nothing fires.
    h.deliver(&[(
        json!({"alertname": "PostgresDown", "service": "postgres", "n": "2"}),
        5,
        "firing",
    )])
    .await;
    let second = h
        .store()
        .list_incidents(None, None, 1)
        .unwrap()
        .incidents
        .remove(0)
        .id;
    assert_eq!(
        h.engine.acknowledge(second, "alice", None).unwrap(),
        Some(true)
    );
    assert_eq!(
        h.engine.acknowledge(second, "bob", None).unwrap(),
        Some(false)
    );
    tokio::time::advance(Duration::from_secs(40 * 60)).await;
    assert_eq!(h.engine.escalation_tick().unwrap(), 0);
    assert_eq!(h.engine.acknowledge(999, "x", None).unwrap(), None);
}

/// Every decision, notice and step of an incident, as counts by what they say: a commit
/// retried after a failure must not leave any of them twice.
fn journal(h: &Harness, id: i64) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut decisions: Vec<String> = h
        .decisions(id)
        .into_iter()
        .map(|(g, v, _)| format!("{g}:{v}"))
        .collect();
    let mut messages: Vec<String> = h
        .store()
        .messages(id)
        .unwrap()
        .into_iter()
        .map(|m| format!("{}:{}:{}", m.sink, m.kind, m.text))
        .collect();
    let mut steps: Vec<String> = h
        .store()
        .steps(id)
        .unwrap()
        .into_iter()
        .map(|s| format!("{}:{}:{}", s.phase, s.seq, s.kind))
        .collect();
    decisions.sort();
    messages.sort();
    steps.sort();
    (decisions, messages, steps)
}

/// Handles the queue until it is empty, as the engine's loop does after a failed pass.
async fn settle(h: &Harness) {
    for _ in 0..10 {
        let done = h.engine.process_pending().is_ok();
        h.engine.wait_idle().await;
        if done && h.store().backlog().unwrap().engine == 0 {
            return;
        }
    }
    panic!("the queue never emptied");
}

/// Stores one webhook with the given alerts, without handling the queue.
async fn deliver_only(h: &Harness, alerts: &[(serde_json::Value, i64, &str)]) {
    let alerts: Vec<_> = alerts
        .iter()
        .map(|(labels, starts, status)| {
            let starts_at = base_time() + chrono::Duration::minutes(*starts);
            let ends_at = if *status == "resolved" {
                starts_at + chrono::Duration::minutes(3)
            } else {
                Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap()
            };
            json!({
                "status": status, "labels": labels, "annotations": {},
                "startsAt": starts_at.to_rfc3339(), "endsAt": ends_at.to_rfc3339(),
            })
        })
        .collect();
    let body = json!({"version": "4", "status": "firing", "alerts": alerts, "groupKey": "{}:{}"})
        .to_string()
        .into_bytes();
    let n = crate::alert::parse_webhook(&body).unwrap();
    h.store().ingest(&body, &n, h.engine.clock.now()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failure_at_any_commit_of_the_opened_path_leaves_everything_once() {
    // Three paths: a runbook that recovers, one that fails into on_failure and pages, and a
    // dry-run skip; then the resolution. First a clean run, to count its commits and keep
    // its journal; then one run per commit, that commit failing once.
    let run = |fail: Option<usize>| async move {
        let h = Harness::new(GuardSettings::default());
        let before = h.store().commits();
        if let Some(k) = fail {
            h.store().fail_commits([k]);
        }
        deliver_only(&h, &[(pg(), 0, "firing")]).await;
        settle(&h).await;
        h.exec.fail.lock().unwrap().insert("restart");
        deliver_only(
            &h,
            &[(
                json!({"alertname": "ServiceDown", "service": "redis"}),
                1,
                "firing",
            )],
        )
        .await;
        settle(&h).await;
        deliver_only(&h, &[(json!({"alertname": "Dry"}), 2, "firing")]).await;
        settle(&h).await;
        deliver_only(&h, &[(pg(), 0, "resolved")]).await;
        settle(&h).await;
        let commits = h.store().commits() - before;
        assert_eq!(h.store().faults_left(), 0, "the injected failure happened");
        let ids: Vec<i64> = h
            .store()
            .list_incidents(None, None, 10)
            .unwrap()
            .incidents
            .iter()
            .map(|i| i.id)
            .collect();
        let journals: Vec<_> = ids.iter().map(|id| journal(&h, *id)).collect();
        let phases: Vec<String> = ids
            .iter()
            .map(|id| h.store().incident(*id).unwrap().unwrap().phase.to_string())
            .collect();
        (commits, journals, phases, h.exec.calls())
    };
    let (commits, clean, phases, calls) = run(None).await;
    assert_eq!(phases, ["skipped", "failed", "recovered"]);
    assert!(commits >= 10, "{commits} commits");
    for k in 0..commits {
        let (_, journals, p, c) = run(Some(k)).await;
        assert_eq!(p, phases, "failing commit {k}");
        assert_eq!(
            c, calls,
            "failing commit {k}: every runbook ran once, no step twice"
        );
        for (got, want) in journals.iter().zip(&clean) {
            assert_eq!(got.0, want.0, "failing commit {k}: decisions");
            assert_eq!(got.2, want.2, "failing commit {k}: steps");
            // Texts carry times that move with the retry's backoff; kinds must match exactly.
            let kinds = |m: &Vec<String>| -> Vec<String> {
                m.iter()
                    .map(|s| s.splitn(3, ':').take(2).collect::<Vec<_>>().join(":"))
                    .collect()
            };
            assert_eq!(kinds(&got.1), kinds(&want.1), "failing commit {k}: notices");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_first_step_that_asks_nothing_starts_in_the_commit_that_starts_the_run() {
    let h = Harness::new(GuardSettings::default());
    // pg's first step is diagnose: it changes no container, nothing is asked before it.
    deliver_only(&h, &[(pg(), 0, "firing")]).await;
    h.engine.process_pending().unwrap();
    // Not yet awaited: the runbook's task has not run, the commit alone wrote the step.
    let pg_id = h.only_incident().id;
    let run = h.store().runs_since(base_time(), None).unwrap();
    let steps = h.store().steps(pg_id).unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.phase, s.seq, s.kind.as_str(), s.outcome))
            .collect::<Vec<_>>(),
        [(
            RunPhase::Main,
            0,
            "diagnose",
            crate::domain::StepOutcome::Running
        )],
        "{steps:#?}"
    );
    assert_eq!(run.len(), 1);
    assert!(steps[0].started_at >= run[0].started_at);
    assert!(h.exec.calls().is_empty(), "recorded before it acts");
    h.engine.wait_idle().await;
    // The runbook took that row as its first step's: once, run once.
    let steps = h.store().steps(pg_id).unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.seq, s.kind.as_str(), s.outcome))
            .collect::<Vec<_>>(),
        [
            (0, "diagnose", crate::domain::StepOutcome::Ok),
            (1, "restart", crate::domain::StepOutcome::Ok),
            (2, "wait_healthy", crate::domain::StepOutcome::Ok),
        ]
    );
    assert_eq!(h.exec.count("diagnose"), 1);

    // svc's first step is a restart: Alertmanager would be asked first, so it is not.
    deliver_only(
        &h,
        &[(
            json!({"alertname": "ServiceDown", "service": "redis"}),
            1,
            "firing",
        )],
    )
    .await;
    h.engine.process_pending().unwrap();
    let svc_id = *incident_ids(&h).iter().max().unwrap();
    assert_ne!(svc_id, pg_id);
    assert_eq!(
        h.store().incident(svc_id).unwrap().unwrap().phase,
        Phase::Remediating
    );
    assert!(h.store().steps(svc_id).unwrap().is_empty());
    h.engine.wait_idle().await;
    assert_eq!(h.store().steps(svc_id).unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_engines_pass_lets_the_intake_writer_go_on() {
    let h = Harness::new(GuardSettings::default());
    deliver_only(&h, &[(pg(), 0, "firing")]).await;
    // As the intake writer does after its commit: the writer gives way from here on.
    h.store().precedence().queued(1);
    assert!(h.store().precedence().engine_first());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(h.engine.clone().run(async {
        let _ = stopped.await;
    }));
    for _ in 0..100 {
        if !h.store().precedence().engine_first() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !h.store().precedence().engine_first(),
        "the pass let the writer go on"
    );
    assert_eq!(h.store().backlog().unwrap().engine, 0);
    let _ = stop.send(());
    run.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn incidents_an_older_version_matched_get_their_rto_and_told_list_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/store-v6/remediator.db"
        ),
        dir.path().join(crate::store::DB_FILE),
    )
    .unwrap();
    let shipped = crate::loader::load_rules(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rules"
    )))
    .unwrap();
    let engine = Engine::new(
        Arc::new(Store::open(dir.path()).unwrap()),
        Arc::new(RwLock::new(Arc::new(shipped))),
        Outside::new(Arc::new(Recorder::default())),
        Arc::new(TokioClock::starting_at(base_time())),
        GuardSettings::default(),
        Arc::new(Metrics::new()),
        Arc::new(Notify::new()),
    );
    let before = engine.store().incident(2).unwrap().unwrap();
    assert_eq!((before.rto, before.told.len()), (None, 0));
    engine.recover().unwrap();
    let after = engine.store().incident(2).unwrap().unwrap();
    assert_eq!(after.rule.as_deref(), Some("disk-space-low"));
    assert!(after.rto.is_some());
    assert!(
        after.told.iter().any(|c| c.key == "infra"),
        "{:?}",
        after.told
    );
    let no_rule = engine.store().incident(4).unwrap().unwrap();
    assert_eq!((no_rule.rto, no_rule.told.len()), (None, 0));
}

#[tokio::test(start_paused = true)]
async fn a_store_that_refuses_a_runbooks_records_hands_the_incident_to_a_human() {
    let h = Harness::new(GuardSettings::default());
    // Commit 0 decides and starts the run, 1 starts the first step; from its end on the
    // store refuses 10 times in a row: more than the runbook's retries, then the hand-over
    // gets through on its second try.
    h.store().fail_commits(2..12);
    h.deliver(&[(pg(), 0, "firing")]).await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "interrupted");
    assert_eq!(
        h.exec.calls().len(),
        1,
        "nothing ran after the store failed"
    );
    let decisions: Vec<String> = h.decisions(inc.id).into_iter().map(|d| d.0).collect();
    assert_eq!(
        decisions.iter().filter(|d| *d == "recovery").count(),
        1,
        "{decisions:?}"
    );
    assert_eq!(
        decisions.iter().filter(|d| *d == "page").count(),
        1,
        "{decisions:?}"
    );
    assert_eq!(h.store().faults_left(), 0);
}

/// The incidents' ids, oldest first.
fn incident_ids(h: &Harness) -> Vec<i64> {
    let page = h.store().list_incidents(None, None, 100).unwrap();
    page.incidents.iter().rev().map(|i| i.id).collect()
}

/// The engine queue's ids, oldest first.
fn queue_ids(h: &Harness) -> Vec<i64> {
    let entries = h.store().queued_events(100).unwrap();
    entries.into_iter().map(|q| q.unwrap().id).collect()
}

fn metric(h: &Harness, line: &str) -> Option<String> {
    h.engine
        .metrics
        .render()
        .lines()
        .find(|l| l.starts_with(line))
        .map(str::to_string)
}

#[tokio::test(start_paused = true)]
async fn a_damaged_row_sends_its_queue_entry_to_quarantine_and_the_next_incident_still_runs() {
    use crate::telemetry::testing::traced;
    let h = Harness::new(GuardSettings::default());
    let backend = json!({"alertname": "ServiceDown", "service": "backend"});
    // 1: its incident's labels are damaged; 2: its queue entry is; 3: nothing is.
    deliver_only(&h, &[(pg(), 0, "firing")]).await;
    deliver_only(&h, &[(json!({"alertname": "Dry"}), 0, "firing")]).await;
    deliver_only(&h, &[(backend, 0, "firing")]).await;
    let (ids, queue) = (incident_ids(&h), queue_ids(&h));
    h.store()
        .conn()
        .execute(
            "UPDATE incidents SET labels = '{not json' WHERE id = ?1",
            [ids[0]],
        )
        .unwrap();
    h.store()
        .conn()
        .execute(
            "UPDATE engine_queue SET trace = x'00ff' WHERE id = ?1",
            [queue[1]],
        )
        .unwrap();

    let (_, lines) = traced(|| assert_eq!(h.engine.process_pending().unwrap(), 1));
    h.engine.wait_idle().await;

    // The third incident ran its runbook and its thread was told.
    assert_eq!(
        h.exec.calls(),
        [("service:backend".into(), "restart".into())]
    );
    let third = h.store().incident(ids[2]).unwrap().unwrap();
    assert_eq!(third.phase, "recovered");
    let told: Vec<String> = h
        .store()
        .messages(ids[2])
        .unwrap()
        .into_iter()
        .map(|m| m.kind)
        .collect();
    assert!(told.iter().any(|k| k == "opened"), "{told:?}");

    // The other two left the queue into the quarantine with their errors; nothing decided.
    assert_eq!(h.store().backlog().unwrap().engine, 0);
    let q = h.store().quarantined(10).unwrap();
    assert_eq!(q.count, 2);
    let (labels, entry) = (&q.latest[1], &q.latest[0]);
    assert_eq!(
        (
            labels.source_table.as_str(),
            labels.row_id,
            labels.incident_id,
            labels.queue_id
        ),
        ("incidents", ids[0], Some(ids[0]), Some(queue[0]))
    );
    assert!(labels.error.contains("column labels"), "{}", labels.error);
    assert_eq!(
        (
            entry.source_table.as_str(),
            entry.row_id,
            entry.incident_id,
            entry.queue_id
        ),
        ("engine_queue", queue[1], Some(ids[1]), Some(queue[1]))
    );
    assert!(entry.error.contains("column trace"), "{}", entry.error);
    for id in &ids[..2] {
        assert!(h.decisions(*id).is_empty());
        assert!(h.store().messages(*id).unwrap().is_empty());
    }
    assert_eq!(
        metric(&h, "remediator_quarantined_rows_total{table=\"incidents\"}").as_deref(),
        Some("remediator_quarantined_rows_total{table=\"incidents\"} 1")
    );
    assert_eq!(
        metric(
            &h,
            "remediator_quarantined_rows_total{table=\"engine_queue\"}"
        )
        .as_deref(),
        Some("remediator_quarantined_rows_total{table=\"engine_queue\"} 1")
    );
    // Told at error level, with the row and the way back.
    let told: Vec<_> = lines
        .iter()
        .filter(|l| l["level"] == "ERROR" && l["table"] == "incidents")
        .collect();
    assert_eq!(told.len(), 1, "{lines:#?}");
    assert_eq!(told[0]["row"], ids[0]);
    assert_eq!(told[0]["span"]["name"], "incident");
    let remedy = told[0]["remedy"].as_str().unwrap();
    assert!(
        remedy.contains(&format!(
            "INSERT INTO engine_queue (incident_id, kind, trace) SELECT incident_id, kind, trace FROM quarantine WHERE id = {}",
            labels.id
        )),
        "{remedy}"
    );

    // Repaired and queued again as the log says: handled like any other.
    h.store()
        .conn()
        .execute(
            "UPDATE incidents SET labels = ?2 WHERE id = ?1",
            rusqlite::params![ids[0], pg().to_string()],
        )
        .unwrap();
    let n = labels.id;
    h.store()
        .conn()
        .execute_batch(&format!(
            "INSERT INTO engine_queue (incident_id, kind, trace) SELECT incident_id, kind, trace FROM quarantine WHERE id = {n};
             DELETE FROM quarantine WHERE id = {n};"
        ))
        .unwrap();
    assert_eq!(h.engine.process_pending().unwrap(), 1);
    h.engine.wait_idle().await;
    assert_eq!(h.exec.count("diagnose"), 1);
    assert_eq!(
        h.store().incident(ids[0]).unwrap().unwrap().phase,
        "recovered"
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_failure_while_quarantining_stops_the_pass_and_the_retry_finishes_it() {
    let h = Harness::new(GuardSettings::default());
    deliver_only(&h, &[(pg(), 0, "firing")]).await;
    deliver_only(
        &h,
        &[(
            json!({"alertname": "ServiceDown", "service": "backend"}),
            0,
            "firing",
        )],
    )
    .await;
    let queue = queue_ids(&h);
    // The CHECK refuses that word: damage it the way a disk would, past the check.
    h.store()
        .conn()
        .execute_batch(&format!(
            "PRAGMA ignore_check_constraints = ON;
             UPDATE engine_queue SET kind = 'reopened' WHERE id = {};
             PRAGMA ignore_check_constraints = OFF;",
            queue[0]
        ))
        .unwrap();
    // The quarantine's commit is the pass's first.
    h.store().fail_commits([0]);
    assert!(matches!(
        h.engine.process_pending(),
        Err(StoreError::Injected(_))
    ));
    assert_eq!(queue_ids_raw(&h), queue, "nothing left the queue");
    assert_eq!(h.store().quarantined(10).unwrap().count, 0);
    assert!(h.exec.calls().is_empty(), "the pass stopped there");

    settle(&h).await;
    let q = h.store().quarantined(10).unwrap();
    assert_eq!(q.count, 1);
    assert!(
        q.latest[0]
            .error
            .contains("column kind: \"reopened\" is neither opened nor resolved"),
        "{}",
        q.latest[0].error
    );
    assert_eq!(h.exec.count("restart"), 1, "the next entry ran");
}

/// The engine queue's ids as stored, damaged entries too.
fn queue_ids_raw(h: &Harness) -> Vec<i64> {
    let conn = h.store().conn();
    let mut stmt = conn
        .prepare("SELECT id FROM engine_queue ORDER BY id")
        .unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

#[tokio::test(start_paused = true)]
async fn the_tiers_pass_over_a_damaged_incident_once_and_the_others_escalate() {
    use crate::telemetry::testing::traced;
    let h = Harness::new(GuardSettings::default());
    h.deliver(&[(pg(), 0, "firing")]).await;
    h.deliver(&[(
        json!({"alertname": "PostgresDown", "service": "postgres", "n": "2"}),
        0,
        "firing",
    )])
    .await;
    let ids = incident_ids(&h);
    h.store()
        .conn()
        .execute(
            "UPDATE incidents SET labels = '{not json' WHERE id = ?1",
            [ids[0]],
        )
        .unwrap();
    // P1: the engineering lead at half the 30m RTO.
    tokio::time::advance(Duration::from_secs(16 * 60)).await;
    let (_, lines) = traced(|| {
        assert_eq!(h.engine.escalation_tick().unwrap(), 1, "the other fires");
        for _ in 0..3 {
            assert_eq!(h.engine.escalation_tick().unwrap(), 0);
        }
    });
    assert!(h.decisions(ids[1]).iter().any(|(g, ..)| g == "tier"));
    assert!(!h.decisions(ids[0]).iter().any(|(g, ..)| g == "tier"));
    let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert_eq!(errors.len(), 1, "told once, not every tick: {errors:#?}");
    assert_eq!(
        (&errors[0]["table"], &errors[0]["row"]),
        (&json!("incidents"), &json!(ids[0]))
    );
    let q = h.store().quarantined(10).unwrap();
    assert_eq!(q.count, 1);
    assert_eq!(
        (
            q.latest[0].source_table.as_str(),
            q.latest[0].row_id,
            q.latest[0].queue_id
        ),
        ("incidents", ids[0], None)
    );
    assert_eq!(
        metric(&h, "remediator_quarantined_rows_total{table=\"incidents\"}").as_deref(),
        Some("remediator_quarantined_rows_total{table=\"incidents\"} 1")
    );
}

#[tokio::test(start_paused = true)]
async fn crash_recovery_passes_over_a_damaged_incident_and_interrupts_the_others() {
    let mut h = Harness::new(GuardSettings::default());
    deliver_only(&h, &[(pg(), 0, "firing")]).await;
    deliver_only(
        &h,
        &[(
            json!({"alertname": "ServiceDown", "service": "redis"}),
            0,
            "firing",
        )],
    )
    .await;
    let ids = incident_ids(&h);
    for id in &ids {
        let mut c = crate::store::Commit::new(*id, Utc::now());
        c.phase_silently(Phase::Remediating);
        h.store().commit(&c).unwrap();
    }
    h.store()
        .conn()
        .execute(
            "UPDATE incidents SET labels = '{not json' WHERE id = ?1",
            [ids[0]],
        )
        .unwrap();
    h.restart();
    h.engine.recover().unwrap();
    assert_eq!(
        h.store().incident(ids[1]).unwrap().unwrap().phase,
        "interrupted"
    );
    assert_eq!(
        h.store().incidents_in_phase(Phase::Remediating).unwrap(),
        [ids[0]]
    );
    let q = h.store().quarantined(10).unwrap();
    assert_eq!((q.count, q.latest[0].row_id), (1, ids[0]));
    // Another start meets it again: recorded once.
    h.restart();
    h.engine.recover().unwrap();
    assert_eq!(h.store().quarantined(10).unwrap().count, 1);
}

#[tokio::test(start_paused = true)]
async fn a_damaged_notice_or_incident_holds_its_own_messages_and_the_others_are_delivered() {
    use crate::notify::outbox::Deliverer;
    use crate::notify::{PagerDutySettings, SlackSettings};
    let h = Harness::new(GuardSettings::default());
    for svc in ["redis", "backend"] {
        h.deliver(&[(
            json!({"alertname": "ServiceDown", "service": svc}),
            0,
            "firing",
        )])
        .await;
    }
    h.deliver(&[(pg(), 0, "firing")]).await;
    let ids = incident_ids(&h);
    // 1: its first message's notice is damaged; 2: its incident's labels; 3: nothing.
    let first = h.store().messages(ids[0]).unwrap()[0].id;
    h.store()
        .conn()
        .execute(
            "UPDATE outbox SET notice = '{\"kind\": \"opened\"' WHERE id = ?1",
            [first],
        )
        .unwrap();
    h.store()
        .conn()
        .execute(
            "UPDATE incidents SET labels = '[1, 2]' WHERE id = ?1",
            [ids[1]],
        )
        .unwrap();
    let deliverer = Deliverer::new(
        h.engine.store().clone(),
        h.engine.clock.clone(),
        h.engine.metrics.clone(),
        &SlackSettings::default(),
        &PagerDutySettings::default(),
        Default::default(),
    )
    .unwrap();
    // Logged only (no token): every message it can read is delivered at once.
    while deliverer.deliver_due().await.unwrap() > 0 {}

    let pending = |id: i64| -> Vec<(String, Option<String>)> {
        let all = h.store().messages(id).unwrap();
        all.into_iter()
            .filter(|m| m.delivered_at.is_none())
            .map(|m| (m.kind, m.last_error))
            .collect()
    };
    assert_eq!(
        pending(ids[2]),
        [],
        "the third incident's messages all went"
    );
    assert!(!h.store().messages(ids[2]).unwrap().is_empty());
    // The first: held at its damaged message, the later ones behind it.
    let held = pending(ids[0]);
    assert_eq!(held.len(), h.store().messages(ids[0]).unwrap().len());
    assert!(held[0].1.as_deref().unwrap().starts_with(&format!(
        "row {first} of table outbox is damaged (column notice:"
    )));
    assert!(held[1..].iter().all(|(_, e)| e.is_none()));
    // The second: its first message held with its incident's error.
    let held = pending(ids[1]);
    assert!(held[0].1.as_deref().unwrap().starts_with(&format!(
        "row {} of table incidents is damaged (column labels:",
        ids[1]
    )));
    let blocked = h.store().outbox_blocked().unwrap();
    assert_eq!(
        blocked.iter().map(|b| b.messages).sum::<i64>(),
        2,
        "{blocked:?}"
    );
    for table in ["outbox", "incidents"] {
        let line = format!("remediator_quarantined_rows_total{{table=\"{table}\"}}");
        assert_eq!(metric(&h, &line), Some(format!("{line} 1")));
    }
}

fn pause_of(
    h: &Harness,
    rule: Option<&str>,
    service: Option<&str>,
    by: &str,
    hours: u64,
) -> crate::store::PauseRecord {
    let p = crate::domain::NewPause::lasting(
        crate::domain::PauseScope {
            rule: rule.map(Into::into),
            service: service.map(Into::into),
        },
        by,
        "db maintenance",
        h.engine.clock.now(),
        Duration::from_secs(hours * 3600),
        "for",
    )
    .unwrap();
    h.store().add_pause(&p).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_paused_incident_is_told_and_escalates_without_its_runbook_and_the_next_one_after_the_pause_runs(
) {
    let h = Harness::new(GuardSettings::default());
    // Two pauses cover pg on postgres (the one ending last is told); one covers another
    // service only.
    pause_of(&h, Some("pg"), None, "bob", 1);
    pause_of(&h, None, Some("postgres"), "alice", 2);
    pause_of(&h, None, Some("redis"), "carol", 5);
    h.deliver(&[(pg(), 0, "firing")]).await;
    let inc = h.only_incident();
    assert_eq!(
        (inc.state.as_str(), inc.phase.as_str()),
        ("open", "skipped")
    );
    assert_eq!(
        h.skipped_by(inc.id).unwrap(),
        (
            "pause".into(),
            "paused by alice until 05:00 UTC: db maintenance".into()
        )
    );
    assert!(h.exec.calls().is_empty(), "{:?}", h.exec.calls());
    // Told: the root and the skip, in Slack; nobody paged for a pause.
    let messages: Vec<_> = h
        .store()
        .messages(inc.id)
        .unwrap()
        .into_iter()
        .map(|m| (m.sink.to_string(), m.kind, m.text))
        .collect();
    assert_eq!(messages[0].0, "slack");
    assert_eq!(messages[0].1, "opened");
    assert!(
        messages
            .iter()
            .any(|(s, k, t)| s == "slack" && k == "decision" && t.contains("paused by alice")),
        "{messages:#?}"
    );
    assert!(
        messages.iter().all(|(s, k, _)| s == "slack" && k != "page"),
        "{messages:#?}"
    );
    // Still escalates: the P1 tier at half the 30m RTO fires for the paused incident.
    tokio::time::advance(Duration::from_secs(16 * 60)).await;
    assert_eq!(h.engine.escalation_tick().unwrap(), 1);
    assert!(h.decisions(inc.id).iter().any(|(g, ..)| g == "tier"));

    // The pauses end by themselves: two hours on, nobody resumed them, the next one runs.
    tokio::time::advance(Duration::from_secs(2 * 3600 - 16 * 60)).await;
    assert_eq!(
        h.store()
            .active_pause("pg", Some("postgres"), h.engine.clock.now())
            .unwrap(),
        None
    );
    h.deliver(&[(pg(), 125, "firing")]).await;
    assert_eq!(h.exec.count("restart"), 1, "{:?}", h.exec.calls());
    let states: Vec<_> = h
        .store()
        .pauses(
            crate::store::PauseListing::All { limit: 10 },
            h.engine.clock.now(),
        )
        .unwrap()
        .into_iter()
        .map(|p| (p.by, p.state.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("carol".into(), "active"),
            ("alice".into(), "expired"),
            ("bob".into(), "expired")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn simulate_shows_the_pause_that_would_skip_the_runbook() {
    let h = Harness::new(GuardSettings::default());
    pause_of(&h, Some("pg"), None, "alice", 2);
    let rules = rules();
    let rules = rules.read().unwrap().clone();
    let labels: crate::alert::Labels = serde_json::from_value(pg()).unwrap();
    let p = plan(
        &labels,
        "ab",
        0,
        &rules,
        &GuardSettings::default(),
        &Recorded(h.store()),
        h.engine.clock.now(),
        Mode::Simulate,
    )
    .unwrap();
    let pause = p
        .decisions
        .iter()
        .find(|d| d.guard == DecisionKind::Pause)
        .unwrap();
    assert_eq!(
        (pause.verdict, pause.reason.as_str()),
        (
            Verdict::Skip,
            "paused by alice until 05:00 UTC: db maintenance"
        )
    );
    assert!(matches!(p.action, Action::Skip { pages: false, .. }));
}

#[tokio::test(start_paused = true)]
async fn a_pause_from_an_incident_covers_its_rule_on_its_service_for_an_hour() {
    let h = Harness::new(GuardSettings::default());
    let redis = |n: &str| json!({"alertname": "ServiceDown", "service": "redis", "n": n});
    h.deliver(&[(redis("1"), 0, "firing")]).await;
    let first = h.only_incident().id;
    let p = h
        .engine
        .pause_incident(first, "U0ALICE", crate::domain::BUTTON_HOLD)
        .unwrap();
    assert_eq!(
        (p.scope.as_str(), p.by.as_str(), p.reason.as_str()),
        (
            "rule svc on service redis",
            "U0ALICE",
            "paused from Slack on incident #1"
        )
    );
    assert_eq!(p.until - p.created_at, chrono::Duration::hours(1));

    // The same rule on another service still runs; on this service it is skipped.
    h.deliver(&[(redis("1"), 0, "resolved")]).await;
    h.deliver(&[(
        json!({"alertname": "ServiceDown", "service": "backend"}),
        1,
        "firing",
    )])
    .await;
    h.deliver(&[(redis("2"), 2, "firing")]).await;
    let ids = incident_ids(&h);
    assert_eq!(h.skipped_by(ids[1]), None, "backend runs");
    assert_eq!(
        h.skipped_by(ids[2]).unwrap(),
        (
            "pause".into(),
            "paused by U0ALICE until 04:00 UTC: paused from Slack on incident #1".into()
        )
    );
    assert_eq!(h.exec.count("restart"), 2);

    assert!(matches!(
        h.engine
            .pause_incident(999, "U0ALICE", crate::domain::BUTTON_HOLD),
        Err(PauseError::NoIncident(999))
    ));
    h.deliver(&[(json!({"alertname": "NoRuleForThis"}), 3, "firing")])
        .await;
    let unmatched = *incident_ids(&h).last().unwrap();
    assert!(matches!(
        h.engine.pause_incident(unmatched, "U0ALICE", crate::domain::BUTTON_HOLD),
        Err(PauseError::NoRule(id)) if id == unmatched
    ));
}

// Alertmanager asked again before the first destructive step.

const AM_RULES: &str = r#"
rules:
  - name: pg
    matchers: ['alertname="PostgresDown"']
    priority: P1
    rto: 30m
    owner: dba
    target: { service: postgres }
    steps:
      - diagnose: {}
      - wait: { duration: 10s }
      - restart: {}
      - exec: { argv: [true] }
    on_failure:
      - logs: {}
  - name: repair
    matchers: ['alertname="Broken"']
    priority: P2
    rto: 30m
    owner: infra
    target: { service: backend }
    steps:
      - diagnose: {}
    on_failure:
      - recreate: {}
  - name: look
    matchers: ['alertname="DiskSpaceLow"']
    priority: P3
    rto: 1h
    owner: infra
    target: { none: true }
    steps:
      - diagnose: {}
      - notify: { message: "look at the disk" }
"#;

/// Alertmanager as the engine sees it: answers what it is told to (from a moment on, when
/// `from` is set), and logs each question in the recorder's calls as `alertmanager`, so
/// that tests see where among the steps it was asked.
struct FakeAm {
    log: Arc<Recorder>,
    clock: Arc<TokioClock>,
    before: Result<AlertNow, String>,
    /// From this time on, the answer is this one.
    from: Option<(DateTime<Utc>, AlertNow)>,
    policy: OnUnreachable,
}

#[async_trait]
impl AlertCheck for FakeAm {
    async fn current(&self, labels: &crate::alert::Labels) -> Result<AlertNow, String> {
        self.log
            .calls
            .lock()
            .unwrap()
            .push((labels["alertname"].clone(), "alertmanager".into()));
        match &self.from {
            Some((at, later)) if self.clock.now() >= *at => Ok(later.clone()),
            _ => self.before.clone(),
        }
    }

    fn on_unreachable(&self) -> OnUnreachable {
        self.policy
    }
}

use crate::domain::{AlertNow, InhibitorFact, OnUnreachable, SilenceFact};

impl Harness {
    /// A harness on [`AM_RULES`] whose engine asks `am` (built with the harness's recorder
    /// and clock).
    fn with_alertmanager(am: impl FnOnce(Arc<Recorder>, Arc<TokioClock>) -> FakeAm) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let exec = Arc::new(Recorder::default());
        let clock = Arc::new(TokioClock::starting_at(base_time()));
        let mut outside = Outside::new(exec.clone());
        outside.alertmanager = Some(Arc::new(am(exec.clone(), clock.clone())));
        let settings = GuardSettings::default();
        let engine = Engine::new(
            Arc::new(Store::open(&path).unwrap()),
            rules_of("am.yaml", AM_RULES),
            outside,
            clock.clone(),
            settings.clone(),
            Arc::new(Metrics::new()),
            Arc::new(Notify::new()),
        );
        Harness {
            _dir: dir,
            dir: path,
            clock,
            engine,
            exec,
            settings,
        }
    }

    fn answering(answer: Result<AlertNow, String>, policy: OnUnreachable) -> Harness {
        Harness::with_alertmanager(|log, clock| FakeAm {
            log,
            clock,
            before: answer,
            from: None,
            policy,
        })
    }

    /// The steps asked of the executor and the questions to Alertmanager, in order.
    fn asked(&self) -> Vec<String> {
        self.exec.calls().into_iter().map(|(_, s)| s).collect()
    }

    fn alertmanager_decisions(&self, id: i64) -> Vec<(String, String)> {
        self.decisions(id)
            .into_iter()
            .filter(|(g, ..)| g == "alertmanager")
            .map(|(_, v, r)| (v, r))
            .collect()
    }

    fn texts(&self, id: i64) -> Vec<String> {
        self.store()
            .messages(id)
            .unwrap()
            .into_iter()
            .map(|m| format!("{}:{}", m.sink, m.text))
            .collect()
    }
}

fn alice_silence() -> AlertNow {
    AlertNow::Silenced {
        by: vec![SilenceFact {
            id: "3f6e1c9a-5b1d-4c3e-9f0a-2b7d8e6a1c44".into(),
            created_by: "alice".into(),
            comment: "db work".into(),
            ends_at: Some(base_time() + chrono::Duration::hours(2)),
        }],
    }
}

#[tokio::test(start_paused = true)]
async fn silenced_inhibited_or_gone_in_alertmanager_stops_the_run_before_the_restart() {
    let cases = [
        (
            alice_silence(),
            r#"silenced in Alertmanager by silence 3f6e1c9a-5b1d-4c3e-9f0a-2b7d8e6a1c44 (alice: "db work", until 05:00 UTC); the runbook stops before restart, nothing touched"#,
        ),
        (
            AlertNow::Inhibited {
                by: vec![InhibitorFact {
                    fingerprint: "1e48178e9e293490".into(),
                    alertname: Some("DatabaseHostDown".into()),
                }],
            },
            "inhibited in Alertmanager by DatabaseHostDown (fingerprint 1e48178e9e293490); the runbook stops before restart, nothing touched",
        ),
        (
            AlertNow::Gone,
            "no longer firing in Alertmanager; the runbook stops before restart, nothing touched",
        ),
    ];
    for (answer, reason) in cases {
        let h = Harness::answering(Ok(answer.clone()), OnUnreachable::Go);
        h.deliver(&[(pg(), 0, "firing")]).await;
        let inc = h.only_incident();
        assert_eq!(
            h.asked(),
            ["diagnose", "alertmanager"],
            "{answer:?}: asked after the steps before the restart, and nothing touched"
        );
        assert_eq!(inc.phase, "skipped", "{answer:?}");
        assert_eq!(
            h.alertmanager_decisions(inc.id),
            [("skip".to_string(), reason.to_string())]
        );
        assert!(
            h.texts(inc.id)
                .contains(&format!("slack:alertmanager: {reason}")),
            "the thread is told: {:#?}",
            h.texts(inc.id)
        );
        assert!(
            !h.decisions(inc.id).iter().any(|(g, ..)| g == "page"),
            "a human is at work or nothing is left to fix: nobody is paged: {:#?}",
            h.decisions(inc.id)
        );
        assert!(
            !h.texts(inc.id).iter().any(|t| t.starts_with("pagerduty:")),
            "{:#?}",
            h.texts(inc.id)
        );
        let steps: Vec<_> = h
            .store()
            .steps(inc.id)
            .unwrap()
            .into_iter()
            .map(|s| format!("{}:{}", s.kind, s.outcome))
            .collect();
        assert_eq!(steps, ["diagnose:ok", "wait:ok"], "{answer:?}");
        assert_eq!(
            metric(&h, "remediator_runbooks_total{outcome=\"stopped\"}").as_deref(),
            Some("remediator_runbooks_total{outcome=\"stopped\"} 1")
        );
        // The target is free again: the next firing is not refused as busy.
        assert!(h.engine.busy.lock().unwrap().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn a_silence_set_while_the_runbook_waits_is_seen_before_the_restart() {
    // Not silenced when the incident opens; silenced 5 s later, during the 10 s wait.
    let h = Harness::with_alertmanager(|log, clock| FakeAm {
        log,
        clock,
        before: Ok(AlertNow::Active),
        from: Some((base_time() + chrono::Duration::seconds(5), alice_silence())),
        policy: OnUnreachable::Go,
    });
    h.deliver(&[(pg(), 0, "firing")]).await;
    let inc = h.only_incident();
    assert_eq!(h.asked(), ["diagnose", "alertmanager"]);
    assert_eq!(inc.phase, "skipped");
    let (verdict, reason) = h.alertmanager_decisions(inc.id).remove(0);
    assert_eq!(verdict, "skip");
    assert!(
        reason.starts_with("silenced in Alertmanager by silence 3f6e1c9a"),
        "{reason}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_active_alert_is_asked_about_once_and_the_runbook_goes_on_quietly() {
    let h = Harness::answering(Ok(AlertNow::Active), OnUnreachable::Stop);
    h.deliver(&[(pg(), 0, "firing")]).await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "recovered");
    assert_eq!(
        h.asked(),
        ["diagnose", "alertmanager", "restart", "exec"],
        "asked once, before the first destructive step only"
    );
    assert_eq!(
        h.alertmanager_decisions(inc.id),
        [(
            "continue".to_string(),
            "firing in Alertmanager, neither silenced nor inhibited".to_string()
        )]
    );
    assert!(
        !h.texts(inc.id).iter().any(|t| t.contains("alertmanager")),
        "a plain go is recorded, not told: {:#?}",
        h.texts(inc.id)
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_alertmanager_goes_on_by_default_and_says_so_or_stops_when_told() {
    let why = "http://127.0.0.1:9093: connection refused".to_string();
    let h = Harness::answering(Err(why.clone()), OnUnreachable::Go);
    h.deliver(&[(pg(), 0, "firing")]).await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "recovered");
    assert_eq!(h.asked(), ["diagnose", "alertmanager", "restart", "exec"]);
    let go =
        format!("Alertmanager unreachable ({why}); going on as alertmanager.on_unreachable = go");
    assert_eq!(
        h.alertmanager_decisions(inc.id),
        [("continue".to_string(), go.clone())]
    );
    assert!(
        h.texts(inc.id)
            .contains(&format!("slack:alertmanager: {go}")),
        "{:#?}",
        h.texts(inc.id)
    );

    let h = Harness::answering(Err(why.clone()), OnUnreachable::Stop);
    h.deliver(&[(pg(), 0, "firing")]).await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "skipped");
    assert_eq!(h.asked(), ["diagnose", "alertmanager"]);
    let stop = format!("Alertmanager unreachable ({why}); the runbook stops before restart, nothing touched, as alertmanager.on_unreachable = stop");
    assert_eq!(
        h.alertmanager_decisions(inc.id),
        [("skip".to_string(), stop.clone())]
    );
    assert!(h
        .texts(inc.id)
        .contains(&format!("slack:alertmanager: {stop}")));
}

#[tokio::test(start_paused = true)]
async fn a_run_without_a_destructive_step_asks_nothing() {
    let h = Harness::answering(Ok(alice_silence()), OnUnreachable::Stop);
    h.deliver(&[(json!({"alertname": "DiskSpaceLow"}), 0, "firing")])
        .await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "recovered");
    assert_eq!(h.asked(), ["diagnose"]);
    assert!(h.alertmanager_decisions(inc.id).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_destructive_on_failure_step_is_checked_too_and_a_silence_stops_it_without_a_page() {
    let h = Harness::answering(Ok(alice_silence()), OnUnreachable::Go);
    h.exec.fail.lock().unwrap().insert("diagnose");
    h.deliver(&[(json!({"alertname": "Broken"}), 0, "firing")])
        .await;
    let inc = h.only_incident();
    assert_eq!(h.asked(), ["diagnose", "alertmanager"], "recreate not run");
    assert_eq!(inc.phase, "skipped");
    let (verdict, reason) = h.alertmanager_decisions(inc.id).remove(0);
    assert_eq!(verdict, "skip");
    assert!(
        reason.ends_with("the runbook stops before on_failure recreate, nothing touched"),
        "{reason}"
    );
    assert!(!h.decisions(inc.id).iter().any(|(g, ..)| g == "page"));
}

#[tokio::test(start_paused = true)]
async fn a_failure_at_any_commit_of_a_checked_run_leaves_everything_once_and_asks_once() {
    // A run stopped by a silence, and one that goes on past an unreachable Alertmanager.
    for answer in [Ok(alice_silence()), Err("connection refused".to_string())] {
        let run = |fail: Option<usize>| {
            let answer = answer.clone();
            async move {
                let h = Harness::answering(answer, OnUnreachable::Go);
                let before = h.store().commits();
                if let Some(k) = fail {
                    h.store().fail_commits([k]);
                }
                deliver_only(&h, &[(pg(), 0, "firing")]).await;
                settle(&h).await;
                let commits = h.store().commits() - before;
                assert_eq!(h.store().faults_left(), 0, "the injected failure happened");
                let inc = h.only_incident();
                (commits, journal(&h, inc.id), inc.phase, h.asked())
            }
        };
        let (commits, clean, phase, asked) = run(None).await;
        assert!(asked.contains(&"alertmanager".to_string()), "{asked:?}");
        for k in 0..commits {
            let (_, got, p, a) = run(Some(k)).await;
            assert_eq!(p, phase, "{answer:?}, failing commit {k}");
            assert_eq!(
                a, asked,
                "{answer:?}, failing commit {k}: asked once, no step twice"
            );
            assert_eq!(got.0, clean.0, "{answer:?}, failing commit {k}: decisions");
            assert_eq!(got.2, clean.2, "{answer:?}, failing commit {k}: steps");
            let kinds = |m: &Vec<String>| -> Vec<String> {
                m.iter()
                    .map(|s| s.splitn(3, ':').take(2).collect::<Vec<_>>().join(":"))
                    .collect()
            };
            assert_eq!(
                kinds(&got.1),
                kinds(&clean.1),
                "{answer:?}, failing commit {k}: notices"
            );
        }
    }
}

/// The Slack replies of an incident (the thread, not the root's updates), as stored.
fn thread(h: &Harness, id: i64) -> Vec<String> {
    h.store()
        .messages(id)
        .unwrap()
        .into_iter()
        .filter(|m| m.sink == "slack" && m.kind != "opened" && m.kind != "state")
        .map(|m| m.text)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_run_is_told_as_one_go_reply_and_a_reply_per_step_with_its_duration() {
    let h = Harness::new(GuardSettings::default());
    h.deliver(&[(pg(), 0, "firing")]).await;
    h.deliver(&[(pg(), 0, "resolved")]).await;
    let inc = h.only_incident();
    assert_eq!(
        thread(&h, inc.id),
        [
            "go: run 1 of 2 for postgres this hour, budget 1 of 10, target free",
            "diagnose postgres: ok in 0.0 s (diagnose ok)",
            "restart postgres: ok in 0.0 s (restart ok)",
            "wait_healthy postgres: ok in 0.0 s (wait_healthy ok)",
        ],
        "no reply for the recovery nor the resolution: the root shows both"
    );
    // Every guard's decision is still stored, one row each.
    let guards: Vec<String> = h.decisions(inc.id).into_iter().map(|(g, ..)| g).collect();
    for g in [
        "dedup",
        "flapping",
        "pause",
        "window",
        "deploy",
        "dry_run",
        "rate_limit",
        "budget",
        "busy",
    ] {
        assert!(guards.iter().any(|x| x == g), "{g} in {guards:?}");
    }
    assert_eq!(inc.owner.map(|c| c.key).as_deref(), Some("dba"));
}

#[tokio::test(start_paused = true)]
async fn a_skip_is_its_own_reply_and_a_failed_step_shows_its_output() {
    let h = Harness::new(GuardSettings::default());
    h.deliver(&[(json!({"alertname": "Dry"}), 0, "firing")])
        .await;
    let dry = h.only_incident();
    assert_eq!(
        thread(&h, dry.id),
        ["dry_run: dry-run (the rule): would run restart on service:backend"]
    );

    let h = Harness::new(GuardSettings::default());
    h.exec.fail.lock().unwrap().insert("restart");
    h.deliver(&[(pg(), 0, "firing")]).await;
    h.deliver(&[(pg(), 0, "resolved")]).await;
    let inc = h.only_incident();
    let replies = thread(&h, inc.id);
    assert_eq!(
        replies[0],
        "go: run 1 of 2 for postgres this hour, budget 1 of 10, target free"
    );
    assert_eq!(
        replies[2],
        "restart postgres: failed in 0.0 s (restart failed on purpose)"
    );
    assert_eq!(
        replies[3],
        "on_failure: logs postgres: ok in 0.0 s (logs ok)"
    );
    assert!(
        replies[4].starts_with("paged: automation failed"),
        "{replies:?}"
    );
    assert_eq!(
        replies.last().map(String::as_str),
        Some("resolved after 3m (within the RTO of 30m)"),
        "people were paged: the resolution is told to them"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_steps_reply_carries_the_end_of_its_output() {
    struct Loud;
    #[async_trait]
    impl StepExecutor for Loud {
        async fn run(&self, _: &StepContext, step: &StepKind) -> Result<StepOutput, StepError> {
            match step.name() {
                "restart" => Err(StepError::Failed(format!(
                    "`pg_ctl restart` exited 1\n{}\nFATAL: the last line",
                    "noise\n".repeat(1000)
                ))),
                _ => Ok(StepOutput::new("fine")),
            }
        }
    }
    let h = Harness::new(GuardSettings::default());
    // The harness's own engine, with the loud executor.
    let h = Harness {
        engine: Engine::new(
            Arc::new(Store::open(&h.dir).unwrap()),
            rules(),
            Outside::new(Arc::new(Loud)),
            h.clock.clone(),
            GuardSettings::default(),
            Arc::new(Metrics::new()),
            Arc::new(Notify::new()),
        ),
        ..h
    };
    h.deliver(&[(pg(), 0, "firing")]).await;
    let inc = h.only_incident();
    let notices: Vec<String> = {
        let conn = h.store().conn();
        let mut stmt = conn
            .prepare("SELECT notice FROM outbox WHERE incident_id = ?1 AND kind = 'step'")
            .unwrap();
        let rows = stmt.query_map([inc.id], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    let excerpts: Vec<String> = notices
        .iter()
        .filter_map(|n| match serde_json::from_str::<Notice>(n).unwrap() {
            Notice::Step { name, excerpt, .. } if name == "restart" => Some(excerpt),
            _ => None,
        })
        .collect();
    assert_eq!(excerpts.len(), 1);
    assert!(
        excerpts[0].ends_with("FATAL: the last line"),
        "{}",
        excerpts[0]
    );
    assert!(excerpts[0].starts_with('…'));
    assert_eq!(
        excerpts[0].chars().count(),
        crate::domain::notice::EXCERPT_CHARS
    );
}

#[tokio::test(start_paused = true)]
async fn a_button_is_recorded_once_told_and_updates_the_root() {
    use crate::domain::{Button, Pressed};
    let h = Harness::new(GuardSettings::default());
    h.deliver(&[(pg(), 0, "firing")]).await;
    let id = h.only_incident().id;
    let now = h.clock.now();
    let until = now + chrono::Duration::hours(1);
    let silenced = Pressed::new("bob", Some("U0BOB"), now)
        .until(until)
        .made("5e1f");
    assert_eq!(
        h.engine
            .pressed(id, Button::Silence, silenced.clone())
            .unwrap(),
        Some(true)
    );
    let again = Pressed::new("eve", Some("U0EVE"), now).made("other");
    assert_eq!(
        h.engine.pressed(id, Button::Silence, again).unwrap(),
        Some(false),
        "a button is used once"
    );
    h.engine
        .button_failed(
            id,
            Button::Pause,
            "carol",
            Some("U0CAROL"),
            "the pause was refused",
        )
        .unwrap();
    let inc = h.only_incident();
    assert_eq!(inc.silenced, Some(silenced));
    assert!(inc.paused.is_none());
    let replies = thread(&h, id);
    assert!(
        replies.contains(
            &"silenced 1h by bob in Alertmanager (silence 5e1f) until 04:00 UTC".to_owned()
        ),
        "{replies:?}"
    );
    assert_eq!(
        replies.last().map(String::as_str),
        Some("could not pause automation (asked by carol): the pause was refused")
    );
    let states: Vec<String> = h
        .store()
        .messages(id)
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == "state")
        .map(|m| m.text)
        .collect();
    assert_eq!(states.last().map(String::as_str), Some("silenced"));
    assert_eq!(
        h.engine
            .pressed(999, Button::Pause, Pressed::new("x", None, now))
            .unwrap(),
        None
    );
}

// The engine's queue, committed a batch at a time.

#[tokio::test(start_paused = true)]
async fn a_storm_is_committed_a_batch_at_a_time_and_a_failed_batch_is_handled_again_whole() {
    let h = Harness::new(GuardSettings::default());
    // 40 firings no rule matches, and pg opened and resolved before the engine looks.
    let storm: Vec<_> = (0..40)
        .map(|i| {
            (
                json!({"alertname": "Watchdog", "instance": format!("node-{i}")}),
                0,
                "firing",
            )
        })
        .collect();
    deliver_only(&h, &storm).await;
    deliver_only(&h, &[(pg(), 0, "firing")]).await;
    deliver_only(&h, &[(pg(), 0, "resolved")]).await;
    assert_eq!(h.store().backlog().unwrap().engine, 42);
    let opened = "remediator_incidents_opened_total";

    // The first batch's commit fails: nothing of it is written or told, all stays queued.
    h.store().fail_commits([0]);
    assert!(h.engine.process_pending().is_err());
    assert_eq!(h.store().backlog().unwrap().engine, 42);
    assert_eq!(metric(&h, opened), Some(format!("{opened} 0")));
    let all = h.store().list_incidents(None, None, 100).unwrap().incidents;
    assert!(all.iter().all(|i| i.phase == Phase::New), "{all:#?}");

    // Handled again: everything once, in a few commits rather than one per entry.
    let before = h.store().commits();
    assert_eq!(h.engine.process_pending().unwrap(), 42);
    h.engine.wait_idle().await;
    let commits = h.store().commits() - before;
    assert!(commits < 10, "{commits} commits for 42 entries");
    assert_eq!(h.store().backlog().unwrap().engine, 0);
    assert_eq!(metric(&h, opened), Some(format!("{opened} 41")));
    let all = h.store().list_incidents(None, None, 100).unwrap().incidents;
    assert_eq!(all.len(), 41);
    for inc in &all {
        let decisions = h.decisions(inc.id);
        if inc.alertname == "Watchdog" {
            assert_eq!(inc.phase, Phase::NoRule, "{inc:#?}");
            assert_eq!(decisions.len(), 1, "{decisions:#?}");
        } else {
            // Opened (its run started, which commits at once) and then resolved, each once.
            let resolved = decisions.iter().filter(|d| d.0 == "resolved").count();
            assert_eq!(resolved, 1, "{decisions:#?}");
            let matched = decisions.iter().filter(|d| d.0 == "match").count();
            assert_eq!(matched, 1, "{decisions:#?}");
        }
    }
}

/// A Redis stand-in shared by the replicas of a test: claim key → value; `.1` set: it
/// answers claims but not the limits and target lock (it went down in between).
#[derive(Default)]
struct FakeFleet(
    std::sync::Mutex<HashMap<String, String>>,
    std::sync::atomic::AtomicBool,
);

struct FakeReplica {
    id: String,
    fleet: Arc<FakeFleet>,
    clock: Arc<dyn Clock>,
}

fn fleet_key(f: &Firing) -> String {
    format!("{}:{}", f.fingerprint, f.starts_at.timestamp_millis())
}

#[async_trait::async_trait]
impl Coordinator for FakeReplica {
    fn replica(&self) -> &str {
        &self.id
    }
    fn on_down(&self) -> crate::domain::OnRedisDown {
        crate::domain::OnRedisDown::Page
    }
    async fn claim(&self, firing: &Firing) -> Result<Claim, Unavailable> {
        let mut m = self.fleet.0.lock().unwrap();
        let token = format!("claim|{}|1", self.id);
        let held = m.entry(fleet_key(firing)).or_insert(token.clone()).clone();
        Ok(if held == token {
            Claim::Won(Won {
                firing: firing.clone(),
                token,
                target: None,
            })
        } else {
            Claim::Lost {
                by: held.split('|').nth(1).unwrap().to_owned(),
            }
        })
    }
    async fn renew(&self, claim: &Won) -> Result<bool, Unavailable> {
        let m = self.fleet.0.lock().unwrap();
        Ok(m.get(&fleet_key(&claim.firing)) == Some(&claim.token))
    }
    async fn done(&self, claim: &Won, phase: Phase) -> Result<(), Unavailable> {
        let mut m = self.fleet.0.lock().unwrap();
        let k = fleet_key(&claim.firing);
        if m.get(&k) == Some(&claim.token) {
            m.insert(k, format!("done|{}|{phase}", self.id));
        }
        if let Some((t, i)) = &claim.target {
            let k = format!("busy:{t}");
            if m.get(&k) == Some(&format!("busy|{}|{i}", self.id)) {
                m.remove(&k);
            }
        }
        Ok(())
    }
    async fn take(&self, _: &Won, take: &Take) -> Result<Taken, Unavailable> {
        if self.fleet.1.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Unavailable("Redis at fake did not answer".into()));
        }
        let mut m = self.fleet.0.lock().unwrap();
        let now = self.clock.now();
        let mut ahead = Vec::new();
        let mut next = Vec::new();
        let mut limited = false;
        for l in &take.limits {
            let g = crate::engine::limits::Gcra::new(l.runs, l.per);
            let tat = m
                .get(&format!("limit:{}", l.key))
                .map(|v| DateTime::parse_from_rfc3339(v).unwrap().with_timezone(&Utc))
                .unwrap_or(now)
                .max(now);
            ahead.push((tat - now).to_std().unwrap());
            match g.check(Some(tat), now) {
                Ok(s) => next.push(s.tat),
                Err(_) => limited = true,
            }
        }
        if limited {
            return Ok(Taken::Limited { ahead });
        }
        if let Some(t) = &take.target {
            if let Some(v) = m.get(&format!("busy:{t}")) {
                let p: Vec<&str> = v.split('|').collect();
                if p[1] != self.id {
                    return Ok(Taken::Busy {
                        replica: p[1].into(),
                        incident: p[2].parse().unwrap(),
                        ahead,
                    });
                }
            }
            m.insert(
                format!("busy:{t}"),
                format!("busy|{}|{}", self.id, take.incident),
            );
        }
        for (l, tat) in take.limits.iter().zip(next) {
            m.insert(format!("limit:{}", l.key), tat.to_rfc3339());
        }
        Ok(Taken::Held { ahead })
    }
    async fn release(&self, claim: &Won) -> Result<(), Unavailable> {
        if let Some((t, i)) = &claim.target {
            let mut m = self.fleet.0.lock().unwrap();
            let k = format!("busy:{t}");
            if m.get(&k) == Some(&format!("busy|{}|{i}", self.id)) {
                m.remove(&k);
            }
        }
        Ok(())
    }
    async fn recovered(&self, firing: &Firing) -> Result<bool, Unavailable> {
        let mut m = self.fleet.0.lock().unwrap();
        let k = fleet_key(firing);
        let pages = match m.get(&k) {
            None => true,
            Some(v) => v.starts_with(&format!("claim|{}|", self.id)),
        };
        if pages {
            m.insert(k, format!("done|{}|interrupted", self.id));
        }
        Ok(pages)
    }
    async fn holder(&self, firing: &Firing) -> Result<Holder, Unavailable> {
        let mut m = self.fleet.0.lock().unwrap();
        let k = fleet_key(firing);
        let seen = m.get(&k).cloned();
        if seen.is_none() {
            m.insert(k, format!("done|{}|interrupted", self.id));
        }
        Ok(
            match seen
                .as_ref()
                .map(|v| v.splitn(3, '|').map(str::to_owned).collect::<Vec<_>>())
            {
                None => Holder::Gone,
                Some(p) if p[0] == "done" => Holder::Done {
                    by: p[1].clone(),
                    phase: p[2].clone(),
                },
                Some(p) => Holder::Running { by: p[1].clone() },
            },
        )
    }
    fn renew_every(&self) -> Duration {
        Duration::from_secs(10)
    }
    fn status(&self) -> String {
        "fake".into()
    }
}

fn fleet_engine(h: &Harness, id: &str, fleet: &Arc<FakeFleet>) -> Arc<Engine> {
    let mut outside = Outside::new(h.exec.clone());
    outside.coordinator = Some(Arc::new(FakeReplica {
        id: id.into(),
        fleet: fleet.clone(),
        clock: h.clock.clone(),
    }));
    Engine::new(
        Arc::new(Store::open(&h.dir).unwrap()),
        rules(),
        outside,
        h.clock.clone(),
        h.settings.clone(),
        Arc::new(Metrics::new()),
        Arc::new(Notify::new()),
    )
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_lost_the_claim_tells_nobody_and_pages_only_when_the_winner_vanishes() {
    let fleet = Arc::new(FakeFleet::default());
    let (a, b) = (
        Harness::new(GuardSettings::default()),
        Harness::new(GuardSettings::default()),
    );
    let (ea, eb) = (fleet_engine(&a, "a", &fleet), fleet_engine(&b, "b", &fleet));
    deliver_only(&a, &[(pg(), 0, "firing")]).await;
    deliver_only(&b, &[(pg(), 0, "firing")]).await;
    // Unclaimed: the decision point waits.
    assert_eq!(eb.process_pending().unwrap(), 0);
    decide(&ea).await;
    ea.wait_idle().await;
    decide(&eb).await;
    let won = ea.store().list_incidents(None, None, 10).unwrap().incidents;
    let lost = eb.store().list_incidents(None, None, 10).unwrap().incidents;
    assert_eq!(won[0].phase, Phase::Recovered);
    assert_eq!(lost[0].phase, Phase::Claimed);
    let d = eb.store().decisions(lost[0].id).unwrap();
    assert!(d
        .iter()
        .any(|d| d.guard == DecisionKind::Claim && d.reason.starts_with("claimed by replica a:")));
    assert!(
        eb.store().messages(lost[0].id).unwrap().is_empty(),
        "the loser tells nobody"
    );
    // The winner's done marker is seen: nothing to page.
    tokio::task::yield_now().await;
    eb.watch_claims().await.unwrap();
    let inc = eb.store().incident(lost[0].id).unwrap().unwrap();
    assert_eq!(inc.phase, Phase::ActedElsewhere);

    // A second firing whose winner vanishes (its claim expires without a done marker).
    deliver_only(&b, &[(pg(), 5, "firing")]).await;
    let f = Firing {
        fingerprint: lost[0].fingerprint.clone(),
        starts_at: base_time() + chrono::Duration::minutes(5),
    };
    fleet
        .0
        .lock()
        .unwrap()
        .insert(fleet_key(&f), "claim|a|2".into());
    eb.claim_queued().await.unwrap();
    eb.process_pending().unwrap();
    let id = eb
        .store()
        .list_incidents(None, None, 10)
        .unwrap()
        .incidents
        .iter()
        .map(|i| i.id)
        .max()
        .unwrap();
    assert_eq!(
        eb.store().incident(id).unwrap().unwrap().phase,
        Phase::Claimed
    );
    eb.watch_claims().await.unwrap();
    assert_eq!(
        eb.store().incident(id).unwrap().unwrap().phase,
        Phase::Claimed,
        "still running"
    );
    fleet.0.lock().unwrap().remove(&fleet_key(&f));
    eb.watch_claims().await.unwrap();
    let inc = eb.store().incident(id).unwrap().unwrap();
    assert_eq!(inc.phase, Phase::Interrupted);
    let sinks: Vec<String> = eb
        .store()
        .messages(id)
        .unwrap()
        .iter()
        .map(|m| format!("{}:{}", m.sink, m.kind))
        .collect();
    assert!(
        sinks.contains(&"pagerduty:trigger".to_string()),
        "{sinks:?}"
    );
    assert!(sinks.contains(&"slack:opened".to_string()), "{sinks:?}");
    assert!(eb.store().decisions(id).unwrap().iter().any(|d| d
        .reason
        .starts_with("replica a stopped answering mid-runbook")));
}

/// Claims, then the fleet's limits and target lock, then the decision points: what the
/// engine's loop does in as many passes as they take.
async fn decide(e: &Arc<Engine>) {
    for _ in 0..3 {
        e.claim_queued().await.unwrap();
        e.process_pending().unwrap();
    }
}

fn last_incident(e: &Engine) -> crate::store::IncidentRecord {
    let id = e
        .store()
        .list_incidents(None, None, 10)
        .unwrap()
        .incidents
        .iter()
        .map(|i| i.id)
        .max()
        .unwrap();
    e.store().incident(id).unwrap().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_container_held_by_another_replicas_runbook_is_busy_and_free_again_when_it_ends() {
    let fleet = Arc::new(FakeFleet::default());
    let (a, b) = (
        Harness::new(GuardSettings::default()),
        Harness::new(GuardSettings::default()),
    );
    let (ea, eb) = (fleet_engine(&a, "a", &fleet), fleet_engine(&b, "b", &fleet));
    // Two different firings for the same container, one to each replica.
    deliver_only(&a, &[(pg(), 0, "firing")]).await;
    deliver_only(&b, &[(pg(), 1, "firing")]).await;
    decide(&ea).await;
    let held = fleet
        .0
        .lock()
        .unwrap()
        .get("busy:service:postgres")
        .cloned();
    let ia = last_incident(&ea);
    assert_eq!(
        held,
        Some(format!("busy|a|{}", ia.id)),
        "a holds the target"
    );
    decide(&eb).await;
    let ib = last_incident(&eb);
    assert_eq!(ib.phase, Phase::Skipped, "{ib:#?}");
    let busy = eb
        .store()
        .decisions(ib.id)
        .unwrap()
        .into_iter()
        .find(|d| d.guard == DecisionKind::Busy)
        .unwrap();
    assert_eq!(
        busy.reason,
        format!(
            "the runbook of incident #{} of replica a is still running on service:postgres; one runbook per container at a time",
            ia.id
        )
    );
    assert_eq!(b.exec.count("restart"), 0, "b ran nothing");
    ea.wait_idle().await;
    tokio::task::yield_now().await;
    assert_eq!(a.exec.count("restart"), 1);
    assert!(
        !fleet
            .0
            .lock()
            .unwrap()
            .contains_key("busy:service:postgres"),
        "the done marker let go of the target"
    );
    // Free again: b's next firing runs.
    deliver_only(&b, &[(pg(), 2, "firing")]).await;
    decide(&eb).await;
    eb.wait_idle().await;
    assert_eq!(b.exec.count("restart"), 1);
    assert_eq!(last_incident(&eb).phase, Phase::Recovered);
}

#[tokio::test(start_paused = true)]
async fn the_rule_limit_and_the_global_budget_are_spent_fleet_wide_and_kept_locally_too() {
    let fleet = Arc::new(FakeFleet::default());
    let settings = GuardSettings {
        budget_runs: 3,
        ..GuardSettings::default()
    };
    let (a, b) = (Harness::new(settings.clone()), Harness::new(settings));
    let (ea, eb) = (fleet_engine(&a, "a", &fleet), fleet_engine(&b, "b", &fleet));
    // pg: 2 runs per hour. One on a, one on b: the third, on a, is rate limited although a
    // ran only one itself.
    deliver_only(&a, &[(pg(), 0, "firing")]).await;
    decide(&ea).await;
    ea.wait_idle().await;
    deliver_only(&b, &[(pg(), 1, "firing")]).await;
    decide(&eb).await;
    eb.wait_idle().await;
    assert_eq!((a.exec.count("restart"), b.exec.count("restart")), (1, 1));
    // (Resolved first, or the dedup guard would refuse it before the limit.)
    deliver_only(&a, &[(pg(), 0, "resolved")]).await;
    decide(&ea).await;
    deliver_only(&a, &[(pg(), 2, "firing")]).await;
    decide(&ea).await;
    let inc = last_incident(&ea);
    assert_eq!(inc.phase, Phase::Escalated, "{inc:#?}");
    let d = ea.store().decisions(inc.id).unwrap();
    let limited = d
        .iter()
        .find(|d| d.guard == DecisionKind::RateLimit)
        .unwrap();
    assert!(limited.reason.starts_with("rate limited: "), "{d:#?}");
    assert_eq!(a.exec.count("restart"), 1, "nothing more ran");
    // The local store keeps what this replica spent, for a later start alone.
    assert!(ea
        .store()
        .limit(guards::BUDGET_LIMIT_KEY)
        .unwrap()
        .is_some());
    // The budget (3 per 10 min) is the fleet's too: a third run elsewhere spends it, and
    // b's next firing of another rule finds it spent.
    deliver_only(
        &b,
        &[(json!({"alertname": "RedisMemoryHigh"}), 3, "firing")],
    )
    .await;
    decide(&eb).await;
    eb.wait_idle().await;
    deliver_only(
        &b,
        &[(
            json!({"alertname": "ServiceDown", "service": "backend"}),
            4,
            "firing",
        )],
    )
    .await;
    decide(&eb).await;
    let inc = last_incident(&eb);
    let d = eb.store().decisions(inc.id).unwrap();
    assert!(
        d.iter().any(|d| d.guard == DecisionKind::Budget
            && d.verdict == Verdict::Skip
            && d.reason.starts_with("global action budget spent")),
        "{d:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn redis_lost_between_the_claim_and_the_limits_follows_on_redis_down_and_runs_nothing() {
    let fleet = Arc::new(FakeFleet::default());
    fleet.1.store(true, std::sync::atomic::Ordering::Relaxed);
    let a = Harness::new(GuardSettings::default());
    let ea = fleet_engine(&a, "a", &fleet);
    deliver_only(&a, &[(pg(), 0, "firing")]).await;
    decide(&ea).await;
    ea.wait_idle().await;
    let inc = last_incident(&ea);
    assert_eq!(inc.phase, Phase::Escalated, "{inc:#?}");
    assert_eq!(a.exec.count("restart"), 0, "nothing is acted on");
    let d = ea.store().decisions(inc.id).unwrap();
    assert!(
        d.iter().any(|d| d.guard == DecisionKind::Claim
            && d.verdict == Verdict::Skip
            && d.reason == "Redis at fake did not answer; coordination.on_redis_down is page: people are paged and nothing is acted on, since another replica may act on it too"),
        "{d:#?}"
    );
    assert!(d.iter().any(|d| d.guard == DecisionKind::Page));
}

/// Sets incident `id` back to `remediating`, as a crash mid-runbook leaves it.
fn crashed_mid_run(e: &Engine, id: i64) {
    e.store()
        .commit(&{
            let mut c = crate::store::Commit::new(id, Utc::now());
            c.phase_silently(Phase::Remediating);
            c
        })
        .unwrap();
}

fn pages_of(e: &Engine, id: i64) -> usize {
    e.store()
        .decisions(id)
        .unwrap()
        .iter()
        .filter(|d| d.guard == DecisionKind::Page && d.verdict == Verdict::Continue)
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_winner_restarted_mid_runbook_and_the_survivor_page_once_whoever_looks_first() {
    let fleet = Arc::new(FakeFleet::default());
    let (a, b) = (
        Harness::new(GuardSettings::default()),
        Harness::new(GuardSettings::default()),
    );
    for (minute, winner_first) in [(0, true), (5, false)] {
        let (ea, eb) = (fleet_engine(&a, "a", &fleet), fleet_engine(&b, "b", &fleet));
        deliver_only(&a, &[(pg(), minute, "firing")]).await;
        deliver_only(&b, &[(pg(), minute, "firing")]).await;
        decide(&ea).await;
        ea.wait_idle().await;
        decide(&eb).await;
        let (ia, ib) = (last_incident(&ea).id, last_incident(&eb).id);
        assert_eq!(last_incident(&eb).phase, Phase::Claimed);
        // a crashed mid-runbook: its claim is still there (restarted quickly) or expired.
        crashed_mid_run(&ea, ia);
        let f = Firing {
            fingerprint: last_incident(&ea).fingerprint,
            starts_at: base_time() + chrono::Duration::minutes(minute),
        };
        if winner_first {
            fleet
                .0
                .lock()
                .unwrap()
                .insert(fleet_key(&f), "claim|a|old".into());
        } else {
            fleet.0.lock().unwrap().remove(&fleet_key(&f));
            eb.watch_claims().await.unwrap();
        }
        let restarted = fleet_engine(&a, "a", &fleet);
        restarted.recover_claims().await.unwrap();
        restarted.recover().unwrap();
        eb.watch_claims().await.unwrap();
        assert_eq!(
            restarted.store().incident(ia).unwrap().unwrap().phase,
            Phase::Interrupted
        );
        let (pa, pb) = (pages_of(&restarted, ia), pages_of(&eb, ib));
        assert_eq!(
            pa + pb,
            1,
            "one page (winner first: {winner_first}): {pa} + {pb}"
        );
        assert_eq!(pa, usize::from(winner_first));
    }
}

const ARGV_RULES: &str = r#"
rules:
  - name: backup
    matchers: ['alertname="BackupFailed"']
    priority: P2
    rto: 1h
    owner: dba
    target: { none: true }
    steps:
      - exec: { service: backup, argv: [./scripts/backup/verify_backups.sh, "{{ labels.backup }}"] }
"#;

fn argv_harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let exec = Arc::new(Recorder::default());
    let clock = Arc::new(TokioClock::starting_at(base_time()));
    let settings = GuardSettings::default();
    let engine = Engine::new(
        Arc::new(Store::open(&path).unwrap()),
        rules_of("argv.yaml", ARGV_RULES),
        Outside::new(exec.clone()),
        clock.clone(),
        settings.clone(),
        Arc::new(Metrics::new()),
        Arc::new(Notify::new()),
    );
    Harness {
        _dir: dir,
        dir: path,
        clock,
        engine,
        exec,
        settings,
    }
}

#[tokio::test(start_paused = true)]
async fn a_templated_argv_runs_with_a_plain_label_and_refuses_a_hostile_one_running_nothing() {
    let h = argv_harness();
    h.deliver(&[(
        json!({"alertname": "BackupFailed", "backup": "voiceai_20261125_020000.sql.gz"}),
        0,
        "firing",
    )])
    .await;
    assert_eq!(h.exec.count("exec"), 1);
    assert_eq!(h.only_incident().phase, "recovered");

    for hostile in ["x; rm -rf /", "--flag"] {
        let h = argv_harness();
        h.deliver(&[(
            json!({"alertname": "BackupFailed", "backup": hostile}),
            0,
            "firing",
        )])
        .await;
        assert_eq!(h.exec.count("exec"), 0, "{hostile}: nothing may run");
        let inc = h.only_incident();
        assert_eq!(inc.phase, "failed");
        let steps = h.store().steps(inc.id).unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].outcome.to_string(), "failed");
        let runbook = h
            .decisions(inc.id)
            .into_iter()
            .find(|(g, ..)| g == "runbook")
            .unwrap();
        assert!(
            runbook.2.contains("does not match the pattern"),
            "{hostile}: {runbook:?}"
        );
    }
}

const APPROVE_RULES: &str = r#"
rules:
  - name: pg
    matchers: ['alertname="PostgresDown"']
    priority: P1
    rto: 30m
    owner: dba
    target: { service: postgres }
    steps:
      - diagnose: {}
      - approve: { who: dba, timeout: 10m, prompt: "Restart postgres?" }
      - restart: {}
    on_failure:
      - logs: {}
"#;

fn approve_harness() -> Harness {
    let h = argv_harness();
    let engine = Engine::new(
        Arc::new(Store::open(&h.dir).unwrap()),
        rules_of("approve.yaml", APPROVE_RULES),
        Outside::new(h.exec.clone()),
        h.clock.clone(),
        h.settings.clone(),
        Arc::new(Metrics::new()),
        Arc::new(Notify::new()),
    );
    Harness { engine, ..h }
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_approval_times_out_runs_on_failure_and_pages_and_nothing_after_it_runs() {
    let h = approve_harness();
    let started = h.clock.now();
    h.deliver(&[(pg(), 0, "firing")]).await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "failed");
    assert_eq!(
        h.exec.count("restart"),
        0,
        "nothing runs without the approval"
    );
    assert_eq!(h.exec.count("logs"), 1, "on_failure ran");
    let a = h
        .store()
        .approval_at(inc.id, RunPhase::Main, 1)
        .unwrap()
        .unwrap();
    let d = a.decided.clone().unwrap();
    assert_eq!(d.verdict, crate::domain::ApprovalVerdict::TimedOut);
    assert_eq!(a.deadline - started, chrono::Duration::minutes(10));
    assert!(d.at >= a.deadline);
    let decisions = h.decisions(inc.id);
    assert!(
        decisions
            .iter()
            .any(|(g, v, _)| g == "approval" && v == "skip"),
        "{decisions:?}"
    );
    let page = decisions.iter().find(|(g, ..)| g == "page").unwrap();
    assert!(page.2.contains("Nobody approved"), "{page:?}");
}

#[tokio::test(start_paused = true)]
async fn an_approval_given_through_the_store_lets_the_runbook_go_on_and_a_second_answer_is_refused()
{
    let h = approve_harness();
    deliver_only(&h, &[(pg(), 0, "firing")]).await;
    h.engine.process_pending().unwrap();
    let id = loop {
        let all = h.store().list_incidents(None, None, 10).unwrap().incidents;
        if let Some(inc) = all.first() {
            if let Some(a) = h.store().approval_at(inc.id, RunPhase::Main, 1).unwrap() {
                assert!(a.pending());
                break inc.id;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(h.exec.count("restart"), 0);
    let answer = |by: &str| {
        let mut c = crate::store::Commit::new(id, h.clock.now());
        c.answer_approval(
            RunPhase::Main,
            1,
            crate::domain::Decided {
                verdict: crate::domain::ApprovalVerdict::Approved,
                by: by.into(),
                slack_user: None,
                choice: None,
                at: h.clock.now(),
            },
        );
        h.store().commit(&c)
    };
    answer("alice").unwrap();
    assert!(matches!(
        answer("bob"),
        Err(crate::store::StoreError::NotWaiting(_))
    ));
    h.engine.wait_idle().await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "recovered");
    assert_eq!(h.exec.count("restart"), 1);
    let steps = h.store().steps(id).unwrap();
    assert_eq!(steps[1].detail, "Approved by alice");
}

mod resume;
const FALLBACK_RULES: &str = r#"
rules:
  - name: pg
    matchers: ['alertname="PostgresDown"']
    priority: P1
    rto: 30m
    owner: dba
    target: { service: postgres }
    steps:
      - restart: {}
      - wait_healthy: {}
    fallback:
      - stop: { services: [backend] }
      - approve: { who: dba, timeout: 10m, prompt: "Restore?" }
      - start: { services: [backend] }
    on_failure:
      - logs: {}
"#;

fn fallback_harness() -> Harness {
    let h = argv_harness();
    let engine = Engine::new(
        Arc::new(Store::open(&h.dir).unwrap()),
        rules_of("fallback.yaml", FALLBACK_RULES),
        Outside::new(h.exec.clone()),
        h.clock.clone(),
        h.settings.clone(),
        Arc::new(Metrics::new()),
        Arc::new(Notify::new()),
    );
    Harness { engine, ..h }
}

/// Delivers a PostgresDown and waits (on the paused clock) until its fallback's approval
/// waits; the incident's id.
async fn until_fallback_approval(h: &Harness) -> i64 {
    deliver_only(h, &[(pg(), 0, "firing")]).await;
    h.engine.process_pending().unwrap();
    for _ in 0..600 {
        let all = h.store().list_incidents(None, None, 10).unwrap().incidents;
        if let Some(inc) = all.first() {
            if let Some(a) = h
                .store()
                .approval_at(inc.id, RunPhase::Fallback, 1)
                .unwrap()
            {
                assert!(a.pending());
                return inc.id;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("the fallback never asked for approval");
}

fn phases_of(h: &Harness, id: i64) -> Vec<String> {
    h.store()
        .steps(id)
        .unwrap()
        .iter()
        .map(|s| format!("{}/{}:{}", s.phase, s.kind, s.outcome))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_fallback_whose_last_step_passes_recovers_the_incident_without_on_failure_or_a_page() {
    let h = fallback_harness();
    h.exec.fail.lock().unwrap().insert("wait_healthy");
    let id = until_fallback_approval(&h).await;
    assert_eq!(h.exec.count("start"), 0, "nothing after the approval yet");
    let answered = h
        .engine
        .answer_approval(id, true, "alice", None, None)
        .unwrap();
    assert!(matches!(answered, Answered::Done(_)), "{answered:?}");
    h.engine.wait_idle().await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "recovered");
    assert_eq!(
        phases_of(&h, id),
        [
            "main/restart:ok",
            "main/wait_healthy:failed",
            "fallback/stop:ok",
            "fallback/approve:ok",
            "fallback/start:ok"
        ]
    );
    assert_eq!(h.exec.count("logs"), 0, "on_failure did not run");
    let decisions = h.decisions(id);
    assert!(
        !decisions.iter().any(|(g, ..)| g == "page"),
        "{decisions:?}"
    );
    let runbook = decisions.iter().find(|(g, ..)| g == "runbook").unwrap();
    assert_eq!(runbook.1, "continue");
    assert!(
        runbook.2.contains("step 2 (wait_healthy)") && runbook.2.ends_with("running fallback"),
        "{runbook:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rejected_fallback_runs_on_failure_and_pages_with_the_reason_and_nothing_after_it_runs() {
    let h = fallback_harness();
    h.exec.fail.lock().unwrap().insert("wait_healthy");
    let id = until_fallback_approval(&h).await;
    h.engine
        .answer_approval(id, false, "bob", None, None)
        .unwrap();
    h.engine.wait_idle().await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "failed");
    assert_eq!(h.exec.count("start"), 0, "nothing after the rejection ran");
    assert_eq!(h.exec.count("logs"), 1, "on_failure ran");
    let decisions = h.decisions(id);
    let page = decisions.iter().find(|(g, ..)| g == "page").unwrap();
    assert!(
        page.2.contains("fallback step 2 (approve)") && page.2.contains("bob"),
        "{page:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fallback_step_that_fails_fails_the_incident_and_a_passing_runbook_never_runs_the_fallback(
) {
    let h = fallback_harness();
    h.exec.fail.lock().unwrap().insert("wait_healthy");
    h.exec.fail.lock().unwrap().insert("stop");
    h.deliver(&[(pg(), 0, "firing")]).await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "failed");
    assert_eq!(
        phases_of(&h, inc.id),
        [
            "main/restart:ok",
            "main/wait_healthy:failed",
            "fallback/stop:failed",
            "on_failure/logs:ok"
        ]
    );
    assert!(h.decisions(inc.id).iter().any(|(g, ..)| g == "page"));

    let h = fallback_harness();
    h.deliver(&[(pg(), 0, "firing")]).await;
    let inc = h.only_incident();
    assert_eq!(inc.phase, "recovered");
    assert_eq!(
        phases_of(&h, inc.id),
        ["main/restart:ok", "main/wait_healthy:ok"]
    );
}
