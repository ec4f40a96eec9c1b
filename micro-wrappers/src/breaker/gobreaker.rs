//! sony/gobreaker (v1): counts, generations and lazily evaluated states.
//!
//! A [`CircuitBreaker`] counts the outcomes of the requests of its current *generation*. Every
//! state change, and every expiry of the `interval` while closed, starts a new generation with
//! zeroed [`Counts`]; an outcome reported after its generation ended is ignored. State is only
//! re-evaluated when the breaker is called (there is no timer):
//!
//! * closed: `ready_to_trip(counts)` after a failure opens it (default: more than 5 consecutive
//!   failures);
//! * open: requests fail with [`BreakerError::Open`]; once `timeout` has passed it is half-open;
//! * half-open: at most `max_requests` requests pass (others get
//!   [`BreakerError::TooManyRequests`]); one failure opens it again, `max_requests` consecutive
//!   successes close it.
//!
//! ```
//! use micro_wrappers::breaker::{CircuitBreaker, Settings, State};
//! use micro_wrappers::clock::ManualClock;
//!
//! let clock = ManualClock::new();
//! let cb = CircuitBreaker::with_clock(Settings::<std::io::Error>::new("db"), clock.clone());
//! for _ in 0..6 {
//!     let _ = cb.execute(|| Err::<(), _>(std::io::Error::other("down")));
//! }
//! assert_eq!(cb.state(), State::Open);
//! assert_eq!(cb.allow().unwrap_err().to_string(), "circuit breaker is open");
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::{Event, Observer, Rejection, State};
use crate::BoxError;
use crate::clock::{Clock, SystemClock};

/// The default `timeout`: how long the breaker stays open before going half-open.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The outcomes counted in the current generation. Counters saturate at `u32::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Counts {
    /// Requests let through.
    pub requests: u32,
    /// Successful outcomes.
    pub total_successes: u32,
    /// Failed outcomes.
    pub total_failures: u32,
    /// Successes since the last failure.
    pub consecutive_successes: u32,
    /// Failures since the last success.
    pub consecutive_failures: u32,
}

impl Counts {
    fn on_request(&mut self) {
        self.requests = self.requests.saturating_add(1);
    }

    fn on_success(&mut self) {
        self.total_successes = self.total_successes.saturating_add(1);
        self.consecutive_successes = self.consecutive_successes.saturating_add(1);
        self.consecutive_failures = 0;
    }

    fn on_failure(&mut self) {
        self.total_failures = self.total_failures.saturating_add(1);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.consecutive_successes = 0;
    }
}

/// Why [`CircuitBreaker::allow`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum BreakerError {
    /// The breaker is open.
    #[error("circuit breaker is open")]
    Open,
    /// The breaker is half-open and `max_requests` requests are already under way.
    #[error("too many requests")]
    TooManyRequests,
}

/// The error of [`CircuitBreaker::execute`] and [`CircuitBreaker::call`].
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E> {
    /// The breaker refused the request; it was not run.
    #[error("{0}")]
    Rejected(BreakerError),
    /// The request ran and returned this error.
    #[error("{0}")]
    Inner(E),
}

type ReadyToTrip = Arc<dyn Fn(Counts) -> bool + Send + Sync>;
type OnStateChange = Arc<dyn Fn(&str, State, State) + Send + Sync>;
pub(crate) type IsSuccessful<E> = Arc<dyn Fn(&E) -> bool + Send + Sync>;

/// The configuration of a [`CircuitBreaker`]; `E` is the error type of the requests it guards.
pub struct Settings<E = BoxError> {
    name: String,
    max_requests: u32,
    interval: Duration,
    timeout: Duration,
    ready_to_trip: Option<ReadyToTrip>,
    on_state_change: Option<OnStateChange>,
    is_successful: Option<IsSuccessful<E>>,
    on_event: Option<Observer>,
}

// === impl Settings ===

