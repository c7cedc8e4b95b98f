//! Slack threads, PagerDuty pages, escalation and acknowledgements, against local emulators
//! of both APIs that answer as their documentation says (ok:false on 200, 429 + Retry-After).

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use crate::emulators::*;
use crate::helpers::*;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const API_TOKEN: &str = "api-token-for-tests";

struct World {
    app: TestApp,
    slack: SlackEmulator,
    pd: PagerDutyEmulator,
}

async fn world_with(channel: &str, rules_dir: Option<std::path::PathBuf>) -> World {
    let slack = SlackEmulator::start().await;
    let pd = PagerDutyEmulator::start().await;
    slack.add_user("oncall@voiceai-testing.local", "U0ONCALL");
    slack.add_user("dba@voiceai-testing.local", "U0DBA");
    slack.add_user("eng-lead@voiceai-testing.local", "U0LEAD");
    let app = spawn_with(Spawn {
        env: vec![
            ("REMEDIATOR_WEBHOOK_TOKEN".into(), TOKEN.into()),
            ("REMEDIATOR_API__TOKEN".into(), API_TOKEN.into()),
            ("REMEDIATOR_SLACK__API_URL".into(), slack.url()),
            ("REMEDIATOR_SLACK__BOT_TOKEN".into(), SLACK_TOKEN.into()),
            ("REMEDIATOR_SLACK__CHANNEL".into(), channel.into()),
            (
                "REMEDIATOR_SLACK__SIGNING_SECRET".into(),
                SIGNING_SECRET.into(),
            ),
            ("REMEDIATOR_SLACK__TIMEOUT".into(), "2s".into()),
            ("REMEDIATOR_PAGERDUTY__URL".into(), pd.url()),
            (
                "REMEDIATOR_PAGERDUTY__ROUTING_KEY".into(),
                PD_ROUTING_KEY.into(),
            ),
        ],
        rules_dir,
    })
    .await;
    World { app, slack, pd }
}

async fn world() -> World {
    world_with(SLACK_CHANNEL, None).await
}

/// The incident's Slack messages as the service stored them, once all are delivered.
async fn all_delivered(app: &TestApp, id: i64, secs: u64) -> Vec<Value> {
    eventually(secs, "every Slack message delivered", || async {
        let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
        let msgs: Vec<Value> = d["messages"]
            .as_array()?
            .iter()
            .filter(|m| m["sink"] == "slack")
            .cloned()
            .collect();
        (!msgs.is_empty() && msgs.iter().all(|m| !m["delivered_at"].is_null())).then_some(msgs)
    })
    .await
}

/// Checks that the thread holds exactly the incident's replies, once each, in order.
fn assert_thread_matches(slack: &SlackEmulator, stored: &[Value]) -> String {
    let roots: Vec<_> = slack
        .messages()
        .into_iter()
        .filter(|m| m.thread_ts.is_none())
        .collect();
    assert_eq!(roots.len(), 1, "one root message: {roots:#?}");
    let root = &roots[0];
    let thread = slack.thread(&root.ts);
    let replies: Vec<&Value> = stored
        .iter()
        .filter(|m| m["kind"] != "opened" && m["kind"] != "state")
        .collect();
    assert_eq!(
        thread.len(),
        replies.len(),
        "every reply once:\n{thread:#?}\n{replies:#?}"
    );
    for (posted, stored) in thread.iter().zip(&replies) {
        // Mentions replace names when posted; the first two words identify the message.
        let text = stored["text"].as_str().unwrap();
        let head = text
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            posted.text.contains(&head),
            "in order: {:?} vs {text:?}",
            posted.text
        );
    }
    root.ts.clone()
}

