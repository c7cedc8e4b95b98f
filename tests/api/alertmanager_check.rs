//! Alertmanager awareness against the real Alertmanager (Debian's): the check just before a
//! runbook's first destructive step (silenced, resolved, unreachable, an HA pair), and the
//! silences remediator makes (`create_silence`, the Slack button's entry point).
//!
//! The webhooks are posted by the test (with the labels pushed to Alertmanager), so each test
//! decides when the incident opens; Alertmanager's own deliveries go to a closed port.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use remediator::alert::Labels;
use remediator::alertmanager::{slack_silence_comment, AlertmanagerClient, AlertmanagerSettings};
use remediator::domain::{AlertNow, SystemClock};

use crate::alertmanager::{start_alertmanager, start_alertmanager_with, Am, AmOptions};
use crate::helpers::*;
use crate::stack::Stack;

fn pg_labels() -> Value {
    json!({"alertname": "PostgresDown", "instance": "postgres:9187", "job": "postgres-exporter",
           "service": "postgres", "severity": "critical"})
}

fn labels_of(v: &Value) -> Labels {
    serde_json::from_value(v.clone()).unwrap()
}

/// A rule for PostgresDown that looks, waits `wait`, then restarts postgres (the first
/// destructive step) and checks it.
fn pg_rules(first: &str, wait: &str) -> tempfile::TempDir {
    rules_with(&format!(
        r#"
rules:
  - name: pg-am
    matchers: ['alertname="PostgresDown"']
    priority: P1
    rto: 30m
    owner: dba
    target: {{ service: postgres }}
    steps:
      {first}
      - wait: {{ duration: {wait} }}
      - restart: {{ grace: 1s }}
      - wait_healthy: {{ within: 1m }}
"#
    ))
}

