//! The post-mortem of a real incident: `remediator postmortem ID` against the running
//! service (compared with a golden file, times normalised), the timeline's JSON, and the
//! incident pages, in a real headless chromium and over plain HTTP.

use chrono::Utc;
use serde_json::{json, Value};

use crate::browser::Browser;
use crate::helpers::*;

/// A rule that acts on nothing but the thread: a message, then a wait of a second.
const RULES: &str = r#"rules:
  - name: postmortem-drill
    description: A runbook that only talks and waits
    matchers: ['alertname="PostmortemDrill"']
    priority: P3
    rto: 1h
    owner: backend
    target: { none: true }
    steps:
      - notify: { message: "runbook ran" }
      - wait: { duration: 1s }
"#;

/// An alert's label no page may run: the sender's text, shown as text.
const HOSTILE: &str = "<script>alert(1)</script>|*x*";

/// One incident from firing to resolved: the runbook recovered, alice acknowledged, the
/// alert resolved. Returns the service, its rules (kept alive) and the incident's id.
async fn recovered_incident() -> (TestApp, tempfile::TempDir, i64) {
    let rules = rules_with(RULES);
    let mut spawn = Spawn {
        rules_dir: Some(rules.path().to_path_buf()),
        ..Spawn::default()
    };
    spawn
        .env
        .push(("REMEDIATOR_API__TOKEN".into(), TOKEN.into()));
    let app = spawn_with(spawn).await;
    let labels = json!({"alertname": "PostmortemDrill", "note": HOSTILE});
    let starts = Utc::now();
    assert_eq!(
        app.post_hook(alert_payload(labels.clone(), starts, "firing"))
            .await
            .status(),
        200
    );
    let detail = app.finished("PostmortemDrill", 30).await;
    assert_eq!(detail["phase"], "recovered", "{detail:#}");
    let id = detail["id"].as_i64().unwrap();
    let ack = app
        .client
        .post(format!("{}/api/v1/incidents/{id}/ack", app.addr))
        .bearer_auth(TOKEN)
        .json(&json!({"by": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 200);
    assert_eq!(
        app.post_hook(alert_payload(labels, starts, "resolved"))
            .await
            .status(),
        200
    );
    eventually(10, "the incident to resolve", || async {
        let (_, v) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
        (v["state"] == "resolved").then_some(())
    })
    .await;
    (app, rules, id)
}

/// The post-mortem with what changes from run to run replaced: times, durations (the
/// RTO, written in whole hours, stays) and the temporary rule directory's path.
fn normalised(markdown: &str, rules: &std::path::Path) -> String {
    let markdown = markdown.replace(&rules.display().to_string(), "<rules>");
    let markdown = markdown.as_str();
    let time = regex::Regex::new(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} UTC").unwrap();
    let secs = regex::Regex::new(r"-?\d+\.\d+s\b").unwrap();
    let whole = regex::Regex::new(r"\b(\d+m )?\d+s\b").unwrap();
    let text = time.replace_all(markdown, "<time>");
    let text = secs.replace_all(&text, "<secs>");
    whole.replace_all(&text, "<secs>").into_owned()
}

#[tokio::test]
async fn postmortem_prints_the_incidents_markdown_as_the_golden_file_has_it() {
    let (app, rules, id) = recovered_incident().await;
    let out = remediator(
        &["postmortem", &id.to_string(), "--url", &app.addr],
        &[("REMEDIATOR_API__TOKEN", TOKEN)],
    )
    .await;
    let got = normalised(&stdout(&out), rules.path());
    let path = repo().join("tests/api/testdata/postmortem.md");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(got, want, "regenerate with UPDATE_GOLDEN=1");

    // For scripts, the timeline as the API answers it.
    let out = remediator(
        &[
            "postmortem",
            &id.to_string(),
            "--url",
            &app.addr,
            "--output",
            "json",
        ],
        &[("REMEDIATOR_API__TOKEN", TOKEN)],
    )
    .await;
    let t: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(t["recovery"]["verdict"], "within");
    assert_eq!(t["steps"].as_array().unwrap().len(), 2);
    assert_eq!(t["summary"]["labels"]["note"], HOSTILE);

    // Without the token the service refuses, and the command says what to set.
    let out = remediator(&["postmortem", &id.to_string(), "--url", &app.addr], &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("api.token"), "{err}");
    // An incident that does not exist is the service's 404, told.
    let out = remediator(
        &["postmortem", "999", "--url", &app.addr],
        &[("REMEDIATOR_API__TOKEN", TOKEN)],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no incident 999"));
}

#[tokio::test]
async fn the_pages_take_the_token_once_and_never_show_it() {
    let (app, _rules, id) = recovered_incident().await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = format!("{}/incidents/{id}", app.addr);

    let r = plain.get(&page).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("?token="));
    let r = plain
        .get(format!("{page}?token=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // ?token= answers with the same page without it, and a cookie only the pages get.
    let r = plain
        .get(format!("{page}?token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], format!("/incidents/{id}"));
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/incidents"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let r = plain
        .get(&page)
        .header("Cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(
        !html.contains(TOKEN),
        "the token is never written into a page"
    );
    assert!(!html.contains("<script"), "the label is text: {html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );

    // A wrong ?token= is refused even beside a right cookie; on the list the redirect keeps
    // the other parameters.
    let r = plain
        .get(format!("{page}?token=wrong"))
        .header("Cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = plain
        .get(format!(
            "{}/incidents?state=resolved&token={TOKEN}",
            app.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/incidents?state=resolved");

    // The bearer header works as on the API; so does the list.
    let r = plain.get(&page).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = plain
        .get(format!("{}/incidents", app.addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list = r.text().await.unwrap();
    assert!(
        list.contains(&format!("href=\"/incidents/{id}\"")),
        "{list}"
    );
    assert!(!list.contains(TOKEN));
    let r = plain
        .get(format!("{}/incidents/nope", app.addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_page_renders_its_chart_in_chromium_without_console_errors() {
    let (app, _rules, id) = recovered_incident().await;
    let mut browser = Browser::start().await;

    // Once with the token: the page redirects to itself without it, the cookie carries on.
    browser
        .open(&format!("{}/incidents/{id}?token={TOKEN}", app.addr))
        .await;
    let facts = browser
        .eval(
            r#"({
            url: location.href,
            title: document.title,
            scripts: document.querySelectorAll('script').length,
            bars: document.querySelectorAll('svg.chart rect.bar').length,
            barWidths: [...document.querySelectorAll('svg.chart rect.bar')].map(r => r.getBoundingClientRect().width),
            rto: document.querySelectorAll('svg.chart line.rto').length,
            rtoLabel: (document.querySelector('svg.chart text.rto-label') || {}).textContent,
            chartWidth: document.querySelector('svg.chart').getBoundingClientRect().width,
            stepNames: [...document.querySelectorAll('svg.chart text.step-name')].map(t => t.textContent),
            labels: document.querySelector('dl.facts dd').textContent,
            people: [...document.querySelectorAll('ul.actor-people li')].map(li => li.textContent),
            cookie: document.cookie,
        })"#,
        )
        .await;
    assert_eq!(
        facts["url"],
        format!("{}/incidents/{id}", app.addr),
        "{facts:#}"
    );
    assert_eq!(
        facts["title"],
        format!("Incident {id}: PostmortemDrill · remediator")
    );
    assert_eq!(facts["scripts"], 0, "{facts:#}");
    assert_eq!(facts["bars"], 2, "a bar per step: {facts:#}");
    assert!(
        facts["barWidths"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w.as_f64().unwrap() >= 1.0),
        "every bar is drawn: {facts:#}"
    );
    assert_eq!(facts["rto"], 1, "{facts:#}");
    assert_eq!(facts["rtoLabel"], "RTO 1h");
    assert!(facts["chartWidth"].as_f64().unwrap() > 300.0, "{facts:#}");
    assert_eq!(facts["stepNames"], json!(["1. notify", "2. wait"]));
    assert!(
        facts["labels"].as_str().unwrap().contains(HOSTILE),
        "the hostile label is shown as text: {facts:#}"
    );
    assert!(
        facts["people"][0]
            .as_str()
            .unwrap()
            .contains("acknowledged by alice"),
        "{facts:#}"
    );
    assert_eq!(facts["cookie"], "", "scripts never see the token's cookie");

    // The list, with the cookie the first visit set.
    browser.open(&format!("{}/incidents", app.addr)).await;
    let rows = browser
        .eval("[...document.querySelectorAll('table.incidents tbody tr a')].map(a => a.getAttribute('href'))")
        .await;
    assert_eq!(
        rows,
        json!([format!("/incidents/{id}"), format!("/incidents/{id}")])
    );

    let problems = browser.problems();
    assert!(
        problems.is_empty(),
        "the pages reported problems: {problems:#?}"
    );
}

/// The check above is only as good as what it can see: a page that logs an error and throws
/// is reported, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_reports_a_pages_console_errors_and_exceptions() {
    let mut browser = Browser::start().await;
    browser
        .open("data:text/html,<p>x</p><script>console.error('boom'); throw new Error('bang')</script>")
        .await;
    // Both come before the load event, in the order the page ran them.
    let problems = browser.problems();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with("console:") && problems[0].contains("boom"),
        "{problems:#?}"
    );
    assert!(
        problems[1].starts_with("exception:") && problems[1].contains("bang"),
        "{problems:#?}"
    );
}
