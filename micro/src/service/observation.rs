//! Metrics and tracing settings, and what they decided.

use super::Service;

impl Service {
    /// Serves Prometheus metrics at `http://<address>/metrics`, with `/health` and `/ready`
    /// (`MICRO_METRICS_ADDRESS`, `--metrics_address`); `off` disables it. The call series
    /// wrappers go outside every other wrapper. One endpoint per process.
    ///
    /// ```
    /// let service = micro::Service::new().metrics_address("127.0.0.1:9000");
    /// ```
    pub fn metrics_address(mut self, address: impl Into<String>) -> Self {
        self.observe.metrics_address = Some(address.into());
        self
    }

    /// The metrics' options (namespace, subsystems, constant labels, buckets, OpenCensus
    /// views); go-micro's defaults otherwise. Metrics are served once an address is set.
    pub fn metrics(mut self, config: micro_wrappers::metrics::MetricsConfig) -> Self {
        self.observe.metrics_config = Some(config);
        self
    }

    /// Traces every handled call and every call made, with these settings (each one left unset
    /// is read from its `OTEL_*` variable). Without this, tracing is on when
    /// `OTEL_TRACES_EXPORTER` names an exporter. The trace wrappers go outside every other
    /// wrapper; the last spans are flushed on a graceful stop.
    ///
    /// ```
    /// use micro::trace::{Exporter, TraceConfig};
    /// let service = micro::Service::new()
    ///     .tracing(TraceConfig::default().exporters([Exporter::Otlp, Exporter::Zipkin]));
    /// ```
    pub fn tracing(mut self, config: micro_wrappers::trace::TraceConfig) -> Self {
        self.observe.trace_config = Some(config);
        self
    }

    /// The metrics registry, once decided (after [`Service::client`] or [`Service::start`]).
    /// To count your own breakers and limiters, built before that, use [`Service::health`].
    pub fn metrics_registry(&self) -> Option<&micro_wrappers::metrics::Metrics> {
        self.observe.metrics()
    }

    /// The framework health series, usable at any time: breakers and limiters attached to it
    /// are counted once metrics are on (from [`Service::client`] or [`Service::start`]), and
    /// cost one check per event when they stay off. The flags' breakers and limiters are
    /// attached already.
    ///
    /// ```
    /// use micro::wrappers::breaker::{BreakerLayer, Settings};
    /// use micro::wrappers::ratelimit::RateLimitLayer;
    /// let service = micro::Service::new().metrics_address("127.0.0.1:0");
    /// let health = service.health();
    /// let breaker = health.observe_breaker(BreakerLayer::gobreaker(Settings::new("greeter1")));
    /// let limit = health.observe_limiter("mine", RateLimitLayer::new(100.0, 10).unwrap());
    /// let service = service.wrap_client(breaker).wrap_handler(limit);
    /// ```
    pub fn health(&self) -> micro_wrappers::metrics::HealthLink {
        self.observe.health().clone()
    }

    /// The tracer, once decided (after [`Service::client`] or [`Service::start`]).
    pub fn tracer(&self) -> Option<&micro_wrappers::trace::Tracing> {
        self.observe.tracing()
    }
}
