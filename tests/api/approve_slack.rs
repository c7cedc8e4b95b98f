//! The `approve` step answered in Slack, against the real binary, the compose test stack and
//! the Slack and PagerDuty emulators: the request's message in the thread with its choices,
//! a signed Approve with a choice that continues the run (the next exec's argv gets it),
//! unsigned, stale and not-allowed answers refused, Reject → on_failure and a page with the
//! reason, and a restart (kill -9) while waiting that keeps the request and its buttons.

use chrono::Utc;
use serde_json::{json, Value};

use crate::emulators::*;
use crate::helpers::*;
use crate::stack::Stack;

const SIGNING_SECRET: &str = "approve-slack-signing-secret-0001";
const API_TOKEN: &str = "api-token-for-approve-slack-tests";

/// Lists two backups, asks the dba which one, then "restores" the chosen one (its argv shows
/// it); a refusal notifies the thread.
const RULE: &str = r#"
rules:
  - name: approve-restore
    matchers: ['alertname="ApproveRestore"']
    priority: P2
    rto: 30m
    owner: dba
    target: { service: redis }
    steps:
      - exec: { argv: [sh, -c, "echo b-2026-12-01.sql; echo b-2026-12-02.sql"] }
      - approve: { who: dba, timeout: 10m, prompt: "Restore which backup?", choices_from: previous }
      - exec: { argv: [echo, restoring, "{{ approval.choice }}"] }
    on_failure:
      - notify: { message: "no restore done" }
"#;

