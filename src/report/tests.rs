use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::domain::Contact;

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 22, 7, 0).unwrap() + chrono::Duration::milliseconds(secs)
}

/// PostgresDown on postgres: fired at 22:07:00, recovered by its runbook, acknowledged by a
/// person, resolved 12 minutes after it fired. Times are in milliseconds since it fired.
fn incident(state: IncidentState) -> IncidentRecord {
    let resolved = state == IncidentState::Resolved;
    IncidentRecord {
        id: 12,
        fingerprint: "0123456789abcdef".into(),
        alertname: "PostgresDown".into(),
        state,
        phase: Phase::Recovered,
        starts_at: at(0),
        ends_at: resolved.then(|| at(720_000)),
        resolved_at: resolved.then(|| at(721_000)),
        first_seen: at(1_200),
        last_seen: at(60_000),
        deliveries: 3,
        rule: Some("postgres-down".into()),
        priority: Some(Priority::P1),
        target: Some("service:postgres".into()),
        time_to_recover_seconds: resolved.then_some(720.0),
        rto: Some(Duration::from_secs(1800)),
        told: vec![],
        group_key: "{}:{}".into(),
        labels: [
            ("alertname".to_string(), "PostgresDown".to_string()),
            ("service".to_string(), "postgres".to_string()),
            (
                "note".to_string(),
                "<script>alert(1)</script> | *x*".to_string(),
            ),
        ]
        .into(),
        annotations: Default::default(),
        acked_by: Some("alice".into()),
        acked_at: Some(at(30_000)),
        acked_slack_user: None,
        silenced: None,
        paused: None,
        owner: Some(Contact::unknown("dba")),
        generator_url: None,
        external_url: None,
        slack_channel: None,
        slack_ts: None,
        last_delivery: None,
        rto_met: resolved.then_some(true),
        origin: crate::domain::Origin::Alertmanager,
        started: None,
    }
}

fn decision(ms: i64, guard: DecisionKind, verdict: Verdict, reason: &str) -> DecisionRecord {
    DecisionRecord {
        at: at(ms),
        guard,
        verdict,
        reason: reason.into(),
    }
}

fn step(
    id: i64,
    seq: i64,
    kind: &str,
    from: i64,
    to: Option<i64>,
    outcome: StepOutcome,
) -> StepRecord {
    StepRecord {
        id,
        phase: RunPhase::Main,
        seq,
        kind: kind.into(),
        started_at: at(from),
        ended_at: to.map(at),
        outcome,
        detail: format!("{kind} done"),
    }
}

fn decisions() -> Vec<DecisionRecord> {
    vec![
        decision(
            1_300,
            DecisionKind::Match,
            Verdict::Continue,
            "rule postgres-down matched",
        ),
        decision(
            1_310,
            DecisionKind::RateLimit,
            Verdict::Continue,
            "1 of 2 runs in the last hour",
        ),
        decision(
            30_000,
            DecisionKind::Ack,
            Verdict::Continue,
            "acknowledged by alice",
        ),
        decision(
            40_000,
            DecisionKind::Button,
            Verdict::Continue,
            "silenced 1h by bob in Alertmanager",
        ),
    ]
}

fn steps() -> Vec<StepRecord> {
    vec![
        step(1, 0, "diagnose", 1_400, Some(2_000), StepOutcome::Ok),
        step(2, 1, "restart", 2_000, Some(9_500), StepOutcome::Ok),
        step(3, 2, "wait_healthy", 9_500, Some(15_000), StepOutcome::Ok),
    ]
}

fn run() -> RunSummary {
    RunSummary {
        rule: "postgres-down".into(),
        target: "service:postgres".into(),
        started_at: at(1_350),
        ended_at: Some(at(15_000)),
        outcome: Some(RunOutcome::Recovered),
    }
}

fn timeline(state: IncidentState, now: DateTime<Utc>) -> Timeline {
    let (inc, d, s, r) = (incident(state), decisions(), steps(), run());
    Timeline::build(
        &Record {
            incident: &inc,
            decisions: &d,
            steps: &s,
            run: Some(&r),
            approvals: &[],
        },
        now,
    )
}

