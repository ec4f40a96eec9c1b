//! juju/ratelimit's token bucket, lock-free.
//!
//! juju's bucket keeps `available` tokens and the `latest_tick` at which they were counted, and on
//! every call first adjusts: `available = min(capacity, available + (tick - latest_tick) *
//! quantum)` unless already full, then `latest_tick = tick`. Both fields only ever matter through
//! that sum, so this bucket keeps a single number instead,
//!
//! ```text
//! x = available - latest_tick * quantum        (available at tick t = min(capacity, x + t * quantum))
//! ```
//!
//! and updates it with one compare-and-swap loop on an `AtomicI64`. For ticks that never go
//! backwards this is exactly juju's arithmetic, including "latest_tick is always updated" (no
//! bonus tokens after being full). Intermediate products are computed in `i128`, so nothing
//! overflows or panics.
//!
//! Limits of the single word: `x` must stay within `i64`, that is, the tokens produced since the
//! bucket's start (`ticks * quantum`) must stay below about 9.2e18. At 1e9 tokens per second or
//! less that is more than 290 years. For faster buckets, past that horizon a take that leaves no
//! debt saturates `x` (the bucket then behaves as always full) and a take that would leave a debt
//! is refused.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use strength_reduce::StrengthReducedU64;

use crate::clock::{Clock, SystemClock};

const NANOS_PER_SEC: i128 = 1_000_000_000;
/// juju's `rateMargin`: the rate found by [`Bucket::new_with_rate`] is within 1 %.
const RATE_MARGIN: f64 = 0.01;

/// Invalid arguments to a [`Bucket`] constructor.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum BucketError {
    /// The fill interval is zero or longer than `i64::MAX` nanoseconds.
    #[error("token bucket fill interval is not > 0")]
    InvalidFillInterval,
    /// The capacity is not > 0.
    #[error("token bucket capacity is not > 0")]
    InvalidCapacity,
    /// The quantum is not > 0.
    #[error("token bucket quantum is not > 0")]
    InvalidQuantum,
    /// The rate is not a finite number > 0.
    #[error("token bucket rate is not a finite number > 0")]
    InvalidRate,
    /// No quantum below 2^50 gives a rate within 1 % of the one asked for.
    #[error("cannot find suitable quantum for {0}")]
    NoSuitableQuantum(f64),
}

/// A refusal by a [`Bucket`], reported to its observer ([`Bucket::on_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BucketEvent {
    /// `take_max_duration` (or `wait_max_duration`) refused: the wait would have been longer
    /// than allowed.
    Refused {
        /// The tokens asked for.
        requested: i64,
    },
    /// `take_available` handed out fewer tokens than asked for.
    Short {
        /// The tokens asked for.
        requested: i64,
        /// The tokens handed out.
        taken: i64,
    },
}

type BucketObserver = Arc<dyn Fn(BucketEvent) + Send + Sync>;

/// A token bucket: `capacity` tokens at most, `quantum` tokens added every `fill_interval`.
/// Starts full. `Send + Sync`; every operation is one lock-free compare-and-swap loop.
pub struct Bucket<C: Clock = SystemClock> {
    /// `available - latest_tick * quantum`; see the module docs.
    state: AtomicI64,
    fill_nanos: i64,
    /// `fill_nanos` as a divisor by multiplication (a hardware division costs ~10 ns).
    fill: StrengthReducedU64,
    capacity: i64,
    quantum: i64,
    /// The clock reading at the bucket's start, in nanoseconds.
    start: u64,
    clock: C,
    on_event: Option<BucketObserver>,
}

// === impl Bucket ===

impl Bucket<SystemClock> {
    /// A bucket adding one token every `fill_interval`, on the system clock.
    pub fn new(fill_interval: Duration, capacity: i64) -> Result<Self, BucketError> {
        Self::with_clock(fill_interval, capacity, 1, SystemClock::new())
    }

    /// A bucket adding `quantum` tokens every `fill_interval`, on the system clock.
    pub fn new_with_quantum(
        fill_interval: Duration,
        capacity: i64,
        quantum: i64,
    ) -> Result<Self, BucketError> {
        Self::with_clock(fill_interval, capacity, quantum, SystemClock::new())
    }

    /// A bucket filling at about `rate` tokens per second (within 1 %), on the system clock.
    pub fn new_with_rate(rate: f64, capacity: i64) -> Result<Self, BucketError> {
        Self::with_rate_and_clock(rate, capacity, SystemClock::new())
    }
}

impl<C: Clock> Bucket<C> {
    /// A bucket adding `quantum` tokens every `fill_interval`, reading time from `clock`.
    pub fn with_clock(
        fill_interval: Duration,
        capacity: i64,
        quantum: i64,
        clock: C,
    ) -> Result<Self, BucketError> {
        let fill_nanos = i64::try_from(fill_interval.as_nanos())
            .ok()
            .filter(|n| *n > 0)
            .ok_or(BucketError::InvalidFillInterval)?;
        if capacity <= 0 {
            return Err(BucketError::InvalidCapacity);
        }
        if quantum <= 0 {
            return Err(BucketError::InvalidQuantum);
        }
        let start = clock.now_nanos();
        Ok(Self {
            state: AtomicI64::new(capacity),
            fill_nanos,
            fill: StrengthReducedU64::new(fill_nanos.unsigned_abs()),
            capacity,
            quantum,
            start,
            clock,
            on_event: None,
        })
    }

