//! Maintenance windows, as an engineer uses them: written in the rule directory, checked by
//! `remediator check`, tried with `simulate --at`, and respected by the running service
//! (the incident opens and is told; only its runbook is skipped, with the window's name).

use std::process::Command;

use serde_json::{json, Value};

use crate::emulators::*;
use crate::helpers::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_remediator"));
    c.current_dir(repo());
    c
}

/// Two rules that act on nothing but the thread: one inside a window that covers all the
/// time, one whose window is long past.
const RULES: &str = r#"rules:
  - name: in-maintenance
    matchers: ['alertname="InMaintenance"']
    priority: P3
    rto: 1h
    owner: backend
    target: { none: true }
    steps: [ { notify: { message: "runbook ran" } } ]
  - name: after-maintenance
    matchers: ['alertname="AfterMaintenance"']
    priority: P3
    rto: 1h
    owner: backend
    target: { none: true }
    steps: [ { notify: { message: "runbook ran" } } ]
"#;

const WINDOWS: &str = r#"# Planned work, in Alertmanager's time_intervals syntax.
maintenance_windows:
  - name: all-day-every-day
    rules: [in-maintenance]
    time_intervals:
      - times: [ { start_time: "00:00", end_time: "24:00" } ]
  - name: the-2020-upgrade
    rules: [after-maintenance]
    time_intervals:
      - years: ["2020"]
        location: Europe/Berlin
"#;

fn windows_dir() -> tempfile::TempDir {
    rule_dir(&[("10-rules.yaml", RULES), ("maintenance.yaml", WINDOWS)])
}

fn guard<'a>(detail: &'a Value, name: &str) -> &'a Value {
    detail["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["guard"] == name)
        .unwrap_or_else(|| panic!("no {name} decision in {detail:#}"))
}

