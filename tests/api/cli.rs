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

#[test]
fn check_prints_every_error_with_file_and_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("rules/escalation.yaml"),
        dir.path().join("escalation.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("a.yaml"), "rules:\n  - name: a\n    matchers: ['x=\"1\"']\n    priority: P7\n    rto: 1m\n    owner: nobody\n    target: { none: true }\n    steps: [ { wait: { duration: 1s } } ]\n").unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "rules:\n  - name: b\n    unknown: 1\n",
    )
    .unwrap();
    let out = bin().arg("check").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let d = dir.path().display();
    assert!(
        err.contains(&format!(
            "{d}/a.yaml:4: rule \"a\": priority \"P7\" is not one of P1, P2, P3, P4"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{d}/a.yaml:6: rule \"a\": owner \"nobody\" is not a contact"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{d}/b.yaml:3: ")), "{err}");
    assert!(err.contains("3 error(s); nothing was loaded"), "{err}");
}

#[test]
fn simulate_shows_the_rule_every_guard_and_the_plan_without_side_effects() {
    let data = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "simulate",
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
            "--alert",
            "tests/fixtures/alertmanager-0.25/disk-space-low-two-alerts-firing.json",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["simulated"].as_array().unwrap().len(), 2);
    assert_eq!(v["simulated"][0]["rule"], "disk-space-low");
}
