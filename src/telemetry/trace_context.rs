//! W3C trace context as text, to carry a trace across a queue.
//!
//! The engine handles an incident later than the webhook that opened it, and the outbox sends
//! later still, each from a row of the store. The row keeps the `traceparent` of the span that
//! queued it ([`current`]); the span that takes the row up is made that span's child
//! ([`set_parent`]). With tracing off both are no-ops: [`current`] is `None`, so nothing is
//! stored, and [`set_parent`] leaves the span as it is.
//!
//! Parsing and formatting are the OpenTelemetry `TraceContextPropagator`'s
//! (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`); `tracestate` is not carried.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (and carrier key) name.
pub const TRACEPARENT: &str = "traceparent";

/// The current span's `traceparent`, to store beside work that another task takes up later.
/// `None` when tracing is off, outside any span, or when the span has no valid context.
///
/// It starts the current span's OpenTelemetry context: call [`set_parent`] on a span before
/// this is called inside it.
pub fn current() -> Option<String> {
    of(&tracing::Span::current())
}

/// `span`'s `traceparent` (see [`current`]).
pub fn of(span: &tracing::Span) -> Option<String> {
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = One(None);
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.0
}

/// Makes `span` a child of the span `traceparent` names (a stored [`current`], or a request's
/// header). Call it right after creating `span`, before it is entered or instrumented: the
/// parent of a started span cannot change. `None`, malformed text or tracing off leave
/// `span`'s parent as it is (the current span, or none: a new trace).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(parent) = traceparent.and_then(parse) else {
        return;
    };
    // Fails only when tracing is off or the span is disabled: nothing to continue then.
    let _ = span.set_parent(parent);
}

/// The remote span context `traceparent` names, if it is well-formed.
fn parse(traceparent: &str) -> Option<Context> {
    let cx = TraceContextPropagator::new().extract(&One(Some(traceparent.trim().to_string())));
    cx.span().span_context().is_valid().then_some(cx)
}

/// A carrier of the `traceparent` value alone.
struct One(Option<String>);

impl Injector for One {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

impl Extractor for One {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0.as_deref()).flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::testing::{named, traced};

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_span_continues_the_trace_its_traceparent_names() {
        let (spans, _) = traced(|| {
            let delivery = tracing::info_span!("delivery");
            set_parent(&delivery, Some(CALLER));
            delivery.in_scope(|| {
                let text = current().expect("a traceparent inside a traced span");
                assert!(text.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
                assert!(text.ends_with("-01"));
            });
        });
        let d = named(&spans, "delivery");
        assert_eq!(
            d.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(d.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert!(d.parent_span_is_remote);
    }

    #[test]
    fn a_stored_traceparent_makes_a_later_span_a_child() {
        let (spans, _) = traced(|| {
            let stored = tracing::info_span!("delivery").in_scope(current);
            // Later, in another task: no span is current.
            let incident = tracing::info_span!("incident");
            set_parent(&incident, stored.as_deref());
            incident.in_scope(|| {});
        });
        let (d, i) = (named(&spans, "delivery"), named(&spans, "incident"));
        assert_eq!(i.span_context.trace_id(), d.span_context.trace_id());
        assert_eq!(i.parent_span_id, d.span_context.span_id());
    }

    #[test]
    fn nothing_or_garbage_leaves_the_parent_alone() {
        let (spans, _) = traced(|| {
            let outer = tracing::info_span!("outer");
            outer.in_scope(|| {
                for text in [None, Some(""), Some("00-zz-yy-01"), Some("garbage")] {
                    let inner = tracing::info_span!("inner");
                    set_parent(&inner, text);
                    inner.in_scope(|| {});
                }
            });
        });
        let outer = named(&spans, "outer");
        let inners: Vec<_> = spans.iter().filter(|s| s.name == "inner").collect();
        assert_eq!(inners.len(), 4);
        for i in inners {
            assert_eq!(i.parent_span_id, outer.span_context.span_id());
        }
    }

    #[test]
    fn without_tracing_there_is_no_traceparent() {
        // No subscriber at all (the unit tests install none globally).
        let span = tracing::info_span!("delivery");
        set_parent(&span, Some(CALLER));
        assert_eq!(span.in_scope(current), None);
        // A subscriber with logs only, as `init` builds when no endpoint is set.
        let logs_only = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(logs_only, || {
            let span = tracing::info_span!("delivery");
            set_parent(&span, Some(CALLER));
            assert_eq!(span.in_scope(current), None);
        });
    }
}
