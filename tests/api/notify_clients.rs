//! The Slack and PagerDuty clients against the local emulators of their APIs.

use std::time::Duration;

use remediator::http::slack::{parse_interaction, verify_signature, Interaction, SignatureError};
use remediator::notify::pagerduty::{PagerDutyClient, PagerDutyError, Severity};
use remediator::notify::slack::{incident_blocks, IncidentView, SlackClient, SlackError};
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::emulators::{
    AlertStatus, Fault, PagerDutyEmulator, PdFault, SlackEmulator, PD_ROUTING_KEY, SLACK_CHANNEL,
    SLACK_TOKEN,
};

const TIMEOUT: Duration = Duration::from_secs(5);

fn slack(emulator: &SlackEmulator) -> SlackClient {
    slack_with(emulator, SLACK_TOKEN, TIMEOUT)
}

fn slack_with(emulator: &SlackEmulator, token: &str, timeout: Duration) -> SlackClient {
    SlackClient::new(&emulator.url(), SecretString::from(token), timeout).expect("Slack client")
}

fn pagerduty(emulator: &PagerDutyEmulator, timeout: Duration) -> PagerDutyClient {
    PagerDutyClient::new(&emulator.url(), SecretString::from(PD_ROUTING_KEY), timeout)
        .expect("PagerDuty client")
}

fn view(id: i64) -> IncidentView {
    IncidentView {
        id,
        priority: "P1".into(),
        alertname: "PostgresDown".into(),
        service: "postgres".into(),
        rto: "15m".into(),
        state: remediator::domain::RootState::Firing,
        owner: Some("<@U0DBA0001>".into()),
        summary: "postgres is not answering".into(),
        time_to_recover: None,
        acknowledged: None,
        silenced: None,
        paused: None,
        links: Default::default(),
        offered: Default::default(),
        drill: false,
        started_by: None,
    }
}

fn has_ack_button(blocks: &Value) -> bool {
    blocks.to_string().contains(r#""action_id":"ack""#)
}

// ----- Slack ---------------------------------------------------------------------------

#[tokio::test]
async fn a_posted_message_comes_back_with_channel_and_string_ts() {
    let emulator = SlackEmulator::start().await;
    let (text, blocks) = incident_blocks(&view(7));
    let posted = slack(&emulator)
        .post_message(SLACK_CHANNEL, &text, Some(&blocks), None)
        .await
        .expect("posted");
    assert_eq!(posted.channel, SLACK_CHANNEL);
    assert_eq!(posted.ts, "1700000000.000100");
    let messages = emulator.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].ts, posted.ts);
    assert_eq!(messages[0].text, text);
    assert_eq!(messages[0].blocks.as_ref(), Some(&blocks));
}

