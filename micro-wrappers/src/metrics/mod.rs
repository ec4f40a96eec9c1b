//! Metrics: Prometheus series for every call (go-micro's names), the process, and the
//! framework's health, in one explicit [`prometheus_client`] registry (no globals).
//!
//! ```
//! use micro_wrappers::metrics::{Metrics, MetricsConfig};
//! let metrics = Metrics::new(MetricsConfig::default());
//! // micro: `.wrap_handler(metrics.server()).wrap_client(metrics.client())`.
//! metrics.health().registration("greeter1", true);
//! let text = metrics.encode();
//! assert!(text.contains("micro_registry_registrations_total{service=\"greeter1\"} 1"));
//! assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
//! ```
//!
//! Series (go-micro v6's `wrapper/monitoring/prometheus`, so its dashboards work):
//! `micro_request_total` and `micro_request_duration_seconds` with `service`, `endpoint`,
//! `status` (`success` | `fail`) for handled calls; the client side in
//! `micro_client_request_total` / `micro_client_request_duration_seconds` (go-micro's
//! `Subsystem("client")`). Namespace, subsystems, constant labels and buckets are options, as in
//! go-micro; the seed's OpenCensus views are another option. gRPC health checks and reflection
//! calls are not counted.
//!
//! Bounded labels: each label keeps the values known (the services and endpoints a server
//! hosts, see [`Series::know`]) and the first [`MAX_VALUES`] others; later values fold into
//! one value, [`OTHER`], and so does a label of a call answered `UNIMPLEMENTED` whose value
//! was not known or seen, so a peer sending random names cannot grow the registry (new label
//! sets still add series up to those bounds: the registry grows to at most
//! `(known + 101)` services times `(known + 101)` endpoints).
//!
//! The cost of a call: each (service, endpoint) gets its [`Handles`] (a counter-histogram per
//! status) when first seen; a call then finds them by a hash of its names in a table no
//! core writes after (no lock), and counts with two relaxed atomic adds into its bucket and
//! the sum. The first call of a new (service, endpoint), and every call folded into `other`,
//! takes the slow path (a read lock and a map). Durations are read from `quanta`'s TSC clock,
//! not from a [`Clock`](crate::clock::Clock): they are measured, not decided on.
//!
//! The framework's health series ([`Health`]): breakers (`observe_breaker`), limiters
//! (`observe_limiter`), registrations, watch restarts, nodes known, client retries and spans;
//! [`HealthLink`] attaches breakers and limiters built before the metrics exist.

mod health;
mod histogram;
mod layer;
mod link;
mod process;
mod series;
mod service;
mod values;

use std::sync::Arc;

use parking_lot::RwLock;
use prometheus_client::{collector::Collector, registry::Registry};

pub use health::{Health, LimiterSeries, SpanCollector, state_value};
pub use layer::MetricsLayer;
pub use link::HealthLink;
pub use process::ProcessCollector;
pub use series::{Handles, Series};
pub use service::{Measure, MetricsService, ResponseFuture};

/// The most values a call label (`service`, `endpoint`) takes besides the known ones; later
/// values fold into [`OTHER`].
pub const MAX_VALUES: usize = 100;

/// The one value label values past the bound fold into.
pub const OTHER: &str = "other";

/// Prometheus' default histogram buckets (go-micro's), in seconds.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The seed's OpenCensus latency bounds, in milliseconds.
pub const OPENCENSUS_LATENCY_MS: [f64; 35] = [
    0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0, 50.0, 65.0,
    80.0, 100.0, 130.0, 160.0, 200.0, 250.0, 300.0, 400.0, 500.0, 650.0, 800.0, 1000.0, 2000.0,
    5000.0, 10000.0, 20000.0, 50000.0, 100000.0,
];

/// What to export; go-micro's prometheus wrapper options.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// Name prefix (go-micro's `Namespace`), `micro`.
    pub namespace: String,
    /// Subsystem of the handled calls' series (go-micro's `Subsystem`), empty.
    pub server_subsystem: String,
    /// Subsystem of the calls made, `client`.
    pub client_subsystem: String,
    /// Labels on every series (go-micro's `ConstLabels`).
    pub const_labels: Vec<(String, String)>,
    /// Duration buckets in seconds (go-micro's `Buckets`).
    pub buckets: Vec<f64>,
    /// Also the seed's OpenCensus views (`opencensus_io_rpc_{server,client}_*`).
    pub opencensus: bool,
    /// Process metrics (CPU, memory, file descriptors, start time).
    pub process: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            namespace: "micro".into(),
            server_subsystem: String::new(),
            client_subsystem: "client".into(),
            const_labels: Vec::new(),
            buckets: DEFAULT_BUCKETS.to_vec(),
            opencensus: false,
            process: true,
        }
    }
}

/// One process's metrics: the registry, the call series and the health series. Cheap to clone.
/// The registry grows as new label values are seen (within the bounds above) and as
/// collectors are added ([`Metrics::register_collector`]).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
    server: Arc<Series>,
    client: Arc<Series>,
    health: Health,
}

/// `namespace_subsystem_name`, skipping empty parts.
fn full_name(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("_")
}

impl Metrics {
    /// Registers every series of `config`.
    pub fn new(config: MetricsConfig) -> Self {
        let labels = config
            .const_labels
            .iter()
            .map(|(k, v)| (k.clone().into(), v.clone().into()));
        let mut registry = Registry::with_labels(labels);
        let server = Arc::new(Series::new(
            &full_name(&[&config.namespace, &config.server_subsystem]),
            "server",
            &config,
        ));
        registry.register_collector(Box::new(series::SeriesCollector(server.clone())));
        let client = Arc::new(Series::new(
            &full_name(&[&config.namespace, &config.client_subsystem]),
            "client",
            &config,
        ));
        registry.register_collector(Box::new(series::SeriesCollector(client.clone())));
        let health = Health::register(&mut registry, &config.namespace);
        if config.process {
            registry.register_collector(Box::new(ProcessCollector::new()));
        }
        Metrics {
            registry: Arc::new(RwLock::new(registry)),
            server,
            client,
            health,
        }
    }

    /// The handler wrapper: records every handled call.
    pub fn server(&self) -> MetricsLayer {
        MetricsLayer::new(self.server.clone())
    }

    /// The client wrapper: records every call made.
    pub fn client(&self) -> MetricsLayer {
        MetricsLayer::new(self.client.clone())
    }

    /// The handled calls' series (to [`Series::know`] the services a server hosts).
    pub fn server_series(&self) -> &Arc<Series> {
        &self.server
    }

    /// The series of the calls made (to [`Series::know`] services found in the registry).
    pub fn client_series(&self) -> &Arc<Series> {
        &self.client
    }

    /// The framework health series (breakers, limiters, registry, client, spans).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Adds a collector, read on every scrape (e.g. counters kept elsewhere).
    pub fn register_collector(&self, collector: impl Collector) {
        self.registry
            .write()
            .register_collector(Box::new(collector));
    }

    /// Everything in Prometheus' text format 0.0.4.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail; an encoder error would be a bug in a collector.
        if let Err(err) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry.read())
        {
            tracing::warn!(%err, "encoding metrics failed");
        }
        out
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
