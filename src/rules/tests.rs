use std::path::Path;

use super::*;

fn shipped() -> Vec<Source> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push(Source {
                path: PathBuf::from("rules").join(path.file_name().unwrap()),
                text,
            });
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Replaces one rule file of the shipped set and returns every error, as `check` prints them.
fn errors_with(file: &str, text: &str) -> Vec<String> {
    let mut sources = shipped();
    sources.retain(|s| s.path.file_name().unwrap() != file);
    sources.push(Source {
        path: PathBuf::from("rules").join(file),
        text: text.to_string(),
    });
    match compile(&sources) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn the_shipped_rules_compile_and_cover_the_dr_plans_alerts() {
    let set = compile(&shipped()).unwrap_or_else(|e| panic!("{e}"));
    for (alert, rule, rto_min) in [
        ("PostgresDown", "postgres-down", 30),
        ("HighQueueDepth", "high-queue-depth", 30),
        ("BackupFailed", "backup-failed", 24 * 60),
        ("DiskSpaceLow", "disk-space-low", 60),
        ("ServiceDown", "single-service-failure", 15),
    ] {
        let r = set
            .find(&labels(&[("alertname", alert), ("service", "redis")]))
            .unwrap();
        assert_eq!(r.name, rule);
        assert_eq!(r.rto, Duration::from_secs(rto_min * 60), "{rule}");
    }
    assert!(set.find(&labels(&[("alertname", "Watchdog")])).is_none());
    assert_eq!(
        set.escalation.contacts["dba"].email,
        "dba@voiceai-testing.local"
    );
}

#[test]
fn first_matching_rule_wins_in_file_name_then_file_order() {
    let mut sources = shipped();
    sources.push(Source {
        path: "rules/05-first.yaml".into(),
        text: r#"
rules:
  - name: early
    matchers: ['alertname="PostgresDown"', 'env!="staging"']
    priority: P4
    rto: 5m
    owner: oncall
    target: { none: true }
    steps: [ { notify: { message: hi } } ]
  - name: later-in-same-file
    matchers: ['alertname="PostgresDown"']
    priority: P4
    rto: 5m
    owner: oncall
    target: { none: true }
    steps: [ { notify: { message: hi } } ]
"#
        .into(),
    });
    let set = compile(&sources).unwrap();
    assert_eq!(
        set.find(&labels(&[("alertname", "PostgresDown")]))
            .unwrap()
            .name,
        "early"
    );
    let staging = labels(&[("alertname", "PostgresDown"), ("env", "staging")]);
    assert_eq!(set.find(&staging).unwrap().name, "later-in-same-file");
}

#[test]
fn matchers_follow_alertmanager_semantics() {
    let l = labels(&[("alertname", "PostgresDown"), ("severity", "critical")]);
    for (m, want) in [
        (r#"alertname="PostgresDown""#, true),
        (r#"alertname = "PostgresDown""#, true),
        ("alertname=PostgresDown", true),
        (r#"alertname!="PostgresDown""#, false),
        (r#"alertname=~"Postgres.*""#, true),
        (r#"alertname=~"Postgres""#, false), // anchored
        (r#"alertname!~"Redis.*""#, true),
        (r#"team="""#, true), // a missing label is the empty string
        (r#"team!="""#, false),
        (r#"severity=~"critical|warning""#, true),
        (r#"x="a\"b""#, false),
    ] {
        assert_eq!(Matcher::parse(m).unwrap().matches(&l), want, "{m}");
    }
    for bad in [
        r#"="x""#,
        r#"alertname"#,
        r#"alertname=~"(""#,
        r#"a="b"#,
        r#"a=b c"#,
    ] {
        assert!(Matcher::parse(bad).is_err(), "{bad} should not parse");
    }
}

#[test]
fn label_targets_only_accept_allowlisted_plain_names() {
    let set = compile(&shipped()).unwrap();
    let rule = set.get("single-service-failure").unwrap();
    let target =
        |svc: &str| rule.resolve_target(&labels(&[("alertname", "ServiceDown"), ("service", svc)]));
    assert_eq!(target("redis").unwrap(), TargetRef::Service("redis".into()));
    for evil in [
        "postgres",
        "../redis",
        "redis*",
        "",
        "redis/..",
        "other_project-redis",
    ] {
        assert!(target(evil).is_err(), "{evil:?} must be refused");
    }
    assert!(rule
        .resolve_target(&labels(&[("alertname", "ServiceDown")]))
        .is_err());
}

#[test]
fn priority_can_come_from_a_label() {
    let set = compile(&shipped()).unwrap();
    let rule = set.get("single-service-failure").unwrap();
    assert_eq!(
        rule.priority_for(&labels(&[("priority", "P1")])),
        Priority::P1
    );
    assert_eq!(
        rule.priority_for(&labels(&[("priority", "urgent")])),
        Priority::P2
    );
    assert_eq!(rule.priority_for(&labels(&[])), Priority::P2);
}

#[test]
fn every_error_is_reported_at_once_with_file_and_line() {
    let errs = errors_with(
        "50-bad.yaml",
        r#"rules:
  - name: one
    matchers: ['alertname=~"("']
    priority: P9
    rto: 30m
    owner: nobody
    target: { service: "../etc" }
    steps:
      - restart: {}
      - exec: { argv: [] }
  - name: two
    matchers: ['alertname="X"']
    priority: P1
    rto: 30m
    owner: dba
    target: { label: service }
    steps:
      - check_postgres: { dsn: "postgres://u:secret@db/x" }
"#,
    );
    let want = [
        "rules/50-bad.yaml:3: rule \"one\": matcher \"alertname=~\\\"(\\\"\": invalid regular expression",
        "rules/50-bad.yaml:4: rule \"one\": priority \"P9\" is not one of P1, P2, P3, P4",
        "rules/50-bad.yaml:6: rule \"one\": owner \"nobody\" is not a contact in escalation.yaml",
        "rules/50-bad.yaml:7: rule \"one\": target: \"../etc\" is not a plain container or service name",
        "rules/50-bad.yaml:10: rule \"one\": exec: argv must name a program",
        "rules/50-bad.yaml:16: rule \"two\": target label \"service\" needs an `allow` list",
        "rules/50-bad.yaml:18: rule \"two\": check_postgres: the dsn must not hold a password",
    ];
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
    for (got, want) in errs.iter().zip(want) {
        assert!(got.starts_with(want), "got {got:?}\nwant {want:?}");
    }
}

#[test]
fn unknown_keys_and_bad_yaml_are_errors_with_a_line() {
    let typo = errors_with(
        "50-typo.yaml",
        "rules:\n  - name: x\n    matchers: ['a=\"b\"']\n    priority: P1\n    rto: 30m\n    owner: dba\n    target: { none: true }\n    stepz: []\n",
    );
    assert_eq!(typo.len(), 1, "{typo:?}");
    assert!(typo[0].starts_with("rules/50-typo.yaml:8: "), "{typo:?}");
    assert!(typo[0].contains("stepz"), "{typo:?}");

    let unknown_step = errors_with(
        "50-step.yaml",
        "rules:\n  - name: x\n    matchers: ['a=\"b\"']\n    priority: P1\n    rto: 30m\n    owner: dba\n    target: { none: true }\n    steps:\n      - reboot_host: {}\n",
    );
    assert_eq!(unknown_step.len(), 1, "{unknown_step:?}");
    assert!(
        unknown_step[0].starts_with("rules/50-step.yaml:9: "),
        "{unknown_step:?}"
    );
    assert!(unknown_step[0].contains("reboot_host"), "{unknown_step:?}");

    let bad_duration = errors_with(
        "50-dur.yaml",
        "rules:\n  - name: x\n    matchers: ['a=\"b\"']\n    priority: P1\n    rto: soon\n    owner: dba\n    target: { none: true }\n    steps: [ { wait: { duration: 1s } } ]\n",
    );
    assert_eq!(bad_duration.len(), 1, "{bad_duration:?}");
    assert!(
        bad_duration[0].starts_with("rules/50-dur.yaml:5: "),
        "{bad_duration:?}"
    );

    let broken = errors_with("50-broken.yaml", "rules:\n  - name: [unclosed\n");
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].starts_with("rules/50-broken.yaml:"), "{broken:?}");
}

#[test]
fn errors_in_several_files_are_all_reported_and_duplicate_names_are_refused() {
    let mut sources = shipped();
    sources.push(Source {
        path: "rules/60-dup.yaml".into(),
        text: "rules:\n  - name: postgres-down\n    matchers: ['a=\"b\"']\n    priority: P1\n    rto: 1m\n    owner: dba\n    target: { none: true }\n    steps: [ { wait: { duration: 1s } } ]\n".into(),
    });
    sources.push(Source {
        path: "rules/70-empty.yaml".into(),
        text: "rules: []\n".into(),
    });
    let errs = compile(&sources).unwrap_err().to_string();
    assert!(
        errs.contains("rules/60-dup.yaml:2: rule name \"postgres-down\" is used twice"),
        "{errs}"
    );
    assert!(
        errs.contains("rules/70-empty.yaml:1: the file has no rules"),
        "{errs}"
    );
}

#[test]
fn escalation_file_is_required_and_checked() {
    let without: Vec<Source> = shipped()
        .into_iter()
        .filter(|s| s.path.file_name().unwrap() != ESCALATION_FILE)
        .collect();
    let errs = compile(&without).unwrap_err().to_string();
    assert!(errs.contains("rules/escalation.yaml:0: missing"), "{errs}");

    let errs = errors_with(
        ESCALATION_FILE,
        "contacts:\n  oncall: { email: oncall@x }\npolicies:\n  P1: { notify: [ghost] }\n  P2: {}\n  P3: {}\n  P5: {}\n",
    );
    let all = errs.join("\n");
    assert!(
        all.contains("escalation.yaml:4: policy P1.notify: \"ghost\" is not a contact"),
        "{all}"
    );
    assert!(
        all.contains("policy \"P5\": priorities are P1, P2, P3 and P4"),
        "{all}"
    );
    assert!(all.contains("policies: P4 is missing"), "{all}");
}

#[test]
fn tiers_are_timed_by_share_of_rto_or_delay() {
    let set = compile(&shipped()).unwrap();
    let p1 = set.escalation.policy(Priority::P1);
    let rto = Duration::from_secs(30 * 60);
    assert_eq!(p1.tiers[0].after.delay(rto), Duration::from_secs(15 * 60));
    assert_eq!(p1.tiers[1].after.delay(rto), rto);
    assert!(p1.tiers[1].customer_impacting_only);
}
