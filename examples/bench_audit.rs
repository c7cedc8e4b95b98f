//! After a durable benchmark run: was anything acknowledged lost, was anything applied twice,
//! did the engine get to every incident? For `scripts/bench` (issue 11, targets 4 and 6).
//!
//! ```text
//! cargo run --release --example bench_audit -- --data-dir DIR [--acked FILE]...
//! ```
//!
//! Run on a stopped server's data directory. It reads the SQLite file itself, with its own
//! queries, rather than through `remediator::store`: an audit should not trust the code it
//! audits (it only reads; nothing is written). What it checks:
//!
//! - **acknowledged → stored**: every delivery id a 200 answer named (`--acked`: the files
//!   the load generators wrote, one id per line) is a row of the intake table, and no id was
//!   named twice (a reused id would mean an acknowledged row was lost and its id taken again);
//! - **stored → applied, once**: the intake cursor is at the last row (everything stored was
//!   applied); every stored body is decoded and parsed again, and its alerts replayed as the
//!   intake applies them: the set of (fingerprint, startsAt) they carry is exactly the set of
//!   incidents (none missing, none extra), each incident's delivery count equals the number of
//!   times its alert was delivered (a counted repeat; more would be a delivery applied twice),
//!   its state is `resolved` exactly when a resolution was delivered, and it is `missed`
//!   exactly when its first delivery was a resolution;
//! - **nothing applied twice by the engine**: no two steps with the same incident, phase and
//!   position, no incident with two `match` decisions or two `resolved` ones (the `runs` table
//!   is keyed by incident, so two runs cannot be stored at all);
//! - **drain**: what is left on the engine's queue; of the incidents a firing opened (all but
//!   `missed`), how many the engine never decided (phase `new`), how many started a runbook
//!   and of those how many have their first step (`main`, position 0) stored as started, and
//!   how many were decided without a runbook (no rule, or a guard skipped it), each with at
//!   least one stored decision; with `--deadline`, how many of those first steps and first
//!   decisions are stored with a time after it (`late`: the store's own clock says when).
//!
//! Prints `AUDIT key=value ...`, and on stderr the first few problems found. Exit status 0
//! when it could audit (the caller judges the numbers), 2 when it could not.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use remediator::alert::{parse_webhook, AlertStatus};
use rusqlite::{Connection, OpenFlags};

#[derive(Parser, Debug)]
#[command(about = "no-loss, no-double-apply and drain audit of a benchmark's store")]
struct Args {
    /// The stopped server's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// Files of acknowledged delivery ids, one per line.
    #[arg(long)]
    acked: Vec<PathBuf>,
    /// When the drain had to be over (RFC 3339): incidents whose first step, or (without a
    /// runbook) whose first decision, is stored as later are counted as `late`.
    #[arg(long)]
    deadline: Option<String>,
}

/// What the stored deliveries say about one (fingerprint, startsAt).
#[derive(Default)]
struct Delivered {
    times: i64,
    resolved: bool,
    first_resolved: bool,
}

/// Problems are counted; the first few are shown.
struct Problems {
    count: usize,
    shown: usize,
}

