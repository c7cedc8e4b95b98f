//! `remediator incidents --fleet`: the fleet's incidents, as the running service reads them
//! from the fleet history (`GET /api/v1/incidents?scope=fleet`): one row per incident
//! identity, the replicas that saw it and the one that acted.

use std::io::{self, Write};

use anyhow::{bail, Context};
use serde_json::Value;

use super::client::{broken_pipe_is_the_end, printable, utc_text, write_table, Api};
use super::incidents::{Listing, Output, Pages, StateFilter};

const COLUMNS: [&str; 9] = [
    "STARTED",
    "FINGERPRINT",
    "STATE",
    "PHASE",
    "ALERT",
    "RULE",
    "TARGET",
    "ACTED BY",
    "REPLICAS",
];

/// Lists the fleet's incidents on stdout; returns the exit code.
pub async fn run(listing: Listing, output: Output) -> anyhow::Result<i32> {
    let api = Api::new(&listing.url, listing.token.clone())?;
    let limit = match listing.pages {
        Pages::One { limit } => limit,
        Pages::All => crate::http::MAX_PAGE,
    };
    let (mut incidents, mut before) = (Vec::new(), None::<String>);
    let next = loop {
        let mut query = vec![("scope", "fleet".to_string()), ("limit", limit.to_string())];
        match listing.state {
            StateFilter::Open => query.push(("state", "open".into())),
            StateFilter::Resolved => query.push(("state", "resolved".into())),
            StateFilter::All => {}
        }
        if let Some(b) = &before {
            query.push(("before", b.clone()));
        }
        let query = serde_urlencoded::to_string(&query).context("cannot build the query")?;
        let body = api.get(&format!("/api/v1/incidents?{query}")).await?;
        let Some(page) = body["incidents"].as_array() else {
            bail!(
                "{} answered without an `incidents` list: is it remediator?",
                api.base()
            );
        };
        incidents.extend(page.iter().cloned());
        let next = body["next"].as_str().map(str::to_owned);
        match (listing.pages, next) {
            (Pages::All, Some(n)) => before = Some(n),
            (_, n) => break n,
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = match output {
        Output::Json => serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({ "incidents": incidents, "next": next }),
        )
        .map_err(io::Error::from)
        .and_then(|()| writeln!(out)),
        Output::Table => {
            let rows: Vec<[String; COLUMNS.len()]> = incidents.iter().map(row).collect();
            write_table(&mut out, COLUMNS, &rows)
        }
    };
    if let Err(e) = written.and_then(|()| out.flush()) {
        return broken_pipe_is_the_end(e);
    }
    if let (Some(_), Output::Table) = (&next, output) {
        eprintln!("older incidents: add --all for every one");
    }
    Ok(0)
}

fn row(inc: &Value) -> [String; COLUMNS.len()] {
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => printable(s),
        other => printable(&other.to_string()),
    };
    let list = |v: &Value| {
        let names: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| text(if r.is_object() { &r["replica"] } else { r }))
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        }
    };
    [
        utc_text(&inc["starts_at"]),
        text(&inc["fingerprint"]),
        text(&inc["state"]),
        text(&inc["phase"]),
        text(&inc["alertname"]),
        text(&inc["rule"]),
        text(&inc["target"]),
        list(&inc["acted_by"]),
        list(&inc["replicas"]),
    ]
}
