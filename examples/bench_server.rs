//! The webhook intake under three handlers, for `scripts/bench`.
//!
//! ```text
//! cargo run --release --example bench_server -- --mode empty|parse|durable \
//!     --listen 127.0.0.1:0 --data-dir DIR --rules DIR [--config FILE]
//! ```
//!
//! `--config` is a settings file, as `remediator serve --config` reads it (the latency mode
//! of `scripts/bench` raises the engine's global budget with one); the environment is not
//! read, so a stray `REMEDIATOR_*` variable cannot change a measurement.
//!
//! All three modes load [`Settings`] the same way and serve `POST /hooks/alertmanager` from an
//! actix-web `HttpServer` with the same worker count (actix's default, which is what the real
//! service uses: `available_parallelism()`), the same body limit (`webhook.max_body_bytes`),
//! the same shutdown timeout and the same tokio main runtime:
//!
//! - `empty`: reads the body (bounded, as the real handler does) and answers 200 `{}`;
//! - `parse`: reads the body and answers 200 or 400 after
//!   [`remediator::alert::parse_webhook`];
//! - `durable`: the real service, [`Application::build`] then `run_until_stopped` (durable
//!   group-commit intake, engine in the background, NoDocker executor);
//! - `intake` (diagnostic, `BENCH_EXTRA_MODES` in `scripts/bench`): `parse`, then
//!   `IntakeWriter::submit` as the real handler does (store and apply), with no engine taking
//!   its queue and none of the real handler's auth and metrics.
//!
//! Once listening it prints `BENCH_PORT=<port>` and `BENCH_WORKERS=<n>` on stdout, so the
//! caller can pass `--listen 127.0.0.1:0`. SIGINT/SIGTERM stop it.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context;
use clap::{Parser, ValueEnum};
use remediator::settings::{Overrides, Settings};
use remediator::startup::Application;
use remediator::store::{IntakeHandle, IntakeWriter, Store};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Read the body, answer 200 `{}`.
    Empty,
    /// Read the body and parse it as an Alertmanager webhook.
    Parse,
    /// The real service: durable intake plus the engine.
    Durable,
    /// Diagnostic, not one of the three measured modes: parse, then the durable group-commit
    /// intake writer alone (store and apply), without the engine taking its queue.
    Intake,
}

#[derive(Parser, Debug)]
#[command(about = "remediator's webhook intake under three handlers (see scripts/bench)")]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Address to listen on; port 0 picks a free one (printed as BENCH_PORT=...).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Store directory (used by `durable` only).
    #[arg(long)]
    data_dir: PathBuf,
    /// Rule directory (used by `durable` only).
    #[arg(long = "rules")]
    rules_dir: PathBuf,
    /// Settings file (YAML, as `remediator serve --config`); the defaults without one.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// What the baseline handlers share; the limit is the real service's.
struct Limits {
    max_body_bytes: usize,
    /// Set in `intake` mode only.
    intake: Option<IntakeHandle>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings::load(
        args.config.as_deref(),
        std::iter::empty(),
        &Overrides {
            listen: Some(args.listen),
            data_dir: Some(args.data_dir.clone()),
            rules_dir: Some(args.rules_dir.clone()),
        },
    )?;
    // As `remediator serve` does: JSON logs on stderr at `info` (RUST_LOG wins).
    let _telemetry = remediator::telemetry::init(&settings.log.format, &settings.log.level);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());

    match args.mode {
        Mode::Durable => {
            let app = Application::build(settings).await?;
            announce(app.port(), workers)?;
            app.run_until_stopped().await
        }
        mode => {
            let listener = TcpListener::bind(settings.listen)
                .with_context(|| format!("cannot listen on {}", settings.listen))?;
            let port = listener.local_addr()?.port();
            let intake = if mode == Mode::Intake {
                // As Application::build does, minus the engine.
                let store = std::sync::Arc::new(Store::open(&settings.data_dir)?);
                let committed = std::sync::Arc::new(tokio::sync::Notify::new());
                Some(IntakeWriter::spawn(
                    store,
                    committed,
                    std::sync::Arc::new(remediator::domain::SystemClock),
                )?)
            } else {
                None
            };
            let limits = web::Data::new(Limits {
                max_body_bytes: settings.webhook.max_body_bytes,
                intake,
            });
            let server = HttpServer::new(move || {
                let hook = match mode {
                    Mode::Empty => web::post().to(empty_hook),
                    Mode::Parse => web::post().to(parse_hook),
                    _ => web::post().to(intake_hook),
                };
                App::new()
                    .app_data(limits.clone())
                    .route("/hooks/alertmanager", hook)
                    .route("/-/healthy", web::get().to(healthy))
            })
            .listen(listener)?
            .shutdown_timeout(10)
            .run();
            announce(port, workers)?;
            server.await.context("the HTTP server failed")
        }
    }
}

fn announce(port: u16, workers: usize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "BENCH_PORT={port}")?;
    writeln!(out, "BENCH_WORKERS={workers}")?;
    out.flush()?;
    Ok(())
}

/// Reads the body with the real handler's own function (bounded by Content-Length and while
/// streaming, the same errors).
async fn read_body(
    req: &HttpRequest,
    payload: &mut web::Payload,
    limit: usize,
) -> Result<Vec<u8>, HttpResponse> {
    remediator::http::read_body(req, payload, limit)
        .await
        .map_err(|e| actix_web::ResponseError::error_response(&e))
}

/// A payload that does not parse: 400 naming the problem, as the real handler answers.
fn bad_payload(e: remediator::alert::AlertError) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({
        "error": "invalid Alertmanager webhook payload",
        "detail": e.to_string(),
    }))
}

async fn empty_hook(
    req: HttpRequest,
    mut payload: web::Payload,
    limits: web::Data<Limits>,
) -> HttpResponse {
    match read_body(&req, &mut payload, limits.max_body_bytes).await {
        Ok(_) => HttpResponse::Ok().json(serde_json::json!({})),
        Err(resp) => resp,
    }
}

async fn parse_hook(
    req: HttpRequest,
    mut payload: web::Payload,
    limits: web::Data<Limits>,
) -> HttpResponse {
    let body = match read_body(&req, &mut payload, limits.max_body_bytes).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    match remediator::alert::parse_webhook(&body) {
        Ok(n) => HttpResponse::Ok().json(serde_json::json!({
            "status": "accepted",
            "alerts": n.alerts.len(),
        })),
        Err(e) => bad_payload(e),
    }
}

async fn intake_hook(
    req: HttpRequest,
    mut payload: web::Payload,
    limits: web::Data<Limits>,
) -> HttpResponse {
    let body = match read_body(&req, &mut payload, limits.max_body_bytes).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let n = match remediator::alert::parse_webhook(&body) {
        Ok(n) => n,
        Err(e) => return bad_payload(e),
    };
    let intake = limits
        .intake
        .as_ref()
        .expect("intake mode has an intake writer");
    let alerts = n.alerts.len();
    match intake.submit(body, n, None).await {
        Ok(id) => HttpResponse::Ok().json(serde_json::json!({
            "status": "accepted",
            "delivery": id,
            "alerts": alerts,
        })),
        Err(e) => HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "error": "the intake is unavailable",
            "detail": e.to_string(),
        })),
    }
}

async fn healthy() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "healthy" }))
}
