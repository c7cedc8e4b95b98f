//! The binary's commands, run as a user would.

use std::process::Command;

use serde_json::Value;

use crate::helpers::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_remediator"));
    c.current_dir(repo());
    c
}

#[test]
fn check_accepts_the_shipped_rules() {
    let out = bin().args(["check", "rules"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "rules: OK, 7 rules, 6 contacts"
    );
}

/// A rule directory with one bad rule (an unknown key, an unclosed regex, a bad priority,
/// an unknown owner, a bad step field) and a file that stops half way through a rule.
fn broken_rules() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("rules/escalation.yaml"),
        dir.path().join("escalation.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        r#"rules:
  - name: a
    matchers: ['alertname=~"("']
    prioritty: P1
    priority: P9
    rto: 1m
    owner: nobody
    target: { none: true }
    steps: [ { restart: { grace: soon } } ]
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "rules:\n  - name: b\n    unknown: 1\n",
    )
    .unwrap();
    dir
}

fn broken_rules_errors(d: &std::path::Path) -> Vec<String> {
    let d = d.display();
    let known = "backend, dba, eng-lead, infra, oncall, product-owner";
    let mut want = vec![
        format!(r#"{d}/a.yaml:3:16: rule `a`: matcher `alertname=~"("`: invalid regular expression: unclosed group"#),
        format!("{d}/a.yaml:4:5: rule `a`: unknown key `prioritty` (expected one of: name, description, matchers, priority, priority_label, rto, owner, customer_impacting, target, limit, dry_run, steps, on_failure, fallback)"),
        format!("{d}/a.yaml:5:15: rule `a`: priority `P9` is not one of P1, P2, P3, P4"),
        format!("{d}/a.yaml:7:12: rule `a`: owner `nobody` is not a contact in escalation.yaml (known: {known})"),
        format!("{d}/a.yaml:9:34: rule `a`: restart.grace `soon` is not a duration such as 30s, 2m or 1h"),
    ];
    for (key, hint) in [
        (
            "matchers",
            " (e.g. matchers: ['alertname=\"PostgresDown\"'])",
        ),
        ("priority", " (one of P1, P2, P3, P4)"),
        ("rto", " (the recovery time objective, e.g. rto: 30m)"),
        ("owner", " (a contact in escalation.yaml)"),
        ("target", " (e.g. target: { service: postgres })"),
        ("steps", " (e.g. steps: [ { diagnose: {} } ])"),
    ] {
        want.push(format!(
            "{d}/b.yaml:2:5: rule `b`: missing key `{key}`{hint}"
        ));
    }
    want.push(format!("{d}/b.yaml:3:5: rule `b`: unknown key `unknown` (expected one of: name, description, matchers, priority, priority_label, rto, owner, customer_impacting, target, limit, dry_run, steps, on_failure, fallback)"));
    want
}

#[test]
fn check_prints_every_error_with_file_and_line_and_exits_1() {
    let dir = broken_rules();
    let out = bin().arg("check").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    let mut want = broken_rules_errors(dir.path());
    want.push("12 errors in 2 files; nothing was loaded".into());
    assert_eq!(err.lines().collect::<Vec<_>>(), want);
}

#[test]
fn check_reports_a_missing_escalation_file_without_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().arg("check").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{}/escalation.yaml: missing: the contacts and escalation policies live here; copy the one shipped in rules/\n1 error in 1 file; nothing was loaded\n",
            dir.path().display()
        )
    );
}

#[test]
fn serve_refuses_broken_rules_and_prints_each_error_once() {
    let dir = broken_rules();
    let data = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .arg("--rules")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // Log lines (JSON, on stderr too) aside, the message and its list, each error once.
    let printed: Vec<&str> = err.lines().filter(|l| !l.starts_with('{')).collect();
    let d = dir.path().display();
    let mut want = vec![format!(
        "error: the rules in {d} have 12 errors in 2 files; fix them (remediator check {d} lists them again):"
    )];
    want.extend(broken_rules_errors(dir.path()));
    assert_eq!(printed, want);
}

