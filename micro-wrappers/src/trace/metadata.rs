//! The call's metadata as the propagators read and write it.
//!
//! opentelemetry-http's `HeaderExtractor` / `HeaderInjector` look every key up by `&str`,
//! which `http` parses and validates into a header name on each lookup, and the injector
//! allocates each name it writes. The propagators only ever ask for a handful of fixed keys,
//! so these look those up by prebuilt names; any other key takes the `&str` path.

use http::{
    HeaderMap,
    header::{HeaderName, HeaderValue},
};
use opentelemetry::propagation::{Extractor, Injector};

/// A key of a propagation format micro-rs speaks (W3C trace context and baggage, B3 single
/// and multi, Jaeger): its name, built at compile time, and whether its value changes from
/// call to call (it names the trace or the calling span).
fn known(key: &str) -> Option<(HeaderName, bool)> {
    const fn name(key: &'static str) -> HeaderName {
        HeaderName::from_static(key)
    }
    const TRACEPARENT: HeaderName = name("traceparent");
    const TRACESTATE: HeaderName = name("tracestate");
    const BAGGAGE: HeaderName = name("baggage");
    const B3: HeaderName = name("b3");
    const B3_TRACE_ID: HeaderName = name("x-b3-traceid");
    const B3_SPAN_ID: HeaderName = name("x-b3-spanid");
    const B3_PARENT_SPAN_ID: HeaderName = name("x-b3-parentspanid");
    const B3_SAMPLED: HeaderName = name("x-b3-sampled");
    const B3_FLAGS: HeaderName = name("x-b3-flags");
    const UBER_TRACE_ID: HeaderName = name("uber-trace-id");
    Some(match key {
        "traceparent" => (TRACEPARENT, true),
        "tracestate" => (TRACESTATE, false),
        "baggage" => (BAGGAGE, false),
        "b3" => (B3, true),
        "x-b3-traceid" => (B3_TRACE_ID, true),
        "x-b3-spanid" => (B3_SPAN_ID, true),
        "x-b3-parentspanid" => (B3_PARENT_SPAN_ID, true),
        "x-b3-sampled" => (B3_SAMPLED, false),
        "x-b3-flags" => (B3_FLAGS, false),
        "uber-trace-id" => (UBER_TRACE_ID, true),
        _ => return None,
    })
}

/// Reads a call's metadata for a propagator.
pub(crate) struct MetadataExtractor<'a>(pub(crate) &'a HeaderMap);

impl Extractor for MetadataExtractor<'_> {
    /// The value of `key`, if present and ASCII.
    fn get(&self, key: &str) -> Option<&str> {
        let value = match known(key) {
            Some((name, _)) => self.0.get(name),
            None => self.0.get(key),
        };
        value.and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = match known(key) {
            Some((name, _)) => self.0.get_all(name).iter().filter_map(as_str).collect(),
            None => self.0.get_all(key).iter().filter_map(as_str).collect(),
        };
        (!values.is_empty()).then_some(values)
    }
}

fn as_str(value: &HeaderValue) -> Option<&str> {
    value.to_str().ok()
}

/// Writes a propagator's keys into a call's metadata. A key or value that is not valid in a
/// header is skipped (the call goes out without it), as opentelemetry-http does.
///
/// A value that changes from call to call is marked never to be indexed by HTTP/2's header
/// compression (HPACK): indexed, each call's span id would take a place in the connection's
/// 4 KiB header table, which holds about 40 such values, and push out the headers every call
/// repeats (path, content type, deadline), which would then go out uncompressed again.
pub(crate) struct MetadataInjector<'a>(pub(crate) &'a mut HeaderMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let Ok(mut value) = HeaderValue::try_from(value) else {
            return;
        };
        let name = match known(key) {
            Some((name, per_call)) => {
                value.set_sensitive(per_call);
                name
            }
            None => match HeaderName::from_bytes(key.as_bytes()) {
                Ok(name) => name,
                Err(_) => return,
            },
        };
        self.0.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_other_keys_are_read_alike() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-ab-cd-01"));
        headers.insert("uberctx-user", HeaderValue::from_static("ana"));
        headers.append("baggage", HeaderValue::from_static("a=1"));
        headers.append("baggage", HeaderValue::from_static("b=2"));
        headers.insert("x-b3-sampled", HeaderValue::from_bytes(b"\xff").unwrap());
        let extractor = MetadataExtractor(&headers);
        assert_eq!(extractor.get("traceparent"), Some("00-ab-cd-01"));
        assert_eq!(extractor.get("uberctx-user"), Some("ana"));
        assert_eq!(extractor.get("tracestate"), None);
        // Not ASCII: absent, as opentelemetry-http reads it.
        assert_eq!(extractor.get("x-b3-sampled"), None);
        assert_eq!(extractor.get_all("baggage"), Some(vec!["a=1", "b=2"]));
        assert_eq!(extractor.get_all("tracestate"), None);
        let mut keys = extractor.keys();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["baggage", "traceparent", "uberctx-user", "x-b3-sampled"]
        );
    }

    #[test]
    fn invalid_keys_and_values_are_skipped() {
        let mut headers = HeaderMap::new();
        let mut injector = MetadataInjector(&mut headers);
        injector.set("traceparent", "00-ab-cd-01".to_owned());
        injector.set("uberctx-user", "ana".to_owned());
        injector.set("bad key", "x".to_owned());
        injector.set("tracestate", "line\nbreak".to_owned());
        assert_eq!(headers.len(), 2);
        assert_eq!(headers["traceparent"], "00-ab-cd-01");
        assert_eq!(headers["uberctx-user"], "ana");
        assert!(headers["traceparent"].is_sensitive(), "new on every call");
        assert!(!headers["uberctx-user"].is_sensitive());
    }
}