    /// Tells `f` of every refusal (see [`BucketEvent`]); successful takes report nothing.
    ///
    /// ```
    /// # use micro_wrappers::ratelimit::Bucket;
    /// # use std::time::Duration;
    /// let bucket = Bucket::new(Duration::from_millis(10), 5)
    ///     .unwrap()
    ///     .on_event(|e| eprintln!("{e:?}"));
    /// ```
    #[must_use]
    pub fn on_event(mut self, f: impl Fn(BucketEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(f));
        self
    }

    #[cold]
    fn emit(&self, event: BucketEvent) {
        if let Some(f) = &self.on_event {
            f(event);
        }
    }

    /// A bucket filling at about `rate` tokens per second, reading time from `clock`: juju's
    /// search of the smallest quantum (1, then each step `q * 11 / 10`, at least `q + 1`) whose
    /// fill interval `1e9 * q / rate` ns gives a rate within 1 %.
    pub fn with_rate_and_clock(rate: f64, capacity: i64, clock: C) -> Result<Self, BucketError> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(BucketError::InvalidRate);
        }
        if capacity <= 0 {
            return Err(BucketError::InvalidCapacity);
        }
        let mut quantum: i64 = 1;
        while quantum < 1 << 50 {
            // Truncation as Go's time.Duration(float64); `as` saturates out-of-range values.
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            let fill_nanos = (1e9 * quantum as f64 / rate) as i64;
            if fill_nanos > 0 && (rate_of(quantum, fill_nanos) - rate).abs() / rate <= RATE_MARGIN {
                return Self::with_clock(
                    Duration::from_nanos(fill_nanos.unsigned_abs()),
                    capacity,
                    quantum,
                    clock,
                );
            }
            let next = quantum * 11 / 10;
            quantum = if next == quantum { quantum + 1 } else { next };
        }
        Err(BucketError::NoSuitableQuantum(rate))
    }

    /// The most tokens the bucket holds.
    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    /// Tokens added per tick.
    pub fn quantum(&self) -> i64 {
        self.quantum
    }

    /// The length of a tick.
    pub fn fill_interval(&self) -> Duration {
        Duration::from_nanos(self.fill_nanos.unsigned_abs())
    }

    /// The fill rate in tokens per second: `1e9 * quantum / fill_interval_ns`.
    pub fn rate(&self) -> f64 {
        rate_of(self.quantum, self.fill_nanos)
    }

    /// The bucket's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Takes `count` tokens, possibly going into debt, and returns how long the caller must
    /// wait before they are its. Never refused, except when the debt cannot be represented
    /// (see the module docs): then nothing is taken and `Duration::MAX` is returned.
    pub fn take(&self, count: i64) -> Duration {
        self.take_max_duration(count, Duration::MAX)
            .unwrap_or(Duration::MAX)
    }

    /// Like [`take`](Self::take), but only if the wait is at most `max_wait`; otherwise takes
    /// nothing and returns `None`.
    pub fn take_max_duration(&self, count: i64, max_wait: Duration) -> Option<Duration> {
        self.take_nanos(self.clock.now_nanos(), count, max_wait)
    }

    /// Takes up to `count` tokens that are available now, without waiting; returns how many.
    pub fn take_available(&self, count: i64) -> i64 {
        self.take_available_nanos(self.clock.now_nanos(), count)
    }

    /// The tokens available now; negative while a debt is outstanding.
    pub fn available(&self) -> i64 {
        self.available_nanos(self.clock.now_nanos())
    }

    /// Waits (with `tokio::time::sleep`) until `count` tokens are the caller's.
    pub async fn wait(&self, count: i64) {
        let d = self.take(count);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    /// Waits until `count` tokens are the caller's if that takes at most `max_wait`, and
    /// returns `true`; otherwise takes nothing and returns `false` at once.
    pub async fn wait_max_duration(&self, count: i64, max_wait: Duration) -> bool {
        match self.take_max_duration(count, max_wait) {
            Some(d) => {
                if !d.is_zero() {
                    tokio::time::sleep(d).await;
                }
                true
            }
            None => false,
        }
    }

    /// juju's `take(now, count, max_wait)` at the clock reading `now` (a duration since the
    /// clock's origin). `Some(wait)` when taken, `None` when refused (bucket unchanged).
    #[inline]
    pub fn take_at(&self, now: Duration, count: i64, max_wait: Duration) -> Option<Duration> {
        self.take_nanos(saturating_nanos(now), count, max_wait)
    }

    #[inline]
    fn take_nanos(&self, now: u64, count: i64, max_wait: Duration) -> Option<Duration> {
        if count <= 0 {
            return Some(Duration::ZERO);
        }
        let tick = now.saturating_sub(self.start) / self.fill;
        // Fast path, all in i64: enough tokens now, no debt left.
        if let Some(produced) = i64::try_from(tick)
            .ok()
            .and_then(|t| t.checked_mul(self.quantum))
        {
            let mut x = self.state.load(Ordering::Relaxed);
            loop {
                // Saturating: a sum past i64::MAX is past the capacity anyway.
                let avail = x.saturating_add(produced).min(self.capacity);
                match avail.checked_sub(count) {
                    Some(left) if left >= 0 => {
                        // 0 <= left and 0 <= produced: no overflow.
                        let new_x = left - produced;
                        match self.state.compare_exchange_weak(
                            x,
                            new_x,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        ) {
                            Ok(_) => return Some(Duration::ZERO),
                            Err(actual) => x = actual,
                        }
                    }
                    _ => break,
                }
            }
        }
        self.take_slow(tick, now, count, max_wait)
    }

    /// `take` in i128, for debts and for ticks past the i64 horizon.
    fn take_slow(&self, tick: u64, now: u64, count: i64, max_wait: Duration) -> Option<Duration> {
        let tick = i128::from(tick);
        let produced = tick * i128::from(self.quantum);
        let count = i128::from(count);
        let mut x = self.state.load(Ordering::Relaxed);
        loop {
            let avail = self.avail(x, produced);
            let left = avail - count;
            let (wait, new_x) = if left >= 0 {
                // Past the horizon (module docs) `x` saturates.
                let new_x = i64::try_from(left - produced).unwrap_or(i64::MIN);
                (Duration::ZERO, new_x)
            } else {
                let q = i128::from(self.quantum);
                let end_tick = tick + (-left + q - 1) / q;
                let end = i128::from(self.start) + end_tick * i128::from(self.fill_nanos);
                // `now` lies within `tick`, before `end_tick` begins: the wait is > 0.
                let wait = end - i128::from(now);
                let new_x = i64::try_from(left - produced).ok();
                let wait = nanos_to_duration(wait).filter(|w| *w <= max_wait);
                let (Some(wait), Some(new_x)) = (wait, new_x) else {
                    self.emit(BucketEvent::Refused {
                        requested: i64::try_from(count).unwrap_or(i64::MAX),
                    });
                    return None;
                };
                (wait, new_x)
            };
            match self
                .state
                .compare_exchange_weak(x, new_x, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(wait),
                Err(actual) => x = actual,
            }
        }
    }

    /// juju's `takeAvailable` at the clock reading `now`.
    pub fn take_available_at(&self, now: Duration, count: i64) -> i64 {
        self.take_available_nanos(saturating_nanos(now), count)
    }

    fn take_available_nanos(&self, now: u64, count: i64) -> i64 {
        if count <= 0 {
            return 0;
        }
        let produced = self.tick(now) * i128::from(self.quantum);
        let mut x = self.state.load(Ordering::Relaxed);
        loop {
            let avail = self.avail(x, produced);
            if avail <= 0 {
                self.emit(BucketEvent::Short {
                    requested: count,
                    taken: 0,
                });
                return 0;
            }
            let taken = avail.min(i128::from(count));
            let new_x = i64::try_from(avail - taken - produced).unwrap_or(i64::MIN);
            match self
                .state
                .compare_exchange_weak(x, new_x, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    // 0 < taken <= count, an i64.
                    let taken = i64::try_from(taken).unwrap_or(0);
                    if taken < count {
                        self.emit(BucketEvent::Short {
                            requested: count,
                            taken,
                        });
                    }
                    return taken;
                }
                Err(actual) => x = actual,
            }
        }
    }

    /// The tokens available at the clock reading `now`; negative while in debt.
    pub fn available_at(&self, now: Duration) -> i64 {
        self.available_nanos(saturating_nanos(now))
    }

    fn available_nanos(&self, now: u64) -> i64 {
        let produced = self.tick(now) * i128::from(self.quantum);
        let avail = self.avail(self.state.load(Ordering::Relaxed), produced);
        // capacity >= avail >= x >= i64::MIN
        i64::try_from(avail).unwrap_or(i64::MIN)
    }

    /// `floor((now - start) / fill_interval)`; 0 before the start.
    #[inline]
    fn tick(&self, now: u64) -> i128 {
        // Multiplications and shifts instead of a ~10 ns hardware division.
        i128::from(now.saturating_sub(self.start) / self.fill)
    }

    #[inline]
    fn avail(&self, x: i64, produced: i128) -> i128 {
        (i128::from(x) + produced).min(i128::from(self.capacity))
    }
}

fn rate_of(quantum: i64, fill_nanos: i64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let r = 1e9 * quantum as f64 / fill_nanos as f64;
    r
}

/// Clock readings are handled in u64 nanoseconds: 584 years from the clock's origin.
fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn nanos_to_duration(nanos: i128) -> Option<Duration> {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
    let sub = u32::try_from(nanos % NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, sub))
}

impl<C: Clock> fmt::Debug for Bucket<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("capacity", &self.capacity)
            .field("quantum", &self.quantum)
            .field("fill_interval", &self.fill_interval())
            .field("available", &self.available())
            .finish_non_exhaustive()
    }
}
