//! OTLP export with the official `opentelemetry-proto` types: protobuf over gRPC (tonic, on a
//! runtime of the export thread's own) or over HTTP (`application/x-protobuf`).

use std::time::Duration;

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{Span, Status, span, status},
};
use prost::Message as _;

use super::{
    Side,
    config::{ConfigError, OtlpProtocol, Resolved},
    export::{Export, Maker},
    record::SpanRecord,
    service::{CODE_KEY, Endpoint},
};

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// Encodes batches as `ExportTraceServiceRequest` bytes, its memory kept from batch to batch:
/// the resource and scope are encoded once, each endpoint's attributes once (with the
/// official types), and each span through one `Span` value refilled in place, so that a span
/// costs few allocations however many attributes it has.
pub(crate) struct Encoder {
    /// `resource` (field 1 of `ResourceSpans`), encoded.
    resource: Vec<u8>,
    /// `scope` (field 1 of `ScopeSpans`), encoded.
    scope: Vec<u8>,
    /// What every span of an endpoint says (name, kind, attributes: the official `Span` type
    /// with those fields only), encoded, by endpoint.
    endpoints: Vec<Option<Vec<u8>>>,
    /// The status code attribute (field 9 of `Span`), encoded, by gRPC code.
    codes: Vec<Vec<u8>>,
    /// A span the handler opened, refilled in place.
    span: Span,
    /// The fields of a call's span that change from span to span, encoded.
    head: Vec<u8>,
    spans: Vec<u8>,
    /// The request of the last batch.
    pub(crate) out: Vec<u8>,
}

fn header(out: &mut Vec<u8>, tag: u32, len: usize) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(len as u64, out);
}

impl Encoder {
    pub(crate) fn new(service_name: &str) -> Self {
        let mut resource = Vec::new();
        prost::encoding::message::encode(
            1,
            &Resource {
                attributes: vec![text("service.name", service_name)],
                ..Default::default()
            },
            &mut resource,
        );
        let mut scope = Vec::new();
        prost::encoding::message::encode(
            1,
            &InstrumentationScope {
                name: "micro-rs".into(),
                ..Default::default()
            },
            &mut scope,
        );
        Encoder {
            resource,
            scope,
            endpoints: Vec::new(),
            codes: (0..CODES)
                .map(|code| {
                    let mut out = Vec::new();
                    let value = Some(AnyValue {
                        value: Some(Value::IntValue(code)),
                    });
                    let attribute = KeyValue {
                        key: CODE_KEY.to_owned(),
                        value,
                        ..Default::default()
                    };
                    prost::encoding::message::encode(9, &attribute, &mut out);
                    out
                })
                .collect(),
            span: Span::default(),
            head: Vec::new(),
            spans: Vec::new(),
            out: Vec::new(),
        }
    }

    /// What every span of the endpoint says, encoded once.
    fn endpoint<'a>(cache: &'a mut Vec<Option<Vec<u8>>>, endpoint: &'static Endpoint) -> &'a [u8] {
        let index = endpoint.index();
        if cache.len() <= index {
            cache.resize(index + 1, None);
        }
        cache[index].get_or_insert_with(|| {
            let kind = match endpoint.side {
                Side::Server => span::SpanKind::Server,
                Side::Client => span::SpanKind::Client,
            };
            Span {
                name: endpoint.name.to_owned(),
                kind: kind as i32,
                attributes: endpoint
                    .attributes
                    .iter()
                    .map(|(key, value)| text(key, value))
                    .collect(),
                ..Default::default()
            }
            .encode_to_vec()
        })
    }