impl Problems {
    fn add(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.shown < 8 {
            self.shown += 1;
            eprintln!("bench_audit: {}", what());
        }
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("bench_audit: {e:#}");
        std::process::exit(2);
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let path = args.data_dir.join(remediator::store::DB_FILE);
    if !path.exists() {
        bail!("{path:?} does not exist");
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open {path:?} read-only"))?;
    let mut p = Problems { count: 0, shown: 0 };
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| out.push((k.to_owned(), v));

    // Acknowledged → stored.
    let stored_ids: HashSet<i64> = query_col(&conn, "SELECT id FROM intake")?
        .into_iter()
        .collect();
    let mut acked = HashSet::new();
    let mut acked_dupes = 0usize;
    for file in &args.acked {
        let f = std::fs::File::open(file).with_context(|| format!("cannot read {file:?}"))?;
        for line in std::io::BufReader::new(f).lines() {
            let line = line.with_context(|| format!("cannot read {file:?}"))?;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let id: i64 = line
                .parse()
                .with_context(|| format!("{file:?}: {line:?} is not a delivery id"))?;
            if !acked.insert(id) {
                acked_dupes += 1;
                p.add(|| format!("delivery id {id} was acknowledged twice"));
            }
        }
    }
    let mut acked_missing = 0usize;
    for id in &acked {
        if !stored_ids.contains(id) {
            acked_missing += 1;
            p.add(|| format!("delivery {id} was acknowledged with a 200 but is not stored"));
        }
    }
    put("acked", acked.len().to_string());
    put("acked_dupes", acked_dupes.to_string());
    put("acked_missing", acked_missing.to_string());
    put("stored", stored_ids.len().to_string());

    // Stored → applied.
    let max_id = stored_ids.iter().copied().max().unwrap_or(0);
    let cursor: i64 = conn
        .query_row(
            "SELECT position FROM cursors WHERE name = 'engine'",
            [],
            |r| r.get(0),
        )
        .context("reading the intake cursor")?;
    if cursor != max_id {
        p.add(|| format!("the intake cursor is at {cursor}, the last stored delivery is {max_id}: stored deliveries were not applied"));
    }
    let mut replay: HashMap<(String, String), Delivered> = HashMap::new();
    let mut alerts = 0u64;
    let mut unreadable = 0usize;
    {
        let mut stmt = conn
            .prepare("SELECT id, body, encoding FROM intake ORDER BY id")
            .context("reading the intake")?;
        let mut rows = stmt.query([]).context("reading the intake")?;
        while let Some(row) = rows.next().context("reading the intake")? {
            let id: i64 = row.get(0)?;
            let body: Vec<u8> = row.get(1)?;
            let encoding: Option<String> = row.get(2)?;
            let json = match encoding.as_deref() {
                None => Ok(body),
                Some("lz4") => {
                    lz4_flex::decompress_size_prepended(&body).map_err(|e| e.to_string())
                }
                Some(other) => Err(format!("unknown encoding {other:?}")),
            };
            let parsed = json.and_then(|j| parse_webhook(&j).map_err(|e| e.to_string()));
            let n = match parsed {
                Ok(n) => n,
                Err(e) => {
                    unreadable += 1;
                    p.add(|| format!("stored delivery {id} does not read back: {e}"));
                    continue;
                }
            };
            for a in &n.alerts {
                alerts += 1;
                let key = (
                    a.fingerprint.as_str().to_owned(),
                    remediator::store::ts(a.starts_at),
                );
                let d = replay.entry(key).or_default();
                let resolved = a.status == AlertStatus::Resolved;
                if d.times == 0 {
                    d.first_resolved = resolved;
                }
                d.times += 1;
                d.resolved |= resolved;
            }
        }
    }
    put("alerts_stored", alerts.to_string());
    put("firings_stored", replay.len().to_string());
    put("unreadable", unreadable.to_string());

    let mut incidents = 0usize;
    let (mut extra, mut miscounted, mut wrong_state) = (0usize, 0usize, 0usize);
    let mut seen_keys = 0usize;
    {
        let mut stmt = conn
            .prepare(
                "SELECT i.id, i.fingerprint, i.starts_at, i.state, i.phase, s.deliveries
                 FROM incidents i LEFT JOIN incident_seen s ON s.incident_id = i.id",
            )
            .context("reading the incidents")?;
        let mut rows = stmt.query([]).context("reading the incidents")?;
        while let Some(row) = rows.next().context("reading the incidents")? {
            incidents += 1;
            let id: i64 = row.get(0)?;
            let key: (String, String) = (row.get(1)?, row.get(2)?);
            let state: String = row.get(3)?;
            let phase: String = row.get(4)?;
            let times: Option<i64> = row.get(5)?;
            let Some(d) = replay.get(&key) else {
                extra += 1;
                p.add(|| {
                    format!(
                        "incident {id} ({} {}) was delivered by no stored webhook",
                        key.0, key.1
                    )
                });
                continue;
            };
            seen_keys += 1;
            if times != Some(d.times) {
                miscounted += 1;
                p.add(|| {
                    format!(
                        "incident {id}: {times:?} deliveries counted, {} stored",
                        d.times
                    )
                });
            }
            let want_state = if d.resolved { "resolved" } else { "open" };
            if state != want_state || (phase == "missed") != d.first_resolved {
                wrong_state += 1;
                p.add(|| format!("incident {id}: state {state}, phase {phase}; the deliveries say {want_state}{}", if d.first_resolved { ", missed" } else { "" }));
            }
        }
    }
    let lost = replay.len().saturating_sub(seen_keys);
    if lost > 0 {
        p.add(|| format!("{lost} delivered firings are no incident"));
    }
    put("incidents", incidents.to_string());
    put("lost", lost.to_string());
    put("extra", extra.to_string());
    put("miscounted", miscounted.to_string());
    put("wrong_state", wrong_state.to_string());

    // Nothing applied twice by the engine.
    let dup_steps = count(
        &conn,
        "SELECT count(*) FROM (SELECT 1 FROM steps GROUP BY incident_id, phase, seq HAVING count(*) > 1)",
    )?;
    let dup_decisions = count(
        &conn,
        "SELECT count(*) FROM (SELECT 1 FROM decisions WHERE guard IN ('match', 'resolved')
         GROUP BY incident_id, guard HAVING count(*) > 1)",
    )?;
    if dup_steps > 0 {
        p.add(|| format!("{dup_steps} steps were stored twice (same incident, phase, position)"));
    }
    if dup_decisions > 0 {
        p.add(|| format!("{dup_decisions} incidents were decided twice (two match or two resolved decisions)"));
    }
    put("dup_steps", dup_steps.to_string());
    put("dup_decisions", dup_decisions.to_string());
    put(
        "runs",
        count(&conn, "SELECT count(*) FROM runs")?.to_string(),
    );

    // Drain.
    put(
        "queue_left",
        count(&conn, "SELECT count(*) FROM engine_queue")?.to_string(),
    );
    let opened = count(
        &conn,
        "SELECT count(*) FROM incidents WHERE phase != 'missed'",
    )?;
    let undecided = count(&conn, "SELECT count(*) FROM incidents WHERE phase = 'new'")?;
    let with_run = count(
        &conn,
        "SELECT count(*) FROM incidents i JOIN runs r ON r.incident_id = i.id",
    )?;
    let first_started = count(
        &conn,
        "SELECT count(*) FROM runs r WHERE EXISTS
         (SELECT 1 FROM steps s WHERE s.incident_id = r.incident_id AND s.phase = 'main' AND s.seq = 0)",
    )?;
    let decided_no_run = count(
        &conn,
        "SELECT count(*) FROM incidents i WHERE i.phase NOT IN ('new', 'missed')
         AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.incident_id = i.id)
         AND EXISTS (SELECT 1 FROM decisions d WHERE d.incident_id = i.id)",
    )?;
    let no_run_no_decision = count(
        &conn,
        "SELECT count(*) FROM incidents i WHERE i.phase NOT IN ('new', 'missed')
         AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.incident_id = i.id)
         AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.incident_id = i.id)",
    )?;
    put("opened", opened.to_string());
    put("undecided", undecided.to_string());
    put("with_run", with_run.to_string());
    put("first_step_started", first_started.to_string());
    put("run_no_first_step", (with_run - first_started).to_string());
    put("decided_no_run", decided_no_run.to_string());
    put("no_run_no_decision", no_run_no_decision.to_string());
    if let Some(deadline) = &args.deadline {
        let at = chrono::DateTime::parse_from_rfc3339(deadline)
            .with_context(|| format!("--deadline {deadline:?} is not an RFC 3339 time"))?
            .with_timezone(&chrono::Utc);
        // Stored times are fixed-width UTC text (`store::ts`, nanoseconds), so comparing the
        // text compares the times.
        let at = remediator::store::ts(at);
        let late_steps: i64 = conn
            .query_row(
                "SELECT count(*) FROM steps WHERE phase = 'main' AND seq = 0 AND started_at > ?1",
                [&at],
                |r| r.get(0),
            )
            .context("counting late first steps")?;
        let late_decisions: i64 = conn
            .query_row(
                "SELECT count(*) FROM (SELECT d.incident_id FROM decisions d
                 WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.incident_id = d.incident_id)
                 GROUP BY d.incident_id HAVING min(d.at) > ?1)",
                [&at],
                |r| r.get(0),
            )
            .context("counting late decisions")?;
        let last_first: Option<String> = conn
            .query_row(
                "SELECT max(started_at) FROM steps WHERE phase = 'main' AND seq = 0",
                [],
                |r| r.get(0),
            )
            .context("reading the last first step")?;
        put("late", (late_steps + late_decisions).to_string());
        put("late_first_steps", late_steps.to_string());
        put("late_decisions", late_decisions.to_string());
        put("last_first_step", last_first.unwrap_or_else(|| "-".into()));
    }
    put("problems", p.count.to_string());

    let line: Vec<String> = out.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("AUDIT {}", line.join(" "));
    Ok(())
}

fn query_col(conn: &Connection, sql: &str) -> anyhow::Result<Vec<i64>> {
    let mut stmt = conn.prepare(sql).with_context(|| sql.to_owned())?;
    let rows = stmt
        .query_map([], |r| r.get(0))
        .with_context(|| sql.to_owned())?;
    rows.collect::<Result<Vec<i64>, _>>()
        .with_context(|| sql.to_owned())
}

fn count(conn: &Connection, sql: &str) -> anyhow::Result<i64> {
    conn.query_row(sql, [], |r| r.get(0))
        .with_context(|| sql.to_owned())
}
