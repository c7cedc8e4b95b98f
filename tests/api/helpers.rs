//! What the tests share, written once: spawning the service (in process, or the binary in a
//! child process owned by a [`ChildGuard`]), waiting on conditions, building webhook payloads,
//! rule directories and Slack request signatures.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use remediator::settings::{Overrides, Settings};
use remediator::startup::Application;
use serde_json::Value;

pub const TOKEN: &str = "test-token-Zm9v";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("tests/fixtures/alertmanager-0.25").join(name)).expect("fixture")
}

/// A path to a tool the test environment provides; panics (fails the test) when missing.
pub fn tool(env: &str, default: &str) -> PathBuf {
    let p = std::env::var(env)
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(default));
    let found = if p.is_absolute() {
        p.exists()
    } else {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {}", p.display()))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        found,
        "{} not found: run the tests through scripts/test (see README)",
        p.display()
    );
    p
}

pub struct TestApp {
    pub addr: String,
    /// Sent on API calls when the app was configured with one.
    pub api_token: Option<String>,
    pub data_dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

pub struct Spawn {
    pub env: Vec<(String, String)>,
    pub rules_dir: Option<PathBuf>,
}

impl Default for Spawn {
    fn default() -> Self {
        Spawn {
            env: vec![("REMEDIATOR_WEBHOOK_TOKEN".into(), TOKEN.into())],
            rules_dir: None,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Spawn::default()).await
}

pub async fn spawn_with(spawn: Spawn) -> TestApp {
    spawn_with_buttons(spawn, None).await
}

/// As [`spawn_with`], with what the root's Silence and Pause buttons act through (Docker
/// when `REMEDIATOR_DOCKER__PROJECT` is set, the wall clock).
pub async fn spawn_with_buttons(
    spawn: Spawn,
    buttons: Option<remediator::http::buttons::Buttons>,
) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let api_token = spawn
        .env
        .iter()
        .find(|(k, _)| k == "REMEDIATOR_API__TOKEN")
        .map(|(_, v)| v.clone());
    // A test brings its compose project up just before the service: read back at startup,
    // those creates would be a deploy in progress and skip every runbook. The tests of the
    // replay turn it on (a later value wins).
    let mut env = vec![(
        "REMEDIATOR_DOCKER__DEPLOY_REPLAY".to_string(),
        "false".to_string(),
    )];
    env.extend(spawn.env);
    let settings = Settings::load(
        None,
        env,
        &Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(data_dir.path().to_path_buf()),
            rules_dir: Some(spawn.rules_dir.unwrap_or_else(|| repo().join("rules"))),
        },
    )
    .unwrap();
    // No buttons given: the real ones, as the service wires them.
    let app = Application::build_with_buttons(settings, buttons)
        .await
        .unwrap();
    let addr = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        api_token,
        data_dir,
        client: reqwest::Client::new(),
    }
}

