//! kill -9 in a loop while a burst of matching alerts is decided and remediated, and while a
//! slow runbook is in its wait step: afterwards every incident has each decision once and
//! each notice once, no runbook ran twice, and every slow runbook was interrupted and paged.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use crate::helpers::*;

/// Each alert's own target (its `n` label), so that no runbook waits for another's: `t0`…
/// for the burst, `s0`… for the slow alert of each cycle.
fn rule(alerts: u64, slow: u64) -> String {
    let allow = |prefix: &str, n: u64| -> String {
        (0..n)
            .map(|i| format!("{prefix}{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    RULE.replace("{allow}", &allow("t", alerts))
        .replace("{slow}", &allow("s", slow))
}

/// The burst's runbooks are short. The slow one's middle step waits far longer than any
/// cycle lasts, so the kill always lands in it, however loaded the machine (nothing waits
/// for it to end: it never runs again after the kill). Its steps end with distinct texts,
/// so a run to the end would be told apart from a rerun.
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
  - name: burst-slow
    matchers: ['alertname="BurstSlow"']
    priority: P3
    rto: 15m
    owner: infra
    target: { label: n, allow: [{slow}] }
    limit: { runs: 100000, per: 1h }
    steps:
      - wait: { duration: 1ms }
      - wait: { duration: 10m }
      - wait: { duration: 2ms }
"#;

/// The service on `port`, up; dropping it (or its `process`) is SIGKILL, no shutdown hook.
async fn serve(data: &Path, rules: &Path, port: u16) -> Served {
    Served::start(
        data,
        port,
        Some(rules),
        &[("REMEDIATOR_ENGINE__BUDGET_RUNS", "100000")],
    )
    .await
}

/// A burst alert's fingerprint.
fn burst_fp(n: u64) -> String {
    format!("{n:016x}")
}

/// The fingerprint of `cycle`'s slow alert, far from the burst's.
fn slow_fp(cycle: u64) -> String {
    format!("{:016x}", 0x5_0000_0000_u64 + cycle)
}

fn payload(alertname: &str, target: &str, fingerprint: &str) -> String {
    json!({
        "version": "4", "status": "firing", "receiver": "remediator",
        "groupKey": format!("{{}}:{{n=\"{target}\"}}"),
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": alertname, "n": target},
            "startsAt": Utc::now().to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": fingerprint,
        }]
    })
    .to_string()
}

fn burst(n: u64) -> String {
    payload("Burst", &format!("t{n}"), &burst_fp(n))
}

async fn detail(client: &reqwest::Client, base: &str, id: i64) -> Option<Value> {
    client
        .get(format!("{base}/api/v1/incidents/{id}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Waits until the incident of `fingerprint` is in its runbook's long wait step (so its
/// phase is `remediating`, and its first step ended).
async fn in_wait_step(client: &reqwest::Client, base: &str, fingerprint: &str) -> i64 {
    let what = format!("the slow incident {fingerprint} in its wait step");
    eventually(20, &what, || async {
        let list = try_all_incidents(client, base, None, "").await?;
        let id = list.iter().find(|i| i["fingerprint"] == fingerprint)?["id"].as_i64()?;
        let d = detail(client, base, id).await?;
        let phase = d["phase"].as_str()?;
        assert!(
            ["new", "remediating"].contains(&phase),
            "the slow incident {id} went {phase} before the kill: {d:#}"
        );
        let waiting = step_outcomes(&d)
            .iter()
            .map(|(_, kind, outcome)| (kind.as_str(), outcome.as_str()))
            .eq([("wait", "ok"), ("wait", "running")]);
        (phase == "remediating" && waiting).then_some(id)
    })
    .await
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
    let rules = rule_dir(&[("10-burst.yaml", &rule((CYCLES + 1) * PER_CYCLE, CYCLES))]);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut slow = BTreeSet::new();
    for cycle in 0..CYCLES {
        let service = serve(data.path(), rules.path(), port).await;
        // First a slow runbook, in its long wait step when the kill comes.
        let fp = slow_fp(cycle);
        let r = client
            .post(format!("{base}/hooks/alertmanager"))
            .bearer_auth(TOKEN)
            .body(payload("BurstSlow", &format!("s{cycle}"), &fp))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        acked.lock().unwrap().insert(fp.clone());
        slow.insert(in_wait_step(&client, &base, &fp).await);
        let before = acked.lock().unwrap().len();
        let mut senders = Vec::new();
        for n in cycle * PER_CYCLE..(cycle + 1) * PER_CYCLE {
            let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
            senders.push(tokio::spawn(async move {
                let r = client
                    .post(format!("{base}/hooks/alertmanager"))
                    .bearer_auth(TOKEN)
                    .body(burst(n))
                    .send()
                    .await;
                if matches!(r, Ok(r) if r.status() == 200) {
                    acked.lock().unwrap().insert(burst_fp(n));
                }
            }));
        }
        // Kill once about half of this cycle's burst is in: the engine is then deciding and
        // running the others' runbooks.
        let want = before + PER_CYCLE as usize / 2;
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
    let mut acked = acked.lock().unwrap().clone();

    let service = serve(data.path(), rules.path(), port).await;
    // And a last burst that nothing interrupts.
    let last = CYCLES * PER_CYCLE;
    for n in last..last + PER_CYCLE / 2 {
        let r = client
            .post(format!("{}/hooks/alertmanager", service.base))
            .bearer_auth(TOKEN)
            .body(burst(n))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        acked.insert(burst_fp(n));
    }
    let settled = eventually(
        60,
        "every acknowledged alert decided, none new or remediating",
        || async {
            let list = try_all_incidents(&client, &base, None, "").await?;
            let have: HashSet<String> = list
                .iter()
                .filter_map(|i| i["fingerprint"].as_str().map(str::to_owned))
                .collect();
            let busy = list
                .iter()
                .any(|i| i["phase"] == "new" || i["phase"] == "remediating");
            (acked.is_subset(&have) && !busy).then_some(list)
        },
    )
    .await;
    // One incident per alert: each fingerprint once (every alert starts once), and only
    // alerts that were sent (one the kill cut before its 200 may be there or not).
    let fingerprints: Vec<String> = settled
        .iter()
        .map(|i| i["fingerprint"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        twice(fingerprints.clone()).is_empty(),
        "one incident per alert: {:?}",
        twice(fingerprints)
    );
    let posted: HashSet<String> = (0..last + PER_CYCLE / 2)
        .map(burst_fp)
        .chain((0..CYCLES).map(slow_fp))
        .collect();
    for fp in &fingerprints {
        assert!(posted.contains(fp), "an incident nobody sent: {fp}");
    }
    let (mut interrupted, mut recovered, mut slow_seen) = (0, 0, 0);
    for inc in &settled {
        let id = inc["id"].as_i64().unwrap();
        let d = detail(&client, &base, id).await.unwrap();
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
        // A rerun adds no step row (the engine reuses a started one), but it sends the
        // notices of the steps it runs again (the burst's notify step, the end of the slow
        // runbook's first step): this is the check that catches a rerun.
        assert!(
            twice(notices.clone()).is_empty(),
            "incident {id} ran its runbook twice: {notices:?}"
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
        let phase = d["phase"].as_str().unwrap();
        if slow.contains(&id) {
            slow_seen += 1;
            // Killed in its wait step: found `remediating` at the restart, so interrupted,
            // paged once, and never run on.
            assert_eq!(phase, "interrupted", "slow incident {id}: {d:#}");
            let count = |guard: &str| {
                decisions
                    .iter()
                    .filter(|g| **g == format!("\"{guard}\""))
                    .count()
            };
            assert_eq!(count("recovery"), 1, "slow incident {id}: {decisions:?}");
            assert_eq!(count("page"), 1, "slow incident {id}: {decisions:?}");
            let outcomes: Vec<(String, String)> = step_outcomes(&d)
                .into_iter()
                .map(|(_, kind, outcome)| (kind, outcome))
                .collect();
            let want = [("wait", "ok"), ("wait", "interrupted")]
                .map(|(k, o)| (k.to_owned(), o.to_owned()));
            assert_eq!(outcomes, want, "slow incident {id}: {d:#}");
            let sent = |what: &str| notices.iter().filter(|n| n.contains(what)).count();
            assert_eq!(
                sent("\"step\" \"wait "),
                1,
                "slow incident {id}: {notices:?}"
            );
            assert_eq!(
                (
                    sent("\"slack\" \"page\""),
                    sent("\"pagerduty\" \"trigger\"")
                ),
                (1, 1),
                "slow incident {id} paged once on each sink: {notices:?}"
            );
        }
        match phase {
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
    assert_eq!(slow_seen, slow.len(), "every slow incident was checked");
    assert!(
        interrupted as u64 >= CYCLES,
        "each kill interrupted at least the slow runbook: {interrupted} interrupted"
    );
    eprintln!(
        "{} incidents: {recovered} recovered, {interrupted} interrupted by a kill",
        settled.len()
    );
}
