//! `remediator run` and `remediator drill`: clients of the running service's
//! `POST /api/v1/runs`. `run` opens an incident through the real pipeline and prints it;
//! `drill` does so as a drill (announced in Slack, never paged, dry-run unless `--live`),
//! waits for it to end by polling the incident, and writes the Markdown report the DR plan's
//! test procedure asks for: each step with its duration, the total against the RTO, pass or
//! fail, and what needs updating.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::client::{printable, Api};
use super::incidents::Output;
use crate::domain::Break;

/// How often `drill` asks whether its incident ended (a cheap read of one incident).
const POLL: Duration = Duration::from_millis(50);

/// What `remediator run` / `drill` asks for: the arguments both commands share, parsed once.
#[derive(Debug, clap::Args)]
pub struct RunRequest {
    /// The rule, by name.
    pub rule: String,
    /// The service it acts on (for a rule whose target is picked by a label).
    #[arg(long)]
    pub service: Option<String>,
    /// A label of the synthetic alert, name=value (repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE")]
    pub labels: Vec<String>,
    /// Who starts it (default $USER).
    #[arg(long)]
    pub by: Option<String>,
}

impl RunRequest {
    fn body(&self) -> anyhow::Result<Value> {
        let mut labels = serde_json::Map::new();
        for l in &self.labels {
            let Some((k, v)) = l.split_once('=') else {
                bail!("--label {l:?}: write it as name=value");
            };
            labels.insert(k.trim().to_owned(), json!(v.trim()));
        }
        Ok(json!({
            "rule": self.rule,
            "service": self.service,
            "labels": labels,
            "by": super::pauses::by_or_user(self.by.clone()),
        }))
    }
}

/// `remediator run`: starts the rule's runbook and prints the incident it opened.
pub async fn run(api: &Api, req: &RunRequest, output: Output) -> anyhow::Result<i32> {
    let answer = api
        .send(reqwest::Method::POST, "/api/v1/runs", Some(&req.body()?))
        .await?;
    match output {
        Output::Json => println!("{answer}"),
        Output::Table => println!(
            "incident {} opened for rule {} by {} ({}); follow it with `remediator incidents` or {}/api/v1/incidents/{}",
            answer["incident"],
            printable(answer["rule"].as_str().unwrap_or("")),
            printable(answer["by"].as_str().unwrap_or("")),
            labels_text(&answer["labels"]),
            api.base(),
            answer["incident"]
        ),
    }
    Ok(0)
}

/// `remediator drill`'s options.
pub struct Drill {
    pub live: bool,
    pub break_with: Option<Break>,
    pub report: Option<std::path::PathBuf>,
    /// How long to wait for the drill to end.
    pub wait: Duration,
}

