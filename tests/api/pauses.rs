//! Pauses: set, listed and resumed over the API and with the CLI, refused naming the field,
//! kept across a restart, and respected by the engine: a paused incident is told and
//! escalates without its runbook, and once the pause runs out the next one runs.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::emulators::*;
use crate::helpers::*;

const API_TOKEN: &str = "pause-api-token";

/// `paused-db` on postgres (P1, an RTO of 4s: its first tier fires after 2s) and `other` on
/// a labelled service; their runbooks touch no container.
const RULES: &str = r#"rules:
  - name: paused-db
    matchers: ['alertname="PausedDbDown"']
    priority: P1
    rto: 4s
    owner: dba
    target: { service: postgres }
    steps:
      - notify: { message: "the runbook ran" }
  - name: other
    matchers: ['alertname="OtherDown"']
    priority: P3
    rto: 1h
    owner: infra
    target: { label: service, allow: [redis, backend] }
    steps:
      - notify: { message: "other ran" }
"#;

fn env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("REMEDIATOR_WEBHOOK_TOKEN".to_string(), TOKEN.to_string()),
        ("REMEDIATOR_API__TOKEN".to_string(), API_TOKEN.to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

async fn spawn(rules: &Path, extra: &[(&str, &str)]) -> TestApp {
    spawn_with(Spawn {
        env: env(extra),
        rules_dir: Some(rules.to_path_buf()),
    })
    .await
}

/// `method path` on `base` with the API token (when given) and a JSON body: the status and
/// the answer's JSON.
async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post_pause(base: &str, body: Value) -> (u16, Value) {
    call(
        base,
        reqwest::Method::POST,
        "/api/v1/pauses",
        Some(API_TOKEN),
        Some(body),
    )
    .await
}

async fn delete(base: &str, path: &str) -> (u16, Value) {
    call(base, reqwest::Method::DELETE, path, Some(API_TOKEN), None).await
}

async fn pauses(base: &str, query: &str) -> Vec<Value> {
    let (status, v) = call(
        base,
        reqwest::Method::GET,
        &format!("/api/v1/pauses{query}"),
        Some(API_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["pauses"].as_array().unwrap().clone()
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn ids(list: &[Value]) -> Vec<i64> {
    list.iter().map(|p| p["id"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn pauses_are_set_listed_and_resumed_over_the_api() {
    let rules = rules_with(RULES);
    let app = spawn(rules.path(), &[]).await;
    let base = app.addr.as_str();

    let before = Utc::now();
    let (status, first) = post_pause(
        base,
        json!({"rule": "paused-db", "for": "2h", "reason": "db maintenance", "by": "alice"}),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(
        (
            &first["scope"],
            &first["by"],
            &first["state"],
            &first["reason"]
        ),
        (
            &json!("rule paused-db"),
            &json!("alice"),
            &json!("active"),
            &json!("db maintenance")
        )
    );
    let until = time(&first["until"]);
    assert!(
        until >= before + chrono::Duration::hours(2)
            && until <= Utc::now() + chrono::Duration::hours(2),
        "{first}"
    );
    let (status, second) = post_pause(
        base,
        json!({"rule": "other", "service": "redis", "for": "30m", "reason": "cache work"}),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["by"], "api", "no `by`: the API's name");
    assert_eq!(second["scope"], "rule other on service redis");
    let (first_id, second_id) = (
        first["id"].as_i64().unwrap(),
        second["id"].as_i64().unwrap(),
    );

    assert_eq!(ids(&pauses(base, "").await), [first_id, second_id]);
    // On /-/ready, which stays ready.
    let (status, ready) = app.get_json("/-/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["ready"], true);
    assert_eq!(
        ready["checks"]["pauses"][0],
        json!({"id": first_id, "scope": "rule paused-db", "by": "alice",
               "until": first["until"], "reason": "db maintenance"})
    );
    assert_eq!(ready["checks"]["pauses"].as_array().unwrap().len(), 2);
    let metrics = app
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "remediator_pauses_active 2"),
        "{metrics}"
    );

    // Resume one, by name; again is no error, and says how it ended.
    let (status, v) = delete(base, &format!("/api/v1/pauses/{first_id}?by=bob")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(ids(v["ended"].as_array().unwrap()), [first_id]);
    assert_eq!(
        (&v["ended"][0]["state"], &v["ended"][0]["ended_by"]),
        (&json!("resumed"), &json!("bob"))
    );
    let (status, again) = delete(base, &format!("/api/v1/pauses/{first_id}")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["ended"], json!([]));
    assert_eq!(again["pause"]["ended_by"], "bob");
    let (status, v) = delete(base, "/api/v1/pauses/999").await;
    assert_eq!((status, &v["detail"]), (404, &json!("no pause 999")));
    let (status, v) = delete(base, "/api/v1/pauses/abc").await;
    assert_eq!(status, 400, "{v}");

    assert_eq!(ids(&pauses(base, "").await), [second_id]);
    let all = pauses(base, "?all=true").await;
    assert_eq!(ids(&all), [second_id, first_id], "newest first");
    assert_eq!(all[1]["state"], "resumed");
    let (status, _) = call(
        base,
        reqwest::Method::GET,
        "/api/v1/pauses?all=maybe",
        Some(API_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 400);

    // Resume every pause in force: only the one left.
    let (status, v) = delete(base, "/api/v1/pauses?by=carol").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(ids(v["ended"].as_array().unwrap()), [second_id]);
    assert_eq!(v["ended"][0]["ended_by"], "carol");
    let (_, v) = delete(base, "/api/v1/pauses").await;
    assert_eq!(v["ended"], json!([]));
    assert!(pauses(base, "").await.is_empty());

    // The token is required, and without one configured pauses cannot be changed at all.
    let (status, _) = call(
        base,
        reqwest::Method::POST,
        "/api/v1/pauses",
        None,
        Some(json!({"rule": "paused-db", "for": "1h", "reason": "x"})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(base, reqwest::Method::GET, "/api/v1/pauses", None, None).await;
    assert_eq!(status, 401);
    let open = spawn_with(Spawn {
        env: vec![("REMEDIATOR_WEBHOOK_TOKEN".into(), TOKEN.into())],
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await;
    let (status, v) = call(
        &open.addr,
        reqwest::Method::POST,
        "/api/v1/pauses",
        None,
        Some(json!({"rule": "paused-db", "for": "1h", "reason": "x"})),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("api.token"), "{v}");
}

#[tokio::test]
async fn a_bad_pause_is_refused_naming_the_field_and_nothing_is_stored() {
    let rules = rules_with(RULES);
    let app = spawn(rules.path(), &[]).await;
    let base = app.addr.as_str();
    let ok = json!({"rule": "paused-db", "for": "1h", "reason": "db maintenance"});
    let with = |changes: Value| {
        let mut b = ok.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let cases = [
        (
            with(json!({"rule": "no-such-rule"})),
            "rule: `no-such-rule` is not a rule in force (rules: paused-db, other)",
        ),
        (
            with(json!({"rule": null, "service": "ghost"})),
            "service: `ghost` is not a service any rule acts on nor one of docker.allowed_services (known: backend, postgres, redis)",
        ),
        (
            with(json!({"rule": null, "service": "../postgres"})),
            "service: \"../postgres\" is not a plain container or service name",
        ),
        (
            with(json!({"service": "redis"})),
            "service: rule `paused-db` never acts on `redis` (it acts on: postgres)",
        ),
        (
            with(json!({"rule": null})),
            "rule: missing: name a rule, a service or both",
        ),
        (
            with(json!({"all": true})),
            "all: pauses every runbook, so it goes alone",
        ),
        (with(json!({"for": "0s"})), "for: `0s` must be longer than zero"),
        (
            with(json!({"for": "-2h"})),
            "for: `-2h` is not a duration such as 30s, 2m or 1h",
        ),
        (
            with(json!({"for": "soon"})),
            "for: `soon` is not a duration such as 30s, 2m or 1h",
        ),
        (
            with(json!({"for": "31days"})),
            "for: a pause lasts at most 30days",
        ),
        (
            with(json!({"for": null})),
            "for: missing: how long, such as 2h",
        ),
        (
            with(json!({"for": null, "until": "2020-01-01T00:00:00Z"})),
            "until: the pause would end (2020-01-01 00:00:00 UTC) before it starts",
        ),
        (
            with(json!({"for": null, "until": "14:00"})),
            "until: `14:00` is not an RFC 3339 time",
        ),
        (
            with(json!({"reason": null})),
            "reason: missing; say why",
        ),
        (with(json!({"reason": "  "})), "reason: missing; say why"),
        (with(json!({"by": ""})), "by: empty; say who you are"),
        (with(json!({"for": 2})), "for: invalid type: integer `2`, expected a string"),
        (
            with(json!({"durration": "1h"})),
            "durration: unknown field `durration`",
        ),
    ];
    for (body, want) in &cases {
        let (status, v) = post_pause(base, body.clone()).await;
        assert_eq!(status, 400, "{body} → {v}");
        assert_eq!(v["error"], "invalid pause", "{body} → {v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(want),
            "{body}:\n  {detail}\nwanted\n  {want}"
        );
    }
    // Several problems at once: each is named.
    let (status, v) = post_pause(base, json!({"rule": "nope", "for": "0s"})).await;
    assert_eq!(status, 400);
    let detail = v["detail"].as_str().unwrap();
    for field in ["rule: ", "for: ", "reason: "] {
        assert!(detail.contains(field), "{field} in {detail}");
    }
    let (status, v) = call(
        base,
        reqwest::Method::POST,
        "/api/v1/pauses",
        Some(API_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 400, "no body: {v}");
    assert_eq!(
        call(
            base,
            reqwest::Method::DELETE,
            "/api/v1/pauses?by=%0A",
            Some(API_TOKEN),
            None
        )
        .await
        .0,
        400,
        "a resumer's name with a newline"
    );

    assert!(
        pauses(base, "?all=true").await.is_empty(),
        "nothing half-applied"
    );
    // docker.allowed_services names services a pause may name too.
    let app = spawn(
        rules.path(),
        &[("REMEDIATOR_DOCKER__ALLOWED_SERVICES", "[minio, redis]")],
    )
    .await;
    let (status, v) = post_pause(
        &app.addr,
        json!({"service": "minio", "for": "1h", "reason": "bucket migration"}),
    )
    .await;
    assert_eq!((status, &v["scope"]), (201, &json!("service minio")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_pauses_lists_and_resumes_against_the_running_service() {
    let rules = rules_with(RULES);
    let app = spawn(rules.path(), &[]).await;
    let listen = app.addr.trim_start_matches("http://").to_string();
    // No --url: the configured listen address; the pause is set by $USER.
    let env = [
        ("REMEDIATOR_API__TOKEN", API_TOKEN),
        ("REMEDIATOR_LISTEN", listen.as_str()),
        ("USER", "alice"),
    ];

    let out = remediator(
        &[
            "pause",
            "--rule",
            "paused-db",
            "--for",
            "2h",
            "--reason",
            "db maintenance",
        ],
        &env,
    )
    .await;
    let text = stdout(&out);
    let stored = pauses(&app.addr, "").await;
    assert_eq!(stored.len(), 1);
    let until = time(&stored[0]["until"])
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string();
    assert_eq!(
        text,
        format!(
            "Paused rule paused-db until {until}, by alice: db maintenance\n\
             Pause 1; end it early with `remediator resume 1`\n"
        )
    );

    // The service's refusal, as it gave it, and a non-zero exit.
    let out = remediator(
        &[
            "pause",
            "--service",
            "ghost",
            "--for",
            "1h",
            "--reason",
            "x",
            "--url",
            &app.addr,
        ],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("400 Bad Request: invalid pause: service: `ghost` is not a service"),
        "{err}"
    );
    let out = remediator(
        &[
            "pause",
            "--rule",
            "paused-db",
            "--for",
            "0s",
            "--reason",
            "x",
        ],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("for: `0s` must be longer than zero"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No scope at all: refused before asking anything.
    let out = remediator(&["pause", "--for", "1h", "--reason", "x"], &env).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rule") && err.contains("--all"), "{err}");
    assert_eq!(pauses(&app.addr, "").await.len(), 1, "nothing more stored");

    let out = remediator(
        &[
            "pause", "--all", "--for", "30m", "--reason", "freeze", "--by", "bob", "-o", "json",
        ],
        &env,
    )
    .await;
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (&v["id"], &v["scope"], &v["by"]),
        (&json!(2), &json!("every runbook"), &json!("bob"))
    );

    let out = remediator(&["pauses"], &env).await;
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("ID  STATE   SCOPE"), "{text}");
    assert!(
        lines[1].starts_with("1   active  rule paused-db") && lines[1].ends_with("db maintenance"),
        "{text}"
    );
    assert!(
        lines[2].contains("every runbook") && lines[2].contains("bob"),
        "{text}"
    );

    let out = remediator(&["resume", "1", "--by", "carol"], &env).await;
    assert_eq!(
        stdout(&out),
        "Resumed pause 1 (rule paused-db, set by alice: db maintenance)\n"
    );
    let out = remediator(&["resume", "1"], &env).await;
    let text = stdout(&out);
    assert!(
        text.starts_with("Pause 1 had already ended: resumed by carol at "),
        "{text}"
    );
    let out = remediator(&["resume", "7"], &env).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pause 7"));
    let out = remediator(&["resume", "--all"], &env).await;
    assert_eq!(
        stdout(&out),
        "Resumed pause 2 (every runbook, set by bob: freeze)\n"
    );
    let out = remediator(&["resume", "--all"], &env).await;
    assert_eq!(stdout(&out), "No pause was in force\n");
    let out = remediator(&["pauses", "--all", "-o", "json"], &env).await;
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let states: Vec<_> = v["pauses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_i64().unwrap(),
                p["ended_by"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(states, [(2, "alice".to_string()), (1, "carol".to_string())]);

    // Without the token: the service's refusal and what to do.
    let out = remediator(&["pauses", "--url", &app.addr], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("api.token"), "{err}");
}

/// The paused incident's decisions and the pause skip among them.
fn pause_skip(detail: &Value) -> Option<String> {
    detail["decisions"]
        .as_array()?
        .iter()
        .find(|d| d["guard"] == "pause" && d["verdict"] == "skip")
        .map(|d| d["reason"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_pause_survives_a_restart_of_the_service_and_still_skips() {
    let rules = rules_with(RULES);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = [("REMEDIATOR_API__TOKEN", API_TOKEN)];
    let mut served = Served::start(data.path(), port, Some(rules.path()), &env).await;
    let (status, p) = post_pause(
        &served.base,
        json!({"service": "postgres", "for": "2h", "reason": "db maintenance", "by": "alice"}),
    )
    .await;
    assert_eq!(status, 201, "{p}");
    // SIGKILL: no shutdown hook runs. 201 means stored.
    served.process.kill();

    let served = Served::start(data.path(), port, Some(rules.path()), &env).await;
    let listed = pauses(&served.base, "").await;
    assert_eq!(
        listed,
        std::slice::from_ref(&p),
        "the same pause, still active"
    );
    let (_, ready) = call(&served.base, reqwest::Method::GET, "/-/ready", None, None).await;
    assert_eq!(ready["checks"]["pauses"][0]["id"], p["id"], "{ready}");

    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/hooks/alertmanager", served.base))
        .bearer_auth(TOKEN)
        .body(fire(
            json!({"alertname": "PausedDbDown", "service": "postgres"}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reason = eventually(20, "the incident skipped by the pause", || async {
        let list = try_all_incidents(&client, &served.base, Some(API_TOKEN), "").await?;
        let id = list.first()?["id"].as_i64()?;
        let (_, d) = call(
            &served.base,
            reqwest::Method::GET,
            &format!("/api/v1/incidents/{id}"),
            Some(API_TOKEN),
            None,
        )
        .await;
        pause_skip(&d)
    })
    .await;
    assert!(
        reason.starts_with("paused by alice until ") && reason.ends_with(": db maintenance"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_paused_alert_is_told_and_escalates_without_its_runbook_and_the_next_runs_once_the_pause_ends(
) {
    let slack = SlackEmulator::start().await;
    for (email, id) in [
        ("oncall@voiceai-testing.local", "U0ONCALL"),
        ("dba@voiceai-testing.local", "U0DBA"),
        ("eng-lead@voiceai-testing.local", "U0LEAD"),
    ] {
        slack.add_user(email, id);
    }
    let rules = rules_with(RULES);
    let slack_url = slack.url();
    let app = spawn(
        rules.path(),
        &[
            ("REMEDIATOR_SLACK__API_URL", &slack_url),
            ("REMEDIATOR_SLACK__BOT_TOKEN", SLACK_TOKEN),
            ("REMEDIATOR_SLACK__CHANNEL", SLACK_CHANNEL),
            ("REMEDIATOR_SLACK__TIMEOUT", "2s"),
        ],
    )
    .await;
    // Long enough for the first alert to be decided under it; short enough to wait out.
    let (status, p) = post_pause(
        &app.addr,
        json!({"rule": "paused-db", "for": "6s", "reason": "db maintenance", "by": "alice"}),
    )
    .await;
    assert_eq!(status, 201, "{p}");
    let until = time(&p["until"]);

    app.post_hook(fire(
        json!({"alertname": "PausedDbDown", "service": "postgres", "n": "1"}),
    ))
    .await;
    let first = app.finished("PausedDbDown", 20).await;
    assert_eq!(
        (&first["state"], &first["phase"]),
        (&json!("open"), &json!("skipped"))
    );
    let reason = pause_skip(&first).expect("skipped by the pause");
    assert_eq!(
        reason,
        format!(
            "paused by alice until {}: db maintenance",
            if until.date_naive() == Utc::now().date_naive() {
                until.format("%H:%M UTC").to_string()
            } else {
                until.format("%Y-%m-%d %H:%M UTC").to_string()
            }
        )
    );
    assert!(first["steps"].as_array().unwrap().is_empty(), "{first}");
    let id = first["id"].as_i64().unwrap();

    // Told in Slack: the root, and the skip with its reason in the thread.
    let root = eventually(20, "the incident's root message", || async {
        slack
            .messages()
            .into_iter()
            .find(|m| m.thread_ts.is_none() && m.text.contains("PausedDbDown"))
    })
    .await;
    eventually(20, "the skip in the thread", || async {
        slack
            .thread(&root.ts)
            .into_iter()
            .find(|m| m.text.contains("paused by alice until"))
    })
    .await;
    // Escalates all the same: the first tier at half its 4s RTO.
    eventually(
        20,
        "the first escalation tier of the paused incident",
        || async {
            let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
            d["decisions"]
                .as_array()?
                .iter()
                .find(|x| x["guard"] == "tier")
                .cloned()
        },
    )
    .await;

    // The pause runs out by itself; the next alert's runbook runs.
    eventually(20, "the pause to expire", || async {
        let all = pauses(&app.addr, "?all=true").await;
        (all[0]["state"] == "expired").then_some(())
    })
    .await;
    assert!(pauses(&app.addr, "").await.is_empty());
    app.post_hook(fire(
        json!({"alertname": "PausedDbDown", "service": "postgres", "n": "2"}),
    ))
    .await;
    let second_id = eventually(20, "a second incident", || async {
        let l = app.incidents().await;
        (l.len() == 2).then(|| l[0]["id"].as_i64().unwrap())
    })
    .await;
    let second = app.finished_id(second_id, 20).await;
    assert_eq!(pause_skip(&second), None, "{second}");
    assert_eq!(
        step_outcomes(&second),
        [("main".to_string(), "notify".to_string(), "ok".to_string())],
        "{second}"
    );
}