impl TestApp {
    pub async fn post_hook(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(format!("{}/hooks/alertmanager", self.addr))
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let mut req = self.client.get(format!("{}{path}", self.addr));
        if let Some(t) = &self.api_token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `/metrics` as text; `None` when it does not answer.
    pub async fn metrics(&self) -> Option<String> {
        let r = self
            .client
            .get(format!("{}/metrics", self.addr))
            .send()
            .await
            .ok()?;
        r.text().await.ok()
    }

    /// Every incident, newest first (all pages).
    pub async fn incidents(&self) -> Vec<Value> {
        all_incidents(&self.client, &self.addr, self.api_token.as_deref(), "").await
    }

    pub fn data_path(&self) -> &Path {
        self.data_dir.path()
    }
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One alert as Alertmanager puts it in a webhook; a resolved one ends now.
pub fn alert(
    labels: serde_json::Value,
    starts_at: chrono::DateTime<chrono::Utc>,
    status: &str,
) -> serde_json::Value {
    let ends = if status == "resolved" {
        chrono::Utc::now().to_rfc3339()
    } else {
        "0001-01-01T00:00:00Z".to_string()
    };
    serde_json::json!({
        "status": status, "labels": labels, "annotations": {},
        "startsAt": starts_at.to_rfc3339(), "endsAt": ends, "generatorURL": "",
    })
}

/// A webhook (version 4) carrying `alerts`, as Alertmanager sends a group: firing while any
/// alert fires, with the labels all of them share as `commonLabels`.
pub fn webhook(alerts: &[serde_json::Value]) -> String {
    let firing = alerts.iter().any(|a| a["status"] == "firing");
    let mut common = alerts
        .first()
        .and_then(|a| a["labels"].as_object().cloned())
        .unwrap_or_default();
    common.retain(|k, v| alerts.iter().all(|a| a["labels"][k] == *v));
    serde_json::json!({
        "version": "4", "status": if firing { "firing" } else { "resolved" },
        "receiver": "remediator", "groupKey": "{}:{}", "groupLabels": {},
        "commonLabels": common, "commonAnnotations": {}, "externalURL": "http://am",
        "truncatedAlerts": 0, "alerts": alerts,
    })
    .to_string()
}

/// A webhook with one alert, as Alertmanager sends it.
pub fn alert_payload(
    labels: serde_json::Value,
    starts_at: chrono::DateTime<chrono::Utc>,
    status: &str,
) -> String {
    webhook(&[alert(labels, starts_at, status)])
}

/// Every incident the API lists (newest first), page by page with its `next` cursor; `None`
/// when the service does not answer or answers anything but a page (for waits on a service
/// that may be restarting).
pub async fn try_all_incidents(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    query: &str,
) -> Option<Vec<Value>> {
    let mut all = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut url = format!("{base}/api/v1/incidents?limit=1000{query}");
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let mut req = client.get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.ok()?;
        if r.status() != 200 {
            return None;
        }
        let page: Value = r.json().await.ok()?;
        all.extend(page["incidents"].as_array()?.iter().cloned());
        match page["next"].as_i64() {
            Some(next) => before = Some(next),
            None => return Some(all),
        }
    }
}

/// Every incident the API lists (newest first), page by page; fails the test when the
/// service does not answer with pages.
pub async fn all_incidents(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    query: &str,
) -> Vec<Value> {
    try_all_incidents(client, base, token, query)
        .await
        .unwrap_or_else(|| panic!("GET {base}/api/v1/incidents{query} did not answer with pages"))
}

impl TestApp {
    /// Waits until the incident for `alertname` reaches a final phase and returns its detail.
    pub async fn finished(&self, alertname: &str, secs: u64) -> Value {
        let id = eventually(secs, &format!("an incident for {alertname}"), || async {
            self.incidents()
                .await
                .into_iter()
                .find(|i| i["alertname"] == alertname)
                .and_then(|i| i["id"].as_i64())
        })
        .await;
        self.finished_id(id, secs).await
    }

