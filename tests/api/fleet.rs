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
    eventually(20, "the survivor pages PagerDuty", || async {
        pd.events()
            .iter()
            .any(|e| e.event_action == "trigger")
            .then_some(())
    })
    .await;
    survivor.process.assert_running();
}
