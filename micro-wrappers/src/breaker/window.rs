//! A rolling window of fixed-width time buckets with running totals.

use std::time::Duration;

/// Counters kept per bucket; totals are kept by adding and subtracting whole buckets.
pub(crate) trait Stats: Copy + Default {
    fn add(&mut self, other: &Self);
    fn sub(&mut self, other: &Self);
}

/// `n` buckets of `width` each, aligned on the clock's origin. The window at time `now` holds
/// the bucket containing `now` and the `n - 1` before it.
#[derive(Debug, Clone)]
pub(crate) struct RollingWindow<B> {
    buckets: Box<[B]>,
    width_nanos: u128,
    /// Absolute index (`now / width`) of the newest bucket.
    head: u128,
    totals: B,
}

impl<B: Stats> RollingWindow<B> {
    /// `n` (at least 1) buckets of `width` (at least 1 ns).
    pub(crate) fn new(n: usize, width: Duration) -> Self {
        Self {
            buckets: vec![B::default(); n.max(1)].into_boxed_slice(),
            width_nanos: width.as_nanos().max(1),
            head: 0,
            totals: B::default(),
        }
    }

    fn slot(&self, index: u128) -> usize {
        // The remainder is below `buckets.len()`, a usize.
        (index % self.buckets.len() as u128) as usize
    }

    /// Moves the window to `now`, dropping the buckets that fell out. A time before the newest
    /// bucket is counted in the newest bucket.
    pub(crate) fn advance(&mut self, now: Duration) {
        let index = now.as_nanos() / self.width_nanos;
        if index <= self.head {
            return;
        }
        let steps = index - self.head;
        if steps >= self.buckets.len() as u128 {
            self.reset_buckets();
        } else {
            for i in 1..=steps {
                let slot = self.slot(self.head + i);
                let old = std::mem::take(&mut self.buckets[slot]);
                self.totals.sub(&old);
            }
        }
        self.head = index;
    }

    /// Adds `delta` to the bucket of `now`.
    pub(crate) fn add(&mut self, now: Duration, delta: &B) {
        self.advance(now);
        let slot = self.slot(self.head);
        self.buckets[slot].add(delta);
        self.totals.add(delta);
    }

    /// The sum of the buckets in the window at `now`.
    pub(crate) fn totals(&mut self, now: Duration) -> B {
        self.advance(now);
        self.totals
    }

    /// Empties every bucket.
    pub(crate) fn reset_buckets(&mut self) {
        self.buckets.fill(B::default());
        self.totals = B::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, Default, PartialEq)]
    struct N(u64);
    impl Stats for N {
        fn add(&mut self, o: &Self) {
            self.0 += o.0;
        }
        fn sub(&mut self, o: &Self) {
            self.0 -= o.0;
        }
    }

    #[test]
    fn buckets_roll_out() {
        let s = Duration::from_secs;
        let mut w = RollingWindow::<N>::new(10, s(1));
        w.add(s(0), &N(1));
        w.add(Duration::from_millis(999), &N(1));
        w.add(s(5), &N(10));
        assert_eq!(w.totals(s(9)), N(12));
        assert_eq!(w.totals(s(10)), N(10)); // second 0 left the window
        assert_eq!(w.totals(Duration::from_millis(14_999)), N(10));
        assert_eq!(w.totals(s(15)), N(0));
        w.add(s(15), &N(3));
        assert_eq!(w.totals(s(100)), N(0));
        // Time going backwards is counted in the newest bucket.
        w.add(s(50), &N(2));
        assert_eq!(w.totals(s(100)), N(2));
    }
}
