//! Alert → first step, for `scripts/bench` (issue 11, target 1).
//!
//! ```text
//! cargo run --release --example bench_latency -- --url http://127.0.0.1:PORT \
//!     [--rate 20] [--count 200] [--wait 10] [--acked FILE] [--csv FILE]
//! ```
//!
//! POSTs `--count` webhooks to `URL/hooks/alertmanager` at a steady `--rate` per second, each
//! with one firing alert of a new fingerprint (`alertname=BenchLatency`, `host=lat-<i>`), so
//! each opens an incident. The schedule is open-loop, as Alertmanager's is: each POST starts
//! at its slot on its own task, whether or not the one before has been answered. For each
//! alert it notes the wall time just before the request is sent and the POST's own latency
//! (until the whole response is read). Once every POST is answered it reads the incidents
//! back from the service's API (`GET /api/v1/incidents`, then `GET /api/v1/incidents/{id}`)
//! until each one's first step (`phase` main, `seq` 0) shows a `started_at`, for at most
//! `--wait` seconds, and takes alert → first step as that `started_at` minus the POST's
//! start. The store writes times with nanoseconds (`store::ts`) from the same wall clock
//! (`SystemClock`, `Utc::now()`) on the same machine, so the difference is exact to the
//! clock's resolution, as long as the wall clock is not stepped meanwhile: the run's wall time
//! is compared with its monotonic time and the difference printed (`clock_step_us`).
//!
//! The server needs a rule that matches these alerts, whose first step is `notify`, whose
//! target differs per alert (otherwise the dedup guard skips every incident after the first
//! while it is open) and whose limits let every one of them run: `scripts/bench` writes it.
//!
//! Prints one line, `LATENCY key=value ...` (microseconds; a first step that never showed
//! counts as infinitely late, `inf`), writes the acknowledged delivery ids to `--acked` (one
//! per line, for `bench_audit`) and each alert to `--csv`. Exit status 0 when it measured
//! (the targets are judged by the caller), 2 when it could not.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Parser;
use remediator::alert::{Fingerprint, Labels};

