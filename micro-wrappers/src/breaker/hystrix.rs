//! afex/hystrix-go: a rolling error percentage, a sleep window with one probe, a concurrency
//! limit, a timeout and a fallback.
//!
//! Health is a rolling window of 10 one-second buckets. The circuit opens (lazily, when a request
//! asks to pass) once the window holds at least `request_volume_threshold` requests and
//! `round(errors * 100 / requests) >= error_percent_threshold`, where errors are failures,
//! timeouts, rejections and short-circuits. While open, exactly one probe passes per
//! `sleep_window`; a successful probe closes the circuit and empties the window, a failed one
//! keeps it open until the next sleep window. (hystrix-go closes on any success reported while
//! open, including one from a request let through before the circuit opened; here only the
//! probe's success closes it, as the sleep-window rule describes.)
//!
//! The first outcome wins: [`Ticket::report`] consumes the ticket, and [`HystrixCircuit::run`]
//! drops the command's future when the timeout fires, so a late result is never counted. A
//! caller that drops the `run` future (cancellation) is not counted at all.
//!
//! [`HystrixCircuit::allow`] and [`Ticket`] are the pure state machine (tested on a manual
//! clock); [`HystrixCircuit::run`] and [`HystrixCircuit::run_with_fallback`] add the timeout
//! (`tokio::time::timeout`) and the fallback.
//!
//! ```
//! use micro_wrappers::breaker::hystrix::{HystrixCircuit, HystrixConfig, Outcome};
//!
//! let circuit = HystrixCircuit::new("users", HystrixConfig::default());
//! let ticket = circuit.allow().expect("closed");
//! ticket.report(Outcome::Success);
//! assert_eq!(circuit.counts().successes, 1);
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use super::window::AtomicWindow;
use super::{Event, Observer, Rejection, State};
use crate::clock::{Clock, SystemClock};

/// Default command timeout: 1000 ms.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Default maximum of concurrent requests: 10.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: u32 = 10;
/// Default minimum of requests in the window before the circuit may open: 20.
pub const DEFAULT_REQUEST_VOLUME_THRESHOLD: u64 = 20;
/// Default time the circuit stays open before a probe: 5000 ms.
pub const DEFAULT_SLEEP_WINDOW: Duration = Duration::from_millis(5000);
/// Default error percentage that opens the circuit: 50.
pub const DEFAULT_ERROR_PERCENT_THRESHOLD: u32 = 50;

const WINDOW_BUCKETS: usize = 10;
const BUCKET_WIDTH: Duration = Duration::from_secs(1);

/// Per-command configuration; a zero field means Hystrix's default for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HystrixConfig {
    /// How long [`HystrixCircuit::run`] waits for the command (default 1000 ms).
    pub timeout: Duration,
    /// How many commands may run at once (default 10).
    pub max_concurrent_requests: u32,
    /// How many requests the window must hold before the circuit may open (default 20).
    pub request_volume_threshold: u64,
    /// How long the circuit stays open before letting one probe through (default 5000 ms).
    pub sleep_window: Duration,
    /// The rounded error percentage at or above which the circuit opens (default 50).
    pub error_percent_threshold: u32,
}

impl HystrixConfig {
    /// The configuration with every zero replaced by its default.
    pub fn resolved(self) -> Self {
        fn or<T: PartialEq + Default>(v: T, default: T) -> T {
            if v == T::default() { default } else { v }
        }
        Self {
            timeout: or(self.timeout, DEFAULT_TIMEOUT),
            max_concurrent_requests: or(
                self.max_concurrent_requests,
                DEFAULT_MAX_CONCURRENT_REQUESTS,
            ),
            request_volume_threshold: or(
                self.request_volume_threshold,
                DEFAULT_REQUEST_VOLUME_THRESHOLD,
            ),
            sleep_window: or(self.sleep_window, DEFAULT_SLEEP_WINDOW),
            error_percent_threshold: or(
                self.error_percent_threshold,
                DEFAULT_ERROR_PERCENT_THRESHOLD,
            ),
        }
    }
}

/// The outcomes counted in the rolling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HystrixCounts {
    /// Commands that succeeded.
    pub successes: u64,
    /// Commands that returned an error.
    pub failures: u64,
    /// Commands that timed out.
    pub timeouts: u64,
    /// Requests rejected for want of a concurrency ticket.
    pub rejections: u64,
    /// Requests refused because the circuit was open.
    pub short_circuits: u64,
}

