//! Tracing: a client and a server span for every call, propagated through the call's
//! metadata, exported over OTLP (gRPC or HTTP: Jaeger, collectors) and Zipkin v2.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use micro_wrappers::trace::{TraceConfig, Tracing};
//! let config = TraceConfig::default().resolve("greeter1", |name| std::env::var(name).ok())?;
//! let tracing = Tracing::install(config)?;
//! // micro: `.wrap_handler(tracing.server()).wrap_client(tracing.client())`;
//! // bare tonic: `Server::builder().layer(tracing.server())`.
//! tracing.shutdown_async().await?; // the last spans leave
//! # Ok(()) }
//! ```
//!
//! Spans are recorded by this module, not by the OpenTelemetry SDK (whose per-span pipeline
//! cost more than the call; `fastrace`, measured too, spent more than this module's whole
//! budget in its collector alone): on the call's task a span is a few words on the stack and,
//! when it ends, a copy into the thread's own ring (no lock, no `Arc`, no allocation but an
//! error's text). A collector thread drains the rings in batches and routes each span to the
//! exporters of the [`Tracing`] that made it (several services may run in one process),
//! through a bounded queue per `Tracing` (full: the span is dropped and counted) to an export
//! thread that encodes OTLP protobuf (`opentelemetry-proto`'s types) or Zipkin v2 JSON.
//!
//! The server wrapper reads the caller's context from the request headers (any configured
//! format; a malformed header starts a new trace), decides sampling (parent-based, the same
//! decision as OpenTelemetry's for the same trace id), starts the server span and sets it in
//! the call's [`CallContext`](micro_core::CallContext). The client wrapper's parent is the
//! span the handler opened with the `tracing` crate, if any (recorded by the
//! [`HandlerSpans`] layer), else the server span; it injects its span (every configured
//! format) into the outgoing headers. Both end the span when the call ends (stream
//! included), with the status of micro-core's classifier.

mod collect;
mod config;
mod export;
mod future;
mod layer;
mod otlp;
mod propagate;
mod record;
mod sampler;
mod service;
mod user;
mod zipkin;

pub use config::{
    ConfigError, Exporter, OtlpProtocol, Propagation, Resolved, SamplerConfig, SpanNames,
    TraceConfig, parse_exporters, parse_propagators,
};
pub use export::{ExportError, SpanStats, Tracing};
pub use future::ResponseFuture;
pub use layer::TraceLayer;
pub(crate) use service::Tracer;
pub use service::{SpanEnd, Trace};
pub use user::HandlerSpans;

/// Which end of a call a wrapper traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The handler of an incoming call.
    Server,
    /// A call made.
    Client,
}

impl Side {
    /// `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }
}
