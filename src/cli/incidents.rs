//! `remediator incidents`: a client of the running service's `GET /api/v1/incidents`.
//!
//! It asks the service rather than opening the store, as `pause`/`resume` do: it sees what
//! the service sees, needs no access to its data directory, and never opens (or migrates) a
//! store another process is writing. Pages are followed with the API's `next` cursor; with
//! `--all` each page is written out as it arrives, so a million incidents never sit in memory.
//!
//! The table is for people (aligned columns, no colours, whether or not stdout is a
//! terminal, as amtool does); `--output json` is the API's own shape for scripts.

use std::io::{self, Write};

use anyhow::{bail, Context};
use secrecy::SecretString;
use serde_json::Value;

use super::client::{broken_pipe_is_the_end, printable, utc_text, write_row, Api};

/// How a command prints (amtool's `-o, --output`): `incidents` and `simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's own JSON, as it answers (`{"incidents": [...], "next": ...}` for incidents).
    Json,
}

/// Which incidents `incidents` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateFilter {
    /// Still firing.
    Open,
    /// Resolved by Alertmanager.
    Resolved,
    /// Both.
    All,
}

/// One page, or every page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    One { limit: usize },
    All,
}

/// What to ask the service for.
pub struct Listing {
    /// The service's base URL, e.g. `http://127.0.0.1:9095`.
    pub url: String,
    /// Sent as the bearer token (`api.token`).
    pub token: Option<SecretString>,
    pub state: StateFilter,
    /// Only incidents older than this id (a page's `next`).
    pub before: Option<i64>,
    pub pages: Pages,
}

struct Page {
    incidents: Vec<Value>,
    next: Option<i64>,
}

/// Lists the incidents on stdout; returns the exit code.
pub async fn run(listing: Listing, output: Output) -> anyhow::Result<i32> {
    let api = Api::new(&listing.url, listing.token.clone())?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut printer: Box<dyn Printer> = match output {
        Output::Table => Box::new(Table::default()),
        Output::Json => Box::new(Json::default()),
    };
    let limit = match listing.pages {
        Pages::One { limit } => limit,
        Pages::All => crate::http::MAX_PAGE,
    };
    let mut before = listing.before;
    let next = loop {
        let page = fetch(&api, &listing, before, limit).await?;
        if let Err(e) = printer
            .page(&mut out, &page.incidents)
            .and_then(|()| out.flush())
        {
            return broken_pipe_is_the_end(e);
        }
        match (listing.pages, page.next) {
            (Pages::All, Some(next)) => before = Some(next),
            (_, next) => break next,
        }
    };
    if let Err(e) = printer.finish(&mut out, next).and_then(|()| out.flush()) {
        return broken_pipe_is_the_end(e);
    }
    if let (Some(next), Output::Table) = (next, output) {
        eprintln!("older incidents: add --before {next} for the next page, or --all for every one");
    }
    Ok(0)
}

async fn fetch(
    api: &Api,
    listing: &Listing,
    before: Option<i64>,
    limit: usize,
) -> anyhow::Result<Page> {
    let mut query = vec![("limit", limit.to_string())];
    match listing.state {
        StateFilter::Open => query.push(("state", "open".into())),
        StateFilter::Resolved => query.push(("state", "resolved".into())),
        StateFilter::All => {}
    }
    if let Some(before) = before {
        query.push(("before", before.to_string()));
    }
    let query = serde_urlencoded::to_string(&query).context("cannot build the query")?;
    let body = api.get(&format!("/api/v1/incidents?{query}")).await?;
    let Some(incidents) = body["incidents"].as_array() else {
        bail!(
            "{} answered without an `incidents` list: is it remediator?",
            api.base()
        );
    };
    Ok(Page {
        incidents: incidents.clone(),
        next: body["next"].as_i64(),
    })
}

/// Writes pages as they arrive.
trait Printer {
    fn page(&mut self, out: &mut dyn Write, incidents: &[Value]) -> io::Result<()>;
    /// After the last page; `next` is set when more pages were left unasked.
    fn finish(&mut self, out: &mut dyn Write, next: Option<i64>) -> io::Result<()>;
}

const COLUMNS: [&str; 10] = [
    "ID",
    "STATE",
    "PHASE",
    "PRIORITY",
    "ALERT",
    "TARGET",
    "RULE",
    "DELIVERIES",
    "STARTED",
    "ACKED BY",
];

/// Columns as wide as the widest cell seen so far, two spaces apart. With `--all` the widths
/// come from the first page and only grow, so rows stay aligned unless a later page holds a
/// longer name (kubectl's chunked tables behave the same).
#[derive(Default)]
struct Table {
    widths: Option<[usize; COLUMNS.len()]>,
}

