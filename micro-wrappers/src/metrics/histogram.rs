//! A call's count and duration, kept in atomics: one observation is two relaxed adds (its
//! bucket and the sum), no lock, no allocation. prometheus-client's `Histogram` takes a mutex
//! per observation, shared by every core that records into it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket bounds in integer nanoseconds, so an observation compares integers: a duration of
/// `d` ns falls in the first bucket whose bound `b` (seconds) has `d <= floor(b * 1e9)`, which
/// for whole nanoseconds is Prometheus' `d <= le`.
#[derive(Debug)]
pub(crate) struct Bounds {
    /// The `le` values as configured (seconds, or milliseconds for the OpenCensus views).
    pub(crate) le: Box<[f64]>,
    nanos: Box<[u64]>,
    /// Nanoseconds per unit of `le` (1e9 for seconds, 1e6 for milliseconds).
    pub(crate) per_unit: f64,
}

impl Bounds {
    /// Bounds `le` in a unit of `per_unit` nanoseconds. Not finite or negative bounds are
    /// dropped, the rest sorted (Prometheus needs them increasing).
    pub(crate) fn new(le: &[f64], per_unit: f64) -> Self {
        let mut le: Vec<f64> = le
            .iter()
            .copied()
            .filter(|b| b.is_finite() && *b >= 0.0)
            .collect();
        le.sort_by(f64::total_cmp);
        le.dedup();
        let nanos = le.iter().map(|b| (b * per_unit).floor() as u64).collect();
        Bounds {
            le: le.into(),
            nanos,
            per_unit,
        }
    }

    /// The bucket of a duration of `nanos`: the index of its bound, or `len` (`+Inf`).
    #[inline]
    fn bucket(&self, nanos: u64) -> usize {
        // A dozen bounds: a scan of sorted integers is as fast as a binary search here, and
        // most calls stop at the first or second.
        self.nanos
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(self.nanos.len())
    }
}

/// One series' count and duration: per bucket (not cumulative; summed when encoded) and the
/// sum in nanoseconds. The count is the sum of the buckets, so the counter and the histogram
/// of a call series always agree.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Empty, for `bounds`.
    pub(crate) fn new(bounds: &Bounds) -> Self {
        Histogram {
            buckets: (0..=bounds.nanos.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one call of `nanos`.
    #[inline]
    pub(crate) fn observe(&self, bounds: &Bounds, nanos: u64) {
        let bucket = bounds.bucket(nanos);
        if let Some(count) = self.buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The calls counted so far.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// A reading to encode: the sum in `bounds`' unit, the count, and the cumulative buckets.
    pub(crate) fn read(&self, bounds: &Bounds) -> Reading {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(bounds.le.len() + 1);
        for (i, count) in self.buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = bounds.le.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((le, cumulative));
        }
        Reading {
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / bounds.per_unit,
            count: cumulative,
            buckets,
        }
    }
}

/// A histogram as encoded.
#[derive(Debug, Default)]
pub(crate) struct Reading {
    pub(crate) sum: f64,
    pub(crate) count: u64,
    pub(crate) buckets: Vec<(f64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_prometheus_le() {
        let bounds = Bounds::new(&[0.005, 0.01, 1.0], 1e9);
        let histogram = Histogram::new(&bounds);
        for nanos in [0, 5_000_000, 5_000_001, 10_000_000, 2_000_000_000] {
            histogram.observe(&bounds, nanos);
        }
        let reading = histogram.read(&bounds);
        assert_eq!(reading.count, 5);
        assert_eq!(
            reading.buckets,
            vec![(0.005, 2), (0.01, 4), (1.0, 4), (f64::INFINITY, 5)]
        );
        assert!((reading.sum - 2.020000001).abs() < 1e-9, "{}", reading.sum);
    }

    #[test]
    fn bad_bounds_are_dropped_and_sorted() {
        let bounds = Bounds::new(&[1.0, f64::NAN, -1.0, 0.5, 1.0], 1e9);
        assert_eq!(&*bounds.le, &[0.5, 1.0]);
    }
}
