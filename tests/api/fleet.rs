//! Fleet mode: replicas sharing a Redis act once per firing; without Redis the policy holds.

use crate::emulators::{PagerDutyEmulator, PD_ROUTING_KEY};
use crate::helpers::*;
use serde_json::{json, Value};

fn rules() -> tempfile::TempDir {
    rules_with(
        r#"
rules:
  - name: fleet-wait
    matchers: ['alertname="FleetTest"']
    priority: P2
    rto: 30m
    owner: dba
    target: { service: postgres }
    steps:
      - wait: { duration: 1s }
"#,
    )
}

fn redis_url() -> String {
    std::env::var("REMEDIATOR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

async fn replica(rules: &tempfile::TempDir, id: &str, url: &str, prefix: &str) -> TestApp {
    spawn_with(Spawn {
        env: vec![
            ("REMEDIATOR_WEBHOOK_TOKEN".into(), TOKEN.into()),
            ("REMEDIATOR_REDIS__URL".into(), url.into()),
            ("REMEDIATOR_REDIS__KEY_PREFIX".into(), prefix.into()),
            ("REMEDIATOR_REPLICA__ID".into(), id.into()),
        ],
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await
}

fn phases(incidents: &[Value]) -> Vec<String> {
    incidents
        .iter()
        .map(|i| i["phase"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_firing_sent_ten_times_to_two_replicas_runs_once_fleet_wide() {
    let rules = rules();
    let prefix = format!("test-fleet-{}:", std::process::id());
    let a = replica(&rules, "replica-a", &redis_url(), &prefix).await;
    let b = replica(&rules, "replica-b", &redis_url(), &prefix).await;
    let body = fire(json!({"alertname": "FleetTest", "instance": "db-1"}));
    let mut sends = Vec::new();
    for _ in 0..10 {
        for app in [&a, &b] {
            sends.push(app.post_hook(body.clone()));
        }
    }
    for r in futures_util::future::join_all(sends).await {
        assert_eq!(r.status(), 200);
    }
    let (pa, pb) = eventually(
        30,
        "one replica ran the runbook, the other watched",
        || async {
            let (pa, pb) = (phases(&a.incidents().await), phases(&b.incidents().await));
            let all: Vec<&String> = pa.iter().chain(pb.iter()).collect();
            let ran = all.iter().filter(|p| *p == &"recovered").count();
            let watched = all
                .iter()
                .filter(|p| *p == &"claimed" || *p == &"acted_elsewhere")
                .count();
            (all.len() == 2 && ran == 1 && watched == 1).then_some((pa, pb))
        },
    )
    .await;
    // The watcher sees the winner's done marker.
    eventually(
        10,
        "the loser recorded that the winner finished",
        || async {
            let all = [a.incidents().await, b.incidents().await].concat();
            phases(&all)
                .contains(&"acted_elsewhere".to_string())
                .then_some(())
        },
    )
    .await;
    let (_, ready) = a.get_json("/-/ready").await;
    assert!(
        ready["checks"]["coordination"]
            .as_str()
            .unwrap()
            .starts_with("coordinating as replica replica-a"),
        "{ready:#} {pa:?} {pb:?}"
    );
    // Twenty deliveries, one firing: one claim per replica, and the winner's one take of
    // the limits and lock; the repeats touched Redis not at all.
    let count = |m: &str, op: &str| -> u64 {
        let key = format!("remediator_redis_commands_total{{op=\"{op}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let (ma, mb) = (metrics_of(&a).await, metrics_of(&b).await);
    assert_eq!(count(&ma, "claim") + count(&mb, "claim"), 2, "{ma}\n{mb}");
    assert_eq!(
        count(&ma, "limits_and_target_lock") + count(&mb, "limits_and_target_lock"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_a_firing_gets_its_200_and_is_paged_not_acted_on() {
    let rules = rules();
    let url = format!("redis://:hunter2@127.0.0.1:{}/", free_port());
    let a = replica(&rules, "replica-a", &url, "test-down:").await;
    let r = a
        .post_hook(fire(json!({"alertname": "FleetTest", "instance": "db-2"})))
        .await;
    assert_eq!(r.status(), 200);
    let inc = eventually(20, "the policy applied", || async {
        a.incidents()
            .await
            .into_iter()
            .find(|i| i["phase"] == "escalated")
    })
    .await;
    let (_, detail) = a
        .get_json(&format!("/api/v1/incidents/{}", inc["id"]))
        .await;
    let text = detail.to_string();
    assert!(
        text.contains("coordination.on_redis_down is page"),
        "{detail:#}"
    );
    assert!(!text.contains("hunter2"), "the password is redacted");
    let (code, ready) = a.get_json("/-/ready").await;
    assert_eq!(code, 200, "Redis down is no readiness failure");
    let shown = ready["checks"]["coordination"].as_str().unwrap();
    assert!(shown.starts_with("degraded since "), "{ready:#}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let (_, metrics) = (
        0,
        a.client
            .get(format!("{}/metrics", a.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(
        metrics.contains("remediator_coordination_up 0"),
        "{metrics}"
    );
}

/// A `remediator serve` replica of the fleet, its own data dir, paging to `pd`.
async fn served_replica(
    data: &std::path::Path,
    rules: &std::path::Path,
    id: &str,
    prefix: &str,
    pd: &str,
) -> Served {
    let url = redis_url();
    let env = [
        ("REMEDIATOR_REDIS__URL", url.as_str()),
        ("REMEDIATOR_REDIS__KEY_PREFIX", prefix),
        ("REMEDIATOR_REPLICA__ID", id),
        ("REMEDIATOR_COORDINATION__CLAIM_TTL", "2s"),
        ("REMEDIATOR_PAGERDUTY__URL", pd),
        ("REMEDIATOR_PAGERDUTY__ROUTING_KEY", PD_ROUTING_KEY),
    ];
    Served::start(data, free_port(), Some(rules), &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_acting_replica_mid_runbook_is_paged_as_interrupted_by_the_survivor() {
    let rules = rules_with(
        r#"
rules:
  - name: fleet-long
    matchers: ['alertname="FleetLong"']
    priority: P2
    rto: 30m
    owner: dba
    target: { service: postgres }
    steps:
      - wait: { duration: 10m }
"#,
    );
    let pd = PagerDutyEmulator::start().await;
    let prefix = format!("test-fleet-kill-{}:", std::process::id());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = served_replica(da.path(), rules.path(), "replica-a", &prefix, &pd.url()).await;
    let mut b = served_replica(db.path(), rules.path(), "replica-b", &prefix, &pd.url()).await;
    let client = reqwest::Client::new();
    let body = fire(json!({"alertname": "FleetLong", "instance": "db-9"}));
    for base in [&a.base, &b.base] {
        let r = client
            .post(format!("{base}/hooks/alertmanager"))
            .bearer_auth(TOKEN)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let phase_of = |base: String| {
        let client = client.clone();
        async move {
            let list = try_all_incidents(&client, &base, None, "").await?;
            list.first()?["phase"].as_str().map(str::to_owned)
        }
    };
    let a_acts = eventually(20, "one replica acts, the other watches", || async {
        let (pa, pb) = (
            phase_of(a.base.clone()).await?,
            phase_of(b.base.clone()).await?,
        );
        match (pa.as_str(), pb.as_str()) {
            ("remediating", "claimed") => Some(true),
            ("claimed", "remediating") => Some(false),
            _ => None,
        }
    })
    .await;
    let (winner, survivor) = if a_acts {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    winner.process.kill();
    let base = survivor.base.clone();
    let inc = eventually(
        20,
        "the survivor marks the incident interrupted",
        || async {
            let list = try_all_incidents(&client, &base, None, "").await?;
            list.into_iter().find(|i| i["phase"] == "interrupted")
        },
    )
    .await;
    let d: Value = client
        .get(format!("{base}/api/v1/incidents/{}", inc["id"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = d.to_string();
    assert!(text.contains("stopped answering mid-runbook"), "{d:#}");
    assert!(
        step_outcomes(&d).is_empty(),
        "the survivor ran no step: {d:#}"
    );
    let triggers = eventually(20, "the survivor pages PagerDuty", || async {
        let t: Vec<crate::emulators::PdEvent> = pd
            .events()
            .into_iter()
            .filter(|e| e.event_action == "trigger")
            .collect();
        (!t.is_empty()).then_some(t)
    })
    .await;
    assert_eq!(triggers.len(), 1, "one page: {triggers:?}");
    // Under the firing's identity: the alert the killed replica would have paged, too.
    let key = remediator::notify::pagerduty::dedup_key(
        d["fingerprint"].as_str().unwrap(),
        d["starts_at"].as_str().unwrap().parse().unwrap(),
    );
    assert_eq!(triggers[0].dedup_key, key);
    let summary = triggers[0].body["payload"]["summary"]
        .as_str()
        .unwrap_or_default();
    assert!(
        summary.contains("stopped answering mid-runbook"),
        "{summary}"
    );
    survivor.process.assert_running();
}

/// The decisions of incident `id` on `app`, each as `guard verdict: reason`.
async fn decisions_of(app: &TestApp, id: &Value) -> Vec<String> {
    let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
    d["decisions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    format!(
                        "{} {}: {}",
                        d["guard"].as_str().unwrap_or(""),
                        d["verdict"].as_str().unwrap_or(""),
                        d["reason"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every incident of both replicas with its decisions, once there are `n` and none is `new`
/// or `remediating` any more.
async fn settled(a: &TestApp, b: &TestApp, n: usize, secs: u64) -> Vec<(Value, Vec<String>)> {
    let (ia, ib) = eventually(secs, "every incident decided and ended", || async {
        let (ia, ib) = (a.incidents().await, b.incidents().await);
        let all = [ia.clone(), ib.clone()].concat();
        (all.len() == n
            && phases(&all)
                .iter()
                .all(|p| p != "new" && p != "remediating"))
        .then_some((ia, ib))
    })
    .await;
    let mut out = Vec::new();
    for (app, list) in [(a, ia), (b, ib)] {
        for inc in list {
            let d = decisions_of(app, &inc["id"]).await;
            out.push((inc, d));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_firings_for_the_same_container_on_two_replicas_run_one_runbook_the_other_is_busy() {
    let rules = rules_with(
        r#"
rules:
  - name: fleet-busy
    matchers: ['alertname="FleetBusy"']
    priority: P2
    rto: 30m
    owner: dba
    target: { service: postgres }
    steps:
      - wait: { duration: 4s }
"#,
    );
    let prefix = format!("test-fleet-busy-{}:", std::process::id());
    let a = replica(&rules, "replica-a", &redis_url(), &prefix).await;
    let b = replica(&rules, "replica-b", &redis_url(), &prefix).await;
    // Two different firings (two instances) for one container, one to each replica.
    let (ra, rb) = futures_util::join!(
        a.post_hook(fire(json!({"alertname": "FleetBusy", "instance": "db-1"}))),
        b.post_hook(fire(json!({"alertname": "FleetBusy", "instance": "db-2"}))),
    );
    assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
    let all = settled(&a, &b, 2, 30).await;
    let ran: Vec<_> = all
        .iter()
        .filter(|(i, _)| i["phase"] == "recovered")
        .collect();
    let busy: Vec<_> = all
        .iter()
        .filter(|(_, d)| d.iter().any(|d| d.starts_with("busy skip: ")))
        .collect();
    assert_eq!((ran.len(), busy.len()), (1, 1), "{all:#?}");
    let reason = busy[0]
        .1
        .iter()
        .find(|d| d.starts_with("busy skip"))
        .unwrap();
    assert!(
        reason.contains(" of replica replica-")
            && reason.ends_with(
                "is still running on service:postgres; one runbook per container at a time"
            ),
        "{reason}"
    );
    assert_eq!(busy[0].0["phase"], "skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_limited_to_one_run_an_hour_runs_once_across_two_replicas() {
    let rules = rules_with(
        r#"
rules:
  - name: fleet-once
    matchers: ['alertname="FleetOnce"']
    priority: P2
    rto: 30m
    owner: dba
    target: { service: postgres }
    limit: { runs: 1, per: 1h }
    steps:
      - wait: { duration: 1s }
"#,
    );
    let prefix = format!("test-fleet-limit-{}:", std::process::id());
    let a = replica(&rules, "replica-a", &redis_url(), &prefix).await;
    let b = replica(&rules, "replica-b", &redis_url(), &prefix).await;
    let (ra, rb) = futures_util::join!(
        a.post_hook(fire(json!({"alertname": "FleetOnce", "instance": "db-1"}))),
        b.post_hook(fire(json!({"alertname": "FleetOnce", "instance": "db-2"}))),
    );
    assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
    let all = settled(&a, &b, 2, 30).await;
    let ran = all
        .iter()
        .filter(|(i, _)| i["phase"] == "recovered")
        .count();
    let limited: Vec<_> = all
        .iter()
        .filter(|(_, d)| {
            d.iter()
                .any(|d| d.starts_with("rate_limit skip: rate limited"))
        })
        .collect();
    assert_eq!((ran, limited.len()), (1, 1), "{all:#?}");
    assert_eq!(limited[0].0["phase"], "escalated", "a limit pages");
    let metrics = a
        .client
        .get(format!("{}/metrics", a.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("remediator_redis_commands_total{op=\"limits_and_target_lock\"}"),
        "{metrics}"
    );
}

/// A redis-server of the test's own on `port` (no persistence), owned by its guard.
fn own_redis(port: u16) -> ChildGuard {
    let bin = tool("REMEDIATOR_TEST_REDIS_SERVER", "redis-server");
    ChildGuard::spawn(
        std::process::Command::new(bin).args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]),
        "redis-server",
    )
}

async fn redis_answers(port: u16) {
    eventually(10, "redis-server listens", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

async fn metrics_of(app: &TestApp) -> String {
    app.client
        .get(format!("{}/metrics", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_storm_and_started_again_coordination_resumes_by_itself() {
    let rules = rules_with(
        r#"
rules:
  - name: fleet-storm
    matchers: ['alertname="FleetStorm"']
    priority: P2
    rto: 30m
    owner: dba
    target: { label: instance, allow: [i-0, i-1, i-2, i-3, i-4, i-5, i-6, i-7, i-8, i-9, i-10, i-11, i-12] }
    limit: { runs: 100, per: 1h }
    steps:
      - wait: { duration: 1s }
"#,
    );
    let port = free_port();
    let mut redis = own_redis(port);
    redis_answers(port).await;
    let url = format!("redis://127.0.0.1:{port}/");
    let a = replica(&rules, "replica-a", &url, "storm:").await;
    let b = replica(&rules, "replica-b", &url, "storm:").await;
    let storm = |from: usize, to: usize| {
        let (a, b) = (&a, &b);
        async move {
            let mut sends = Vec::new();
            for i in from..to {
                let body = fire(json!({"alertname": "FleetStorm", "instance": format!("i-{i}")}));
                sends.push(a.post_hook(body.clone()));
                sends.push(b.post_hook(body));
            }
            for r in futures_util::future::join_all(sends).await {
                assert_eq!(r.status(), 200, "every webhook gets its 200");
            }
        }
    };
    // Coordinated: one run per firing.
    storm(0, 3).await;
    let before = settled(&a, &b, 6, 30).await;
    let ran = before
        .iter()
        .filter(|(i, _)| i["phase"] == "recovered")
        .count();
    assert_eq!(ran, 3, "{before:#?}");
    // Redis killed mid-storm: the firings still get their 200, the policy is applied and
    // recorded as the decision's reason.
    futures_util::join!(storm(3, 8), async { redis.kill() });
    storm(8, 10).await;
    let during = settled(&a, &b, 20, 60).await;
    let paged = during
        .iter()
        .filter(|(_, d)| {
            d.iter()
                .any(|d| d.contains("coordination.on_redis_down is page: people are paged"))
        })
        .count();
    assert!(
        paged >= 4,
        "the firings after the kill follow the policy: {during:#?}"
    );
    // Those sent once Redis was gone: paged on both replicas, run on neither.
    for inst in ["i-8", "i-9"] {
        let both: Vec<_> = during
            .iter()
            .filter(|(i, _)| i["labels"]["instance"] == inst)
            .collect();
        assert_eq!(both.len(), 2, "{inst}: {both:#?}");
        for (i, d) in both {
            assert!(
                !["recovered", "remediating"].contains(&i["phase"].as_str().unwrap_or("")),
                "{inst}: nothing ran: {i:#}"
            );
            assert!(
                d.iter()
                    .any(|d| d.contains("coordination.on_redis_down is page")),
                "{inst}: {d:#?}"
            );
        }
    }
    // And no firing of the storm ran twice, whatever the moment Redis went.
    for n in 0..10 {
        let inst = format!("i-{n}");
        let runs = during
            .iter()
            .filter(|(i, _)| i["labels"]["instance"] == inst.as_str() && i["phase"] == "recovered")
            .count();
        assert!(runs <= 1, "{inst} ran {runs} times: {during:#?}");
    }
    for app in [&a, &b] {
        assert!(
            metrics_of(app)
                .await
                .contains("remediator_coordination_up 0"),
            "down is shown"
        );
    }
    // Started again on the same port: coordination resumes without a restart of remediator.
    let _redis = own_redis(port);
    redis_answers(port).await;
    storm(10, 13).await;
    let after = settled(&a, &b, 26, 60).await;
    let new: Vec<_> = after
        .iter()
        .filter(|(i, _)| {
            ["i-10", "i-11", "i-12"].contains(&i["labels"]["instance"].as_str().unwrap_or(""))
        })
        .collect();
    let ran = new
        .iter()
        .filter(|(i, _)| i["phase"] == "recovered")
        .count();
    let watched = new
        .iter()
        .filter(|(i, _)| i["phase"] == "claimed" || i["phase"] == "acted_elsewhere")
        .count();
    assert_eq!((ran, watched), (3, 3), "claims again: {new:#?}");
    for app in [&a, &b] {
        eventually(10, "coordination_up back to 1", || async {
            metrics_of(app)
                .await
                .contains("remediator_coordination_up 1")
                .then_some(())
        })
        .await;
        let (code, ready) = app.get_json("/-/ready").await;
        assert_eq!(code, 200);
        assert!(
            ready["checks"]["coordination"]
                .as_str()
                .unwrap_or("")
                .starts_with("coordinating as replica"),
            "{ready:#}"
        );
    }
}

/// The incidents of a served replica with their decisions (`guard verdict: reason`).
async fn served_decisions(
    client: &reqwest::Client,
    base: &str,
) -> Option<Vec<(Value, Vec<String>)>> {
    let mut out = Vec::new();
    for inc in try_all_incidents(client, base, None, "").await? {
        let d: Value = client
            .get(format!("{base}/api/v1/incidents/{}", inc["id"]))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let decisions = d["decisions"]
            .as_array()?
            .iter()
            .map(|d| {
                format!(
                    "{} {}: {}",
                    d["guard"].as_str().unwrap_or(""),
                    d["verdict"].as_str().unwrap_or(""),
                    d["reason"].as_str().unwrap_or("")
                )
            })
            .collect();
        out.push((inc, decisions));
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_winner_restarted_after_a_crash_mid_runbook_and_the_survivor_page_once_between_them() {
    let rules = rules_with(
        r#"
rules:
  - name: fleet-long
    matchers: ['alertname="FleetLong"']
    priority: P2
    rto: 30m
    owner: dba
    target: { service: postgres }
    steps:
      - wait: { duration: 10m }
"#,
    );
    let pd = PagerDutyEmulator::start().await;
    let prefix = format!("test-fleet-restart-{}:", std::process::id());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = served_replica(da.path(), rules.path(), "replica-a", &prefix, &pd.url()).await;
    let mut b = served_replica(db.path(), rules.path(), "replica-b", &prefix, &pd.url()).await;
    let client = reqwest::Client::new();
    let body = fire(json!({"alertname": "FleetLong", "instance": "db-7"}));
    for base in [&a.base, &b.base] {
        let r = client
            .post(format!("{base}/hooks/alertmanager"))
            .bearer_auth(TOKEN)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let phase_of = |base: String| {
        let client = client.clone();
        async move {
            let list = try_all_incidents(&client, &base, None, "").await?;
            list.first()?["phase"].as_str().map(str::to_owned)
        }
    };
    let a_acts = eventually(20, "one replica acts, the other watches", || async {
        let (pa, pb) = (
            phase_of(a.base.clone()).await?,
            phase_of(b.base.clone()).await?,
        );
        match (pa.as_str(), pb.as_str()) {
            ("remediating", "claimed") => Some(true),
            ("claimed", "remediating") => Some(false),
            _ => None,
        }
    })
    .await;
    // The winner crashes mid-runbook and starts again on its own data directory.
    let (winner, survivor, winner_data, winner_id) = if a_acts {
        (&mut a, &b, da.path(), "replica-a")
    } else {
        (&mut b, &a, db.path(), "replica-b")
    };
    winner.process.kill();
    let survivor = survivor.base.clone();
    let restarted = served_replica(winner_data, rules.path(), winner_id, &prefix, &pd.url()).await;
    // Both sides settle: the restarted winner's recovery marks it interrupted; the survivor
    // sees its done marker (or took the expired claim for a crash itself).
    let all = eventually(
        30,
        "both replicas settled the interrupted incident",
        || async {
            let w = served_decisions(&client, &restarted.base).await?;
            let s = served_decisions(&client, &survivor).await?;
            let (wp, sp) = (w.first()?.0["phase"].clone(), s.first()?.0["phase"].clone());
            (wp == "interrupted" && (sp == "interrupted" || sp == "acted_elsewhere"))
                .then_some([w, s].concat())
        },
    )
    .await;
    let pages: Vec<&String> = all
        .iter()
        .flat_map(|(_, d)| d.iter())
        .filter(|d| d.starts_with("page continue: "))
        .collect();
    assert_eq!(pages.len(), 1, "one page between them: {all:#?}");
    eventually(20, "the page reaches PagerDuty", || async {
        pd.events()
            .iter()
            .any(|e| e.event_action == "trigger")
            .then_some(())
    })
    .await;
}
