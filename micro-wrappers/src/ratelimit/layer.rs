//! The rate-limit layer and its settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tower_layer::Layer;

use super::bucket::{Bucket, BucketError};
use super::keys::{Keyed, SharedClock, Spec};
use super::service::RateLimit;
use crate::clock::{Clock, SystemClock};

/// What a call does when no token is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Refuse at once with go-micro's 429 "too many request" (gRPC `ResourceExhausted`).
    #[default]
    Reject,
    /// Wait for a token, never past the call's deadline: a wait longer than the time left is
    /// refused at once with the 429 (not a 408 after sleeping).
    Wait,
}

/// Which calls share a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Key {
    /// One bucket for every call.
    #[default]
    All,
    /// One bucket per called (client) or hosting (server) service, from the `CallInfo`.
    Service,
    /// One bucket per endpoint (`Greeter.Test`).
    Endpoint,
    /// One bucket per value of this metadata key (e.g. a caller's `x-api-key`); calls
    /// without it share the bucket of the empty value.
    Metadata(HeaderName),
}

/// The default bound on the number of keyed buckets.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// Told of each limiter decision, with the call's endpoint (`""` when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitEvent {
    /// A token was there.
    Admitted,
    /// Admitted after waiting this long for its token (wait mode).
    Waited(Duration),
    /// Refused with the 429.
    Refused,
}

/// An observer of a limiter's decisions (the hook for metrics).
pub type LimitObserver = micro_core::Observer<LimitEvent>;

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) mode: Mode,
    pub(crate) key: Key,
    pub(crate) id: Arc<str>,
    pub(crate) observer: Option<LimitObserver>,
}

/// The buckets a layer's services share.
pub(crate) enum Buckets {
    One(Arc<Bucket<SharedClock>>),
    Keyed(Keyed),
}

/// juju's token bucket as a tower [`Layer`], for `wrap_handler` (protect a server) or
/// `wrap_client` (be polite to a dependency).
///
/// ```
/// use micro_wrappers::ratelimit::{Key, Mode, RateLimitLayer};
/// // 100 calls per second with bursts of 20, per caller's x-api-key, refusing the excess.
/// let layer = RateLimitLayer::new(100.0, 20)
///     .unwrap()
///     .key(Key::Metadata(http::HeaderName::from_static("x-api-key")))
///     .mode(Mode::Reject);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RateLimitLayer {
    spec: Spec,
    config: Config,
    max_keys: usize,
    buckets: Arc<Buckets>,
}

// === impl RateLimitLayer ===

impl RateLimitLayer {
    /// About `rate` calls per second (within 1 %), at most `burst` at once.
    pub fn new(rate: f64, burst: i64) -> Result<Self, BucketError> {
        let probe = Bucket::new_with_rate(rate, burst)?;
        Self::with_quantum(probe.fill_interval(), burst, probe.quantum())
    }

    /// `quantum` tokens every `fill_interval`, at most `capacity`.
    pub fn with_quantum(
        fill_interval: Duration,
        capacity: i64,
        quantum: i64,
    ) -> Result<Self, BucketError> {
        let spec = Spec {
            fill_interval,
            capacity,
            quantum,
            clock: Arc::new(SystemClock::new()),
        };
        let buckets = Arc::new(Buckets::One(Arc::new(spec.bucket()?)));
        Ok(RateLimitLayer {
            spec,
            config: Config {
                mode: Mode::Reject,
                key: Key::All,
                id: Arc::from("go.micro.server"),
                observer: None,
            },
            max_keys: DEFAULT_MAX_KEYS,
            buckets,
        })
    }

    /// Reject (default) or wait.
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Which calls share a bucket (default one for all).
    #[must_use]
    pub fn key(mut self, key: Key) -> Self {
        self.config.key = key;
        self.rebuild()
    }

    /// The most keys with their own bucket (default 10 000); past it, see [`Key`].
    #[must_use]
    pub fn max_keys(mut self, max: usize) -> Self {
        self.max_keys = max;
        self.rebuild()
    }

    /// The `id` of the 429 (default `go.micro.server`; `go.micro.client` on a client).
    #[must_use]
    pub fn id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.config.id = id.into();
        self
    }

    /// The clock of the buckets (tests pass a `ManualClock`). Starts the buckets afresh.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.spec.clock = Arc::new(clock);
        self.rebuild()
    }

    /// Told of every decision, with the call's endpoint (`""` without a `CallInfo`): the hook
    /// for metrics (`metrics.health().observe_limiter(name, layer)`). Each call adds an
    /// observer; they run in the order added.
    #[must_use]
    pub fn on_event(mut self, f: impl Fn(&str, LimitEvent) + Send + Sync + 'static) -> Self {
        self.config.observer = Some(micro_core::add_observer(self.config.observer.take(), f));
        self
    }

    /// How many keys have their own bucket (1 without keys).
    pub fn buckets(&self) -> usize {
        match &*self.buckets {
            Buckets::One(_) => 1,
            Buckets::Keyed(keyed) => keyed.len(),
        }
    }

    /// The tokens available now in the bucket of all calls (`None` with keys).
    pub fn available(&self) -> Option<i64> {
        match &*self.buckets {
            Buckets::One(bucket) => Some(bucket.available()),
            Buckets::Keyed(_) => None,
        }
    }

    fn rebuild(mut self) -> Self {
        // The spec was validated by the constructor; every bucket made from it is valid.
        let buckets = match self.config.key {
            Key::All => self.spec.bucket().map(|b| Buckets::One(Arc::new(b))),
            _ => Keyed::new(self.spec.clone(), self.max_keys).map(Buckets::Keyed),
        };
        match buckets {
            Ok(buckets) => self.buckets = Arc::new(buckets),
            Err(err) => tracing::error!(%err, "rate limit buckets not rebuilt"),
        }
        self
    }
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("fill_interval", &self.spec.fill_interval)
            .field("capacity", &self.spec.capacity)
            .field("quantum", &self.spec.quantum)
            .field("mode", &self.config.mode)
            .field("key", &self.config.key)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit::new(inner, self.config.clone(), self.buckets.clone())
    }
}