    pub async fn finished_id(&self, id: i64, secs: u64) -> Value {
        eventually(secs, &format!("incident {id} to finish"), || async {
            let (_, v) = self.get_json(&format!("/api/v1/incidents/{id}")).await;
            let phase = v["phase"].as_str().unwrap_or("");
            (!["new", "remediating", ""].contains(&phase)).then_some(v)
        })
        .await
    }
}

/// `kind → outcome` for each step of an incident, in order, with the phase.
pub fn step_outcomes(detail: &Value) -> Vec<(String, String, String)> {
    detail["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["phase"].as_str().unwrap_or("").to_string(),
                        s["kind"].as_str().unwrap_or("").to_string(),
                        s["outcome"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A child process killed and reaped when the guard drops, however the test ends (a failed
/// assertion unwinds through it), so no service, Alertmanager or emulator outlives its test.
pub struct ChildGuard {
    child: Child,
    what: String,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr discarded; `what` names it in failures.
    pub fn spawn(cmd: &mut Command, what: &str) -> ChildGuard {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        ChildGuard {
            child,
            what: what.to_string(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (no shutdown hook runs) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Fails the test if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early: {status}", self.what);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `remediator serve` binary in a child process, on 127.0.0.1:`port`.
pub struct Served {
    pub base: String,
    pub process: ChildGuard,
}

impl Served {
    /// Serves `data` (and `rules`, when given) with `env` and the webhook token, and returns
    /// once `/-/healthy` answers.
    pub async fn start(
        data: &Path,
        port: u16,
        rules: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Served {
        Served::start_args(data, port, rules, env, &[]).await
    }

    /// As [`Served::start`], with more arguments (e.g. `--config FILE`).
    pub async fn start_args(
        data: &Path,
        port: u16,
        rules: Option<&Path>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Served {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_remediator"));
        cmd.current_dir(repo())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data)
            .env("REMEDIATOR_WEBHOOK_TOKEN", TOKEN)
            .env("REMEDIATOR_LOG__LEVEL", "warn")
            // As in `spawn_with`: the stack a test just brought up is no deploy.
            .env("REMEDIATOR_DOCKER__DEPLOY_REPLAY", "false")
            .envs(env.iter().copied());
        if let Some(rules) = rules {
            cmd.arg("--rules").arg(rules);
        }
        cmd.args(args);
        let mut served = Served {
            base: format!("http://127.0.0.1:{port}"),
            process: ChildGuard::spawn(&mut cmd, "remediator serve"),
        };
        let client = reqwest::Client::new();
        let healthy = format!("{}/-/healthy", served.base);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            served.process.assert_running();
            if client
                .get(&healthy)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return served;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "remediator serve did not answer on {healthy} within 20s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Slack's v0 request signature (`X-Slack-Signature`) of a raw `body` sent at `timestamp`:
/// `v0=` and the hex HMAC-SHA256 of `v0:{timestamp}:{body}` under the signing secret.
pub fn slack_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// The form body Slack posts when `username` (`user_id`) presses Acknowledge on an incident.
pub fn slack_ack_interaction(incident_id: i64, user_id: &str, username: &str) -> String {
    slack_button_interaction("ack", incident_id, user_id, username)
}

/// The form body Slack posts when `username` (`user_id`) presses the button `action_id` on
/// an incident's root.
pub fn slack_button_interaction(
    action_id: &str,
    incident_id: i64,
    user_id: &str,
    username: &str,
) -> String {
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": {"id": user_id, "username": username, "name": username, "team_id": "T0EMULATE1"},
        "actions": [{"type": "button", "action_id": action_id, "block_id": format!("incident-{incident_id}"),
                     "value": incident_id.to_string(), "action_ts": "1700000001.000200"}],
        "team": {"id": "T0EMULATE1", "domain": "voiceai"},
        "response_url": "https://hooks.slack.invalid/x", "trigger_id": "t",
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

/// A rule directory: the shipped `escalation.yaml` and `files` (name, text).
pub fn rule_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("rules/escalation.yaml"),
        dir.path().join("escalation.yaml"),
    )
    .unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// A rule directory with the shipped escalation.yaml and one rule file holding `text`.
pub fn rules_with(text: &str) -> tempfile::TempDir {
    rule_dir(&[("10-test.yaml", text)])
}

/// A copy of the shipped `rules/`, for tests that change it under a running service.
pub fn shipped_rules_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(repo().join("rules")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

/// A webhook with one alert firing since now.
pub fn fire(labels: serde_json::Value) -> String {
    alert_payload(labels, chrono::Utc::now(), "firing")
}

/// Runs the binary (`remediator args…` with `env`, and no `REMEDIATOR_API__TOKEN` but the one
/// given) without blocking the runtime the in-process service answers on.
pub async fn remediator(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_remediator"))
        .current_dir(repo())
        .args(args)
        .env_remove("REMEDIATOR_API__TOKEN")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap()
}

/// The command's stdout, after checking that it succeeded (failing with its stderr).
pub fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The PagerDuty `dedup_key` of incident `id` as the service reads it: the firing's identity.
pub async fn pd_key(app: &TestApp, id: i64) -> String {
    let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
    let starts_at = d["starts_at"].as_str().unwrap().parse().unwrap();
    remediator::notify::pagerduty::dedup_key(d["fingerprint"].as_str().unwrap(), starts_at)
}

/// `GET /api/v1/incidents/{id}` of the service at `base`, as `token`.
pub async fn detail_at(client: &reqwest::Client, base: &str, token: &str, id: i64) -> Value {
    client
        .get(format!("{base}/api/v1/incidents/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Posts webhook `body` to the service at `base`, with the webhook token; the HTTP status.
pub async fn post_hook_at(
    client: &reqwest::Client,
    base: &str,
    body: impl Into<reqwest::Body>,
) -> u16 {
    client
        .post(format!("{base}/hooks/alertmanager"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Posts webhook `body` to the service at `base` (200 expected), then waits for the incident
/// of `alertname` to show in its list; its id.
pub async fn fire_at(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: impl Into<reqwest::Body>,
    alertname: &str,
) -> i64 {
    assert_eq!(post_hook_at(client, base, body).await, 200);
    eventually(30, "the incident", || async {
        all_incidents(client, base, Some(token), "")
            .await
            .into_iter()
            .find(|i| i["alertname"] == alertname)
            .and_then(|i| i["id"].as_i64())
    })
    .await
}

/// Waits until incident `id` of the service at `base` ends (a final phase); its detail.
pub async fn finished_at(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    id: i64,
    secs: u64,
) -> Value {
    eventually(secs, "the run to end", || async {
        let d = detail_at(client, base, token, id).await;
        let phase = d["phase"].as_str().unwrap_or("");
        (!["new", "remediating", ""].contains(&phase)).then_some(d)
    })
    .await
}
