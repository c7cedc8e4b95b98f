//! Logs, traces and the events that feed them.
//!
//! - Logs: `tracing` JSON (or text) lines on stderr, filtered by `RUST_LOG` or `log.level`.
//! - Traces: OpenTelemetry over OTLP/HTTP (protobuf), only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (`otlp.rs`). With neither set there is no
//!   exporter, no OpenTelemetry layer and no extra thread.
//! - [`events`]: one typed value per internal event; its `emit` writes the log line, updates
//!   the Prometheus metric and records the span attributes together.
//! - [`spans`]: the span names and their fields, a contract the trace tests check.
//! - [`trace_context`]: W3C `traceparent` text in and out, to carry a trace across the
//!   store's queues (intake → engine → outbox).
//!
//! # Span tree of one alert
//!
//! ```text
//! delivery                 the webhook request; child of the sender's `traceparent`, if any
//! └── incident             one opened (or resolved) incident, handled later by the engine
//!     ├── guards           the guards' verdicts
//!     ├── step             one runbook step (and each `on_failure` step)
//!     │   └── notify       a message that step enqueued, sent later by the outbox
//!     └── notify           one Slack or PagerDuty call (one attempt)
//! ```
//!
//! The `incident` and `notify` spans start in another task, later, from a row of the store:
//! the row keeps [`trace_context::current`] of the span that queued it, and the span that
//! handles it is made its child with [`trace_context::set_parent`] (the constructors in
//! [`spans`] take that text). Attributes are listed in [`spans`].

pub mod events;
mod otlp;
pub mod spans;
pub mod trace_context;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What [`init`] installed. Keep it for the life of the process and call
/// [`Telemetry::shutdown`] on the way out, or the spans still buffered are lost.
#[must_use = "dropping it shuts tracing down now; keep it and call shutdown() on exit"]
pub struct Telemetry {
    traces: Option<otlp::Traces>,
}

impl Telemetry {
    /// No exporter: what [`init`] returns when no OTLP endpoint is set.
    pub fn disabled() -> Telemetry {
        Telemetry { traces: None }
    }

    /// Whether spans are exported (an OTLP endpoint was set).
    pub fn exporting(&self) -> bool {
        self.traces.is_some()
    }

    /// Flushes the spans still buffered and stops the exporter. Blocks (up to a few seconds
    /// when the collector does not answer): call it from `spawn_blocking`, or once the
    /// runtime's work is done.
    pub fn shutdown(mut self) {
        if let Some(traces) = self.traces.take() {
            traces.shutdown();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(traces) = self.traces.take() {
            traces.shutdown();
        }
    }
}

/// Installs the global subscriber: the JSON (or text) log layer on stderr, and the
/// OpenTelemetry layer when an OTLP endpoint is set (`otlp.rs`). When a subscriber is
/// already in place (a test, a second call) it installs nothing and builds no exporter.
pub fn init(format: &str, level: &str) -> Telemetry {
    if tracing::dispatcher::has_been_set() {
        return Telemetry::disabled();
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let logs = if format == "text" {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let (traces, broken) = match otlp::Traces::from_env() {
        Ok(traces) => (traces, None),
        Err(e) => (None, Some(e)),
    };
    let layer = traces.as_ref().map(otlp::Traces::layer);
    // The log level filters the log lines only (a per-layer filter): the spans of the hot
    // paths (`delivery`, `notify`) are debug spans, so with no exporter and logs at info
    // nothing wants them and they cost nothing; the exporter's own filter takes them.
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(layer)
        .try_init()
        .is_ok();
    if !installed {
        // Someone else's subscriber is in place (a test, a second init): ours would never
        // see a span, so export nothing.
        return Telemetry { traces: None };
    }
    if let Some(t) = &traces {
        tracing::info!(endpoint = %t.endpoint(), "exporting traces over OTLP/HTTP");
    }
    if let Some(e) = broken {
        tracing::error!(error = %e, "OpenTelemetry traces are off; the service runs without them");
    }
    Telemetry { traces }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A subscriber with the OpenTelemetry layer and an in-memory exporter, and a JSON log
    //! layer into a buffer, for tests that check what an event records.

    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Debug, Clone, Default)]
    pub struct Collected(pub Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collected {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    pub struct Lines(pub Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        pub fn json(&self) -> Vec<serde_json::Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    /// Runs `f` under a subscriber like [`super::init`]'s (at `debug`), exporting each span
    /// as it ends; returns the ended spans and the log lines.
    pub fn traced(f: impl FnOnce()) -> (Vec<SpanData>, Vec<serde_json::Value>) {
        let spans = Collected::default();
        let lines = Lines::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("debug"))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(move || writer.clone()),
            )
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
        let _ = provider.shutdown();
        let out = spans.0.lock().unwrap().clone();
        (out, lines.json())
    }

    /// The value of `key` on `span`, as text.
    pub fn attr(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    pub fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
    }
}