/// A rule directory whose `dba` contact only U0DBA may answer for.
fn rules() -> tempfile::TempDir {
    let dir = rule_dir(&[("10-approve.yaml", RULE)]);
    let path = dir.path().join("escalation.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let at = "    email: dba@voiceai-testing.local\n";
    assert!(text.contains(at), "the shipped dba contact");
    std::fs::write(
        &path,
        text.replacen(at, &format!("{at}    slack_users: [U0DBA]\n"), 1),
    )
    .unwrap();
    dir
}

struct Setup {
    stack: Stack,
    slack: SlackEmulator,
    pd: PagerDutyEmulator,
    rules: tempfile::TempDir,
    data: tempfile::TempDir,
    port: u16,
    client: reqwest::Client,
}

impl Setup {
    async fn new() -> Setup {
        let stack = Stack::up(&["redis"]);
        let slack = SlackEmulator::start().await;
        slack.add_user("dba@voiceai-testing.local", "U0DBA");
        Setup {
            stack,
            slack,
            pd: PagerDutyEmulator::start().await,
            rules: rules(),
            data: tempfile::tempdir().unwrap(),
            port: free_port(),
            client: reqwest::Client::new(),
        }
    }

    async fn serve(&self) -> Served {
        let (slack, pd) = (self.slack.url(), self.pd.url());
        Served::start(
            self.data.path(),
            self.port,
            Some(self.rules.path()),
            &[
                ("REMEDIATOR_API__TOKEN", API_TOKEN),
                ("REMEDIATOR_DOCKER__PROJECT", &self.stack.project),
                ("REMEDIATOR_SLACK__API_URL", &slack),
                ("REMEDIATOR_SLACK__BOT_TOKEN", SLACK_TOKEN),
                ("REMEDIATOR_SLACK__CHANNEL", SLACK_CHANNEL),
                ("REMEDIATOR_SLACK__SIGNING_SECRET", SIGNING_SECRET),
                ("REMEDIATOR_SLACK__TIMEOUT", "2s"),
                ("REMEDIATOR_PAGERDUTY__URL", &pd),
                ("REMEDIATOR_PAGERDUTY__ROUTING_KEY", PD_ROUTING_KEY),
            ],
        )
        .await
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn detail(&self, id: i64) -> Value {
        detail_at(&self.client, &self.base(), API_TOKEN, id).await
    }

    async fn fire(&self) -> i64 {
        let body = fire(json!({"alertname": "ApproveRestore", "service": "redis"}));
        fire_at(
            &self.client,
            &self.base(),
            API_TOKEN,
            body,
            "ApproveRestore",
        )
        .await
    }

    /// The approval message once it is in the thread (its blocks hold the Approve button).
    async fn request(&self) -> Recorded {
        eventually(60, "the approval message in the thread", || async {
            self.approval_messages().into_iter().next()
        })
        .await
    }

    fn approval_messages(&self) -> Vec<Recorded> {
        approval_messages(&self.slack)
    }

    async fn press(&self, body: &str, signed: bool) -> u16 {
        press(&self.client, &self.base(), SIGNING_SECRET, body, signed).await
    }

    /// Presses `action` as `user`, with `choice` picked in the menu; returns what the user
    /// was told through the interaction's response_url.
    async fn answer(
        &self,
        msg: &Recorded,
        action: &str,
        value: Option<&str>,
        user: &str,
        choice: Option<&str>,
    ) -> String {
        let press = Press {
            client: &self.client,
            base: &self.base(),
            secret: SIGNING_SECRET,
            slack: &self.slack,
        };
        press.answer(msg, action, value, user, choice).await
    }
}

/// Posts an interaction `body` to `base`'s `/hooks/slack/interactions`, signed with `secret`
/// (or, unless `signed`, with another one); the HTTP status.
pub async fn press(
    client: &reqwest::Client,
    base: &str,
    secret: &str,
    body: &str,
    signed: bool,
) -> u16 {
    let ts = Utc::now().timestamp().to_string();
    let sig = if signed {
        slack_signature(secret.as_bytes(), &ts, body.as_bytes())
    } else {
        slack_signature(b"not-the-secret", &ts, body.as_bytes())
    };
    client
        .post(format!("{base}/hooks/slack/interactions"))
        .header("X-Slack-Request-Timestamp", ts)
        .header("X-Slack-Signature", sig)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A person pressing the buttons of approval messages, as Slack delivers it: to the service
/// at `base`, signed with `secret`, the ephemeral answer read back from the emulator.
pub struct Press<'a> {
    pub client: &'a reqwest::Client,
    pub base: &'a str,
    pub secret: &'a str,
    pub slack: &'a SlackEmulator,
}

impl Press<'_> {
    /// Presses `action` as `user`, with the option whose value is `choice` picked in the
    /// menu; returns what the user was told through the interaction's response_url.
    pub async fn answer(
        &self,
        msg: &Recorded,
        action: &str,
        value: Option<&str>,
        user: &str,
        choice: Option<&str>,
    ) -> String {
        let url = self.slack.response_url();
        let body = interaction(msg, action, value, user, choice, &url);
        assert_eq!(
            press(self.client, self.base, self.secret, &body, true).await,
            200
        );
        eventually(10, "the ephemeral answer", || async {
            let r = self.slack.responses(Some(&url));
            let r = r.first()?;
            assert_eq!(r["response_type"], "ephemeral", "{r}");
            assert_eq!(r["replace_original"], false, "{r}");
            r["text"].as_str().map(str::to_owned)
        })
        .await
    }
}

/// The approval requests posted so far (thread replies whose blocks ask for an approval).
pub fn approval_messages(slack: &SlackEmulator) -> Vec<Recorded> {
    slack
        .messages()
        .into_iter()
        .filter(|m| {
            m.thread_ts.is_some()
                && m.blocks
                    .as_ref()
                    .is_some_and(|b| b.to_string().contains("Approval needed"))
        })
        .collect()
}

/// The actions block of an approval message.
pub fn actions(msg: &Recorded) -> Option<Value> {
    msg.blocks
        .as_ref()?
        .as_array()?
        .iter()
        .find(|b| b["type"] == "actions")
        .cloned()
}

/// The block_actions payload Slack posts when `user` presses `action` (with the button's own
/// value unless `value` is given) after picking the option whose value is `choice`.
pub fn interaction(
    msg: &Recorded,
    action: &str,
    value: Option<&str>,
    user: &str,
    choice: Option<&str>,
    response_url: &str,
) -> String {
    let block = actions(msg).expect("the message has its buttons");
    let block_id = block["block_id"].as_str().unwrap().to_owned();
    let button = block["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action_id"] == action)
        .unwrap_or_else(|| panic!("no {action} in {block}"))
        .clone();
    let selected =
        choice.map(|c| json!({ "text": { "type": "plain_text", "text": c }, "value": c }));
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": "T0EMULATE1" },
        "team": { "id": "T0EMULATE1", "domain": "voiceai" },
        "channel": { "id": msg.channel, "name": "voiceai-incidents" },
        "message": { "ts": msg.ts, "thread_ts": msg.thread_ts, "text": msg.text },
        "container": { "type": "message", "message_ts": msg.ts, "channel_id": msg.channel, "is_ephemeral": false },
        "state": { "values": { block_id.clone(): {
            "approval_choice": { "type": "static_select", "selected_option": selected }
        } } },
        "actions": [ {
            "type": "button", "block_id": block_id, "action_id": action,
            "value": value.map(Value::from).unwrap_or(button["value"].clone()),
            "text": button["text"], "action_ts": "1700000001.000200"
        } ],
        "response_url": response_url,
        "trigger_id": "1.2.3",
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

fn steps(detail: &Value) -> Vec<(String, String, String)> {
    detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                format!(
                    "{}/{}",
                    s["phase"].as_str().unwrap(),
                    s["kind"].as_str().unwrap()
                ),
                s["outcome"].as_str().unwrap().to_owned(),
                s["detail"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn finished(s: &Setup, id: i64) -> Value {
    finished_at(&s.client, &s.base(), API_TOKEN, id, 60).await
}

/// The message once updated to its verdict (no buttons).
async fn updated(s: &Setup, ts: &str) -> Recorded {
    eventually(30, "the approval message updated", || async {
        s.slack
            .messages()
            .into_iter()
            .find(|m| m.ts == ts && actions(m).is_none())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_in_slack_with_a_choice_runs_the_restore_of_that_choice_and_refuses_the_rest() {
    let s = Setup::new().await;
    let _served = s.serve().await;
    let id = s.fire().await;
    let msg = s.request().await;
    let text = msg.blocks.as_ref().unwrap().to_string();
    for needle in [
        "Restore which backup?",
        "<@U0DBA>",
        "b-2026-12-01.sql",
        "b-2026-12-02.sql",
        "Only <@U0DBA> may answer.",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    let block = actions(&msg).unwrap();
    let kinds: Vec<&str> = block["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["static_select", "button", "button"]);
    assert_eq!(block["elements"][0]["options"].as_array().unwrap().len(), 2);
    assert_eq!(block["elements"][1]["value"], format!("{id}:main:1"));

    // Unsigned: refused before anything is read.
    let url = s.slack.response_url();
    let forged = interaction(&msg, "approval_approve", None, "U0DBA", Some("1"), &url);
    assert_eq!(s.press(&forged, false).await, 401);
    // A button of another step, someone not in slack_users, an Approve with no pick.
    let stale = s
        .answer(
            &msg,
            "approval_approve",
            Some(&format!("{id}:main:0")),
            "U0DBA",
            Some("1"),
        )
        .await;
    assert!(stale.contains("another step"), "{stale}");
    let other = s
        .answer(&msg, "approval_approve", None, "U0MALLORY", Some("1"))
        .await;
    assert!(other.contains("Only <@U0DBA> may answer"), "{other}");
    // The right button on a message of another thread (another replica's, in a fleet):
    // the number in its value is not this thread's incident here.
    let elsewhere = Recorded {
        thread_ts: Some("1700000000.999999".into()),
        ..msg.clone()
    };
    let other_thread = s
        .answer(&elsewhere, "approval_approve", None, "U0DBA", Some("1"))
        .await;
    assert!(
        other_thread.starts_with("Nothing was done: this message is not in a thread"),
        "{other_thread}"
    );
    let unpicked = s
        .answer(&msg, "approval_approve", None, "U0DBA", None)
        .await;
    assert!(unpicked.contains("Pick one first"), "{unpicked}");
    assert_eq!(s.detail(id).await["phase"], "remediating", "still waiting");

    let done = s
        .answer(&msg, "approval_approve", None, "U0DBA", Some("1"))
        .await;
    assert!(done.contains("You approved `b-2026-12-02.sql`"), "{done}");
    let detail = finished(&s, id).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    let st = steps(&detail);
    assert_eq!(
        st.iter()
            .map(|(k, o, _)| format!("{k}:{o}"))
            .collect::<Vec<_>>(),
        ["main/exec:ok", "main/approve:ok", "main/exec:ok"]
    );
    assert_eq!(st[1].2, "Approved by u0dba (b-2026-12-02.sql)");
    assert!(
        st[2].2.contains("restoring b-2026-12-02.sql"),
        "the argv got the choice: {}",
        st[2].2
    );
    let after = updated(&s, &msg.ts).await;
    assert!(
        after
            .blocks
            .unwrap()
            .to_string()
            .contains("Approved by <@U0DBA> at "),
        "{}",
        after.text
    );
    // A second press on a message not yet redrawn: nothing waits.
    let late = s.answer(&msg, "approval_reject", None, "U0DBA", None).await;
    assert!(late.contains("Nothing waits"), "{late}");
    assert_eq!(s.approval_messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_in_slack_runs_on_failure_and_pages_with_the_reason() {
    let s = Setup::new().await;
    let _served = s.serve().await;
    let id = s.fire().await;
    let msg = s.request().await;
    let told = s.answer(&msg, "approval_reject", None, "U0DBA", None).await;
    assert!(told.contains("You rejected"), "{told}");
    let detail = finished(&s, id).await;
    assert_eq!(detail["phase"], "failed", "{detail:#}");
    let st = steps(&detail);
    assert_eq!(st[1].0, "main/approve");
    assert_eq!(st[1].1, "failed");
    assert!(
        st.iter()
            .any(|(k, o, _)| k == "on_failure/notify" && o == "ok"),
        "{st:?}"
    );
    assert_eq!(
        st.iter().filter(|(k, ..)| k == "main/exec").count(),
        1,
        "no restore ran"
    );
    let page = eventually(30, "the PagerDuty page", || async {
        s.pd.events()
            .into_iter()
            .find(|e| e.event_action == "trigger")
    })
    .await;
    let summary = page.payload.unwrap()["summary"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(summary.contains("Rejected by u0dba"), "{summary}");
    let after = updated(&s, &msg.ts).await;
    assert!(after
        .blocks
        .unwrap()
        .to_string()
        .contains("Rejected by <@U0DBA>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_waiting_keeps_the_request_and_an_approve_in_slack_continues_the_run() {
    let s = Setup::new().await;
    let mut served = s.serve().await;
    let id = s.fire().await;
    let msg = s.request().await;
    // SIGKILL while the runbook waits: no shutdown hook runs.
    served.process.kill();
    let _served = s.serve().await;
    eventually(30, "the resumed wait recorded", || async {
        let d = s.detail(id).await;
        d["decisions"]
            .as_array()?
            .iter()
            .any(|x| x["guard"] == "recovery" && x["verdict"] == "continue")
            .then_some(())
    })
    .await;
    let d = s.detail(id).await;
    assert_eq!(d["phase"], "remediating", "{d:#}");

    let done = s
        .answer(&msg, "approval_approve", None, "U0DBA", Some("0"))
        .await;
    assert!(done.contains("You approved `b-2026-12-01.sql`"), "{done}");
    let detail = finished(&s, id).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    let st = steps(&detail);
    assert_eq!(
        st.iter()
            .map(|(k, o, _)| format!("{k}:{o}"))
            .collect::<Vec<_>>(),
        ["main/exec:ok", "main/approve:ok", "main/exec:ok"],
        "nothing ran twice"
    );
    assert!(
        st[2].2.contains("restoring b-2026-12-01.sql"),
        "{}",
        st[2].2
    );
    assert_eq!(s.approval_messages().len(), 1, "one message");
    let messages = detail["messages"].as_array().unwrap();
    assert_eq!(
        messages.iter().filter(|m| m["kind"] == "approval").count(),
        1,
        "one request"
    );
    assert!(
        !detail["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["reason"].as_str().unwrap_or("").contains("interrupted")),
        "{detail:#}"
    );
    assert!(s.pd.events().is_empty(), "nobody paged");
    updated(&s, &msg.ts).await;
}
