//! Deploys seen in Docker's event stream hold runbooks back: `docker-compose up -d
//! --force-recreate` on a real compose project, then the alert; remediator's own recreate is
//! no deploy; the stream lost and found again (through the socket proxy) reads the gap back.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::docker_faults::DockerProxy;
use crate::helpers::*;
use crate::stack::Stack;

async fn app_for(stack: &Stack, rules: Option<&Path>, extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("REMEDIATOR_WEBHOOK_TOKEN".to_string(), TOKEN.to_string()),
        (
            "REMEDIATOR_DOCKER__PROJECT".to_string(),
            stack.project.clone(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    spawn_with(Spawn {
        env,
        rules_dir: rules.map(Path::to_path_buf),
    })
    .await
}

/// `docker-compose up -d --force-recreate --no-deps <service>`, as someone deploying does.
fn force_recreate(stack: &Stack, service: &str) {
    let out = stack
        .compose()
        .args(["up", "-d", "--force-recreate", "--no-deps", service])
        .output()
        .expect("docker-compose");
    assert!(
        out.status.success(),
        "compose up --force-recreate {service}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestApp {
    /// `/-/ready`'s line for the deploy watch.
    async fn docker_events(&self) -> String {
        let (code, v) = self.get_json("/-/ready").await;
        assert_eq!(code, 200, "the deploy watch never fails readiness: {v:#}");
        v["checks"]["docker_events"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn wait_following(&self) {
        eventually(30, "the deploy watch following Docker's events", || async {
            self.docker_events()
                .await
                .starts_with("following compose project")
                .then_some(())
        })
        .await;
    }

    async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Deploy-like container events the watch recorded (`deploys_seen`, all actions).
    async fn deploy_events(&self) -> u64 {
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with("remediator_deploys_seen_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Waits until the watch has recorded at least `n` deploy-like events.
    async fn wait_deploy_events(&self, n: u64) {
        eventually(30, &format!("{n} deploy-like events seen"), || async {
            (self.deploy_events().await >= n).then_some(())
        })
        .await;
    }

    /// Fires `ServiceDown` for `service` (starting now) and returns its incident, finished,
    /// and when it started.
    async fn fire_and_finish(&self, service: &str) -> (Value, chrono::DateTime<chrono::Utc>) {
        let after = self
            .incidents()
            .await
            .first()
            .and_then(|i| i["id"].as_i64())
            .unwrap_or(0);
        let starts = chrono::Utc::now();
        self.post_hook(alert_payload(
            json!({"alertname": "ServiceDown", "service": service}),
            starts,
            "firing",
        ))
        .await;
        let id = eventually(30, &format!("the incident for {service}"), || async {
            self.incidents().await.into_iter().find(|i| {
                i["labels"]["service"] == service && i["id"].as_i64().unwrap_or(0) > after
            })?["id"]
                .as_i64()
        })
        .await;
        (self.finished_id(id, 60).await, starts)
    }
}

fn decision<'a>(detail: &'a Value, guard: &str) -> &'a Value {
    detail["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["guard"] == guard)
        .unwrap_or_else(|| panic!("no {guard} decision: {detail:#}"))
}

/// "a deploy of S is in progress (container recreated N s ago)", N read back.
fn deploy_skip_secs(detail: &Value, service: &str) -> u64 {
    let d = decision(detail, "deploy");
    assert_eq!(d["verdict"], "skip", "{detail:#}");
    let reason = d["reason"].as_str().unwrap();
    let prefix = format!("a deploy of {service} is in progress (container recreated ");
    let secs = reason
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(" s ago)"))
        .unwrap_or_else(|| panic!("{reason:?}"));
    secs.parse().unwrap_or_else(|_| panic!("{reason:?}"))
}

fn assert_told_and_untouched(detail: &Value) {
    assert_eq!(detail["phase"], "skipped", "{detail:#}");
    assert!(step_outcomes(detail).is_empty(), "no step ran: {detail:#}");
    assert!(
        !detail["told"].as_array().unwrap().is_empty(),
        "people are told of the incident: {detail:#}"
    );
    assert!(
        !detail["messages"].as_array().unwrap().is_empty(),
        "its notices are queued: {detail:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compose_force_recreate_skips_the_services_runbook_and_leaves_its_container_alone() {
    let stack = Stack::up(&["redis"]);
    let app = app_for(&stack, None, &[]).await;
    app.wait_following().await;
    let before = stack.id("redis");
    let t0 = Instant::now();
    force_recreate(&stack, "redis");
    let deployed = stack.id("redis");
    assert_ne!(deployed, before, "compose made a new container");
    let started = stack.started_at("redis");
    // compose 1.29 renames the old container, creates the new one, destroys the old one.
    app.wait_deploy_events(3).await;

    let (detail, _) = app.fire_and_finish("redis").await;
    assert_told_and_untouched(&detail);
    let secs = deploy_skip_secs(&detail, "redis");
    assert!(
        secs >= 1 && secs <= t0.elapsed().as_secs() + 1,
        "{secs} s ago, the recreate began {:?} ago",
        t0.elapsed()
    );
    assert_eq!(stack.id("redis"), deployed, "the container compose made");
    assert_eq!(stack.started_at("redis"), started, "not restarted either");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_deploy_grace_the_runbook_runs_as_usual() {
    let stack = Stack::up(&["redis"]);
    let app = app_for(&stack, None, &[("REMEDIATOR_DOCKER__DEPLOY_GRACE", "2s")]).await;
    app.wait_following().await;
    force_recreate(&stack, "redis");
    app.wait_deploy_events(3).await;
    let done = Instant::now();
    // A positive wait: past the grace, the deploy is over.
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(done.elapsed())).await;

    let before = stack.started_at("redis");
    let (detail, _) = app.fire_and_finish("redis").await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    let deploy = decision(&detail, "deploy");
    assert_eq!(deploy["verdict"], "continue");
    assert_eq!(deploy["reason"], "no deploy in progress");
    assert_ne!(
        stack.started_at("redis"),
        before,
        "the runbook restarted it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remediators_own_remove_and_compose_up_are_no_deploy() {
    let stack = Stack::up(&["redis", "rabbitmq"]);
    let rules = rules_with(
        "rules:\n  - name: rebuild-svc\n    matchers: ['alertname=\"ServiceDown\"']\n    priority: P2\n    rto: 15m\n    owner: infra\n    target: { label: service, allow: [redis] }\n    limit: { runs: 5, per: 1h }\n    steps:\n      - remove: { services: [redis], volumes: [redis-data], grace: 1s }\n      - up: { groups: [[redis]], within: 30s }\n",
    );
    let app = app_for(
        &stack,
        Some(rules.path()),
        &[(
            "REMEDIATOR_DOCKER__COMPOSE_FILE",
            &crate::stack::compose_file(),
        )],
    )
    .await;
    app.wait_following().await;
    let before = stack.id("redis");
    let (first, starts) = app.fire_and_finish("redis").await;
    assert_eq!(first["phase"], "recovered", "{first:#}");
    let ours = stack.id("redis");
    assert_ne!(
        ours, before,
        "remediator removed redis and compose created it again"
    );
    app.post_hook(alert_payload(
        json!({"alertname": "ServiceDown", "service": "redis"}),
        starts,
        "resolved",
    ))
    .await;

    force_recreate(&stack, "rabbitmq");
    app.wait_deploy_events(3).await;
    assert_eq!(
        app.deploy_events().await,
        3,
        "only rabbitmq's deploy; our destroy of redis and compose's create of it are none: {}",
        app.metrics_text().await
    );
    let (second, _) = app.fire_and_finish("redis").await;
    assert_eq!(
        decision(&second, "deploy")["verdict"],
        "continue",
        "{second:#}"
    );
    assert_eq!(second["phase"], "recovered", "{second:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remediators_own_recreate_is_no_deploy() {
    let stack = Stack::up(&["redis", "rabbitmq"]);
    let rules = rules_with(
        "rules:\n  - name: recreate-svc\n    matchers: ['alertname=\"ServiceDown\"']\n    priority: P2\n    rto: 15m\n    owner: infra\n    target: { label: service, allow: [redis] }\n    limit: { runs: 5, per: 1h }\n    steps:\n      - recreate: { grace: 1s }\n      - wait_healthy: { within: 30s }\n",
    );
    let app = app_for(&stack, Some(rules.path()), &[]).await;
    app.wait_following().await;
    let before = stack.id("redis");
    let (first, starts) = app.fire_and_finish("redis").await;
    assert_eq!(first["phase"], "recovered", "{first:#}");
    let ours = stack.id("redis");
    assert_ne!(ours, before, "remediator recreated redis");
    app.post_hook(alert_payload(
        json!({"alertname": "ServiceDown", "service": "redis"}),
        starts,
        "resolved",
    ))
    .await;

    // A deploy of another service, after ours: once the watch has seen it, it has seen
    // every event of our recreate before it (the stream is in order).
    force_recreate(&stack, "rabbitmq");
    app.wait_deploy_events(3).await;
    assert_eq!(
        app.deploy_events().await,
        3,
        "only rabbitmq's rename, create and destroy are deploy-like events; our recreate of \
         redis is none: {}",
        app.metrics_text().await
    );

    let (second, _) = app.fire_and_finish("redis").await;
    assert_eq!(second["phase"], "recovered", "{second:#}");
    let deploy = decision(&second, "deploy");
    assert_eq!(deploy["verdict"], "continue", "{second:#}");
    assert_ne!(stack.id("redis"), ours, "recreated again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_while_dockers_events_are_lost_is_read_back_once_they_return() {
    let stack = Stack::up(&["redis"]);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let proxy = DockerProxy::start(&sock);
    let host = format!("unix://{}", sock.display());
    let app = app_for(&stack, None, &[("REMEDIATOR_DOCKER__HOST", &host)]).await;
    app.wait_following().await;

    proxy.cut();
    let lost = eventually(30, "the watch reconnecting", || async {
        let line = app.docker_events().await;
        line.starts_with("reconnecting since ").then_some(line)
    })
    .await;
    assert!(
        lost.contains(&format!("the event stream from {host} ")),
        "{lost}"
    );
    // Deployed on the real socket while remediator cannot see Docker.
    force_recreate(&stack, "redis");
    let deployed = stack.id("redis");
    let _back = DockerProxy::start(&sock);
    app.wait_following().await;
    app.wait_deploy_events(3).await;
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("remediator_docker_events_lost_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("remediator_docker_events_following 1"),
        "{metrics}"
    );

    let (detail, _) = app.fire_and_finish("redis").await;
    assert_told_and_untouched(&detail);
    // "recreated": the rename and the destroy came from the events read back with `since`
    // (the new container alone, listed after the gap, would read "created").
    deploy_skip_secs(&detail, "redis");
    assert_eq!(stack.id("redis"), deployed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_just_before_remediator_starts_is_read_back_at_startup() {
    let stack = Stack::up(&["redis"]);
    force_recreate(&stack, "redis");
    let deployed = stack.id("redis");
    let app = app_for(
        &stack,
        None,
        &[("REMEDIATOR_DOCKER__DEPLOY_REPLAY", "true")],
    )
    .await;
    app.wait_following().await;
    app.wait_deploy_events(1).await;

    let (detail, _) = app.fire_and_finish("redis").await;
    assert_told_and_untouched(&detail);
    let d = decision(&detail, "deploy");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .starts_with("a deploy of redis is in progress (container "),
        "{detail:#}"
    );
    assert_eq!(stack.id("redis"), deployed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_down_at_startup_delays_neither_startup_nor_readiness() {
    let dir = tempfile::tempdir().unwrap();
    // The socket a stopped dockerd leaves behind: there, but nobody answers.
    let sock = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let host = format!("unix://{}", sock.display());
    let app = spawn_with(Spawn {
        env: vec![
            ("REMEDIATOR_WEBHOOK_TOKEN".into(), TOKEN.into()),
            ("REMEDIATOR_DOCKER__PROJECT".into(), "nosuchproject".into()),
            ("REMEDIATOR_DOCKER__HOST".into(), host.clone()),
        ],
        rules_dir: None,
    })
    .await;
    let line = eventually(30, "the watch saying it cannot connect", || async {
        let line = app.docker_events().await;
        line.contains("does not answer").then_some(line)
    })
    .await;
    assert!(
        line.starts_with("connecting since ") && line.contains(&host),
        "{line}"
    );
    let r = app.post_hook(fire(json!({"alertname": "Unrelated"}))).await;
    assert_eq!(r.status(), 200, "webhooks are taken meanwhile");
}
