//! Adaptive client-side throttling from the Google SRE book ("Handling Overload"), as go-zero's
//! `googleBreaker`.
//!
//! Over a rolling window the breaker counts `requests` (requests it let through) and `accepts`
//! (those the backend accepted). A new request is dropped locally with probability
//!
//! ```text
//! max(0, (requests - protection - K * accepts) / (requests + 1))
//! ```
//!
//! There is no hard open state: only the excess over `K` times the accepted traffic is shed, and
//! the breaker recovers as accepts return. Defaults are go-zero's: `K = 1.5`, a 10 s window of 40
//! buckets and a `protection` of 5 (so a window with no more than 5 requests never drops).
//! As in go-zero, dropped requests are not counted. With `protection(0)` the probability is the
//! SRE book's formula exactly.
//!
//! ```
//! use micro_wrappers::breaker::adaptive::{AdaptiveBreaker, AdaptiveSettings};
//! use micro_wrappers::clock::ManualClock;
//!
//! let b = AdaptiveBreaker::with_clock(AdaptiveSettings::new("users"), ManualClock::new()).unwrap();
//! for _ in 0..5 {
//!     b.allow().expect("the first 5 requests always pass").done(false);
//! }
//! assert_eq!(b.drop_ratio(), 0.0);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::window::AtomicWindow;
use super::{Event, Observer, Rejection};
use crate::clock::{Clock, SystemClock};

/// go-zero's `K`: how many requests per accepted request are let through before dropping.
pub const DEFAULT_K: f64 = 1.5;
/// go-zero's window: 10 s.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// go-zero's bucket count: 40 (250 ms each).
pub const DEFAULT_BUCKETS: u32 = 40;
/// go-zero's protection: a window with no more than this many requests never drops.
pub const DEFAULT_PROTECTION: u64 = 5;

/// A request dropped by the adaptive breaker (go-zero's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("circuit breaker is open")]
pub struct Throttled;

/// Invalid [`AdaptiveSettings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AdaptiveConfigError {
    /// `K` must be finite and > 0.
    #[error("k must be finite and greater than 0")]
    InvalidK,
    /// The window must be > 0 and hold at least one bucket at least 1 ns wide.
    #[error("window must be > 0 with 1 <= buckets <= window in nanoseconds")]
    InvalidWindow,
}

/// The counts of the rolling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AdaptiveCounts {
    /// Requests let through whose outcome was reported.
    pub requests: u64,
    /// Of those, the ones the backend accepted.
    pub accepts: u64,
}

type Random = Arc<dyn Fn() -> f64 + Send + Sync>;

/// The configuration of an [`AdaptiveBreaker`].
#[derive(Clone)]
pub struct AdaptiveSettings {
    name: String,
    k: f64,
    window: Duration,
    buckets: u32,
    protection: u64,
    random: Option<Random>,
    on_event: Option<Observer>,
}