#[tokio::test]
async fn inside_a_window_the_incident_is_told_and_its_runbook_skipped_outside_it_runs() {
    let rules = windows_dir();
    let slack = SlackEmulator::start().await;
    let app = spawn_with(Spawn {
        env: vec![
            ("REMEDIATOR_WEBHOOK_TOKEN".into(), TOKEN.into()),
            ("REMEDIATOR_API__TOKEN".into(), "windows-api-token".into()),
            ("REMEDIATOR_SLACK__API_URL".into(), slack.url()),
            ("REMEDIATOR_SLACK__BOT_TOKEN".into(), SLACK_TOKEN.into()),
            ("REMEDIATOR_SLACK__CHANNEL".into(), SLACK_CHANNEL.into()),
        ],
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await;
    let (_, ready) = app.get_json("/-/ready").await;
    assert_eq!(
        ready["checks"]["maintenance_windows"],
        json!({"loaded": 2, "in_force": ["all-day-every-day"]})
    );

    assert_eq!(
        app.post_hook(fire(json!({"alertname": "InMaintenance"})))
            .await
            .status(),
        200
    );
    let held = app.finished("InMaintenance", 20).await;
    assert_eq!(held["state"], "open", "the incident opens");
    assert_eq!(held["phase"], "skipped", "{held:#}");
    let window = guard(&held, "window");
    assert_eq!(window["verdict"], "skip");
    assert_eq!(
        window["reason"], "inside maintenance window all-day-every-day",
        "{held:#}"
    );
    assert!(
        held["steps"].as_array().unwrap().is_empty(),
        "no step ran: {held:#}"
    );
    assert!(
        !held["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["guard"] == "page"),
        "a window pages nobody: {held:#}"
    );

    assert_eq!(
        app.post_hook(fire(json!({"alertname": "AfterMaintenance"})))
            .await
            .status(),
        200
    );
    let ran = app.finished("AfterMaintenance", 20).await;
    let window = guard(&ran, "window");
    assert_eq!(
        (window["verdict"].as_str(), window["reason"].as_str()),
        (Some("continue"), Some("no maintenance window in force"))
    );
    assert_eq!(
        step_outcomes(&ran)
            .iter()
            .map(|(_, kind, _)| kind.as_str())
            .collect::<Vec<_>>(),
        ["notify"],
        "{ran:#}"
    );

    // Told: the held incident has its root in the channel, and its thread says why nothing
    // was done, with the window's name.
    let root = eventually(20, "the held incident's Slack root", || async {
        slack
            .messages()
            .into_iter()
            .find(|m| m.thread_ts.is_none() && m.text.contains("InMaintenance"))
            .map(|m| m.ts)
    })
    .await;
    eventually(20, "the window's reason in the thread", || async {
        slack
            .thread(&root)
            .iter()
            .any(|m| {
                m.text
                    .contains("inside maintenance window all-day-every-day")
            })
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_reload_with_a_bad_window_is_refused_and_the_windows_in_force_stay() {
    let rules = windows_dir();
    let app = spawn_with(Spawn {
        env: vec![("REMEDIATOR_WEBHOOK_TOKEN".into(), TOKEN.into())],
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await;
    std::fs::write(
        rules.path().join("maintenance.yaml"),
        "maintenance_windows:\n  - name: typo\n    rules: [in-maintenanse]\n    time_intervals: [ { location: Mars/Base } ]\n",
    )
    .unwrap();
    let r = app
        .client
        .post(format!("{}/-/reload", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    let file = rules.path().join("maintenance.yaml");
    for want in [
        format!("{}:3:13: maintenance window `typo`: rules `in-maintenanse` is not a rule in this directory (known: after-maintenance, in-maintenance)", file.display()),
        format!("{}:4:35: maintenance window `typo`: time_intervals.location `Mars/Base` is not a time zone of the IANA database, such as Europe/Berlin or UTC", file.display()),
    ] {
        assert!(detail.contains(&want), "{want}\nin\n{detail}");
    }
    let (_, ready) = app.get_json("/-/ready").await;
    assert_eq!(ready["checks"]["maintenance_windows"]["loaded"], 2);

    // The set in force still holds the old windows back.
    app.post_hook(fire(json!({"alertname": "InMaintenance"})))
        .await;
    let held = app.finished("InMaintenance", 20).await;
    assert_eq!(guard(&held, "window")["verdict"], "skip");
}

#[test]
fn check_prints_each_window_problem_with_file_and_line_and_counts_good_ones() {
    let good = windows_dir();
    let out = bin().arg("check").arg(good.path()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "{}: OK, 2 rules, 6 contacts, 2 maintenance windows",
            good.path().display()
        )
    );

    let bad = rule_dir(&[
        ("10-rules.yaml", RULES),
        (
            "maintenance.yaml",
            r#"maintenance_windows:
  - name: night-work
    services: [postgres]
    time_intervals:
      - times: [ { start_time: "22:00", end_time: "06:00" } ]
        weekdays: [saturday:sunday]
        location: Europe/Paris
  - name: empty
    rules: [in-maintenance]
    time_intervals: []
"#,
        ),
    ]);
    let out = bin().arg("check").arg(bad.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let f = bad.path().join("maintenance.yaml");
    let f = f.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().collect::<Vec<_>>(),
        [
            format!("{f}:3:16: maintenance window `night-work`: services `postgres` is not a service any rule acts on (no rule acts on a service)"),
            format!("{f}:5:51: maintenance window `night-work`: time_intervals.times: end_time `06:00` is not after start_time `22:00`; a range ends on the day it starts: split one that crosses midnight in two, one ending at 24:00 and one starting at 00:00"),
            format!("{f}:6:20: maintenance window `night-work`: time_intervals.weekdays `saturday:sunday` ends before it starts; a range does not wrap around the week: write `saturday` and `sunday`"),
            format!("{f}:10:21: maintenance window `empty`: time_intervals is empty, so the window would never be in force; list at least one interval ({{}} is all the time)"),
            "4 errors in 1 file; nothing was loaded".to_string(),
        ]
    );
}

/// `simulate -o json --at AT --labels LABELS --rules DIR`, which must succeed, as JSON.
fn simulate_at(at: &str, labels: &str, rules: &std::path::Path) -> Value {
    let data = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["simulate", "-o", "json", "--at", at, "--labels", labels])
        .arg("--rules")
        .arg(rules)
        .arg("--data-dir")
        .arg(data.path())
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
fn simulate_at_a_time_judges_the_windows_then() {
    let rules = rule_dir(&[
        ("10-rules.yaml", RULES),
        (
            "maintenance.yaml",
            r#"maintenance_windows:
  - name: saturday-night
    rules: [in-maintenance]
    time_intervals:
      - weekdays: [saturday]
        times: [ { start_time: "02:00", end_time: "04:00" } ]
        location: Europe/Berlin
"#,
        ),
    ]);
    let window = |v: &Value| {
        let s = &v["simulated"][0];
        let d = s["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["guard"] == "window")
            .unwrap()
            .clone();
        (
            d["verdict"].as_str().unwrap().to_string(),
            d["reason"].as_str().unwrap().to_string(),
            s["plan"].as_str().unwrap().to_string(),
        )
    };
    // Saturday 5 December 2026, 02:30 in Berlin (CET, UTC+1).
    let inside = simulate_at(
        "2026-12-05T02:30:00+01:00",
        "alertname=InMaintenance",
        rules.path(),
    );
    assert_eq!(
        window(&inside),
        (
            "skip".into(),
            "inside maintenance window saturday-night (until 03:00 UTC)".into(),
            "would not act: inside maintenance window saturday-night (until 03:00 UTC)".into()
        )
    );
    let after = simulate_at(
        "2026-12-05T03:00:00Z",
        "alertname=InMaintenance",
        rules.path(),
    );
    assert_eq!(window(&after).0, "continue");
    assert!(
        window(&after).2.starts_with("would run 1 step(s)"),
        "{after:#}"
    );

    let out = bin()
        .args(["simulate", "--at", "tomorrow", "--labels", "alertname=X"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("write an RFC 3339 time with its offset, e.g. 2026-12-05T02:30:00Z"),
        "{err}"
    );
}
