//! Zipkin v2 JSON over HTTP (`POST /api/v2/spans`), the format Zipkin's server ingests,
//! written straight into a buffer kept from batch to batch.
//!
//! Written here rather than with `opentelemetry-zipkin`: that crate is deprecated upstream
//! (to be removed in favour of OTLP) and converts from the SDK's span type. The format is
//! small and stable: ids in hex, times in microseconds, kind, tags, the local service.

use std::io::Write as _;

use super::{
    Side,
    config::{ConfigError, Resolved},
    export::{Export, Maker},
    record::SpanRecord,
    service::CODE_KEY,
};

/// Checks the settings now; builds the client on the export thread.
pub(crate) fn maker(config: &Resolved) -> Result<Maker, ConfigError> {
    let endpoint = config.zipkin_endpoint.clone();
    if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
        return Err(ConfigError::Exporter {
            exporter: "zipkin",
            reason: format!("{endpoint:?}: want an http:// URL"),
        });
    }
    let timeout = config.export_timeout;
    let service = config.service_name.clone();
    Ok(Box::new(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Box::new(Zipkin {
            client,
            endpoint,
            service,
            buffer: Vec::new(),
        }) as Box<dyn Export>)
    }))
}

struct Zipkin {
    client: reqwest::blocking::Client,
    endpoint: String,
    service: String,
    buffer: Vec<u8>,
}

/// The gRPC codes as tag values.
const CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

/// A JSON string.
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends one span in Zipkin's v2 model.
pub(crate) fn write_span(out: &mut Vec<u8>, span: &SpanRecord, service: &str) {
    let _ = write!(
        out,
        r#"{{"traceId":"{:032x}","id":"{:016x}","#,
        span.trace_id, span.span_id
    );
    if span.parent_id != 0 {
        let _ = write!(out, r#""parentId":"{:016x}","#, span.parent_id);
    }
    out.extend_from_slice(br#""name":"#);
    string(out, span.name());
    let _ = write!(
        out,
        r#","timestamp":{},"duration":{}"#,
        span.begin_time_unix_ns / 1000,
        (span.duration_ns / 1000).max(1)
    );
    match span.endpoint.map(|e| e.side) {
        Some(Side::Server) => out.extend_from_slice(br#","kind":"SERVER""#),
        Some(Side::Client) => out.extend_from_slice(br#","kind":"CLIENT""#),
        None => {}
    }
    out.extend_from_slice(br#","localEndpoint":{"serviceName":"#);
    string(out, service);
    out.extend_from_slice(br#"},"tags":{"#);
    let mut first = true;
    let mut tag = |out: &mut Vec<u8>, key: &str, value: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        string(out, key);
        out.push(b':');
        string(out, value);
    };
    if let Some(endpoint) = span.endpoint {
        for (key, value) in &endpoint.attributes {
            tag(out, key, value);
        }
    }
    for (key, value) in &span.properties {
        tag(out, key, value);
    }
    if let Some(code) = span.code.and_then(|c| CODES.get(c as usize)) {
        tag(out, CODE_KEY, code);
    }
    if let Some(error) = &span.error {
        tag(out, "otel.status_code", "ERROR");
        tag(out, "error", error);
    }
    out.extend_from_slice(b"}}");
}

impl Export for Zipkin {
    fn name(&self) -> &'static str {
        "zipkin"
    }

    fn export(&mut self, spans: &[SpanRecord]) -> Result<(), String> {
        self.buffer.clear();
        self.buffer.push(b'[');
        for (i, span) in spans.iter().enumerate() {
            if i > 0 {
                self.buffer.push(b',');
            }
            write_span(&mut self.buffer, span, &self.service);
        }
        self.buffer.push(b']');
        let response = self
            .client
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .body(self.buffer.clone())
            .send()
            .map_err(|e| format!("zipkin {}: {e}", self.endpoint))?;
        if !response.status().is_success() {
            return Err(format!(
                "zipkin {}: HTTP {}",
                self.endpoint,
                response.status()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_zipkin_v2_fields() {
        let span = SpanRecord {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0x00f067aa0ba902b7,
            parent_id: 1,
            begin_time_unix_ns: 1_700_000_000_000_000_000,
            duration_ns: 1_500_000,
            name: "work \"quoted\"",
            properties: vec![("user", "ana".into())],
            error: Some("down".into()),
            ..Default::default()
        };
        let mut out = Vec::new();
        write_span(&mut out, &span, "greeter1");
        let z: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(z["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(z["id"], "00f067aa0ba902b7");
        assert_eq!(z["parentId"], "0000000000000001");
        assert_eq!(z["name"], "work \"quoted\"");
        assert!(z.get("kind").is_none(), "a span of the handler's own");
        assert_eq!(z["timestamp"], 1_700_000_000_000_000_u64);
        assert_eq!(z["duration"], 1500);
        assert_eq!(z["localEndpoint"]["serviceName"], "greeter1");
        assert_eq!(z["tags"]["user"], "ana");
        assert_eq!(z["tags"]["error"], "down");
    }
}