#[derive(Parser, Debug)]
#[command(about = "alert → first step latency at a steady rate (see scripts/bench)")]
struct Args {
    /// The service's base URL (127.0.0.1 only).
    #[arg(long)]
    url: String,
    /// Alerts per second.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
    rate: u32,
    /// Alerts in all (each a webhook of its own).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=2000))]
    count: u32,
    /// Seconds to wait, after the last answer, for every first step to show.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    wait: u64,
    /// Where the acknowledged delivery ids go (one per line).
    #[arg(long)]
    acked: Option<PathBuf>,
    /// Where each alert's numbers go (CSV).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// The server's pid: its peak RSS (VmHWM) is read once every POST is answered, before the
    /// API is read back (which allocates in the server) and printed as `server_hwm_kib`.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// What one POST did.
struct Sent {
    index: u32,
    fingerprint: String,
    /// Wall time just before the request went out.
    started: DateTime<Utc>,
    /// Until the whole response was read.
    took: Duration,
    status: Option<u16>,
    error: Option<String>,
    delivery: Option<i64>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => {}
        Err(e) => {
            eprintln!("bench_latency: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_string();
    let host = reqwest::Url::parse(&base)
        .with_context(|| format!("--url {base:?} is not a URL"))?
        .host_str()
        .map(str::to_owned);
    if host.as_deref() != Some("127.0.0.1") {
        bail!("--url must point at 127.0.0.1 (the benchmark sends load nowhere else)");
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let hook = format!("{base}/hooks/alertmanager");
    // One alert's startsAt, as Prometheus would have evaluated it a little before.
    let starts =
        (Utc::now() - chrono::Duration::seconds(30)).to_rfc3339_opts(SecondsFormat::Millis, true);

    // The wall clock against the monotonic one over the whole run: alert → first step is a
    // difference of wall times (ours and the server's), so a step of the clock in between
    // would be measured as latency. The caller refuses a run whose clock moved.
    let (wall0, mono0) = (Utc::now(), Instant::now());
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let begin = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::with_capacity(args.count as usize);
    for index in 0..args.count {
        tokio::time::sleep_until(begin + period * index).await;
        let (client, hook, starts) = (client.clone(), hook.clone(), starts.clone());
        tasks.push(tokio::spawn(async move {
            post(&client, &hook, index, &starts).await
        }));
    }
    let mut sent = Vec::with_capacity(tasks.len());
    for t in tasks {
        sent.push(t.await.context("a POST task failed")?);
    }
    let span = begin.elapsed().as_secs_f64() - 0.1;
    let hwm = match args.server_pid {
        Some(pid) => peak_rss_kib(pid)?.to_string(),
        None => "-".to_owned(),
    };

    let first = first_steps(&client, &base, &sent, Duration::from_secs(args.wait)).await?;
    let clock_step_us = ((Utc::now() - wall0).num_nanoseconds().unwrap_or(i64::MAX) as f64
        - mono0.elapsed().as_nanos() as f64)
        / 1e3;

    let ok: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.status.is_some_and(|c| (200..300).contains(&c)))
        .collect();
    let non2xx = sent.iter().filter(|s| s.status.is_some()).count() - ok.len();
    let errors = sent.iter().filter(|s| s.error.is_some()).count();
    if let Some(e) = sent.iter().find_map(|s| s.error.as_deref()) {
        eprintln!("bench_latency: first request error: {e}");
    }
    let mut post_us: Vec<f64> = sent.iter().map(|s| micros(s.took)).collect();
    // A first step that never showed is infinitely late: it lands above every percentile it
    // can reach.
    let mut first_us: Vec<f64> = sent
        .iter()
        .map(|s| match first.get(&s.fingerprint) {
            Some(at) => (*at - s.started).num_nanoseconds().unwrap_or(i64::MAX) as f64 / 1e3,
            None => f64::INFINITY,
        })
        .collect();
    let missing = first_us.iter().filter(|v| v.is_infinite()).count();
    post_us.sort_by(f64::total_cmp);
    first_us.sort_by(f64::total_cmp);
    println!(
        "LATENCY sent={} ok={} non2xx={non2xx} errors={errors} rate={} span_s={span:.2} \
         post_p50_us={} post_p99_us={} post_max_us={} first_p50_us={} first_p99_us={} \
         first_max_us={} first_min_us={} missing={missing} server_hwm_kib={hwm} \
         clock_step_us={clock_step_us:.0}",
        sent.len(),
        ok.len(),
        args.rate,
        num(pct(&post_us, 50.0)),
        num(pct(&post_us, 99.0)),
        num(pct(&post_us, 100.0)),
        num(pct(&first_us, 50.0)),
        num(pct(&first_us, 99.0)),
        num(pct(&first_us, 100.0)),
        num(first_us.first().copied().unwrap_or(f64::INFINITY)),
    );

    if let Some(path) = &args.acked {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot write {path:?}"))?,
        );
        for s in &ok {
            if let Some(d) = s.delivery {
                writeln!(f, "{d}")?;
            }
        }
        f.flush()?;
    }
    if let Some(path) = &args.csv {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot write {path:?}"))?,
        );
        writeln!(
            f,
            "index,fingerprint,post_started,post_us,status,delivery,first_step_started,first_step_us"
        )?;
        for s in &sent {
            let at = first.get(&s.fingerprint);
            writeln!(
                f,
                "{},{},{},{:.1},{},{},{},{}",
                s.index,
                s.fingerprint,
                s.started.to_rfc3339_opts(SecondsFormat::Nanos, true),
                micros(s.took),
                s.status.map_or("-".into(), |c| c.to_string()),
                s.delivery.map_or("-".into(), |d| d.to_string()),
                at.map_or("-".into(), |t| t
                    .to_rfc3339_opts(SecondsFormat::Nanos, true)),
                at.map_or("-".into(), |t| format!(
                    "{:.1}",
                    (*t - s.started).num_nanoseconds().unwrap_or(i64::MAX) as f64 / 1e3
                )),
            )?;
        }
        f.flush()?;
    }
    Ok(())
}

/// One webhook as Alertmanager sends it (`group_by: [alertname, host]`), one firing alert.
async fn post(client: &reqwest::Client, hook: &str, index: u32, starts: &str) -> Sent {
    let host = format!("lat-{index}");
    let labels: Labels = [
        ("alertname", "BenchLatency"),
        ("cluster", "voiceai-prod"),
        ("host", host.as_str()),
        ("instance", "node-exporter:9100"),
        ("job", "node"),
        ("prometheus", "monitoring/prometheus"),
        ("service", "host"),
        ("severity", "warning"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let fingerprint = Fingerprint::of_labels(&labels).as_str().to_owned();
    let annotations = serde_json::json!({
        "summary": format!("{host} stopped answering its health check"),
        "description": "The latency benchmark's alert: one new incident per webhook.",
    });
    let body = serde_json::json!({
        "receiver": "remediator\\.hook",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": annotations,
            "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1",
            "fingerprint": fingerprint,
        }],
        "groupLabels": {"alertname": "BenchLatency", "host": host},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"BenchLatency\", host=\"{host}\"}}"),
        "truncatedAlerts": 0,
    });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let started = Utc::now();
    let clock = Instant::now();
    let answer = async {
        let r = client
            .post(hook)
            .header("Content-Type", "application/json")
            .header("User-Agent", "Alertmanager/0.25.0")
            .body(bytes)
            .send()
            .await?;
        let status = r.status().as_u16();
        let body = r.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    }
    .await;
    let took = clock.elapsed();
    let (status, error, delivery) = match answer {
        Ok((status, body)) => {
            let delivery = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["delivery"].as_i64());
            (Some(status), None, delivery)
        }
        Err(e) => (None, Some(e.to_string()), None),
    };
    Sent {
        index,
        fingerprint,
        started,
        took,
        status,
        error,
        delivery,
    }
}