    /// Encodes `spans` into [`Encoder::out`].
    pub(crate) fn encode(&mut self, spans: &[SpanRecord]) {
        self.spans.clear();
        for record in spans {
            let Some(endpoint) = record.endpoint else {
                // A span the handler opened: through the official type.
                fill(&mut self.span, record);
                header(&mut self.spans, 2, self.span.encoded_len());
                // `encode` cannot fail on a Vec (it grows).
                let _ = self.span.encode(&mut self.spans);
                continue;
            };
            // A call's span: its ids, times, status and flags written here, the rest as
            // encoded once for its endpoint (a message's fields may come in any order).
            write_head(&mut self.head, record);
            let code: &[u8] = match record.code {
                Some(code) => self.codes.get(code as usize).map_or(&[], |c| &c[..]),
                None => &[],
            };
            let endpoint = Self::endpoint(&mut self.endpoints, endpoint);
            header(
                &mut self.spans,
                2,
                self.head.len() + endpoint.len() + code.len(),
            );
            self.spans.extend_from_slice(&self.head);
            self.spans.extend_from_slice(endpoint);
            self.spans.extend_from_slice(code);
        }
        let scope_spans = self.scope.len() + self.spans.len();
        let mut scope_header = Vec::with_capacity(8);
        header(&mut scope_header, 2, scope_spans);
        let resource_spans = self.resource.len() + scope_header.len() + scope_spans;
        self.out.clear();
        self.out.reserve(resource_spans + 8);
        header(&mut self.out, 1, resource_spans);
        self.out.extend_from_slice(&self.resource);
        self.out.extend_from_slice(&scope_header);
        self.out.extend_from_slice(&self.scope);
        self.out.extend_from_slice(&self.spans);
    }
}

/// The gRPC status codes, 0 to 16, whose attribute is encoded once.
const CODES: i64 = 17;

/// The fields of `Span` that change from span to span: trace id (1), span id (2), parent
/// span id (4), start (7) and end (8) times, status (15), flags (16).
fn write_head(out: &mut Vec<u8>, record: &SpanRecord) {
    use prost::encoding::{WireType, encode_key};
    out.clear();
    header(out, 1, 16);
    out.extend_from_slice(&record.trace_id.to_be_bytes());
    header(out, 2, 8);
    out.extend_from_slice(&record.span_id.to_be_bytes());
    if record.parent_id != 0 {
        header(out, 4, 8);
        out.extend_from_slice(&record.parent_id.to_be_bytes());
    }
    encode_key(7, WireType::SixtyFourBit, out);
    out.extend_from_slice(&record.begin_time_unix_ns.to_le_bytes());
    encode_key(8, WireType::SixtyFourBit, out);
    out.extend_from_slice(&(record.begin_time_unix_ns + record.duration_ns).to_le_bytes());
    if let Some(message) = &record.error {
        let status = Status {
            message: message.to_string(),
            code: status::StatusCode::Error as i32,
        };
        prost::encoding::message::encode(15, &status, out);
    }
    // A server span's parent is the caller's span, in another process.
    let remote = record.parent_id != 0 && record.endpoint.is_some_and(|e| e.side == Side::Server);
    let flags = if remote { FLAGS | REMOTE } else { FLAGS };
    encode_key(16, WireType::ThirtyTwoBit, out);
    out.extend_from_slice(&flags.to_le_bytes());
}

/// OTLP span flags: the W3C flags (sampled: 1), and whether the parent is remote is known
/// (0x100).
const FLAGS: u32 = 0x100 | 1;
/// OTLP span flag: the parent is remote.
const REMOTE: u32 = 0x200;

/// Refills `span` with `record` (a span the handler opened), reusing its buffers.
fn fill(span: &mut Span, record: &SpanRecord) {
    span.trace_id.clear();
    span.trace_id
        .extend_from_slice(&record.trace_id.to_be_bytes());
    span.span_id.clear();
    span.span_id
        .extend_from_slice(&record.span_id.to_be_bytes());
    span.parent_span_id.clear();
    if record.parent_id != 0 {
        span.parent_span_id
            .extend_from_slice(&record.parent_id.to_be_bytes());
    }
    span.name.clear();
    span.name.push_str(record.name());
    span.kind = match record.endpoint.map(|e| e.side) {
        Some(Side::Server) => span::SpanKind::Server,
        Some(Side::Client) => span::SpanKind::Client,
        None => span::SpanKind::Internal,
    } as i32;
    span.start_time_unix_nano = record.begin_time_unix_ns;
    span.end_time_unix_nano = record.begin_time_unix_ns + record.duration_ns;
    span.attributes.clear();
    span.attributes.extend(
        record
            .properties
            .iter()
            .map(|(key, value)| text(key, value)),
    );
    span.status = record.error.as_ref().map(|message| Status {
        message: message.to_string(),
        code: status::StatusCode::Error as i32,
    });
    span.flags = FLAGS;
}

