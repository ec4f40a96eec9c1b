//! Buckets by key, bounded: a flood of distinct keys cannot exhaust memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use super::bucket::{Bucket, BucketError};
use crate::clock::Clock;

/// The clock the wrappers' buckets read.
pub(crate) type SharedClock = Arc<dyn Clock>;

/// How every bucket of a layer is made.
#[derive(Clone)]
pub(crate) struct Spec {
    pub(crate) fill_interval: Duration,
    pub(crate) capacity: i64,
    pub(crate) quantum: i64,
    pub(crate) clock: SharedClock,
}

impl Spec {
    pub(crate) fn bucket(&self) -> Result<Bucket<SharedClock>, BucketError> {
        Bucket::with_clock(
            self.fill_interval,
            self.capacity,
            self.quantum,
            self.clock.clone(),
        )
    }
}

type ByKey = HashMap<Box<[u8]>, Arc<Bucket<SharedClock>>, foldhash::fast::RandomState>;

/// The buckets of a keyed limiter: at most `max` keys; past that, a sweep drops the buckets
/// that are full and unused (a new bucket starts full, so dropping a full one hands nobody a
/// token it did not have), at most once per second; keys that still find no room share the
/// overflow bucket.
pub(crate) struct Keyed {
    spec: Spec,
    max: usize,
    map: RwLock<ByKey>,
    overflow: Arc<Bucket<SharedClock>>,
    /// Clock nanoseconds of the last sweep.
    swept: AtomicU64,
}

const SWEEP_EVERY: u64 = 1_000_000_000;

impl Keyed {
    pub(crate) fn new(spec: Spec, max: usize) -> Result<Self, BucketError> {
        let overflow = Arc::new(spec.bucket()?);
        Ok(Keyed {
            spec,
            max: max.max(1),
            map: RwLock::new(HashMap::default()),
            overflow,
            swept: AtomicU64::new(0),
        })
    }

    /// How many keys have their own bucket.
    pub(crate) fn len(&self) -> usize {
        self.map.read().len()
    }

    /// The bucket of `key`.
    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Arc<Bucket<SharedClock>> {
        if let Some(bucket) = self.map.read().get(key) {
            return bucket.clone();
        }
        self.insert(key)
    }

    #[cold]
    fn insert(&self, key: &[u8]) -> Arc<Bucket<SharedClock>> {
        let mut map = self.map.write();
        if let Some(bucket) = map.get(key) {
            return bucket.clone();
        }
        if map.len() >= self.max {
            let now = self.spec.clock.now_nanos();
            let last = self.swept.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= SWEEP_EVERY || last == 0 {
                self.swept.store(now.max(1), Ordering::Relaxed);
                map.retain(|_, bucket| {
                    Arc::strong_count(bucket) > 1 || bucket.available() < bucket.capacity()
                });
            }
            if map.len() >= self.max {
                return self.overflow.clone();
            }
        }
        match self.spec.bucket() {
            Ok(bucket) => {
                let bucket = Arc::new(bucket);
                map.insert(key.into(), bucket.clone());
                bucket
            }
            // The spec was validated when the layer was built.
            Err(_) => self.overflow.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn keyed(max: usize, clock: &ManualClock) -> Keyed {
        let spec = Spec {
            fill_interval: Duration::from_secs(1),
            capacity: 2,
            quantum: 1,
            clock: Arc::new(clock.clone()),
        };
        Keyed::new(spec, max).unwrap()
    }

    #[test]
    fn a_flood_of_keys_stays_within_the_bound() {
        let clock = ManualClock::new();
        let keyed = keyed(1000, &clock);
        for i in 0..100_000u32 {
            let bucket = keyed.get(format!("key-{i}").as_bytes());
            bucket.take_available(1);
            if i % 10_000 == 0 {
                clock.advance(Duration::from_millis(300));
            }
        }
        assert_eq!(keyed.len(), 1000);
    }

    #[test]
    fn only_full_buckets_are_evicted_and_overflow_is_shared() {
        let clock = ManualClock::new();
        let keyed = keyed(2, &clock);
        assert_eq!(keyed.get(b"a").take_available(2), 2);
        assert_eq!(keyed.get(b"b").take_available(2), 2);
        // Both in debt of tokens: a third key gets the overflow bucket, shared.
        let c = keyed.get(b"c");
        let d = keyed.get(b"d");
        assert!(Arc::ptr_eq(&c, &d));
        assert_eq!(keyed.len(), 2);
        // "a" is still empty: it keeps its bucket (no fresh, full one for it).
        assert_eq!(keyed.get(b"a").take_available(1), 0);
        drop((c, d));
        // Once the buckets are full again, the sweep makes room.
        clock.advance(Duration::from_secs(3));
        let e = keyed.get(b"e");
        let f = keyed.get(b"f");
        assert!(!Arc::ptr_eq(&e, &f), "own buckets after the sweep");
        assert_eq!(keyed.len(), 2);
        assert_eq!(e.available(), 2);
    }
}