impl<E> Settings<E> {
    /// Settings with gobreaker's defaults: `max_requests` 1, no interval (counts are never
    /// cleared while closed), `timeout` 60 s, trip after more than 5 consecutive failures, every
    /// error is a failure.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max_requests: 0,
            interval: Duration::ZERO,
            timeout: Duration::ZERO,
            ready_to_trip: None,
            on_state_change: None,
            is_successful: None,
            on_event: None,
        }
    }

    /// How many requests may pass while half-open, and how many consecutive successes close
    /// the breaker again; 0 means 1.
    ///
    /// ```
    /// # use micro_wrappers::breaker::Settings;
    /// let s = Settings::<std::io::Error>::new("db").max_requests(3);
    /// ```
    #[must_use]
    pub fn max_requests(mut self, max_requests: u32) -> Self {
        self.max_requests = max_requests;
        self
    }

    /// The cyclic period after which the counts are cleared while closed; zero (the default)
    /// means never.
    ///
    /// ```
    /// # use micro_wrappers::breaker::Settings;
    /// # use std::time::Duration;
    /// let s = Settings::<std::io::Error>::new("db").interval(Duration::from_secs(30));
    /// ```
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long the breaker stays open before going half-open; zero means 60 s.
    ///
    /// ```
    /// # use micro_wrappers::breaker::Settings;
    /// # use std::time::Duration;
    /// let s = Settings::<std::io::Error>::new("db").timeout(Duration::from_secs(90));
    /// ```
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Decides, after each failure while closed, whether to open; called with the updated
    /// counts. The default trips after more than 5 consecutive failures.
    ///
    /// ```
    /// # use micro_wrappers::breaker::Settings;
    /// let s = Settings::<std::io::Error>::new("db")
    ///     .ready_to_trip(|c| c.requests >= 3 && c.total_failures * 10 >= c.requests * 6);
    /// ```
    #[must_use]
    pub fn ready_to_trip(mut self, f: impl Fn(Counts) -> bool + Send + Sync + 'static) -> Self {
        self.ready_to_trip = Some(Arc::new(f));
        self
    }

    /// Called with `(name, from, to)` on every state change.
    ///
    /// ```
    /// # use micro_wrappers::breaker::Settings;
    /// let s = Settings::<std::io::Error>::new("db")
    ///     .on_state_change(|name, from, to| eprintln!("{name}: {from} -> {to}"));
    /// ```
    #[must_use]
    pub fn on_state_change(
        mut self,
        f: impl Fn(&str, State, State) + Send + Sync + 'static,
    ) -> Self {
        self.on_state_change = Some(Arc::new(f));
        self
    }

    /// Decides whether an error returned by a request still counts as a success (for example
    /// "not found"). By default every error is a failure. `Ok` results are always successes.
    ///
    /// ```
    /// # use micro_wrappers::breaker::Settings;
    /// let s = Settings::<std::io::Error>::new("db")
    ///     .is_successful(|e| e.kind() == std::io::ErrorKind::NotFound);
    /// ```
    #[must_use]
    pub fn is_successful(mut self, f: impl Fn(&E) -> bool + Send + Sync + 'static) -> Self {
        self.is_successful = Some(Arc::new(f));
        self
    }

    /// Told of every state change and rejection.
    ///
    /// ```
    /// # use micro_wrappers::breaker::Settings;
    /// let s = Settings::<std::io::Error>::new("db").on_event(|name, event| eprintln!("{name}: {event:?}"));
    /// ```
    #[must_use]
    pub fn on_event(mut self, f: impl Fn(&str, Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(f));
        self
    }
}

impl<E> Clone for Settings<E> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            max_requests: self.max_requests,
            interval: self.interval,
            timeout: self.timeout,
            ready_to_trip: self.ready_to_trip.clone(),
            on_state_change: self.on_state_change.clone(),
            is_successful: self.is_successful.clone(),
            on_event: self.on_event.clone(),
        }
    }
}

impl<E> Settings<E> {
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

    /// Takes the `is_successful` and `on_event` hooks out (the wrappers chain their own).
    pub(crate) fn take_hooks(&mut self) -> (Option<IsSuccessful<E>>, Option<Observer>) {
        (self.is_successful.take(), self.on_event.take())
    }