impl AdaptiveSettings {
    /// go-zero's defaults: `K = 1.5`, 10 s in 40 buckets, protection 5, thread-local randomness.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            k: DEFAULT_K,
            window: DEFAULT_WINDOW,
            buckets: DEFAULT_BUCKETS,
            protection: DEFAULT_PROTECTION,
            random: None,
            on_event: None,
        }
    }

    /// The multiplier `K` (lower is more aggressive).
    ///
    /// ```
    /// # use micro_wrappers::breaker::adaptive::AdaptiveSettings;
    /// let s = AdaptiveSettings::new("users").k(2.0);
    /// ```
    #[must_use]
    pub fn k(mut self, k: f64) -> Self {
        self.k = k;
        self
    }

    /// The rolling window's length and its number of buckets.
    ///
    /// ```
    /// # use micro_wrappers::breaker::adaptive::AdaptiveSettings;
    /// # use std::time::Duration;
    /// let s = AdaptiveSettings::new("users").window(Duration::from_secs(5), 10);
    /// ```
    #[must_use]
    pub fn window(mut self, window: Duration, buckets: u32) -> Self {
        self.window = window;
        self.buckets = buckets;
        self
    }

    /// Requests subtracted in the formula's numerator (0: the SRE book's formula).
    ///
    /// ```
    /// # use micro_wrappers::breaker::adaptive::AdaptiveSettings;
    /// let s = AdaptiveSettings::new("users").protection(0);
    /// ```
    #[must_use]
    pub fn protection(mut self, protection: u64) -> Self {
        self.protection = protection;
        self
    }

    /// The source of uniform numbers in `[0, 1)`; a request is dropped when it returns less
    /// than the drop ratio. Tests inject fixed values.
    ///
    /// ```
    /// # use micro_wrappers::breaker::adaptive::AdaptiveSettings;
    /// let s = AdaptiveSettings::new("users").random(|| 0.5);
    /// ```
    #[must_use]
    pub fn random(mut self, f: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.random = Some(Arc::new(f));
        self
    }

    /// Told of every dropped request ([`Rejection::Throttled`]).
    ///
    /// ```
    /// # use micro_wrappers::breaker::adaptive::AdaptiveSettings;
    /// let s = AdaptiveSettings::new("users").on_event(|name, e| eprintln!("{name}: {e:?}"));
    /// ```
    #[must_use]
    pub fn on_event(mut self, f: impl Fn(&str, Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(f));
        self
    }
}

impl AdaptiveSettings {
    /// The same settings for a breaker named `name` (the wrappers make one per scope).
    #[must_use]
    pub fn named(&self, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..self.clone()
        }
    }

    /// The name the breaker will have.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes the observer out (the wrappers chain their own), and sets `observer`.
    pub(crate) fn replace_on_event(&mut self, observer: Observer) -> Option<Observer> {
        self.on_event.replace(observer)
    }
}

impl fmt::Debug for AdaptiveSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveSettings")
            .field("name", &self.name)
            .field("k", &self.k)
            .field("window", &self.window)
            .field("buckets", &self.buckets)
            .field("protection", &self.protection)
            .finish_non_exhaustive()
    }
}

/// The adaptive (SRE client-side throttling) breaker.
pub struct AdaptiveBreaker<C: Clock = SystemClock> {
    inner: Arc<Shared<C>>,
}

/// The state shared by an [`AdaptiveBreaker`] and its guards.
struct Shared<C> {
    name: String,
    k: f64,
    protection: u64,
    clock: C,
    /// `[requests, accepts]`; lock-free for both reading and counting.
    window: AtomicWindow<2>,
    random: Option<Random>,
    on_event: Option<Observer>,
}

/// Permission to run one request, from [`AdaptiveBreaker::allow`]. Report whether the backend
/// accepted it with [`done`](Self::done). Dropped unreported, it counts as a failure during a
/// panic (as go-zero) and is not counted otherwise (a cancelled request).
#[must_use = "report the outcome with `done`"]
pub struct AdaptiveDone<C: Clock = SystemClock> {
    breaker: Arc<Shared<C>>,
    reported: bool,
}

impl<C: Clock> AdaptiveDone<C> {
    /// Counts the request, and whether the backend accepted it.
    #[inline]
    pub fn done(mut self, accepted: bool) {
        self.reported = true;
        self.breaker.record(accepted);
    }
}

impl<C: Clock> Drop for AdaptiveDone<C> {
    fn drop(&mut self) {
        if !self.reported && std::thread::panicking() {
            self.breaker.record(false);
        }
    }
}

impl<C: Clock> fmt::Debug for AdaptiveDone<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveDone")
            .field("breaker", &self.breaker.name)
            .finish()
    }
}

// === impl AdaptiveBreaker ===

impl AdaptiveBreaker<SystemClock> {
    /// A breaker on the system clock.
    pub fn new(settings: AdaptiveSettings) -> Result<Self, AdaptiveConfigError> {
        Self::with_clock(settings, SystemClock::new())
    }
}

