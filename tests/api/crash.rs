//! kill -9 in the middle of a load: every delivery that got a 200 is there after a restart.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::helpers::*;

fn serve(data: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_remediator"))
        .current_dir(repo())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .env("REMEDIATOR_WEBHOOK_TOKEN", TOKEN)
        .env("REMEDIATOR_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start remediator")
}

fn payload(n: u64) -> String {
    json!({
        "version": "4", "status": "firing", "receiver": "remediator", "groupKey": format!("{{}}:{{n=\"{n}\"}}"),
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "LoadTest", "n": n.to_string()},
            "startsAt": Utc::now().to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": format!("{n:016x}"),
        }]
    })
    .to_string()
}

#[tokio::test]
async fn every_acknowledged_alert_survives_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve(data.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    eventually(20, "service up", || async {
        client
            .get(format!("{base}/-/healthy"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut senders = Vec::new();
    for worker in 0..8u64 {
        let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..10_000u64 {
                let n = worker * 100_000 + i;
                let r = client
                    .post(format!("{base}/hooks/alertmanager"))
                    .bearer_auth(TOKEN)
                    .body(payload(n))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        acked.lock().unwrap().insert(format!("{n:016x}"));
                    }
                    _ => return,
                }
            }
        }));
    }
    eventually(30, "some load acknowledged", || async {
        (acked.lock().unwrap().len() >= 300).then_some(())
    })
    .await;
    // SIGKILL: no shutdown hook runs.
    child.kill().unwrap();
    child.wait().unwrap();
    for s in senders {
        let _ = s.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    let mut child = serve(data.path(), port);
    let found = eventually(60, "every acknowledged alert after restart", || async {
        let v: serde_json::Value = client
            .get(format!("{base}/api/v1/incidents?limit=1000"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let have: HashSet<String> = v["incidents"]
            .as_array()?
            .iter()
            .map(|i| i["fingerprint"].as_str().unwrap_or_default().to_string())
            .collect();
        acked.is_subset(&have).then_some(have)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(found.len() >= acked.len());
    assert!(found.len() <= 1000);
}
