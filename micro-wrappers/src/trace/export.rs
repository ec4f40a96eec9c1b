//! The tracer: a tracer provider with one batch processor per exporter (OTLP over gRPC or
//! HTTP, Zipkin v2), the sampler and the propagator, and counters of what left and what was
//! lost.
//!
//! Batches are exported from the SDK's own thread: a call only hands its ended span to a
//! bounded queue (never waits). A receiver that is down or never answers costs the spans of
//! the batches that failed (counted in [`SpanStats`]); when the queue is full the SDK drops
//! the newest spans (the difference `ended - exported - dropped`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry::{propagation::TextMapCompositePropagator, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, Span, SpanData,
        SpanExporter, SpanProcessor,
    },
};

use super::config::{ConfigError, Exporter, OtlpProtocol, Resolved, SpanNames, propagator};

/// What the exporters did with the sampled spans.
#[derive(Debug, Default)]
pub struct SpanStats {
    ended: AtomicU64,
    exported: AtomicU64,
    dropped: AtomicU64,
}

impl SpanStats {
    /// Sampled spans that ended (handed to the exporters' queues, once per exporter).
    pub fn ended(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }

    /// Spans a receiver accepted.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans lost because their batch failed to export (receiver down, timed out, refused).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// An exporter that counts what it exported and what it lost.
#[derive(Debug)]
struct Counted<E> {
    name: &'static str,
    inner: E,
    stats: Arc<SpanStats>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => self.stats.exported.fetch_add(n, Ordering::Relaxed),
            Err(err) => {
                tracing::debug!(exporter = self.name, spans = n, %err, "span export failed");
                self.stats.dropped.fetch_add(n, Ordering::Relaxed)
            }
        };
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}

/// Counts the sampled spans that end, in front of a processor.
#[derive(Debug)]
struct Counting<P> {
    inner: P,
    stats: Arc<SpanStats>,
}

impl<P: SpanProcessor> SpanProcessor for Counting<P> {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx)
    }

    fn on_end(&self, span: SpanData) {
        self.stats.ended.fetch_add(1, Ordering::Relaxed);
        self.inner.on_end(span)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}

/// An installed tracer: what the trace wrappers use. Cheap to clone. Not a global: each
/// service (or bare tonic app) holds its own.
#[derive(Clone, Debug)]
pub struct Tracing {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TextMapCompositePropagator,
    names: SpanNames,
    stats: Arc<SpanStats>,
    service_name: String,
}

impl Tracing {
    /// Builds the exporters, the batch processors and the tracer. The OTLP gRPC exporter
    /// needs a tokio runtime (its channel connects lazily on it).
    pub fn install(config: Resolved) -> Result<Self, ConfigError> {
        let stats = Arc::new(SpanStats::default());
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let mut builder = SdkTracerProvider::builder()
            .with_sampler(config.sampler.to_sampler())
            .with_resource(resource);
        let batch = || {
            BatchConfigBuilder::default()
                .with_scheduled_delay(config.batch_delay)
                .build()
        };
        for exporter in &config.exporters {
            let processor = match exporter {
                Exporter::Otlp => {
                    let exporter = otlp(&config)?;
                    BatchSpanProcessor::builder(Counted {
                        name: "otlp",
                        inner: exporter,
                        stats: stats.clone(),
                    })
                    .with_batch_config(batch())
                    .build()
                }
                Exporter::Zipkin => {
                    let exporter = zipkin(&config)?;
                    BatchSpanProcessor::builder(Counted {
                        name: "zipkin",
                        inner: exporter,
                        stats: stats.clone(),
                    })
                    .with_batch_config(batch())
                    .build()
                }
            };
            builder = builder.with_span_processor(Counting {
                inner: processor,
                stats: stats.clone(),
            });
        }
        let provider = builder.build();
        let tracer = provider.tracer("micro-rs");
        Ok(Tracing {
            inner: Arc::new(Inner {
                provider,
                tracer,
                propagator: propagator(&config.propagators),
                names: config.span_names,
                stats,
                service_name: config.service_name,
            }),
        })
    }

    /// The tracer.
    pub fn tracer(&self) -> &SdkTracer {
        &self.inner.tracer
    }

    /// The propagator (all configured formats).
    pub fn propagator(&self) -> &TextMapCompositePropagator {
        &self.inner.propagator
    }

    /// How spans are named.
    pub fn span_names(&self) -> SpanNames {
        self.inner.names
    }

    /// The service name spans are reported under.
    pub fn service_name(&self) -> &str {
        &self.inner.service_name
    }

    /// Export counters.
    pub fn stats(&self) -> &Arc<SpanStats> {
        &self.inner.stats
    }

    /// Exports every ended span now; blocks until the exporters answered (or timed out).
    /// Call from a blocking context (`tokio::task::spawn_blocking`), never on a runtime thread
    /// that the exporters need.
    pub fn force_flush(&self) -> OTelSdkResult {
        self.inner.provider.force_flush()
    }

    /// Flushes the last spans and stops the exporters; blocking, like [`Tracing::force_flush`].
    pub fn shutdown(&self) -> OTelSdkResult {
        self.inner.provider.shutdown()
    }

    /// [`Tracing::shutdown`] from async code: runs it on a blocking thread.
    pub async fn shutdown_async(&self) -> OTelSdkResult {
        let tracing = self.clone();
        match tokio::task::spawn_blocking(move || tracing.shutdown()).await {
            Ok(result) => result,
            Err(err) => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                err.to_string(),
            )),
        }
    }

    /// The server-side wrapper: a span per handled call.
    pub fn server(&self) -> super::TraceLayer {
        super::TraceLayer::new(self.clone(), super::Side::Server)
    }

    /// The client-side wrapper: a span per call made.
    pub fn client(&self) -> super::TraceLayer {
        super::TraceLayer::new(self.clone(), super::Side::Client)
    }
}

fn otlp(config: &Resolved) -> Result<opentelemetry_otlp::SpanExporter, ConfigError> {
    let err = |reason: String| ConfigError::Exporter {
        exporter: "otlp",
        reason,
    };
    let built = match config.otlp_protocol {
        OtlpProtocol::Grpc => {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(err("the gRPC exporter needs a tokio runtime".into()));
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.otlp_endpoint.clone())
                .with_timeout(config.export_timeout)
                .build()
        }
        OtlpProtocol::HttpProtobuf => {
            let client = http_client(config.export_timeout).map_err(err)?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(config.otlp_endpoint.clone())
                .with_timeout(config.export_timeout)
                .build()
        }
    };
    built.map_err(|e| err(format!("{} ({e})", config.otlp_endpoint)))
}

fn zipkin(config: &Resolved) -> Result<super::zipkin::ZipkinExporter, ConfigError> {
    let client = http_client(config.export_timeout).map_err(|reason| ConfigError::Exporter {
        exporter: "zipkin",
        reason,
    })?;
    if !config.zipkin_endpoint.starts_with("http://")
        && !config.zipkin_endpoint.starts_with("https://")
    {
        return Err(ConfigError::Exporter {
            exporter: "zipkin",
            reason: format!("{:?}: want an http:// URL", config.zipkin_endpoint),
        });
    }
    Ok(super::zipkin::ZipkinExporter::new(
        client,
        config.zipkin_endpoint.clone(),
        config.service_name.clone(),
    ))
}

/// A blocking HTTP client for the exporters' thread, with the export timeout. Built on a
/// thread of its own: reqwest's blocking client must not be built inside a tokio runtime.
fn http_client(timeout: Duration) -> Result<reqwest::blocking::Client, String> {
    std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "building the HTTP client panicked".to_owned())?
}
