//! The incident thread people read: its length on the shipped PostgresDown rule's happy path
//! (a real compose stack), the root's facts, links and buttons, and the channel given by name
//! and resolved through `conversations.list`, against the Slack emulator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use remediator::http::buttons::{Buttons, Paused, Pauser, Silencer};
use remediator::store::IncidentRecord;
use serde_json::Value;

use crate::alertmanager::start_alertmanager;
use crate::emulators::*;
use crate::helpers::*;
use crate::stack::Stack;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const API_TOKEN: &str = "api-token-for-thread-tests";
const PUBLIC_URL: &str = "https://remediator.example:9095";

fn env(slack: &SlackEmulator, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("REMEDIATOR_WEBHOOK_TOKEN".to_string(), TOKEN.to_string()),
        ("REMEDIATOR_API__TOKEN".into(), API_TOKEN.into()),
        ("REMEDIATOR_API__PUBLIC_URL".into(), PUBLIC_URL.into()),
        ("REMEDIATOR_SLACK__API_URL".into(), slack.url()),
        ("REMEDIATOR_SLACK__BOT_TOKEN".into(), SLACK_TOKEN.into()),
        (
            "REMEDIATOR_SLACK__SIGNING_SECRET".into(),
            SIGNING_SECRET.into(),
        ),
        ("REMEDIATOR_SLACK__TIMEOUT".into(), "2s".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn people(slack: &SlackEmulator) {
    slack.add_user("oncall@voiceai-testing.local", "U0ONCALL");
    slack.add_user("dba@voiceai-testing.local", "U0DBA");
    slack.add_user("eng-lead@voiceai-testing.local", "U0LEAD");
}

/// The incident's Slack messages as stored, once every one is delivered.
async fn delivered(app: &TestApp, id: i64, secs: u64) -> Vec<Value> {
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

fn roots(slack: &SlackEmulator) -> Vec<Recorded> {
    slack
        .messages()
        .into_iter()
        .filter(|m| m.thread_ts.is_none())
        .collect()
}

/// The root of incident `id` as it reads now (its blocks name the incident).
fn root_of(slack: &SlackEmulator, id: i64) -> Option<Recorded> {
    roots(slack).into_iter().find(|m| {
        m.blocks
            .as_ref()
            .is_some_and(|b| b.to_string().contains(&format!("Incident #{id}")))
    })
}

/// The action ids of the root's buttons.
fn buttons(root: &Recorded) -> Vec<String> {
    root.blocks
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["action_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_down_happy_path_is_a_thread_of_at_most_six_replies() {
    let stack = Stack::up(&["postgres", "backend"]);
    let slack = SlackEmulator::start().await;
    people(&slack);
    // The default channel, `#voiceai-incidents`, given by name.
    slack.add_named_channel("general", "C0GENERAL1");
    slack.add_named_channel("voiceai-incidents", "C0VOICEAI1");
    let app = spawn_with(Spawn {
        env: env(&slack, &[("REMEDIATOR_DOCKER__PROJECT", &stack.project)]),
        rules_dir: None,
    })
    .await;
    app.post_hook(fixture("postgres-down-firing.json")).await;
    let detail = app.finished("PostgresDown", 90).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    let id = detail["id"].as_i64().unwrap();
    delivered(&app, id, 30).await;
    let firing_root = root_of(&slack, id).expect("the root");
    app.post_hook(fixture("postgres-down-resolved.json")).await;
    eventually(30, "the root shows the time to recover", || async {
        let root = root_of(&slack, id)?;
        root.blocks?
            .to_string()
            .contains("*Time to recover*")
            .then_some(())
    })
    .await;
    delivered(&app, id, 30).await;

    assert_eq!(roots(&slack).len(), 1, "one thread");
    let root = root_of(&slack, id).unwrap();
    assert_eq!(root.channel, "C0VOICEAI1", "posted to the resolved ID");
    let thread: Vec<String> = slack.thread(&root.ts).into_iter().map(|m| m.text).collect();
    assert!(thread.len() <= 6, "{} replies: {thread:#?}", thread.len());
    assert_eq!(
        thread[0], "go: run 1 of 2 for postgres this hour, budget 1 of 10, target free",
        "{thread:#?}"
    );
    let steps = ["diagnose", "logs", "restart", "wait_healthy", "exec"];
    assert_eq!(thread.len(), 1 + steps.len(), "{thread:#?}");
    for (reply, step) in thread[1..].iter().zip(steps) {
        let head = format!("{step} postgres: ok in ");
        assert!(reply.starts_with(&head), "{reply:?} starts with {head:?}");
        let secs = reply[head.len()..].split(" s").next().unwrap();
        assert!(secs.parse::<f64>().is_ok(), "a duration in {reply:?}");
    }

    // The root: facts, the owner only, the clocks, the links.
    let open = firing_root.blocks.unwrap().to_string();
    assert!(open.contains("*Owner*\\n<@U0DBA>"), "{open}");
    assert!(!open.contains("U0ONCALL"), "the owner only: {open}");
    assert!(
        open.contains("*RTO*\\n30m: ") && open.contains("elapsed"),
        "{open}"
    );
    let resolved = root.blocks.unwrap().to_string();
    for needle in [
        "*State*\\nresolved",
        "*Priority*\\nP1",
        "*Service*\\npostgres",
        "*Time to recover*\\n4s (within the RTO of 30m)",
        &format!("<{PUBLIC_URL}/api/v1/incidents/{id}|Incident #{id}>"),
        "<http://prometheus:9090/graph?g0.expr=pg_up+%3D%3D+0|Alert source>",
        "<http://vm:19093/#/silences/new?filter=%7Balertname%3D%22PostgresDown%22%2Cinstance%3D%22postgres%3A9187%22%2Cjob%3D%22postgres-exporter%22%2Cservice%3D%22postgres%22%2Cseverity%3D%22critical%22%7D|Silence in Alertmanager>",
    ] {
        assert!(resolved.contains(needle), "{needle} in {resolved}");
    }
    assert!(
        buttons(&root_of(&slack, id).unwrap()).is_empty(),
        "no buttons once resolved"
    );
    let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(
        d["generator_url"],
        "http://prometheus:9090/graph?g0.expr=pg_up+%3D%3D+0"
    );
    assert_eq!(d["external_url"], "http://vm:19093");
    assert_eq!(d["owner"]["key"], "dba");
    // Every guard's decision is still stored, one row each.
    let guards = d["decisions"].as_array().unwrap().len();
    assert!(guards >= 10, "{d:#}");
}

/// A silencer that records what it was asked and makes `silence-N`; it refuses alerts named
/// `HighQueueDepth`, as an Alertmanager that is down would.
#[derive(Default)]
struct FakeSilencer {
    asked: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl Silencer for FakeSilencer {
    async fn silence(
        &self,
        inc: &IncidentRecord,
        by: &str,
        hold: Duration,
    ) -> Result<String, String> {
        assert_eq!(hold, Duration::from_secs(3600));
        let mut asked = self.asked.lock().unwrap();
        asked.push((inc.alertname.clone(), by.to_owned()));
        if inc.alertname == "HighQueueDepth" {
            return Err("no Alertmanager peer took the silence: connection refused".into());
        }
        Ok(format!("silence-{}", asked.len()))
    }
}

#[derive(Default)]
struct FakePauser {
    asked: Mutex<Vec<(i64, String)>>,
}

impl Pauser for FakePauser {
    fn pause(&self, inc: &IncidentRecord, by: &str, hold: Duration) -> Result<Paused, String> {
        self.asked.lock().unwrap().push((inc.id, by.to_owned()));
        Ok(Paused {
            id: "7".into(),
            until: Utc::now() + chrono::Duration::from_std(hold).unwrap(),
        })
    }
}

async fn press(app: &TestApp, body: &str, ts: String, sig: String) -> reqwest::StatusCode {
    app.client
        .post(format!("{}/hooks/slack/interactions", app.addr))
        .header("X-Slack-Request-Timestamp", ts)
        .header("X-Slack-Signature", sig)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
}

async fn signed_press(app: &TestApp, body: &str) -> reqwest::StatusCode {
    let ts = Utc::now().timestamp().to_string();
    let sig = slack_signature(SIGNING_SECRET.as_bytes(), &ts, body.as_bytes());
    press(app, body, ts, sig).await
}

/// Waits until the root of `id` reads as `ok` says.
async fn root_until(
    slack: &SlackEmulator,
    id: i64,
    what: &str,
    ok: impl Fn(&str, &[String]) -> bool,
) {
    eventually(20, what, || async {
        let root = root_of(slack, id)?;
        let text = root.blocks.clone()?.to_string();
        ok(&text, &buttons(&root)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn each_button_is_verified_recorded_answered_and_changed_on_the_root() {
    let slack = SlackEmulator::start().await;
    people(&slack);
    let silencer = Arc::new(FakeSilencer::default());
    let pauser = Arc::new(FakePauser::default());
    let app = spawn_with_buttons(
        Spawn {
            env: env(&slack, &[("REMEDIATOR_SLACK__CHANNEL", SLACK_CHANNEL)]),
            rules_dir: None,
        },
        Some(Buttons {
            silence: Some(silencer.clone()),
            pause: Some(pauser.clone()),
        }),
    )
    .await;
    app.post_hook(fixture("postgres-down-firing.json")).await;
    let id = app.finished("PostgresDown", 30).await["id"]
        .as_i64()
        .unwrap();
    delivered(&app, id, 30).await;
    assert_eq!(
        buttons(&root_of(&slack, id).unwrap()),
        ["ack", "silence_1h", "pause_1h"]
    );

    // Unsigned, wrongly signed or stale: 401, and nothing is recorded or asked.
    let now = Utc::now().timestamp();
    for action in ["ack", "silence_1h", "pause_1h"] {
        let body = slack_button_interaction(action, id, "U0MALLORY", "mallory");
        let stale = (now - 301).to_string();
        for (ts, sig) in [
            (
                now.to_string(),
                slack_signature(b"not-the-secret", &now.to_string(), body.as_bytes()),
            ),
            (
                stale.clone(),
                slack_signature(SIGNING_SECRET.as_bytes(), &stale, body.as_bytes()),
            ),
            (now.to_string(), "v0=deadbeef".to_string()),
            (String::new(), String::new()),
        ] {
            assert_eq!(press(&app, &body, ts, sig).await, 401, "{action}");
        }
    }
    let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
    assert!(
        d["acked_by"].is_null() && d["silenced"].is_null() && d["paused"].is_null(),
        "{d:#}"
    );
    assert!(silencer.asked.lock().unwrap().is_empty());
    assert!(pauser.asked.lock().unwrap().is_empty());

    // Acknowledge.
    let body = slack_button_interaction("ack", id, "U0ALICE", "alice");
    assert_eq!(signed_press(&app, &body).await, 200);
    root_until(
        &slack,
        id,
        "the root says who acknowledged",
        |text, buttons| {
            text.contains("Acknowledged by <@U0ALICE> at ") && buttons == ["silence_1h", "pause_1h"]
        },
    )
    .await;
    let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(d["acked_by"], "alice");
    assert_eq!(d["acked_slack_user"], "U0ALICE");

    // Silence 1h.
    let body = slack_button_interaction("silence_1h", id, "U0BOB", "bob");
    assert_eq!(signed_press(&app, &body).await, 200);
    root_until(&slack, id, "the root says who silenced", |text, buttons| {
        text.contains("Silenced 1h by <@U0BOB> (silence silence-1)") && buttons == ["pause_1h"]
    })
    .await;
    assert_eq!(
        *silencer.asked.lock().unwrap(),
        [("PostgresDown".to_string(), "bob".to_string())]
    );
    let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(d["silenced"]["by"], "bob");
    assert_eq!(d["silenced"]["slack_user"], "U0BOB");
    assert_eq!(d["silenced"]["made"], "silence-1");
    assert!(d["silenced"]["until"].is_string(), "{d:#}");

    // Pause automation 1h.
    let body = slack_button_interaction("pause_1h", id, "U0CAROL", "carol");
    assert_eq!(signed_press(&app, &body).await, 200);
    root_until(&slack, id, "the root says who paused", |text, buttons| {
        text.contains("Automation paused by <@U0CAROL> until ") && buttons.is_empty()
    })
    .await;
    assert_eq!(*pauser.asked.lock().unwrap(), [(id, "carol".to_string())]);

    // A second press of a used button (a root not yet updated) does nothing.
    let body = slack_button_interaction("silence_1h", id, "U0EVE", "eve");
    assert_eq!(signed_press(&app, &body).await, 200);
    let root = root_of(&slack, id).unwrap();
    let stored = delivered(&app, id, 30).await;
    let thread: Vec<String> = slack.thread(&root.ts).into_iter().map(|m| m.text).collect();
    for answer in [
        "acknowledged by <@U0ALICE>; escalation tiers stopped",
        "silenced 1h by <@U0BOB> in Alertmanager (silence silence-1) until ",
        "automation paused by <@U0CAROL> until ",
    ] {
        assert!(
            thread.iter().any(|t| t.starts_with(answer)),
            "{answer} in {thread:#?}"
        );
    }
    assert_eq!(
        stored.iter().filter(|m| m["kind"] == "silenced").count(),
        1,
        "{stored:#?}"
    );
    assert_eq!(
        silencer.asked.lock().unwrap().len(),
        1,
        "eve's press did nothing"
    );

    // A silence Alertmanager does not make is answered in the thread; the button stays.
    app.post_hook(fixture("high-queue-depth-firing.json")).await;
    let other = app.finished("HighQueueDepth", 30).await["id"]
        .as_i64()
        .unwrap();
    delivered(&app, other, 30).await;
    let body = slack_button_interaction("silence_1h", other, "U0BOB", "bob");
    assert_eq!(signed_press(&app, &body).await, 200);
    let failed = eventually(20, "the failure told in the thread", || async {
        let root = root_of(&slack, other)?;
        slack
            .thread(&root.ts)
            .into_iter()
            .find(|m| m.text.starts_with("could not silence"))
    })
    .await;
    assert_eq!(
        failed.text,
        "could not silence (asked by <@U0BOB>): no Alertmanager peer took the silence: connection refused"
    );
    assert!(buttons(&root_of(&slack, other).unwrap()).contains(&"silence_1h".to_string()));
    let (_, d) = app.get_json(&format!("/api/v1/incidents/{other}")).await;
    assert!(d["silenced"].is_null());
}

#[tokio::test]
async fn without_a_silencer_or_pauser_the_root_offers_acknowledge_only() {
    let slack = SlackEmulator::start().await;
    people(&slack);
    let app = spawn_with_buttons(
        Spawn {
            env: env(&slack, &[("REMEDIATOR_SLACK__CHANNEL", SLACK_CHANNEL)]),
            rules_dir: None,
        },
        Some(Buttons::default()),
    )
    .await;
    app.post_hook(fixture("postgres-down-firing.json")).await;
    let id = app.finished("PostgresDown", 30).await["id"]
        .as_i64()
        .unwrap();
    delivered(&app, id, 30).await;
    assert_eq!(buttons(&root_of(&slack, id).unwrap()), ["ack"]);
}

/// The id of the only incident of `alertname`, once it is opened.
async fn opened(app: &TestApp, alertname: &str) -> i64 {
    eventually(30, "the incident opened", || async {
        app.incidents()
            .await
            .iter()
            .find(|i| i["alertname"] == alertname)
            .and_then(|i| i["id"].as_i64())
    })
    .await
}

#[tokio::test]
async fn as_the_service_wires_them_silence_makes_a_real_silence_and_pause_a_stored_pause() {
    let slack = SlackEmulator::start().await;
    people(&slack);
    // Alertmanager's own notifications go nowhere: only its API is used here.
    let am = start_alertmanager(free_port());
    am.ready().await;
    let app = spawn_with(Spawn {
        env: env(
            &slack,
            &[
                ("REMEDIATOR_SLACK__CHANNEL", SLACK_CHANNEL),
                ("REMEDIATOR_ALERTMANAGER__URLS", am.url.as_str()),
            ],
        ),
        rules_dir: None,
    })
    .await;
    app.post_hook(fixture("postgres-down-firing.json")).await;
    let id = opened(&app, "PostgresDown").await;
    delivered(&app, id, 30).await;
    assert_eq!(
        buttons(&root_of(&slack, id).unwrap()),
        ["ack", "silence_1h", "pause_1h"]
    );

    // Silence 1h: a silence in Alertmanager for exactly the alert's labels, by the presser.
    let body = slack_button_interaction("silence_1h", id, "U0BOB", "bob");
    assert_eq!(signed_press(&app, &body).await, 200);
    let silence = eventually(20, "the silence in Alertmanager", || async {
        am.get("/api/v2/silences")
            .await
            .as_array()?
            .iter()
            .find(|s| s["createdBy"] == "bob")
            .cloned()
    })
    .await;
    assert_eq!(silence["status"]["state"], "active", "{silence:#}");
    let comment = silence["comment"].as_str().unwrap();
    assert!(comment.contains(&format!("incident #{id}")), "{comment}");
    let mut matchers: Vec<(String, String, bool)> = silence["matchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["isRegex"], false, "{m}");
            (
                m["name"].as_str().unwrap().to_owned(),
                m["value"].as_str().unwrap().to_owned(),
                m["isEqual"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    matchers.sort();
    let want: Vec<(String, String, bool)> = [
        ("alertname", "PostgresDown"),
        ("instance", "postgres:9187"),
        ("job", "postgres-exporter"),
        ("service", "postgres"),
        ("severity", "critical"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string(), true))
    .collect();
    assert_eq!(matchers, want);
    let silence_id = silence["id"].as_str().unwrap().to_owned();
    root_until(&slack, id, "the root names the silence", |text, _| {
        text.contains(&format!("Silenced 1h by <@U0BOB> (silence {silence_id})"))
    })
    .await;

    // Pause automation 1h: a pause of the rule on its service, listed by the API.
    let body = slack_button_interaction("pause_1h", id, "U0CAROL", "carol");
    assert_eq!(signed_press(&app, &body).await, 200);
    root_until(&slack, id, "the root says who paused", |text, buttons| {
        text.contains("Automation paused by <@U0CAROL> until ") && buttons == ["ack"]
    })
    .await;
    let (status, v) = app.get_json("/api/v1/pauses").await;
    assert_eq!(status, 200, "{v}");
    let pauses = v["pauses"].as_array().unwrap();
    assert_eq!(pauses.len(), 1, "{v:#}");
    assert_eq!(pauses[0]["by"], "carol");
    assert_eq!(pauses[0]["rule"], "postgres-down", "{v:#}");
    assert_eq!(pauses[0]["service"], "postgres", "{v:#}");
    assert_eq!(
        pauses[0]["reason"],
        format!("paused from Slack on incident #{id}")
    );
    let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(d["paused"]["made"], pauses[0]["id"].to_string(), "{d:#}");
}

#[tokio::test]
async fn without_alertmanager_urls_the_service_offers_no_silence_button() {
    let slack = SlackEmulator::start().await;
    people(&slack);
    let app = spawn_with(Spawn {
        env: env(&slack, &[("REMEDIATOR_SLACK__CHANNEL", SLACK_CHANNEL)]),
        rules_dir: None,
    })
    .await;
    app.post_hook(fixture("postgres-down-firing.json")).await;
    let id = opened(&app, "PostgresDown").await;
    delivered(&app, id, 30).await;
    assert_eq!(buttons(&root_of(&slack, id).unwrap()), ["ack", "pause_1h"]);
}

#[tokio::test]
async fn a_channel_name_is_resolved_through_three_pages_of_conversations_list() {
    let slack = SlackEmulator::start().await;
    people(&slack);
    for i in 0..5 {
        slack.add_named_channel(&format!("other-{i}"), &format!("C0OTHER00{i}"));
    }
    slack.archive_channel("C0OTHER003");
    // Private: listed only with groups:read, which the service asks for.
    slack.add_private_channel("voiceai-incidents", "G0VOICEAI1");
    // The first page is rate-limited once; the client waits its Retry-After and asks again.
    slack.fail_method(
        "conversations.list",
        1,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    let app = spawn_with(Spawn {
        env: env(
            &slack,
            &[
                ("REMEDIATOR_SLACK__CHANNEL", "#voiceai-incidents"),
                ("REMEDIATOR_SLACK__LIST_PAGE_SIZE", "2"),
            ],
        ),
        rules_dir: None,
    })
    .await;
    let (_, ready) = eventually(20, "the channel resolved", || async {
        let (code, r) = app.get_json("/-/ready").await;
        (r["checks"]["slack_channel"] == "G0VOICEAI1 (#voiceai-incidents)").then_some((code, r))
    })
    .await;
    assert_eq!(ready["ready"], true);
    let lists: Vec<String> = slack
        .calls()
        .into_iter()
        .filter(|c| c.method == "conversations.list")
        .map(|c| c.outcome)
        .collect();
    // Four channels listed (one archived), two a page: the third page holds it.
    assert_eq!(lists, ["http 429", "ok", "ok", "ok"]);
    app.post_hook(fixture("postgres-down-firing.json")).await;
    let id = app.finished("PostgresDown", 30).await["id"]
        .as_i64()
        .unwrap();
    delivered(&app, id, 30).await;
    assert_eq!(root_of(&slack, id).unwrap().channel, "G0VOICEAI1");
}

#[tokio::test]
async fn an_unresolvable_channel_shows_on_ready_and_threads_wait_until_a_reload_finds_it() {
    let slack = SlackEmulator::start().await;
    people(&slack);
    slack.remove_scope("groups:read");
    let app = spawn_with(Spawn {
        env: env(
            &slack,
            &[("REMEDIATOR_SLACK__CHANNEL", "#voiceai-incidents")],
        ),
        rules_dir: None,
    })
    .await;
    let ready = eventually(20, "the missing scope on /-/ready", || async {
        let (code, r) = app.get_json("/-/ready").await;
        let text = r["checks"]["slack_channel"].as_str()?.to_owned();
        text.contains("missing_scope").then_some((code, r, text))
    })
    .await;
    assert_eq!(ready.0, 200, "still ready: webhooks are taken");
    assert_eq!(ready.1["ready"], true);
    assert!(
        ready.2.starts_with("unresolved: #voiceai-incidents: "),
        "{}",
        ready.2
    );
    assert!(ready.2.contains("retrying with backoff"), "{}", ready.2);

    // The scope is granted; the channel does not exist yet.
    slack.add_scope("groups:read");
    let reload = || async {
        let r = app
            .client
            .post(format!("{}/-/reload", app.addr))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    reload().await;
    eventually(20, "not found on /-/ready", || async {
        let (_, r) = app.get_json("/-/ready").await;
        r["checks"]["slack_channel"]
            .as_str()?
            .contains("no channel named #voiceai-incidents that the bot can see")
            .then_some(())
    })
    .await;
    // Webhooks are taken; the thread waits for the channel.
    assert_eq!(
        app.post_hook(fixture("postgres-down-firing.json"))
            .await
            .status(),
        200
    );
    let id = app.finished("PostgresDown", 30).await["id"]
        .as_i64()
        .unwrap();
    eventually(20, "the root waits for the channel", || async {
        let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
        d["messages"]
            .as_array()?
            .iter()
            .any(|m| {
                m["kind"] == "opened"
                    && m["delivered_at"].is_null()
                    && m["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("not resolved yet"))
            })
            .then_some(())
    })
    .await;
    assert!(slack.messages().is_empty());

    slack.add_named_channel("voiceai-incidents", "C0VOICEAI1");
    reload().await;
    delivered(&app, id, 60).await;
    assert_eq!(roots(&slack).len(), 1);
    assert_eq!(roots(&slack)[0].channel, "C0VOICEAI1");
    let (_, r) = app.get_json("/-/ready").await;
    assert_eq!(
        r["checks"]["slack_channel"],
        "C0VOICEAI1 (#voiceai-incidents)"
    );
}

#[tokio::test]
async fn a_root_retried_after_a_timeout_is_posted_once_when_the_channel_is_a_name() {
    let slack = SlackEmulator::start().await;
    people(&slack);
    slack.add_named_channel("voiceai-incidents", "C0VOICEAI1");
    // Slack takes the root, then answers after the client's 2 s timeout.
    slack.fail_method("chat.postMessage", 1, Fault::Slow(Duration::from_secs(3)));
    let app = spawn_with(Spawn {
        env: env(
            &slack,
            &[("REMEDIATOR_SLACK__CHANNEL", "#voiceai-incidents")],
        ),
        rules_dir: None,
    })
    .await;
    app.post_hook(fixture("postgres-down-firing.json")).await;
    let id = app.finished("PostgresDown", 30).await["id"]
        .as_i64()
        .unwrap();
    let stored = delivered(&app, id, 60).await;
    let opened = stored.iter().find(|m| m["kind"] == "opened").unwrap();
    assert!(
        opened["attempts"].as_i64().unwrap() > 1,
        "the timed-out root was retried: {opened}"
    );
    assert_eq!(roots(&slack).len(), 1, "posted once: {:#?}", roots(&slack));
    let history: Vec<String> = slack
        .calls()
        .into_iter()
        .filter(|c| c.method == "conversations.history")
        .map(|c| c.outcome)
        .collect();
    assert!(
        !history.is_empty() && history.iter().all(|o| o == "ok"),
        "the look-up before the retry used the channel's ID: {history:?}"
    );
}
