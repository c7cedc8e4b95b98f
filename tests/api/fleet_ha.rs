//! The fleet as an operator runs it: two real Alertmanagers in one gossip cluster (Prometheus
//! sends every alert to both), each delivering every notification to both remediator replicas
//! through deploy/fleet/alertmanager.yml's receiver, the replicas sharing one Redis prefix,
//! one Slack and one PagerDuty. N firings: N runbook runs fleet-wide, N threads, N pages.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::alertmanager::{start_alertmanager_with, Am, AmOptions};
use crate::emulators::*;
use crate::helpers::*;

/// Firings, one per `instance`.
const N: usize = 20;
/// The route's group_wait and group_interval in the test (deploy/fleet has 10s and 1m).
const GROUP_INTERVAL: Duration = Duration::from_secs(2);
/// How long the second peer of the pair waits for the first one's notification before it
/// sends its own (`--cluster.peer-timeout`, 15s by default; shortened so that a duplicate
/// flush comes well within the quiet check below).
const PEER_TIMEOUT: Duration = Duration::from_secs(1);
const NOTE: &str = "fleet HA test: acting once";

fn redis_url() -> String {
    std::env::var("REMEDIATOR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn instance(i: usize) -> String {
    format!("db-{i}")
}

/// A PostgresDown-like rule whose runbook tells the thread and pages: harmless, visible in
/// Slack and PagerDuty. One target per instance, so that the busy lock and the dedup guard
/// let each firing run.
fn rules() -> tempfile::TempDir {
    // One more than N: the sentinel firing of the quiet check.
    let allow: Vec<String> = (0..=N).map(instance).collect();
    rules_with(&format!(
        r#"
rules:
  - name: ha-postgres
    matchers: ['alertname="PostgresDown"']
    priority: P2
    rto: 30m
    owner: dba
    target:
      label: instance
      allow: [{}]
    limit: {{ runs: 1, per: 1h }}
    steps:
      - notify: {{ message: "{NOTE}" }}
      - page: {{}}
"#,
        allow.join(", ")
    ))
}

async fn replica(
    rules: &tempfile::TempDir,
    id: &str,
    prefix: &str,
    slack: &SlackEmulator,
    pd: &PagerDutyEmulator,
) -> TestApp {
    let env = [
        ("REMEDIATOR_WEBHOOK_TOKEN", TOKEN.to_string()),
        ("REMEDIATOR_REDIS__URL", redis_url()),
        ("REMEDIATOR_REDIS__KEY_PREFIX", prefix.to_string()),
        ("REMEDIATOR_REPLICA__ID", id.to_string()),
        ("REMEDIATOR_SLACK__API_URL", slack.url()),
        ("REMEDIATOR_SLACK__BOT_TOKEN", SLACK_TOKEN.to_string()),
        ("REMEDIATOR_SLACK__CHANNEL", SLACK_CHANNEL.to_string()),
        ("REMEDIATOR_SLACK__TIMEOUT", "2s".to_string()),
        ("REMEDIATOR_PAGERDUTY__URL", pd.url()),
        (
            "REMEDIATOR_PAGERDUTY__ROUTING_KEY",
            PD_ROUTING_KEY.to_string(),
        ),
        // N runbooks in a minute: above the default global budget.
        ("REMEDIATOR_ENGINE__BUDGET_RUNS", "1000".to_string()),
    ];
    spawn_with(Spawn {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await
}

/// deploy/fleet/alertmanager.yml with its two webhooks pointed at the replicas and short
/// group timers.
fn fleet_config(a: &TestApp, b: &TestApp) -> String {
    let mut config = std::fs::read_to_string(repo().join("deploy/fleet/alertmanager.yml")).unwrap();
    let secs = GROUP_INTERVAL.as_secs();
    for (from, to) in [
        ("http://remediator-a:9095".to_string(), a.addr.clone()),
        ("http://remediator-b:9095".to_string(), b.addr.clone()),
        (
            "group_wait: 10s".to_string(),
            format!("group_wait: {secs}s"),
        ),
        (
            "group_interval: 1m".to_string(),
            format!("group_interval: {secs}s"),
        ),
    ] {
        assert!(
            config.contains(&from),
            "deploy/fleet/alertmanager.yml no longer contains {from:?}; update this test"
        );
        config = config.replace(&from, &to);
    }
    config
}

fn peer(config: &str, join: Vec<&Am>) -> Am {
    start_alertmanager_with(
        0,
        AmOptions {
            cluster: true,
            join,
            config: Some(config.to_string()),
            args: vec![format!(
                "--cluster.peer-timeout={}s",
                PEER_TIMEOUT.as_secs()
            )],
            ..Default::default()
        },
    )
}

/// One replica's incident for a firing: (replica, phase, steps as `kind:outcome`, Slack ts).
type Held = (String, String, Vec<String>, Option<String>);

/// What the fleet did, as both replicas' APIs, Slack and PagerDuty show it.
#[derive(Debug, PartialEq)]
struct Seen {
    /// Per instance: each replica's incident.
    incidents: BTreeMap<String, Vec<Held>>,
    roots: Vec<String>,
    /// The runbook's notify message, per thread (root ts).
    notes: BTreeMap<String, usize>,
    triggers: Vec<String>,
}

async fn seen(
    replicas: &[(&str, &TestApp)],
    slack: &SlackEmulator,
    pd: &PagerDutyEmulator,
) -> Seen {
    let mut incidents: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for (name, app) in replicas {
        for i in app.incidents().await {
            let (_, d) = app
                .get_json(&format!("/api/v1/incidents/{}", i["id"]))
                .await;
            let steps = step_outcomes(&d)
                .into_iter()
                .map(|(_, kind, outcome)| format!("{kind}:{outcome}"))
                .collect();
            incidents
                .entry(d["labels"]["instance"].as_str().unwrap_or("").to_string())
                .or_default()
                .push((
                    name.to_string(),
                    d["phase"].as_str().unwrap_or("").to_string(),
                    steps,
                    d["slack_ts"].as_str().map(str::to_owned),
                ));
        }
    }
    let messages = slack.messages();
    let roots: Vec<String> = messages
        .iter()
        .filter(|m| m.thread_ts.is_none())
        .map(|m| m.ts.clone())
        .collect();
    let mut notes = BTreeMap::new();
    for m in messages.iter().filter(|m| m.text.contains(NOTE)) {
        *notes
            .entry(m.thread_ts.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    let triggers = pd
        .events()
        .into_iter()
        .filter(|e| e.event_action == "trigger")
        .map(|e| e.dedup_key)
        .collect();
    Seen {
        incidents,
        roots,
        notes,
        triggers,
    }
}

fn watched(phase: &str) -> bool {
    phase == "claimed" || phase == "acted_elsewhere"
}

fn done(phase: &str) -> bool {
    !["", "new", "remediating"].contains(&phase) && !watched(phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gossiping_alertmanagers_and_two_replicas_act_once_per_firing_fleet_wide() {
    let (slack, pd) = (
        SlackEmulator::start().await,
        PagerDutyEmulator::start().await,
    );
    let rules = rules();
    let prefix = format!(
        "test-fleet-ha-{}-{}:",
        std::process::id(),
        Utc::now().timestamp_micros()
    );
    let a = replica(&rules, "replica-a", &prefix, &slack, &pd).await;
    let b = replica(&rules, "replica-b", &prefix, &slack, &pd).await;
    let config = fleet_config(&a, &b);
    let am_a = peer(&config, vec![]);
    let am_b = peer(&config, vec![&am_a]);
    am_a.ready().await;
    am_b.ready().await;
    am_a.clustered(2).await;

    // Prometheus HA: every alert to both Alertmanagers.
    let starts = Utc::now() - chrono::Duration::seconds(5);
    for i in 0..N {
        let labels = json!({"alertname": "PostgresDown", "service": "postgres",
                            "severity": "critical", "instance": instance(i)});
        am_a.push(&labels, starts, None).await;
        am_b.push(&labels, starts, None).await;
    }

    let replicas = [("replica-a", &a), ("replica-b", &b)];
    // Slack is told about one message a second per channel (its documented chat.postMessage
    // pace, which the client keeps): the winners' N threads of four or five messages each
    // take a minute or two to be posted, more on a loaded machine.
    let s = eventually(240, "N runs, N threads, N pages fleet-wide", || async {
        let s = seen(&replicas, &slack, &pd).await;
        let all: Vec<_> = s.incidents.values().flatten().collect();
        let acted = all.iter().filter(|(_, p, _, _)| done(p)).count();
        let loser = all.iter().filter(|(_, p, _, _)| watched(p)).count();
        (all.len() == 2 * N
            && acted == N
            && loser == N
            && s.roots.len() == N
            && s.triggers.len() == N
            && s.notes.len() == N)
            .then_some(s)
    })
    .await;
    assert_eq!(s.incidents.len(), N, "{s:#?}");
    let mut threads = BTreeSet::new();
    for (inst, both) in &s.incidents {
        let names: BTreeSet<&str> = both.iter().map(|(r, ..)| r.as_str()).collect();
        assert_eq!(
            names.len(),
            2,
            "{inst}: one incident on each replica: {both:?}"
        );
        let winner: Vec<_> = both.iter().filter(|(_, p, _, _)| done(p)).collect();
        let loser: Vec<_> = both.iter().filter(|(_, p, _, _)| watched(p)).collect();
        assert_eq!((winner.len(), loser.len()), (1, 1), "{inst}: {both:?}");
        let (_, _, steps, ts) = winner[0];
        assert_eq!(steps, &["notify:ok", "page:ok"], "{inst}: {both:?}");
        let (_, _, lost_steps, lost_ts) = loser[0];
        assert!(
            lost_steps.is_empty(),
            "{inst}: the loser ran nothing: {both:?}"
        );
        assert_eq!(lost_ts, &None, "{inst}: the loser posted nothing: {both:?}");
        let ts = ts
            .clone()
            .unwrap_or_else(|| panic!("{inst}: no thread: {both:?}"));
        assert!(
            s.roots.contains(&ts),
            "{inst}: its thread is a root: {s:#?}"
        );
        assert_eq!(
            s.notes.get(&ts),
            Some(&1),
            "{inst}: the runbook told its thread once"
        );
        threads.insert(ts);
    }
    assert_eq!(threads.len(), N, "one thread per firing: {s:#?}");
    let keys: BTreeSet<String> = s.triggers.iter().cloned().collect();
    assert_eq!(keys.len(), N, "one page per firing: {:?}", s.triggers);
    // Each page's key is its firing's identity, the same on both replicas: whichever pages
    // (the winner, or a survivor paging an interrupted run) names one PagerDuty alert.
    for (name, app) in &replicas {
        let identities: BTreeSet<String> = app
            .incidents()
            .await
            .iter()
            .map(|i| {
                remediator::notify::pagerduty::dedup_key(
                    i["fingerprint"].as_str().unwrap(),
                    i["starts_at"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            identities, keys,
            "{name}: the keys are the firings' identities"
        );
    }

    // Quiet afterwards, waited for by an event rather than a sleep: one more firing (the
    // sentinel) joins the group, so the group's next flush, a group interval later, carries it
    // and every one of the N again. Once the sentinel has had its one run, thread and page,
    // the N's repeat deliveries have arrived too and brought nothing new: no run, thread or
    // page, on either replica. (A duplicate from the second peer would come at most
    // --cluster.peer-timeout after its flush; the assertions after the wait below take longer.)
    let sentinel = instance(N);
    let labels = json!({"alertname": "PostgresDown", "service": "postgres",
                        "severity": "critical", "instance": sentinel});
    am_a.push(&labels, Utc::now(), None).await;
    am_b.push(&labels, Utc::now(), None).await;
    // The N's later messages (replies, root updates) go out at the same pace: once both
    // replicas' outboxes are empty, the sentinel's few messages wait behind nothing.
    for (name, app) in &replicas {
        eventually(300, &format!("{name}'s outbox delivered"), || async {
            app.metrics()
                .await?
                .lines()
                .any(|l| l == "remediator_outbox_depth 0")
                .then_some(())
        })
        .await;
    }
    let after = eventually(120, "the sentinel's run, thread and page", || async {
        let after = seen(&replicas, &slack, &pd).await;
        let both = after.incidents.get(&sentinel)?;
        (both.len() == 2
            && both.iter().filter(|(_, p, _, _)| done(p)).count() == 1
            && after.roots.len() == N + 1
            && after.triggers.len() == N + 1
            && after.notes.len() == N + 1)
            .then_some(after)
    })
    .await;
    let runs = |s: &Seen| -> Vec<(String, Vec<String>)> {
        s.incidents
            .iter()
            .filter(|(i, _)| **i != sentinel)
            .flat_map(|(i, v)| {
                v.iter()
                    .map(move |(r, _, st, _)| (format!("{i}@{r}"), st.clone()))
            })
            .collect()
    };
    assert_eq!(runs(&after), runs(&s), "no runbook ran again");
    assert_eq!(after.roots[..N], s.roots[..], "no thread was opened again");
    assert_eq!(
        after.triggers[..N],
        s.triggers[..],
        "nobody was paged again"
    );
    assert!(
        s.notes.iter().all(|(ts, n)| after.notes.get(ts) == Some(n)),
        "no runbook told its thread again: {:?}",
        after.notes
    );
    // Both replicas saw the firings (every notification went to both).
    for (name, app) in replicas {
        let list = app.incidents().await;
        assert_eq!(list.len(), N + 1, "{name}: {list:#?}");
        assert!(list.iter().all(|i| i["deliveries"].as_i64() >= Some(1)));
    }
}