impl HystrixCounts {
    fn from_window([successes, failures, timeouts, rejections, short_circuits]: [u64; 5]) -> Self {
        Self {
            successes,
            failures,
            timeouts,
            rejections,
            short_circuits,
        }
    }

    /// Every counted request.
    pub fn requests(&self) -> u64 {
        self.successes.wrapping_add(self.errors())
    }

    /// Failures, timeouts, rejections and short-circuits.
    pub fn errors(&self) -> u64 {
        self.failures
            .wrapping_add(self.timeouts)
            .wrapping_add(self.rejections)
            .wrapping_add(self.short_circuits)
    }

    /// `round(errors * 100 / requests)` (0 without requests), as hystrix-go's `int(pct + 0.5)`.
    pub fn error_percent(&self) -> u64 {
        let requests = u128::from(self.requests());
        if requests == 0 {
            return 0;
        }
        let errors = u128::from(self.errors());
        // floor(errors * 100 / requests + 1/2), exactly, in integers.
        let pct = (errors * 200 + requests) / (2 * requests);
        u64::try_from(pct).unwrap_or(u64::MAX)
    }
}

/// How a command that was let through ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// It returned an error.
    Failure,
    /// It did not finish within the timeout.
    Timeout,
}

/// Why [`HystrixCircuit::allow`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejected {
    /// The circuit is open and this is not the sleep window's probe.
    #[error("circuit open")]
    CircuitOpen,
    /// Every concurrency ticket is taken.
    #[error("max concurrency")]
    MaxConcurrency,
}

/// The error of [`HystrixCircuit::run`]: the messages are hystrix-go's.
#[derive(Debug)]
pub enum HystrixError<E> {
    /// `"circuit open"`: refused because the circuit is open.
    CircuitOpen,
    /// `"max concurrency"`: refused for want of a concurrency ticket.
    MaxConcurrency,
    /// `"timeout"`: the command did not finish within the timeout.
    Timeout,
    /// The command's own error (displayed as it is).
    Run(E),
    /// `"fallback failed with '<fallback error>'. run error was '<run error>'"`.
    FallbackFailed {
        /// Why the command did not succeed.
        run: Box<HystrixError<E>>,
        /// Why the fallback did not succeed.
        fallback: E,
    },
}

impl<E> From<Rejected> for HystrixError<E> {
    fn from(r: Rejected) -> Self {
        match r {
            Rejected::CircuitOpen => HystrixError::CircuitOpen,
            Rejected::MaxConcurrency => HystrixError::MaxConcurrency,
        }
    }
}

impl<E: fmt::Display> fmt::Display for HystrixError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HystrixError::CircuitOpen => f.write_str("circuit open"),
            HystrixError::MaxConcurrency => f.write_str("max concurrency"),
            HystrixError::Timeout => f.write_str("timeout"),
            HystrixError::Run(e) => e.fmt(f),
            HystrixError::FallbackFailed { run, fallback } => {
                write!(
                    f,
                    "fallback failed with '{fallback}'. run error was '{run}'"
                )
            }
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for HystrixError<E> {}

/// One Hystrix command's circuit: health, probe and concurrency tickets.
///
/// Lock-free as hystrix-go: an `open` flag, the time the circuit opened or was last probed
/// (one compare-and-swap elects the probe), a ticket counter, and a rolling window whose
/// successes and failures are counted with one compare-and-swap (timeouts, rejections and
/// short-circuits take its lock).
pub struct HystrixCircuit<C: Clock = SystemClock> {
    inner: Arc<Circuit<C>>,
}

/// The shared state behind a [`HystrixCircuit`] and its tickets.
struct Circuit<C> {
    name: String,
    config: HystrixConfig,
    clock: C,
    /// `[successes, failures, timeouts, rejections, short_circuits]`.
    window: AtomicWindow<5>,
    open: AtomicBool,
    /// Clock nanoseconds when the circuit opened or last let a probe through.
    opened_or_last_tested: AtomicU64,
    in_flight: AtomicU32,
    on_event: RwLock<Option<Observer>>,
}

const SUCCESS: [u64; 5] = [1, 0, 0, 0, 0];
const FAILURE: [u64; 5] = [0, 1, 0, 0, 0];
const TIMEOUT: [u64; 5] = [0, 0, 1, 0, 0];
const REJECTION: [u64; 5] = [0, 0, 0, 1, 0];
const SHORT_CIRCUIT: [u64; 5] = [0, 0, 0, 0, 1];