#[tokio::test]
async fn one_thread_per_incident_with_mentions_updates_and_a_pagerduty_page() {
    let w = world().await;
    w.app.post_hook(fixture("postgres-down-firing.json")).await;
    let detail = w.app.finished("PostgresDown", 30).await;
    let id = detail["id"].as_i64().unwrap();
    let stored = all_delivered(&w.app, id, 30).await;
    let root_ts = assert_thread_matches(&w.slack, &stored);

    let root = w
        .slack
        .messages()
        .into_iter()
        .find(|m| m.ts == root_ts)
        .unwrap();
    assert!(
        root.text.contains("P1") && root.text.contains("PostgresDown"),
        "{}",
        root.text
    );
    let blocks = root.blocks.unwrap().to_string();
    assert!(
        blocks.contains("\"action_id\":\"ack\"") && blocks.contains(&format!("\"value\":\"{id}\"")),
        "{blocks}"
    );
    assert!(
        blocks.contains("*Owner*\\n<@U0DBA>") && !blocks.contains("<@U0ONCALL>"),
        "the rule's owner, and only them, mentioned: {blocks}"
    );

    let thread = w.slack.thread(&root_ts);
    let page = thread
        .iter()
        .find(|m| m.text.contains("paged:"))
        .expect("a page in the thread");
    assert!(
        page.text.starts_with("<@U0ONCALL> <@U0DBA> paged:"),
        "{}",
        page.text
    );
    let updates = w.slack.updates();
    assert!(
        updates.iter().all(|u| u.ts == root_ts),
        "updates go to the root"
    );
    assert!(
        updates
            .last()
            .unwrap()
            .blocks
            .as_ref()
            .unwrap()
            .to_string()
            .contains("escalated"),
        "{updates:#?}"
    );

    let trigger = eventually(20, "PagerDuty trigger", || async {
        w.pd.events()
            .into_iter()
            .find(|e| e.event_action == "trigger")
    })
    .await;
    let key = pd_key(&w.app, id).await;
    assert_eq!(trigger.dedup_key, key);
    assert_eq!(trigger.payload.as_ref().unwrap()["severity"], "critical");
    assert_eq!(trigger.body["payload"]["custom_details"]["priority"], "P1");

    w.app
        .post_hook(fixture("postgres-down-resolved.json"))
        .await;
    eventually(20, "PagerDuty resolve", || async {
        (w.pd.alert(PD_ROUTING_KEY, &key) == Some(AlertStatus::Resolved)).then_some(())
    })
    .await;
    let stored = all_delivered(&w.app, id, 20).await;
    assert_thread_matches(&w.slack, &stored);
    let last = w.slack.updates().last().cloned().unwrap();
    let text = last.blocks.unwrap().to_string();
    assert!(
        text.contains("resolved") && text.contains("within the RTO of 30m"),
        "{text}"
    );
    assert!(
        !text.contains("\"action_id\":\"ack\""),
        "no Acknowledge button once resolved"
    );
}

