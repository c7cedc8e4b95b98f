//! OpenTelemetry traces: the binary, pointed at the test OTLP receiver, continues a caller's
//! `traceparent` and flushes its spans when stopped; with no endpoint set it builds no
//! exporter.
//!
//! The span tree of a whole remediation (delivery → incident → guards → step → notify) is
//! asserted with [`tree`] once the engine and the outbox open those spans.

use serde_json::Value;

use crate::helpers::*;
use crate::otlp_receiver::{tree, OtlpReceiver, ReceivedSpan, Service};

/// The caller's trace and span, as a tracing proxy in front of us would send them.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The batch processor's thread (`OpenTelemetry.Traces.BatchProcessor`, cut to 15 bytes).
const EXPORTER_THREAD: &str = "OpenTelemetry.T";

/// A receiver, and the service exporting to it with `batch_delay_ms` between batches, up.
async fn exporting_service(batch_delay_ms: &str) -> (OtlpReceiver, Service, reqwest::Client) {
    let receiver = OtlpReceiver::start();
    let endpoint = receiver.endpoint();
    let service = Service::spawn(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", batch_delay_ms),
    ]);
    let client = reqwest::Client::new();
    service.wait_healthy(&client).await;
    (receiver, service, client)
}

/// Posts a PostgresDown firing as a traced caller would: with its `traceparent`.
async fn post_traced(client: &reqwest::Client, service: &Service) -> reqwest::Response {
    client
        .post(format!("{}/hooks/alertmanager", service.base))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .body(fixture("postgres-down-firing.json"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn otlp_the_delivery_span_continues_the_callers_trace_and_is_flushed_on_sigterm() {
    // Ten minutes between batches: what arrives below was sent by the shutdown flush.
    let (receiver, mut service, client) = exporting_service("600000").await;
    assert!(
        service.threads().iter().any(|t| t == EXPORTER_THREAD),
        "an endpoint is set, so the exporter runs: {:?}",
        service.threads()
    );

    let r = post_traced(&client, &service).await;
    assert_eq!(r.status(), 200);
    let delivery_id = r.json::<Value>().await.unwrap()["delivery"]
        .as_i64()
        .unwrap();

    service.terminate();
    let status = service.exited(30).await;
    assert!(status.success(), "exit {status:?}; log:\n{}", service.log());

    let spans = receiver
        .wait_for(10, "the delivery span", |spans| {
            spans.iter().any(|s| s.name == "delivery")
        })
        .await;
    let delivery = spans.iter().find(|s| s.name == "delivery").unwrap();
    assert_eq!(delivery.trace_id, CALLER_TRACE, "{delivery:#?}");
    assert_eq!(delivery.parent_span_id.as_deref(), Some(CALLER_SPAN));
    assert_eq!(delivery.service, "remediator");
    assert_eq!(delivery.kind, 2, "a server span");
    assert_eq!(
        delivery.attr("delivery.id"),
        Some(&*delivery_id.to_string())
    );
    assert_eq!(delivery.attr("alerts"), Some("1"));
    assert_eq!(delivery.attr("alerts.firing"), Some("1"));
    assert_eq!(delivery.attr("http.response.status_code"), Some("200"));
    assert_eq!(delivery.attr("outcome"), Some("stored"));
    assert_eq!(delivery.status_code, 0, "not an error");
    // The flush sent the delivery span once, and it is the caller's span's only child (the
    // engine's spans hang under the delivery, not beside it).
    let under_caller: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == CALLER_TRACE && s.parent_span_id.as_deref() == Some(CALLER_SPAN))
        .collect();
    assert_eq!(under_caller, [delivery], "{}", tree(&spans, delivery));
}

#[tokio::test]
async fn otlp_a_refused_webhook_is_a_delivery_span_too_and_starts_its_own_trace() {
    let receiver = OtlpReceiver::start();
    let endpoint = receiver.endpoint();
    let mut service = Service::spawn(&[(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        &format!("{endpoint}/v1/traces"),
    )]);
    let client = reqwest::Client::new();
    service.wait_healthy(&client).await;
    let r = client
        .post(format!("{}/hooks/alertmanager", service.base))
        .bearer_auth("wrong-token")
        .body(fixture("postgres-down-firing.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    service.terminate();
    let status = service.exited(30).await;
    assert!(status.success(), "exit {status:?}; log:\n{}", service.log());

    let spans = receiver
        .wait_for(10, "the delivery span", |spans| {
            spans.iter().any(|s| s.name == "delivery")
        })
        .await;
    let delivery = spans.iter().find(|s| s.name == "delivery").unwrap();
    assert_eq!(delivery.parent_span_id, None, "no traceparent: a new trace");
    assert_eq!(delivery.attr("http.response.status_code"), Some("401"));
    assert_eq!(delivery.attr("outcome"), Some("rejected"));
    assert_eq!(delivery.attr("delivery.id"), None);
}

#[tokio::test]
async fn otlp_no_endpoint_set_means_no_exporter_and_no_thread() {
    let service = Service::spawn(&[]);
    let client = reqwest::Client::new();
    service.wait_healthy(&client).await;
    let r = post_traced(&client, &service).await;
    assert_eq!(r.status(), 200);
    let threads = service.threads();
    assert!(
        !threads.is_empty(),
        "cannot read the threads of the service"
    );
    assert!(
        !threads
            .iter()
            .any(|t| t.starts_with("OpenTelemetry") || t.starts_with("reqwest-int")),
        "no endpoint, yet an exporter thread runs: {threads:?}"
    );
    assert!(
        !service.log().contains("exporting traces"),
        "{}",
        service.log()
    );
}

/// One alert's whole remediation is one trace: delivery → incident → guards, each step, and
/// each outgoing notice under the span that produced it, across the engine's queue and the
/// outbox (both carry the `traceparent` in the store).
#[tokio::test]
async fn otlp_one_alerts_remediation_is_one_span_tree_from_delivery_to_each_notice() {
    let (receiver, mut service, client) = exporting_service("200").await;
    let r = post_traced(&client, &service).await;
    assert_eq!(r.status(), 200);
    // No compose project is set, so the shipped postgres rule's steps fail, on_failure runs
    // and people are paged: every kind of span appears.
    let spans = receiver
        .wait_for(30, "the remediation's spans", |spans| {
            let n = |name: &str| spans.iter().filter(|s| s.name == name).count();
            n("delivery") >= 1
                && n("incident") >= 1
                && n("guards") >= 1
                && n("step") >= 2
                && n("notify") >= 4
                && spans
                    .iter()
                    .any(|s| s.name == "notify" && s.attr("notice.kind") == Some("trigger"))
        })
        .await;
    service.terminate();
    let _ = service.exited(30).await;

    let one = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span"))
    };
    let delivery = one("delivery");
    let incident = one("incident");
    let guards = one("guards");
    let shown = tree(&spans, delivery);
    for s in spans.iter().filter(|s| s.name != "delivery") {
        assert_eq!(
            s.trace_id, CALLER_TRACE,
            "{} in another trace:\n{shown}",
            s.name
        );
    }
    assert_eq!(
        incident.parent_span_id.as_deref(),
        Some(&*delivery.span_id),
        "{shown}"
    );
    assert_eq!(
        guards.parent_span_id.as_deref(),
        Some(&*incident.span_id),
        "{shown}"
    );
    assert!(incident.attr("incident.id").is_some());
    assert_eq!(
        incident.attr("rule"),
        Some("postgres-down"),
        "{incident:#?}"
    );
    assert!(incident.attr("fingerprint").is_some_and(|f| f.len() == 16));
    assert_eq!(guards.attr("outcome"), Some("continue"), "{guards:#?}");
    let steps: Vec<_> = spans.iter().filter(|s| s.name == "step").collect();
    for st in &steps {
        assert_eq!(
            st.parent_span_id.as_deref(),
            Some(&*incident.span_id),
            "{shown}"
        );
        assert!(st.attr("step.kind").is_some(), "{st:#?}");
        assert!(st.attr("outcome").is_some(), "{st:#?}");
    }
    assert_eq!(steps[0].attr("step.kind"), Some("diagnose"), "{shown}");
    assert_eq!(steps[0].attr("outcome"), Some("failed"), "{shown}");
    let ids: Vec<&str> = std::iter::once(&*incident.span_id)
        .chain(steps.iter().map(|s| &*s.span_id))
        .collect();
    for n in spans.iter().filter(|s| s.name == "notify") {
        let parent = n.parent_span_id.as_deref().unwrap_or("");
        assert!(ids.contains(&parent), "notify under {parent}:\n{shown}");
        assert_eq!(n.attr("outcome"), Some("delivered"), "{n:#?}");
        assert_eq!(n.kind, 3, "a client span");
    }
}
