//! `check`'s errors for `approve` steps and templated exec argv.

use super::tests::errors_with;

fn rule(steps: &str) -> String {
    format!(
        "rules:\n  - name: x\n    matchers: ['a=\"b\"']\n    priority: P1\n    rto: 30m\n    owner: dba\n    target: {{ none: true }}\n    steps:\n{steps}"
    )
}

#[test]
fn templates_are_checked_where_they_stand() {
    let errs = errors_with(
        "50-tpl.yaml",
        &rule(concat!(
            "      - exec: { service: db, argv: [v.sh, \"--file={{ labels.backup }}\"] }\n",
            "      - exec: { service: db, argv: [v.sh, \"{{ env.HOME }}\"] }\n",
            "      - exec: { service: db, argv: [\"{{ labels.prog }}\"] }\n",
            "      - exec: { service: db, argv: [r.sh, \"{{ approval.choice }}\"] }\n",
            "      - exec: { service: db, argv: [v.sh, \"{{ labels.backup }}\"], pattern: \"(\" }\n",
        )),
    );
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(
        errs[0].starts_with("rules/50-tpl.yaml:9:43:") && errs[0].contains("inside other text"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("rules/50-tpl.yaml:10:43:") && errs[1].contains("unknown template"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with("rules/50-tpl.yaml:11:37:") && errs[2].contains("cannot be a template"),
        "{}",
        errs[2]
    );
    assert!(
        errs[3].starts_with("rules/50-tpl.yaml:12:9:")
            && errs[3].contains("no approve step before it"),
        "{}",
        errs[3]
    );
    assert!(
        errs[4].starts_with("rules/50-tpl.yaml:13:")
            && errs[4].contains("not a regular expression"),
        "{}",
        errs[4]
    );
}

#[test]
fn approve_steps_name_a_contact_and_take_choices_from_an_exec() {
    let errs = errors_with(
        "50-appr.yaml",
        &rule(concat!(
            "      - approve: { who: ghost }\n",
            "      - diagnose: {}\n",
            "      - approve: { who: dba, choices_from: previous }\n",
            "      - approve: { who: dba, choices_from: earlier }\n",
        )),
    );
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].contains("who `ghost` is not a contact"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("rules/50-appr.yaml:11:9:")
            && errs[1].contains("needs an exec step right before it"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].contains("choices_from `earlier` is not known"),
        "{}",
        errs[2]
    );

    let ok = errors_with(
        "50-appr.yaml",
        &rule(concat!(
            "      - exec: { service: backup, argv: [list.sh] }\n",
            "      - approve: { who: dba, timeout: 10m, prompt: Restore?, choices_from: previous }\n",
            "      - exec: { service: backup, argv: [restore.sh, \"{{ approval.choice }}\"] }\n",
            "    on_failure:\n",
            "      - exec: { service: backup, argv: [after.sh, \"{{ approval.choice }}\"] }\n",
        )),
    );
    assert_eq!(ok, Vec::<String>::new());
}

/// The shipped escalation.yaml with `oncall` given `slack_users: LIST`.
fn escalation_with_slack_users(list: &str) -> String {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rules/escalation.yaml"
    ))
    .unwrap();
    let at = "    email: oncall@voiceai-testing.local\n";
    assert!(shipped.contains(at));
    shipped.replacen(at, &format!("{at}    slack_users: {list}\n"), 1)
}

#[test]
fn slack_users_are_read_and_each_must_be_a_slack_user_id() {
    assert_eq!(
        errors_with(
            "escalation.yaml",
            &escalation_with_slack_users("[U0DBA, W12AB]")
        ),
        Vec::<String>::new()
    );
    let errs = errors_with(
        "escalation.yaml",
        &escalation_with_slack_users("[U0DBA, \"@dana\", u0lower]"),
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("rules/escalation.yaml:12:26: contacts.oncall.slack_users: `@dana` is not a Slack user id"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("`u0lower` is not a Slack user id"),
        "{}",
        errs[1]
    );
    let errs = errors_with("escalation.yaml", &escalation_with_slack_users("U0DBA"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("contacts.oncall.slack_users"),
        "{}",
        errs[0]
    );
    for (id, ok) in [
        ("U0DBA", true),
        ("W12AB", true),
        ("U", false),
        ("X0DBA", false),
        ("U0-DB", false),
    ] {
        assert_eq!(super::escalation::is_slack_user_id(id), ok, "{id}");
    }
}

#[test]
fn fallback_steps_are_checked_and_see_the_approvals_before_them() {
    // A choice used in `fallback` needs an approve step in `steps` or earlier in `fallback`;
    // `on_failure` may use one that `fallback` asks for.
    let errs = errors_with(
        "50-fb.yaml",
        &rule(concat!(
            "      - restart: {}\n",
            "    fallback:\n",
            "      - exec: { service: db, argv: [r.sh, \"{{ approval.choice }}\"] }\n",
            "      - exec: { service: db, argv: [ls] }\n",
            "      - approve: { who: dba, choices_from: previous }\n",
            "      - exec: { service: db, argv: [r.sh, \"{{ approval.choice }}\"] }\n",
            "    on_failure:\n",
            "      - exec: { service: db, argv: [r.sh, \"{{ approval.choice }}\"] }\n",
        )),
    );
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("rules/50-fb.yaml:11:9:")
            && errs[0].contains("no approve step before it"),
        "{}",
        errs[0]
    );
}
