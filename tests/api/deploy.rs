//! deploy/ is validated with the tools Alertmanager, Prometheus and systemd ship.

use std::process::Command;

use crate::helpers::*;

fn run(bin: std::path::PathBuf, args: &[&str]) -> String {
    let out = Command::new(&bin)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{text}",
        bin.display()
    );
    text
}

#[test]
fn amtool_accepts_the_alertmanager_config_and_routes_the_dr_alerts_to_us() {
    let amtool = || tool("REMEDIATOR_TEST_AMTOOL_BIN", "amtool");
    run(amtool(), &["check-config", "deploy/alertmanager.yml"]);
    for alert in [
        "PostgresDown",
        "HighQueueDepth",
        "BackupFailed",
        "DiskSpaceLow",
        "RedisCacheLoss",
    ] {
        let out = run(
            amtool(),
            &[
                "config",
                "routes",
                "test",
                "--config.file=deploy/alertmanager.yml",
                &format!("alertname={alert}"),
            ],
        );
        assert_eq!(out.lines().next(), Some("remediator"), "{alert}: {out}");
    }
}

#[test]
fn amtool_accepts_the_fleet_config_and_delivers_to_both_replicas() {
    let amtool = || tool("REMEDIATOR_TEST_AMTOOL_BIN", "amtool");
    run(amtool(), &["check-config", "deploy/fleet/alertmanager.yml"]);
    let out = run(
        amtool(),
        &[
            "config",
            "routes",
            "test",
            "--config.file=deploy/fleet/alertmanager.yml",
            "alertname=PostgresDown",
        ],
    );
    assert_eq!(out.lines().next(), Some("remediator-fleet"), "{out}");
    let text = std::fs::read_to_string(repo().join("deploy/fleet/alertmanager.yml")).unwrap();
    for replica in ["remediator-a", "remediator-b"] {
        assert!(
            text.contains(&format!("url: http://{replica}:9095/hooks/alertmanager")),
            "{replica}"
        );
    }
}

#[test]
fn promtool_accepts_the_alerting_rules_and_their_unit_tests() {
    let promtool = || tool("REMEDIATOR_TEST_PROMTOOL_BIN", "promtool");
    let out = run(
        promtool(),
        &["check", "rules", "deploy/prometheus-rules.yml"],
    );
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
    run(
        promtool(),
        &["test", "rules", "deploy/prometheus-rules.test.yml"],
    );
}

/// The shipped unit, as installed: its directives, one per line (`Key=value`).
fn unit() -> String {
    std::fs::read_to_string(repo().join("deploy/remediator.service")).unwrap()
}

const SHIPPED_EXEC: &str =
    "ExecStart=/usr/local/bin/remediator serve --config /etc/remediator/remediator.yaml";

