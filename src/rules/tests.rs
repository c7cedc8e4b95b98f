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
pub(super) fn errors_with(file: &str, text: &str) -> Vec<String> {
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
    assert_eq!(
        errs,
        [
            r#"rules/50-bad.yaml:3:16: rule `one`: matcher `alertname=~"("`: invalid regular expression: unclosed group"#,
            "rules/50-bad.yaml:4:15: rule `one`: priority `P9` is not one of P1, P2, P3, P4",
            "rules/50-bad.yaml:6:12: rule `one`: owner `nobody` is not a contact in escalation.yaml (known: backend, dba, eng-lead, infra, oncall, product-owner)",
            "rules/50-bad.yaml:7:24: rule `one`: target.service `../etc` is not a plain container or service name (letters, digits, '_', '.', '-'; starting with a letter or digit)",
            "rules/50-bad.yaml:10:23: rule `one`: exec.argv must name a program, e.g. [pg_isready, -q]",
            "rules/50-bad.yaml:16:15: rule `two`: target.label `service` needs an `allow` list of the services it may name",
            "rules/50-bad.yaml:18:32: rule `two`: check_postgres.dsn must not hold a password (rule files are not secret); name an environment variable in password_env",
        ]
    );
}

#[test]
fn unknown_keys_and_bad_yaml_are_errors_with_a_line() {
    let typo = errors_with(
        "50-typo.yaml",
        "rules:\n  - name: x\n    matchers: ['a=\"b\"']\n    priority: P1\n    rto: 30m\n    owner: dba\n    target: { none: true }\n    stepz: []\n",
    );
    assert_eq!(
        typo,
        [
            "rules/50-typo.yaml:2:5: rule `x`: missing key `steps` (e.g. steps: [ { diagnose: {} } ])",
            "rules/50-typo.yaml:8:5: rule `x`: unknown key `stepz` (expected one of: name, description, matchers, priority, priority_label, rto, owner, customer_impacting, target, limit, dry_run, steps, on_failure, fallback)",
        ]
    );

    let unknown_step = errors_with(
        "50-step.yaml",
        "rules:\n  - name: x\n    matchers: ['a=\"b\"']\n    priority: P1\n    rto: 30m\n    owner: dba\n    target: { none: true }\n    steps:\n      - reboot_host: {}\n",
    );
    assert_eq!(
        unknown_step,
        ["rules/50-step.yaml:9:9: rule `x`: unknown step `reboot_host` (expected one of: diagnose, logs, restart, recreate, stop, start, exec, wait_healthy, check_http, check_postgres, check_redis, wait, notify, page, remove, up, approve)"]
    );

    let bad_duration = errors_with(
        "50-dur.yaml",
        "rules:\n  - name: x\n    matchers: ['a=\"b\"']\n    priority: P1\n    rto: soon\n    owner: dba\n    target: { none: true }\n    steps: [ { wait: { duration: 1s } } ]\n",
    );
    assert_eq!(
        bad_duration,
        ["rules/50-dur.yaml:5:10: rule `x`: rto `soon` is not a duration such as 30s, 2m or 1h"]
    );

    let broken = errors_with("50-broken.yaml", "rules:\n  - name: [unclosed\n");
    assert_eq!(
        broken,
        ["rules/50-broken.yaml:2:11: invalid YAML: unclosed bracket '['"]
    );
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
    let errs: Vec<String> = compile(&sources)
        .unwrap_err()
        .0
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        errs,
        [
            "rules/60-dup.yaml:2:11: rule `postgres-down`: the name is already used by the rule at rules/10-postgres.yaml:5:11; rule names must be unique",
            "rules/70-empty.yaml:1:8: the file has no rules; add a `rules:` list or remove the file",
        ]
    );
}

#[test]
fn escalation_file_is_required_and_checked() {
    let without: Vec<Source> = shipped()
        .into_iter()
        .filter(|s| s.path.file_name().unwrap() != ESCALATION_FILE)
        .collect();
    let errs = compile(&without).unwrap_err().to_string();
    assert_eq!(
        errs,
        "rules/escalation.yaml: missing: the contacts and escalation policies live here; copy the one shipped in rules/"
    );

    let errs = errors_with(
        ESCALATION_FILE,
        "contacts:\n  oncall: { email: oncall@x }\npolicies:\n  P1: { notify: [ghost] }\n  P2: {}\n  P3: {}\n  P5: {}\n",
    );
    // The shipped rules' owners (dba, infra, ...) are not among these contacts either.
    let own: Vec<&String> = errs
        .iter()
        .filter(|e| e.starts_with("rules/escalation.yaml"))
        .collect();
    assert_eq!(
        own,
        [
            "rules/escalation.yaml:4:3: missing key `policies.P4` (every priority needs a policy)",
            "rules/escalation.yaml:4:18: policies.P1.notify `ghost` is not a contact (known: oncall)",
            "rules/escalation.yaml:7:3: unknown policy `P5` (the priorities are P1, P2, P3, P4)",
        ]
    );
    assert!(
        errs.iter().any(|e| e.starts_with(
            "rules/10-postgres.yaml:10:12: rule `postgres-down`: owner `dba` is not a contact in escalation.yaml (known: oncall)"
        )),
        "{errs:#?}"
    );
}

