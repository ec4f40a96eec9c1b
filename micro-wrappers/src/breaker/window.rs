//! A rolling window of fixed-width time buckets with running totals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Counters kept per bucket; totals are kept by adding and subtracting whole buckets.
pub(crate) trait Stats: Copy + Default {
    fn add(&mut self, other: &Self);
    fn sub(&mut self, other: &Self);
}

/// `n` buckets indexed by absolute bucket number (`now / width`). The window at bucket `i`
/// holds buckets `i - n + 1 ..= i`.
#[derive(Debug, Clone)]
pub(crate) struct RollingWindow<B> {
    buckets: Box<[B]>,
    /// Absolute index of the newest bucket.
    head: u128,
    /// The sum of the buckets.
    totals: B,
}

impl<B: Stats> RollingWindow<B> {
    /// `n` (at least 1) empty buckets, the newest being bucket 0.
    pub(crate) fn new(n: usize) -> Self {
        Self {
            buckets: vec![B::default(); n.max(1)].into_boxed_slice(),
            head: 0,
            totals: B::default(),
        }
    }

    fn slot(&self, index: u128) -> usize {
        // The remainder is below `buckets.len()`, a usize.
        (index % self.buckets.len() as u128) as usize
    }

    /// Adds `delta` to the newest bucket.
    pub(crate) fn add_to_head(&mut self, delta: &B) {
        let slot = self.slot(self.head);
        self.buckets[slot].add(delta);
        self.totals.add(delta);
    }

    /// Makes `index` the newest bucket if it is later, dropping the buckets that fell out.
    pub(crate) fn advance_to(&mut self, index: u128) {
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

    /// Empties every bucket.
    pub(crate) fn reset_buckets(&mut self) {
        self.buckets.fill(B::default());
        self.totals = B::default();
    }
}

// === AtomicWindow ===

/// `K` counters, as a bucket of the history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters<const K: usize>([u64; K]);

impl<const K: usize> Default for Counters<K> {
    fn default() -> Self {
        Self([0; K])
    }
}

impl<const K: usize> Stats for Counters<K> {
    fn add(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.wrapping_add(b);
        }
    }

    fn sub(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.wrapping_sub(b);
        }
    }
}

const TAG_SHIFT: u32 = 32;
const FIELD_MAX: u64 = 0xFFFF;

fn tag(index: u128) -> u64 {
    // The low 32 bits of the bucket index.
    (index as u64) & 0xFFFF_FFFF
}

/// A rolling window whose hot operations are lock-free: `K` counters per bucket, of which the
/// first two are counted in the current bucket by one compare-and-swap on a packed word
/// `bucket tag (32 bits) | counter 0 (16) | counter 1 (16)`, and the window's sum is read
/// without a write, under a seqlock.
///
/// The history (older buckets, the other counters, and whatever the current word spills when a
/// field is full) lives in a [`RollingWindow`] under a mutex, whose sum is published in `past`.
/// The window's totals are `past + current`, both read between two equal even `seq` values.
#[derive(Debug)]
pub(crate) struct AtomicWindow<const K: usize> {
    width: strength_reduce::StrengthReducedU64,
    seq: AtomicU64,
    current: AtomicU64,
    past: [AtomicU64; K],
    ring: Mutex<RollingWindow<Counters<K>>>,
}

impl<const K: usize> AtomicWindow<K> {
    /// `n` (at least 1) buckets of `width` (at least 1 ns, at most 2^64 ns).
    pub(crate) fn new(n: usize, width: Duration) -> Self {
        let width_nanos = u64::try_from(width.as_nanos()).unwrap_or(u64::MAX).max(1);
        Self {
            width: strength_reduce::StrengthReducedU64::new(width_nanos),
            seq: AtomicU64::new(0),
            current: AtomicU64::new(0),
            past: std::array::from_fn(|_| AtomicU64::new(0)),
            ring: Mutex::new(RollingWindow::new(n)),
        }
    }

    #[inline]
    fn index(&self, now_nanos: u64) -> u128 {
        u128::from(now_nanos / self.width)
    }

    /// The window's totals at `now_nanos`.
    #[inline]
    pub(crate) fn totals(&self, now_nanos: u64) -> [u64; K] {
        let tag = tag(self.index(now_nanos));
        let s1 = self.seq.load(Ordering::SeqCst);
        if s1 & 1 == 0 {
            let current = self.current.load(Ordering::SeqCst);
            if current >> TAG_SHIFT == tag {
                let mut totals: [u64; K] =
                    std::array::from_fn(|i| self.past[i].load(Ordering::SeqCst));
                if self.seq.load(Ordering::SeqCst) == s1 {
                    add_current(&mut totals, current);
                    return totals;
                }
            }
        }
        self.totals_slow(now_nanos)
    }

    fn totals_slow(&self, now_nanos: u64) -> [u64; K] {
        let mut ring = self.ring.lock();
        self.rotate(&mut ring, now_nanos);
        // Under the lock `past` is stable; `current` may still gain counts.
        let mut totals = std::array::from_fn(|i| self.past[i].load(Ordering::SeqCst));
        add_current(&mut totals, self.current.load(Ordering::SeqCst));
        totals
    }

