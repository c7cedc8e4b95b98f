//! The shipped DR rules and the step kinds, run for real against a busybox compose project.

use std::path::PathBuf;

use chrono::Utc;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::stack::Stack;

async fn app_for(stack: &Stack, rules_dir: Option<PathBuf>, extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("REMEDIATOR_WEBHOOK_TOKEN".to_string(), TOKEN.to_string()),
        (
            "REMEDIATOR_DOCKER__PROJECT".to_string(),
            stack.project.clone(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    spawn_with(Spawn { env, rules_dir }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_restarts_postgres_and_verifies_it() {
    let stack = Stack::up(&["postgres", "backend"]);
    let app = app_for(&stack, None, &[]).await;
    let (pg_before, backend_before) = (stack.started_at("postgres"), stack.started_at("backend"));
    assert_eq!(
        app.post_hook(fixture("postgres-down-firing.json"))
            .await
            .status(),
        200
    );
    let detail = app.finished("PostgresDown", 60).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    let steps: Vec<_> = step_outcomes(&detail)
        .into_iter()
        .map(|(_, k, o)| format!("{k}:{o}"))
        .collect();
    assert_eq!(
        steps,
        [
            "diagnose:ok",
            "logs:ok",
            "restart:ok",
            "wait_healthy:ok",
            "exec:ok"
        ]
    );
    let diagnose = &detail["steps"][0]["detail"];
    assert!(
        diagnose
            .as_str()
            .unwrap()
            .contains("OOMKilled false, restart count 0"),
        "{diagnose}"
    );
    assert!(
        diagnose.as_str().unwrap().contains("docker disk: "),
        "{diagnose}"
    );
    let exec = detail["steps"][4]["detail"].as_str().unwrap();
    assert!(
        exec.contains("`psql -U postgres -c SELECT 1;` in") && exec.contains("(1 row)"),
        "{exec}"
    );
    assert_ne!(
        stack.started_at("postgres"),
        pg_before,
        "postgres was restarted"
    );
    assert_eq!(
        stack.started_at("backend"),
        backend_before,
        "nothing else was touched"
    );
    assert_eq!(
        stack.inspect("postgres")["State"]["Health"]["Status"],
        "healthy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_queue_depth_restarts_the_celery_workers() {
    let stack = Stack::up(&["celery-worker", "rabbitmq"]);
    let app = app_for(&stack, None, &[]).await;
    let before = stack.started_at("celery-worker");
    app.post_hook(fixture("high-queue-depth-firing.json")).await;
    let detail = app.finished("HighQueueDepth", 60).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    assert_ne!(stack.started_at("celery-worker"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_failed_verifies_backups_in_the_backup_service() {
    let stack = Stack::up(&["backup"]);
    let app = app_for(&stack, None, &[]).await;
    app.post_hook(fire(
        json!({"alertname": "BackupFailed", "service": "backup", "severity": "warning",
               "backup": "voiceai_20261125_020000.sql.gz"}),
    ))
    .await;
    let detail = app.finished("BackupFailed", 60).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    let exec = detail["steps"][2]["detail"].as_str().unwrap();
    assert!(exec.contains("verify_backups: OK"), "{exec}");
    assert!(exec.contains("voiceai_20261125_020000.sql.gz"), "{exec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_space_low_reports_docker_disk_usage_and_pages_infra() {
    let stack = Stack::up(&["minio"]);
    let app = app_for(&stack, None, &[]).await;
    app.post_hook(fixture("disk-space-low-two-alerts-firing.json"))
        .await;
    let list = eventually(30, "both incidents handled", || async {
        let l = app.incidents().await;
        (l.len() == 2
            && l.iter()
                .all(|i| i["phase"] != "new" && i["phase"] != "remediating"))
        .then_some(l)
    })
    .await;
    let phases: Vec<_> = list
        .iter()
        .rev()
        .map(|i| i["phase"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        phases,
        ["recovered", "skipped"],
        "the second mount point is the same rule and target: run once"
    );
    let (_, detail) = app
        .get_json(&format!("/api/v1/incidents/{}", list[1]["id"]))
        .await;
    assert!(
        detail["steps"][0]["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("project {}: 1 containers", stack.project)),
        "{detail:#}"
    );
    assert!(
        detail["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["guard"] == "page"
                && d["reason"].as_str().unwrap().starts_with("paging infra"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_stays_unhealthy_runs_on_failure() {
    let stack = Stack::up(&["redis"]);
    let app = app_for(
        &stack,
        Some(
            rules_with(
                &std::fs::read_to_string(repo().join("rules/90-single-service.yaml"))
                    .unwrap()
                    .replace("within: 2m", "within: 5s"),
            )
            .path()
            .to_path_buf(),
        ),
        &[],
    )
    .await;
    stack.exec("redis", &["touch", "/etc/unhealthy"]);
    app.post_hook(fire(
        json!({"alertname": "ServiceDown", "service": "redis", "priority": "P1"}),
    ))
    .await;
    let detail = app.finished("ServiceDown", 60).await;
    assert_eq!(detail["phase"], "failed", "{detail:#}");
    assert_eq!(detail["priority"], "P1", "priority taken from the label");
    let steps: Vec<_> = step_outcomes(&detail)
        .into_iter()
        .map(|(p, k, o)| format!("{p}/{k}:{o}"))
        .collect();
    assert_eq!(
        steps,
        [
            "main/logs:ok",
            "main/restart:ok",
            "main/wait_healthy:failed",
            "on_failure/diagnose:ok",
            "on_failure/page:ok"
        ]
    );
    let wait = detail["steps"][2]["detail"].as_str().unwrap();
    assert!(
        wait.starts_with("not healthy within 5s:") && wait.contains("unhealthy"),
        "{wait}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_cannot_reach_outside_the_project_or_the_allowlist() {
    let ours = Stack::up(&["redis"]);
    let theirs = Stack::up(&["redis", "postgres"]);
    let app = app_for(&ours, None, &[]).await;
    let (ours_before, theirs_before) = (ours.started_at("redis"), theirs.started_at("redis"));
    app.post_hook(fire(
        json!({"alertname": "ServiceDown", "service": "redis"}),
    ))
    .await;
    let detail = app.finished("ServiceDown", 60).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    assert_ne!(ours.started_at("redis"), ours_before);
    assert_eq!(
        theirs.started_at("redis"),
        theirs_before,
        "the same-named service of another project is untouched"
    );

    for evil in [
        "../redis",
        "redis*",
        "",
        "postgres",
        &format!("{}_redis_1", theirs.project),
    ] {
        let r = app
            .post_hook(fire(
                json!({"alertname": "ServiceDown", "service": evil, "n": evil}),
            ))
            .await;
        assert_eq!(r.status(), 200);
    }
    eventually(30, "five refusals", || async {
        let list = app.incidents().await;
        let refused = list.iter().filter(|i| i["phase"] == "escalated").count();
        (refused == 5).then_some(())
    })
    .await;
    assert_eq!(
        theirs.started_at("postgres"),
        theirs.inspect("postgres")["State"]["StartedAt"]
            .as_str()
            .unwrap()
    );

    // A rule naming another project's container by name is refused at run time.
    let other = theirs.inspect("redis")["Name"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    let rules = rules_with(&format!(
        "rules:\n  - name: foreign\n    matchers: ['alertname=\"Foreign\"']\n    priority: P3\n    rto: 1h\n    owner: infra\n    target: {{ container: {other} }}\n    steps:\n      - restart: {{}}\n"
    ));
    let app = app_for(&ours, Some(rules.path().to_path_buf()), &[]).await;
    app.post_hook(fire(json!({"alertname": "Foreign"}))).await;
    let detail = app.finished("Foreign", 60).await;
    assert_eq!(detail["phase"], "failed");
    assert!(
        detail["steps"][0]["detail"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "refused: container {other:?} is not part of compose project"
            )),
        "{detail:#}"
    );
    assert_eq!(theirs.started_at("redis"), theirs_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_setting_refuses_other_services() {
    let stack = Stack::up(&["redis"]);
    let app = app_for(
        &stack,
        None,
        &[("REMEDIATOR_DOCKER__ALLOWED_SERVICES", "[backend]")],
    )
    .await;
    let before = stack.started_at("redis");
    app.post_hook(fire(
        json!({"alertname": "ServiceDown", "service": "redis"}),
    ))
    .await;
    let detail = app.finished("ServiceDown", 60).await;
    assert_eq!(detail["phase"], "failed");
    assert!(
        detail["steps"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("refused: service \"redis\" is not in docker.allowed_services (backend)"),
        "{detail:#}"
    );
    assert_eq!(stack.started_at("redis"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_for_real() {
    let stack = Stack::up(&["postgres"]);
    let app = app_for(
        &stack,
        None,
        &[("REMEDIATOR_ENGINE__FLAPPING_FIRINGS", "10")],
    )
    .await;
    let labels = json!({"alertname": "PostgresDown", "service": "postgres"});
    let mut restarts = 0;
    let mut last = stack.started_at("postgres");
    for i in 0..4 {
        let starts = Utc::now() - chrono::Duration::minutes(10 - i);
        app.post_hook(alert_payload(labels.clone(), starts, "firing"))
            .await;
        let id = eventually(30, "incident", || async {
            app.incidents()
                .await
                .iter()
                .filter(|x| x["alertname"] == "PostgresDown")
                .count()
                .eq(&(i as usize + 1))
                .then_some(())?;
            app.incidents().await.first()?["id"].as_i64()
        })
        .await;
        app.finished_id(id, 60).await;
        app.post_hook(alert_payload(labels.clone(), starts, "resolved"))
            .await;
        let now = stack.started_at("postgres");
        if now != last {
            restarts += 1;
            last = now;
        }
    }
    assert_eq!(restarts, 2, "exactly limit.runs restarts");
    let limited: Vec<_> = app
        .incidents()
        .await
        .iter()
        .filter(|i| i["phase"] == "escalated")
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(limited.len(), 2);
    for id in limited {
        let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
        let skip = d["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["verdict"] == "skip")
            .unwrap();
        assert_eq!(skip["guard"], "rate_limit");
        assert!(
            skip["reason"]
                .as_str()
                .unwrap()
                .starts_with("rate limited: 2 of 2 runs for service:postgres in the last 1h"),
            "{skip}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_is_what_compose_force_recreate_does() {
    let stack = Stack::up(&["postgres"]);
    let before = stack.inspect("postgres");
    stack.exec(
        "postgres",
        &[
            "sh",
            "-c",
            "echo keep > /var/lib/postgresql/data/marker; touch /etc/unhealthy",
        ],
    );
    let rules = rules_with("rules:\n  - name: recreate-pg\n    matchers: ['alertname=\"PostgresDown\"']\n    priority: P1\n    rto: 30m\n    owner: dba\n    target: { service: postgres }\n    steps:\n      - recreate: { grace: 2s }\n      - wait_healthy: { within: 30s }\n");
    let app = app_for(&stack, Some(rules.path().to_path_buf()), &[]).await;
    app.post_hook(fixture("postgres-down-firing.json")).await;
    let detail = app.finished("PostgresDown", 60).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");

    let after = stack.inspect("postgres");
    assert_ne!(after["Id"], before["Id"], "a new container");
    assert_eq!(after["Name"], before["Name"]);
    assert_eq!(after["Config"]["Image"], before["Config"]["Image"]);
    assert_eq!(
        after["Config"]["Labels"], before["Config"]["Labels"],
        "labels incl. config-hash copied"
    );
    assert_eq!(after["Config"]["Cmd"], before["Config"]["Cmd"]);
    assert_eq!(
        after["Config"]["Healthcheck"],
        before["Config"]["Healthcheck"]
    );
    assert_eq!(after["HostConfig"]["Binds"], before["HostConfig"]["Binds"]);
    let net = format!("{}_backplane", stack.project);
    let aliases = |v: &Value| {
        let mut a: Vec<String> = v["NetworkSettings"]["Networks"][&net]["Aliases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .filter(|x| !v["Id"].as_str().unwrap().starts_with(x.as_str()))
            .collect();
        a.sort();
        a
    };
    assert_eq!(aliases(&after), aliases(&before), "network aliases kept");
    assert!(aliases(&after).contains(&"db".to_string()));
    stack.exec(
        "postgres",
        &[
            "sh",
            "-c",
            "test \"$(cat /var/lib/postgresql/data/marker)\" = keep",
        ],
    );
    stack.exec("postgres", &["sh", "-c", "test ! -f /etc/unhealthy"]);
    let ps = String::from_utf8(
        stack
            .compose()
            .args(["ps", "postgres"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        ps.contains(&format!("{}_postgres_1", stack.project)) && ps.contains("(healthy)"),
        "{ps}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_start_take_services_in_order() {
    let stack = Stack::up(&["backend", "celery-worker"]);
    let rules = rules_with("rules:\n  - name: maintenance\n    matchers: ['alertname=\"Maintenance\"']\n    priority: P3\n    rto: 1h\n    owner: backend\n    target: { none: true }\n    steps:\n      - stop: { services: [backend, celery-worker], grace: 2s }\n      - start: { services: [backend, celery-worker] }\n");
    let app = app_for(&stack, Some(rules.path().to_path_buf()), &[]).await;
    app.post_hook(fire(json!({"alertname": "Maintenance"})))
        .await;
    let detail = app.finished("Maintenance", 60).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    let stop = detail["steps"][0]["detail"].as_str().unwrap();
    let p = &stack.project;
    assert_eq!(stop, format!("stopped {p}_backend_1, {p}_celery-worker_1"));
    let b = stack.inspect("backend");
    let c = stack.inspect("celery-worker");
    assert!(
        b["State"]["FinishedAt"].as_str().unwrap() < c["State"]["FinishedAt"].as_str().unwrap(),
        "backend stopped first"
    );
    assert!(
        b["State"]["StartedAt"].as_str().unwrap() < c["State"]["StartedAt"].as_str().unwrap(),
        "backend started first"
    );
    assert_eq!(b["State"]["Running"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_removed_mid_runbook_is_a_clear_failure() {
    let stack = Stack::up(&["frontend"]);
    let rules = rules_with("rules:\n  - name: slow\n    matchers: ['alertname=\"Slow\"']\n    priority: P2\n    rto: 15m\n    owner: backend\n    target: { service: frontend }\n    steps:\n      - wait: { duration: 3s }\n      - restart: {}\n    on_failure:\n      - notify: { message: gone }\n");
    let app = app_for(&stack, Some(rules.path().to_path_buf()), &[]).await;
    app.post_hook(fire(json!({"alertname": "Slow"}))).await;
    // Mid-runbook: once its 3 s wait has started, not after a guessed delay.
    eventually(30, "the runbook in its wait step", || async {
        let id = app.incidents().await.first()?["id"].as_i64()?;
        let (_, d) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
        (d["steps"][0]["kind"] == "wait" && d["steps"][0]["outcome"] == "running").then_some(())
    })
    .await;
    stack.docker(&["rm", "-f", &stack.id("frontend")]);
    let detail = app.finished("Slow", 60).await;
    assert_eq!(detail["phase"], "failed");
    assert_eq!(
        step_outcomes(&detail)[0],
        ("main".into(), "wait".into(), "ok".into()),
        "the container went while the runbook ran"
    );
    let restart = detail["steps"][1]["detail"].as_str().unwrap();
    assert!(
        restart.contains("no container of service \"frontend\" in compose project"),
        "{restart}"
    );
    assert_eq!(step_outcomes(&detail).last().unwrap().1, "notify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_check_the_real_postgres_redis_and_http() {
    let pg =
        std::env::var("REMEDIATOR_TEST_POSTGRES_URL").expect("run the tests through scripts/test");
    let redis =
        std::env::var("REMEDIATOR_TEST_REDIS_URL").expect("run the tests through scripts/test");
    // postgres://user:password@host:port/db → a DSN without the password, which comes from
    // the environment as a rule file requires.
    let rest = pg.strip_prefix("postgres://").unwrap();
    let (auth, hostpart) = rest.split_once('@').unwrap();
    let (user, password) = auth.split_once(':').unwrap();
    let (hostport, db) = hostpart.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    std::env::set_var("REMEDIATOR_TEST_PG_PASSWORD", password);
    let dsn = format!("host={host} port={port} user={user} dbname={db}");
    let probe_port = free_port();
    let rules = rules_with(&format!(
        "rules:
  - name: probes-ok
    matchers: ['alertname=\"ProbesOk\"']
    priority: P3
    rto: 1h
    owner: infra
    target: {{ none: true }}
    steps:
      - check_postgres: {{ dsn: \"{dsn}\", password_env: REMEDIATOR_TEST_PG_PASSWORD }}
      - check_redis: {{ url: \"{redis}\" }}
      - check_http: {{ url: \"http://127.0.0.1:{probe_port}/\", expect_status: 404 }}
  - name: probes-down
    matchers: ['alertname=\"ProbesDown\"']
    priority: P3
    rto: 1h
    owner: infra
    target: {{ none: true }}
    steps:
      - check_redis: {{ url: \"redis://127.0.0.1:1/\" }}
    on_failure:
      - check_postgres: {{ dsn: \"host={host} port=1 user={user} dbname={db}\" }}
"
    ));
    // A tiny HTTP server for check_http to hit: it answers 404 to everything.
    let server = actix_web::HttpServer::new(actix_web::App::new)
        .bind(("127.0.0.1", probe_port))
        .unwrap()
        .run();
    tokio::spawn(server);
    let stack = Stack::up(&["redis"]);
    let app = app_for(&stack, Some(rules.path().to_path_buf()), &[]).await;
    app.post_hook(fire(json!({"alertname": "ProbesOk"}))).await;
    let ok = app.finished("ProbesOk", 30).await;
    assert_eq!(ok["phase"], "recovered", "{ok:#}");
    let details: Vec<&str> = ok["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["detail"].as_str().unwrap())
        .collect();
    assert_eq!(details[0], "SELECT 1 returned 1");
    assert_eq!(details[1], "PING answered PONG");
    assert!(details[2].ends_with("answered 404"), "{details:?}");

    app.post_hook(fire(json!({"alertname": "ProbesDown"})))
        .await;
    let down = app.finished("ProbesDown", 30).await;
    assert_eq!(down["phase"], "failed");
    let steps = step_outcomes(&down);
    assert_eq!(
        steps[0],
        ("main".into(), "check_redis".into(), "failed".into())
    );
    assert_eq!(
        steps[1],
        (
            "on_failure".into(),
            "check_postgres".into(),
            "failed".into()
        )
    );
    assert!(
        down["steps"][1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("check_postgres: cannot connect"),
        "{down:#}"
    );
}
