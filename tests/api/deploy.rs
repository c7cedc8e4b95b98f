//! deploy/ is validated with the tools Alertmanager and Prometheus ship.

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
fn promtool_accepts_the_alerting_rules_and_their_unit_tests() {
    let promtool = || tool("REMEDIATOR_TEST_PROMTOOL_BIN", "promtool");
    let out = run(
        promtool(),
        &["check", "rules", "deploy/prometheus-rules.yml"],
    );
    assert!(out.contains("SUCCESS: 4 rules found"), "{out}");
    run(
        promtool(),
        &["test", "rules", "deploy/prometheus-rules.test.yml"],
    );
}
