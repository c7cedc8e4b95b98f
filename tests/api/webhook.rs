use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn webhook_requires_the_bearer_token() {
    let app = spawn_app().await;
    let url = format!("{}/hooks/alertmanager", app.addr);
    let body = fixture("postgres-down-firing.json");
    let none = app
        .client
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers()["www-authenticate"],
        "Bearer realm=\"remediator\""
    );
    let v: Value = none.json().await.unwrap();
    assert_eq!(v["error"], "unauthorized");
    let wrong = app
        .client
        .post(&url)
        .bearer_auth("test-token-Zm9w")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = app.post_hook(body).await;
    assert_eq!(ok.status(), 200);
    let v: Value = ok.json().await.unwrap();
    assert_eq!(v["delivery"], 1, "refused requests store nothing: {v}");
    let incidents = app.incidents().await;
    assert_eq!(incidents.len(), 1);
    assert_eq!(
        incidents[0]["deliveries"], 1,
        "refused requests are not applied either"
    );
}

#[tokio::test]
async fn basic_auth_is_the_other_option() {
    let app = spawn_with(Spawn {
        env: vec![
            ("REMEDIATOR_WEBHOOK__BASIC_USER".into(), "am".into()),
            ("REMEDIATOR_WEBHOOK__BASIC_PASSWORD".into(), "pw".into()),
        ],
        rules_dir: None,
    })
    .await;
    let url = format!("{}/hooks/alertmanager", app.addr);
    let ok = app
        .client
        .post(&url)
        .basic_auth("am", Some("pw"))
        .body(fixture("postgres-down-firing.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = app
        .client
        .post(&url)
        .basic_auth("am", Some("px"))
        .body(fixture("postgres-down-firing.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
}

#[tokio::test]
async fn bad_payloads_get_400_with_a_json_body_naming_the_problem() {
    let app = spawn_app().await;
    for (body, detail) in [
        ("{not json".to_string(), "key must be a string"),
        (json!({"version": "3", "status": "firing", "alerts": []}).to_string(), "unsupported payload version \"3\""),
        (json!({"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": {"a": "b"}, "startsAt": "noon"}]}).to_string(), "alerts[0].startsAt"),
    ] {
        let r = app.post_hook(body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "invalid Alertmanager webhook payload");
        assert!(v["detail"].as_str().unwrap().contains(detail), "{v}");
    }
    assert!(app.incidents().await.is_empty());
    // Deliveries are numbered from 1 in a new store: the first one stored is this one.
    let r = app.post_hook(fixture("postgres-down-firing.json")).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["delivery"], 1, "refused bodies are not stored: {v}");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let app = spawn_app().await;
    let big = vec![b' '; 1024 * 1024 + 1];
    let r = app.post_hook(big).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "request body too large");
    // Chunked, so no Content-Length to check up front.
    let stream =
        futures_util::stream::iter((0..17).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])));
    let r = app.post_hook(reqwest::Body::wrap_stream(stream)).await;
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn the_same_payload_ten_times_is_one_incident_with_ten_deliveries() {
    let app = spawn_app().await;
    for _ in 0..10 {
        assert_eq!(
            app.post_hook(fixture("postgres-down-firing.json"))
                .await
                .status(),
            200
        );
    }
    let inc = eventually(10, "ten deliveries applied", || async {
        let list = app.incidents().await;
        // Applied at once; matched by the engine just after (phase leaves "new").
        (list.len() == 1 && list[0]["deliveries"] == 10 && list[0]["phase"] != "new")
            .then(|| list[0].clone())
    })
    .await;
    assert_eq!(inc["fingerprint"], "1e48178e9e293490");
    assert_eq!(inc["alertname"], "PostgresDown");
    assert_eq!(inc["state"], "open");
    assert_eq!(inc["rule"], "postgres-down");
    assert_eq!(inc["starts_at"], "2026-11-25T22:07:00.591565000Z");

    // It is remediated once: one run of the runbook's first step.
    let id = inc["id"].as_i64().unwrap();
    let detail = eventually(10, "runbook finished", || async {
        let (_, v) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
        (v["phase"] == "failed").then_some(v)
    })
    .await;
    let diagnose_runs = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "diagnose")
        .count();
    assert_eq!(diagnose_runs, 1);
    let guards: Vec<&str> = detail["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["guard"].as_str().unwrap())
        .collect();
    assert_eq!(
        &guards[..10],
        [
            "match",
            "dedup",
            "flapping",
            "pause",
            "window",
            "deploy",
            "dry_run",
            "rate_limit",
            "budget",
            "busy"
        ]
    );

    app.post_hook(fixture("postgres-down-resolved.json")).await;
    let resolved = eventually(10, "resolution", || async {
        let list = app.incidents().await;
        (list[0]["state"] == "resolved").then(|| list[0].clone())
    })
    .await;
    assert_eq!(resolved["deliveries"], 11);
    assert_eq!(resolved["time_to_recover_seconds"], 4.509);
}

#[tokio::test]
async fn a_group_of_two_alerts_opens_two_incidents() {
    let app = spawn_app().await;
    app.post_hook(fixture("disk-space-low-two-alerts-firing.json"))
        .await;
    let list = eventually(10, "two incidents, matched", || async {
        let l = app.incidents().await;
        (l.len() == 2 && l.iter().all(|i| i["phase"] != "new")).then_some(l)
    })
    .await;
    let (_, open) = app.get_json("/api/v1/incidents?state=open").await;
    assert_eq!(open["incidents"].as_array().unwrap().len(), 2);
    let (_, resolved) = app.get_json("/api/v1/incidents?state=resolved").await;
    assert!(resolved["incidents"].as_array().unwrap().is_empty());
    let (code, bad) = app.get_json("/api/v1/incidents?state=burning").await;
    assert_eq!(code, 400);
    assert!(bad["detail"]
        .as_str()
        .unwrap()
        .contains("use open, resolved or all"));
    assert!(list.iter().all(|i| i["rule"] == "disk-space-low"));
}

