//! kill -9 in a loop while a burst of matching alerts is decided and remediated: afterwards
//! every incident has each decision once and each notice once, and no runbook ran twice.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use crate::helpers::*;

/// Each alert's own target (its `n` label), so that no runbook waits for another's.
fn rule(alerts: u64) -> String {
    let allow: Vec<String> = (0..alerts).map(|n| format!("t{n}")).collect();
    RULE.replace("{allow}", &allow.join(", "))
}

const RULE: &str = r#"
rules:
  - name: burst
    matchers: ['alertname="Burst"']
    priority: P3
    rto: 15m
    owner: infra
    target: { label: n, allow: [{allow}] }
    limit: { runs: 100000, per: 1h }
    steps:
      - notify: { message: "step one" }
      - wait: { duration: 20ms }
      - wait: { duration: 30ms }
"#;

/// The service, killed with SIGKILL when dropped (no shutdown hook runs).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data: &Path, rules: &Path, port: u16) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_remediator"))
            .current_dir(repo())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data)
            .arg("--rules")
            .arg(rules)
            .env("REMEDIATOR_WEBHOOK_TOKEN", TOKEN)
            .env("REMEDIATOR_ENGINE__BUDGET_RUNS", "100000")
            .env("REMEDIATOR_LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start remediator"),
    )
}

fn payload(n: u64) -> String {
    json!({
        "version": "4", "status": "firing", "receiver": "remediator",
        "groupKey": format!("{{}}:{{n=\"{n}\"}}"),
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "Burst", "n": format!("t{n}")},
            "startsAt": Utc::now().to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": format!("{n:016x}"),
        }]
    })
    .to_string()
}

async fn up(client: &reqwest::Client, base: &str) {
    eventually(20, "service up", || async {
        client
            .get(format!("{base}/-/healthy"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
}

/// Every incident, through the pages of the list.
async fn all_incidents(client: &reqwest::Client, base: &str) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    let mut before = String::new();
    loop {
        let v: Value = client
            .get(format!("{base}/api/v1/incidents?limit=100{before}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        out.extend(v["incidents"].as_array()?.iter().cloned());
        match v["next"].as_i64() {
            Some(next) => before = format!("&before={next}"),
            None => return Some(out),
        }
    }
}

/// What occurs more than once in `items`.
fn twice<T: Ord + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = BTreeMap::new();
    for i in items {
        *seen.entry(i).or_insert(0) += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(i, _)| i)
        .collect()
}

const CYCLES: u64 = 6;
const PER_CYCLE: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_loop_while_alerts_are_decided_leaves_each_decision_and_notice_once() {
    let data = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("rules/escalation.yaml"),
        rules.path().join("escalation.yaml"),
    )
    .unwrap();
    std::fs::write(
        rules.path().join("10-burst.yaml"),
        rule((CYCLES + 1) * PER_CYCLE),
    )
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let acked = Arc::new(Mutex::new(HashSet::new()));
    for cycle in 0..CYCLES {
        let service = serve(data.path(), rules.path(), port);
        up(&client, &base).await;
        let mut senders = Vec::new();
        for n in cycle * PER_CYCLE..(cycle + 1) * PER_CYCLE {
            let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
            senders.push(tokio::spawn(async move {
                let r = client
                    .post(format!("{base}/hooks/alertmanager"))
                    .bearer_auth(TOKEN)
                    .body(payload(n))
                    .send()
                    .await;
                if matches!(r, Ok(r) if r.status() == 200) {
                    acked.lock().unwrap().insert(format!("{n:016x}"));
                }
            }));
        }
        // Kill once about half of this cycle's alerts are in: the engine is then deciding
        // and running the others' runbooks.
        let want = (cycle * PER_CYCLE + PER_CYCLE / 2) as usize;
        eventually(20, "half the cycle acknowledged", || async {
            (acked.lock().unwrap().len() >= want).then_some(())
        })
        .await;
        // Then a little later each cycle: some runbooks end, some are cut, some decisions
        // are mid-commit.
        tokio::time::sleep(Duration::from_millis(15 * cycle)).await;
        drop(service);
        for s in senders {
            let _ = s.await;
        }
    }
    let acked = acked.lock().unwrap().clone();

    let _service = serve(data.path(), rules.path(), port);
    up(&client, &base).await;
    // And a last burst that nothing interrupts.
    let last = CYCLES * PER_CYCLE;
    let mut acked = acked;
    for n in last..last + PER_CYCLE / 2 {
        let r = client
            .post(format!("{base}/hooks/alertmanager"))
            .bearer_auth(TOKEN)
            .body(payload(n))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        acked.insert(format!("{n:016x}"));
    }
    let settled = eventually(60, "every acknowledged alert decided", || async {
        let list = all_incidents(&client, &base).await?;
        let have: HashSet<String> = list
            .iter()
            .filter_map(|i| i["fingerprint"].as_str().map(str::to_owned))
            .collect();
        let busy = list
            .iter()
            .any(|i| i["phase"] == "new" || i["phase"] == "remediating");
        (acked.is_subset(&have) && !busy).then_some(list)
    })
    .await;
    assert!(settled.len() >= acked.len());
    let (mut interrupted, mut recovered) = (0, 0);
    for inc in &settled {
        let id = inc["id"].as_i64().unwrap();
        let d: Value = client
            .get(format!("{base}/api/v1/incidents/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = |key: &str, f: &dyn Fn(&Value) -> String| -> Vec<String> {
            d[key].as_array().unwrap().iter().map(f).collect()
        };
        let decisions = rows("decisions", &|x| x["guard"].to_string());
        let notices = rows("messages", &|x| {
            format!("{} {} {}", x["sink"], x["kind"], x["text"])
        });
        let steps = rows("steps", &|x| format!("{} {}", x["phase"], x["seq"]));
        assert!(
            twice(decisions.clone()).is_empty(),
            "incident {id}: {decisions:?}"
        );
        assert!(
            twice(notices.clone()).is_empty(),
            "incident {id}: {notices:?}"
        );
        assert!(
            twice(steps.clone()).is_empty(),
            "incident {id} ran a step twice: {steps:?}"
        );
        assert_eq!(
            decisions.first().map(String::as_str),
            Some("\"match\""),
            "{id}"
        );
        match d["phase"].as_str().unwrap() {
            "recovered" => {
                recovered += 1;
                assert_eq!(steps.len(), 3, "incident {id}: {steps:?}");
            }
            "interrupted" => interrupted += 1,
            other => panic!("incident {id} ended {other}: {d:#}"),
        }
    }
    assert!(
        recovered as u64 >= PER_CYCLE / 2,
        "the last burst recovered"
    );
    // Which incidents a kill cut is up to the race; say what this run exercised.
    eprintln!(
        "{} incidents: {recovered} recovered, {interrupted} interrupted by a kill",
        settled.len()
    );
}