/// The rule directories under `testdata/`, one per case, and every error `check` prints for
/// each, in order (paths relative to `testdata/`). Each directory can be checked by hand:
/// `remediator check src/rules/testdata/combined`.
const CASES: &[(&str, &[&str])] = &[
    (
        "bad-duration",
        &[
            "bad-duration/rules.yaml:5:10: rule `durations`: rto `soon` is not a duration such as 30s, 2m or 1h",
            "bad-duration/rules.yaml:8:28: rule `durations`: limit.per `0s` must be longer than zero",
            "bad-duration/rules.yaml:10:27: rule `durations`: wait.duration `5` is not a duration such as 30s, 2m or 1h (a number needs a unit: 5s, 5m, 5h)",
            "bad-duration/rules.yaml:11:45: rule `durations`: restart.timeout `3 fortnights` is not a duration such as 30s, 2m or 1h (unknown unit `fortnights`)",
            "bad-duration/rules.yaml:12:33: rule `durations`: wait_healthy.within must be a duration such as 30s, 2m or 1h, not a list",
        ],
    ),
    (
        "bad-matcher",
        &[
            r#"bad-matcher/rules.yaml:4:9: rule `matchers`: matcher `alertname=~"("`: invalid regular expression: unclosed group"#,
            "bad-matcher/rules.yaml:5:9: rule `matchers`: matcher `alertname` needs one of the operators =, !=, =~, !~ after `alertname`",
            r#"bad-matcher/rules.yaml:6:9: rule `matchers`: matcher `="x"` must start with a label name, as in alertname="PostgresDown""#,
            "bad-matcher/rules.yaml:7:9: rule `matchers`: matcher `env=prod staging`: value `prod staging` must be double-quoted",
            r#"bad-matcher/rules.yaml:8:9: rule `matchers`: matcher `job="a" b`: unexpected text after the closing quote: ` b`"#,
            r#"bad-matcher/rules.yaml:16:15: rule `not-a-list`: matchers must be a list, not `alertname="X"`"#,
            r#"bad-matcher/rules.yaml:23:15: rule `empty-list`: matchers must have at least one matcher, e.g. 'alertname="PostgresDown"'"#,
        ],
    ),
    (
        "bad-priority",
        &[
            "bad-priority/rules.yaml:4:15: rule `p9`: priority `P9` is not one of P1, P2, P3, P4",
            "bad-priority/rules.yaml:11:15: rule `number`: priority `1` is not one of P1, P2, P3, P4",
            "bad-priority/rules.yaml:18:15: rule `list`: priority must be a string, not a list",
        ],
    ),
    (
        "bad-remove-up",
        &[
            "bad-remove-up/rules.yaml:9:17: rule `remove-and-up`: missing key `remove.services` (e.g. services: [backend, celery-worker])",
            "bad-remove-up/rules.yaml:10:48: rule `remove-and-up`: remove.volumes `../data` is not a plain volume name (letters, digits, '_', '.', '-'; starting with a letter or digit): name it as the compose file's `volumes:` does, e.g. redis-data",
            "bad-remove-up/rules.yaml:10:57: rule `remove-and-up`: remove.volumes `redis data` is not a plain volume name (letters, digits, '_', '.', '-'; starting with a letter or digit): name it as the compose file's `volumes:` does, e.g. redis-data",
            "bad-remove-up/rules.yaml:10:79: rule `remove-and-up`: remove.grace `soon` is not a duration such as 30s, 2m or 1h",
            "bad-remove-up/rules.yaml:11:29: rule `remove-and-up`: remove.services must be a list, not `redis`",
            "bad-remove-up/rules.yaml:11:45: rule `remove-and-up`: remove.volumes must be a list, not `redis-data`",
            "bad-remove-up/rules.yaml:12:13: rule `remove-and-up`: missing key `up.groups` (e.g. groups: [[postgres, redis], [backend]])",
            "bad-remove-up/rules.yaml:13:23: rule `remove-and-up`: up.groups must have at least one group, e.g. [[postgres, redis], [backend]]",
            "bad-remove-up/rules.yaml:14:24: rule `remove-and-up`: up.groups[1] must be a list of services, e.g. [postgres, redis], not `redis`",
            "bad-remove-up/rules.yaml:14:31: rule `remove-and-up`: up.groups[2] must name at least one service",
            "bad-remove-up/rules.yaml:14:44: rule `remove-and-up`: up.within `5` is not a duration such as 30s, 2m or 1h (a number needs a unit: 5s, 5m, 5h)",
            "bad-remove-up/rules.yaml:15:44: rule `remove-and-up`: up.groups[2] `redis` is already in group 1; name each service once",
            "bad-remove-up/rules.yaml:15:51: rule `remove-and-up`: up.groups[2] `a;b` is not a plain container or service name (letters, digits, '_', '.', '-'; starting with a letter or digit)",
            "bad-remove-up/rules.yaml:15:60: rule `remove-and-up`: unknown key `up.wait` (expected one of: groups, within, timeout)",
        ],
    ),
    (
        "bad-step-field",
        &[
            "bad-step-field/rules.yaml:9:27: rule `fields`: restart.grace `soon` is not a duration such as 30s, 2m or 1h",
            "bad-step-field/rules.yaml:10:23: rule `fields`: logs.tail must be a whole number from 1 to 10000, not `0`",
            "bad-step-field/rules.yaml:11:23: rule `fields`: logs.tail must be a whole number from 1 to 10000, not `many`",
            "bad-step-field/rules.yaml:12:23: rule `fields`: exec.argv must name a program, e.g. [pg_isready, -q]",
            "bad-step-field/rules.yaml:13:23: rule `fields`: exec.argv must be a list, not `pg_isready -q`",
            "bad-step-field/rules.yaml:13:49: rule `fields`: exec.service `../db` is not a plain container or service name (letters, digits, '_', '.', '-'; starting with a letter or digit)",
            "bad-step-field/rules.yaml:13:69: rule `fields`: exec.expect_exit must be a whole number, not `one`",
            "bad-step-field/rules.yaml:14:28: rule `fields`: check_http.url `ftp://backend/health` must start with http:// or https://",
            "bad-step-field/rules.yaml:14:67: rule `fields`: check_http.expect_status must be an HTTP status from 100 to 599, not `99`",
            "bad-step-field/rules.yaml:15:32: rule `fields`: check_postgres.dsn must not hold a password (rule files are not secret); name an environment variable in password_env",
            "bad-step-field/rules.yaml:16:29: rule `fields`: check_redis.url must not hold a password (rule files are not secret)",
            "bad-step-field/rules.yaml:17:29: rule `fields`: check_redis.url `http://redis:6379` must start with redis://",
            "bad-step-field/rules.yaml:18:27: rule `fields`: stop.services must name at least one service",
            "bad-step-field/rules.yaml:19:38: rule `fields`: start.services `../etc` is not a plain container or service name (letters, digits, '_', '.', '-'; starting with a letter or digit)",
            "bad-step-field/rules.yaml:20:15: rule `fields`: missing key `wait.duration` (e.g. wait: { duration: 30s })",
            "bad-step-field/rules.yaml:21:28: rule `fields`: notify.message is empty",
            "bad-step-field/rules.yaml:22:21: rule `fields`: page.to must be a list, not `oncall`",
        ],
    ),
    (
        "bad-target",
        &[
            "bad-target/rules.yaml:7:13: rule `two-targets`: target must have exactly one of service, container, label or none: true",
            "bad-target/rules.yaml:14:15: rule `label-without-allow`: target.label `service` needs an `allow` list of the services it may name",
            "bad-target/rules.yaml:21:31: rule `allow-without-label`: target.allow only goes with a `label` target",
            "bad-target/rules.yaml:28:46: rule `bad-names`: target.allow `redis*` is not a plain container or service name (letters, digits, '_', '.', '-'; starting with a letter or digit)",
            "bad-target/rules.yaml:28:56: rule `bad-names`: target.allow `../x` is not a plain container or service name (letters, digits, '_', '.', '-'; starting with a letter or digit)",
            "bad-target/rules.yaml:35:13: rule `none-false`: target must have exactly one of service, container, label or none: true",
            "bad-target/rules.yaml:42:13: rule `not-a-mapping`: target must be a mapping such as { service: postgres }, not `redis`",
        ],
    ),
    (
        "bad-window",
        &[
            "bad-window/rules.yaml:11:17: maintenance window `typos`: rules `pgg` is not a rule in this directory (known: pg)",
            "bad-window/rules.yaml:12:16: maintenance window `typos`: services `postgress` is not a service any rule acts on (known: postgres)",
            "bad-window/rules.yaml:12:27: maintenance window `typos`: services `../etc` is not a plain container or service name (letters, digits, '_', '.', '-'; starting with a letter or digit)",
            "bad-window/rules.yaml:14:35: maintenance window `typos`: time_intervals.weekdays `funday` is not a weekday (sunday to saturday, by name) or a range of them such as monday:friday",
            "bad-window/rules.yaml:16:27: maintenance window `typos`: time_intervals.times.start_time `9:00` is not a time of day written HH:MM, from 00:00 to 24:00 (e.g. 09:00)",
            "bad-window/rules.yaml:17:46: maintenance window `typos`: time_intervals.times: end_time `02:00` is not after start_time `22:00`; a range ends on the day it starts: split one that crosses midnight in two, one ending at 24:00 and one starting at 00:00",
            "bad-window/rules.yaml:18:25: maintenance window `typos`: time_intervals.days_of_month `0` is out of range: days of the month are 1 to 31, or -31 to -1 counted from the end (-1 is the last day)",
            "bad-window/rules.yaml:18:28: maintenance window `typos`: time_intervals.days_of_month `-15:5` starts from the end of the month, so it must end there too: write a negative end such as -1",
            "bad-window/rules.yaml:19:18: maintenance window `typos`: time_intervals.months `13` is not a month (january to december, or 1 to 12) or a range of them such as march:may",
            "bad-window/rules.yaml:19:24: maintenance window `typos`: time_intervals.months `december:january` ends before it starts; a range does not wrap around the year: write `december` and `january`",
            "bad-window/rules.yaml:20:17: maintenance window `typos`: time_intervals.years `2027:2026` ends before it starts",
            "bad-window/rules.yaml:21:19: maintenance window `typos`: time_intervals.location `Europe/Berln` is not a time zone of the IANA database, such as Europe/Berlin or UTC",
            "bad-window/rules.yaml:22:9: maintenance window `typos`: unknown key `time_intervals.hours` (expected one of: times, weekdays, days_of_month, months, years, location)",
            "bad-window/rules.yaml:23:5: maintenance window `no-scope`: a maintenance window needs a scope: `rules:` (the rules whose runbooks it holds back), `services:` (the services no runbook may act on), or both",
            "bad-window/rules.yaml:24:35: maintenance window `no-scope`: time_intervals.location `Local` is the host's zone, which a window does not use: write the IANA name of the zone the window is planned in, such as Europe/Berlin (UTC when not given)",
            "bad-window/rules.yaml:26:12: maintenance window `empty`: rules is empty; name at least one, or remove the key",
            "bad-window/rules.yaml:27:21: maintenance window `empty`: time_intervals is empty, so the window would never be in force; list at least one interval ({} is all the time)",
            "bad-window/rules.yaml:28:5: maintenance window `typos`: missing key `time_intervals` (e.g. time_intervals: [ { weekdays: [saturday], times: [ { start_time: '02:00', end_time: '04:00' } ] } ])",
            "bad-window/rules.yaml:28:11: maintenance window `typos`: the name is already used by the window at bad-window/rules.yaml:10:11; window names must be unique",
            "bad-window/windows-only.yaml:2:5: maintenance window #1: a maintenance window must be a mapping of name, rules and/or services, and time_intervals, not `just a string`",
            "bad-window/windows-only.yaml:5:23: maintenance window `null-interval`: time_intervals must be a mapping such as { weekdays: [saturday], times: [ { start_time: '02:00', end_time: '04:00' } ] }, not empty",
        ],
    ),
    (
        "combined",
        &[
            r#"combined/10-first.yaml:4:16: rule `postgres-down`: matcher `alertname=~"(Postgres"`: invalid regular expression: unclosed group"#,
            "combined/10-first.yaml:5:5: rule `postgres-down`: unknown key `prioritty` (expected one of: name, description, matchers, priority, priority_label, rto, owner, customer_impacting, target, limit, dry_run, steps, on_failure, fallback)",
            "combined/10-first.yaml:6:15: rule `postgres-down`: priority `P9` is not one of P1, P2, P3, P4",
            "combined/10-first.yaml:10:28: rule `postgres-down`: limit.per `sometimes` is not a duration such as 30s, 2m or 1h",
            "combined/10-first.yaml:12:27: rule `postgres-down`: restart.grace `soon` is not a duration such as 30s, 2m or 1h",
            "combined/10-first.yaml:13:9: rule `postgres-down`: unknown step `reboot_host` (expected one of: diagnose, logs, restart, recreate, stop, start, exec, wait_healthy, check_http, check_postgres, check_redis, wait, notify, page, remove, up, approve)",
            "combined/10-first.yaml:17:10: rule `queue-high`: rto `half an hour` is not a duration such as 30s, 2m or 1h",
            "combined/10-first.yaml:18:12: rule `queue-high`: owner `nobody` is not a contact in escalation.yaml (known: dba, oncall)",
            "combined/10-first.yaml:19:15: rule `queue-high`: target.label `service` needs an `allow` list of the services it may name",
            "combined/10-first.yaml:21:23: rule `queue-high`: exec.argv must name a program, e.g. [pg_isready, -q]",
            "combined/10-first.yaml:23:22: rule `queue-high`: page.to `ghost` is not a contact in escalation.yaml (known: dba, oncall)",
            "combined/20-second.yaml:2:11: rule `postgres-down`: the name is already used by the rule at combined/10-first.yaml:3:11; rule names must be unique",
            "combined/20-second.yaml:8:40: rule `postgres-down`: wait_healthy.within `2` is not a duration such as 30s, 2m or 1h (a number needs a unit: 2s, 2m, 2h)",
            "combined/20-second.yaml:9:11: rule #2: name must be a string, not a list",
            "combined/20-second.yaml:16:17: rule #2: on_failure must be a list, not a mapping",
        ],
    ),
    (
        "duplicates",
        &[
            "duplicates/20-second.yaml:2:11: rule `same`: the name is already used by the rule at duplicates/10-first.yaml:2:11; rule names must be unique",
            "duplicates/20-second.yaml:5:5: rule `same`: key `priority` is given twice (first at line 4)",
            "duplicates/20-second.yaml:10:11: rule `same`: the name is already used by the rule at duplicates/10-first.yaml:2:11; rule names must be unique",
        ],
    ),
    (
        "empty-files",
        &[
            "empty-files/10-empty.yaml: the file has no rules; add a `rules:` list or remove the file",
            "empty-files/20-comments.yaml: the file has no rules; add a `rules:` list or remove the file",
            "empty-files/30-empty-list.yaml:1:8: the file has no rules; add a `rules:` list or remove the file",
            "empty-files/40-null.yaml:1:1: the file has no rules; add a `rules:` list or remove the file",
            "empty-files/50-prometheus.yaml: the file has no rules; add a `rules:` list or remove the file",
            "empty-files/50-prometheus.yaml:1:1: unknown key `groups` (expected one of: rules, maintenance_windows)",
            "empty-files/60-list.yaml:1:1: the file must be a mapping with a `rules:` list, not a list",
        ],
    ),
    (
        "escalation-broken",
        &[
            "escalation-broken/escalation.yaml:3:9: invalid YAML: while parsing a flow mapping, did not find expected ',' or '}'",
            "escalation-broken/rules.yaml:5:15: rule `owner-unchecked`: priority `P7` is not one of P1, P2, P3, P4",
        ],
    ),
    (
        "escalation",
        &[
            "escalation/escalation.yaml:2:40: unknown key `contacts.oncall.phone` (expected one of: name, email, slack_user, slack_users)",
            "escalation/escalation.yaml:3:17: contacts.dba.email `dba.example.org` is not an e-mail address",
            "escalation/escalation.yaml:4:13: missing key `contacts.eng-lead.email`",
            "escalation/escalation.yaml:5:3: key `contacts.oncall` is given twice (first at line 2)",
            "escalation/escalation.yaml:7:3: missing key `policies.P4` (every priority needs a policy)",
            "escalation/escalation.yaml:8:22: policies.P1.notify `ghost` is not a contact (known: dba, eng-lead, oncall)",
            "escalation/escalation.yaml:13:16: policies.P1.tiers.after `soon` is neither a share of the RTO (50%) nor a delay (10m)",
            "escalation/escalation.yaml:14:18: policies.P1.tiers.notify `phantom` is not a contact (known: dba, eng-lead, oncall)",
            "escalation/escalation.yaml:15:16: policies.P1.tiers.after `2000%` is not a share between 0% and 1000%",
            "escalation/escalation.yaml:18:9: unknown key `policies.P3.escalate` (expected one of: notify, page, tiers)",
            "escalation/escalation.yaml:19:3: unknown policy `P5` (the priorities are P1, P2, P3, P4)",
            "escalation/rules.yaml:13:12: rule `owned-by-nobody`: owner `ghost` is not a contact in escalation.yaml (known: dba, eng-lead, oncall)",
        ],
    ),
    (
        "missing-escalation",
        &[
            "missing-escalation/escalation.yaml: missing: the contacts and escalation policies live here; copy the one shipped in rules/",
            "missing-escalation/rules.yaml:5:15: rule `owner-unchecked`: priority `P7` is not one of P1, P2, P3, P4",
        ],
    ),
    (
        "missing-keys",
        &[
            r#"missing-keys/rules.yaml:2:5: rule `only-a-name`: missing key `matchers` (e.g. matchers: ['alertname="PostgresDown"'])"#,
            "missing-keys/rules.yaml:2:5: rule `only-a-name`: missing key `priority` (one of P1, P2, P3, P4)",
            "missing-keys/rules.yaml:2:5: rule `only-a-name`: missing key `rto` (the recovery time objective, e.g. rto: 30m)",
            "missing-keys/rules.yaml:2:5: rule `only-a-name`: missing key `owner` (a contact in escalation.yaml)",
            "missing-keys/rules.yaml:2:5: rule `only-a-name`: missing key `target` (e.g. target: { service: postgres })",
            "missing-keys/rules.yaml:2:5: rule `only-a-name`: missing key `steps` (e.g. steps: [ { diagnose: {} } ])",
            "missing-keys/rules.yaml:3:5: rule #2: missing key `name`",
            r#"missing-keys/rules.yaml:3:5: rule #2: missing key `matchers` (e.g. matchers: ['alertname="PostgresDown"'])"#,
            "missing-keys/rules.yaml:3:5: rule #2: missing key `rto` (the recovery time objective, e.g. rto: 30m)",
            "missing-keys/rules.yaml:3:5: rule #2: missing key `owner` (a contact in escalation.yaml)",
            "missing-keys/rules.yaml:3:5: rule #2: missing key `target` (e.g. target: { service: postgres })",
            "missing-keys/rules.yaml:3:5: rule #2: missing key `steps` (e.g. steps: [ { diagnose: {} } ])",
            "missing-keys/rules.yaml:5:5: rule #3: `name` has no value",
            "missing-keys/rules.yaml:8:5: rule #3: `rto` has no value (the recovery time objective, e.g. rto: 30m)",
            "missing-keys/rules.yaml:12:5: rule #4: a rule must be a mapping of name, matchers, priority, ..., not `just a string`",
        ],
    ),
    (
        "unknown-key",
        &[
            "unknown-key/rules.yaml:4:5: rule `typos`: unknown key `prioritty` (expected one of: name, description, matchers, priority, priority_label, rto, owner, customer_impacting, target, limit, dry_run, steps, on_failure, fallback)",
            "unknown-key/rules.yaml:8:13: rule `typos`: target must have exactly one of service, container, label or none: true",
            "unknown-key/rules.yaml:8:15: rule `typos`: unknown key `target.servise` (expected one of: service, container, label, allow, none)",
            "unknown-key/rules.yaml:9:32: rule `typos`: unknown key `limit.burst` (expected one of: runs, per)",
            "unknown-key/rules.yaml:11:20: rule `typos`: unknown key `restart.grase` (expected one of: grace, timeout)",
        ],
    ),
    (
        "unknown-owner",
        &[
            "unknown-owner/rules.yaml:6:12: rule `nobody-owns-it`: owner `nobody` is not a contact in escalation.yaml (known: dba, oncall)",
            "unknown-owner/rules.yaml:9:30: rule `nobody-owns-it`: page.to `ghost` is not a contact in escalation.yaml (known: dba, oncall)",
            "unknown-owner/rules.yaml:9:42: rule `nobody-owns-it`: page.to `spectre` is not a contact in escalation.yaml (known: dba, oncall)",
            "unknown-owner/rules.yaml:11:22: rule `nobody-owns-it`: page.to `ghost` is not a contact in escalation.yaml (known: dba, oncall)",
        ],
    ),
    (
        "unknown-step",
        &[
            "unknown-step/rules.yaml:9:9: rule `steps`: unknown step `reboot_host` (expected one of: diagnose, logs, restart, recreate, stop, start, exec, wait_healthy, check_http, check_postgres, check_redis, wait, notify, page, remove, up, approve)",
            "unknown-step/rules.yaml:10:9: rule `steps`: a step must be one kind and its arguments, e.g. `- restart: { grace: 30s }`, not `restart`; write `- restart: { ... }`, with `{}` for no arguments",
            "unknown-step/rules.yaml:11:9: rule `steps`: a step is one kind, but this one has `logs` and `restart`; start each step with its own `-`",
            "unknown-step/rules.yaml:13:9: rule `steps`: a step must be one kind and its arguments, e.g. `- restart: { grace: 30s }`, not an empty mapping",
            "unknown-step/rules.yaml:14:18: rule `steps`: restart must be a mapping of its arguments, e.g. `restart: {}`, not `30s`",
            "unknown-step/rules.yaml:16:9: rule `steps`: unknown step `Page` (expected one of: diagnose, logs, restart, recreate, stop, start, exec, wait_healthy, check_http, check_postgres, check_redis, wait, notify, page, remove, up, approve)",
        ],
    ),
    (
        "valid",
        &[
        ],
    ),
    (
        "yaml-syntax",
        &[
            "yaml-syntax/10-broken.yaml:3:13: invalid YAML: illegal placement of ':' indicator",
            "yaml-syntax/20-quote.yaml:3:16: invalid YAML: unclosed quote",
            "yaml-syntax/30-next-file.yaml:4:15: rule `still-checked`: priority `P0` is not one of P1, P2, P3, P4",
            "yaml-syntax/40-two-documents.yaml:4:1: a rule file holds one YAML document; a second one starts here: move it to a file of its own",
        ],
    ),
];

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/rules/testdata")
}

