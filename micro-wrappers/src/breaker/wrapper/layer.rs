//! The breaker layer and its settings.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use micro_core::Outcome;
use parking_lot::RwLock;
use tower_layer::Layer;

use super::circuit::{Algorithm, Circuit, HystrixSettings, OnStateChange, SharedClock};
use super::classify::Classifier;
use super::fallback::Fallback;
use super::service::Breaker;
use crate::breaker::adaptive::{AdaptiveBreaker, AdaptiveConfigError, AdaptiveSettings};
use crate::breaker::hystrix::HystrixConfig;
use crate::breaker::{Event, Observer, Settings, State};
use crate::clock::{Clock, SystemClock};

/// Which calls share one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// One breaker per called service (as `wrap_client`; go-micro's default).
    #[default]
    Service,
    /// One breaker per service and endpoint (`greeter2` + `Greeter.Test`; as `wrap_client`).
    Endpoint,
    /// One breaker per node (as `wrap_call`, on each node's own stack): an open breaker makes
    /// the node not ready, so the client picks another one.
    Node,
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "service" => Ok(Scope::Service),
            "endpoint" => Ok(Scope::Endpoint),
            "node" => Ok(Scope::Node),
            other => Err(format!(
                "breaker scope {other:?}: want service, endpoint or node"
            )),
        }
    }
}

/// The most breakers one layer keeps per scope key; calls to further services or endpoints
/// share one overflow breaker, so a flood of names cannot exhaust memory.
pub const MAX_BREAKERS: usize = 1024;

/// Everything a layer's services share.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) algorithm: Algorithm,
    pub(crate) classifier: Classifier,
    pub(crate) scope: Scope,
    pub(crate) id: Arc<str>,
    pub(crate) base_name: String,
    pub(crate) fallbacks: HashMap<String, Fallback>,
    pub(crate) clock: SharedClock,
    pub(crate) on_state_change: Option<OnStateChange>,
    pub(crate) on_event: Option<Observer>,
    pub(crate) on_new: Option<OnNew>,
}

/// Told of each breaker a layer makes: its name and first state.
pub(crate) type OnNew = micro_core::Observer<State>;

/// The breakers of one service, by endpoint ("" for service scope).
type ByEndpoint = HashMap<Arc<str>, Arc<Circuit>>;

/// The breakers of a layer, by service and endpoint.
#[derive(Default)]
pub(crate) struct Circuits {
    map: RwLock<HashMap<Arc<str>, ByEndpoint>>,
    len: std::sync::atomic::AtomicUsize,
    overflow: OnceLock<Arc<Circuit>>,
}

impl Circuits {
    pub(crate) fn get(&self, service: &str, endpoint: &str) -> Option<Arc<Circuit>> {
        self.map.read().get(service)?.get(endpoint).cloned()
    }

    /// The breaker of `(service, endpoint)`, made by `make` if new (or the overflow one).
    pub(crate) fn get_or_make(
        &self,
        service: &Arc<str>,
        endpoint: &Arc<str>,
        make: impl Fn(Option<(&str, &str)>) -> Circuit,
    ) -> Arc<Circuit> {
        if let Some(circuit) = self.get(service, endpoint) {
            return circuit;
        }
        let mut map = self.map.write();
        if let Some(circuit) = map.get(&**service).and_then(|m| m.get(&**endpoint)) {
            return circuit.clone();
        }
        use std::sync::atomic::Ordering;
        if self.len.load(Ordering::Relaxed) >= MAX_BREAKERS {
            drop(map);
            return self.overflow.get_or_init(|| Arc::new(make(None))).clone();
        }
        let circuit = Arc::new(make(Some((service, endpoint))));
        map.entry(service.clone())
            .or_default()
            .insert(endpoint.clone(), circuit.clone());
        self.len.fetch_add(1, Ordering::Relaxed);
        circuit
    }
}

