//! Monotonic clocks passed to the algorithms, so every time rule can be tested without sleeping.
//!
//! A [`Clock`] reports the time elapsed since its own origin as a [`Duration`]. The algorithms only
//! ever compare and subtract such readings, so the origin does not matter as long as one algorithm
//! instance uses one clock. [`SystemClock`] reads the CPU's time-stamp counter through `quanta`
//! (the clock `governor` uses; it falls back to the OS monotonic clock where the counter is not
//! reliable); [`ManualClock`] moves only when a test calls [`ManualClock::advance`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic clock: the time elapsed since an origin fixed when the clock was made.
pub trait Clock: Send + Sync {
    /// The current time, as the duration since this clock's origin. Never decreases.
    fn now(&self) -> Duration;

    /// [`now`](Self::now) in nanoseconds, saturating at `u64::MAX` (584 years); clocks may
    /// override it to skip building a `Duration` on hot paths.
    #[inline]
    fn now_nanos(&self) -> u64 {
        u64::try_from(self.now().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }

    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Duration {
        (**self).now()
    }

    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }
}

// === impl SystemClock ===

/// The real monotonic clock: `quanta`'s calibrated time-stamp counter, a few nanoseconds per
/// reading where `std::time::Instant` (a vDSO `clock_gettime`) costs about 20 to 35 ns.
#[derive(Debug, Clone)]
pub struct SystemClock {
    clock: quanta::Clock,
    origin_raw: u64,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin_raw = clock.raw();
        Self { clock, origin_raw }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        self.clock.delta_as_nanos(self.origin_raw, self.clock.raw())
    }
}

// === impl ManualClock ===

/// A clock that moves only when told to: clones share the same time, so a test can keep one
/// handle and give another to the algorithm under test.
///
/// ```
/// use micro_wrappers::clock::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let shared = clock.clone();
/// clock.advance(Duration::from_millis(250));
/// assert_eq!(shared.now(), Duration::from_millis(250));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at its origin (zero).
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock to `at` since its origin. Setting it backwards breaks the monotonic
    /// promise of [`Clock`]; tests may do it on purpose.
    pub fn set(&self, at: Duration) {
        let at = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.store(at, Ordering::Release);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }

    #[inline]
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_and_saturates() {
        let c = ManualClock::new();
        let d = c.clone();
        assert_eq!(d.now(), Duration::ZERO);
        c.advance(Duration::from_secs(3));
        assert_eq!(d.now(), Duration::from_secs(3));
        c.set(Duration::from_millis(5));
        assert_eq!(d.now(), Duration::from_millis(5));
        c.advance(Duration::MAX);
        assert_eq!(d.now(), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn system_clock_is_monotonic() {
        let c = SystemClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }
}
