//! The DR plan's scenarios 3 (complete infrastructure loss: the stack brought up in order)
//! and 4 (Redis cache loss: redis removed with its data and started empty), through the
//! engine, with the shipped rules, against the busybox compose project.
//!
//! The stand-ins answer no Redis or host-published HTTP: the shipped `check_redis` asks the
//! test environment's Redis, and `full-bring-up`'s `check_http` of localhost becomes the same
//! `/health` fetched inside backend and frontend (their host ports are ephemeral, picked anew
//! by each start).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::stack::{compose_file, Stack};

const ALL: &[&str] = &[
    "postgres",
    "redis",
    "rabbitmq",
    "minio",
    "backend",
    "celery-worker",
    "backup",
    "frontend",
];

/// The service on the project, with `docker.compose_file` set, and the rules of `dir`.
async fn app_for(stack: &Stack, dir: &tempfile::TempDir, extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("REMEDIATOR_WEBHOOK_TOKEN".to_string(), TOKEN.to_string()),
        (
            "REMEDIATOR_DOCKER__PROJECT".to_string(),
            stack.project.clone(),
        ),
        (
            "REMEDIATOR_DOCKER__COMPOSE_FILE".to_string(),
            compose_file(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    spawn_with(Spawn {
        env,
        rules_dir: Some(dir.path().to_path_buf()),
    })
    .await
}

/// The shipped rules, with `file` edited by `edit`.
fn shipped_with(file: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = shipped_rules_copy();
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "{file} was edited");
    std::fs::write(&path, edited).unwrap();
    dir
}

fn kinds(detail: &Value) -> Vec<String> {
    step_outcomes(detail)
        .into_iter()
        .map(|(p, k, o)| format!("{p}/{k}:{o}"))
        .collect()
}

fn step_detail<'a>(detail: &'a Value, kind: &str, nth: usize) -> &'a str {
    detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == kind)
        .nth(nth)
        .and_then(|s| s["detail"].as_str())
        .unwrap_or_else(|| panic!("no {kind} step #{nth}: {detail:#}"))
}

/// The project's containers of `service` (ids), running or not.
fn ids(stack: &Stack, service: &str) -> Vec<String> {
    stack
        .docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={}", stack.project),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn volume_exists(stack: &Stack, name: &str) -> bool {
    stack
        .docker(&["volume", "ls", "-q"])
        .lines()
        .any(|l| l == name)
}