/// What `check` prints for a directory of `testdata/`, paths relative to it.
fn check_case(case: &str) -> Vec<String> {
    let root = format!("{}/", testdata().display());
    match crate::loader::load_rules(&testdata().join(case)) {
        Ok(_) => vec![],
        Err(crate::loader::LoadError::Rules(errors)) => errors
            .0
            .iter()
            .map(|e| e.to_string().replace(&root, ""))
            .collect(),
        Err(other) => panic!("{case}: {other}"),
    }
}

#[test]
fn each_testdata_case_gives_exactly_its_errors() {
    let mut failed = Vec::new();
    for (case, want) in CASES {
        let got = check_case(case);
        if got != *want {
            failed.push(format!("{case}:\n  got  {got:#?}\n  want {want:#?}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn every_testdata_directory_is_a_case() {
    let mut dirs: Vec<String> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut cases: Vec<String> = CASES.iter().map(|(c, _)| c.to_string()).collect();
    cases.sort();
    assert_eq!(dirs, cases);
}

#[test]
fn no_error_has_line_0_a_trailing_period_or_a_second_line() {
    for (case, _) in CASES {
        let errors = match crate::loader::load_rules(&testdata().join(case)) {
            Ok(_) => continue,
            Err(crate::loader::LoadError::Rules(e)) => e.0,
            Err(other) => panic!("{case}: {other}"),
        };
        for e in errors {
            assert!(e.pos.is_none_or(|p| p.line > 0 && p.column > 0), "{e}");
            assert!(!e.message.ends_with('.'), "{e}");
            assert!(!e.message.contains('\n'), "{e}");
        }
    }
}

#[test]
fn the_valid_case_compiles_with_defaults_aliases_and_merge_keys() {
    let set = crate::loader::load_rules(&testdata().join("valid")).unwrap();
    let every = set.get("every-step").unwrap();
    let kinds: Vec<&str> = every.steps.iter().map(|s| s.name).collect();
    assert_eq!(
        kinds,
        [
            "diagnose",
            "logs",
            "restart",
            "recreate",
            "stop",
            "start",
            "exec",
            "exec",
            "wait_healthy",
            "check_http",
            "check_postgres",
            "check_redis",
            "wait",
            "notify"
        ]
    );
    assert!(every.customer_impacting, "`yes` is true");
    assert_eq!(every.steps[0].line, 15);
    // A number where a string is wanted is kept as written, through an alias too.
    for step in &every.steps[6..8] {
        let StepKind::Exec {
            argv, expect_exit, ..
        } = &step.kind
        else {
            panic!("{step:?}")
        };
        assert_eq!(argv, &["sleep", "1.50"]);
        assert_eq!(*expect_exit, 0);
    }
    assert_eq!(
        every.steps[1].kind,
        StepKind::Logs {
            tail: 50,
            timeout: Some(Dur(Duration::from_secs(10)))
        }
    );

    let by_label = set.get("by-label").unwrap();
    assert_eq!(by_label.owner, "oncall");
    assert_eq!(
        by_label.limit,
        Limit {
            runs: 3,
            per: Duration::from_secs(3600)
        }
    );
    assert_eq!(
        by_label.target,
        Target::Label {
            label: "service".into(),
            allow: vec!["redis".into(), "backend".into()]
        }
    );
    assert_eq!(
        set.get("by-container").unwrap().limit,
        Limit::default(),
        "no limit: the default"
    );
    let none = set.get("nothing-to-act-on").unwrap();
    assert_eq!(none.target, Target::None);
    assert_eq!(
        none.steps[0].kind,
        StepKind::Page {
            to: vec![],
            message: None
        }
    );
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

#[test]
fn windows_compile_with_their_scope_and_hold_back_what_they_name() {
    use chrono::TimeZone;
    let utc = |d: u32, h: u32, m: u32| chrono::Utc.with_ymd_and_hms(2026, 12, d, h, m, 0).unwrap();
    let set = crate::loader::load_rules(&testdata().join("valid")).unwrap();
    let names: Vec<&str> = set.windows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["db-upgrade", "redis-always"]);
    let db = &set.windows[0];
    assert_eq!(
        (db.rules.as_slice(), db.services.as_slice()),
        (
            &["every-step".to_string()][..],
            &["postgres".to_string()][..]
        )
    );
    assert!(
        db.file.ends_with("maintenance.yaml") && db.line == 3,
        "{db:?}"
    );

    let every = set.get("every-step").unwrap();
    let by_label = set.get("by-label").unwrap();
    let by_container = set.get("by-container").unwrap();
    // Saturday 5 December, 02:30 in Berlin (01:30 UTC): the upgrade, until 04:30 (03:30 UTC).
    let fact = set
        .window_for(every, Some("postgres"), utc(5, 1, 30))
        .unwrap();
    assert_eq!(fact.name, "db-upgrade");
    assert_eq!(fact.until, Some(utc(5, 3, 30)));
    // With both rules and services, the named rules on the named services only, as a pause
    // of a rule on a service.
    let other_rule = Rule {
        name: "another".into(),
        ..by_container.clone()
    };
    assert_eq!(
        set.window_for(&other_rule, Some("postgres"), utc(5, 1, 30)),
        None
    );
    assert_eq!(
        set.window_for(every, Some("postgres"), utc(5, 3, 30)),
        set.window_for(every, Some("postgres"), utc(2, 12, 0)),
        "after it, only the window of celery-worker"
    );
    // every-step also stops celery-worker, which `redis-always` covers at all times.
    assert_eq!(
        set.window_for(every, Some("postgres"), utc(2, 12, 0))
            .unwrap()
            .name,
        "redis-always"
    );
    // A label target: by the service the alert chose.
    assert_eq!(
        set.window_for(by_label, Some("redis"), utc(2, 12, 0))
            .unwrap()
            .until,
        None
    );
    assert_eq!(
        set.window_for(by_label, Some("backend"), utc(2, 12, 0)),
        None
    );
    assert_eq!(set.window_for(by_container, None, utc(5, 1, 30)), None);
}

#[test]
fn a_window_is_checked_against_every_rule_and_refused_with_the_set() {
    let window = "maintenance_windows:\n  - name: w\n    services: [zzz]\n    rules: [broken]\n    time_intervals: [ {} ]\n";
    // The rule naming service zzz did not compile: its problem is reported, and the window's
    // service is not called unknown for it.
    let errs = errors_with(
        "50-w.yaml",
        &format!("rules:\n  - name: broken\n    matchers: ['alertname=\"X\"']\n    priority: P9\n    rto: 5m\n    owner: oncall\n    target: {{ service: zzz }}\n    steps: [ {{ restart: {{}} }} ]\n{window}"),
    );
    assert_eq!(
        errs,
        ["rules/50-w.yaml:4:15: rule `broken`: priority `P9` is not one of P1, P2, P3, P4"]
    );
    // With the shipped rules alone, both names are unknown, and the whole set is refused.
    assert_eq!(
        errors_with("50-w.yaml", window),
        [
            "rules/50-w.yaml:3:16: maintenance window `w`: services `zzz` is not a service any rule acts on (known: backend, backup, celery-worker, frontend, minio, postgres, rabbitmq, redis)",
            "rules/50-w.yaml:4:13: maintenance window `w`: rules `broken` is not a rule in this directory (known: backup-failed, disk-space-low, full-bring-up, high-queue-depth, postgres-down, redis-cache-loss, single-service-failure)",
        ]
    );
    // A file of windows alone, beside the shipped rules, compiles.
    let mut sources = shipped();
    sources.push(Source {
        path: "rules/50-w.yaml".into(),
        text: "maintenance_windows:\n  - name: w\n    rules: [postgres-down]\n    time_intervals: [ { years: ['2020'] } ]\n".into(),
    });
    let set = compile(&sources).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.windows.len(), 1);
    assert_eq!(set.rules.len(), 7);
}