    /// Adds `delta` at `now_nanos`: one CAS when only counters 0 and 1 move, the current
    /// bucket is `now`'s and the fields have room; the lock otherwise.
    #[inline]
    pub(crate) fn add(&self, now_nanos: u64, delta: &[u64; K]) {
        if delta[2..].iter().all(|d| *d == 0) && delta[0] <= FIELD_MAX && delta[1] <= FIELD_MAX {
            let tag = tag(self.index(now_nanos));
            let mut current = self.current.load(Ordering::SeqCst);
            loop {
                if current >> TAG_SHIFT != tag
                    || (current >> 16) & FIELD_MAX > FIELD_MAX - delta[0]
                    || current & FIELD_MAX > FIELD_MAX - delta[1]
                {
                    break;
                }
                let next = current + (delta[0] << 16) + delta[1];
                match self.current.compare_exchange_weak(
                    current,
                    next,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => return,
                    Err(actual) => current = actual,
                }
            }
        }
        self.add_slow(now_nanos, delta);
    }

    fn add_slow(&self, now_nanos: u64, delta: &[u64; K]) {
        let mut ring = self.ring.lock();
        self.rotate(&mut ring, now_nanos);
        // Into the newest bucket of the history (an older `now` is counted there too), with
        // the current word's counts, so that its fields have room again.
        self.seq.fetch_add(1, Ordering::SeqCst);
        let old = self
            .current
            .swap(tag(ring.head) << TAG_SHIFT, Ordering::SeqCst);
        let mut folded = *delta;
        add_current(&mut folded, old);
        ring.add_to_head(&Counters(folded));
        self.publish_past(&ring);
        self.seq.fetch_add(1, Ordering::SeqCst);
    }

    /// Empties the window (under the lock).
    pub(crate) fn reset(&self) {
        let mut ring = self.ring.lock();
        self.seq.fetch_add(1, Ordering::SeqCst);
        ring.reset_buckets();
        let tag = tag(ring.head);
        self.current.store(tag << TAG_SHIFT, Ordering::SeqCst);
        self.publish_past(&ring);
        self.seq.fetch_add(1, Ordering::SeqCst);
    }

    /// Moves the window to `now` if it is in a later bucket, folding the current word into the
    /// history (under the lock). The current word always belongs to the history's head bucket.
    fn rotate(&self, ring: &mut RollingWindow<Counters<K>>, now_nanos: u64) {
        let index = self.index(now_nanos);
        if index <= ring.head {
            return;
        }
        self.seq.fetch_add(1, Ordering::SeqCst);
        let old = self.current.swap(tag(index) << TAG_SHIFT, Ordering::SeqCst);
        let mut folded = [0; K];
        add_current(&mut folded, old);
        ring.add_to_head(&Counters(folded));
        ring.advance_to(index);
        self.publish_past(ring);
        self.seq.fetch_add(1, Ordering::SeqCst);
    }

    fn publish_past(&self, ring: &RollingWindow<Counters<K>>) {
        for (p, t) in self.past.iter().zip(ring.totals.0) {
            p.store(t, Ordering::SeqCst);
        }
    }
}

#[inline]
fn add_current<const K: usize>(totals: &mut [u64; K], current: u64) {
    if K >= 2 {
        totals[0] = totals[0].wrapping_add((current >> 16) & FIELD_MAX);
        totals[1] = totals[1].wrapping_add(current & FIELD_MAX);
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
        let mut w = RollingWindow::<N>::new(10);
        w.add_to_head(&N(2));
        w.advance_to(5);
        w.add_to_head(&N(10));
        w.advance_to(9);
        assert_eq!(w.totals, N(12));
        w.advance_to(10); // bucket 0 left the window
        assert_eq!(w.totals, N(10));
        w.advance_to(3); // earlier: nothing moves
        assert_eq!(w.totals, N(10));
        w.advance_to(15);
        assert_eq!(w.totals, N(0));
        w.add_to_head(&N(3));
        w.advance_to(100);
        assert_eq!(w.totals, N(0));
    }

    /// A plain reference: every add kept with its bucket index.
    fn reference_totals(adds: &[(u128, [u64; 3])], head: u128, n: u128) -> [u64; 3] {
        let mut t = [0; 3];
        for (index, d) in adds {
            if *index + n > head {
                for k in 0..3 {
                    t[k] += d[k];
                }
            }
        }
        t
    }

    proptest::proptest! {
        /// The lock-free window sums exactly as the plain one, spills and rotations included.
        #[test]
        fn atomic_window_matches_rolling_window(
            steps in proptest::collection::vec(
                (0u64..700, 0u64..3, 0u64..70_000, 0u64..2, proptest::bool::ANY), 1..120),
        ) {
            let width = Duration::from_millis(250);
            let atomic = AtomicWindow::<3>::new(8, width);
            let mut adds = Vec::new();
            let mut now = 0u64;
            for (advance_ms, a, b, x, big) in steps {
                now += advance_ms * 1_000_000;
                let delta = if big { [a, b, x] } else { [a, b % 3, x] };
                atomic.add(now, &delta);
                let index = u128::from(now / 250_000_000);
                adds.push((index, delta));
                proptest::prop_assert_eq!(atomic.totals(now), reference_totals(&adds, index, 8));
            }
            atomic.reset();
            proptest::prop_assert_eq!(atomic.totals(now), [0; 3]);
        }
    }

    #[test]
    fn atomic_window_counts_every_concurrent_add() {
        let w = AtomicWindow::<2>::new(40, Duration::from_millis(250));
        std::thread::scope(|s| {
            for t in 0..4 {
                let w = &w;
                s.spawn(move || {
                    for i in 0..50_000u64 {
                        // Two bucket changes on the way, and many spills of the 16-bit fields.
                        let now = (i / 20_000) * 250_000_000;
                        w.add(now, &[1, (i + t) % 2]);
                        let _ = w.totals(now);
                    }
                });
            }
        });
        assert_eq!(w.totals(500_000_000), [200_000, 100_000]);
    }
}
