//! The DR plan's scenario 2 with its approval answered in Slack, as the dba would: the shipped
//! `postgres-down` rule against the busybox compose project (postgres kept down by the
//! `CORRUPTED` flag in its volume), the fallback's request posted in the incident's thread
//! with the listed backups as its choices, a signed Approve of one of them, and a kill -9 of
//! remediator while the fallback waits, after which the same message's buttons still work
//! and nothing that ran before the wait runs again.

use serde_json::Value;

use crate::approve_slack::{actions, approval_messages, Press};
use crate::emulators::*;
use crate::helpers::*;
use crate::scenario2::{
    kinds, labels, read, rules, state, FALLBACK_APPROVED, MAIN_FAILED, NEWER, OLDER, RESTORED_FROM,
    SERVICES,
};
use crate::stack::{compose_file, Stack};

const SIGNING_SECRET: &str = "scenario2-slack-signing-secret-01";
const API_TOKEN: &str = "api-token-for-scenario2-slack-tests";
/// The dba's Slack user: the only one the request lets answer.
const DBA: &str = "U0DBA";

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
    /// The stack with two backups and a corrupted database; the shipped rules with the dba
    /// contact answerable in Slack only by [`DBA`].
    async fn new() -> Setup {
        let stack = Stack::up(SERVICES);
        for b in [OLDER, NEWER] {
            stack.exec("backup", &["touch", &format!("/data/backups/{b}")]);
        }
        stack.exec("postgres", &["touch", "/var/lib/postgresql/data/CORRUPTED"]);
        let slack = SlackEmulator::start().await;
        slack.add_user("dba@voiceai-testing.local", DBA);
        let rules = rules(None);
        let path = rules.path().join("escalation.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let at = "    email: dba@voiceai-testing.local\n";
        assert!(text.contains(at), "the shipped dba contact");
        std::fs::write(
            &path,
            text.replacen(at, &format!("{at}    slack_users: [{DBA}]\n"), 1),
        )
        .unwrap();
        Setup {
            stack,
            slack,
            pd: PagerDutyEmulator::start().await,
            rules,
            data: tempfile::tempdir().unwrap(),
            port: free_port(),
            client: reqwest::Client::new(),
        }
    }

    /// remediator on the same data directory and port every time.
    async fn serve(&self) -> Served {
        let (slack, pd, compose) = (self.slack.url(), self.pd.url(), compose_file());
        Served::start(
            self.data.path(),
            self.port,
            Some(self.rules.path()),
            &[
                ("REMEDIATOR_API__TOKEN", API_TOKEN),
                ("REMEDIATOR_DOCKER__PROJECT", &self.stack.project),
                ("REMEDIATOR_DOCKER__COMPOSE_FILE", &compose),
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

    /// Fires the PostgresDown; the incident's id.
    async fn fire(&self) -> i64 {
        let body = alert_payload(labels(), chrono::Utc::now(), "firing");
        fire_at(&self.client, &self.base(), API_TOKEN, body, "PostgresDown").await
    }

    /// The fallback's request once it is in the thread, with the incident waiting on it.
    async fn request(&self, id: i64) -> Recorded {
        let msg = eventually(90, "the approval message in the thread", || async {
            approval_messages(&self.slack).into_iter().next()
        })
        .await;
        let d = self.detail(id).await;
        assert_eq!(d["phase"], "remediating", "{d:#}");
        assert!(
            d["steps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["phase"] == "fallback"
                    && s["kind"] == "approve"
                    && s["outcome"] == "running"),
            "{d:#}"
        );
        msg
    }

    async fn answer(
        &self,
        msg: &Recorded,
        action: &str,
        user: &str,
        choice: Option<&str>,
    ) -> String {
        let base = self.base();
        let press = Press {
            client: &self.client,
            base: &base,
            secret: SIGNING_SECRET,
            slack: &self.slack,
        };
        press.answer(msg, action, None, user, choice).await
    }

    async fn finished(&self, id: i64) -> Value {
        finished_at(&self.client, &self.base(), API_TOKEN, id, 90).await
    }

    /// Nothing destructive before the answer: the dependents stopped, nothing restored.
    fn assert_waiting_untouched(&self) {
        for svc in ["backend", "celery-worker"] {
            assert_eq!(state(&self.stack, svc, "Running"), false, "{svc} stopped");
        }
        assert_eq!(read(&self.stack, "postgres", RESTORED_FROM), None);
        assert_eq!(
            read(
                &self.stack,
                "backup",
                "/var/log/stand-ins/postgres_restore.log"
            ),
            None
        );
    }

    /// What a recovery from `backup` leaves: every step once, the restore of that backup,
    /// the dependents running, the request redrawn with its verdict, nobody paged.
    async fn assert_recovered_from(&self, id: i64, msg: &Recorded, backup: &str) -> Value {
        let detail = self.finished(id).await;
        assert_eq!(detail["phase"], "recovered", "{detail:#}");
        let mut want: Vec<String> = MAIN_FAILED.iter().map(|k| k.to_string()).collect();
        want.extend(FALLBACK_APPROVED.map(String::from));
        assert_eq!(kinds(&detail), want, "every step once: {detail:#}");
        let approve = detail["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "approve")
            .unwrap();
        assert_eq!(
            approve["detail"],
            format!("Approved by {} ({backup})", DBA.to_lowercase()),
            "{approve:#}"
        );
        assert_eq!(
            read(&self.stack, "postgres", RESTORED_FROM).as_deref(),
            Some(backup)
        );
        let restored = read(
            &self.stack,
            "backup",
            "/var/log/stand-ins/postgres_restore.log",
        )
        .unwrap();
        assert_eq!(restored.lines().count(), 1, "one restore: {restored}");
        assert!(
            restored.ends_with(&format!("restored {backup}")),
            "{restored}"
        );
        for svc in ["backend", "celery-worker"] {
            assert_eq!(state(&self.stack, svc, "Running"), true, "{svc} running");
        }
        eventually(30, "the approval message updated", || async {
            self.slack.messages().into_iter().find(|m| {
                m.ts == msg.ts
                    && actions(m).is_none()
                    && m.blocks.as_ref().is_some_and(|b| {
                        b.to_string().contains(&format!("Approved by <@{DBA}> at "))
                    })
            })
        })
        .await;
        assert_eq!(approval_messages(&self.slack).len(), 1, "one request");
        assert!(self.pd.events().is_empty(), "{:?}", self.pd.events());
        detail
    }
}

/// The value of the request's menu option for `choice` (options are listed as the backup
/// script printed them, newest first).
fn option_of(msg: &Recorded, choice: &str) -> String {
    let block = actions(msg).expect("the request has its buttons");
    let options = block["elements"][0]["options"].as_array().unwrap();
    let texts: Vec<&str> = options
        .iter()
        .map(|o| o["text"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, [NEWER, OLDER], "the listed backups are the choices");
    options
        .iter()
        .find(|o| o["text"]["text"] == choice)
        .and_then(|o| o["value"].as_str())
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_approved_in_slack_by_the_dba_restores_the_backup_picked_in_the_message() {
    let s = Setup::new().await;
    let _served = s.serve().await;
    let id = s.fire().await;
    let msg = s.request(id).await;
    assert_eq!(
        msg.thread_ts.as_deref(),
        Some(s.slack.messages()[0].ts.as_str()),
        "in the incident's thread"
    );
    let text = msg.blocks.as_ref().unwrap().to_string();
    assert!(
        text.contains(&format!("Only <@{DBA}> may answer.")),
        "{text}"
    );
    s.assert_waiting_untouched();
    let older = option_of(&msg, OLDER);

    // Anyone else is refused and the incident keeps waiting.
    let other = s
        .answer(&msg, "approval_approve", "U0MALLORY", Some(&older))
        .await;
    assert!(
        other.contains(&format!("Only <@{DBA}> may answer")),
        "{other}"
    );
    assert_eq!(s.detail(id).await["phase"], "remediating");
    s.assert_waiting_untouched();

    let done = s.answer(&msg, "approval_approve", DBA, Some(&older)).await;
    assert!(done.contains(&format!("You approved `{OLDER}`")), "{done}");
    let detail = s.assert_recovered_from(id, &msg, OLDER).await;
    let approvals = detail["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1, "{approvals:#?}");
    assert_eq!(approvals[0]["decided"]["choice"], OLDER, "{approvals:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_killed_while_the_fallback_waits_keeps_the_request_and_its_buttons_after_a_restart(
) {
    let s = Setup::new().await;
    let mut served = s.serve().await;
    let id = s.fire().await;
    let msg = s.request(id).await;
    let before = kinds(&s.detail(id).await);
    // SIGKILL while the fallback waits for the dba: no shutdown hook runs.
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
    assert_eq!(d["phase"], "remediating", "still waiting: {d:#}");
    assert_eq!(kinds(&d), before, "nothing ran again: {d:#}");
    s.assert_waiting_untouched();

    // The message posted before the kill answers for the resumed wait.
    let newer = option_of(&msg, NEWER);
    let done = s.answer(&msg, "approval_approve", DBA, Some(&newer)).await;
    assert!(done.contains(&format!("You approved `{NEWER}`")), "{done}");
    let detail = s.assert_recovered_from(id, &msg, NEWER).await;
    assert!(
        !detail["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["reason"].as_str().unwrap_or("").contains("interrupted")),
        "{detail:#}"
    );
    let requests = detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "approval")
        .count();
    assert_eq!(requests, 1, "one request, not one per start");
}