#[test]
fn the_systemd_unit_is_what_an_operator_ships_and_systemd_analyze_verify_is_silent_on_it() {
    let text = unit();
    for line in [
        "Type=simple",
        "User=remediator",
        "Group=remediator",
        "SupplementaryGroups=docker",
        "EnvironmentFile=/etc/remediator/env",
        SHIPPED_EXEC,
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "StateDirectory=remediator",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "After=docker.service network-online.target",
        "Wants=network-online.target",
        "WantedBy=multi-user.target",
    ] {
        assert_eq!(
            text.lines().filter(|l| l.trim() == line).count(),
            1,
            "{line} once in deploy/remediator.service"
        );
    }
    assert!(
        !text.lines().any(|l| l.starts_with("ReadWritePaths")),
        "the socket needs no write access to the file system"
    );

    // verify checks that ExecStart's program exists and is executable: a copy of the unit
    // names the binary built for these tests, and nothing else changes.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("remediator.service");
    let exe = env!("CARGO_BIN_EXE_remediator");
    std::fs::write(
        &copy,
        text.replace(
            SHIPPED_EXEC,
            &SHIPPED_EXEC.replace("/usr/local/bin/remediator", exe),
        ),
    )
    .unwrap();
    // No systemd needed as PID 1: the unit files are read from disk; no man pages or
    // generators are looked for.
    let analyze = tool("REMEDIATOR_TEST_SYSTEMD_ANALYZE_BIN", "systemd-analyze");
    let out = Command::new(&analyze)
        .args(["verify", "--man=no", "--generators=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}\n{said}",
        out.status
    );

    // The command line is the binary's: `serve --config FILE` reads that file.
    let out = Command::new(exe)
        .args(["serve", "--config", "/nonexistent/remediator.yaml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("cannot read the configuration file /nonexistent/remediator.yaml"),
        "{err}"
    );
}

#[test]
fn the_shipped_configuration_loads_and_keeps_its_state_where_the_unit_says() {
    use remediator::settings::{Overrides, Settings};
    let s = Settings::load(
        Some(&repo().join("deploy/remediator.yaml")),
        Vec::new(),
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("deploy/remediator.yaml: {e}"));
    // StateDirectory=remediator is /var/lib/remediator.
    assert_eq!(s.data_dir, std::path::Path::new("/var/lib/remediator"));
    assert_eq!(s.rules_dir, std::path::Path::new("/etc/remediator/rules"));
    assert_eq!(s.listen.to_string(), "127.0.0.1:9095");
    assert_eq!(s.docker.project.as_deref(), Some("voiceai"));
}

#[test]
fn systemd_sysusers_creates_the_service_user_in_the_docker_group() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/group"), "docker:x:107:\n").unwrap();
    let sysusers = tool("REMEDIATOR_TEST_SYSTEMD_SYSUSERS_BIN", "systemd-sysusers");
    let out = Command::new(&sysusers)
        .arg(format!("--root={}", root.path().display()))
        .arg(repo().join("deploy/remediator.sysusers"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.lines().all(|l| l.starts_with("Creating ")),
        "nothing but what it created: {said}"
    );
    let read = |f: &str| std::fs::read_to_string(root.path().join("etc").join(f)).unwrap();
    let passwd = read("passwd");
    let user = passwd
        .lines()
        .find(|l| l.starts_with("remediator:"))
        .unwrap_or_else(|| panic!("{passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    assert_eq!(
        (fields[5], fields[6]),
        ("/var/lib/remediator", "/usr/sbin/nologin"),
        "{user}"
    );
    let group = read("group");
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("docker:x:107:") && l.ends_with("remediator")),
        "{group}"
    );
    assert!(
        group.lines().any(|l| l.starts_with("remediator:x:")),
        "{group}"
    );
}

/// deploy/fleet/remediator-a.env's settings (`KEY=VALUE` lines; comments are the secrets an
/// operator fills in).
fn fleet_env_file(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("deploy/fleet").join(name)).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{name}: {l:?} is not KEY=VALUE"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_example_config_runs_with_coordination_and_history_up() {
    // The example as shipped, with only where things are changed for this machine: Redis and
    // Postgres are the test's (the password in a file, as postgres.password_file expects),
    // the data, rules and listen address come from the command line as in the unit.
    let db = crate::fleet_history::own_database("deploy").await;
    let mut url = reqwest::Url::parse(&db).unwrap();
    let password = url.password().unwrap_or("").to_string();
    url.set_password(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("postgres-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let redis = std::env::var("REMEDIATOR_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let prefix = format!("test-deploy-fleet-{}:", std::process::id());
    let mut env = fleet_env_file("remediator-a.env");
    assert_eq!(
        env,
        [(
            "REMEDIATOR_REPLICA__ID".to_string(),
            "remediator-a".to_string()
        )],
        "the env file's settings changed: update this test"
    );
    env.extend([
        ("REMEDIATOR_REDIS__URL".to_string(), redis),
        ("REMEDIATOR_REDIS__KEY_PREFIX".to_string(), prefix),
        ("REMEDIATOR_POSTGRES__URL".to_string(), url.to_string()),
        (
            "REMEDIATOR_POSTGRES__PASSWORD_FILE".to_string(),
            password_file.display().to_string(),
        ),
    ]);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = repo().join("deploy/fleet/remediator.yaml");
    let data = dir.path().join("data");
    let served = Served::start_args(
        &data,
        free_port(),
        Some(&repo().join("rules")),
        &pairs,
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let client = reqwest::Client::new();
    let ready = eventually(30, "coordination and history up", || async {
        let r = client
            .get(format!("{}/-/ready", served.base))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        let ready: serde_json::Value = r.json().await.ok()?;
        let checks = &ready["checks"];
        (status == 200
            && checks["coordination"]
                .as_str()?
                .starts_with("coordinating as replica remediator-a")
            && checks["history"]["state"] == "caught_up")
            .then_some(ready)
    })
    .await;
    assert_eq!(ready["ready"], true, "{ready:#}");
    let history = &ready["checks"]["history"];
    assert_eq!(history["replica"], "remediator-a", "{ready:#}");
    assert!(
        !password.is_empty() && !ready.to_string().contains(&format!(":{password}@")),
        "the password is never shown: {ready:#}"
    );
}
