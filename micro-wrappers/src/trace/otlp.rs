//! OTLP export with the official `opentelemetry-proto` types: protobuf over gRPC (tonic, on a
//! runtime of the export thread's own) or over HTTP (`application/x-protobuf`).

use std::time::Duration;

use fastrace::collector::SpanRecord;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status},
};
use prost::Message as _;

use super::{
    Side,
    config::{ConfigError, OtlpProtocol, Resolved},
    export::{Export, Maker},
    service::{CODE_KEY, ENDPOINT_KEY, ERROR_KEY, Endpoint, endpoint_of},
};

/// What the exporters read from a span: its endpoint (ours) and its error, if any.
pub(crate) struct View<'a> {
    pub(crate) endpoint: Option<&'static Endpoint>,
    pub(crate) error: Option<&'a str>,
}

pub(crate) fn view(span: &SpanRecord) -> View<'_> {
    let mut view = View {
        endpoint: None,
        error: None,
    };
    for (key, value) in &span.properties {
        if key == ENDPOINT_KEY {
            view.endpoint = endpoint_of(value);
        } else if key == ERROR_KEY {
            view.error = Some(value);
        }
    }
    view
}

/// The properties a user set, and ours but the internal ones.
pub(crate) fn tags(span: &SpanRecord) -> impl Iterator<Item = (&str, &str)> {
    span.properties
        .iter()
        .filter(|(key, _)| key != ENDPOINT_KEY && key != ERROR_KEY)
        .map(|(key, value)| (&**key, &**value))
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// One span in OTLP's model.
pub(crate) fn to_proto(record: &SpanRecord) -> Span {
    let view = view(record);
    let mut attributes = Vec::with_capacity(record.properties.len() + 6);
    if let Some(endpoint) = view.endpoint {
        attributes.extend(endpoint.attributes.iter().map(|(k, v)| text(k, v)));
    }
    for (key, value) in tags(record) {
        attributes.push(match (key, value.parse::<i64>()) {
            (CODE_KEY, Ok(code)) => KeyValue {
                key: key.to_owned(),
                value: Some(AnyValue {
                    value: Some(Value::IntValue(code)),
                }),
                ..Default::default()
            },
            _ => text(key, value),
        });
    }
    let kind = match view.endpoint.map(|e| e.side) {
        Some(Side::Server) => span::SpanKind::Server,
        Some(Side::Client) => span::SpanKind::Client,
        None => span::SpanKind::Internal,
    };
    let parent = record.parent_id.0;
    Span {
        trace_id: record.trace_id.0.to_be_bytes().to_vec(),
        span_id: record.span_id.0.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            parent.to_be_bytes().to_vec()
        },
        name: record.name.to_string(),
        kind: kind as i32,
        start_time_unix_nano: record.begin_time_unix_ns,
        end_time_unix_nano: record.begin_time_unix_ns + record.duration_ns,
        attributes,
        events: record
            .events
            .iter()
            .map(|e| span::Event {
                time_unix_nano: e.timestamp_unix_ns,
                name: e.name.to_string(),
                attributes: e.properties.iter().map(|(k, v)| text(k, v)).collect(),
                dropped_attributes_count: 0,
            })
            .collect(),
        status: view.error.map(|message| Status {
            message: message.to_owned(),
            code: status::StatusCode::Error as i32,
        }),
        flags: 0x100 | 1,
        ..Default::default()
    }
}

/// The request of a batch, under the service's name.
fn request(service_name: &str, spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", service_name)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "micro-rs".into(),
                    ..Default::default()
                }),
                spans: spans.iter().map(to_proto).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Checks the settings now; builds the client on the export thread.
pub(crate) fn maker(config: &Resolved) -> Result<Maker, ConfigError> {
    let err = |reason: String| ConfigError::Exporter {
        exporter: "otlp",
        reason,
    };
    let endpoint = config.otlp_endpoint.clone();
    let timeout = config.export_timeout;
    let service = config.service_name.clone();
    match config.otlp_protocol {
        OtlpProtocol::Grpc => {
            let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
                .map_err(|e| err(format!("{endpoint} ({e})")))?
                .timeout(timeout)
                .connect_timeout(timeout);
            Ok(Box::new(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let client = {
                    let _entered = runtime.enter();
                    TraceServiceClient::new(channel.connect_lazy())
                };
                Ok(Box::new(Grpc {
                    runtime,
                    client,
                    timeout,
                    service,
                    endpoint,
                }) as Box<dyn Export>)
            }))
        }
        OtlpProtocol::HttpProtobuf => {
            if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                return Err(err(format!("{endpoint:?}: want an http:// URL")));
            }
            Ok(Box::new(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(Box::new(Http {
                    client,
                    endpoint,
                    service,
                    buffer: Vec::new(),
                }) as Box<dyn Export>)
            }))
        }
    }
}

struct Grpc {
    runtime: tokio::runtime::Runtime,
    client: TraceServiceClient<tonic::transport::Channel>,
    timeout: Duration,
    service: String,
    endpoint: String,
}

impl Export for Grpc {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn export(&mut self, spans: &[SpanRecord]) -> Result<(), String> {
        let request = request(&self.service, spans);
        let client = &mut self.client;
        let answer = self
            .runtime
            .block_on(async { tokio::time::timeout(self.timeout, client.export(request)).await });
        match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(format!("{}: {status}", self.endpoint)),
            Err(_) => Err(format!(
                "{}: no answer in {:?}",
                self.endpoint, self.timeout
            )),
        }
    }
}

struct Http {
    client: reqwest::blocking::Client,
    endpoint: String,
    service: String,
    /// The encoded batch, its memory kept from batch to batch.
    buffer: Vec<u8>,
}

impl Export for Http {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn export(&mut self, spans: &[SpanRecord]) -> Result<(), String> {
        self.buffer.clear();
        request(&self.service, spans)
            .encode(&mut self.buffer)
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .post(&self.endpoint)
            .header("content-type", "application/x-protobuf")
            .body(self.buffer.clone())
            .send()
            .map_err(|e| format!("{}: {e}", self.endpoint))?;
        if !response.status().is_success() {
            return Err(format!("{}: HTTP {}", self.endpoint, response.status()));
        }
        Ok(())
    }
}
