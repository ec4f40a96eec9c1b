//! A call's context carried in a message's headers and back, as go-micro carries its
//! context's metadata: the publisher's metadata become headers, and the trace position
//! travels as W3C `Traceparent` / `Tracestate` (go-micro's OpenTelemetry wrapper title-cases
//! the keys it injects). A subscriber's handler runs in a [`CallContext`] made from the
//! headers, so the calls it makes carry the metadata and continue the publisher's trace.

use http::{HeaderMap, HeaderName, HeaderValue};
use micro_core::{CallContext, TraceParent};

use crate::{CONTENT_TYPE, MICRO_TOPIC, Message};

/// The W3C trace context header, as go-micro's wrapper writes its key.
pub const TRACEPARENT: &str = "Traceparent";
/// The W3C trace state header.
pub const TRACESTATE: &str = "Tracestate";

/// Adds the current call's metadata and trace position (if this task handles a call) to
/// `message`'s headers.
pub fn inject_current(message: &mut Message) {
    CallContext::with_current(|context| inject(context, message));
}

/// Adds `context`'s metadata and trace position to `message`'s headers.
pub fn inject(context: &CallContext, message: &mut Message) {
    for (name, value) in &context.metadata {
        let Ok(value) = value.to_str() else { continue };
        message
            .header
            .insert(name.as_str().to_owned(), value.to_owned());
    }
    if let Some(parent) = &context.trace() {
        // The span in the context is more precise than a trace header the call came with.
        message.header.retain(|key, _| {
            !key.eq_ignore_ascii_case(TRACEPARENT) && !key.eq_ignore_ascii_case(TRACESTATE)
        });
        message
            .header
            .insert(TRACEPARENT.into(), format_traceparent(parent));
        if let Some(state) = parent.state.as_ref().and_then(|s| s.to_str().ok()) {
            message.header.insert(TRACESTATE.into(), state.to_owned());
        }
    }
}

/// The context a subscriber's handler runs in: the message's headers as metadata (without
/// `Content-Type`, as go-micro's server removes it), the trace position from `Traceparent`.
pub fn extract(message: &Message) -> CallContext {
    let mut metadata = HeaderMap::new();
    for (key, value) in &message.header {
        if key.eq_ignore_ascii_case(CONTENT_TYPE) {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            continue;
        };
        metadata.append(name, value);
    }
    let trace = message
        .get(TRACEPARENT)
        .and_then(parse_traceparent)
        .map(|mut parent| {
            parent.state = message
                .get(TRACESTATE)
                .and_then(|s| HeaderValue::from_str(s).ok());
            parent
        });
    call_context(metadata, trace)
}

/// A call context of `metadata` and trace position `trace`, no deadline. (The one place this
/// crate builds a `CallContext`.)
pub fn call_context(metadata: HeaderMap, trace: Option<TraceParent>) -> CallContext {
    let mut context = match trace {
        Some(parent) => CallContext::with_trace(parent),
        None => CallContext::default(),
    };
    context.metadata = metadata;
    context
}

/// A sampled trace position (`trace_id`, `span_id`), nothing else set.
pub fn sampled(trace_id: u128, span_id: u64) -> TraceParent {
    TraceParent {
        trace_id,
        span_id,
        sampled: true,
        ..Default::default()
    }
}

/// Whether a header is one the publisher sets itself rather than metadata
/// (`Content-Type`, `Micro-Topic`).
pub fn is_envelope_header(key: &str) -> bool {
    key.eq_ignore_ascii_case(CONTENT_TYPE) || key.eq_ignore_ascii_case(MICRO_TOPIC)
}

/// `00-<trace id>-<span id>-<flags>`.
pub fn format_traceparent(parent: &TraceParent) -> String {
    format!(
        "00-{:032x}-{:016x}-{:02x}",
        parent.trace_id,
        parent.span_id,
        u8::from(parent.sampled)
    )
}

/// A W3C `traceparent` value; `None` when malformed or all-zero ids.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    if u8::from_str_radix(version, 16).is_err() || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?;
    let span_id = u64::from_str_radix(span, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    (trace_id != 0 && span_id != 0).then(|| TraceParent {
        sampled: flags & 1 == 1,
        ..sampled(trace_id, span_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip_and_garbage() {
        let parent = sampled(0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7);
        let text = format_traceparent(&parent);
        assert_eq!(
            text,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(parse_traceparent(&text), Some(parent));
        for bad in [
            "",
            "00-0-0-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn metadata_and_trace_travel_through_headers() {
        let mut metadata = HeaderMap::new();
        metadata.insert("x-user", HeaderValue::from_static("ada"));
        metadata.insert(
            "traceparent",
            HeaderValue::from_static("00-11111111111111111111111111111111-2222222222222222-01"),
        );
        let context = call_context(
            metadata,
            Some(TraceParent {
                state: Some(HeaderValue::from_static("k=v")),
                ..sampled(1, 2)
            }),
        );
        let mut message = Message::new("");
        message
            .header
            .insert(CONTENT_TYPE.into(), "application/grpc+proto".into());
        inject(&context, &mut message);
        assert_eq!(message.get("x-user"), Some("ada"));
        assert_eq!(
            message.header.get(TRACEPARENT).map(String::as_str),
            Some("00-00000000000000000000000000000001-0000000000000002-01")
        );
        assert!(!message.header.contains_key("traceparent"));
        let back = extract(&message);
        assert_eq!(back.trace().map(|t| (t.trace_id, t.span_id)), Some((1, 2)));
        assert_eq!(back.metadata.get("x-user").unwrap(), "ada");
        assert!(back.metadata.get("content-type").is_none());
    }
}
