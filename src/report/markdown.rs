//! The post-mortem as Markdown for the wiki: summary, timeline, time to recover against the
//! RTO, what automation did and what people did, and the empty "Root cause" and "Lessons
//! learned" sections the DR plan's incident response step 5 asks people to write.
//!
//! Every value that came from outside (labels, reasons, step details, names) goes through
//! [`text`], which escapes what Markdown would read as markup (a `|` that would split a
//! table cell, a `<script>` a wiki would render, a `[link](…)`) and turns line breaks and
//! control characters into spaces, so it reads as written and stays in its cell.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::{seconds_text, Actor, Event, Timeline};

/// A value from outside as Markdown text: markup characters backslash-escaped (CommonMark
/// takes a backslash before any ASCII punctuation as that character), line breaks and control
/// characters as spaces.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '&' | '#' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

fn offset(secs: f64) -> String {
    if secs < 0.0 {
        seconds_text(secs)
    } else {
        format!("+{}", seconds_text(secs))
    }
}

fn who(actor: Actor) -> &'static str {
    match actor {
        Actor::Alertmanager => "Alertmanager",
        Actor::Automation => "automation",
        Actor::People => "people",
    }
}

/// `what` and its duration: `step 3 restart: ok (2.1s)`.
fn what(e: &Event) -> String {
    match e.duration_seconds {
        Some(d) => format!("{} ({})", text(&e.what), seconds_text(d)),
        None => text(&e.what),
    }
}

/// A list item of one event: `2026-… (+1.2s): what: detail`.
fn item(out: &mut String, e: &Event) {
    let detail = if e.detail.is_empty() {
        String::new()
    } else {
        format!(": {}", text(&e.detail))
    };
    let _ = writeln!(
        out,
        "- {} ({}) {}{detail}",
        when(e.at),
        offset(e.offset_seconds),
        what(e)
    );
}

/// The whole post-mortem.
pub fn render(t: &Timeline) -> String {
    let s = &t.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Post-mortem: incident {}, {}\n",
        s.id,
        text(&s.alertname)
    );
    let _ = writeln!(out, "## Summary\n");
    let labels: Vec<String> = s
        .labels
        .iter()
        .map(|(k, v)| format!("{}={}", text(k), text(v)))
        .collect();
    let _ = writeln!(out, "- **Alert:** {}", text(&s.alertname));
    if s.origin.is_synthetic() {
        let _ = writeln!(
            out,
            "- **Origin:** {}{}",
            if s.origin == crate::domain::Origin::Drill {
                "DRILL (`remediator drill`, nobody paged)"
            } else {
                "started by hand (`remediator run`)"
            },
            s.started_by
                .as_deref()
                .map(|by| format!(", by {}", text(by)))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "- **Labels:** {}", labels.join(", "));
    match &s.rule {
        Some(rule) => {
            let mut facts = vec![text(rule)];
            facts.extend(s.priority.map(|p| p.to_string()));
            facts.extend(s.owner.as_deref().map(|o| format!("owner {}", text(o))));
            let _ = writeln!(out, "- **Rule:** {}", facts.join(", "));
        }
        None => {
            let _ = writeln!(out, "- **Rule:** none matched");
        }
    }
    let _ = writeln!(
        out,
        "- **Target:** {}",
        s.target.as_deref().map_or("none".to_string(), text)
    );
    let _ = writeln!(out, "- **Fired:** {}", when(s.fired_at));
    let _ = writeln!(out, "- **Received:** {}", when(s.received_at));
    let _ = writeln!(
        out,
        "- **Resolved:** {}",
        s.resolved_at.map_or("not yet".to_string(), when)
    );
    let outcome = match s.run_outcome {
        Some(o) => format!("runbook {o} (phase {})", s.phase),
        None => format!("no runbook ended (phase {})", s.phase),
    };
    let _ = writeln!(out, "- **Outcome:** {outcome}");
    let _ = writeln!(out, "- **Time to recover:** {}\n", t.recovery.text);

    let _ = writeln!(out, "## Timeline\n");
    let _ = writeln!(out, "| Time | Since fired | Who | What | Detail |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for e in &t.events {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            when(e.at),
            offset(e.offset_seconds),
            who(e.actor),
            what(e),
            text(&e.detail)
        );
    }
    out.push('\n');

    let _ = writeln!(out, "## Time to recover\n");
    let _ = writeln!(out, "- **Against the RTO:** {}", t.recovery.text);
    match t.recovery.rto_seconds {
        Some(rto) => {
            let _ = writeln!(out, "- **RTO:** {}", seconds_text(rto));
        }
        None => {
            let _ = writeln!(out, "- **RTO:** none (no rule matched)");
        }
    }
    if let Some(run) = t.recovery.runbook_seconds {
        let _ = writeln!(out, "- **Runbook:** {}", seconds_text(run));
    }
    let steps: f64 = t.steps.iter().map(|s| s.duration_seconds).sum();
    let _ = writeln!(
        out,
        "- **Steps:** {} ({} in all)\n",
        t.steps.len(),
        seconds_text(steps)
    );

    let _ = writeln!(out, "## What automation did\n");
    let mut any = false;
    for e in t.by(Actor::Automation) {
        item(&mut out, e);
        any = true;
    }
    if !any {
        let _ = writeln!(out, "- nothing");
    }
    out.push('\n');
    let _ = writeln!(out, "## What people did\n");
    let mut any = false;
    for e in t.by(Actor::People) {
        item(&mut out, e);
        any = true;
    }
    if !any {
        let _ = writeln!(
            out,
            "- nothing recorded: no acknowledgement, button, approval or pause"
        );
    }
    out.push('\n');
    let _ = writeln!(out, "## Root cause\n");
    let _ = writeln!(out, "## Lessons learned");
    out
}
