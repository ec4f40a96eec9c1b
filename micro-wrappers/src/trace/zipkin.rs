//! Zipkin v2 JSON over HTTP (`POST /api/v2/spans`), the format Zipkin's server ingests.
//!
//! Written here rather than with `opentelemetry-zipkin`: that crate is deprecated upstream
//! (to be removed in favour of OTLP), and its last release (0.33) no longer writes
//! `localEndpoint.serviceName`, so Zipkin files every span under no service. The format is
//! small and stable: ids in hex, times in microseconds, kind, tags, the local service.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::{
    Value,
    trace::{SpanKind, Status},
};
use opentelemetry_sdk::{
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use serde_json::{Map, json};

/// Posts batches of spans to a Zipkin collector.
#[derive(Debug)]
pub(crate) struct ZipkinExporter {
    client: reqwest::blocking::Client,
    endpoint: String,
    service_name: String,
}

impl ZipkinExporter {
    pub(crate) fn new(
        client: reqwest::blocking::Client,
        endpoint: String,
        service_name: String,
    ) -> Self {
        ZipkinExporter {
            client,
            endpoint,
            service_name,
        }
    }
}

fn micros(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.as_str().to_owned(),
        other => other.to_string(),
    }
}

/// One span in Zipkin's v2 model.
pub(crate) fn to_zipkin(span: &SpanData, service_name: &str) -> serde_json::Value {
    let mut tags = Map::new();
    for kv in &span.attributes {
        tags.insert(kv.key.as_str().to_owned(), text(&kv.value).into());
    }
    match &span.status {
        Status::Error { description } => {
            tags.insert("otel.status_code".into(), "ERROR".into());
            tags.insert("error".into(), description.to_string().into());
        }
        Status::Ok => {
            tags.insert("otel.status_code".into(), "OK".into());
        }
        Status::Unset => {}
    }
    let start = micros(span.start_time);
    let duration = span
        .end_time
        .duration_since(span.start_time)
        .unwrap_or(Duration::ZERO);
    let mut out = json!({
        "traceId": span.span_context.trace_id().to_string(),
        "id": span.span_context.span_id().to_string(),
        "name": span.name,
        "timestamp": start,
        "duration": u64::try_from(duration.as_micros()).unwrap_or(u64::MAX).max(1),
        "localEndpoint": { "serviceName": service_name },
        "tags": tags,
    });
    if span.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        out["parentId"] = span.parent_span_id.to_string().into();
    }
    let kind = match span.span_kind {
        SpanKind::Client => Some("CLIENT"),
        SpanKind::Server => Some("SERVER"),
        SpanKind::Producer => Some("PRODUCER"),
        SpanKind::Consumer => Some("CONSUMER"),
        SpanKind::Internal => None,
    };
    if let Some(kind) = kind {
        out["kind"] = kind.into();
    }
    out
}

impl SpanExporter for ZipkinExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans: Vec<_> = batch
            .iter()
            .map(|s| to_zipkin(s, &self.service_name))
            .collect();
        let body = serde_json::to_vec(&spans)
            .map_err(|e| OTelSdkError::InternalFailure(format!("zipkin JSON: {e}")))?;
        // The SDK exports from its own thread: a blocking request is what it expects.
        let response = self
            .client
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .map_err(|e| OTelSdkError::InternalFailure(format!("zipkin {}: {e}", self.endpoint)))?;
        if !response.status().is_success() {
            return Err(OTelSdkError::InternalFailure(format!(
                "zipkin {}: HTTP {}",
                self.endpoint,
                response.status()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_zipkin_v2_fields() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let start = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000);
        let span = SpanData {
            span_context: SpanContext::new(
                TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736_u128),
                SpanId::from(0x00f067aa0ba902b7_u64),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(0x1_u64),
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: "greeter.Greeter/Test".into(),
            start_time: start,
            end_time: start + Duration::from_micros(1500),
            attributes: vec![opentelemetry::KeyValue::new("rpc.grpc.status_code", 14_i64)],
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::error("down"),
            instrumentation_scope: Default::default(),
        };
        let z = to_zipkin(&span, "greeter1");
        assert_eq!(z["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(z["id"], "00f067aa0ba902b7");
        assert_eq!(z["parentId"], "0000000000000001");
        assert_eq!(z["kind"], "CLIENT");
        assert_eq!(z["timestamp"], 1_700_000_000_000_000_u64);
        assert_eq!(z["duration"], 1500);
        assert_eq!(z["localEndpoint"]["serviceName"], "greeter1");
        assert_eq!(z["tags"]["rpc.grpc.status_code"], "14");
        assert_eq!(z["tags"]["error"], "down");
    }
}
