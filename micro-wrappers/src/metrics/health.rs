//! The framework's health series: breakers, limiters, registry, selector, client retries and
//! spans. Each part hands out pre-resolved handles (one lookup when a breaker or limiter is
//! made, none per call).

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use parking_lot::RwLock;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::breaker::{BreakerLayer, Event, Rejection, State};
use crate::ratelimit::{LimitEvent, RateLimitLayer};

type Labels = Vec<(&'static str, String)>;

/// Reads, at scrape time, how many nodes each known service has.
type NodesSource = Box<dyn Fn() -> Vec<(String, usize)> + Send + Sync>;

/// The rejection counters, resolved once per breaker and reason: an open breaker refuses
/// every call, and counting each refusal must not allocate.
#[derive(Clone, Default)]
struct Rejections {
    family: Family<Labels, Counter>,
    resolved: Arc<RwLock<ByBreaker>>,
}

/// One counter per [`Rejection`] kind, by breaker name.
type ByBreaker = HashMap<String, [OnceLock<Counter>; 4], foldhash::fast::RandomState>;

impl std::fmt::Debug for Rejections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejections")
            .field("breakers", &self.resolved.read().len())
            .finish()
    }
}

impl Rejections {
    fn inc(&self, breaker: &str, why: Rejection) {
        let (slot, reason) = match why {
            Rejection::Open => (0, "open"),
            Rejection::TooManyRequests => (1, "too_many_requests"),
            Rejection::MaxConcurrency => (2, "max_concurrency"),
            Rejection::Throttled => (3, "throttled"),
        };
        let resolve = || {
            self.family.get_or_create_owned(&vec![
                ("breaker", breaker.to_owned()),
                ("reason", reason.to_owned()),
            ])
        };
        if let Some(slots) = self.resolved.read().get(breaker) {
            slots[slot].get_or_init(resolve).inc();
            return;
        }
        self.resolved.write().entry(breaker.to_owned()).or_default()[slot]
            .get_or_init(resolve)
            .inc();
    }
}

/// The sources of `selector_nodes`, read on every scrape.
#[derive(Clone, Default)]
struct NodesSources(Arc<RwLock<Vec<NodesSource>>>);

impl std::fmt::Debug for NodesSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodesSources")
            .field("sources", &self.0.read().len())
            .finish()
    }
}

/// `<namespace>_selector_nodes{service}`: the sum over the sources, read at scrape time.
#[derive(Debug)]
struct NodesCollector {
    name: String,
    sources: NodesSources,
}