    /// Sets the observer (the wrappers' chained one).
    pub(crate) fn set_on_event(&mut self, observer: Observer) {
        self.on_event = Some(observer);
    }
}

impl<E> fmt::Debug for Settings<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("max_requests", &self.max_requests)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A gobreaker circuit breaker, shared by reference (or `Arc`) between tasks.
///
/// `E` is the error type of the guarded requests (only [`execute`](Self::execute) and
/// [`call`](Self::call) use it); `C` is the clock.
pub struct CircuitBreaker<E = BoxError, C: Clock = SystemClock> {
    core: Arc<Core<C>>,
    is_successful: Option<IsSuccessful<E>>,
}

/// The shared core. Requests and successes in the closed state take a lock-free fast path: they
/// add to the deltas in [`Core::word`] with one compare-and-swap. Everything else (failures,
/// half-open, open, expiries, deltas about to overflow, reads of the counts) takes the lock and
/// first folds the deltas into [`Inner::counts`]. That order is exact: a failure always goes
/// through the lock, so the successes pending in the word all came after the last failure.
struct Core<C> {
    name: String,
    max_requests: u32,
    interval: Option<Duration>,
    timeout: Duration,
    ready_to_trip: Option<ReadyToTrip>,
    on_state_change: Option<OnStateChange>,
    on_event: Option<Observer>,
    clock: C,
    /// `generation (24 bits) | state (2) | pending requests (19) | pending successes (19)`;
    /// generation and state change only under the lock, which rewrites the word with zero
    /// deltas (the pending ones belonged to the ended generation).
    word: AtomicU64,
    /// The closed state's expiry in clock nanoseconds (`u64::MAX`: none), for the fast path.
    closed_expiry: AtomicU64,
    inner: Mutex<Inner>,
}

const GEN_SHIFT: u32 = 40;
const GEN_MASK: u32 = (1 << 24) - 1;
const STATE_SHIFT: u32 = 38;
const STATE_BITS: u64 = 0b11 << STATE_SHIFT;
const REQ_SHIFT: u32 = 19;
const DELTA_MAX: u64 = (1 << 19) - 1;
const DELTAS: u64 = (1 << 38) - 1;
const CLOSED_BITS: u64 = 0;

fn state_code(state: State) -> u64 {
    match state {
        State::Closed => CLOSED_BITS,
        State::HalfOpen => 1 << STATE_SHIFT,
        State::Open => 2 << STATE_SHIFT,
    }
}

fn word_generation(word: u64) -> u32 {
    // 24 bits: the cast keeps them all.
    (word >> GEN_SHIFT) as u32
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

struct Inner {
    state: State,
    /// Wraps at 2^24 (the word's field): a result is only mistaken for a current one if its
    /// request outlived a multiple of 16.7 million generations.
    generation: u32,
    counts: Counts,
    /// Closed: end of the interval (None: never); open: end of the timeout; half-open: None.
    expiry: Option<Duration>,
}

/// State changes made under the lock, reported after it is released (at most two per call).
#[derive(Default)]
struct Changes([Option<(State, State)>; 2]);

impl Changes {
    fn push(&mut self, change: (State, State)) {
        if let Some(slot) = self.0.iter_mut().find(|s| s.is_none()) {
            *slot = Some(change);
        }
    }
}

/// Reads the clock at most once, and only when a rule needs the time.
struct LazyNow<'a, C> {
    clock: &'a C,
    at: Option<Duration>,
}

impl<C: Clock> LazyNow<'_, C> {
    fn get(&mut self) -> Duration {
        *self.at.get_or_insert_with(|| self.clock.now())
    }
}

/// The permission to run one request, from [`CircuitBreaker::allow`]: report its outcome with
/// [`done`](Self::done). It owns a handle on the breaker, so it can live as long as the call
/// (a response body included). Dropped unreported during a panic it counts as a failure, as
/// gobreaker counts a panicking request; dropped otherwise (a cancelled call) it counts as
/// neither: the request is taken out of the counts, which frees its half-open slot.
#[must_use = "report the outcome with `done`; dropping it cancels the request"]
pub struct Done<C: Clock = SystemClock> {
    core: Arc<Core<C>>,
    generation: u32,
    reported: bool,
}