#[tokio::test]
async fn rate_limits_errors_and_an_outage_lose_nothing_and_keep_the_order() {
    let w = world().await;
    w.slack.fail_next(
        3,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    w.slack.fail_next(2, Fault::ServerError);
    w.pd.fail_next(2, PdFault::ServerError);
    w.app.post_hook(fixture("postgres-down-firing.json")).await;
    eventually(30, "Slack answering every injected fault", || async {
        let calls = w.slack.calls();
        let limited = calls.iter().filter(|c| c.outcome == "http 429").count();
        let failed = calls.iter().filter(|c| c.outcome.contains("500")).count();
        (limited == 3 && failed == 2).then_some(())
    })
    .await;
    // The second incident opens while Slack is down, so its messages are tried during the
    // outage for certain (and the first's may be, still backing off).
    w.slack.go_down().await;
    w.app
        .post_hook(fixture("high-queue-depth-firing.json"))
        .await;
    eventually(30, "a delivery tried while Slack is down", || async {
        let (_, ready) = w.app.get_json("/-/ready").await;
        ready["checks"]["slack"]
            .as_str()?
            .starts_with("retrying: cannot reach Slack")
            .then_some(())
    })
    .await;
    w.slack.come_back().await;

    let incidents = w.app.incidents().await;
    assert_eq!(incidents.len(), 2);
    let mut roots = Vec::new();
    for inc in &incidents {
        let id = inc["id"].as_i64().unwrap();
        w.app.finished_id(id, 30).await;
        let stored = all_delivered(&w.app, id, 60).await;
        let root = w
            .slack
            .messages()
            .into_iter()
            .find(|m| {
                m.thread_ts.is_none()
                    && m.blocks
                        .as_ref()
                        .is_some_and(|b| b.to_string().contains(&format!("\"value\":\"{id}\"")))
            })
            .expect("a root per incident");
        let thread = w.slack.thread(&root.ts);
        let replies: Vec<&Value> = stored
            .iter()
            .filter(|m| m["kind"] != "opened" && m["kind"] != "state")
            .collect();
        assert_eq!(
            thread.len(),
            replies.len(),
            "incident {id}: every reply once, in its own thread"
        );
        roots.push(root.ts);
    }
    assert_ne!(roots[0], roots[1]);
    let calls = w.slack.calls();
    assert!(calls.iter().any(|c| c.outcome == "http 429"), "{calls:?}");
    assert!(calls.iter().any(|c| c.outcome.contains("500")), "{calls:?}");
    eventually(30, "both pages reach PagerDuty", || async {
        (w.pd
            .events()
            .iter()
            .filter(|e| e.event_action == "trigger")
            .count()
            == 2)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_refused_channel_is_held_counted_shown_and_retried_after_a_reload() {
    let w = world_with("C0NOTYET", None).await;
    w.app
        .post_hook(fixture("high-queue-depth-firing.json"))
        .await;
    let (_, ready) = eventually(20, "the refusal on /-/ready", || async {
        let (code, r) = w.app.get_json("/-/ready").await;
        r["checks"]["slack"]
            .as_str()
            .unwrap_or("")
            .starts_with("failing")
            .then_some((code, r))
    })
    .await;
    assert!(
        ready["checks"]["slack"]
            .as_str()
            .unwrap()
            .contains("channel_not_found"),
        "{ready}"
    );
    assert_eq!(ready["checks"]["held_notifications"][0]["messages"], 1);
    let metrics = w
        .app
        .client
        .get(format!("{}/metrics", w.app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("remediator_slack_api_errors_total{error=\"channel_not_found\"} 1"),
        "{metrics}"
    );
    assert!(w.slack.messages().is_empty());

    w.slack.add_channel("C0NOTYET");
    let r = w
        .app
        .client
        .post(format!("{}/-/reload", w.app.addr))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = w.app.incidents().await[0]["id"].as_i64().unwrap();
    let stored = all_delivered(&w.app, id, 30).await;
    assert_thread_matches(&w.slack, &stored);
}

fn signed(body: &str, ts: i64, secret: &str) -> (String, String) {
    let ts = ts.to_string();
    let signature = slack_signature(secret.as_bytes(), &ts, body.as_bytes());
    (ts, signature)
}

/// POSTs a Slack interaction with the given timestamp and signature headers.
async fn post_interaction(app: &TestApp, body: &str, ts: String, sig: String) -> reqwest::Response {
    app.client
        .post(format!("{}/hooks/slack/interactions", app.addr))
        .header("X-Slack-Request-Timestamp", ts)
        .header("X-Slack-Signature", sig)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_acknowledge_button_is_verified_recorded_and_stops_the_tiers() {
    let w = world().await;
    w.app.post_hook(fixture("postgres-down-firing.json")).await;
    let id = w.app.finished("PostgresDown", 30).await["id"]
        .as_i64()
        .unwrap();
    let body = slack_ack_interaction(id, "U0ONCALL", "oncall");
    let now = Utc::now().timestamp();

    for (ts, sig) in [
        signed(&body, now, "not-the-secret"),
        signed(&body, now - 301, SIGNING_SECRET),
        (now.to_string(), "v0=deadbeef".to_string()),
        (String::new(), String::new()),
    ] {
        let r = post_interaction(&w.app, &body, ts, sig).await;
        assert_eq!(r.status(), 401);
    }
    let (_, d) = w.app.get_json(&format!("/api/v1/incidents/{id}")).await;
    assert!(d["acked_by"].is_null(), "nothing changed");

    let (ts, sig) = signed(&body, now, SIGNING_SECRET);
    let r = post_interaction(&w.app, &body, ts, sig).await;
    assert_eq!(r.status(), 200);
    let (_, d) = w.app.get_json(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(d["acked_by"], "oncall");
    let stored = all_delivered(&w.app, id, 30).await;
    let root_ts = assert_thread_matches(&w.slack, &stored);
    assert!(w
        .slack
        .thread(&root_ts)
        .iter()
        .any(|m| m.text == "acknowledged by <@U0ONCALL>; escalation tiers stopped"));
    let key = pd_key(&w.app, id).await;
    eventually(20, "PagerDuty acknowledged", || async {
        (w.pd.alert(PD_ROUTING_KEY, &key) == Some(AlertStatus::Acknowledged)).then_some(())
    })
    .await;

    // The API: only with the token.
    let api = format!("{}/api/v1/incidents/{id}/ack", w.app.addr);
    assert_eq!(w.app.client.post(&api).send().await.unwrap().status(), 401);
    let r = w
        .app
        .client
        .post(&api)
        .bearer_auth(API_TOKEN)
        .json(&json!({"by": "alice"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["already_acknowledged"], true);
}

#[tokio::test]
async fn tiers_tell_more_people_as_the_rto_passes_until_acknowledged() {
    let rules = rule_dir(&[(
        "10-fast.yaml",
        "rules:\n  - name: fast\n    matchers: ['alertname=~\"Fast.*\"']\n    priority: P1\n    rto: 4s\n    owner: dba\n    customer_impacting: true\n    target: { none: true }\n    steps:\n      - wait: { duration: 1m }\n",
    )]);
    let w = world_with(SLACK_CHANNEL, Some(rules.path().to_path_buf())).await;
    w.app
        .post_hook(alert_payload(
            json!({"alertname": "FastA"}),
            Utc::now(),
            "firing",
        ))
        .await;
    w.app
        .post_hook(alert_payload(
            json!({"alertname": "FastB"}),
            Utc::now(),
            "firing",
        ))
        .await;
    let ids: Vec<i64> = eventually(10, "two incidents", || async {
        let l = w.app.incidents().await;
        (l.len() == 2).then(|| l.iter().map(|i| i["id"].as_i64().unwrap()).collect())
    })
    .await;
    // Half the RTO (2s): the engineering lead; then acknowledge one of the two.
    let tiers = |id: i64| {
        let app = &w.app;
        async move {
            let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
            d["decisions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["guard"] == "tier")
                .map(|x| x["reason"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    eventually(10, "first tier", || async {
        (tiers(ids[1]).await.len() == 1).then_some(())
    })
    .await;
    let r = w
        .app
        .client
        .post(format!("{}/api/v1/incidents/{}/ack", w.app.addr, ids[1]))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(10, "second tier of the unacknowledged one", || async {
        (tiers(ids[0]).await.len() == 2).then_some(())
    })
    .await;
    // No waiting to see nothing happen: the acknowledged incident opened first, so its second
    // tier fell due no later than the other's, and a tick goes through the open incidents
    // oldest first. Had the acknowledgement not stopped it, it would be recorded by now.
    assert!(ids[1] < ids[0], "{ids:?}");
    let acked = tiers(ids[1]).await;
    assert_eq!(
        acked.len(),
        1,
        "acknowledgement stopped the tiers: {acked:?}"
    );
    let open = tiers(ids[0]).await;
    assert!(
        open[0].contains("after 2s (50% of the RTO of 4s); telling eng-lead"),
        "{open:?}"
    );
    assert!(
        open[1].contains("after 4s (100% of the RTO of 4s); telling product-owner"),
        "{open:?}"
    );
    let stored = all_delivered(&w.app, ids[0], 20).await;
    assert!(stored.iter().any(|m| m["kind"] == "tier"));
    let lead = w
        .slack
        .messages()
        .into_iter()
        .any(|m| m.text.starts_with("<@U0LEAD> escalation:"));
    assert!(lead, "the lead is mentioned");
}

#[tokio::test]
async fn a_restart_resumes_delivery_in_the_same_thread() {
    let slack = SlackEmulator::start().await;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let slack_url = slack.url();
    let env = [
        ("REMEDIATOR_SLACK__API_URL", slack_url.as_str()),
        ("REMEDIATOR_SLACK__BOT_TOKEN", SLACK_TOKEN),
        ("REMEDIATOR_SLACK__CHANNEL", SLACK_CHANNEL),
        ("REMEDIATOR_SLACK__TIMEOUT", "2s"),
    ];
    let client = reqwest::Client::new();
    let post = |base: String, body: Vec<u8>| {
        client
            .post(format!("{base}/hooks/alertmanager"))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
    };

    let mut served = Served::start(data.path(), port, None, &env).await;
    post(served.base.clone(), fixture("postgres-down-firing.json"))
        .await
        .unwrap();
    let root = eventually(30, "the root posted", || async {
        slack.messages().into_iter().find(|m| m.thread_ts.is_none())
    })
    .await;
    served.process.kill();

    // Slack is down across the restart; the resolution waits in the outbox.
    slack.go_down().await;
    let served = Served::start(data.path(), port, None, &env).await;
    post(served.base.clone(), fixture("postgres-down-resolved.json"))
        .await
        .unwrap();
    let base = served.base.clone();
    eventually(30, "the resolution stored and Slack found down", || async {
        let incidents = all_incidents(&client, &base, None, "").await;
        let id = incidents.first()?["id"].as_i64()?;
        let detail: Value = client
            .get(format!("{base}/api/v1/incidents/{id}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let resolution_waits = detail["messages"].as_array()?.iter().any(|m| {
            m["sink"] == "slack" && m["kind"] == "resolved" && m["delivered_at"].is_null()
        });
        let ready: Value = client
            .get(format!("{base}/-/ready"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let down_seen = ready["checks"]["slack"]
            .as_str()?
            .starts_with("retrying: cannot reach Slack");
        (resolution_waits && down_seen).then_some(())
    })
    .await;
    slack.come_back().await;
    eventually(60, "the resolution in the same thread", || async {
        slack
            .thread(&root.ts)
            .iter()
            .any(|m| m.text.starts_with("resolved after"))
            .then_some(())
    })
    .await;
    let roots = slack
        .messages()
        .into_iter()
        .filter(|m| m.thread_ts.is_none())
        .count();
    assert_eq!(roots, 1, "still one thread");
}

#[tokio::test]
async fn a_timeout_after_slack_took_the_post_does_not_post_it_twice() {
    let w = world().await;
    w.app.post_hook(fixture("postgres-down-firing.json")).await;
    let id = w.app.finished("PostgresDown", 30).await["id"]
        .as_i64()
        .unwrap();
    all_delivered(&w.app, id, 60).await;
    // Mentions are cached now; the next call is the resolution's reply. Slack records it,
    // then answers after the client's 2s timeout (and the root's update after it, too).
    w.slack.fail_next(2, Fault::Slow(Duration::from_secs(3)));
    w.app
        .post_hook(fixture("postgres-down-resolved.json"))
        .await;
    eventually(30, "the resolution recorded", || async {
        let (_, d) = w.app.get_json(&format!("/api/v1/incidents/{id}")).await;
        d["messages"]
            .as_array()?
            .iter()
            .any(|m| m["kind"] == "resolved")
            .then_some(())
    })
    .await;
    let stored = all_delivered(&w.app, id, 60).await;
    assert_thread_matches(&w.slack, &stored);
    let resolved = stored.iter().find(|m| m["kind"] == "resolved").unwrap();
    assert!(
        resolved["attempts"].as_i64().unwrap() > 1,
        "the timed-out reply was retried: {resolved}"
    );
    let lookups = w
        .slack
        .calls()
        .iter()
        .filter(|c| c.method == "conversations.replies")
        .count();
    assert!(lookups >= 1, "the retry looked before posting again");
}