impl prometheus_client::collector::Collector for NodesCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::{
            encoding::EncodeMetric,
            metrics::{MetricType, gauge::ConstGauge},
        };
        let mut known = std::collections::BTreeMap::<String, usize>::new();
        for source in self.sources.0.read().iter() {
            for (service, nodes) in source() {
                *known.entry(service).or_default() += nodes;
            }
        }
        let mut metric = encoder.encode_descriptor(
            &self.name,
            "Nodes known per service",
            None,
            MetricType::Gauge,
        )?;
        for (service, nodes) in known {
            let labels = [("service", service)];
            let gauge = ConstGauge::new(i64::try_from(nodes).unwrap_or(i64::MAX));
            gauge.encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The health series of one process.
#[derive(Clone, Debug)]
pub struct Health {
    breaker_state: Family<Labels, Gauge>,
    breaker_transitions: Family<Labels, Counter>,
    breaker_rejections: Rejections,
    limiter_admitted: Family<Labels, Counter>,
    limiter_refused: Family<Labels, Counter>,
    limiter_waited: Family<Labels, Counter>,
    registrations: Family<Labels, Counter>,
    renewal_failures: Family<Labels, Counter>,
    watch_restarts: Counter,
    nodes: NodesSources,
    retries: Family<Labels, Counter>,
    retry_budget_refusals: Family<Labels, Counter>,
    node_ejections: Family<Labels, Counter>,
    nodes_ejected: Family<Labels, Gauge>,
}

/// A breaker state as the gauge reads it: 0 closed, 1 half-open, 2 open.
pub fn state_value(state: State) -> i64 {
    match state {
        State::Closed => 0,
        State::HalfOpen => 1,
        State::Open => 2,
    }
}

/// One limiter's counters, for its layer to bump.
#[derive(Clone, Debug)]
pub struct LimiterSeries {
    /// Calls let through at once.
    pub admitted: Counter,
    /// Calls refused.
    pub refused: Counter,
    /// Calls that waited for a token, then went through.
    pub waited: Counter,
}

impl LimiterSeries {
    /// Counts one decision of the limiter.
    #[inline]
    pub fn record(&self, event: LimitEvent) {
        match event {
            LimitEvent::Admitted => self.admitted.inc(),
            LimitEvent::Waited(_) => self.waited.inc(),
            LimitEvent::Refused => self.refused.inc(),
        };
    }
}

impl Health {
    pub(crate) fn register(registry: &mut Registry, namespace: &str) -> Self {
        let health = Health {
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            breaker_rejections: Rejections::default(),
            limiter_admitted: Family::default(),
            limiter_refused: Family::default(),
            limiter_waited: Family::default(),
            registrations: Family::default(),
            renewal_failures: Family::default(),
            watch_restarts: Counter::default(),
            nodes: NodesSources::default(),
            retries: Family::default(),
            retry_budget_refusals: Family::default(),
            node_ejections: Family::default(),
            nodes_ejected: Family::default(),
        };
        let name = |n: &str| super::full_name(&[namespace, n]);
        let h = &health;
        registry.register(
            name("breaker_state"),
            "Breaker state (0 closed, 1 half-open, 2 open)",
            h.breaker_state.clone(),
        );
        registry.register(
            name("breaker_transitions"),
            "Breaker state changes",
            h.breaker_transitions.clone(),
        );
        registry.register(
            name("breaker_rejections"),
            "Calls a breaker refused",
            h.breaker_rejections.family.clone(),
        );
        registry.register(
            name("ratelimit_admitted"),
            "Calls a limiter let through",
            h.limiter_admitted.clone(),
        );
        registry.register(
            name("ratelimit_refused"),
            "Calls a limiter refused",
            h.limiter_refused.clone(),
        );
        registry.register(
            name("ratelimit_waited"),
            "Calls that waited for a limiter",
            h.limiter_waited.clone(),
        );
        registry.register(
            name("registry_registrations"),
            "Successful registrations and renewals",
            h.registrations.clone(),
        );
        registry.register(
            name("registry_renewal_failures"),
            "Failed registrations and renewals",
            h.renewal_failures.clone(),
        );
        registry.register(
            name("registry_watch_restarts"),
            "Registry watches restarted",
            h.watch_restarts.clone(),
        );
        registry.register_collector(Box::new(NodesCollector {
            name: name("selector_nodes"),
            sources: h.nodes.clone(),
        }));
        registry.register(name("client_retries"), "Client retries", h.retries.clone());
        registry.register(
            name("client_retry_budget_refusals"),
            "Retries the retry budget refused",
            h.retry_budget_refusals.clone(),
        );
        registry.register(
            name("client_node_ejections"),
            "Nodes the client took out of rotation after transport failures",
            h.node_ejections.clone(),
        );
        registry.register(
            name("client_nodes_ejected"),
            "Nodes out of rotation now",
            h.nodes_ejected.clone(),
        );
        health
    }

    /// An observer for a breaker's `on_event` (gobreaker, hystrix, adaptive): its state gauge,
    /// transitions and rejections, labelled `breaker`. [`Health::observe_breaker`] also sets
    /// each new breaker's gauge.
    pub fn breaker_observer(&self) -> impl Fn(&str, Event) + Send + Sync + 'static {
        super::link::breaker_observer(self.clone())
    }

    /// `layer` with its breakers feeding these series: every event, and each new breaker's
    /// state gauge (closed) as soon as it is made.
    ///
    /// ```
    /// use micro_wrappers::breaker::{BreakerLayer, Settings};
    /// use micro_wrappers::metrics::{Metrics, MetricsConfig};
    /// let metrics = Metrics::new(MetricsConfig::default());
    /// let layer = metrics.health().observe_breaker(BreakerLayer::gobreaker(Settings::new("mine")));
    /// # let _ = layer;
    /// ```
    pub fn observe_breaker(&self, layer: BreakerLayer) -> BreakerLayer {
        super::link::observe_breaker(self, layer)
    }

    /// An observer for a limiter's `on_event`: its admitted, waited and refused counters,
    /// labelled `limiter="<name>"` (resolved once, not per call).
    pub fn limit_observer(&self, name: &str) -> impl Fn(&str, LimitEvent) + Send + Sync + 'static {
        super::link::limit_observer(self.clone(), name)
    }

    /// `layer` with its decisions counted as the limiter `name`.
    pub fn observe_limiter(&self, name: &str, layer: RateLimitLayer) -> RateLimitLayer {
        layer.on_event(self.limit_observer(name))
    }

    /// Records one event of the breaker `name`.
    pub fn breaker_event(&self, name: &str, event: Event) {
        let health = self;
        match event {
            Event::StateChange { from, to } => {
                health.breaker_state(name, to);
                health
                    .breaker_transitions
                    .get_or_create(&vec![
                        ("breaker", name.to_owned()),
                        ("from", from.as_str().to_owned()),
                        ("to", to.as_str().to_owned()),
                    ])
                    .inc();
            }
            Event::Rejected(why) => health.breaker_rejections.inc(name, why),
        }
    }

    /// Sets a breaker's state gauge (call once when the breaker is made, as closed).
    pub fn breaker_state(&self, name: &str, state: State) {
        self.breaker_state
            .get_or_create(&vec![("breaker", name.to_owned())])
            .set(state_value(state));
    }

    /// The counters of the limiter `name`.
    pub fn limiter(&self, name: &str) -> LimiterSeries {
        let labels = vec![("limiter", name.to_owned())];
        LimiterSeries {
            admitted: self.limiter_admitted.get_or_create_owned(&labels),
            refused: self.limiter_refused.get_or_create_owned(&labels),
            waited: self.limiter_waited.get_or_create_owned(&labels),
        }
    }

    /// A registration or renewal of `service` succeeded (`true`) or failed.
    pub fn registration(&self, service: &str, ok: bool) {
        let labels = vec![("service", service.to_owned())];
        if ok {
            self.registrations.get_or_create(&labels).inc();
        } else {
            self.renewal_failures.get_or_create(&labels).inc();
        }
    }

    /// A registry watch was restarted.
    pub fn watch_restarted(&self) {
        self.watch_restarts.inc();
    }

    /// Adds a source of `selector_nodes`: read on every scrape, it says how many nodes each
    /// service it knows has (e.g. a client's registry cache). Sources are summed by service.
    pub fn nodes_from(&self, source: impl Fn() -> Vec<(String, usize)> + Send + Sync + 'static) {
        self.nodes.0.write().push(Box::new(source));
    }

    /// The client retried a call to `service` (`refused`: the retry budget said no).
    pub fn retry(&self, service: &str, refused: bool) {
        let labels = vec![("service", service.to_owned())];
        if refused {
            self.retry_budget_refusals.get_or_create(&labels).inc();
        } else {
            self.retries.get_or_create(&labels).inc();
        }
    }
}

