//! The DR plan's scenario 2 (database corruption/loss) end to end, with the shipped
//! `postgres-down` rule, against the busybox compose project: postgres made to stay down
//! after its restart (the `CORRUPTED` flag in its data volume, which only a restore removes),
//! the fallback's approval answered through `POST /api/v1/incidents/{id}/approve|reject`, and
//! what the stand-ins of tests/stack/image/stand-ins/ recorded.

use serde_json::{json, Value};

use crate::emulators::*;
use crate::helpers::*;
use crate::stack::{compose_file, Stack};

const API_TOKEN: &str = "api-token-for-scenario2-tests";

/// The backups the backup service lists (newest first), as the plan names them.
pub const NEWER: &str = "voiceai_testing_20261202_020000.sql.gz";
pub const OLDER: &str = "voiceai_testing_20261201_020000.sql.gz";

pub const SERVICES: &[&str] = &["postgres", "backend", "celery-worker", "backup"];

/// What the stand-ins wrote: the restore's marker in postgres's data volume and their logs.
pub const RESTORED_FROM: &str = "/var/lib/postgresql/data/RESTORED_FROM";

struct Scenario {
    /// When the PostgresDown fired.
    starts: chrono::DateTime<chrono::Utc>,
    stack: Stack,
    app: TestApp,
    pd: PagerDutyEmulator,
    _slack: SlackEmulator,
    _rules: tempfile::TempDir,
}

/// The shipped rules, with postgres's health wait cut to 5 s (it stays unhealthy) and, when
/// given, the fallback's approval timeout.
pub fn rules(approve_timeout: Option<&str>) -> tempfile::TempDir {
    let dir = shipped_rules_copy();
    let path = dir.path().join("10-postgres.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut edited = text.replace(
        "wait_healthy: { within: 2m }",
        "wait_healthy: { within: 5s }",
    );
    if let Some(t) = approve_timeout {
        edited = edited.replace(
            "          who: dba\n          timeout: 20m\n",
            &format!("          who: dba\n          timeout: {t}\n"),
        );
        assert!(edited.contains(&format!("timeout: {t}\n")), "{edited}");
    }
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    dir
}