impl<C: Clock> Done<C> {
    /// Reports the request's outcome. Ignored when the breaker's generation changed since the
    /// request was allowed.
    #[inline]
    pub fn done(mut self, success: bool) {
        self.reported = true;
        if !(success && self.core.try_fast_success(self.generation)) {
            self.core.after_request(self.generation, success);
        }
    }
}

impl<C: Clock> Drop for Done<C> {
    #[inline]
    fn drop(&mut self) {
        if !self.reported {
            if std::thread::panicking() {
                self.core.after_request(self.generation, false);
            } else {
                self.core.cancel_request(self.generation);
            }
        }
    }
}

impl<C: Clock> fmt::Debug for Done<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Done")
            .field("breaker", &self.core.name)
            .field("generation", &self.generation)
            .finish()
    }
}

// === impl CircuitBreaker ===

impl<E> CircuitBreaker<E, SystemClock> {
    /// A breaker on the system clock.
    pub fn new(settings: Settings<E>) -> Self {
        Self::with_clock(settings, SystemClock::new())
    }
}

impl<E, C: Clock> CircuitBreaker<E, C> {
    /// A breaker reading time from `clock`.
    pub fn with_clock(settings: Settings<E>, clock: C) -> Self {
        let interval = (!settings.interval.is_zero()).then_some(settings.interval);
        let now = clock.now();
        let expiry = interval.map(|i| now.saturating_add(i));
        let core = Arc::new(Core {
            name: settings.name,
            max_requests: settings.max_requests.max(1),
            interval,
            timeout: if settings.timeout.is_zero() {
                DEFAULT_TIMEOUT
            } else {
                settings.timeout
            },
            ready_to_trip: settings.ready_to_trip,
            on_state_change: settings.on_state_change,
            on_event: settings.on_event,
            clock,
            word: AtomicU64::new(CLOSED_BITS),
            closed_expiry: AtomicU64::new(expiry.map_or(u64::MAX, nanos)),
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                counts: Counts::default(),
                expiry,
            }),
        });
        Self {
            core,
            is_successful: settings.is_successful,
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// The current state (re-evaluated for elapsed time, as every call does).
    pub fn state(&self) -> State {
        let mut changes = Changes::default();
        let state = {
            let mut inner = self.core.inner.lock();
            let mut now = LazyNow {
                clock: &self.core.clock,
                at: None,
            };
            self.core
                .current_state(&mut inner, &mut now, &mut changes)
                .0
        };
        self.core.report(changes);
        state
    }

    /// The counts of the current generation, as last updated (not re-evaluated for time).
    pub fn counts(&self) -> Counts {
        let mut inner = self.core.inner.lock();
        self.core.flush(&mut inner);
        inner.counts
    }

    /// The two-step form: asks to run one request. On success, run it and report its outcome
    /// with [`Done::done`].
    #[inline]
    pub fn allow(&self) -> Result<Done<C>, BreakerError> {
        let generation = match self.core.try_fast_allow() {
            Some(generation) => generation,
            None => self.core.before_request()?,
        };
        Ok(Done {
            core: self.core.clone(),
            generation,
            reported: false,
        })
    }

    /// Runs `f` if the breaker allows it and counts its outcome. A panic in `f` counts as a
    /// failure and is then resumed (as gobreaker re-panics).
    pub fn execute<T>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, ExecuteError<E>> {
        let done = self.allow().map_err(ExecuteError::Rejected)?;
        // A panic unwinds through `done`, whose drop records the failure.
        let result = f();
        done.done(self.is_success(&result));
        result.map_err(ExecuteError::Inner)
    }

    /// The async form of [`execute`](Self::execute). If the returned future is dropped before
    /// `fut` finishes (the caller cancelled), the request counts as neither success nor
    /// failure and frees its half-open slot.
    pub async fn call<T, F>(&self, fut: F) -> Result<T, ExecuteError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let done = self.allow().map_err(ExecuteError::Rejected)?;
        let result = fut.await;
        done.done(self.is_success(&result));
        result.map_err(ExecuteError::Inner)
    }

    /// Whether the settings' `is_successful` accepts `err` as a success (`false` without one).
    pub fn accepts_error(&self, err: &E) -> bool {
        self.is_successful.as_ref().is_some_and(|f| f(err))
    }

    fn is_success<T>(&self, result: &Result<T, E>) -> bool {
        match result {
            Ok(_) => true,
            Err(e) => self.is_successful.as_ref().is_some_and(|f| f(e)),
        }
    }
}