impl<C: Clock> AdaptiveBreaker<C> {
    /// A breaker reading time from `clock`.
    pub fn with_clock(settings: AdaptiveSettings, clock: C) -> Result<Self, AdaptiveConfigError> {
        if !(settings.k.is_finite() && settings.k > 0.0) {
            return Err(AdaptiveConfigError::InvalidK);
        }
        let buckets = settings.buckets;
        if buckets == 0 || settings.window.as_nanos() < u128::from(buckets) {
            return Err(AdaptiveConfigError::InvalidWindow);
        }
        let width = settings.window / buckets;
        Ok(Self {
            inner: Arc::new(Shared {
                name: settings.name,
                k: settings.k,
                protection: settings.protection,
                clock,
                window: AtomicWindow::new(buckets as usize, width),
                random: settings.random,
                on_event: settings.on_event,
            }),
        })
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The window's counts now.
    pub fn counts(&self) -> AdaptiveCounts {
        let [requests, accepts] = self.inner.window.totals(self.inner.clock.now_nanos());
        AdaptiveCounts { requests, accepts }
    }

    /// The probability that a request is dropped now.
    pub fn drop_ratio(&self) -> f64 {
        self.ratio(self.counts())
    }

    #[inline]
    fn ratio(&self, c: AdaptiveCounts) -> f64 {
        // Precision loss above 2^53 requests per window is irrelevant here.
        #[allow(clippy::cast_precision_loss)]
        let (requests, accepts, protection) = (
            c.requests as f64,
            c.accepts as f64,
            self.inner.protection as f64,
        );
        ((requests - protection - self.inner.k * accepts) / (requests + 1.0)).max(0.0)
    }

    /// Asks to run one request: dropped with the probability of [`drop_ratio`](Self::drop_ratio).
    #[inline]
    pub fn allow(&self) -> Result<AdaptiveDone<C>, Throttled> {
        let p = self.drop_ratio();
        if p > 0.0 {
            let r = match &self.inner.random {
                Some(f) => f(),
                None => rand::random::<f64>(),
            };
            if r < p {
                if let Some(f) = &self.inner.on_event {
                    f(&self.inner.name, Event::Rejected(Rejection::Throttled));
                }
                return Err(Throttled);
            }
        }
        Ok(AdaptiveDone {
            breaker: self.inner.clone(),
            reported: false,
        })
    }

    /// Runs `f` unless dropped; `Ok` counts as accepted, `Err` as not.
    pub fn execute<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, AdaptiveError<E>> {
        let done = self.allow().map_err(AdaptiveError::Throttled)?;
        let result = f();
        done.done(result.is_ok());
        result.map_err(AdaptiveError::Inner)
    }

    /// The async form of [`execute`](Self::execute); a cancelled call is not counted.
    pub async fn call<T, E, F>(&self, fut: F) -> Result<T, AdaptiveError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let done = self.allow().map_err(AdaptiveError::Throttled)?;
        let result = fut.await;
        done.done(result.is_ok());
        result.map_err(AdaptiveError::Inner)
    }
}

// === impl Shared ===

impl<C: Clock> Shared<C> {
    #[inline]
    fn record(&self, accepted: bool) {
        self.window
            .add(self.clock.now_nanos(), &[1, u64::from(accepted)]);
    }
}

impl<C: Clock> fmt::Debug for AdaptiveBreaker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveBreaker")
            .field("name", &self.inner.name)
            .field("k", &self.inner.k)
            .field("protection", &self.inner.protection)
            .finish_non_exhaustive()
    }
}

/// The error of [`AdaptiveBreaker::execute`] and [`AdaptiveBreaker::call`].
#[derive(Debug, thiserror::Error)]
pub enum AdaptiveError<E> {
    /// Dropped locally; not run.
    #[error("{0}")]
    Throttled(Throttled),
    /// Ran and returned this error.
    #[error("{0}")]
    Inner(E),
}