#[test]
fn the_timeline_runs_from_fired_to_resolved_in_time_order() {
    let t = timeline(IncidentState::Resolved, at(900_000));
    let kinds: Vec<EventKind> = t.events.iter().map(|e| e.kind).collect();
    use EventKind::*;
    assert_eq!(
        kinds,
        [Fired, Received, Decision, Decision, Step, Step, Step, RunEnded, Ack, Button, Resolved]
    );
    assert!(t.events.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(t.events[1].offset_seconds, 1.2);
    assert_eq!(t.steps.len(), 3);
    assert_eq!(t.steps[1].kind, "restart");
    assert_eq!(t.steps[1].start_seconds, 2.0);
    assert_eq!(t.steps[1].duration_seconds, 7.5);
    assert_eq!(t.recovery.verdict, RtoVerdict::Within);
    assert_eq!(t.recovery.text, "12m (within the RTO of 30m)");
    assert_eq!(t.recovery.runbook_seconds, Some(13.65));
    assert_eq!(t.span_seconds(), 1800.0, "the axis reaches the RTO line");
}

#[test]
fn people_are_acknowledgements_buttons_approvals_and_pauses() {
    let mut d = decisions();
    d.push(decision(
        50_000,
        DecisionKind::Pause,
        Verdict::Skip,
        "paused by carol: deploy",
    ));
    d.push(decision(
        50_100,
        DecisionKind::Pause,
        Verdict::Continue,
        "no pause",
    ));
    let (inc, s) = (incident(IncidentState::Open), steps());
    let t = Timeline::build(
        &Record {
            incident: &inc,
            decisions: &d,
            steps: &s,
            run: None,
            approvals: &[],
        },
        at(60_000),
    );
    let people: Vec<&str> = t.by(Actor::People).map(|e| e.detail.as_str()).collect();
    assert_eq!(
        people,
        [
            "acknowledged by alice",
            "silenced 1h by bob in Alertmanager",
            "paused by carol: deploy"
        ]
    );
    assert!(t.by(Actor::Automation).any(|e| e.detail == "no pause"));
}

#[test]
fn an_open_incident_counts_against_the_rto_until_now() {
    let t = timeline(IncidentState::Open, at(600_000));
    assert_eq!(t.recovery.verdict, RtoVerdict::Open);
    assert_eq!(
        t.recovery.text,
        "still firing after 10m (20m left of the RTO of 30m)"
    );
    assert_eq!(t.recovery.open_for_seconds, Some(600.0));
    assert!(t.events.iter().all(|e| e.kind != EventKind::Resolved));
    let late = timeline(IncidentState::Open, at(2_000_000));
    assert_eq!(late.recovery.verdict, RtoVerdict::OpenMissed);
    assert_eq!(
        late.recovery.text,
        "still firing after 33m 20s (RTO of 30m missed)"
    );
}

#[test]
fn a_running_step_lasts_until_now_and_an_ack_without_a_decision_still_shows() {
    let mut s = steps();
    s.push(step(4, 3, "exec", 15_000, None, StepOutcome::Running));
    let mut inc = incident(IncidentState::Open);
    inc.acked_by = Some("dave".into());
    let t = Timeline::build(
        &Record {
            incident: &inc,
            decisions: &[],
            steps: &s,
            run: None,
            approvals: &[],
        },
        at(20_000),
    );
    assert_eq!(t.steps[3].duration_seconds, 5.0);
    assert_eq!(t.steps[3].outcome, StepOutcome::Running);
    let ack = t.by(Actor::People).next().expect("the acknowledgement");
    assert_eq!(ack.what, "acknowledged by dave");
}

#[test]
fn the_timeline_reads_back_from_its_json() {
    let t = timeline(IncidentState::Resolved, at(900_000));
    let json = serde_json::to_string(&t).unwrap();
    let back: Timeline = serde_json::from_str(&json).unwrap();
    assert_eq!(back, t);
}

#[test]
fn markdown_escapes_what_would_be_markup() {
    assert_eq!(
        markdown::text("<script>alert(1)</script> | *x*\nnext"),
        "\\<script\\>alert(1)\\</script\\> \\| \\*x\\* next"
    );
}

/// The post-mortem's Markdown, compared with `testdata/postmortem.md` (regenerate with
/// `UPDATE_GOLDEN=1 cargo test --lib report`).
#[test]
fn the_postmortem_markdown_matches_its_golden_file() {
    let mut d = decisions();
    d.push(decision(
        41_000,
        DecisionKind::Page,
        Verdict::Continue,
        "paging oncall, dba: restart did not help",
    ));
    let (inc, s, r) = (incident(IncidentState::Resolved), steps(), run());
    let t = Timeline::build(
        &Record {
            incident: &inc,
            decisions: &d,
            steps: &s,
            run: Some(&r),
            approvals: &[],
        },
        at(900_000),
    );
    let got = markdown::render(&t);
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/report/testdata/postmortem.md");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(got, want);
}

#[test]
fn approvals_show_who_answered_what_and_when_and_a_timeout_is_automation() {
    let ask = |seq: usize, decided: Option<crate::domain::Decided>| Approval {
        phase: RunPhase::Fallback,
        seq,
        who: "dba".into(),
        prompt: "Restore which backup?".into(),
        choices: vec!["b2.sql.gz".into(), "b1.sql.gz".into()],
        asked_at: at(20),
        deadline: at(1_220),
        decided,
    };
    let approvals = [
        ask(
            2,
            Some(crate::domain::Decided {
                verdict: ApprovalVerdict::Approved,
                by: "alice".into(),
                slack_user: None,
                choice: Some("b1.sql.gz".into()),
                at: at(80),
            }),
        ),
        ask(
            5,
            Some(crate::domain::Decided {
                verdict: ApprovalVerdict::TimedOut,
                by: String::new(),
                slack_user: None,
                choice: None,
                at: at(1_220),
            }),
        ),
    ];
    let mut d = decisions();
    d.push(decision(
        80_000,
        DecisionKind::Approval,
        Verdict::Continue,
        "Approved by alice (b1.sql.gz)",
    ));
    let (inc, s) = (incident(IncidentState::Open), steps());
    let t = Timeline::build(
        &Record {
            incident: &inc,
            decisions: &d,
            steps: &s,
            run: None,
            approvals: &approvals,
        },
        at(2_000),
    );
    let approval: Vec<(Actor, &str, DateTime<Utc>)> = t
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Approval)
        .map(|e| (e.actor, e.what.as_str(), e.at))
        .collect();
    assert_eq!(
        approval,
        [
            (Actor::Automation, "approval asked of dba", at(20)),
            (Actor::Automation, "approval asked of dba", at(20)),
            (Actor::People, "approved by alice: b1.sql.gz", at(80)),
            (Actor::Automation, "approval timed out", at(1_220)),
        ],
        "one event per answer; the decision is not repeated"
    );
    let asked = t
        .events
        .iter()
        .find(|e| e.kind == EventKind::Approval)
        .unwrap();
    assert!(
        asked.detail.contains("choices: b2.sql.gz, b1.sql.gz"),
        "{}",
        asked.detail
    );
    let md = super::markdown::render(&t);
    assert!(md.contains("approved by alice: b1.sql.gz"), "{md}");
}
