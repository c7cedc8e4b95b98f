use super::*;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/alertmanager-0.25"
);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture is committed")
}

#[test]
fn a_real_firing_payload_parses_with_zero_time_ends_at_as_none() {
    let n = parse_webhook(&fixture("postgres-down-firing.json")).unwrap();
    assert_eq!(n.status, AlertStatus::Firing);
    assert_eq!(n.receiver, r"remediator\.hook");
    assert_eq!(n.alerts.len(), 1);
    let a = &n.alerts[0];
    assert_eq!(a.name(), "PostgresDown");
    assert_eq!(a.fingerprint.as_str(), "1e48178e9e293490");
    assert_eq!(a.ends_at, None);
    assert_eq!(a.starts_at.to_rfc3339(), "2026-11-25T22:07:00.591565+00:00");
}

#[test]
fn a_resolved_payload_keeps_the_same_identity_and_an_end_time() {
    let firing = parse_webhook(&fixture("postgres-down-firing.json")).unwrap();
    let resolved = parse_webhook(&fixture("postgres-down-resolved.json")).unwrap();
    let (f, r) = (&firing.alerts[0], &resolved.alerts[0]);
    assert_eq!(r.status, AlertStatus::Resolved);
    assert_eq!((&f.fingerprint, f.starts_at), (&r.fingerprint, r.starts_at));
    assert!(r.ends_at.unwrap() > r.starts_at);
}

#[test]
fn our_fingerprint_matches_alertmanagers_for_every_captured_alert() {
    for name in [
        "postgres-down-firing.json",
        "high-queue-depth-firing.json",
        "disk-space-low-two-alerts-firing.json",
    ] {
        let msg: WebhookMessage = serde_json::from_slice(&fixture(name)).unwrap();
        for a in msg.alerts {
            let sent = a.fingerprint.clone().unwrap();
            assert_eq!(Fingerprint::of_labels(&a.labels).as_str(), sent, "{name}");
        }
    }
}

#[test]
fn fields_from_newer_alertmanagers_and_unknown_fields_are_accepted() {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture("high-queue-depth-firing.json")).unwrap();
    v["notification_reason"] = "first notification".into();
    v["routeLabels"] = serde_json::json!({"team": "infra"});
    v["somethingFromTheFuture"] = serde_json::json!([1, 2]);
    v["alerts"][0]["startsAt"] = "2026-11-25T22:07:00.5+08:00".into();
    let n = parse_webhook(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(
        n.alerts[0].starts_at.to_rfc3339(),
        "2026-11-25T14:07:00.500+00:00"
    );
}

#[test]
fn a_missing_fingerprint_is_computed_from_the_labels() {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture("postgres-down-firing.json")).unwrap();
    v["alerts"][0]
        .as_object_mut()
        .unwrap()
        .remove("fingerprint");
    let n = parse_webhook(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(n.alerts[0].fingerprint.as_str(), "1e48178e9e293490");
}

#[test]
fn bad_bodies_are_refused_with_the_field_named() {
    let cases: &[(&str, &str)] = &[
        ("{", "EOF"),
        ("[]", "expected struct WebhookMessage"),
        (
            r#"{"version":"3","status":"firing","alerts":[]}"#,
            "unsupported payload version \"3\"",
        ),
        (
            r#"{"version":"4","status":"firing"}"#,
            "missing field `alerts`",
        ),
        (
            r#"{"version":"4","status":"burning","alerts":[]}"#,
            "status: unknown variant `burning`",
        ),
        (
            r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"yesterday"}]}"#,
            "alerts[0].startsAt",
        ),
        (
            r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{},"startsAt":"2026-01-01T00:00:00Z"}]}"#,
            "alerts[0]: alert has no labels",
        ),
        (
            r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"a":"b"},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"../../etc"}]}"#,
            "is not a hexadecimal string",
        ),
    ];
    for (body, expect) in cases {
        let err = parse_webhook(body.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains(expect),
            "{body}: got {err:?}, want it to contain {expect:?}"
        );
    }
}