impl Health {
    /// The client took a node of `service` out of rotation (`client_node_ejections_total`);
    /// `again`: it was out already (its probe failed), so `client_nodes_ejected` stays.
    pub fn node_ejected(&self, service: &str, again: bool) {
        let labels = vec![("service", service.to_owned())];
        self.node_ejections.get_or_create(&labels).inc();
        if !again {
            self.nodes_ejected.get_or_create(&labels).inc();
        }
    }

    /// An ejected node of `service` is back in rotation, or left the registry.
    pub fn node_restored(&self, service: &str) {
        let labels = vec![("service", service.to_owned())];
        self.nodes_ejected.get_or_create(&labels).dec();
    }
}

/// Exposes a tracer's [`SpanStats`](crate::trace::SpanStats) as
/// `<namespace>_trace_spans_{ended,exported,dropped}_total`.
#[derive(Debug)]
pub struct SpanCollector {
    names: [String; 3],
    stats: Arc<crate::trace::SpanStats>,
}

impl SpanCollector {
    /// A collector of `stats` under `namespace`.
    pub fn new(namespace: &str, stats: Arc<crate::trace::SpanStats>) -> Self {
        let name = |n: &str| super::full_name(&[namespace, n]);
        SpanCollector {
            names: [
                name("trace_spans_ended"),
                name("trace_spans_exported"),
                name("trace_spans_dropped"),
            ],
            stats,
        }
    }
}

impl prometheus_client::collector::Collector for SpanCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::{encoding::EncodeMetric, metrics::counter::ConstCounter};
        let values = [
            (
                self.stats.ended(),
                "Sampled spans ended (once per exporter)",
            ),
            (self.stats.exported(), "Spans a receiver accepted"),
            (
                self.stats.dropped(),
                "Spans lost: their batch failed to export",
            ),
        ];
        for (name, (value, help)) in self.names.iter().zip(values) {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}
