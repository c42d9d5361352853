//! A caller's trace context across the node boundary: the request to a
//! peer carries the caller's span as a W3C `traceparent`
//! (`00-TRACE_ID-SPAN_ID-FLAGS`, lowercase hex), and the peer serves it in
//! a span whose parent is that span, so a trace shows the remote delivery
//! under the caller's own span.
//!
//! Spans are OpenTelemetry's, read and set through `tracing-opentelemetry`
//! (feature `opentelemetry`): the caller's subscriber must have its
//! OpenTelemetry layer. Without the feature, or when no subscriber wants
//! the spans, nothing is sent and the serving span is disabled: a branch.

use tracing::Span;

/// The `traceparent` of the caller's current span, if a subscriber keeps
/// OpenTelemetry spans and the span belongs to a trace.
pub(crate) fn outgoing() -> Option<String> {
    let span = Span::current();
    if span.is_disabled() {
        return None;
    }
    otel::traceparent(&span)
}

/// The span a peer's request is served in (`DEBUG`, target
/// `gen_registry_cluster`, named after the operation, with the shard),
/// its parent the caller's span named by `traceparent`, if any.
pub(crate) fn serving(operation: &'static str, shard: u32, traceparent: Option<&str>) -> Span {
    let span = match operation {
        "call" => tracing::debug_span!(target: "gen_registry_cluster", "call", shard),
        "cast" => tracing::debug_span!(target: "gen_registry_cluster", "cast", shard),
        _ => tracing::debug_span!(target: "gen_registry_cluster", "stop", shard),
    };
    if let (false, Some(parent)) = (span.is_disabled(), traceparent) {
        otel::set_parent(&span, parent);
    }
    span
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    pub(super) fn traceparent(span: &Span) -> Option<String> {
        let context = span.context();
        let span = context.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    }

    /// The span context a `traceparent` names; `None` for a malformed one
    /// (ignored: the request is served without a remote parent).
    pub(super) fn parse(traceparent: &str) -> Option<SpanContext> {
        let mut parts = traceparent.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 {
            return None;
        }
        let context = SpanContext::new(
            TraceId::from_hex(trace).ok()?,
            SpanId::from_hex(span).ok()?,
            TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
            true,
            TraceState::default(),
        );
        context.is_valid().then_some(context)
    }

    pub(super) fn set_parent(span: &Span, traceparent: &str) {
        if let Some(parent) = parse(traceparent) {
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_traceparent_names_its_trace_and_span() {
            let sc = parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
                .expect("a valid traceparent");
            assert_eq!(
                sc.trace_id().to_string(),
                "0af7651916cd43dd8448eb211c80319c"
            );
            assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
            assert!(sc.is_sampled());
            assert!(sc.is_remote());
        }

        #[test]
        fn a_malformed_traceparent_names_nothing() {
            for bad in [
                "",
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-zz",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-00",
            ] {
                assert!(parse(bad).is_none(), "{bad:?}");
            }
        }
    }
}

#[cfg(not(feature = "opentelemetry"))]
mod otel {
    use tracing::Span;

    pub(super) fn traceparent(_: &Span) -> Option<String> {
        None
    }

    pub(super) fn set_parent(_: &Span, _: &str) {}
}
