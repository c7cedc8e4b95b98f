//! kill -9 in the middle of a load: every delivery that got a 200 is there after a restart,
//! applied exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::helpers::*;

const WORKERS: u64 = 8;
/// Enough acknowledged alerts that the incidents fill more than one page of the list API.
const ACKED_BEFORE_THE_KILL: usize = 2500;

/// What the senders learnt: how many 200s each alert got, and the alerts whose last request
/// had no answer (it may or may not have been committed when the process died).
#[derive(Default)]
struct Ledger {
    acked: HashMap<String, i64>,
    unanswered: HashSet<String>,
}

impl Ledger {
    fn deliveries(&self) -> i64 {
        self.acked.values().sum()
    }
}

/// Alert `n` (its own fingerprint), always with the same `startsAt`, so that sending it again
/// is a repeat of the same incident.
fn payload(n: u64, starts: chrono::DateTime<Utc>) -> String {
    let mut a = alert(
        json!({"alertname": "LoadTest", "n": n.to_string()}),
        starts,
        "firing",
    );
    a["fingerprint"] = json!(fingerprint(n));
    webhook(&[a])
}

fn fingerprint(n: u64) -> String {
    format!("{n:016x}")
}

#[tokio::test]
async fn every_acknowledged_alert_survives_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut served = Served::start(data.path(), port, None, &[]).await;
    let base = served.base.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // Each worker sends new alerts, every third one twice (a repeat must be counted, once).
    // A worker stops at its first request without a 200: the service is gone.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut senders = Vec::new();
    for worker in 0..WORKERS {
        let (client, base, ledger) = (client.clone(), base.clone(), ledger.clone());
        senders.push(tokio::spawn(async move {
            let starts = Utc::now();
            for i in 0..100_000u64 {
                let n = worker * 1_000_000 + i;
                for _ in 0..if i % 3 == 0 { 2 } else { 1 } {
                    let r = client
                        .post(format!("{base}/hooks/alertmanager"))
                        .bearer_auth(TOKEN)
                        .body(payload(n, starts))
                        .send()
                        .await;
                    let mut ledger = ledger.lock().unwrap();
                    match r {
                        Ok(r) if r.status() == 200 => {
                            *ledger.acked.entry(fingerprint(n)).or_default() += 1;
                        }
                        _ => {
                            ledger.unanswered.insert(fingerprint(n));
                            return;
                        }
                    }
                }
            }
        }));
    }
    eventually(120, "load acknowledged", || async {
        (ledger.lock().unwrap().acked.len() >= ACKED_BEFORE_THE_KILL).then_some(())
    })
    .await;
    // SIGKILL: no shutdown hook runs.
    served.process.kill();
    for s in senders {
        s.await.unwrap();
    }
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    assert!(ledger.unanswered.len() <= WORKERS as usize);

    let served = Served::start(data.path(), port, None, &[]).await;
    let incidents = all_incidents(&client, &served.base, None, "").await;
    assert!(
        incidents.len() > 1000,
        "more than one page: {}",
        incidents.len()
    );
    let mut found: HashMap<String, i64> = HashMap::new();
    for inc in &incidents {
        let fp = inc["fingerprint"].as_str().unwrap().to_string();
        let deliveries = inc["deliveries"].as_i64().unwrap();
        assert!(
            found.insert(fp.clone(), deliveries).is_none(),
            "one incident per alert: {fp} is listed twice"
        );
    }
    for (fp, acked) in &ledger.acked {
        let Some(&stored) = found.get(fp) else {
            panic!("alert {fp} got {acked} 200s and has no incident after the restart");
        };
        // The one request per worker that got no answer may have been committed too.
        let unanswered = i64::from(ledger.unanswered.contains(fp));
        assert!(
            stored == *acked || stored == acked + unanswered,
            "alert {fp}: {acked} acknowledged deliveries, {stored} counted"
        );
    }
    for (fp, stored) in &found {
        if !ledger.acked.contains_key(fp) {
            assert!(
                ledger.unanswered.contains(fp) && *stored == 1,
                "alert {fp} was never acknowledged, yet counted {stored} times"
            );
        }
    }
    let counted: i64 = found.values().sum();
    let acked = ledger.deliveries();
    assert!(
        (acked..=acked + ledger.unanswered.len() as i64).contains(&counted),
        "{acked} acknowledged deliveries, {counted} counted"
    );
}