/// A circuit breaker as a tower [`Layer`]: gobreaker, Hystrix or adaptive, per service, per
/// endpoint or per node (see [`Scope`]), with optional fallbacks per endpoint.
///
/// ```
/// use micro_wrappers::breaker::Settings;
/// use micro_wrappers::breaker::wrapper::{BreakerLayer, Scope};
/// let layer = BreakerLayer::gobreaker(Settings::new("greeter1"))
///     .scope(Scope::Endpoint)
///     .on_state_change(|name, from, to| eprintln!("{name}: {from} -> {to}"));
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct BreakerLayer {
    config: Config,
    circuits: Arc<Circuits>,
}

// === impl BreakerLayer ===

impl BreakerLayer {
    fn new(algorithm: Algorithm, base_name: String, classifier: Classifier) -> Self {
        BreakerLayer {
            config: Config {
                algorithm,
                classifier,
                scope: Scope::Service,
                id: Arc::from("go.micro.client"),
                base_name,
                fallbacks: HashMap::new(),
                clock: Arc::new(SystemClock::new()),
                on_state_change: None,
                on_event: None,
                on_new: None,
            },
            circuits: Arc::new(Circuits::default()),
        }
    }

    /// gobreaker breakers with these settings (each breaker is named after its scope: the
    /// service, `service.endpoint` or `service/node`; the settings' name is used when a call
    /// carries no `CallInfo`). The settings' `is_successful` overrides the default rule.
    pub fn gobreaker(mut settings: Settings<Outcome>) -> Self {
        let (is_successful, prior) = settings.take_hooks();
        if let Some(prior) = prior {
            settings.set_on_event(prior);
        }
        let classifier = Classifier {
            is_successful: is_successful
                .map(|f| Arc::new(move |o: &Outcome| f(o)) as super::classify::IsSuccessful),
            ..Classifier::default()
        };
        let name = settings.name().to_owned();
        Self::new(Algorithm::Gobreaker(settings), name, classifier)
    }

    /// Hystrix circuits with this configuration, as code sets it: zeros are Hystrix's
    /// defaults (1 s timeout, 10 concurrent requests, 20 requests, 5 s, 50 %).
    pub fn hystrix(config: HystrixConfig) -> Self {
        let config = config.resolved();
        let settings = HystrixSettings {
            config,
            timeout: Some(config.timeout),
        };
        Self::new(
            Algorithm::Hystrix(settings),
            "hystrix".into(),
            Classifier::default(),
        )
    }

    /// Hystrix circuits that use each call's own deadline instead of a command timeout and
    /// have no concurrency cap unless `config` sets one (what `MICRO_CLIENT_BREAKER=hystrix`
    /// builds: hystrix-go's default cap of 10 would refuse ordinary load).
    pub fn hystrix_with_deadline(config: HystrixConfig) -> Self {
        let mut config = config;
        if config.max_concurrent_requests == 0 {
            config.max_concurrent_requests = u32::MAX;
        }
        let config = HystrixConfig {
            timeout: Duration::MAX,
            ..config
        }
        .resolved();
        let settings = HystrixSettings {
            config,
            timeout: None,
        };
        Self::new(
            Algorithm::Hystrix(settings),
            "hystrix".into(),
            Classifier::default(),
        )
    }

    /// Adaptive (SRE client-side throttling) breakers with these settings.
    pub fn adaptive(settings: AdaptiveSettings) -> Result<Self, AdaptiveConfigError> {
        // Validate once, so that breakers made later cannot fail.
        AdaptiveBreaker::new(settings.clone())?;
        let name = settings.name().to_owned();
        Ok(Self::new(
            Algorithm::Adaptive(settings),
            name,
            Classifier::default(),
        ))
    }

    /// Which calls share a breaker (default [`Scope::Service`]).
    #[must_use]
    pub fn scope(mut self, scope: Scope) -> Self {
        self.config.scope = scope;
        self
    }