/// Incidents per page read back: small, so that the server's peak memory hardly moves.
const PAGE: usize = 100;

/// Each alert's first step's `started_at`, by fingerprint, read from the API until all have
/// one or `wait` passes.
async fn first_steps(
    client: &reqwest::Client,
    base: &str,
    sent: &[Sent],
    wait: Duration,
) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
    let deadline = Instant::now() + wait;
    let wanted: HashMap<&str, u32> = sent
        .iter()
        .map(|s| (s.fingerprint.as_str(), s.index))
        .collect();
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut found: HashMap<String, DateTime<Utc>> = HashMap::new();
    loop {
        if ids.len() < wanted.len() {
            // Newest first: ours are at the front; stop at the first page that holds none.
            let mut before: Option<i64> = None;
            loop {
                let url = match before {
                    Some(b) => format!("{base}/api/v1/incidents?limit={PAGE}&before={b}"),
                    None => format!("{base}/api/v1/incidents?limit={PAGE}"),
                };
                let page: serde_json::Value = get_json(client, &url).await?;
                let mut ours = 0;
                for inc in page["incidents"].as_array().into_iter().flatten() {
                    let (Some(fp), Some(id)) = (inc["fingerprint"].as_str(), inc["id"].as_i64())
                    else {
                        continue;
                    };
                    if wanted.contains_key(fp) {
                        ours += 1;
                        ids.insert(fp.to_owned(), id);
                    }
                }
                match page["next"].as_i64() {
                    Some(n) if ours > 0 && ids.len() < wanted.len() => before = Some(n),
                    _ => break,
                }
            }
        }
        for (fp, id) in &ids {
            if found.contains_key(fp) {
                continue;
            }
            let inc: serde_json::Value =
                get_json(client, &format!("{base}/api/v1/incidents/{id}")).await?;
            let first = inc["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["phase"].as_str() == Some("main") && s["seq"].as_i64() == Some(0));
            if let Some(at) = first.and_then(|s| s["started_at"].as_str()) {
                let at = DateTime::parse_from_rfc3339(at)
                    .with_context(|| format!("incident {id}: started_at {at:?} does not parse"))?
                    .with_timezone(&Utc);
                found.insert(fp.clone(), at);
            }
        }
        if found.len() == wanted.len() || Instant::now() >= deadline {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<serde_json::Value> {
    let r = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = r.status();
    if !status.is_success() {
        bail!("GET {url} answered {status}");
    }
    r.json()
        .await
        .with_context(|| format!("GET {url}: not JSON"))
}

/// `VmHWM` of a process, in KiB (Linux).
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{path} has no VmHWM"))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::INFINITY;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "inf".to_owned()
    }
}
