//! A real Alertmanager (Debian's) with deploy/alertmanager.yml pointed at the spawned service.

use std::process::Command;

use chrono::{Duration, Utc};
use serde_json::json;

use crate::helpers::*;

/// Field order matters: the process is killed before its directory is removed.
pub struct Am {
    process: ChildGuard,
    pub url: String,
    /// The gossip address (`127.0.0.1:port`) when it runs as a cluster peer.
    pub cluster: Option<String>,
    _dir: tempfile::TempDir,
}

/// How an Alertmanager of a test runs, beyond deploy/alertmanager.yml.
#[derive(Default)]
pub struct AmOptions<'a> {
    /// Gossip on loopback as a peer of an HA cluster, joining these peers.
    pub cluster: bool,
    pub join: Vec<&'a Am>,
    /// A `--web.config.file` (basic auth on the API).
    pub web_config: Option<String>,
    /// A whole configuration instead of deploy/alertmanager.yml (`hook_port` unused); its
    /// `/etc/remediator/webhook-token` is replaced by a file holding the webhook token.
    pub config: Option<String>,
    /// More flags, e.g. `--cluster.peer-timeout=1s`.
    pub args: Vec<String>,
}

pub fn start_alertmanager(hook_port: u16) -> Am {
    start_alertmanager_with(hook_port, AmOptions::default())
}

/// deploy/alertmanager.yml pointed at `hook_port`, with short group timers.
pub fn start_alertmanager_with(hook_port: u16, options: AmOptions<'_>) -> Am {
    let bin = tool(
        "REMEDIATOR_TEST_ALERTMANAGER_BIN",
        "prometheus-alertmanager",
    );
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let config = match &options.config {
        Some(config) => config.replace(
            "/etc/remediator/webhook-token",
            &token_file.display().to_string(),
        ),
        None => deploy_config(hook_port, &token_file),
    };
    let config_path = dir.path().join("alertmanager.yml");
    std::fs::write(&config_path, config).unwrap();
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(&options.args);
    let cluster = if options.cluster {
        let gossip = format!("127.0.0.1:{}", free_port());
        cmd.arg(format!("--cluster.listen-address={gossip}"))
            .arg(format!("--cluster.advertise-address={gossip}"))
            .arg("--cluster.gossip-interval=50ms")
            .arg("--cluster.pushpull-interval=1s");
        for peer in &options.join {
            let addr = peer
                .cluster
                .as_ref()
                .expect("join a peer started with cluster: true");
            cmd.arg(format!("--cluster.peer={addr}"));
        }
        Some(gossip)
    } else {
        cmd.arg("--cluster.listen-address=");
        None
    };
    if let Some(web) = &options.web_config {
        let path = dir.path().join("web.yml");
        std::fs::write(&path, web).unwrap();
        cmd.arg(format!("--web.config.file={}", path.display()));
    }
    let process = ChildGuard::spawn(&mut cmd, "prometheus-alertmanager");
    Am {
        process,
        url: format!("http://127.0.0.1:{port}"),
        cluster,
        _dir: dir,
    }
}

/// deploy/alertmanager.yml pointed at `hook_port` and `token_file`, with short group timers.
fn deploy_config(hook_port: u16, token_file: &std::path::Path) -> String {
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
    config
}

impl Am {
    /// Waits until the API answers (`/-/ready`; with a web config, any answer but a refused
    /// connection).
    pub async fn ready(&self) {
        let client = reqwest::Client::new();
        eventually(20, "alertmanager ready", || async {
            let r = client
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .ok()?;
            (r.status().is_success() || r.status() == 401).then_some(())
        })
        .await;
    }

    /// Waits until this peer sees `peers` members in its gossip cluster (itself included).
    pub async fn clustered(&self, peers: usize) {
        eventually(20, "the Alertmanagers gossiping", || async {
            let s = self.get("/api/v2/status").await;
            (s["cluster"]["peers"].as_array()?.len() == peers).then_some(())
        })
        .await;
    }

    /// Pushes one alert, as Prometheus does (`POST /api/v2/alerts`); `ends` in the past
    /// resolves it.
    pub async fn push(
        &self,
        labels: &serde_json::Value,
        starts: chrono::DateTime<Utc>,
        ends: Option<chrono::DateTime<Utc>>,
    ) {
        let mut alert = json!({"labels": labels, "annotations": {"summary": "test"}, "startsAt": starts.to_rfc3339()});
        if let Some(e) = ends {
            alert["endsAt"] = json!(e.to_rfc3339());
        }
        let r = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&json!([alert]))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "POST /api/v2/alerts: {}",
            r.status()
        );
    }

    /// `GET path` on the API, as JSON.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// The alert with exactly these labels, as this peer lists it now.
    pub async fn alert(&self, labels: &serde_json::Value) -> Option<serde_json::Value> {
        self.get("/api/v2/alerts")
            .await
            .as_array()?
            .iter()
            .find(|a| a["labels"] == *labels)
            .cloned()
    }

    /// Kills it (SIGKILL): its port refuses connections from now on.
    pub fn kill(&mut self) {
        self.process.kill();
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
    assert_eq!(inc["group_key"], "{}/{alertname=~\"PostgresDown|HighQueueDepth|BackupFailed|DiskSpaceLow|RedisCacheLoss\"}:{alertname=\"PostgresDown\", service=\"postgres\"}");

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