    /// Answers refused calls to `endpoint` (`Greeter.Test`) with `fallback` instead of the
    /// 502. Applies to the service and endpoint scopes (a node-scope refusal only makes the
    /// node not ready; the client then tries another node).
    #[must_use]
    pub fn fallback(mut self, endpoint: impl Into<String>, fallback: Fallback) -> Self {
        self.config.fallbacks.insert(endpoint.into(), fallback);
        self
    }

    /// Called with `(name, from, to)` on every state change of every breaker of this layer
    /// (each change is also logged at WARN).
    #[must_use]
    pub fn on_state_change(
        mut self,
        f: impl Fn(&str, State, State) + Send + Sync + 'static,
    ) -> Self {
        self.config.on_state_change = Some(Arc::new(f));
        self
    }

    /// Told of every [`Event`] (state changes and refusals) of every breaker: the hook for
    /// metrics (`metrics.health().observe_breaker(layer)` sets this and
    /// [`BreakerLayer::on_new`]). Each call adds an observer; they run in the order added.
    #[must_use]
    pub fn on_event(mut self, f: impl Fn(&str, Event) + Send + Sync + 'static) -> Self {
        self.config.on_event = Some(micro_core::add_observer(self.config.on_event.take(), f));
        self
    }

    /// Told of each breaker this layer makes (at the first call of its service, endpoint or
    /// node), with its name and first state, so a state gauge exists before any change. Each
    /// call adds an observer.
    #[must_use]
    pub fn on_new(mut self, f: impl Fn(&str, State) + Send + Sync + 'static) -> Self {
        self.config.on_new = Some(micro_core::add_observer(self.config.on_new.take(), f));
        self
    }

    /// Replaces the default failure rule: `f(outcome)` says whether a call succeeded (a
    /// cancelled call is never counted).
    #[must_use]
    pub fn is_successful(mut self, f: impl Fn(&Outcome) -> bool + Send + Sync + 'static) -> Self {
        self.config.classifier.is_successful = Some(Arc::new(f));
        self
    }

    /// Whether `Unimplemented` (without go-micro's JSON) counts as a failure (default no).
    #[must_use]
    pub fn unimplemented_is_failure(mut self, yes: bool) -> Self {
        self.config.classifier.unimplemented_is_failure = yes;
        self
    }

    /// The `id` of the refusals' go-micro error (default `go.micro.client`).
    #[must_use]
    pub fn id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.config.id = id.into();
        self
    }

    /// The clock of the breakers made from now on (tests pass a `ManualClock`).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.config.clock = Arc::new(clock);
        self
    }

    /// The scope.
    pub fn get_scope(&self) -> Scope {
        self.config.scope
    }

    /// The state of the breaker of `service` (and `endpoint` in endpoint scope), if one was
    /// made. Hystrix has no half-open state; adaptive breakers are always closed.
    pub fn state(&self, service: &str, endpoint: &str) -> Option<State> {
        Some(
            self.circuits
                .get(service, self.endpoint_key(endpoint))?
                .state(),
        )
    }

    /// The drop ratio of the adaptive breaker of `service` (and `endpoint`), if one was made.
    pub fn drop_ratio(&self, service: &str, endpoint: &str) -> Option<f64> {
        Some(
            self.circuits
                .get(service, self.endpoint_key(endpoint))?
                .drop_ratio(),
        )
    }

    fn endpoint_key<'a>(&self, endpoint: &'a str) -> &'a str {
        match self.config.scope {
            Scope::Endpoint => endpoint,
            _ => "",
        }
    }
}

impl fmt::Debug for BreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithm = match &self.config.algorithm {
            Algorithm::Gobreaker(_) => "gobreaker",
            Algorithm::Hystrix(_) => "hystrix",
            Algorithm::Adaptive(_) => "adaptive",
        };
        f.debug_struct("BreakerLayer")
            .field("algorithm", &algorithm)
            .field("scope", &self.config.scope)
            .field("classifier", &self.config.classifier)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker::new(inner, self.config.clone(), self.circuits.clone())
    }
}
