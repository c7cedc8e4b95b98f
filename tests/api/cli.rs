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
        "rules: OK, 5 rules, 6 contacts"
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
        format!("{d}/a.yaml:4:5: rule `a`: unknown key `prioritty` (expected one of: name, description, matchers, priority, priority_label, rto, owner, customer_impacting, target, limit, dry_run, steps, on_failure)"),
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
    want.push(format!("{d}/b.yaml:3:5: rule `b`: unknown key `unknown` (expected one of: name, description, matchers, priority, priority_label, rto, owner, customer_impacting, target, limit, dry_run, steps, on_failure)"));
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

#[test]
fn simulate_shows_the_rule_every_guard_and_the_plan_without_side_effects() {
    let data = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "simulate",
            "-o",
            "json",
            "--labels",
            "alertname=ServiceDown,service=redis",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
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
    let rules = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(repo().join("rules")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, rules.path().join(p.file_name().unwrap())).unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = bin()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data.path())
        .arg("--rules")
        .arg(rules.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
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
    eventually(20, "service up", || async {
        client
            .get(format!("{base}/-/ready"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    std::fs::write(
        rules.path().join("50-broken.yaml"),
        "rules: [ {name: x} ]\n",
    )
    .unwrap();
    hup(child.id());
    eventually(10, "a refused reload", || async {
        reloads("failure").await.filter(|n| *n == 1)
    })
    .await;
    let (_, ready) = {
        let r = client.get(format!("{base}/-/ready")).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(
        ready["checks"]["rules"], "5 rules loaded",
        "the last good set stays"
    );

    std::fs::remove_file(rules.path().join("50-broken.yaml")).unwrap();
    hup(child.id());
    eventually(10, "a successful reload", || async {
        reloads("success").await.filter(|n| *n == 1)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}
