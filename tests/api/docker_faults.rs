//! The Docker daemon going away and coming back, seen through a socket proxy that the test
//! can cut: the same as dockerd stopping, without stopping the daemon other tests use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::json;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::helpers::*;
use crate::stack::Stack;

/// Forwards a Unix socket to /var/run/docker.sock until cut.
pub struct DockerProxy {
    path: PathBuf,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl DockerProxy {
    pub fn start(path: &Path) -> DockerProxy {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let inner = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut daemon) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut daemon).await;
                    }
                });
                inner.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        DockerProxy {
            path: path.to_path_buf(),
            tasks,
        }
    }

    /// The daemon "stops": the socket disappears and open connections drop.
    pub fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_going_away_fails_the_step_clearly_and_the_next_alert_works_once_it_is_back() {
    let stack = Stack::up(&["redis", "backend"]);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let proxy = DockerProxy::start(&sock);
    let rules = rules_with(
        "rules:\n  - name: svc\n    matchers: ['alertname=\"ServiceDown\"']\n    priority: P2\n    rto: 15m\n    owner: infra\n    target: { label: service, allow: [redis, backend] }\n    steps:\n      - logs: { tail: 10 }\n      - wait: { duration: 2s }\n      - restart: { grace: 1s }\n      - wait_healthy: { within: 30s }\n    on_failure:\n      - page: {}\n",
    );
    let app = spawn_with(Spawn {
        env: vec![
            ("REMEDIATOR_WEBHOOK_TOKEN".into(), TOKEN.into()),
            ("REMEDIATOR_DOCKER__PROJECT".into(), stack.project.clone()),
            (
                "REMEDIATOR_DOCKER__HOST".into(),
                format!("unix://{}", sock.display()),
            ),
        ],
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await;

    app.post_hook(fire(
        json!({"alertname": "ServiceDown", "service": "redis"}),
    ))
    .await;
    // Cut Docker once the runbook has read the logs and is in its wait before the restart.
    eventually(30, "the logs step done", || async {
        let id = app.incidents().await.first()?["id"].as_i64()?;
        let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
        (d["steps"][0]["outcome"] == "ok").then_some(())
    })
    .await;
    proxy.cut();
    let r = app.post_hook(fire(json!({"alertname": "Unrelated"}))).await;
    assert_eq!(
        r.status(),
        200,
        "webhooks are still taken while Docker is away"
    );
    let detail = app.finished("ServiceDown", 60).await;
    assert_eq!(detail["phase"], "failed", "{detail:#}");
    assert_eq!(detail["steps"][2]["kind"], "restart");
    let restart = detail["steps"][2]["detail"].as_str().unwrap();
    assert!(
        restart.contains("is unreachable") && restart.contains("is dockerd running?"),
        "{restart}"
    );
    assert!(
        step_outcomes(&detail)
            .iter()
            .any(|(p, k, _)| p == "on_failure" && k == "page"),
        "{detail:#}"
    );
    let (code, _) = app.get_json("/-/healthy").await;
    assert_eq!(code, 200);

    let _back = DockerProxy::start(&sock);
    // The next alert (another service: the redis incident is still open and was handed to
    // a human, so a repeat of it is deduplicated).
    let before = stack.started_at("backend");
    app.post_hook(alert_payload(
        json!({"alertname": "ServiceDown", "service": "backend"}),
        Utc::now(),
        "firing",
    ))
    .await;
    let id = eventually(30, "the backend incident", || async {
        app.incidents()
            .await
            .into_iter()
            .find(|i| i["labels"]["service"] == "backend")?["id"]
            .as_i64()
    })
    .await;
    let detail = app.finished_id(id, 60).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    assert_ne!(stack.started_at("backend"), before);
}
