//! A real Alertmanager (Debian's) with deploy/alertmanager.yml pointed at the spawned service.

use std::process::Command;

use chrono::{Duration, Utc};
use serde_json::json;

use crate::helpers::*;

/// Field order matters: the process is killed before its directory is removed.
struct Am {
    _process: ChildGuard,
    url: String,
    _dir: tempfile::TempDir,
}

fn start_alertmanager(hook_port: u16) -> Am {
    let bin = tool(
        "REMEDIATOR_TEST_ALERTMANAGER_BIN",
        "prometheus-alertmanager",
    );
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut config = std::fs::read_to_string(repo().join("deploy/alertmanager.yml")).unwrap();
    for (from, to) in [
        (
            "http://127.0.0.1:9095/hooks/alertmanager".to_string(),
            format!("http://127.0.0.1:{hook_port}/hooks/alertmanager"),
        ),
        (
            "/etc/remediator/webhook-token".to_string(),
            token_file.display().to_string(),
        ),
        ("group_wait: 10s".to_string(), "group_wait: 1s".to_string()),
        (
            "group_interval: 1m".to_string(),
            "group_interval: 1s".to_string(),
        ),
    ] {
        assert!(
            config.contains(&from),
            "deploy/alertmanager.yml no longer contains {from:?}; update this test"
        );
        config = config.replace(&from, &to);
    }
    let config_path = dir.path().join("alertmanager.yml");
    std::fs::write(&config_path, config).unwrap();
    let port = free_port();
    let process = ChildGuard::spawn(
        Command::new(bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address="),
        "prometheus-alertmanager",
    );
    Am {
        _process: process,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

#[tokio::test]
async fn alerts_pushed_to_a_real_alertmanager_open_and_close_incidents() {
    let app = spawn_app().await;
    let port: u16 = app.addr.rsplit(':').next().unwrap().parse().unwrap();
    let am = start_alertmanager(port);
    let client = reqwest::Client::new();
    eventually(20, "alertmanager ready", || async {
        let r = client
            .get(format!("{}/-/ready", am.url))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    let labels = json!({"alertname": "PostgresDown", "service": "postgres", "severity": "critical", "instance": "postgres:9187"});
    let starts = Utc::now() - Duration::seconds(5);
    let push = |ends: Option<chrono::DateTime<Utc>>| {
        let mut alert = json!({"labels": labels, "annotations": {"summary": "PostgreSQL is down"}, "startsAt": starts.to_rfc3339()});
        if let Some(e) = ends {
            alert["endsAt"] = json!(e.to_rfc3339());
        }
        client
            .post(format!("{}/api/v2/alerts", am.url))
            .json(&json!([alert]))
            .send()
    };
    assert!(push(None).await.unwrap().status().is_success());

    let inc = eventually(30, "incident opened by Alertmanager's delivery", || async {
        app.incidents()
            .await
            .into_iter()
            .find(|i| i["alertname"] == "PostgresDown" && i["phase"] != "new")
    })
    .await;
    assert_eq!(inc["state"], "open");
    assert_eq!(inc["rule"], "postgres-down");
    assert_eq!(inc["group_key"], "{}/{alertname=~\"PostgresDown|HighQueueDepth|BackupFailed|DiskSpaceLow\"}:{alertname=\"PostgresDown\", service=\"postgres\"}");

    assert!(push(Some(Utc::now())).await.unwrap().status().is_success());
    let closed = eventually(
        30,
        "incident resolved by Alertmanager's delivery",
        || async {
            app.incidents()
                .await
                .into_iter()
                .find(|i| i["id"] == inc["id"] && i["state"] == "resolved")
        },
    )
    .await;
    assert!(closed["time_to_recover_seconds"].as_f64().unwrap() >= 5.0);
    assert_eq!(
        app.incidents().await.len(),
        1,
        "the resolution closed the same incident"
    );
}
