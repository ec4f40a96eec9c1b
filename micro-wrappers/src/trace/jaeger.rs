//! Jaeger's propagation format: `uber-trace-id: <trace>:<span>:<parent>:<flags>` (hex) and
//! baggage in `uberctx-<key>` headers.
//!
//! `opentelemetry-jaeger-propagator` follows opentelemetry one release behind (0.32 for the
//! 0.33 API used here), so the format is implemented here; it is small and stable.

use opentelemetry::{
    Context, KeyValue,
    baggage::BaggageExt,
    propagation::{Extractor, Injector, TextMapPropagator, text_map_propagator::FieldIter},
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};

const HEADER: &str = "uber-trace-id";
const BAGGAGE_PREFIX: &str = "uberctx-";
/// Jaeger's debug flag; it implies sampled.
const DEBUG: u8 = 0x02;

/// Extracts and injects Jaeger's `uber-trace-id` and `uberctx-*` baggage.
#[derive(Debug)]
pub struct JaegerPropagator {
    fields: [String; 1],
}

impl Default for JaegerPropagator {
    fn default() -> Self {
        JaegerPropagator {
            fields: [HEADER.to_owned()],
        }
    }
}

impl JaegerPropagator {
    /// A Jaeger propagator.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Parses `uber-trace-id`; `None` for anything malformed (the call then starts a new trace).
fn parse(value: &str) -> Option<SpanContext> {
    // Some clients URL-encode the colons.
    let decoded;
    let value = if value.contains("%3A") || value.contains("%3a") {
        decoded = value.replace("%3A", ":").replace("%3a", ":");
        decoded.as_str()
    } else {
        value
    };
    let mut parts = value.split(':');
    let (trace, span, _parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let hex = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_hexdigit())
    };
    if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from(u128::from_str_radix(trace, 16).ok()?);
    let span_id = SpanId::from(u64::from_str_radix(span, 16).ok()?);
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sampled = if flags & (TraceFlags::SAMPLED.to_u8() | DEBUG) != 0 {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::NOT_SAMPLED
    };
    Some(SpanContext::new(
        trace_id,
        span_id,
        sampled,
        true,
        TraceState::default(),
    ))
}

impl TextMapPropagator for JaegerPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if sc.is_valid() {
            let flags = u8::from(sc.is_sampled());
            injector.set(
                HEADER,
                format!("{}:{}:0:{flags:x}", sc.trace_id(), sc.span_id()),
            );
        }
        for (key, (value, _)) in cx.baggage().iter() {
            injector.set(&format!("{BAGGAGE_PREFIX}{key}"), value.to_string());
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let mut cx = cx.clone();
        if let Some(sc) = extractor.get(HEADER).and_then(parse) {
            cx = cx.with_remote_span_context(sc);
        }
        let baggage: Vec<_> = extractor
            .keys()
            .into_iter()
            .filter_map(|key| {
                let name = key.strip_prefix(BAGGAGE_PREFIX)?;
                let value = extractor.get(key)?;
                (!name.is_empty()).then(|| KeyValue::new(name.to_owned(), value.to_owned()))
            })
            .collect();
        if !baggage.is_empty() {
            let all: Vec<KeyValue> = cx
                .baggage()
                .iter()
                .map(|(k, (v, _))| KeyValue::new(k.clone(), v.clone()))
                .chain(baggage)
                .collect();
            cx = cx.with_baggage(all);
        }
        cx
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn extract(headers: &[(&str, &str)]) -> Context {
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        JaegerPropagator::new().extract_with_context(&Context::new(), &map)
    }

    #[test]
    fn round_trips_ids_flags_and_baggage() {
        let cx = extract(&[
            (
                HEADER,
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
            ),
            ("uberctx-user", "alice"),
        ]);
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(cx.baggage().get("user").map(|v| v.as_str()), Some("alice"));

        let mut out: HashMap<String, String> = HashMap::new();
        JaegerPropagator::new().inject_context(&cx, &mut out);
        assert_eq!(
            out[HEADER],
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1"
        );
        assert_eq!(out["uberctx-user"], "alice");
    }

    #[test]
    fn short_ids_url_encoding_and_debug_flag() {
        let cx = extract(&[(HEADER, "abc%3A1f%3A0%3A2")]);
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(sc.trace_id(), TraceId::from(0xabc_u128));
        assert_eq!(sc.span_id(), SpanId::from(0x1f_u64));
        assert!(sc.is_sampled());
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            "",
            "garbage",
            "1:2:3",
            "1:2:3:4:5",
            "0:1:0:1",
            "1:0:0:1",
            "xyz:1:0:1",
            "4bf92f3577b34da6a3ce929d0e0e47361:1:0:1",
            "1:2:0:100",
        ] {
            let cx = extract(&[(HEADER, bad)]);
            assert!(!cx.span().span_context().is_valid(), "{bad:?} accepted");
        }
    }
}