async fn app(
    rules: &tempfile::TempDir,
    stack: Option<&Stack>,
    extra: &[(&str, String)],
) -> TestApp {
    let mut env = vec![("REMEDIATOR_WEBHOOK_TOKEN".to_string(), TOKEN.to_string())];
    if let Some(stack) = stack {
        env.push((
            "REMEDIATOR_DOCKER__PROJECT".to_string(),
            stack.project.clone(),
        ));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    spawn_with(Spawn {
        env,
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await
}

fn urls(peers: &[&str]) -> (&'static str, String) {
    ("REMEDIATOR_ALERTMANAGER__URLS", peers.join(","))
}

/// The Alertmanager decisions of an incident's detail: (verdict, reason).
fn am_decisions(detail: &Value) -> Vec<(String, String)> {
    detail["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["guard"] == "alertmanager")
        .map(|d| {
            (
                d["verdict"].as_str().unwrap().to_string(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The Slack texts of an incident's detail.
fn slack_texts(detail: &Value) -> Vec<String> {
    detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["sink"] == "slack")
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

fn steps(detail: &Value) -> Vec<String> {
    step_outcomes(detail)
        .into_iter()
        .map(|(_, k, o)| format!("{k}:{o}"))
        .collect()
}

/// `amtool silence add` for these matchers; returns the silence's id.
fn amtool_silence(am: &Am, author: &str, comment: &str, matchers: &[&str]) -> String {
    let out = Command::new(tool("REMEDIATOR_TEST_AMTOOL_BIN", "amtool"))
        .args([
            "silence",
            "add",
            &format!("--alertmanager.url={}", am.url),
            &format!("--author={author}"),
            &format!("--comment={comment}"),
            "--duration=1h",
        ])
        .args(matchers)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "amtool silence add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn client(peers: &[&str]) -> AlertmanagerClient {
    client_with(AlertmanagerSettings {
        urls: peers.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    })
}

fn client_with(settings: AlertmanagerSettings) -> AlertmanagerClient {
    AlertmanagerClient::new(&settings, Arc::new(SystemClock))
        .unwrap()
        .expect("urls are set")
}

/// A port nothing listens on.
fn closed_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_set_in_alertmanager_while_the_runbook_looks_stops_it_before_the_restart() {
    let stack = Stack::up(&["postgres"]);
    let am = start_alertmanager(free_port());
    am.ready().await;
    let rules = pg_rules("- diagnose: {}", "4s");
    let app = app(&rules, Some(&stack), &[urls(&[&am.url])]).await;
    let before = stack.started_at("postgres");

    let labels = pg_labels();
    let starts = Utc::now() - chrono::Duration::seconds(5);
    am.push(&labels, starts, None).await;
    assert_eq!(
        app.post_hook(alert_payload(labels.clone(), starts, "firing"))
            .await
            .status(),
        200
    );
    // The notification went out unsilenced; the silence comes while the runbook runs.
    eventually(20, "the runbook running", || async {
        app.incidents()
            .await
            .into_iter()
            .find(|i| i["phase"] == "remediating")
    })
    .await;
    let id = amtool_silence(
        &am,
        "alice",
        "db work",
        &["alertname=PostgresDown", "service=postgres"],
    );

    let detail = app.finished("PostgresDown", 60).await;
    assert_eq!(detail["phase"], "skipped", "{detail:#}");
    assert_eq!(steps(&detail), ["diagnose:ok", "wait:ok"], "{detail:#}");
    let decisions = am_decisions(&detail);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let (verdict, reason) = &decisions[0];
    assert_eq!(verdict, "skip");
    assert!(
        reason.starts_with(&format!(
            "silenced in Alertmanager by silence {id} (alice: \"db work\", until "
        )) && reason.ends_with("; the runbook stops before restart, nothing touched"),
        "{reason}"
    );
    assert!(
        slack_texts(&detail).contains(&format!("alertmanager: {reason}")),
        "the thread is told: {:#?}",
        slack_texts(&detail)
    );
    assert!(
        !detail["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["sink"] == "pagerduty"),
        "not paged as a failure: {detail:#}"
    );
    assert_eq!(
        stack.started_at("postgres"),
        before,
        "postgres was not restarted"
    );
    let (_, ready) = app.get_json("/-/ready").await;
    let status = ready["checks"]["alertmanager"].as_str().unwrap();
    assert!(
        status.starts_with(&format!("1 peer ({}/); last check at ", am.url))
            && status.ends_with("every peer answered"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_resolved_in_alertmanager_stops_the_runbook_as_no_longer_firing() {
    // No Docker: had the check let the restart through, it would be a failed step.
    let am = start_alertmanager(free_port());
    am.ready().await;
    let rules = pg_rules("", "1s");
    let app = app(&rules, None, &[urls(&[&am.url])]).await;
    let labels = pg_labels();
    let starts = Utc::now() - chrono::Duration::seconds(60);
    am.push(&labels, starts, None).await;
    am.push(
        &labels,
        starts,
        Some(Utc::now() - chrono::Duration::seconds(1)),
    )
    .await;
    eventually(10, "the alert resolved in Alertmanager", || async {
        am.alert(&labels).await.is_none().then_some(())
    })
    .await;
    app.post_hook(alert_payload(labels.clone(), starts, "firing"))
        .await;
    let detail = app.finished("PostgresDown", 30).await;
    assert_eq!(detail["phase"], "skipped", "{detail:#}");
    assert_eq!(steps(&detail), ["wait:ok"]);
    assert_eq!(
        am_decisions(&detail),
        [(
            "skip".to_string(),
            "no longer firing in Alertmanager; the runbook stops before restart, nothing touched"
                .to_string()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_alertmanager_goes_on_by_default_saying_so_and_stops_when_told_to() {
    let stack = Stack::up(&["postgres"]);
    let down = closed_url();
    let rules = pg_rules("- diagnose: {}", "1s");
    let labels = pg_labels();

    let before = stack.started_at("postgres");
    let going = app(&rules, Some(&stack), &[urls(&[&down])]).await;
    going
        .post_hook(alert_payload(labels.clone(), Utc::now(), "firing"))
        .await;
    let detail = going.finished("PostgresDown", 60).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    assert_eq!(
        steps(&detail),
        ["diagnose:ok", "wait:ok", "restart:ok", "wait_healthy:ok"]
    );
    let restarted = stack.started_at("postgres");
    assert_ne!(restarted, before, "postgres was restarted");
    let (verdict, reason) = am_decisions(&detail).remove(0);
    assert_eq!(verdict, "continue");
    assert!(
        reason.starts_with(&format!("Alertmanager unreachable ({down}/: "))
            && reason.ends_with("); going on as alertmanager.on_unreachable = go"),
        "{reason}"
    );
    assert!(slack_texts(&detail).contains(&format!("alertmanager: {reason}")));
    let (_, ready) = going.get_json("/-/ready").await;
    assert_eq!(
        ready["ready"], true,
        "an unreachable Alertmanager is no readiness failure"
    );
    assert!(
        ready["checks"]["alertmanager"]
            .as_str()
            .unwrap()
            .contains(": 0 of 1 answered ("),
        "{ready:#}"
    );

    let stopping = app(
        &rules,
        Some(&stack),
        &[
            urls(&[&down]),
            ("REMEDIATOR_ALERTMANAGER__ON_UNREACHABLE", "stop".into()),
        ],
    )
    .await;
    stopping
        .post_hook(alert_payload(labels, Utc::now(), "firing"))
        .await;
    let detail = stopping.finished("PostgresDown", 60).await;
    assert_eq!(detail["phase"], "skipped", "{detail:#}");
    assert_eq!(steps(&detail), ["diagnose:ok", "wait:ok"]);
    let (verdict, reason) = am_decisions(&detail).remove(0);
    assert_eq!(verdict, "skip");
    assert!(
        reason.ends_with("; the runbook stops before restart, nothing touched, as alertmanager.on_unreachable = stop"),
        "{reason}"
    );
    assert!(slack_texts(&detail).contains(&format!("alertmanager: {reason}")));
    assert_eq!(
        stack.started_at("postgres"),
        restarted,
        "not restarted again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_made_on_one_peer_of_an_ha_pair_stops_the_runbook_even_with_that_peer_down() {
    let a = start_alertmanager_with(
        free_port(),
        AmOptions {
            cluster: true,
            ..Default::default()
        },
    );
    let mut b = start_alertmanager_with(
        free_port(),
        AmOptions {
            cluster: true,
            join: vec![&a],
            ..Default::default()
        },
    );
    a.ready().await;
    b.ready().await;
    eventually(20, "the pair gossiping", || async {
        let s = a.get("/api/v2/status").await;
        (s["cluster"]["peers"].as_array()?.len() == 2).then_some(())
    })
    .await;

    // Prometheus sends its alerts to every peer.
    let labels = pg_labels();
    let starts = Utc::now() - chrono::Duration::seconds(5);
    a.push(&labels, starts, None).await;
    b.push(&labels, starts, None).await;
    let id = amtool_silence(&b, "bob", "failover drill", &["alertname=PostgresDown"]);
    eventually(20, "the silence gossiped to the other peer", || async {
        let alert = a.alert(&labels).await?;
        (alert["status"]["silencedBy"] == json!([id])).then_some(())
    })
    .await;
    // The peer where the silence was made goes away: the other one still knows.
    b.kill();

    let rules = pg_rules("", "1s");
    let app = app(&rules, None, &[urls(&[&b.url, &a.url])]).await;
    app.post_hook(alert_payload(labels, starts, "firing")).await;
    let detail = app.finished("PostgresDown", 30).await;
    assert_eq!(detail["phase"], "skipped", "{detail:#}");
    assert_eq!(steps(&detail), ["wait:ok"]);
    let (verdict, reason) = am_decisions(&detail).remove(0);
    assert_eq!(verdict, "skip");
    assert!(
        reason.starts_with(&format!(
            "silenced in Alertmanager by silence {id} (bob: \"failover drill\", until "
        )),
        "{reason}"
    );
    let (_, ready) = app.get_json("/-/ready").await;
    let status = ready["checks"]["alertmanager"].as_str().unwrap();
    assert!(
        status.starts_with("2 peers (") && status.contains(": 1 of 2 answered ("),
        "{status}"
    );
}

#[tokio::test]
async fn create_silence_makes_a_silence_for_exactly_the_labels_on_the_first_peer_that_takes_it() {
    let am = start_alertmanager(free_port());
    am.ready().await;
    let labels = pg_labels();
    am.push(&labels, Utc::now() - chrono::Duration::seconds(5), None)
        .await;
    // The first peer is down: the silence goes to the next one.
    let c = client(&[&closed_url(), &am.url]);
    let comment = slack_silence_comment(7, Some("postgres-down"), "alice");
    let made_at = Utc::now();
    let id = c
        .create_silence(
            &labels_of(&labels),
            "alice",
            &comment,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();

    let silences = am.get("/api/v2/silences").await;
    let silence = silences
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.0)
        .unwrap_or_else(|| panic!("{id} not in {silences:#}"));
    assert_eq!(silence["createdBy"], "alice");
    assert_eq!(
        silence["comment"],
        "remediator: silenced from Slack on incident #7 (postgres-down) by alice"
    );
    assert_eq!(silence["status"]["state"], "active");
    let mut matchers: Vec<Value> = silence["matchers"].as_array().unwrap().clone();
    matchers.sort_by_key(|m| m["name"].as_str().unwrap().to_string());
    let want: Vec<Value> = labels_of(&labels)
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v, "isRegex": false, "isEqual": true}))
        .collect();
    assert_eq!(matchers, want);
    let ends: chrono::DateTime<Utc> = silence["endsAt"].as_str().unwrap().parse().unwrap();
    let hour = ends - made_at;
    assert!(
        hour >= chrono::Duration::minutes(59) && hour <= chrono::Duration::minutes(61),
        "{hour}"
    );

    // The check sees it, with who made it and why.
    match c.current(&labels_of(&labels)).await.unwrap() {
        AlertNow::Silenced { by } => {
            assert_eq!(by.len(), 1, "{by:?}");
            assert_eq!(
                (
                    by[0].id.as_str(),
                    by[0].created_by.as_str(),
                    by[0].comment.as_str()
                ),
                (id.0.as_str(), "alice", comment.as_str())
            );
        }
        other => panic!("{other:?}"),
    }

    let refused = c
        .create_silence(&labels_of(&labels), "alice", " ", Duration::from_secs(3600))
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "cannot make this silence: the comment is empty: say why (amtool requires one too)"
    );
    let all_down = client(&[&closed_url()])
        .create_silence(&labels_of(&labels), "alice", "x", Duration::from_secs(60))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        all_down.starts_with("no Alertmanager peer took the silence: http://127.0.0.1:"),
        "{all_down}"
    );
}

#[tokio::test]
async fn the_check_sees_an_inhibition_by_name_and_ignores_alerts_with_more_labels() {
    // deploy/alertmanager.yml: PostgresDown inhibits BackupFailed.
    let am = start_alertmanager(free_port());
    am.ready().await;
    let starts = Utc::now() - chrono::Duration::seconds(5);
    let backup = json!({"alertname": "BackupFailed", "service": "backup"});
    am.push(&backup, starts, None).await;
    // A firing alert whose labels include ours, silenced: not ours.
    let wider = json!({"alertname": "BackupFailed", "service": "backup", "replica": "b"});
    am.push(&wider, starts, None).await;
    amtool_silence(&am, "carol", "noise", &["replica=b"]);
    let c = client(&[&am.url]);
    assert_eq!(
        c.current(&labels_of(&backup)).await.unwrap(),
        AlertNow::Active
    );

    am.push(&pg_labels(), starts, None).await;
    let fingerprint = eventually(10, "PostgresDown listed", || async {
        am.alert(&pg_labels()).await?["fingerprint"]
            .as_str()
            .map(str::to_string)
    })
    .await;
    let now = eventually(10, "BackupFailed inhibited", || async {
        match c.current(&labels_of(&backup)).await.ok()? {
            AlertNow::Inhibited { by } => Some(by),
            _ => None,
        }
    })
    .await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0].fingerprint, fingerprint);
    assert_eq!(now[0].alertname.as_deref(), Some("PostgresDown"));

    let missing = json!({"alertname": "BackupFailed", "service": "other"});
    assert_eq!(
        c.current(&labels_of(&missing)).await.unwrap(),
        AlertNow::Gone,
        "not known to the peer: gone"
    );
}

#[tokio::test]
async fn basic_auth_is_sent_and_a_refusal_names_the_peer_and_the_status() {
    // The bcrypt hash (cost 4) of "am-secret-Zm9v".
    let web = "basic_auth_users:\n  remediator: $2b$04$mvXva7zm6Oj0UD0N/Qr3xOvotBeI5nT4suj8KCUINyaur5NmSZ2Ya\n";
    let am = start_alertmanager_with(
        free_port(),
        AmOptions {
            web_config: Some(web.into()),
            ..Default::default()
        },
    );
    am.ready().await;
    let labels = labels_of(&pg_labels());
    let e = client(&[&am.url])
        .current(&labels)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "no Alertmanager peer answered: {}/ answered GET /api/v2/alerts with HTTP 401: ",
            am.url
        )),
        "{e}"
    );
    let authed = client_with(AlertmanagerSettings {
        urls: vec![am.url.clone()],
        basic_user: Some("remediator".into()),
        basic_password: Some("am-secret-Zm9v".into()),
        ..Default::default()
    });
    assert_eq!(authed.current(&labels).await.unwrap(), AlertNow::Gone);
}