/// Sends encoded `ExportTraceServiceRequest` bytes as they are (tonic's codec for a message
/// already encoded); reads the answer only as a success.
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = bytes::Bytes;
    type Decode = ();
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        use bytes::Buf as _;
        src.advance(src.remaining());
        Ok(Some(()))
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
                    tonic::client::Grpc::new(channel.connect_lazy())
                };
                Ok(Box::new(Grpc {
                    runtime,
                    client,
                    timeout,
                    encoder: Encoder::new(&service),
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
                    encoder: Encoder::new(&service),
                }) as Box<dyn Export>)
            }))
        }
    }
}

struct Grpc {
    runtime: tokio::runtime::Runtime,
    client: tonic::client::Grpc<tonic::transport::Channel>,
    timeout: Duration,
    encoder: Encoder,
    endpoint: String,
}

/// The OTLP trace service's method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl Export for Grpc {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn export(&mut self, spans: &[SpanRecord]) -> Result<(), String> {
        self.encoder.encode(spans);
        // The request's bytes, not a copy (the next batch allocates its own, once).
        let body = bytes::Bytes::from(std::mem::take(&mut self.encoder.out));
        let client = &mut self.client;
        let call = async {
            client.ready().await.map_err(|e| e.to_string())?;
            let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
            client
                .unary(tonic::Request::new(body), path, Raw)
                .await
                .map_err(|status| status.to_string())
        };
        match self
            .runtime
            .block_on(async { tokio::time::timeout(self.timeout, call).await })
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: {e}", self.endpoint)),
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
    encoder: Encoder,
}

impl Export for Http {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn export(&mut self, spans: &[SpanRecord]) -> Result<(), String> {
        self.encoder.encode(spans);
        let response = self
            .client
            .post(&self.endpoint)
            .header("content-type", "application/x-protobuf")
            .body(self.encoder.out.clone())
            .send()
            .map_err(|e| format!("{}: {e}", self.endpoint))?;
        if !response.status().is_success() {
            return Err(format!("{}: HTTP {}", self.endpoint, response.status()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;

    use super::*;

    /// What the encoder writes is what the official types read, endpoint attributes included.
    #[test]
    fn batches_decode_with_the_official_types() {
        let endpoint = super::super::service::new_endpoint(
            "/greeter.Greeter/Test",
            Some(("greeter2", "Greeter.Test")),
            Some("node-1"),
            super::super::SpanNames::OpenTelemetry,
            Side::Server,
            usize::MAX,
        );
        let ours = SpanRecord {
            trace_id: 7,
            span_id: 8,
            parent_id: 9,
            begin_time_unix_ns: 1_000,
            duration_ns: 500,
            endpoint: Some(endpoint),
            code: Some(14),
            error: Some("down".into()),
            ..Default::default()
        };
        let users = SpanRecord {
            span_id: 10,
            parent_id: 8,
            endpoint: None,
            name: "user",
            code: None,
            error: None,
            properties: vec![("k", "v".into())],
            ..ours.clone()
        };
        let mut encoder = Encoder::new("svc");
        for _ in 0..2 {
            encoder.encode(&[ours.clone(), users.clone()]);
            let request = ExportTraceServiceRequest::decode(&encoder.out[..]).unwrap();
            let resource = &request.resource_spans[0];
            assert_eq!(
                resource.resource.as_ref().unwrap().attributes[0],
                text("service.name", "svc")
            );
            let spans = &resource.scope_spans[0].spans;
            assert_eq!(spans.len(), 2);
            let (a, b) = (&spans[0], &spans[1]);
            assert_eq!(a.name, "greeter.Greeter/Test");
            assert_eq!(a.kind, span::SpanKind::Server as i32);
            assert_eq!(a.trace_id, 7u128.to_be_bytes());
            assert_eq!(a.parent_span_id, 9u64.to_be_bytes());
            assert_eq!(a.end_time_unix_nano, 1_500);
            assert_eq!(a.status.as_ref().unwrap().message, "down");
            let keys: Vec<&str> = a.attributes.iter().map(|kv| kv.key.as_str()).collect();
            for key in [
                "rpc.system",
                "rpc.service",
                "rpc.method",
                "micro.service",
                "micro.endpoint",
                "micro.node",
                "rpc.grpc.status_code",
            ] {
                assert!(keys.contains(&key), "{key} in {keys:?}");
            }
            assert_eq!(b.kind, span::SpanKind::Internal as i32);
            assert_eq!(b.attributes, [text("k", "v")]);
            assert!(b.status.is_none());
        }
    }
}