/// The stack with two backups and a corrupted database, the service on it, and a PostgresDown
/// fired.
async fn corrupted(approve_timeout: Option<&str>) -> Scenario {
    let stack = Stack::up(SERVICES);
    for b in [OLDER, NEWER] {
        stack.exec("backup", &["touch", &format!("/data/backups/{b}")]);
    }
    stack.exec("postgres", &["touch", "/var/lib/postgresql/data/CORRUPTED"]);
    let (slack, pd) = (
        SlackEmulator::start().await,
        PagerDutyEmulator::start().await,
    );
    let rules = rules(approve_timeout);
    let app = spawn_with(Spawn {
        env: vec![
            ("REMEDIATOR_WEBHOOK_TOKEN".into(), TOKEN.into()),
            ("REMEDIATOR_API__TOKEN".into(), API_TOKEN.into()),
            ("REMEDIATOR_DOCKER__PROJECT".into(), stack.project.clone()),
            ("REMEDIATOR_DOCKER__COMPOSE_FILE".into(), compose_file()),
            ("REMEDIATOR_SLACK__API_URL".into(), slack.url()),
            ("REMEDIATOR_SLACK__BOT_TOKEN".into(), SLACK_TOKEN.into()),
            ("REMEDIATOR_SLACK__CHANNEL".into(), SLACK_CHANNEL.into()),
            ("REMEDIATOR_PAGERDUTY__URL".into(), pd.url()),
            (
                "REMEDIATOR_PAGERDUTY__ROUTING_KEY".into(),
                PD_ROUTING_KEY.into(),
            ),
        ],
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await;
    let starts = chrono::Utc::now();
    let r = app
        .post_hook(alert_payload(labels(), starts, "firing"))
        .await;
    assert_eq!(r.status(), 200);
    Scenario {
        starts,
        stack,
        app,
        pd,
        _slack: slack,
        _rules: rules,
    }
}

pub fn labels() -> Value {
    json!({
        "alertname": "PostgresDown", "service": "postgres", "severity": "critical",
        "instance": "postgres-exporter:9187",
    })
}

/// Waits until the incident's approve step waits for an answer; its id and detail.
pub async fn waiting_for_approval(app: &TestApp, alertname: &str, secs: u64) -> (i64, Value) {
    eventually(secs, "the approve step waiting", || async {
        let id = app
            .incidents()
            .await
            .into_iter()
            .find(|i| i["alertname"] == alertname)?["id"]
            .as_i64()?;
        let (_, v) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
        let phase = v["phase"].as_str().unwrap_or("");
        assert!(
            ["new", "remediating", ""].contains(&phase),
            "the incident ended without asking for approval: {v:#}"
        );
        let waiting = v["steps"]
            .as_array()?
            .iter()
            .any(|s| s["kind"] == "approve" && s["outcome"] == "running");
        waiting.then_some((id, v))
    })
    .await
}

/// `POST /api/v1/incidents/{id}/{verb}` with `body`, as `token` (none: no Authorization).
pub async fn answer(
    app: &TestApp,
    id: i64,
    verb: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = app
        .client
        .post(format!("{}/api/v1/incidents/{id}/{verb}", app.addr))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub fn kinds(detail: &Value) -> Vec<String> {
    step_outcomes(detail)
        .into_iter()
        .map(|(p, k, o)| format!("{p}/{k}:{o}"))
        .collect()
}

/// `cat FILE` in the service's container; `None` when it does not exist.
pub fn read(stack: &Stack, service: &str, file: &str) -> Option<String> {
    let out = stack
        .compose()
        .args(["exec", "-T", service, "cat", file])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn state(stack: &Stack, service: &str, field: &str) -> Value {
    stack.inspect(service)["State"][field].clone()
}

pub fn time_of(stack: &Stack, service: &str, field: &str) -> chrono::DateTime<chrono::Utc> {
    state(stack, service, field)
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The fallback's steps after an approval: stop the dependents, list, approve, restore,
/// migrate, start backend, start celery-worker, check integrity; each exactly once.
pub const FALLBACK_APPROVED: [&str; 8] = [
    "fallback/stop:ok",
    "fallback/exec:ok",
    "fallback/approve:ok",
    "fallback/exec:ok",
    "fallback/start:ok",
    "fallback/exec:ok",
    "fallback/start:ok",
    "fallback/exec:ok",
];

pub const MAIN_FAILED: [&str; 4] = [
    "main/diagnose:ok",
    "main/logs:ok",
    "main/restart:ok",
    "main/wait_healthy:failed",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_approved_through_the_api_restores_the_chosen_backup_and_recovers_within_the_rto(
) {
    let s = corrupted(None).await;
    let (id, waiting) = waiting_for_approval(&s.app, "PostgresDown", 90).await;
    // Dependents stopped, backend first; nothing restored before the answer.
    for svc in ["backend", "celery-worker"] {
        assert_eq!(state(&s.stack, svc, "Running"), false, "{svc} stopped");
    }
    assert!(
        time_of(&s.stack, "backend", "FinishedAt")
            < time_of(&s.stack, "celery-worker", "FinishedAt"),
        "backend stopped before celery-worker"
    );
    assert_eq!(read(&s.stack, "postgres", RESTORED_FROM), None);
    let listed = waiting["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["phase"] == "fallback" && st["kind"] == "exec")
        .and_then(|st| st["detail"].as_str())
        .unwrap()
        .to_string();
    assert!(listed.contains(NEWER) && listed.contains(OLDER), "{listed}");

    // A choice not offered, or none, is refused naming the choices; so is an unknown caller.
    let (status, body) = answer(
        &s.app,
        id,
        "approve",
        Some(API_TOKEN),
        json!({"by": "alice", "choice": "voiceai_testing_20200101_000000.sql.gz"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let said = body.to_string();
    assert!(said.contains(NEWER) && said.contains(OLDER), "{said}");
    let (status, body) = answer(
        &s.app,
        id,
        "approve",
        Some(API_TOKEN),
        json!({"by": "alice"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = answer(
        &s.app,
        id,
        "approve",
        Some("not-the-token"),
        json!({"by": "mallory", "choice": OLDER}),
    )
    .await;
    assert_eq!(status, 401);

    // The older backup, so the restore is the one chosen, not the first listed.
    let (status, body) = answer(
        &s.app,
        id,
        "approve",
        Some(API_TOKEN),
        json!({"by": "alice", "choice": OLDER}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approval"]["decided"]["by"], "alice");
    assert_eq!(body["approval"]["decided"]["choice"], OLDER);

    let detail = s.app.finished_id(id, 90).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    assert_eq!(detail["rto_seconds"], 1800.0);
    let mut want: Vec<String> = MAIN_FAILED.iter().map(|k| k.to_string()).collect();
    want.extend(FALLBACK_APPROVED.map(String::from));
    assert_eq!(kinds(&detail), want, "{detail:#}");

    assert_eq!(
        read(&s.stack, "postgres", RESTORED_FROM).as_deref(),
        Some(OLDER)
    );
    let restored = read(
        &s.stack,
        "backup",
        "/var/log/stand-ins/postgres_restore.log",
    )
    .unwrap();
    assert!(
        restored.ends_with(&format!("restored {OLDER}")),
        "{restored}"
    );
    let alembic = read(&s.stack, "backend", "/var/log/stand-ins/alembic.log").unwrap();
    assert!(alembic.ends_with("upgrade head"), "{alembic}");
    let integrity = read(
        &s.stack,
        "backend",
        "/var/log/stand-ins/test_connection.log",
    )
    .unwrap();
    assert!(integrity.ends_with("test_connection()"), "{integrity}");
    for svc in ["backend", "celery-worker"] {
        assert_eq!(state(&s.stack, svc, "Running"), true, "{svc} running");
    }
    assert!(
        time_of(&s.stack, "backend", "StartedAt") < time_of(&s.stack, "celery-worker", "StartedAt"),
        "backend started before celery-worker"
    );
    s.stack
        .wait_healthy("postgres", std::time::Duration::from_secs(10));
    assert!(s.pd.events().is_empty(), "{:?}", s.pd.events());
    // Postgres answers again, so Alertmanager resolves the alert: the time to recover, from
    // the alert's start, is within the 30-minute RTO.
    s.app
        .post_hook(alert_payload(labels(), s.starts, "resolved"))
        .await;
    let resolved = eventually(20, "the resolution", || async {
        let (_, v) = s.app.get_json(&format!("/api/v1/incidents/{id}")).await;
        v["rto_met"].as_bool().is_some().then_some(v)
    })
    .await;
    assert_eq!(resolved["rto_met"], true, "{resolved:#}");
    assert!(
        resolved["time_to_recover_seconds"].as_f64().unwrap() < 1800.0,
        "{resolved:#}"
    );

    // Nothing waits any more.
    let (status, body) = answer(
        &s.app,
        id,
        "approve",
        Some(API_TOKEN),
        json!({"by": "alice", "choice": OLDER}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
}

/// What a refused scenario 2 leaves: the incident failed after on_failure, one PagerDuty
/// trigger saying why, nothing restored or migrated, the dependents still stopped.
async fn assert_refused(s: &Scenario, id: i64, reason: &str) {
    let detail = s.app.finished_id(id, 60).await;
    assert_eq!(detail["phase"], "failed", "{detail:#}");
    let mut want: Vec<String> = MAIN_FAILED.iter().map(|k| k.to_string()).collect();
    want.extend(
        [
            "fallback/stop:ok",
            "fallback/exec:ok",
            "fallback/approve:failed",
            "on_failure/logs:ok",
        ]
        .map(String::from),
    );
    assert_eq!(kinds(&detail), want, "{detail:#}");
    let triggers = eventually(20, "the page", || async {
        let t: Vec<PdEvent> =
            s.pd.events()
                .into_iter()
                .filter(|e| e.event_action == "trigger")
                .collect();
        (!t.is_empty()).then_some(t)
    })
    .await;
    assert_eq!(triggers.len(), 1, "{triggers:?}");
    let summary = triggers[0].body["payload"]["summary"]
        .as_str()
        .unwrap_or_default();
    assert!(
        summary.contains("fallback step 3 (approve)") && summary.contains(reason),
        "{summary}"
    );
    assert_eq!(read(&s.stack, "postgres", RESTORED_FROM), None);
    assert_eq!(
        read(
            &s.stack,
            "backup",
            "/var/log/stand-ins/postgres_restore.log"
        ),
        None
    );
    assert_eq!(
        read(&s.stack, "postgres", "/var/lib/postgresql/data/CORRUPTED").as_deref(),
        Some(""),
        "still corrupted"
    );
    for svc in ["backend", "celery-worker"] {
        assert_eq!(state(&s.stack, svc, "Running"), false, "{svc} left stopped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_rejected_runs_on_failure_and_pages_with_the_reason_and_restores_nothing() {
    let s = corrupted(None).await;
    let (id, _) = waiting_for_approval(&s.app, "PostgresDown", 90).await;
    let (status, body) = answer(&s.app, id, "reject", Some(API_TOKEN), json!({"by": "bob"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approval"]["decided"]["verdict"], "rejected");
    assert_refused(&s, id, "Rejected by bob").await;
    let (status, _) = answer(&s.app, id, "reject", Some(API_TOKEN), json!({"by": "bob"})).await;
    assert_eq!(status, 409, "nothing waits after the rejection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_unanswered_times_out_like_a_rejection() {
    let s = corrupted(Some("4s")).await;
    let (id, _) = waiting_for_approval(&s.app, "PostgresDown", 90).await;
    assert_refused(&s, id, "Nobody approved before").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answering_an_approval_without_api_token_set_is_forbidden() {
    let app = spawn_app().await;
    for verb in ["approve", "reject"] {
        let (status, body) = answer(&app, 1, verb, Some("anything"), json!({"by": "alice"})).await;
        assert_eq!(status, 403, "{verb}: {body}");
        assert!(body.to_string().contains("api.token"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_failed_with_a_hostile_backup_label_runs_nothing_and_pages_the_dba() {
    let stack = Stack::up(&["backup"]);
    let pd = PagerDutyEmulator::start().await;
    let app = spawn_with(Spawn {
        env: vec![
            ("REMEDIATOR_WEBHOOK_TOKEN".into(), TOKEN.into()),
            ("REMEDIATOR_DOCKER__PROJECT".into(), stack.project.clone()),
            ("REMEDIATOR_PAGERDUTY__URL".into(), pd.url()),
            (
                "REMEDIATOR_PAGERDUTY__ROUTING_KEY".into(),
                PD_ROUTING_KEY.into(),
            ),
        ],
        rules_dir: None,
    })
    .await;
    app.post_hook(fire(json!({
        "alertname": "BackupFailed", "service": "backup", "severity": "warning",
        "backup": "x; touch /tmp/pwned",
    })))
    .await;
    let detail = app.finished("BackupFailed", 60).await;
    assert_eq!(detail["phase"], "failed", "{detail:#}");
    assert_eq!(
        kinds(&detail),
        [
            "main/diagnose:ok",
            "main/logs:ok",
            "main/exec:failed",
            "on_failure/page:ok"
        ]
    );
    let exec = detail["steps"][2]["detail"].as_str().unwrap();
    assert!(exec.contains("does not match the pattern"), "{exec}");
    assert_eq!(
        read(&stack, "backup", "/var/log/stand-ins/verify_backups.log"),
        None,
        "the script never ran"
    );
    stack.exec("backup", &["test", "!", "-e", "/tmp/pwned"]);
    eventually(20, "the dba paged", || async {
        pd.events()
            .iter()
            .any(|e| e.event_action == "trigger")
            .then_some(())
    })
    .await;
}
