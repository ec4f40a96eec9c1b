//! A handle on the health series before it is known whether metrics are on: breakers and
//! limiters built early (from flags, or by the user before the service decides its metrics)
//! attach to it, and start counting once it is connected.

use std::sync::{Arc, OnceLock};

use super::{Health, LimiterSeries};
use crate::breaker::{BreakerLayer, Event, State};
use crate::ratelimit::{LimitEvent, RateLimitLayer};

/// The health series of a process, connected later (or never, when metrics stay off: then
/// everything attached to it counts nothing). Cheap to clone; clones share the connection.
///
/// ```
/// use micro_wrappers::breaker::{BreakerLayer, Settings};
/// use micro_wrappers::metrics::{HealthLink, Metrics, MetricsConfig};
/// let link = HealthLink::new();
/// let layer = link.observe_breaker(BreakerLayer::gobreaker(Settings::new("mine")));
/// // ... later, once metrics are decided:
/// let metrics = Metrics::new(MetricsConfig::default());
/// assert!(link.connect(metrics.health()));
/// # let _ = layer;
/// ```
#[derive(Clone, Debug, Default)]
pub struct HealthLink(Arc<OnceLock<Health>>);

impl HealthLink {
    /// A link not connected yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects the link to `health`; `false` if it was connected already (the first stays).
    pub fn connect(&self, health: &Health) -> bool {
        self.0.set(health.clone()).is_ok()
    }

    /// The health series, once connected.
    pub fn health(&self) -> Option<&Health> {
        self.0.get()
    }

    /// An observer for a breaker's `on_event`, counting once connected: see
    /// [`Health::breaker_observer`].
    pub fn breaker_observer(&self) -> impl Fn(&str, Event) + Send + Sync + 'static {
        breaker_observer(self.clone())
    }

    /// `layer` with its breakers feeding the series once connected: see
    /// [`Health::observe_breaker`].
    pub fn observe_breaker(&self, layer: BreakerLayer) -> BreakerLayer {
        observe_breaker(self, layer)
    }

    /// An observer for a limiter's `on_event`, counting once connected: see
    /// [`Health::limit_observer`].
    pub fn limit_observer(&self, name: &str) -> impl Fn(&str, LimitEvent) + Send + Sync + 'static {
        limit_observer(self.clone(), name)
    }

    /// `layer` with its decisions counted as the limiter `name` once connected.
    pub fn observe_limiter(&self, name: &str, layer: RateLimitLayer) -> RateLimitLayer {
        layer.on_event(self.limit_observer(name))
    }
}

/// Where an observer finds the health series: [`Health`] itself, or a [`HealthLink`] once it
/// is connected. The observers of both are these, written once.
pub(super) trait HealthSource: Clone + Send + Sync + 'static {
    /// The series, if there are any yet.
    fn health(&self) -> Option<&Health>;
}

impl HealthSource for Health {
    fn health(&self) -> Option<&Health> {
        Some(self)
    }
}

impl HealthSource for HealthLink {
    fn health(&self) -> Option<&Health> {
        HealthLink::health(self)
    }
}

pub(super) fn breaker_observer(
    source: impl HealthSource,
) -> impl Fn(&str, Event) + Send + Sync + 'static {
    move |name: &str, event: Event| {
        if let Some(health) = source.health() {
            health.breaker_event(name, event);
        }
    }
}

pub(super) fn observe_breaker(source: &impl HealthSource, layer: BreakerLayer) -> BreakerLayer {
    let on_new = source.clone();
    layer
        .on_event(breaker_observer(source.clone()))
        .on_new(move |name: &str, state: State| {
            if let Some(health) = on_new.health() {
                health.breaker_state(name, state);
            }
        })
}

/// The limiter's series are resolved once: now if the series exist, else at the first event
/// after they do.
pub(super) fn limit_observer(
    source: impl HealthSource,
    name: &str,
) -> impl Fn(&str, LimitEvent) + Send + Sync + 'static {
    let name = name.to_owned();
    let series: OnceLock<LimiterSeries> = OnceLock::new();
    if let Some(health) = source.health() {
        let _ = series.set(health.limiter(&name));
    }
    move |_endpoint: &str, event: LimitEvent| {
        if let Some(health) = source.health() {
            series.get_or_init(|| health.limiter(&name)).record(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, MetricsConfig};

    #[test]
    fn counts_only_once_connected_and_the_first_connection_stays() {
        let link = HealthLink::new();
        let breaker = link.breaker_observer();
        let limiter = link.limit_observer("server");
        let open = Event::StateChange {
            from: State::Closed,
            to: State::Open,
        };
        breaker("b", open);
        limiter("Greeter.Test", LimitEvent::Refused);
        assert!(link.health().is_none());

        let metrics = Metrics::new(MetricsConfig::default());
        assert!(link.connect(metrics.health()));
        assert!(!link.connect(Metrics::new(MetricsConfig::default()).health()));
        let text = metrics.encode();
        assert!(!text.contains("breaker=\"b\""), "{text}");
        assert!(!text.contains("limiter=\"server\""), "{text}");

        breaker("b", open);
        for _ in 0..3 {
            breaker("b", Event::Rejected(crate::breaker::Rejection::Open));
        }
        breaker("c", Event::Rejected(crate::breaker::Rejection::Throttled));
        limiter("Greeter.Test", LimitEvent::Refused);
        limiter("Greeter.Test", LimitEvent::Admitted);
        limiter("", LimitEvent::Waited(std::time::Duration::from_millis(3)));
        let text = metrics.encode();
        for line in [
            "micro_breaker_state{breaker=\"b\"} 2",
            "micro_breaker_transitions_total{breaker=\"b\",from=\"closed\",to=\"open\"} 1",
            "micro_breaker_rejections_total{breaker=\"b\",reason=\"open\"} 3",
            "micro_breaker_rejections_total{breaker=\"c\",reason=\"throttled\"} 1",
            "micro_ratelimit_refused_total{limiter=\"server\"} 1",
            "micro_ratelimit_admitted_total{limiter=\"server\"} 1",
            "micro_ratelimit_waited_total{limiter=\"server\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }

    #[test]
    fn nodes_sources_are_summed_by_service_at_scrape_time() {
        let metrics = Metrics::new(MetricsConfig::default());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let read = count.clone();
        metrics.health().nodes_from(move || {
            let n = read.load(std::sync::atomic::Ordering::Relaxed);
            vec![("greeter2".into(), n), ("greeter1".into(), 1)]
        });
        metrics.health().nodes_from(|| vec![("greeter2".into(), 2)]);
        let text = metrics.encode();
        assert!(
            text.contains("micro_selector_nodes{service=\"greeter2\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("micro_selector_nodes{service=\"greeter1\"} 1"),
            "{text}"
        );
        count.store(5, std::sync::atomic::Ordering::Relaxed);
        let text = metrics.encode();
        assert!(
            text.contains("micro_selector_nodes{service=\"greeter2\"} 7"),
            "{text}"
        );
    }
}