/// The volume mounted at `destination` in the service's container.
fn mounted_at(stack: &Stack, service: &str, destination: &str) -> String {
    stack.inspect(service)["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == destination)
        .and_then(|m| m["Name"].as_str())
        .unwrap_or_else(|| panic!("{service} mounts nothing at {destination}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_loss_removes_redis_with_its_data_volume_and_keeps_the_other_named_one() {
    let stack = Stack::up(&["redis"]);
    let project = &stack.project;
    stack.exec("redis", &["sh", "-c", "echo stale > /data/dump.rdb"]);
    stack.exec("redis", &["sh", "-c", "echo keep > /etc/redis/redis.conf"]);
    stack.exec(
        "redis",
        &["sh", "-c", "echo scratch > /var/lib/redis-scratch/tmp"],
    );
    let anonymous = mounted_at(&stack, "redis", "/var/lib/redis-scratch");
    let data = mounted_at(&stack, "redis", "/data");
    assert_eq!(data, format!("{project}_redis-data"));
    assert_eq!(anonymous.len(), 64, "anonymous: {anonymous}");
    let old = stack.id("redis");

    let redis_url = std::env::var("REMEDIATOR_TEST_REDIS_URL")
        .expect("REMEDIATOR_TEST_REDIS_URL: run the tests through scripts/test-env.sh");
    let rules = shipped_with("50-redis-cache.yaml", |t| {
        t.replace("redis://localhost:6379", &redis_url)
    });
    let app = app_for(&stack, &rules, &[]).await;
    app.post_hook(fire(json!({
        "alertname": "RedisCacheLoss", "service": "redis", "severity": "warning",
        "instance": "redis-exporter:9121",
    })))
    .await;
    let detail = app.finished("RedisCacheLoss", 90).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    assert_eq!(detail["rule"], "redis-cache-loss");
    assert_eq!(
        kinds(&detail),
        [
            "main/diagnose:ok",
            "main/stop:ok",
            "main/remove:ok",
            "main/up:ok",
            "main/check_redis:ok"
        ]
    );
    let remove = step_detail(&detail, "remove", 0);
    assert!(
        remove.contains(&format!("kept volume {project}_redis-conf"))
            && remove.contains(&anonymous)
            && remove.contains(&data),
        "{remove}"
    );
    let up = step_detail(&detail, "up", 0);
    assert!(
        up.contains("group 1 (redis): created redis; healthy after "),
        "{up}"
    );

    let new = stack.id("redis");
    assert_ne!(new, old, "a new container");
    assert_eq!(
        stack.inspect("redis")["State"]["Health"]["Status"],
        "healthy"
    );
    stack.exec("redis", &["test", "!", "-e", "/data/dump.rdb"]);
    stack.exec("redis", &["grep", "-qx", "keep", "/etc/redis/redis.conf"]);
    stack.exec("redis", &["test", "!", "-e", "/var/lib/redis-scratch/tmp"]);
    assert!(
        !volume_exists(&stack, &anonymous),
        "the old anonymous volume went with its container"
    );
    assert_ne!(
        mounted_at(&stack, "redis", "/var/lib/redis-scratch"),
        anonymous
    );
    assert_eq!(
        mounted_at(&stack, "redis", "/data"),
        data,
        "compose made the data volume again, empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_without_volumes_keeps_every_named_volume_and_refuses_outside_the_allowlist() {
    let stack = Stack::up(&["redis", "postgres"]);
    let project = stack.project.clone();
    stack.exec("redis", &["sh", "-c", "echo keep > /data/dump.rdb"]);
    let anonymous = mounted_at(&stack, "redis", "/var/lib/redis-scratch");
    let rules = rules_with(
        "rules:\n  - name: drop-redis\n    matchers: ['alertname=\"DropRedis\"']\n    priority: P3\n    rto: 15m\n    owner: infra\n    target: { service: redis }\n    steps:\n      - remove: { services: [redis], grace: 1s }\n  - name: drop-postgres\n    matchers: ['alertname=\"DropPostgres\"']\n    priority: P3\n    rto: 15m\n    owner: infra\n    target: { service: postgres }\n    steps:\n      - remove: { services: [postgres], volumes: [pgdata] }\n",
    );
    let app = app_for(
        &stack,
        &rules,
        &[("REMEDIATOR_DOCKER__ALLOWED_SERVICES", "[redis]")],
    )
    .await;
    app.post_hook(fire(json!({"alertname": "DropRedis"}))).await;
    let detail = app.finished("DropRedis", 60).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    assert!(ids(&stack, "redis").is_empty(), "the container is gone");
    assert!(
        !volume_exists(&stack, &anonymous),
        "with its anonymous volume"
    );
    assert!(volume_exists(&stack, &format!("{project}_redis-data")));
    assert!(volume_exists(&stack, &format!("{project}_redis-conf")));

    app.post_hook(fire(json!({"alertname": "DropPostgres"})))
        .await;
    let detail = app.finished("DropPostgres", 60).await;
    assert_eq!(detail["phase"], "failed", "{detail:#}");
    let remove = step_detail(&detail, "remove", 0);
    assert!(
        remove.contains("refused: service \"postgres\" is not in docker.allowed_services"),
        "{remove}"
    );
    assert_eq!(ids(&stack, "postgres").len(), 1, "postgres untouched");
    assert_eq!(stack.inspect("postgres")["State"]["Running"], true);
    assert!(volume_exists(&stack, &format!("{project}_pgdata")));
}

/// `full-bring-up`, with its localhost `/health` checks made inside the containers.
fn full_bring_up_rules() -> tempfile::TempDir {
    shipped_with("80-full-bring-up.yaml", |t| {
        t.replace(
            r#"- check_http: { url: "http://localhost:8000/health", within: 1m }"#,
            r#"- exec: { service: backend, argv: [wget, -q, -O, /dev/null, "http://127.0.0.1:8080/health"] }"#,
        )
        .replace(
            r#"- check_http: { url: "http://localhost/health", within: 1m }"#,
            r#"- exec: { service: frontend, argv: [wget, -q, -O, /dev/null, "http://127.0.0.1:8080/health"] }"#,
        )
    })
}

fn started_at(stack: &Stack, service: &str) -> DateTime<Utc> {
    stack
        .started_at(service)
        .parse()
        .unwrap_or_else(|e| panic!("{service}: StartedAt: {e}"))
}

/// Each group's services all started after the previous group's last start, with at least
/// the healthcheck's first interval (1 s) between: a group is healthy only after its first
/// probe passed.
fn assert_started_in_groups(stack: &Stack, groups: &[&[&str]]) -> BTreeMap<String, DateTime<Utc>> {
    let starts: BTreeMap<String, DateTime<Utc>> = ALL
        .iter()
        .map(|s| (s.to_string(), started_at(stack, s)))
        .collect();
    for pair in groups.windows(2) {
        let last = pair[0].iter().map(|s| starts[*s]).max().unwrap();
        let first = pair[1].iter().map(|s| starts[*s]).min().unwrap();
        assert!(
            first - last >= chrono::Duration::milliseconds(900),
            "{:?} started {} after {:?}: {starts:#?}",
            pair[1],
            first - last,
            pair[0]
        );
    }
    starts
}

const GROUPS: &[&[&str]] = &[
    &["postgres", "redis", "rabbitmq", "minio"],
    &["backup"],
    &["backend", "celery-worker"],
    &["frontend"],
];

/// The backup the database restore of step 6 is given (the backups volume outlives
/// `docker-compose down`, as backups outlive the machine).
const BACKUP: &str = "voiceai_testing_20261130_020000.sql.gz";

/// Two backups in the project's backups volume, for the restore to offer.
fn with_backups(stack: &Stack) {
    for b in [BACKUP, "voiceai_testing_20261129_020000.sql.gz"] {
        stack.exec("backup", &["touch", &format!("/data/backups/{b}")]);
    }
}

const API_TOKEN: &str = "api-token-for-scenario-3";

async fn bring_up(stack: &Stack) -> Value {
    let rules = full_bring_up_rules();
    let app = app_for(stack, &rules, &[("REMEDIATOR_API__TOKEN", API_TOKEN)]).await;
    // Started by hand, as the DR plan's scenario 3 is: `remediator run full-bring-up`'s call.
    let r = app
        .client
        .post(format!("{}/api/v1/runs", app.addr))
        .bearer_auth(API_TOKEN)
        .json(&json!({"rule": "full-bring-up", "by": "dana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let run: Value = r.json().await.unwrap();
    assert_eq!(run["origin"], "manual", "{run:#}");
    // Step 6: the restore waits for the dba, with only infrastructure and backup up.
    let (id, _) = crate::scenario2::waiting_for_approval(&app, "FullBringUp", 120).await;
    for s in ["backend", "celery-worker", "frontend"] {
        assert!(
            ids(stack, s).is_empty() || stack.inspect(s)["State"]["Running"] == false,
            "{s} is not up before the restore"
        );
    }
    let (status, body) = crate::scenario2::answer(
        &app,
        id,
        "approve",
        Some(API_TOKEN),
        json!({"by": "dana", "choice": BACKUP}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let detail = app.finished_id(id, 180).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    assert_eq!(detail["rule"], "full-bring-up");
    assert_eq!(
        kinds(&detail),
        [
            "main/up:ok",
            "main/exec:ok",
            "main/approve:ok",
            "main/exec:ok",
            "main/up:ok",
            "main/exec:ok",
            "main/exec:ok"
        ]
    );
    stack.exec(
        "postgres",
        &[
            "sh",
            "-c",
            &format!("test \"$(cat /var/lib/postgresql/data/RESTORED_FROM)\" = {BACKUP}"),
        ],
    );
    for s in ALL {
        assert_eq!(
            stack.inspect(s)["State"]["Health"]["Status"],
            "healthy",
            "{s}"
        );
    }
    detail
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_bring_up_starts_stopped_containers_group_by_group() {
    let stack = Stack::up(ALL);
    with_backups(&stack);
    let before: BTreeMap<&str, String> = ALL.iter().map(|s| (*s, stack.id(s))).collect();
    let mut stop = stack.compose();
    stop.args(["stop", "-t", "1"]);
    assert!(stop.status().unwrap().success());
    for s in ALL {
        assert_eq!(stack.inspect(s)["State"]["Running"], false, "{s} stopped");
    }

    let detail = bring_up(&stack).await;
    for s in ALL {
        assert_eq!(stack.id(s), before[s], "{s}: the same container, started");
    }
    let first = step_detail(&detail, "up", 0);
    assert!(
        first.contains(
            "group 1 (postgres, redis, rabbitmq, minio): started postgres, redis, rabbitmq, minio; healthy after "
        ) && first.contains("group 2 (backup): started backup; healthy after "),
        "{first}"
    );
    let second = step_detail(&detail, "up", 1);
    assert!(
        second.contains(
            "group 1 (backend, celery-worker): started backend, celery-worker; healthy after "
        ) && second.contains("group 2 (frontend): started frontend; healthy after "),
        "{second}"
    );
    assert_started_in_groups(&stack, GROUPS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_bring_up_creates_removed_services_from_the_compose_file_in_order() {
    let stack = Stack::up(ALL);
    with_backups(&stack);
    // Scenario 3: nothing left but the compose file (and the named volumes).
    let mut down = stack.compose();
    down.args(["down", "-t", "1"]);
    assert!(down.status().unwrap().success());
    for s in ALL {
        assert!(ids(&stack, s).is_empty(), "{s} removed");
    }

    let detail = bring_up(&stack).await;
    let first = step_detail(&detail, "up", 0);
    assert!(
        first.contains(
            "group 1 (postgres, redis, rabbitmq, minio): created postgres, redis, rabbitmq, minio; healthy after "
        ),
        "{first}"
    );
    let second = step_detail(&detail, "up", 1);
    assert!(
        second.contains("group 2 (frontend): created frontend; healthy after "),
        "{second}"
    );
    for s in ALL {
        let info = stack.inspect(s);
        assert_eq!(
            info["Config"]["Labels"]["com.docker.compose.project"],
            stack.project.as_str()
        );
        assert_eq!(info["Config"]["Labels"]["com.docker.compose.service"], *s);
    }
    assert_started_in_groups(&stack, GROUPS);
    // The aliases of the compose file: made by compose itself.
    let aliases = &stack.inspect("postgres")["NetworkSettings"]["Networks"]
        [format!("{}_backplane", stack.project)]["Aliases"];
    assert!(
        aliases.as_array().unwrap().iter().any(|a| a == "db"),
        "{aliases}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_refuses_a_group_outside_the_allowlist_before_starting_anything() {
    let stack = Stack::up(&["redis", "backend"]);
    let mut stop = stack.compose();
    stop.args(["stop", "-t", "1", "redis", "backend"]);
    assert!(stop.status().unwrap().success());
    let rules = rules_with(
        "rules:\n  - name: up-two\n    matchers: ['alertname=\"UpTwo\"']\n    priority: P3\n    rto: 15m\n    owner: infra\n    target: { none: true }\n    steps:\n      - up: { groups: [[redis], [backend]], within: 30s }\n",
    );
    let app = app_for(
        &stack,
        &rules,
        &[("REMEDIATOR_DOCKER__ALLOWED_SERVICES", "[redis]")],
    )
    .await;
    app.post_hook(fire(json!({"alertname": "UpTwo"}))).await;
    let detail = app.finished("UpTwo", 60).await;
    assert_eq!(detail["phase"], "failed", "{detail:#}");
    let up = step_detail(&detail, "up", 0);
    assert!(
        up.contains("refused: service \"backend\" is not in docker.allowed_services"),
        "{up}"
    );
    assert_eq!(stack.inspect("redis")["State"]["Running"], false);
    assert_eq!(stack.inspect("backend")["State"]["Running"], false);
}