impl Printer for Table {
    fn page(&mut self, out: &mut dyn Write, incidents: &[Value]) -> io::Result<()> {
        let rows: Vec<[String; COLUMNS.len()]> = incidents.iter().map(row).collect();
        let first = self.widths.is_none();
        let widths = self
            .widths
            .get_or_insert_with(|| COLUMNS.map(|c| c.chars().count()));
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        if first {
            write_row(out, widths, &COLUMNS.map(String::from))?;
        }
        for r in &rows {
            write_row(out, widths, r)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write, _next: Option<i64>) -> io::Result<()> {
        if self.widths.is_none() {
            self.page(out, &[])?;
        }
        Ok(())
    }
}

fn row(inc: &Value) -> [String; COLUMNS.len()] {
    let text = |key: &str| match &inc[key] {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => printable(s),
        other => printable(&other.to_string()),
    };
    let started = utc_text(&inc["starts_at"]);
    [
        text("id"),
        text("state"),
        text("phase"),
        text("priority"),
        text("alertname"),
        text("target"),
        text("rule"),
        text("deliveries"),
        started,
        text("acked_by"),
    ]
}

/// The API's page shape, one incident a line, written as pages arrive.
#[derive(Default)]
struct Json {
    started: bool,
    any: bool,
}

impl Printer for Json {
    fn page(&mut self, out: &mut dyn Write, incidents: &[Value]) -> io::Result<()> {
        if !self.started {
            write!(out, "{{\"incidents\": [")?;
            self.started = true;
        }
        for inc in incidents {
            write!(out, "{}\n  ", if self.any { "," } else { "" })?;
            serde_json::to_writer(&mut *out, inc)?;
            self.any = true;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write, next: Option<i64>) -> io::Result<()> {
        self.page(out, &[])?;
        let next = next.map_or("null".to_string(), |n| n.to_string());
        if self.any {
            writeln!(out, "\n], \"next\": {next}}}")
        } else {
            writeln!(out, "], \"next\": {next}}}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(printer: &mut dyn Printer, pages: &[Vec<Value>], next: Option<i64>) -> String {
        let mut out = Vec::new();
        for p in pages {
            printer.page(&mut out, p).unwrap();
        }
        printer.finish(&mut out, next).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn incident(id: i64, alertname: &str) -> Value {
        json!({"id": id, "state": "open", "phase": "escalated", "priority": "P1",
               "alertname": alertname, "target": "service:postgres", "rule": "postgres-down",
               "deliveries": 3, "starts_at": "2026-11-25T22:07:00.591565000Z", "acked_by": null})
    }

    #[test]
    fn the_table_aligns_every_column_and_marks_empty_cells() {
        let text = render(
            &mut Table::default(),
            &[vec![incident(12, "PostgresDown"), incident(9, "X")]],
            None,
        );
        assert_eq!(
            text,
            "\
ID  STATE  PHASE      PRIORITY  ALERT         TARGET            RULE           DELIVERIES  STARTED                  ACKED BY
12  open   escalated  P1        PostgresDown  service:postgres  postgres-down  3           2026-11-25 22:07:00 UTC  -
9   open   escalated  P1        X             service:postgres  postgres-down  3           2026-11-25 22:07:00 UTC  -
"
        );
    }

    #[test]
    fn an_empty_listing_is_the_header_alone() {
        let text = render(&mut Table::default(), &[], None);
        assert_eq!(text.lines().count(), 1);
        assert!(text.starts_with("ID  STATE  PHASE"));
    }

    #[test]
    fn control_characters_in_labels_never_reach_the_terminal() {
        let text = render(
            &mut Table::default(),
            &[vec![incident(1, "Evil\u{1b}[31mRed\nline")]],
            None,
        );
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("Evil\\u{1b}[31mRed\\nline"), "{text}");
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn json_pages_join_into_one_document_with_the_last_next() {
        let text = render(
            &mut Json::default(),
            &[
                vec![incident(3, "A"), incident(2, "B")],
                vec![incident(1, "C")],
            ],
            Some(1),
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        let ids: Vec<i64> = v["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [3, 2, 1]);
        assert_eq!(v["next"], 1);
        assert_eq!(text.lines().count(), 5, "one incident a line: {text}");

        let empty: Value = serde_json::from_str(&render(&mut Json::default(), &[], None)).unwrap();
        assert_eq!(empty, json!({"incidents": [], "next": null}));
    }
}