/// A concurrency ticket for one command, from [`HystrixCircuit::allow`]. Report how the command
/// ended with [`report`](Self::report); consuming the ticket makes the first outcome the only
/// one. It owns a handle on the circuit, so it can live as long as the call (a response body
/// included). Dropped unreported, it counts as a failure during a panic and otherwise as a
/// caller's cancellation, which is not counted (a cancelled probe lets the next request probe).
#[must_use = "report the outcome with `report`"]
pub struct Ticket<C: Clock = SystemClock> {
    circuit: Arc<Circuit<C>>,
    /// For the sleep window's probe: `(the time it was elected at, the time before)`.
    probe: Option<(u64, u64)>,
    reported: bool,
}

impl<C: Clock> Ticket<C> {
    /// Whether this request is the sleep window's probe of an open circuit.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// Counts the command's outcome and frees the ticket.
    #[inline]
    pub fn report(mut self, outcome: Outcome) {
        self.reported = true;
        self.circuit.finish(self.probe.is_some(), Some(outcome));
    }
}

impl<C: Clock> Drop for Ticket<C> {
    fn drop(&mut self) {
        if !self.reported {
            let outcome = std::thread::panicking().then_some(Outcome::Failure);
            if let (None, Some((elected, before))) = (outcome, self.probe) {
                // A cancelled probe frees its slot: the next request may probe at once.
                let _ = self.circuit.opened_or_last_tested.compare_exchange(
                    elected,
                    before,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
            self.circuit.finish(self.probe.is_some(), outcome);
        }
    }
}

impl<C: Clock> fmt::Debug for Ticket<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("circuit", &self.circuit.name)
            .field("probe", &self.probe)
            .finish()
    }
}

// === impl HystrixCircuit ===

impl HystrixCircuit<SystemClock> {
    /// A circuit on the system clock.
    pub fn new(name: impl Into<String>, config: HystrixConfig) -> Self {
        Self::with_clock(name, config, SystemClock::new())
    }
}

impl<C: Clock> HystrixCircuit<C> {
    /// A circuit reading time from `clock`.
    pub fn with_clock(name: impl Into<String>, config: HystrixConfig, clock: C) -> Self {
        Self {
            inner: Arc::new(Circuit {
                name: name.into(),
                config: config.resolved(),
                clock,
                window: AtomicWindow::new(WINDOW_BUCKETS, BUCKET_WIDTH),
                open: AtomicBool::new(false),
                opened_or_last_tested: AtomicU64::new(0),
                in_flight: AtomicU32::new(0),
                on_event: RwLock::new(None),
            }),
        }
    }

    /// Tells `f` of every state change (closed <-> open) and rejection.
    ///
    /// ```
    /// # use micro_wrappers::breaker::hystrix::{HystrixCircuit, HystrixConfig};
    /// let c = HystrixCircuit::new("users", HystrixConfig::default())
    ///     .on_event(|name, event| eprintln!("{name}: {event:?}"));
    /// ```
    #[must_use]
    pub fn on_event(self, f: impl Fn(&str, super::Event) + Send + Sync + 'static) -> Self {
        *self.inner.on_event.write() = Some(Arc::new(f));
        self
    }

    /// The command's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration in force (zeros replaced by defaults).
    pub fn config(&self) -> &HystrixConfig {
        &self.inner.config
    }

    /// The window's counts now.
    pub fn counts(&self) -> HystrixCounts {
        HystrixCounts::from_window(self.inner.window.totals(self.inner.clock.now_nanos()))
    }

