//! Tracing and metrics wired into a [`Service`](crate::Service): one wrapper that traces and
//! measures (outermost, so it sees what other wrappers refuse), the metrics endpoint, the
//! health series fed by the server's registrations and the client's registry cache, and the
//! last spans flushed on a graceful stop.

mod http;

use std::net::SocketAddr;

use micro_registry::Cache;
use micro_server::Readiness;
use micro_wrappers::{
    metrics::{HealthLink, Metrics, MetricsConfig, SpanCollector},
    observe::ObserveLayer,
    trace::{ConfigError, TraceConfig, Tracing},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// The variable and flag that name the metrics address, for error messages.
pub(crate) const METRICS_SETTING: &str = "MICRO_METRICS_ADDRESS / --metrics_address";

/// What a service was asked to observe, and what it built for that.
#[derive(Default)]
pub(crate) struct Observation {
    /// `host:port`, or `off`.
    pub(crate) metrics_address: Option<String>,
    pub(crate) metrics_config: Option<MetricsConfig>,
    pub(crate) trace_config: Option<TraceConfig>,
    metrics: Option<Metrics>,
    /// The health series for what is built before metrics are decided (the flags' breakers
    /// and limiters, the user's): connected when metrics turn out on.
    health: HealthLink,
    tracing: Option<Tracing>,
    /// Whether the built parts were decided (once: the client may be built before start).
    decided: bool,
    /// A failure while deciding in `client()` (which cannot fail), reported by `start()`.
    failed: Option<ConfigError>,
    /// Stops what runs for the service (the endpoint, the cache follower).
    stop: CancellationToken,
}

impl Observation {
    fn metrics_on(&self) -> bool {
        self.metrics_address
            .as_deref()
            .is_some_and(|a| !a.trim().is_empty() && a.trim() != "off")
    }

    /// Tracing is on when configured in code, or when `OTEL_TRACES_EXPORTER` names an
    /// exporter.
    fn tracing_config(&self) -> Option<TraceConfig> {
        if let Some(config) = &self.trace_config {
            return Some(config.clone());
        }
        let exporter = std::env::var("OTEL_TRACES_EXPORTER").ok()?;
        let exporter = exporter.trim();
        (!exporter.is_empty() && exporter != "none").then(TraceConfig::default)
    }

    /// Builds the metrics and the tracer once, for the service `name`.
    pub(crate) fn decide(&mut self, name: &str) -> Result<(), ConfigError> {
        if self.decided {
            return match &self.failed {
                Some(err) => Err(clone_error(err)),
                None => Ok(()),
            };
        }
        self.decided = true;
        if self.metrics_on() {
            let metrics = Metrics::new(self.metrics_config.clone().unwrap_or_default());
            self.health.connect(metrics.health());
            self.metrics = Some(metrics);
        }
        if let Some(config) = self.tracing_config() {
            let resolved = config.resolve(name, |var| std::env::var(var).ok());
            match resolved.and_then(Tracing::install) {
                Ok(tracing) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.register_collector(SpanCollector::new(
                            "micro",
                            tracing.stats().clone(),
                        ));
                    }
                    self.tracing = Some(tracing);
                }
                Err(err) => {
                    self.failed = Some(clone_error(&err));
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// The health series, connected once metrics are decided on.
    pub(crate) fn health(&self) -> &HealthLink {
        &self.health
    }

    /// Puts the client wrapper that traces and measures outermost and counts the retry loop's
    /// retries and budget refusals.
    pub(crate) fn wrap_client(&self, mut builder: micro_client::Builder) -> micro_client::Builder {
        if self.metrics.is_some() || self.tracing.is_some() {
            builder = builder.wrap_client_outermost(ObserveLayer::client(
                self.tracing.as_ref(),
                self.metrics.as_ref(),
            ));
        }
        if let Some(metrics) = &self.metrics {
            let health = metrics.health().clone();
            builder = builder.on_retry(move |service, event| {
                health.retry(service, event == micro_client::RetryEvent::BudgetRefused);
            });
            let health = metrics.health().clone();
            builder = builder.on_ejection(move |service, event| {
                use micro_client::EjectionEvent::{Ejected, Extended, Restored};
                match event {
                    Ejected => health.node_ejected(service, false),
                    Extended => health.node_ejected(service, true),
                    Restored => health.node_restored(service),
                }
            });
        }
        builder
    }

    /// Puts the handler wrapper that traces and measures outermost.
    pub(crate) fn wrap_server(&self, server: &mut micro_server::Server) {
        if self.metrics.is_some() || self.tracing.is_some() {
            server.wrap_outermost(ObserveLayer::server(
                self.tracing.as_ref(),
                self.metrics.as_ref(),
            ));
        }
        if let Some(metrics) = &self.metrics {
            // The service's own name is a known label value (never folded into `other`).
            metrics.server_series().know(&server.options().name, []);
            let health = metrics.health().clone();
            let name = server.options().name.clone();
            server
                .readiness()
                .on_register(move |ok| health.registration(&name, ok));
        }
    }

    /// Follows the client's registry cache: nodes known per service (read from the cache at
    /// each scrape, so a service found by a first lookup counts at once) and watch restarts.
    pub(crate) fn watch_cache(&self, cache: &Cache) {
        let Some(metrics) = &self.metrics else { return };
        // A service found in the registry keeps its name in the client series past the bound.
        let found = cache.downgrade();
        metrics.client_series().known_services(move |service| {
            found
                .upgrade()
                .is_some_and(|cache| cache.node_counts().iter().any(|(name, _)| name == service))
        });
        let health = metrics.health().clone();
        let weak = cache.downgrade();
        health.nodes_from(move || {
            weak.upgrade()
                .map(|cache| cache.node_counts())
                .unwrap_or_default()
        });
        let mut restarts = cache.subscribe_watch_restarts();
        let mut counted = 0;
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let now = *restarts.borrow_and_update();
                for _ in counted..now {
                    health.watch_restarted();
                }
                counted = now;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = restarts.changed() => if changed.is_err() {
                        return; // the cache is gone
                    },
                }
            }
        });
    }

    /// Binds the metrics endpoint, if configured: a taken port is an error naming the address
    /// and the setting.
    pub(crate) async fn bind(&self) -> Result<Option<TcpListener>, crate::ServiceError> {
        if self.metrics.is_none() {
            return Ok(None);
        }
        let address = self.metrics_address.clone().unwrap_or_default();
        match TcpListener::bind(address.trim()).await {
            Ok(listener) => Ok(Some(listener)),
            Err(source) => Err(crate::ServiceError::Metrics { address, source }),
        }
    }

    /// Starts serving the endpoint on `listener`.
    pub(crate) fn start(&self, listener: Option<TcpListener>, readiness: Readiness) -> Observing {
        let stop = self.stop.clone();
        let endpoint = listener.and_then(|listener| {
            let metrics = self.metrics.clone()?;
            let address = listener.local_addr().ok()?;
            tracing::info!(%address, "serving /metrics, /health and /ready");
            Some((
                address,
                http::serve(listener, metrics, readiness, stop.clone()),
            ))
        });
        Observing {
            endpoint,
            stop,
            tracing: self.tracing.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// The metrics, if on.
    pub(crate) fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// The tracer, if on.
    pub(crate) fn tracing(&self) -> Option<&Tracing> {
        self.tracing.as_ref()
    }
}

fn clone_error(err: &ConfigError) -> ConfigError {
    ConfigError::Exporter {
        exporter: "tracing",
        reason: err.to_string(),
    }
}

/// The observing parts of a started service.
pub(crate) struct Observing {
    endpoint: Option<(SocketAddr, JoinHandle<()>)>,
    stop: CancellationToken,
    tracing: Option<Tracing>,
    metrics: Option<Metrics>,
}

impl Observing {
    pub(crate) fn metrics_addr(&self) -> Option<SocketAddr> {
        self.endpoint.as_ref().map(|(address, _)| *address)
    }

    pub(crate) fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    pub(crate) fn tracing(&self) -> Option<&Tracing> {
        self.tracing.as_ref()
    }

    /// Stops the endpoint and sends the last spans.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        if let Some((_, task)) = self.endpoint {
            let _ = task.await;
        }
        if let Some(tracing) = self.tracing
            && let Err(err) = tracing.shutdown_async().await
        {
            tracing::warn!(%err, "flushing spans at shutdown failed");
        }
    }
}