#[tokio::test]
async fn ok_false_on_http_200_is_an_error() {
    let emulator = SlackEmulator::start().await;
    emulator.fail_next(1, Fault::OkFalse("is_archived"));
    let err = slack(&emulator)
        .post_message(SLACK_CHANNEL, "hi", None, None)
        .await
        .expect_err("ok:false must fail");
    assert!(
        matches!(&err, SlackError::Api { error } if error == "is_archived"),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    assert!(emulator.messages().is_empty());
}

#[tokio::test]
async fn a_wrong_token_is_invalid_auth_and_not_retriable() {
    let emulator = SlackEmulator::start().await;
    let err = slack_with(&emulator, "xoxb-wrong", TIMEOUT)
        .post_message(SLACK_CHANNEL, "hi", None, None)
        .await
        .expect_err("wrong token");
    assert!(
        matches!(&err, SlackError::Api { error } if error == "invalid_auth"),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    assert!(!err.to_string().contains("xoxb-wrong"), "{err}");
}

#[tokio::test]
async fn a_json_body_without_the_bearer_header_is_not_authed() {
    let emulator = SlackEmulator::start().await;
    let body: Value = reqwest::Client::new()
        .post(format!("{}/chat.postMessage", emulator.url()))
        .json(&json!({ "token": SLACK_TOKEN, "channel": SLACK_CHANNEL, "text": "hi" }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(body, json!({ "ok": false, "error": "not_authed" }));
}

#[tokio::test]
async fn http_429_is_rate_limited_with_the_headers_retry_after() {
    let emulator = SlackEmulator::start().await;
    let client = slack(&emulator);
    emulator.fail_next(
        1,
        Fault::RateLimited {
            retry_after_secs: 7,
        },
    );
    let err = client
        .post_message(SLACK_CHANNEL, "hi", None, None)
        .await
        .expect_err("429");
    assert!(
        matches!(err, SlackError::RateLimited { retry_after } if retry_after == Duration::from_secs(7)),
        "{err:?}"
    );
    assert!(err.is_retriable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    client
        .post_message(SLACK_CHANNEL, "hi", None, None)
        .await
        .expect("the next call goes through");
    let outcomes: Vec<String> = emulator.calls().into_iter().map(|c| c.outcome).collect();
    assert_eq!(outcomes, ["http 429", "ok"]);
}

#[tokio::test]
async fn http_500_is_retriable() {
    let emulator = SlackEmulator::start().await;
    emulator.fail_next(1, Fault::ServerError);
    let err = slack(&emulator)
        .post_message(SLACK_CHANNEL, "hi", None, None)
        .await
        .expect_err("500");
    assert!(matches!(err, SlackError::Http { status: 500 }), "{err:?}");
    assert!(err.is_retriable());
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn passing_ok_false_errors_are_retriable() {
    let emulator = SlackEmulator::start().await;
    let client = slack(&emulator);
    for code in [
        "ratelimited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
    ] {
        emulator.fail_next(1, Fault::OkFalse(code));
        let err = client
            .post_message(SLACK_CHANNEL, "hi", None, None)
            .await
            .expect_err(code);
        assert!(err.is_retriable(), "{code}: {err:?}");
    }
}

#[tokio::test]
async fn an_unknown_channel_is_channel_not_found_and_not_retriable() {
    let emulator = SlackEmulator::start().await;
    let err = slack(&emulator)
        .post_message("C0NOSUCH", "hi", None, None)
        .await
        .expect_err("unknown channel");
    assert!(
        matches!(&err, SlackError::Api { error } if error == "channel_not_found"),
        "{err:?}"
    );
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn a_channel_without_the_bot_says_to_invite_it() {
    let emulator = SlackEmulator::start().await;
    emulator.add_channel_without_bot("C0PRIVATE");
    let err = slack(&emulator)
        .post_message("C0PRIVATE", "hi", None, None)
        .await
        .expect_err("not in channel");
    assert!(
        matches!(&err, SlackError::Api { error } if error == "not_in_channel"),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    assert!(err.to_string().contains("/invite"), "{err}");
}

#[tokio::test]
async fn thread_replies_land_under_the_root() {
    let emulator = SlackEmulator::start().await;
    let client = slack(&emulator);
    let root = client
        .post_message(SLACK_CHANNEL, "incident", None, None)
        .await
        .expect("root");
    let first = client
        .post_message(SLACK_CHANNEL, "step 1: restart", None, Some(&root.ts))
        .await
        .expect("reply 1");
    let second = client
        .post_message(SLACK_CHANNEL, "step 2: wait_healthy", None, Some(&root.ts))
        .await
        .expect("reply 2");
    assert!(root.ts < first.ts && first.ts < second.ts);
    let thread = emulator.thread(&root.ts);
    let texts: Vec<&str> = thread.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["step 1: restart", "step 2: wait_healthy"]);
    let err = client
        .post_message(SLACK_CHANNEL, "under a reply", None, Some(&first.ts))
        .await
        .expect_err("a reply is no root");
    assert!(
        matches!(&err, SlackError::Api { error } if error == "thread_not_found"),
        "{err:?}"
    );
}

#[tokio::test]
async fn update_changes_the_root_and_removes_the_ack_button() {
    let emulator = SlackEmulator::start().await;
    let client = slack(&emulator);
    let (text, blocks) = incident_blocks(&view(9));
    assert!(has_ack_button(&blocks));
    let root = client
        .post_message(SLACK_CHANNEL, &text, Some(&blocks), None)
        .await
        .expect("root");
    let mut acked = view(9);
    acked.acknowledged = Some(remediator::notify::slack::Used {
        who: "alice".into(),
        at: "03:12 UTC".into(),
        until: None,
        made: None,
    });
    let (new_text, new_blocks) = incident_blocks(&acked);
    client
        .update_message(&root.channel, &root.ts, &new_text, Some(&new_blocks))
        .await
        .expect("updated");
    let messages = emulator.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].text, new_text);
    let current = messages[0].blocks.as_ref().expect("blocks");
    assert!(!has_ack_button(current));
    assert_eq!(emulator.updates().len(), 1);
    assert_eq!(emulator.updates()[0].ts, root.ts);
}

#[tokio::test]
async fn updating_an_unknown_message_is_message_not_found() {
    let emulator = SlackEmulator::start().await;
    let err = slack(&emulator)
        .update_message(SLACK_CHANNEL, "1600000000.000001", "x", None)
        .await
        .expect_err("no such message");
    assert!(
        matches!(&err, SlackError::Api { error } if error == "message_not_found"),
        "{err:?}"
    );
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn a_slow_answer_is_a_retriable_timeout_though_slack_may_have_posted() {
    let emulator = SlackEmulator::start().await;
    let client = slack_with(&emulator, SLACK_TOKEN, Duration::from_millis(300));
    emulator.fail_next(1, Fault::Slow(Duration::from_secs(3)));
    let err = client
        .post_message(SLACK_CHANNEL, "hi", None, None)
        .await
        .expect_err("timeout");
    assert!(matches!(err, SlackError::Transport(_)), "{err:?}");
    assert!(err.is_retriable());
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(emulator.messages().len(), 1, "Slack carried it out anyway");
}

#[tokio::test]
async fn slack_down_then_back_works() {
    let emulator = SlackEmulator::start().await;
    let client = slack(&emulator);
    let root = client
        .post_message(SLACK_CHANNEL, "before", None, None)
        .await
        .expect("before");
    emulator.go_down().await;
    let err = client
        .post_message(SLACK_CHANNEL, "while down", None, Some(&root.ts))
        .await
        .expect_err("down");
    assert!(matches!(err, SlackError::Transport(_)), "{err:?}");
    assert!(err.is_retriable());
    emulator.come_back().await;
    client
        .post_message(SLACK_CHANNEL, "after", None, Some(&root.ts))
        .await
        .expect("after");
    let texts: Vec<String> = emulator.messages().into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["before", "after"]);
}

#[tokio::test]
async fn lookup_by_email_finds_known_users_only() {
    let emulator = SlackEmulator::start().await;
    emulator.add_user("dba@example.com", "U0DBA0001");
    let client = slack(&emulator);
    assert_eq!(
        client
            .lookup_user_by_email("DBA@example.com")
            .await
            .expect("lookup"),
        Some("U0DBA0001".to_owned())
    );
    assert_eq!(
        client
            .lookup_user_by_email("nobody@example.com")
            .await
            .expect("lookup"),
        None
    );
    emulator.fail_next(
        1,
        Fault::RateLimited {
            retry_after_secs: 2,
        },
    );
    let err = client
        .lookup_user_by_email("dba@example.com")
        .await
        .expect_err("429");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
}

const SIGNING_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";

fn sign(timestamp: &str, body: &[u8]) -> String {
    crate::helpers::slack_signature(SIGNING_SECRET, timestamp, body)
}

fn ack_body(incident_id: i64) -> Vec<u8> {
    crate::helpers::slack_ack_interaction(incident_id, "U0ALICE01", "alice").into_bytes()
}

#[test]
fn a_correct_signature_is_accepted_and_the_ack_read() {
    let now = 1_700_000_000;
    let body = ack_body(12);
    let ts = now.to_string();
    assert_eq!(
        verify_signature(SIGNING_SECRET, &ts, &body, &sign(&ts, &body), now + 10),
        Ok(())
    );
    assert_eq!(
        parse_interaction(&body),
        Ok(Interaction::Pressed {
            button: remediator::domain::Button::Acknowledge,
            incident_id: 12,
            user_id: "U0ALICE01".into(),
            user_name: "alice".into(),
            thread: None,
            response_url: Some("https://hooks.slack.invalid/x".into()),
        })
    );
}

#[test]
fn stale_mismatched_and_malformed_signatures_are_rejected() {
    let now = 1_700_000_000;
    let body = ack_body(12);
    let old = (now - 600).to_string();
    assert_eq!(
        verify_signature(SIGNING_SECRET, &old, &body, &sign(&old, &body), now),
        Err(SignatureError::StaleTimestamp { skew_secs: 600 })
    );
    let ts = now.to_string();
    let tampered = ack_body(13);
    assert_eq!(
        verify_signature(SIGNING_SECRET, &ts, &tampered, &sign(&ts, &body), now),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(SIGNING_SECRET, &ts, &body, "sha256=abc", now),
        Err(SignatureError::BadFormat)
    );
    assert_eq!(
        verify_signature(SIGNING_SECRET, "yesterday", &body, &sign(&ts, &body), now),
        Err(SignatureError::BadTimestamp("yesterday".into()))
    );
}

// ----- PagerDuty -----------------------------------------------------------------------

#[tokio::test]
async fn trigger_then_resolve_are_recorded_and_close_the_alert() {
    let emulator = PagerDutyEmulator::start().await;
    let client = pagerduty(&emulator, TIMEOUT);
    let severity = Severity::from_priority("P2").expect("P2");
    client
        .trigger(
            "incident-42",
            "PostgresDown on postgres",
            "db-host-1",
            severity,
            json!({ "priority": "P2", "incident": 42 }),
        )
        .await
        .expect("trigger");
    assert_eq!(
        emulator.alert(PD_ROUTING_KEY, "incident-42"),
        Some(AlertStatus::Triggered)
    );
    client.resolve("incident-42").await.expect("resolve");
    let events = emulator.events();
    let actions: Vec<&str> = events.iter().map(|e| e.event_action.as_str()).collect();
    assert_eq!(actions, ["trigger", "resolve"]);
    assert!(events.iter().all(|e| e.dedup_key == "incident-42"));
    assert!(events.iter().all(|e| e.routing_key == PD_ROUTING_KEY));
    let payload = events[0].payload.as_ref().expect("payload");
    assert_eq!(payload["severity"], "error");
    assert_eq!(payload["source"], "db-host-1");
    assert_eq!(payload["custom_details"]["priority"], "P2");
    assert_eq!(events[1].payload, None);
    assert_eq!(
        emulator.alert(PD_ROUTING_KEY, "incident-42"),
        Some(AlertStatus::Resolved)
    );
}

#[tokio::test]
async fn a_long_summary_is_cut_to_1024_characters() {
    let emulator = PagerDutyEmulator::start().await;
    pagerduty(&emulator, TIMEOUT)
        .trigger("k", &"x".repeat(5000), "host", Severity::Info, Value::Null)
        .await
        .expect("accepted");
    let events = emulator.events();
    let summary = events[0].payload.as_ref().expect("payload")["summary"]
        .as_str()
        .expect("summary")
        .to_owned();
    assert_eq!(summary.chars().count(), 1024);
}

#[tokio::test]
async fn http_400_is_rejected_with_the_message_and_not_retriable() {
    let emulator = PagerDutyEmulator::start().await;
    emulator.fail_next(1, PdFault::Rejected("Invalid routing key"));
    let err = pagerduty(&emulator, TIMEOUT)
        .trigger("k", "s", "host", Severity::Critical, json!({}))
        .await
        .expect_err("400");
    assert!(
        matches!(&err, PagerDutyError::Rejected { message } if message.contains("Invalid routing key")),
        "{err:?}"
    );
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn the_pagerduty_emulator_rejects_what_the_docs_forbid() {
    let emulator = PagerDutyEmulator::start().await;
    let http = reqwest::Client::new();
    let bad = [
        json!({ "routing_key": "short", "event_action": "resolve", "dedup_key": "k" }),
        json!({ "routing_key": PD_ROUTING_KEY, "event_action": "trigger",
                "payload": { "summary": "s", "source": "h", "severity": "Critical" } }),
        json!({ "routing_key": PD_ROUTING_KEY, "event_action": "trigger",
                "payload": { "source": "h", "severity": "info" } }),
        json!({ "routing_key": PD_ROUTING_KEY, "event_action": "resolve" }),
        json!({ "routing_key": PD_ROUTING_KEY, "event_action": "trigger",
                "dedup_key": "k".repeat(256),
                "payload": { "summary": "s", "source": "h", "severity": "info" } }),
    ];
    for event in bad {
        let response = http
            .post(emulator.url())
            .json(&event)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 400, "{event}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], "invalid event");
        assert_eq!(body["message"], "Event object is invalid");
        assert!(body["errors"].as_array().is_some_and(|e| !e.is_empty()));
    }
    assert!(emulator.events().is_empty());
    assert_eq!(emulator.rejected().len(), 5);
}

#[tokio::test]
async fn http_429_from_pagerduty_is_retriable() {
    let emulator = PagerDutyEmulator::start().await;
    let client = pagerduty(&emulator, TIMEOUT);
    emulator.fail_next(1, PdFault::RateLimited);
    let err = client.resolve("k").await.expect_err("429");
    assert!(matches!(err, PagerDutyError::RateLimited { .. }), "{err:?}");
    assert!(err.is_retriable());
    assert!(err.retry_after().is_some());
    assert!(
        emulator.events().is_empty(),
        "a throttled event is not ingested"
    );
    client.resolve("k").await.expect("the retry goes through");
    assert_eq!(emulator.events().len(), 1);
}

#[tokio::test]
async fn pagerduty_5xx_timeouts_and_outages_are_retriable() {
    let emulator = PagerDutyEmulator::start().await;
    let client = pagerduty(&emulator, Duration::from_millis(300));
    emulator.fail_next(1, PdFault::ServerError);
    let err = client.resolve("k").await.expect_err("500");
    assert!(
        matches!(err, PagerDutyError::Http { status: 500 }),
        "{err:?}"
    );
    assert!(err.is_retriable());

    emulator.fail_next(1, PdFault::Slow(Duration::from_secs(3)));
    let err = client.resolve("k").await.expect_err("slow");
    assert!(matches!(err, PagerDutyError::Transport(_)), "{err:?}");
    assert!(err.is_retriable());

    emulator.go_down().await;
    let err = client.resolve("k").await.expect_err("down");
    assert!(matches!(err, PagerDutyError::Transport(_)), "{err:?}");
    assert!(err.is_retriable());
    emulator.come_back().await;
    client.resolve("k").await.expect("back");
}

#[tokio::test]
async fn posts_to_one_channel_are_paced_after_a_short_burst() {
    let emulator = SlackEmulator::start().await;
    let client = slack(&emulator);
    let started = std::time::Instant::now();
    for i in 0..5 {
        client
            .post_message(SLACK_CHANNEL, &format!("m{i}"), None, None)
            .await
            .expect("posted");
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    let unpaced = slack(&emulator).with_channel_pacing(None);
    let started = std::time::Instant::now();
    for i in 0..5 {
        unpaced
            .post_message(SLACK_CHANNEL, &format!("u{i}"), None, None)
            .await
            .expect("posted");
    }
    assert!(started.elapsed() < Duration::from_millis(900));
    assert_eq!(emulator.messages().len(), 10);
}

#[tokio::test]
async fn find_channel_follows_the_cursor_and_reports_what_slack_refuses() {
    let emulator = SlackEmulator::start().await;
    for i in 0..5 {
        emulator.add_named_channel(&format!("c-{i}"), &format!("C0CHAN000{i}"));
    }
    emulator.add_named_channel("voiceai-incidents", "C0VOICEAI1");
    let client = slack(&emulator);
    assert_eq!(
        client.find_channel("#voiceai-incidents", 2).await.unwrap(),
        Some("C0VOICEAI1".into())
    );
    let pages = emulator
        .calls()
        .iter()
        .filter(|c| c.method == "conversations.list")
        .count();
    assert_eq!(pages, 3, "six channels, two a page");
    assert_eq!(client.find_channel("nowhere", 100).await.unwrap(), None);

    // A refused cursor, and a missing scope: errors, not "not found".
    emulator.fail_method("conversations.list", 1, Fault::OkFalse("invalid_cursor"));
    let e = client
        .find_channel("voiceai-incidents", 2)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SlackError::Api { error } if error == "invalid_cursor"),
        "{e}"
    );
    emulator.remove_scope("groups:read");
    let e = client
        .find_channel("voiceai-incidents", 2)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SlackError::Api { error } if error == "missing_scope"),
        "{e}"
    );
    assert!(e.to_string().contains("groups:read"), "{e}");
    assert!(!e.is_retriable());
}