    /// How many tickets are taken.
    pub fn in_flight(&self) -> u32 {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Whether the circuit is open, opening it first if the window is unhealthy (as
    /// hystrix-go's `IsOpen`).
    pub fn is_open(&self) -> bool {
        self.inner.evaluate(self.inner.clock.now_nanos())
    }

    /// [`State::Open`] or [`State::Closed`] (Hystrix has no half-open state; the probe is
    /// visible as [`Ticket::is_probe`]).
    pub fn state(&self) -> State {
        if self.is_open() {
            State::Open
        } else {
            State::Closed
        }
    }

    /// Asks to run one command: checks the circuit (letting the sleep window's probe through),
    /// then takes a concurrency ticket. Refusals are counted in the window.
    #[inline]
    pub fn allow(&self) -> Result<Ticket<C>, Rejected> {
        let now = self.inner.clock.now_nanos();
        let probe = if self.inner.evaluate(now) {
            // hystrix-go's allowSingleTest: one CAS elects the probe of this sleep window.
            let last = self.inner.opened_or_last_tested.load(Ordering::Acquire);
            let sleep =
                u64::try_from(self.inner.config.sleep_window.as_nanos()).unwrap_or(u64::MAX);
            if now > last.saturating_add(sleep)
                && self
                    .inner
                    .opened_or_last_tested
                    .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                Some((now, last))
            } else {
                self.inner.window.add(now, &SHORT_CIRCUIT);
                self.inner.emit(Event::Rejected(Rejection::Open));
                return Err(Rejected::CircuitOpen);
            }
        } else {
            None
        };
        let max = self.inner.config.max_concurrent_requests;
        if self
            .inner
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            self.inner.window.add(now, &REJECTION);
            self.inner.emit(Event::Rejected(Rejection::MaxConcurrency));
            return Err(Rejected::MaxConcurrency);
        }
        Ok(Ticket {
            circuit: self.inner.clone(),
            probe,
            reported: false,
        })
    }

    /// Runs `fut` under the circuit with the configured timeout. If the returned future is
    /// dropped first (the caller cancelled), nothing is counted.
    pub async fn run<T, E, F>(&self, fut: F) -> Result<T, HystrixError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let ticket = self.allow()?;
        match tokio::time::timeout(self.inner.config.timeout, fut).await {
            Ok(Ok(v)) => {
                ticket.report(Outcome::Success);
                Ok(v)
            }
            Ok(Err(e)) => {
                ticket.report(Outcome::Failure);
                Err(HystrixError::Run(e))
            }
            Err(_elapsed) => {
                ticket.report(Outcome::Timeout);
                Err(HystrixError::Timeout)
            }
        }
    }

    /// [`run`](Self::run), then on any error the fallback, called with that error: its success
    /// is the call's success; its failure gives [`HystrixError::FallbackFailed`].
    pub async fn run_with_fallback<T, E, F, FB, FF>(
        &self,
        fut: F,
        fallback: FB,
    ) -> Result<T, HystrixError<E>>
    where
        F: Future<Output = Result<T, E>>,
        FB: FnOnce(&HystrixError<E>) -> FF,
        FF: Future<Output = Result<T, E>>,
    {
        match self.run(fut).await {
            Ok(v) => Ok(v),
            Err(run) => match fallback(&run).await {
                Ok(v) => Ok(v),
                Err(fallback) => Err(HystrixError::FallbackFailed {
                    run: Box::new(run),
                    fallback,
                }),
            },
        }
    }
}

// === impl Circuit ===

impl<C: Clock> Circuit<C> {
    /// Whether the circuit is open at `now`, opening it if the window is unhealthy.
    #[inline]
    fn evaluate(&self, now: u64) -> bool {
        if self.open.load(Ordering::Acquire) {
            return true;
        }
        let counts = HystrixCounts::from_window(self.window.totals(now));
        if counts.requests() < self.config.request_volume_threshold
            || counts.error_percent() < u64::from(self.config.error_percent_threshold)
        {
            return false;
        }
        // The time first, so that whoever sees the flag also sees it.
        self.opened_or_last_tested.store(now, Ordering::Release);
        if self
            .open
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.emit(Event::StateChange {
                from: State::Closed,
                to: State::Open,
            });
        }
        true
    }

    #[inline]
    fn finish(&self, probe: bool, outcome: Option<Outcome>) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let Some(outcome) = outcome else { return };
        let delta = match outcome {
            Outcome::Success => &SUCCESS,
            Outcome::Failure => &FAILURE,
            Outcome::Timeout => &TIMEOUT,
        };
        self.window.add(self.clock.now_nanos(), delta);
        if probe && outcome == Outcome::Success && self.open.load(Ordering::Acquire) {
            // Empty the window first, so that nobody reopens on the old counts.
            self.window.reset();
            if self
                .open
                .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.emit(Event::StateChange {
                    from: State::Open,
                    to: State::Closed,
                });
            }
        }
    }

    fn emit(&self, event: Event) {
        let observer = self.on_event.read().clone();
        if let Some(f) = observer {
            f(&self.name, event);
        }
    }
}

impl<C: Clock> fmt::Debug for HystrixCircuit<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HystrixCircuit")
            .field("name", &self.inner.name)
            .field("config", &self.inner.config)
            .field("open", &self.inner.open.load(Ordering::Relaxed))
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}
