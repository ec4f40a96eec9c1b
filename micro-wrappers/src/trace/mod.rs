//! Tracing: OpenTelemetry client and server spans for every call, propagated through the
//! call's metadata, exported over OTLP (gRPC or HTTP: Jaeger, collectors) and Zipkin v2.
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
//! The server wrapper extracts the caller's context from the request headers (any configured
//! format; a malformed header starts a new trace), starts a server span, and makes it the
//! current OpenTelemetry context while the handler's future runs, so calls the handler makes
//! from its task are its children. The client wrapper starts a client span under the current
//! context and injects it (every configured format) into the outgoing headers. Both end the
//! span when the call ends (stream included), with the status of micro-core's classifier.
//!
//! Built on the OpenTelemetry API directly rather than `tracing` + `tracing-opentelemetry`:
//! the spans need remote parents, kinds, status codes and a context that outlives a poll (the
//! response body), which the OpenTelemetry API expresses directly, with no subscriber for the
//! application to install and no per-call subscriber dispatch.

mod config;
mod export;
mod future;
mod jaeger;
mod layer;
mod metadata;
mod service;
mod zipkin;

pub use config::{
    ConfigError, Exporter, OtlpProtocol, Propagation, Resolved, SamplerConfig, SpanNames,
    TraceConfig, parse_exporters, parse_propagators, propagator,
};
pub use export::{SpanStats, Tracing};
pub use future::ResponseFuture;
pub use jaeger::JaegerPropagator;
pub use layer::TraceLayer;
pub use service::{SpanEnd, Trace};

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
