//! Runbooks started by hand (`POST /api/v1/runs`, `remediator run`) and drills
//! (`remediator drill`): the incident's origin, its thread, its refusals, RTO tracking, and
//! drills against the real compose stack that never reach PagerDuty.

use serde_json::{json, Value};

use crate::emulators::*;
use crate::helpers::*;
use crate::stack::Stack;

const API_TOKEN: &str = "api-token-for-run-tests";

const RULES: &str = r#"
rules:
  - name: full-check
    matchers: ['alertname="FullCheck"', 'site=~"eu-.*"']
    priority: P2
    rto: 15m
    owner: infra
    target: { none: true }
    steps:
      - notify: { message: "checking everything" }
  - name: slow-check
    matchers: ['alertname="SlowCheck"']
    priority: P3
    rto: 1s
    owner: infra
    target: { none: true }
    steps:
      - wait: { duration: 1500ms }
"#;

fn env(
    slack: &SlackEmulator,
    pd: &PagerDutyEmulator,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env = vec![
        ("REMEDIATOR_WEBHOOK_TOKEN".to_string(), TOKEN.to_string()),
        ("REMEDIATOR_API__TOKEN".into(), API_TOKEN.into()),
        ("REMEDIATOR_SLACK__API_URL".into(), slack.url()),
        ("REMEDIATOR_SLACK__BOT_TOKEN".into(), SLACK_TOKEN.into()),
        ("REMEDIATOR_SLACK__CHANNEL".into(), SLACK_CHANNEL.into()),
        ("REMEDIATOR_SLACK__TIMEOUT".into(), "2s".into()),
        ("REMEDIATOR_PAGERDUTY__URL".into(), pd.url()),
        (
            "REMEDIATOR_PAGERDUTY__ROUTING_KEY".into(),
            PD_ROUTING_KEY.into(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

async fn post_run(app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    let resp = app
        .client
        .post(format!("{}/api/v1/runs", app.addr))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn incident(app: &TestApp, id: i64) -> Value {
    detail_at(&app.client, &app.addr, API_TOKEN, id).await
}

async fn resolved(app: &TestApp, id: i64, secs: u64) -> Value {
    eventually(secs, "the incident to be resolved", || async {
        let inc = incident(app, id).await;
        (inc["state"] == "resolved").then_some(inc)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_through_the_api_opens_a_manual_incident_that_runs_its_runbook_in_a_thread() {
    let (slack, pd) = (
        SlackEmulator::start().await,
        PagerDutyEmulator::start().await,
    );
    let rules = rules_with(RULES);
    let app = spawn_with(Spawn {
        env: env(&slack, &pd, &[]),
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await;
    let (status, body) = post_run(
        &app,
        API_TOKEN,
        json!({ "rule": "full-check", "labels": { "site": "eu-1" }, "by": "alice" }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["origin"], "manual");
    assert_eq!(
        body["labels"],
        json!({ "alertname": "FullCheck", "site": "eu-1" })
    );
    let id = body["incident"].as_i64().unwrap();
    let inc = resolved(&app, id, 20).await;
    assert_eq!(inc["origin"], "manual", "{inc:#}");
    assert_eq!(inc["started"]["by"], "alice");
    assert_eq!(inc["rule"], "full-check");
    assert_eq!(inc["phase"], "recovered");
    assert_eq!(inc["rto_seconds"], 900.0);
    assert_eq!(inc["rto_met"], true);
    assert!(inc["time_to_recover_seconds"].as_f64().unwrap() < 900.0);
    let steps = step_outcomes(&inc);
    assert_eq!(steps.len(), 1, "{inc:#}");
    assert_eq!((steps[0].1.as_str(), steps[0].2.as_str()), ("notify", "ok"));
    // The thread: a root, then who started it and the runbook's replies.
    let msgs = eventually(10, "the thread", || async {
        let m = slack.messages();
        m.iter()
            .any(|m| m.text.contains("checking everything"))
            .then_some(m)
    })
    .await;
    let root = &msgs[0];
    assert!(root.thread_ts.is_none());
    assert!(
        root.blocks
            .as_ref()
            .unwrap()
            .to_string()
            .contains("by hand, by alice"),
        "{root:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.thread_ts.as_deref() == Some(root.ts.as_str())
                && m.text
                    .contains("runbook full-check started by hand by alice")),
        "{msgs:#?}"
    );
    assert!(pd.events().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_refused_with_what_is_wrong_and_nothing_opens() {
    let (slack, pd) = (
        SlackEmulator::start().await,
        PagerDutyEmulator::start().await,
    );
    let rules = rules_with(RULES);
    let app = spawn_with(Spawn {
        env: env(&slack, &pd, &[]),
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await;
    let (status, body) = post_run(&app, API_TOKEN, json!({ "rule": "no-such-rule" })).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().starts_with(
            "rule: no rule named \"no-such-rule\" is loaded (known: full-check, slow-check)"
        ),
        "{body}"
    );
    let (status, body) = post_run(&app, API_TOKEN, json!({ "rule": "full-check" })).await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(r#"matcher site=~"eu-.*" is not satisfied by a missing site"#)
            && detail.contains("--label site=VALUE"),
        "{body}"
    );
    let (status, body) = post_run(
        &app,
        API_TOKEN,
        json!({ "rule": "full-check", "labels": { "site": "us-1" } }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post_run(
        &app,
        API_TOKEN,
        json!({ "rule": "full-check", "labels": { "site": "eu-1" }, "break": "stop" }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("break: only a live drill"),
        "{body}"
    );
    let (status, body) =
        post_run(&app, API_TOKEN, json!({ "rule": "full-check", "typo": 1 })).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `typo`"),
        "{body}"
    );
    let (status, _) = post_run(
        &app,
        "not-the-token",
        json!({ "rule": "full-check", "labels": { "site": "eu-1" } }),
    )
    .await;
    assert_eq!(status, 401);
    assert!(app.incidents().await.is_empty(), "nothing was opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remediator_run_starts_the_runbook_through_the_running_service() {
    let (slack, pd) = (
        SlackEmulator::start().await,
        PagerDutyEmulator::start().await,
    );
    let rules = rules_with(RULES);
    let app = spawn_with(Spawn {
        env: env(&slack, &pd, &[]),
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await;
    let out = remediator(
        &[
            "run",
            "full-check",
            "--label",
            "site=eu-2",
            "--by",
            "bob",
            "--url",
            &app.addr,
        ],
        &[("REMEDIATOR_API__TOKEN", API_TOKEN)],
    )
    .await;
    let text = stdout(&out);
    assert!(
        text.contains("opened for rule full-check by bob (alertname=FullCheck, site=eu-2)"),
        "{text}"
    );
    let id: i64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("incident id");
    let inc = resolved(&app, id, 20).await;
    assert_eq!(inc["origin"], "manual");
    assert_eq!(inc["phase"], "recovered");
    let out = remediator(
        &["run", "full-check", "--url", &app.addr],
        &[("REMEDIATOR_API__TOKEN", API_TOKEN)],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("400") && err.contains("--label site=VALUE"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_past_its_rto_is_a_breach_in_the_metrics_by_rule() {
    let (slack, pd) = (
        SlackEmulator::start().await,
        PagerDutyEmulator::start().await,
    );
    let rules = rules_with(RULES);
    let app = spawn_with(Spawn {
        env: env(&slack, &pd, &[]),
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await;
    for body in [
        json!({ "rule": "slow-check" }),
        json!({ "rule": "full-check", "labels": { "site": "eu-1" } }),
    ] {
        let (status, body) = post_run(&app, API_TOKEN, body).await;
        assert_eq!(status, 201, "{body}");
        let inc = resolved(&app, body["incident"].as_i64().unwrap(), 20).await;
        assert_eq!(inc["phase"], "recovered");
    }
    let slow = &app.incidents().await;
    let slow = slow.iter().find(|i| i["rule"] == "slow-check").unwrap();
    assert_eq!(slow["rto_met"], false, "{slow:#}");
    assert!(slow["time_to_recover_seconds"].as_f64().unwrap() >= 1.5);
    let metrics = eventually(10, "both recoveries in /metrics", || async {
        let text = app
            .client
            .get(format!("{}/metrics", app.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains(
            r#"remediator_time_to_recover_seconds_count{rule="full-check",origin="manual"} 1"#,
        )
        .then_some(text)
    })
    .await;
    assert!(
        metrics.contains(
            r#"remediator_time_to_recover_seconds_count{rule="slow-check",origin="manual"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"remediator_rto_breaches_total{rule="slow-check",origin="manual"} 1"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"remediator_rto_breaches_total{rule="full-check""#),
        "{metrics}"
    );
    // The 2 s bucket holds the slow one's 1.5 s.
    assert!(
        metrics.contains(r#"remediator_time_to_recover_seconds_bucket{le="2.0",rule="slow-check",origin="manual"} 1"#)
            || metrics.contains(r#"remediator_time_to_recover_seconds_bucket{rule="slow-check",origin="manual",le="2.0"} 1"#),
        "{metrics}"
    );
}

async fn drill_app(stack: &Stack, slack: &SlackEmulator, pd: &PagerDutyEmulator) -> TestApp {
    spawn_with(Spawn {
        env: env(
            slack,
            pd,
            &[("REMEDIATOR_DOCKER__PROJECT", stack.project.clone())],
        ),
        rules_dir: None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_drill_executes_nothing_reports_each_step_and_pages_nobody() {
    let stack = Stack::up(&["redis"]);
    let (slack, pd) = (
        SlackEmulator::start().await,
        PagerDutyEmulator::start().await,
    );
    let app = drill_app(&stack, &slack, &pd).await;
    let before = stack.started_at("redis");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("drill.md");
    let out = remediator(
        &[
            "drill",
            "single-service-failure",
            "--service",
            "redis",
            "--report",
            report.to_str().unwrap(),
            "--by",
            "carol",
            "--url",
            &app.addr,
        ],
        &[("REMEDIATOR_API__TOKEN", API_TOKEN)],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(
        text.starts_with("# DR drill: single-service-failure\n"),
        "{text}"
    );
    assert!(text.contains("origin drill, started by carol"), "{text}");
    assert!(text.contains("- Mode: dry-run"), "{text}");
    assert!(
        text.contains("No step was executed (dry-run (a drill without --live): would run logs, restart, wait_healthy on service:redis)"),
        "{text}"
    );
    assert!(
        text.contains("Not timed: a dry-run executes no step (RTO 15m 00s)"),
        "{text}"
    );
    assert!(text.contains("## Result: PASS"), "{text}");
    assert_eq!(stack.started_at("redis"), before, "nothing was executed");
    let inc = app.incidents().await.pop().unwrap();
    assert_eq!(inc["origin"], "drill");
    assert_eq!(inc["state"], "resolved");
    assert_eq!(inc["phase"], "skipped");
    let root = eventually(10, "the drill's root", || async {
        slack.messages().into_iter().find(|m| m.thread_ts.is_none())
    })
    .await;
    assert!(root.text.starts_with("DRILL [P2]"), "{root:?}");
    assert!(pd.events().is_empty(), "{:?}", pd.events());
}

/// `remediator drill ARGS… --report FILE --url APP` with the API token: how it ended, and the
/// report it wrote (empty when none).
async fn drill(app: &TestApp, args: &[&str]) -> (std::process::Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("drill.md");
    let mut all = vec!["drill"];
    all.extend(args);
    all.extend(["--report", report.to_str().unwrap(), "--url", &app.addr]);
    let out = remediator(&all, &[("REMEDIATOR_API__TOKEN", API_TOKEN)]).await;
    (out, std::fs::read_to_string(&report).unwrap_or_default())
}

/// A live drill of the shipped single-service rule on redis, broken by `how` (stop, kill)
/// once the thread's announcement is out: the runbook brings it back, the report says PASS
/// with each step timed, and PagerDuty hears nothing.
async fn live_drill_breaking_with(how: &str) {
    let stack = Stack::up(&["redis"]);
    let (slack, pd) = (
        SlackEmulator::start().await,
        PagerDutyEmulator::start().await,
    );
    let app = drill_app(&stack, &slack, &pd).await;
    let before = stack.started_at("redis");
    let (out, text) = drill(
        &app,
        &[
            "single-service-failure",
            "--service",
            "redis",
            "--live",
            "--break",
            how,
            "--wait",
            "2m",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("- Mode: live, target broken by {how} first")),
        "{text}"
    );
    assert!(
        text.contains(&format!("drill: broke service:redis by {how} in")),
        "{text}"
    );
    for step in ["logs", "restart", "wait_healthy"] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("| main | {step} | ok | ")) && l.contains(" s |")),
            "{step}: {text}"
        );
    }
    assert!(text.contains("against an RTO of 15m 00s: met"), "{text}");
    assert!(text.contains("## Result: PASS"), "{text}");
    // Broken, then brought back by the runbook: a new start, running and healthy.
    assert_ne!(stack.started_at("redis"), before, "redis was started again");
    let state = &stack.inspect("redis")["State"];
    assert_eq!(state["Running"], true, "{state:#}");
    assert_eq!(state["Health"]["Status"], "healthy", "{state:#}");
    let inc = app.incidents().await.pop().unwrap();
    assert_eq!(
        (inc["origin"].as_str(), inc["phase"].as_str()),
        (Some("drill"), Some("recovered"))
    );
    // The stakeholders were told before the break: the announcement comes first in the thread.
    let texts: Vec<String> = slack.messages().into_iter().map(|m| m.text).collect();
    let announced = texts
        .iter()
        .position(|t| t.starts_with("DRILL of rule single-service-failure"));
    let broke = texts
        .iter()
        .position(|t| t.starts_with(&format!("drill: broke service:redis by {how}")));
    assert!(
        matches!((announced, broke), (Some(a), Some(b)) if a < b),
        "the announcement, then the break: {texts:#?}"
    );
    assert!(pd.events().is_empty(), "{:?}", pd.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_drill_breaks_its_target_restarts_it_and_passes_without_paging() {
    live_drill_breaking_with("stop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_drill_that_kills_its_target_after_the_announcement_brings_it_back_and_passes() {
    live_drill_breaking_with("kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_drill_reports_fail_exits_1_names_who_would_be_paged_and_never_pages() {
    let stack = Stack::up(&["redis"]);
    let (slack, pd) = (
        SlackEmulator::start().await,
        PagerDutyEmulator::start().await,
    );
    // A contact Slack knows: a real page would mention them; a drill's page must not.
    slack.add_user("infra@voiceai-testing.local", "U0INFRA01");
    slack.add_user("oncall@voiceai-testing.local", "U0ONCALL1");
    let rules = rules_with(
        r#"
rules:
  - name: drill-fails
    matchers: ['alertname="DrillFails"']
    priority: P2
    rto: 15m
    owner: infra
    target: { service: redis }
    steps:
      - wait_healthy: { within: 2s }
    on_failure:
      - page: {}
"#,
    );
    let app = spawn_with(Spawn {
        env: env(
            &slack,
            &pd,
            &[("REMEDIATOR_DOCKER__PROJECT", stack.project.clone())],
        ),
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await;
    // Unhealthy until recreated: the check fails however long it waits.
    stack.exec("redis", &["touch", "/etc/unhealthy"]);
    eventually(20, "redis unhealthy", || async {
        (stack.inspect("redis")["State"]["Health"]["Status"] == "unhealthy").then_some(())
    })
    .await;
    let (out, text) = drill(&app, &["drill-fails", "--live", "--wait", "1m"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed drill exits 1: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("## Result: FAIL"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("| main | wait_healthy | ") && !l.contains("| ok |")),
        "{text}"
    );
    assert!(text.contains("- step wait_healthy (main) "), "{text}");
    // The incident has ended: the drill's page is in the thread, naming without mentioning.
    let inc = app.incidents().await.pop().unwrap();
    assert_eq!(inc["origin"], "drill");
    assert_eq!(inc["state"], "resolved", "{inc:#}");
    let page = eventually(10, "the drill's page in the thread", || async {
        slack
            .messages()
            .into_iter()
            .find(|m| m.text.starts_with("DRILL, nobody paged: would page "))
    })
    .await;
    assert!(page.thread_ts.is_some(), "a reply in the thread: {page:?}");
    assert!(
        page.text
            .starts_with("DRILL, nobody paged: would page oncall."),
        "{page:?}"
    );
    // Named, not mentioned: no Slack notification reaches the on-call engineer (the root
    // still tells the owner, as any incident's does: the stakeholders hear of the drill).
    assert!(!page.text.contains("<@"), "{page:?}");
    assert!(
        !slack
            .messages()
            .iter()
            .any(|m| m.text.contains("<@U0ONCALL1>")),
        "{:#?}",
        slack.messages()
    );
    // The page's PagerDuty row was handled (settled as a drill's: not sent) and the outbox is
    // empty: nothing more can reach PagerDuty, and nothing did.
    let detail = incident(&app, inc["id"].as_i64().unwrap()).await;
    eventually(10, "every notice of the drill settled", || async {
        let m = app.metrics().await?;
        let handled = m.lines().any(|l| {
            l.starts_with("remediator_outbox_deliveries_total{")
                && l.contains(r#"sink="pagerduty""#)
                && l.contains(r#"result="delivered""#)
        });
        (handled && m.lines().any(|l| l == "remediator_outbox_depth 0")).then_some(())
    })
    .await;
    assert!(pd.events().is_empty(), "{:?}\n{detail:#}", pd.events());
    assert!(pd.rejected().is_empty(), "{:?}", pd.rejected());
}