#[tokio::test]
async fn incident_detail_404_and_unknown_routes_are_json() {
    let app = spawn_app().await;
    let (code, v) = app.get_json("/api/v1/incidents/999").await;
    assert_eq!((code, v["error"].as_str()), (404, Some("not found")));
    let (code, v) = app.get_json("/api/v1/incidents/abc").await;
    assert_eq!(code, 400, "{v}");
    let (code, v) = app.get_json("/nope").await;
    assert_eq!(
        (code, v["detail"].as_str()),
        (404, Some("no route for GET /nope"))
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(app.get_json("/-/healthy").await.0, 200);
    let (code, ready) = app.get_json("/-/ready").await;
    assert_eq!(code, 200);
    assert_eq!(ready["checks"]["store"], "ok");
    assert_eq!(
        ready["checks"]["quarantined"],
        json!({"count": 0, "latest": []})
    );
    app.post_hook(fixture("high-queue-depth-firing.json")).await;
    app.client
        .post(format!("{}/hooks/alertmanager", app.addr))
        .body("x")
        .send()
        .await
        .unwrap();
    eventually(10, "incident handled by the engine", || async {
        let list = app.incidents().await;
        (list.len() == 1 && list[0]["phase"] != "new").then_some(())
    })
    .await;
    let text = app
        .client
        .get(format!("{}/metrics", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "remediator_webhook_requests_total{code=\"200\"} 1",
        "remediator_webhook_requests_total{code=\"401\"} 1",
        "remediator_alerts_received_total{status=\"firing\"} 1",
        "remediator_incidents_opened_total 1",
        "remediator_guard_decisions_total{guard=\"dedup\",verdict=\"continue\"} 1",
        "remediator_intake_backlog ",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[tokio::test]
async fn a_broken_store_answers_503_and_records_nothing() {
    let app = spawn_app().await;
    // Someone removes the table under the service's feet (a stand-in for a broken disk).
    let conn =
        rusqlite::Connection::open(app.data_path().join(remediator::store::DB_FILE)).unwrap();
    conn.execute_batch("DROP TABLE intake").unwrap();
    let r = app.post_hook(fixture("postgres-down-firing.json")).await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "service unavailable");
    assert!(v["detail"].as_str().unwrap().contains("retry later"));
    let (code, ready) = app.get_json("/-/ready").await;
    assert_eq!(code, 503, "{ready}");
    drop(conn);
}

#[tokio::test]
async fn a_damaged_queue_entry_is_quarantined_shown_and_the_next_incident_is_handled() {
    let app = spawn_app().await;
    // A queue entry that does not read (a stand-in for a damaged page), past the store's
    // foreign key.
    let conn =
        rusqlite::Connection::open(app.data_path().join(remediator::store::DB_FILE)).unwrap();
    conn.execute_batch(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO engine_queue (incident_id, kind, trace) VALUES (999, 'opened', x'00ff');",
    )
    .unwrap();
    drop(conn);
    app.post_hook(fixture("high-queue-depth-firing.json")).await;
    eventually(10, "the incident behind it handled", || async {
        let list = app.incidents().await;
        (list.len() == 1 && list[0]["phase"] != "new").then_some(())
    })
    .await;
    let (code, ready) = app.get_json("/-/ready").await;
    assert_eq!(code, 200, "still ready: the rest works");
    assert_eq!(ready["ready"], true);
    let q = &ready["checks"]["quarantined"];
    assert_eq!(q["count"], 1, "{ready}");
    assert_eq!(q["latest"][0]["source_table"], "engine_queue");
    assert_eq!(q["latest"][0]["incident_id"], 999);
    assert!(
        q["latest"][0]["error"]
            .as_str()
            .unwrap()
            .contains("of table engine_queue is damaged (column trace:"),
        "{ready}"
    );
    let text = app
        .client
        .get(format!("{}/metrics", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("remediator_quarantined_rows_total{table=\"engine_queue\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn reload_keeps_the_last_good_rules_when_the_new_ones_are_broken() {
    let rules = shipped_rules_copy();
    let app = spawn_with(Spawn {
        rules_dir: Some(rules.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    std::fs::write(
        rules.path().join("50-broken.yaml"),
        "rules:\n  - name: x\n    priority: P9\n",
    )
    .unwrap();
    let r = app
        .client
        .post(format!("{}/-/reload", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("the previous rules stay in force"));
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .ends_with("50-broken.yaml:3:15: rule `x`: priority `P9` is not one of P1, P2, P3, P4"),
        "{v}"
    );

    // The old rules still act.
    app.post_hook(fixture("postgres-down-firing.json")).await;
    let inc = eventually(10, "incident matched", || async {
        app.incidents()
            .await
            .first()
            .filter(|i| i["phase"] != "new")
            .cloned()
    })
    .await;
    assert_eq!(inc["rule"], "postgres-down");

    std::fs::remove_file(rules.path().join("50-broken.yaml")).unwrap();
    let r = app
        .client
        .post(format!("{}/-/reload", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"status": "reloaded", "rules": 7}));
}