/// `simulate -o json --labels LABELS --data-dir DIR`, which must succeed, as JSON.
fn simulate_json(labels: &str, data_dir: &std::path::Path) -> Value {
    let out = bin()
        .args(["simulate", "-o", "json", "--labels", labels, "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn simulate_shows_the_rule_every_guard_and_the_plan_without_side_effects() {
    let data = tempfile::tempdir().unwrap();
    let v = simulate_json("alertname=ServiceDown,service=redis", data.path());
    let s = &v["simulated"][0];
    assert_eq!(s["rule"], "single-service-failure");
    assert_eq!(
        s["target"],
        serde_json::json!({"kind": "service", "name": "redis"})
    );
    let guards: Vec<_> = s["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["guard"].as_str().unwrap(), d["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(
        guards,
        [
            ("dedup", "continue"),
            ("flapping", "continue"),
            ("pause", "continue"),
            ("window", "continue"),
            ("deploy", "continue"),
            ("dry_run", "continue"),
            ("rate_limit", "continue"),
            ("budget", "continue"),
            ("busy", "continue")
        ]
    );
    let steps: Vec<_> = s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["logs", "restart", "wait_healthy"]);
    assert!(
        std::fs::read_dir(data.path()).unwrap().next().is_none(),
        "simulate wrote nothing"
    );

    let out = bin()
        .args([
            "simulate",
            "-o",
            "json",
            "--labels",
            "alertname=ServiceDown,service=../postgres",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["simulated"][0]["decisions"][0]["guard"], "target");

    let out = bin()
        .args([
            "simulate",
            "--output=json",
            "--alert",
            "tests/fixtures/alertmanager-0.25/disk-space-low-two-alerts-firing.json",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["simulated"].as_array().unwrap().len(), 2);
    assert_eq!(v["simulated"][0]["rule"], "disk-space-low");
}

#[tokio::test]
async fn sighup_reloads_the_rules_and_keeps_the_last_good_set_when_broken() {
    let rules = shipped_rules_copy();
    let data = tempfile::tempdir().unwrap();
    let served = Served::start(data.path(), free_port(), Some(rules.path()), &[]).await;
    let base = served.base.clone();
    let client = reqwest::Client::new();
    let reloads = |result: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let text = client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let needle = format!("remediator_rule_reloads_total{{result=\"{result}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&needle))
                .and_then(|n| n.parse::<u64>().ok())
        }
    };
    let hup = |pid: u32| {
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };

    std::fs::write(
        rules.path().join("50-broken.yaml"),
        "rules: [ {name: x} ]\n",
    )
    .unwrap();
    hup(served.process.id());
    eventually(10, "a refused reload", || async {
        reloads("failure").await.filter(|n| *n == 1)
    })
    .await;
    let (_, ready) = {
        let r = client.get(format!("{base}/-/ready")).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(
        ready["checks"]["rules"], "7 rules loaded",
        "the last good set stays"
    );

    std::fs::remove_file(rules.path().join("50-broken.yaml")).unwrap();
    hup(served.process.id());
    eventually(10, "a successful reload", || async {
        reloads("success").await.filter(|n| *n == 1)
    })
    .await;
}

/// The table's rows as (id, the whole line), after checking that every cell of every row
/// starts exactly under its column's name.
fn table_rows(text: &str) -> Vec<(i64, String)> {
    assert!(!text.contains('\u{1b}'), "no colours: {text:?}");
    let mut lines = text.lines();
    let header = lines.next().expect("a header");
    let columns = [
        "ID",
        "STATE",
        "PHASE",
        "PRIORITY",
        "ALERT",
        "TARGET",
        "RULE",
        "DELIVERIES",
        "STARTED",
        "ACKED BY",
    ];
    let starts: Vec<usize> = columns
        .iter()
        .map(|c| {
            header
                .find(c)
                .unwrap_or_else(|| panic!("{c} in {header:?}"))
        })
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{header}");
    lines
        .map(|line| {
            for (c, at) in columns.iter().zip(&starts).skip(1) {
                let cell = line.get(at - 2..).unwrap_or("");
                assert!(
                    cell.starts_with("  ") && !cell[2..].starts_with(' '),
                    "{c} starts at column {at}:\n{header}\n{line}"
                );
            }
            let id = line.split_whitespace().next().unwrap().parse().unwrap();
            (id, line.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_asks_the_service_and_prints_a_table_or_json() {
    let token = "cli-api-token";
    let app = spawn_with(Spawn {
        env: vec![
            ("REMEDIATOR_WEBHOOK_TOKEN".into(), TOKEN.into()),
            ("REMEDIATOR_API__TOKEN".into(), token.into()),
        ],
        rules_dir: None,
    })
    .await;
    for f in [
        "postgres-down-firing.json",
        "high-queue-depth-firing.json",
        "disk-space-low-two-alerts-firing.json",
        "postgres-down-resolved.json",
    ] {
        assert_eq!(app.post_hook(fixture(f)).await.status(), 200);
    }
    eventually(20, "four incidents handled", || async {
        let l = app.incidents().await;
        (l.len() == 4 && l.iter().all(|i| i["phase"] != "new")).then_some(())
    })
    .await;
    let listen = app.addr.trim_start_matches("http://").to_string();
    let env = [
        ("REMEDIATOR_API__TOKEN", token),
        ("REMEDIATOR_LISTEN", listen.as_str()),
    ];

    // No --url: the configured listen address; the table, newest first.
    let out = remediator(&["incidents"], &env).await;
    let rows = table_rows(&stdout(&out));
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [4, 3, 2, 1],
        "{rows:#?}"
    );
    let pg = &rows[3].1;
    for cell in [
        "resolved",
        "P1",
        "PostgresDown",
        "service:postgres",
        "postgres-down",
        "2026-11-25 22:07:00 UTC",
    ] {
        assert!(pg.contains(cell), "{cell:?} in {pg:?}");
    }
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One page, and the way to the next on stderr.
    let out = remediator(&["incidents", "--url", &app.addr, "--limit", "2"], &env).await;
    let ids: Vec<i64> = table_rows(&stdout(&out)).iter().map(|r| r.0).collect();
    assert_eq!(ids, [4, 3]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--before 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = remediator(&["incidents", "--limit", "2", "--before", "3"], &env).await;
    let ids: Vec<i64> = table_rows(&stdout(&out)).iter().map(|r| r.0).collect();
    assert_eq!(ids, [2, 1]);
    assert!(out.stderr.is_empty(), "the last page");

    // JSON: the API's page, as is.
    let out = remediator(&["incidents", "-o", "json", "--limit", "3"], &env).await;
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let (_, api) = app.get_json("/api/v1/incidents?limit=3").await;
    assert_eq!(v, api);
    let out = remediator(&["incidents", "--output=json", "--state", "resolved"], &env).await;
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(v["incidents"][0]["alertname"], "PostgresDown");
    assert_eq!(v["next"], Value::Null);

    // Without the token: the service's refusal, and a non-zero exit.
    let out = remediator(&["incidents", "--url", &app.addr], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("api.token"), "{err}");
    // Nothing listening: said so.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let out = remediator(&["incidents", "--url", &nobody], &env).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach remediator at"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_all_pages_past_the_largest_page() {
    let app = spawn_app().await;
    let starts = chrono::Utc::now();
    let alerts: Vec<Value> = (0..1003)
        .map(|i| {
            alert(
                serde_json::json!({"alertname": "Many", "n": i.to_string()}),
                starts,
                "firing",
            )
        })
        .collect();
    for chunk in alerts.chunks(59) {
        assert_eq!(app.post_hook(webhook(chunk)).await.status(), 200);
    }
    let expected: Vec<i64> = app
        .incidents()
        .await
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(expected.len(), 1003);

    let out = remediator(&["incidents", "--url", &app.addr, "--all"], &[]).await;
    let ids: Vec<i64> = table_rows(&stdout(&out)).iter().map(|r| r.0).collect();
    assert_eq!(ids, expected, "every incident once, newest first");
    assert!(out.stderr.is_empty(), "--all leaves no next page");

    let out = remediator(
        &["incidents", "--url", &app.addr, "--all", "-o", "json"],
        &[],
    )
    .await;
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let ids: Vec<i64> = v["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(v["next"], Value::Null);
}

/// A populated store (one an older build wrote, migrated once by a service start).
fn populated_store() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("tests/fixtures/store-v6/remediator.db"),
        data.path().join("remediator.db"),
    )
    .unwrap();
    // simulate reads only the current schema: an older store is refused, not migrated.
    let out = bin()
        .args([
            "simulate",
            "--labels",
            "alertname=PostgresDown",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an un-migrated store is refused"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("start `remediator serve` once to migrate it"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

/// The store's files: the database's name, length and SHA-256, and the write-ahead log's
/// length (a read-only reader of a WAL database may create the empty `-wal` and the `-shm`
/// index beside it; it must write no frame and change no byte of the database).
fn files(dir: &std::path::Path) -> Vec<(String, usize, String)> {
    use sha2::Digest;
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with("-shm"))
        .filter(|p| !(p.to_string_lossy().ends_with("-wal") && p.metadata().unwrap().len() == 0))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                bytes.len(),
                hex::encode(sha2::Sha256::digest(&bytes)),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn simulate_reads_a_populated_store_and_changes_not_one_byte() {
    let data = populated_store();
    // Migrate it the way an upgrade does: the service's store opens it once.
    {
        let store = remediator::store::Store::open(data.path()).unwrap();
        let page = store.list_incidents(None, None, 10).unwrap();
        assert_eq!(page.incidents.len(), 4);
    }
    let before = files(data.path());
    let v = simulate_json("alertname=PostgresDown,service=postgres", data.path());
    assert_eq!(v["simulated"][0]["rule"], "postgres-down");
    assert_eq!(v["simulated"][0]["match"]["guard"], "match");
    assert_eq!(files(data.path()), before, "simulate changed the store");

    let table = bin()
        .args([
            "simulate",
            "--labels",
            "alertname=PostgresDown,service=postgres",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.starts_with(
            "Alert:     {alertname=PostgresDown, service=postgres}\nRule:      postgres-down ("
        ),
        "{text}"
    );
    assert!(text.contains("\n  rate_limit  continue  run "), "{text}");
    assert!(text.contains("\nSteps:\n  1. "), "{text}");
    assert_eq!(files(data.path()), before);
}

#[test]
fn simulate_refuses_a_store_of_a_newer_schema() {
    let data = tempfile::tempdir().unwrap();
    let conn_path = data.path().join("remediator.db");
    std::fs::copy(
        repo().join("tests/fixtures/store-v6/remediator.db"),
        &conn_path,
    )
    .unwrap();
    // The header's user_version field (bytes 60..64), as a newer build would leave it.
    let mut bytes = std::fs::read(&conn_path).unwrap();
    bytes[60..64].copy_from_slice(&99u32.to_be_bytes());
    std::fs::write(&conn_path, bytes).unwrap();
    let out = bin()
        .args([
            "simulate",
            "--labels",
            "alertname=PostgresDown",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has schema version 99, newer than this build knows"),
        "{err}"
    );
}
