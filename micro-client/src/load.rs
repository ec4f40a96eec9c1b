//! A node's load: peak-EWMA of its latency, times its pending requests plus one.
//!
//! The arithmetic is tower 0.5's `load::PeakEwma` (and go-zero's p2c balancer): the estimate
//! jumps to any latency above it (the peak), moves towards a lower latency by how long it has
//! been since the last update (`1 - e^(-elapsed / decay)`), and decays towards zero while the
//! node is idle, so a node that was slow once is tried again after a while. The cost is the
//! estimate times `pending + 1`, so a node with calls piling up costs more at once, before
//! any of them ends.
//!
//! A [`Load`] is a cheap handle shared by every task calling the node. Reading the cost takes
//! no lock (p2c reads two per pick): the estimate and its date are atomics, and a read decays
//! the stored estimate to `now` without writing it back (decays compound: `e^-a * e^-b` is
//! `e^-(a+b)`, so not writing changes nothing). Only a call's end writes, under a mutex that
//! orders the writers. The clock is a parameter (`now`) so tests drive it by hand.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::time::Instant;

/// The latency assumed for a node with no call yet (linkerd2-proxy's default).
pub(crate) const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast the estimate forgets: after `decay`, a past latency weighs `1/e` (tower's and
/// go-zero's usual 10 s).
pub(crate) const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// The latency recorded at least for a call that failed or timed out, so that a node that
/// fails fast (connection refused in 1 ms) does not look like the fastest node.
pub(crate) const DEFAULT_FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// The load estimate of one node, shared by all tasks (clone it: clones share the estimate).
#[derive(Clone, Debug)]
pub struct Load {
    shared: Arc<Shared>,
    failure_penalty: Duration,
}

#[derive(Debug)]
struct Shared {
    /// The instant the dates are counted from.
    origin: Instant,
    decay_ns: f64,
    pending: AtomicU32,
    /// The latency estimate in nanoseconds, an `f64`'s bits.
    rtt_bits: AtomicU64,
    /// When the estimate was last updated, in nanoseconds since `origin`.
    update_at_ns: AtomicU64,
    /// Held while a call's end updates the two values above.
    writer: Mutex<()>,
}

/// One call in flight on a node: counts as pending until it is finished or dropped.
#[derive(Debug)]
#[must_use = "a call counts as pending until it is finished or dropped"]
pub(crate) struct InFlight {
    load: Load,
    sent_at: Instant,
}

impl Load {
    /// A node assumed to answer in `default_rtt` until measured, forgetting with `decay`
    /// (a zero decay is taken as 1 ns: every update replaces the estimate), with
    /// [`DEFAULT_FAILURE_PENALTY`].
    pub fn new(default_rtt: Duration, decay: Duration) -> Self {
        Self::new_at(default_rtt, decay, Instant::now())
    }

    /// As [`Load::new`], with the estimate dated `now`.
    pub(crate) fn new_at(default_rtt: Duration, decay: Duration, now: Instant) -> Self {
        Load {
            shared: Arc::new(Shared {
                origin: now,
                decay_ns: nanos(decay).max(1.0),
                pending: AtomicU32::new(0),
                rtt_bits: AtomicU64::new(nanos(default_rtt).to_bits()),
                update_at_ns: AtomicU64::new(0),
                writer: Mutex::new(()),
            }),
            failure_penalty: DEFAULT_FAILURE_PENALTY,
        }
    }

    /// The same load with this failure penalty: the latency recorded at least for a failed
    /// or timed-out call (calls started from this handle and its later clones).
    #[cfg(test)]
    pub(crate) fn with_failure_penalty(mut self, penalty: Duration) -> Self {
        self.failure_penalty = penalty;
        self
    }

    /// The cost of sending one more call at `now`: the latency estimate (in nanoseconds),
    /// decayed to `now`, times `pending + 1`. Lower is better. Takes no lock.
    pub fn cost(&self, now: Instant) -> f64 {
        let pending = self.pending();
        self.shared.estimate_at(now) * f64::from(pending.saturating_add(1))
    }

    /// The calls started and not yet finished or dropped.
    pub(crate) fn pending(&self) -> u32 {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// A call starts at `now`: pending until the returned [`InFlight`] is finished or dropped.
    pub(crate) fn start(&self, now: Instant) -> InFlight {
        self.shared.pending.fetch_add(1, Ordering::Relaxed);
        InFlight {
            load: self.clone(),
            sent_at: now,
        }
    }
}

impl Shared {
    /// `now` in nanoseconds since `origin` (0 for an earlier `now`).
    fn date(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The stored estimate, decayed to `now`.
    fn estimate_at(&self, now: Instant) -> f64 {
        let rtt = f64::from_bits(self.rtt_bits.load(Ordering::Acquire));
        let at = self.update_at_ns.load(Ordering::Acquire);
        rtt * self.decay(self.date(now).saturating_sub(at))
    }

    /// The weight left to a past estimate after `elapsed_ns`.
    fn decay(&self, elapsed_ns: u64) -> f64 {
        #[allow(clippy::cast_precision_loss)] // nanoseconds: f64 holds 104 days exactly
        (-(elapsed_ns as f64) / self.decay_ns).exp()
    }

    /// Tower's peak-EWMA update with an observed `rtt_ns` at `now`: a latency above the
    /// estimate (decayed to `now`) becomes the estimate at once, a lower one is weighed in by
    /// recency. A `now` older than the last update (a task that read the clock earlier) does
    /// not move the estimate's date back.
    fn update(&self, rtt_ns: f64, now: Instant) {
        let _writer = self.writer.lock();
        let old = f64::from_bits(self.rtt_bits.load(Ordering::Acquire));
        let at = self.update_at_ns.load(Ordering::Acquire);
        let date = self.date(now);
        let decay = self.decay(date.saturating_sub(at));
        let decayed = old * decay;
        let new = if decayed < rtt_ns {
            rtt_ns
        } else {
            decayed + rtt_ns * (1.0 - decay)
        };
        self.rtt_bits.store(new.to_bits(), Ordering::Release);
        self.update_at_ns.store(at.max(date), Ordering::Release);
    }
}

impl InFlight {
    /// The call ended at `now`: its latency is recorded; a `failed` call (timed out, or the
    /// node failed it: not an application's error answer) records at least the failure
    /// penalty, so that it counts as slow.
    pub(crate) fn finish(self, now: Instant, failed: bool) {
        let shared = &self.load.shared;
        let mut rtt = now.saturating_duration_since(self.sent_at);
        if failed {
            rtt = rtt.max(self.load.failure_penalty);
        }
        shared.update(nanos(rtt), now);
        // Dropping `self` releases the pending count.
    }
}

impl Drop for InFlight {
    /// Finished or cancelled: no longer pending. A cancelled call records no latency.
    fn drop(&mut self) {
        self.load.shared.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A duration in nanoseconds, as f64 (tower's conversion).
fn nanos(d: Duration) -> f64 {
    d.as_secs() as f64 * 1e9 + f64::from(d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn default_rtt_decays_as_tower_does() {
        let t0 = Instant::now();
        let load = Load::new_at(ms(10), Duration::from_secs(1), t0);
        assert_eq!(load.cost(t0), 10.0 * MS);
        let after_100ms = load.cost(t0 + ms(100));
        assert!(
            9.0 * MS < after_100ms && after_100ms < 10.0 * MS,
            "{after_100ms}"
        );
        let after_200ms = load.cost(t0 + ms(200));
        assert!(
            8.0 * MS < after_200ms && after_200ms < 9.0 * MS,
            "{after_200ms}"
        );
        // e^-0.2 of the default, as tower's compound decay.
        let expected = 10.0 * MS * (-0.2f64).exp();
        assert!(
            (after_200ms - expected).abs() < 1.0,
            "{after_200ms} vs {expected}"
        );
    }

    #[test]
    fn a_slower_call_is_the_new_peak_and_a_faster_one_is_weighed_by_recency() {
        let t0 = Instant::now();
        let load = Load::new_at(ms(10), Duration::from_secs(1), t0);
        load.start(t0).finish(t0 + ms(50), false);
        assert_eq!(load.cost(t0 + ms(50)), 50.0 * MS);
        // A 10 ms call ending 500 ms later: 50 e^-0.5 + 10 (1 - e^-0.5).
        let start = t0 + ms(540);
        load.start(start).finish(start + ms(10), false);
        let decay = (-0.5f64).exp();
        let expected = 50.0 * MS * decay + 10.0 * MS * (1.0 - decay);
        let cost = load.cost(start + ms(10));
        assert!((cost - expected).abs() < 1.0, "{cost} vs {expected}");
    }

    #[test]
    fn reading_the_cost_changes_nothing_a_call_end_records() {
        let t0 = Instant::now();
        let read = Load::new_at(ms(40), Duration::from_secs(1), t0);
        let unread = Load::new_at(ms(40), Duration::from_secs(1), t0);
        for step in 1..=5 {
            read.cost(t0 + ms(step * 100));
        }
        let end = t0 + ms(600);
        // 30 ms is above the estimate decayed for 600 ms (40 e^-0.6 = 22 ms): the new peak.
        read.start(t0 + ms(570)).finish(end, false);
        unread.start(t0 + ms(570)).finish(end, false);
        assert_eq!(read.cost(end), unread.cost(end));
        assert_eq!(read.cost(end), 30.0 * MS);
    }

    #[test]
    fn pending_calls_multiply_the_cost_and_a_dropped_call_only_releases_its_count() {
        let t0 = Instant::now();
        let load = Load::new_at(ms(20), Duration::from_secs(10), t0);
        let a = load.start(t0);
        let b = load.start(t0);
        let c = load.start(t0);
        assert_eq!(load.pending(), 3);
        assert_eq!(load.cost(t0), 4.0 * 20.0 * MS);
        // Cancelled after 5 s: no latency recorded, only the pending count goes.
        drop(a);
        assert_eq!(load.pending(), 2);
        assert_eq!(load.cost(t0), 3.0 * 20.0 * MS);
        b.finish(t0, false);
        c.finish(t0, false);
        assert_eq!(load.pending(), 0);
        assert_eq!(load.cost(t0), 20.0 * MS);
    }

    #[test]
    fn a_failed_call_counts_as_slow() {
        let t0 = Instant::now();
        let load = Load::new_at(ms(10), Duration::from_secs(10), t0);
        // Refused in 1 ms: recorded as the 1 s penalty, not as the fastest call ever.
        load.start(t0).finish(t0 + ms(1), true);
        assert_eq!(load.cost(t0 + ms(1)), 1000.0 * MS);
        // A timeout longer than the penalty counts as its real length.
        let slow = Load::new_at(ms(10), Duration::from_secs(10), t0);
        slow.start(t0).finish(t0 + ms(2500), true);
        assert_eq!(slow.cost(t0 + ms(2500)), 2500.0 * MS);
        // A configured penalty.
        let light = Load::new_at(ms(10), Duration::from_secs(10), t0).with_failure_penalty(ms(200));
        light.start(t0).finish(t0 + ms(1), true);
        assert_eq!(light.cost(t0 + ms(1)), 200.0 * MS);
    }

    #[test]
    fn a_clock_read_earlier_does_not_move_the_estimate_back() {
        let t0 = Instant::now();
        let load = Load::new_at(ms(10), Duration::from_secs(1), t0 + ms(100));
        // `now` before the estimate's date: no decay, no panic.
        assert_eq!(load.cost(t0), 10.0 * MS);
        let later = load.cost(t0 + ms(200));
        let expected = 10.0 * MS * (-0.1f64).exp();
        assert!((later - expected).abs() < 1.0, "{later} vs {expected}");
    }

    #[test]
    fn clones_share_the_estimate_across_threads() {
        let load = Load::new(ms(10), Duration::from_secs(10));
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let load = load.clone();
                s.spawn(move || {
                    for _ in 0..1000 {
                        load.start(t0).finish(t0, false);
                    }
                });
            }
        });
        assert_eq!(load.pending(), 0);
    }
}