/// `remediator drill`: exit 0 when the drill passed, 1 when it failed.
pub async fn drill(api: &Api, req: &RunRequest, drill: &Drill) -> anyhow::Result<i32> {
    let mut body = req.body()?;
    body["drill"] = json!(true);
    body["live"] = json!(drill.live);
    if let Some(b) = drill.break_with {
        body["break"] = json!(b.as_str());
    }
    let answer = api
        .send(reqwest::Method::POST, "/api/v1/runs", Some(&body))
        .await?;
    let id = answer["incident"]
        .as_i64()
        .context("the service did not say which incident the drill opened")?;
    eprintln!("drill incident {id} opened; waiting for it to end");
    let deadline = tokio::time::Instant::now() + drill.wait;
    let incident = loop {
        let inc = api.get(&format!("/api/v1/incidents/{id}")).await?;
        if inc["state"] == "resolved" && inc["time_to_recover_seconds"].is_number() {
            break inc;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "drill incident {id} has not ended within {} (phase {}); see {}/api/v1/incidents/{id}",
                crate::domain::duration::format(drill.wait),
                inc["phase"],
                api.base()
            );
        }
        tokio::time::sleep(POLL).await;
    };
    let (text, passed) = report(&incident, drill.live);
    match &drill.report {
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write the report to {}", path.display()))?;
            eprintln!(
                "drill {}: report written to {}",
                if passed { "passed" } else { "FAILED" },
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(if passed { 0 } else { 1 })
}

fn labels_text(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .map(|s| printable(&s))
        .unwrap_or_default()
}

fn secs(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn took(step: &Value) -> Option<f64> {
    let at = |k: &str| {
        step[k]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    };
    let (start, end) = (at("started_at")?, at("ended_at")?);
    Some((end - start).num_milliseconds() as f64 / 1000.0)
}

fn seconds_text(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m {:02}s", (s / 60.0).floor(), (s % 60.0).round() as u64)
    }
}

/// The drill's Markdown report and whether it passed, from the incident as the API shows it
/// (with its `decisions` and `steps`). Pure, so that its shape is tested without a service.
pub fn report(inc: &Value, live: bool) -> (String, bool) {
    let s = |v: &Value| printable(v.as_str().unwrap_or("-"));
    let rule = s(&inc["rule"]);
    let mut out = String::new();
    out.push_str(&format!("# DR drill: {rule}\n\n"));
    out.push_str(&format!(
        "- Incident: {} (origin {}, started by {})\n",
        inc["id"],
        s(&inc["origin"]),
        s(&inc["started"]["by"])
    ));
    out.push_str(&format!(
        "- Mode: {}\n",
        match (live, inc["started"]["break_with"].as_str()) {
            (false, _) => "dry-run (the plan and the guards recorded; no step executed)".to_owned(),
            (true, Some(b)) => format!("live, target broken by {b} first"),
            (true, None) => "live".to_owned(),
        }
    ));
    out.push_str(&format!(
        "- Alert: {} ({})\n- Started: {}\n- Ended: {}\n- Outcome: {}\n\n",
        s(&inc["alertname"]),
        labels_text(&inc["labels"]),
        s(&inc["starts_at"]),
        s(&inc["ends_at"]),
        s(&inc["phase"])
    ));
    let decisions = inc["decisions"].as_array().cloned().unwrap_or_default();
    out.push_str("## Decisions\n\n");
    for d in &decisions {
        out.push_str(&format!(
            "- {} {}: {}\n",
            s(&d["guard"]),
            s(&d["verdict"]),
            s(&d["reason"])
        ));
    }
    let steps = inc["steps"].as_array().cloned().unwrap_or_default();
    out.push_str("\n## Steps\n\n");
    if steps.is_empty() {
        out.push_str("No step was executed");
        if let Some(d) = decisions.iter().find(|d| d["guard"] == "dry_run") {
            out.push_str(&format!(" ({})", s(&d["reason"])));
        }
        out.push_str(".\n");
    } else {
        out.push_str(
            "| # | phase | step | outcome | duration | detail |\n|---|---|---|---|---|---|\n",
        );
        for (i, st) in steps.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                i + 1,
                s(&st["phase"]),
                s(&st["kind"]),
                s(&st["outcome"]),
                took(st).map_or_else(|| "-".into(), seconds_text),
                s(&st["detail"])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .replace('|', "\\|")
            ));
        }
    }
    let total = secs(&inc["time_to_recover_seconds"]);
    let rto = secs(&inc["rto_seconds"]);
    out.push_str("\n## Against the RTO\n\n");
    if live {
        out.push_str(&format!(
            "Total {} against an RTO of {}: {}\n",
            total.map_or_else(|| "-".into(), seconds_text),
            rto.map_or_else(|| "-".into(), seconds_text),
            match inc["rto_met"].as_bool() {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "unknown",
            }
        ));
    } else {
        out.push_str(&format!(
            "Not timed: a dry-run executes no step (RTO {}).\n",
            rto.map_or_else(|| "-".into(), seconds_text)
        ));
    }
    // What needs updating: failed steps, a missed RTO, guards that skipped.
    let mut todo = Vec::new();
    for st in steps.iter().filter(|st| st["outcome"] != "ok") {
        todo.push(format!(
            "step {} ({}) {}: {}",
            s(&st["kind"]),
            s(&st["phase"]),
            s(&st["outcome"]),
            s(&st["detail"]).lines().next().unwrap_or("")
        ));
    }
    if live && inc["rto_met"] == json!(false) {
        todo.push("the RTO was missed: the runbook or the RTO needs updating".into());
    }
    for d in decisions
        .iter()
        .filter(|d| d["verdict"] == "skip" && (live || d["guard"] != "dry_run"))
    {
        todo.push(format!(
            "guard {} skipped: {}",
            s(&d["guard"]),
            s(&d["reason"])
        ));
    }
    let dry_run_decided = decisions
        .iter()
        .any(|d| d["guard"] == "dry_run" && d["verdict"] == "skip");
    if !live && !dry_run_decided {
        todo.push("the plan did not reach the dry-run decision".into());
    }
    let passed = todo.is_empty()
        && if live {
            inc["phase"] == "recovered" && inc["rto_met"] == json!(true)
        } else {
            true
        };
    out.push_str(&format!(
        "\n## Result: {}\n\n## What needs updating\n\n",
        if passed { "PASS" } else { "FAIL" }
    ));
    if todo.is_empty() {
        out.push_str("Nothing.\n");
    }
    for t in todo {
        out.push_str(&format!("- {t}\n"));
    }
    (out, passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(phase: &str, ttr: f64, outcome: &str) -> Value {
        json!({
            "id": 7, "rule": "single-service-failure", "origin": "drill",
            "started": { "by": "alice", "dry_run": false },
            "alertname": "ServiceDown", "labels": { "alertname": "ServiceDown", "service": "redis" },
            "starts_at": "2026-12-03T10:00:00.000000000Z", "ends_at": "2026-12-03T10:00:04.000000000Z",
            "phase": phase, "time_to_recover_seconds": ttr, "rto_seconds": 900.0,
            "rto_met": ttr <= 900.0,
            "decisions": [{ "guard": "match", "verdict": "continue", "reason": "rule single-service-failure" }],
            "steps": [
                { "phase": "main", "kind": "restart", "outcome": "ok", "detail": "restarted redis",
                  "started_at": "2026-12-03T10:00:00.500000000Z", "ended_at": "2026-12-03T10:00:02.000000000Z" },
                { "phase": "main", "kind": "wait_healthy", "outcome": outcome, "detail": "healthy",
                  "started_at": "2026-12-03T10:00:02.000000000Z", "ended_at": "2026-12-03T10:00:04.000000000Z" },
            ],
        })
    }

    #[test]
    fn a_recovered_live_drill_within_its_rto_passes_with_each_step_timed() {
        let (text, passed) = report(&incident("recovered", 4.0, "ok"), true);
        assert!(passed, "{text}");
        assert!(
            text.contains("| 1 | main | restart | ok | 1.5 s | restarted redis |"),
            "{text}"
        );
        assert!(
            text.contains("| 2 | main | wait_healthy | ok | 2.0 s | healthy |"),
            "{text}"
        );
        assert!(
            text.contains("Total 4.0 s against an RTO of 15m 00s: met"),
            "{text}"
        );
        assert!(text.contains("## Result: PASS"), "{text}");
    }

    #[test]
    fn a_failed_step_and_a_missed_rto_are_what_needs_updating() {
        let (text, passed) = report(&incident("failed", 1000.0, "timed_out"), true);
        assert!(!passed);
        assert!(
            text.contains("- step wait_healthy (main) timed_out: healthy"),
            "{text}"
        );
        assert!(text.contains("- the RTO was missed"), "{text}");
        assert!(text.contains("## Result: FAIL"), "{text}");
    }
}
