//! `remediator pause`, `resume` and `pauses`: clients of the running service's
//! `/api/v1/pauses`, like `incidents`. The service checks every field (the rules in force,
//! the services it knows); its refusal is printed as it gave it, with a non-zero exit.

use std::io::{self, Write};

use anyhow::bail;
use serde_json::{json, Value};

use super::client::{broken_pipe_is_the_end, printable, utc_text, write_table, Api};
use super::incidents::Output;

/// What `remediator pause` asks for.
pub struct PauseRequest {
    pub rule: Option<String>,
    pub service: Option<String>,
    pub all: bool,
    /// `--for`, as written (`2h`).
    pub length: Option<String>,
    pub until: Option<String>,
    pub reason: String,
    /// `--by`, else `$USER`, else the service's default.
    pub by: Option<String>,
}

/// Which pauses `remediator resume` ends.
pub enum Resume {
    One(i64),
    All,
}

/// Who is at the keyboard, unless `--by` says: `$USER` (`$USERNAME` elsewhere).
pub fn by_or_user(by: Option<String>) -> Option<String> {
    by.or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .filter(|b| !b.trim().is_empty())
}

/// Sets the pause; prints it (scope, until, id, and how to end it early).
pub async fn pause(api: &Api, req: PauseRequest, output: Output) -> anyhow::Result<i32> {
    let mut body = json!({ "reason": req.reason });
    for (key, value) in [
        ("rule", req.rule),
        ("service", req.service),
        ("for", req.length),
        ("until", req.until),
        ("by", by_or_user(req.by)),
    ] {
        if let Some(v) = value {
            body[key] = json!(v);
        }
    }
    if req.all {
        body["all"] = json!(true);
    }
    let p = api
        .send(reqwest::Method::POST, "/api/v1/pauses", Some(&body))
        .await?;
    print(match output {
        Output::Json => format!("{p}\n"),
        Output::Table => {
            let id = &p["id"];
            format!(
                "Paused {} until {}, by {}: {}\nPause {id}; end it early with `remediator resume {id}`\n",
                text(&p["scope"]),
                utc_text(&p["until"]),
                text(&p["by"]),
                text(&p["reason"]),
            )
        }
    })
}

/// Ends one pause or every one in force; prints what was ended.
pub async fn resume(
    api: &Api,
    which: Resume,
    by: Option<String>,
    output: Output,
) -> anyhow::Result<i32> {
    let path = match which {
        Resume::One(id) => format!("/api/v1/pauses/{id}"),
        Resume::All => "/api/v1/pauses".to_string(),
    };
    let path = match by_or_user(by) {
        Some(by) => format!("{path}?{}", serde_urlencoded::to_string([("by", by)])?),
        None => path,
    };
    let answer = api.send(reqwest::Method::DELETE, &path, None).await?;
    let Some(ended) = answer["ended"].as_array() else {
        bail!(
            "{} answered without an `ended` list: is it remediator?",
            api.base()
        );
    };
    print(match output {
        Output::Json => format!("{answer}\n"),
        Output::Table => {
            let mut out = String::new();
            for p in ended {
                out.push_str(&format!(
                    "Resumed pause {} ({}, set by {}: {})\n",
                    p["id"],
                    text(&p["scope"]),
                    text(&p["by"]),
                    text(&p["reason"])
                ));
            }
            match (&which, &answer["pause"]) {
                (Resume::One(id), p) if ended.is_empty() && p.is_object() => out.push_str(
                    &format!("Pause {id} had already ended: {}\n", ended_text(p)),
                ),
                (Resume::All, _) if ended.is_empty() => out.push_str("No pause was in force\n"),
                _ => {}
            }
            out
        }
    })
}

/// Lists the pauses in force, or (`all`) every pause with how it ended.
pub async fn list(api: &Api, all: bool, output: Output) -> anyhow::Result<i32> {
    let answer = api
        .get(if all {
            "/api/v1/pauses?all=true"
        } else {
            "/api/v1/pauses"
        })
        .await?;
    let Some(pauses) = answer["pauses"].as_array() else {
        bail!(
            "{} answered without a `pauses` list: is it remediator?",
            api.base()
        );
    };
    print(match output {
        Output::Json => format!("{answer}\n"),
        Output::Table => table(pauses),
    })
}

const COLUMNS: [&str; 7] = ["ID", "STATE", "SCOPE", "BY", "UNTIL", "ENDED", "REASON"];

fn table(pauses: &[Value]) -> String {
    let rows: Vec<[String; COLUMNS.len()]> = pauses
        .iter()
        .map(|p| {
            [
                text(&p["id"]),
                text(&p["state"]),
                text(&p["scope"]),
                text(&p["by"]),
                utc_text(&p["until"]),
                match p["state"].as_str() {
                    Some("active") => "-".into(),
                    _ => ended_text(p),
                },
                text(&p["reason"]),
            ]
        })
        .collect();
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_table(&mut out, COLUMNS, &rows);
    String::from_utf8_lossy(&out).into_owned()
}

/// How a pause that is over ended: "resumed by bob at …" or "expired at …".
fn ended_text(p: &Value) -> String {
    match p["state"].as_str() {
        Some("resumed") => format!(
            "resumed by {} at {}",
            text(&p["ended_by"]),
            utc_text(&p["ended_at"])
        ),
        Some("expired") => format!("expired at {}", utc_text(&p["until"])),
        _ => "still in force".into(),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => printable(s),
        other => printable(&other.to_string()),
    }
}

fn print(text: String) -> anyhow::Result<i32> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        Err(e) => broken_pipe_is_the_end(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_pause_and_how_it_ended() {
        let pauses = [
            json!({"id": 2, "state": "active", "scope": "rule postgres-down", "by": "alice",
                   "until": "2026-12-03T14:00:00.000000000Z", "ended_at": null, "ended_by": null,
                   "reason": "db maintenance"}),
            json!({"id": 1, "state": "resumed", "scope": "service redis", "by": "bob",
                   "until": "2026-12-03T13:00:00.000000000Z",
                   "ended_at": "2026-12-03T12:30:00.000000000Z", "ended_by": "carol",
                   "reason": "evil\u{1b}[31m"}),
        ];
        assert_eq!(
            table(&pauses),
            "\
ID  STATE    SCOPE               BY     UNTIL                    ENDED                                        REASON
2   active   rule postgres-down  alice  2026-12-03 14:00:00 UTC  -                                            db maintenance
1   resumed  service redis       bob    2026-12-03 13:00:00 UTC  resumed by carol at 2026-12-03 12:30:00 UTC  evil\\u{1b}[31m
"
        );
    }
}