impl<E, C: Clock> fmt::Debug for CircuitBreaker<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.core.inner.lock();
        f.debug_struct("CircuitBreaker")
            .field("name", &self.core.name)
            .field("state", &inner.state)
            .field("generation", &inner.generation)
            .field("counts", &inner.counts)
            .finish_non_exhaustive()
    }
}

// === impl Core ===

impl<C: Clock> Core<C> {
    /// The closed state's expiry has not passed (reads the clock only with an interval).
    #[inline]
    fn closed_unexpired(&self) -> bool {
        self.interval.is_none()
            || self.closed_expiry.load(Ordering::Acquire) >= self.clock.now_nanos()
    }

    /// Counts a request with one CAS if closed, unexpired and the delta has room.
    #[inline]
    fn try_fast_allow(&self) -> Option<u32> {
        let mut word = self.word.load(Ordering::Acquire);
        if word & STATE_BITS != CLOSED_BITS || !self.closed_unexpired() {
            return None;
        }
        loop {
            if word & STATE_BITS != CLOSED_BITS || (word >> REQ_SHIFT) & DELTA_MAX == DELTA_MAX {
                return None;
            }
            match self.word.compare_exchange_weak(
                word,
                word + (1 << REQ_SHIFT),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(word_generation(word)),
                Err(actual) => word = actual,
            }
        }
    }

