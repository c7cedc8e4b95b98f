//! The OTLP/HTTP trace pipeline: built only when an endpoint is set.
//!
//! The SDK reads the standard variables itself (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is,
//! else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`; `OTEL_EXPORTER_OTLP_HEADERS`,
//! `_TIMEOUT`, `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_SERVICE_NAME`): we only decide whether to build it at all, and name the service
//! `remediator` unless told otherwise. Only `http/protobuf` is compiled in (no gRPC, no
//! compression): another `OTEL_EXPORTER_OTLP_PROTOCOL` falls back to it.
//!
//! The batch processor exports from its own OS thread, which has no Tokio reactor, so the
//! exporter uses reqwest's blocking client (CONTRACTS.md §8); the SDK builds that client on
//! a thread of its own, outside our runtime.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const SERVICE_NAME: &str = "remediator";
/// How long shutdown waits for the last batch; a stop must not hang on a dead collector.
const SHUTDOWN_WITHIN: Duration = Duration::from_secs(5);

/// Where spans go, from the environment as `lookup` reads it: the traces endpoint as is, else
/// the base endpoint with `/v1/traces`. `None` (neither set, or empty) means no exporter.
pub fn traces_endpoint(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |name| lookup(name).filter(|v: &String| !v.trim().is_empty());
    if let Some(url) = set(TRACES_ENDPOINT) {
        return Some(url);
    }
    set(ENDPOINT).map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
}

/// The tracer provider and where it sends.
pub(super) struct Traces {
    provider: SdkTracerProvider,
    endpoint: String,
}

impl Traces {
    /// `Ok(None)` when no endpoint is set: nothing is built.
    pub(super) fn from_env() -> Result<Option<Traces>, String> {
        let Some(endpoint) = traces_endpoint(|k| std::env::var(k).ok()) else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter for {endpoint}: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build();
        Ok(Some(Traces { provider, endpoint }))
    }

    pub(super) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The OpenTelemetry layer: our own spans only (`remediator::*`), so the exporter's
    /// HTTP client, tracing itself at debug, can never feed its own queue. No source
    /// location, target or thread attributes: every span is built in `spans.rs`, so they
    /// would say nothing, on every span.
    pub(super) fn layer<S>(&self) -> impl Layer<S> + Send + Sync
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(SERVICE_NAME))
            .with_location(false)
            .with_target(false)
            .with_threads(false)
            .with_filter(Targets::new().with_target(SERVICE_NAME, LevelFilter::TRACE))
    }

    /// Exports what is buffered and stops the batch thread.
    pub(super) fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_WITHIN) {
            tracing::warn!(error = %e, endpoint = %self.endpoint, "could not flush the last spans");
        }
    }
}

/// The SDK's resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, the SDK's own), named
/// `remediator` when neither names the service.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::new("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    let versioned = detected
        .get(&opentelemetry::Key::new("service.version"))
        .is_some();
    let mut builder = Resource::builder();
    if !named {
        builder = builder.with_service_name(SERVICE_NAME);
    }
    if !versioned {
        builder =
            builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(vars: &[(&str, &str)]) -> Option<String> {
        traces_endpoint(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn no_endpoint_set_means_no_exporter() {
        assert_eq!(endpoint(&[]), None);
        assert_eq!(endpoint(&[(ENDPOINT, ""), (TRACES_ENDPOINT, " ")]), None);
        assert_eq!(endpoint(&[("OTEL_SERVICE_NAME", "x")]), None);
    }

    #[test]
    fn the_traces_endpoint_is_used_as_is_and_wins() {
        assert_eq!(
            endpoint(&[
                (TRACES_ENDPOINT, "http://c:4318/custom"),
                (ENDPOINT, "http://other")
            ]),
            Some("http://c:4318/custom".into())
        );
    }

    #[test]
    fn the_base_endpoint_gets_v1_traces() {
        assert_eq!(
            endpoint(&[(ENDPOINT, "http://c:4318")]),
            Some("http://c:4318/v1/traces".into())
        );
        assert_eq!(
            endpoint(&[(ENDPOINT, "http://c:4318/")]),
            Some("http://c:4318/v1/traces".into())
        );
    }

    #[test]
    fn without_an_endpoint_nothing_is_built() {
        // The process environment of the unit tests sets no OTLP endpoint.
        if traces_endpoint(|k| std::env::var(k).ok()).is_none() {
            assert!(Traces::from_env().unwrap().is_none());
        }
    }
}