    /// Counts a success with one CAS if closed, unexpired, of the current generation and the
    /// delta has room.
    #[inline]
    fn try_fast_success(&self, generation: u32) -> bool {
        let mut word = self.word.load(Ordering::Acquire);
        if word_generation(word) != generation || !self.closed_unexpired() {
            return false;
        }
        loop {
            if word & STATE_BITS != CLOSED_BITS
                || word_generation(word) != generation
                || word & DELTA_MAX == DELTA_MAX
            {
                return false;
            }
            match self.word.compare_exchange_weak(
                word,
                word + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
    }

    /// Folds the fast path's pending deltas into the counts (under the lock).
    fn flush(&self, inner: &mut Inner) {
        if self.word.load(Ordering::Acquire) & DELTAS == 0 {
            return;
        }
        let word = self.word.fetch_and(!DELTAS, Ordering::AcqRel);
        // Both deltas are 19-bit fields.
        let requests = ((word >> REQ_SHIFT) & DELTA_MAX) as u32;
        let successes = (word & DELTA_MAX) as u32;
        let counts = &mut inner.counts;
        counts.requests = counts.requests.saturating_add(requests);
        if successes > 0 {
            counts.total_successes = counts.total_successes.saturating_add(successes);
            counts.consecutive_successes = counts.consecutive_successes.saturating_add(successes);
            counts.consecutive_failures = 0;
        }
    }

    /// Publishes a new generation or state to the fast path (under the lock).
    fn publish(&self, inner: &Inner) {
        let expiry = match (inner.state, inner.expiry) {
            (State::Closed, Some(e)) => nanos(e),
            _ => u64::MAX,
        };
        self.closed_expiry.store(expiry, Ordering::Release);
        let word = (u64::from(inner.generation) << GEN_SHIFT) | state_code(inner.state);
        self.word.store(word, Ordering::Release);
    }

    fn before_request(&self) -> Result<u32, BreakerError> {
        let mut changes = Changes::default();
        let result = {
            let mut inner = self.inner.lock();
            self.flush(&mut inner);
            let mut now = LazyNow {
                clock: &self.clock,
                at: None,
            };
            let (state, generation) = self.current_state(&mut inner, &mut now, &mut changes);
            match state {
                State::Open => Err(BreakerError::Open),
                State::HalfOpen if inner.counts.requests >= self.max_requests => {
                    Err(BreakerError::TooManyRequests)
                }
                _ => {
                    inner.counts.on_request();
                    Ok(generation)
                }
            }
        };
        self.report(changes);
        if let (Err(e), Some(observer)) = (&result, &self.on_event) {
            let rejection = match e {
                BreakerError::Open => Rejection::Open,
                BreakerError::TooManyRequests => Rejection::TooManyRequests,
            };
            observer(&self.name, Event::Rejected(rejection));
        }
        result
    }

    fn after_request(&self, before: u32, success: bool) {
        let mut changes = Changes::default();
        {
            let mut inner = self.inner.lock();
            self.flush(&mut inner);
            let mut now = LazyNow {
                clock: &self.clock,
                at: None,
            };
            let (state, generation) = self.current_state(&mut inner, &mut now, &mut changes);
            if generation != before {
                // The request's generation ended: its outcome is ignored.
            } else if success {
                inner.counts.on_success();
                if state == State::HalfOpen
                    && inner.counts.consecutive_successes >= self.max_requests
                {
                    self.set_state(&mut inner, State::Closed, &mut now, &mut changes);
                }
            } else {
                inner.counts.on_failure();
                let trip = match state {
                    State::Closed => match &self.ready_to_trip {
                        Some(f) => f(inner.counts),
                        None => inner.counts.consecutive_failures > 5,
                    },
                    State::HalfOpen => true,
                    State::Open => false,
                };
                if trip {
                    self.set_state(&mut inner, State::Open, &mut now, &mut changes);
                }
            }
        }
        self.report(changes);
    }

    /// A request of `generation` was cancelled: it counts as neither success nor failure and
    /// leaves the counts (freeing a half-open slot).
    fn cancel_request(&self, generation: u32) {
        let mut changes = Changes::default();
        {
            let mut inner = self.inner.lock();
            self.flush(&mut inner);
            let mut now = LazyNow {
                clock: &self.clock,
                at: None,
            };
            let (_, current) = self.current_state(&mut inner, &mut now, &mut changes);
            if current == generation {
                inner.counts.requests = inner.counts.requests.saturating_sub(1);
            }
        }
        self.report(changes);
    }

    fn current_state(
        &self,
        inner: &mut Inner,
        now: &mut LazyNow<'_, C>,
        changes: &mut Changes,
    ) -> (State, u32) {
        match (inner.state, inner.expiry) {
            (State::Closed, Some(expiry)) if expiry < now.get() => self.new_generation(inner, now),
            (State::Open, Some(expiry)) if expiry < now.get() => {
                self.set_state(inner, State::HalfOpen, now, changes);
            }
            _ => {}
        }
        (inner.state, inner.generation)
    }

    fn set_state(
        &self,
        inner: &mut Inner,
        to: State,
        now: &mut LazyNow<'_, C>,
        changes: &mut Changes,
    ) {
        let from = inner.state;
        if from == to {
            return;
        }
        inner.state = to;
        self.new_generation(inner, now);
        changes.push((from, to));
    }

    fn new_generation(&self, inner: &mut Inner, now: &mut LazyNow<'_, C>) {
        inner.generation = inner.generation.wrapping_add(1) & GEN_MASK;
        inner.counts = Counts::default();
        inner.expiry = match inner.state {
            State::Closed => self.interval.map(|i| now.get().saturating_add(i)),
            State::Open => Some(now.get().saturating_add(self.timeout)),
            State::HalfOpen => None,
        };
        self.publish(inner);
    }

    fn report(&self, changes: Changes) {
        for (from, to) in changes.0.into_iter().flatten() {
            if let Some(f) = &self.on_state_change {
                f(&self.name, from, to);
            }
            if let Some(f) = &self.on_event {
                f(&self.name, Event::StateChange { from, to });
            }
        }
    }
}
