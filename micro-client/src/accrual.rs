//! Failure accrual per node: a node whose attempts fail at the transport is ejected (its
//! stack counts as not ready, so no selector picks it) for a while, then one probe call is let
//! through and its success restores the node, as linkerd's failure accrual and Envoy's outlier
//! detection.
//!
//! Only transport failures count ([`transport_failure`]): a connection refused, closed or
//! that could not be made ejects at once; an attempt that ran out of time (the call's
//! deadline or the per-attempt timeout) or a connection that broke mid-call counts, and
//! [`Ejection::consecutive_failures`] attempts in a row without an answer eject. "In a row" is
//! read two ways, and either ejects:
//!
//! - in the order the failures came: that many failed with no answer between them;
//! - in the order the attempts were sent: an attempt timed out, and it and every attempt sent
//!   to the node after it (at least that many in all) are still unanswered. A node cut off
//!   from the network shows this at its first timeout, when every caller's call is already
//!   waiting on it; counting in the order the timeouts arrive would let the first callers
//!   whose calls timed out send another call to the node before the third timeout. A healthy
//!   node whose one call is slow answered the calls sent after it, so that call's timeout
//!   counts once; and if those answers come only after the timeout ejected the node (a
//!   deadline shorter than the node's usual latency), the first of them restores it.
//!
//! A handler's or a wrapper's status is an answer, not a transport failure, and so is a TLS
//! certificate error (a configuration fault that ejecting would only hide). Any attempt that
//! got an answer clears the count.
//!
//! The healthy path reads one atomic flag ([`Accrual::is_clear`]) and numbers its attempts
//! (one atomic add when sent, one atomic max when answered); the state machine behind it runs
//! under a mutex, only once a failure was counted. Time is a parameter (`now`) so the tests
//! drive it by hand, as the load estimate's.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use micro_core::{Origin, Outcome};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::nodes::NodeStack;

/// Failure accrual settings ([`Options::ejection`](crate::Options::ejection)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ejection {
    /// Attempts in a row that eject a node (default 3): that many timed out or broke with
    /// no answer between them, or one timed out and that many, it included, were sent to the
    /// node with none of those sent after it answered. A refused connection ejects at once. 0
    /// is taken as 1.
    pub consecutive_failures: u32,
    /// The first ejection's length (default 1 s); each repeat doubles it.
    pub base: Duration,
    /// The longest ejection, before jitter (default 30 s).
    pub max: Duration,
    /// Each ejection is its length times a random factor in `1 +- jitter` (default 0.2), so
    /// that nodes ejected together are not probed together.
    pub jitter: f64,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            consecutive_failures: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

impl Ejection {
    /// The length of ejection number `level` (0 = the first) before jitter: `base * 2^level`,
    /// at most `max`.
    pub fn period(&self, level: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << level.min(31))
            .min(self.max)
    }

    /// [`Ejection::period`] with the jitter applied for a `draw` in `[-1, 1]`.
    fn jittered(&self, level: u32, draw: f64) -> Duration {
        let factor = 1.0 + self.jitter.clamp(0.0, 1.0) * draw.clamp(-1.0, 1.0);
        self.period(level).mul_f64(factor)
    }
}

/// A node's health as ejections see it (told to
/// [`Builder::on_ejection`](crate::Builder::on_ejection) observers with the service's name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EjectionEvent {
    /// A healthy node was ejected.
    Ejected,
    /// An ejected node's probe failed: ejected again, for longer.
    Extended,
    /// An ejected node is back: its probe (or a call sent to it because no other node was
    /// ready) got an answer, or it left the registry while ejected.
    Restored,
}

/// Told of each [`EjectionEvent`], with the node's service (the hook for metrics).
pub type EjectionObserver = micro_core::Observer<EjectionEvent>;

/// A transport failure of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection, or it was gone before the request left: ejects at once.
    Connection,
    /// Out of time (the call's deadline or the attempt timeout): counted, ejects after
    /// several in a row, as they came or as the attempts were sent.
    Timeout,
    /// Broken mid-call, or a stream refused: counted, ejects after several in a row as they
    /// came (such failures come fast, so attempts sent after had no time to answer).
    Counted,
}

/// How an attempt was let through, as the state machine reads it, with the attempt's number
/// (in the order attempts were sent to the node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// A node not ejected.
    Normal(u64),
    /// The probe with this id (its number).
    Probe(u64),
    /// An ejected node, no other being ready.
    Fallback(u64),
}

impl Via {
    /// The attempt's number.
    pub(crate) fn seq(self) -> u64 {
        match self {
            Via::Normal(seq) | Via::Probe(seq) | Via::Fallback(seq) => seq,
        }
    }
}

/// Whether the selector may pick a node now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Not ejected.
    Yes,
    /// Ejected and its time is up: this attempt is its probe (id for [`Accrual::release`],
    /// also the attempt's number).
    Probe(u64),
    /// Ejected.
    No,
}

/// What a recorded outcome changed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Change {
    /// Ejected for this long.
    Ejected(Duration),
    /// The probe failed: ejected again, for this long.
    Extended(Duration),
    /// Back in rotation.
    Restored,
}

/// One node's failure accrual. Shared by every call to the node.
#[derive(Debug, Default)]
pub(crate) struct Accrual {
    /// Set while a failure is counted or the node is ejected: the healthy path reads only
    /// this.
    troubled: AtomicBool,
    /// Attempts sent (the next attempt's number); a probe's id is its number, so that a late
    /// release does not end a newer probe.
    sent: AtomicU64,
    /// One more than the highest number of an attempt that got an answer (0: none yet).
    answered: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: State,
    /// Attempts in a row that failed at the transport, or are unanswered after a timeout,
    /// while healthy.
    failures: u32,
    /// One past the last attempt counted in `failures` (each attempt is counted once).
    counted_to: u64,
    /// Ejections in a row (the next one lasts `base * 2^level`).
    level: u32,
    /// When the node was last restored.
    restored_at: Option<Instant>,
    /// The number of the attempt whose failure ejected the node (or whose probe failed): an
    /// answer to an attempt sent after it shows the node alive.
    ejected_by: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Healthy,
    Ejected {
        until: Instant,
    },
    Probing {
        id: u64,
    },
}

impl Accrual {
    /// Whether no failure is counted and the node is not ejected: the healthy path.
    #[inline]
    pub(crate) fn is_clear(&self) -> bool {
        !self.troubled.load(Ordering::Relaxed)
    }

    /// Whether the node is ejected now (a probe in flight counts as ejected).
    pub(crate) fn is_ejected(&self) -> bool {
        !self.is_clear() && self.inner.lock().state != State::Healthy
    }

    /// Whether the selector may pick the node at `now`; the first call after an ejection
    /// ends takes the probe.
    pub(crate) fn admit(&self, now: Instant) -> Admit {
        if self.is_clear() {
            return Admit::Yes;
        }
        let mut inner = self.inner.lock();
        match inner.state {
            State::Healthy => Admit::Yes,
            State::Ejected { until } if now >= until => {
                let id = self.next_seq();
                inner.state = State::Probing { id };
                Admit::Probe(id)
            }
            State::Ejected { .. } | State::Probing { .. } => Admit::No,
        }
    }

    /// The number of an attempt about to be sent (they fit `Pass`'s 62 bits).
    #[inline]
    pub(crate) fn next_seq(&self) -> u64 {
        self.sent.fetch_add(1, Ordering::Relaxed) & Pass::SEQ
    }

    /// The attempt numbered `seq` got an answer (whatever its status): the node is alive
    /// for every attempt sent before it.
    #[inline]
    pub(crate) fn answer(&self, seq: u64) {
        self.answered.fetch_max(seq + 1, Ordering::Relaxed);
    }

    /// The attempts sent after `seq` (one past the last one's number), if none of them got
    /// an answer.
    fn unanswered_after(&self, seq: u64) -> Option<u64> {
        (self.answered.load(Ordering::Relaxed) <= seq)
            .then(|| self.sent.load(Ordering::Relaxed) & Pass::SEQ)
    }

    /// Whether the node is ejected and its time is up: the next call may probe it.
    pub(crate) fn probe_due(&self, now: Instant) -> bool {
        !self.is_clear()
            && matches!(self.inner.lock().state, State::Ejected { until } if now >= until)
    }

    /// A probe ended without a transport verdict (the caller gave up, a wrapper refused it):
    /// the next call may probe.
    pub(crate) fn release(&self, probe: u64, now: Instant) {
        let mut inner = self.inner.lock();
        if inner.state == (State::Probing { id: probe }) {
            inner.state = State::Ejected { until: now };
        }
    }

    /// An attempt let through `via` got an answer (whatever its status); [`Accrual::answer`]
    /// was told first.
    pub(crate) fn succeeded(&self, via: Via, now: Instant) -> Option<Change> {
        if self.is_clear() {
            return None;
        }
        let mut inner = self.inner.lock();
        match (inner.state, via) {
            (State::Healthy, _) => {
                inner.failures = 0;
                self.troubled.store(false, Ordering::Relaxed);
                None
            }
            // A call let through while ejected restores, and so does one sent after the
            // attempt whose failure ejected (an attempt that timed out sooner than the
            // node answers calls sent after it: the node is slow for that call, not gone).
            // A late answer to a call sent before says nothing of the node now.
            (_, Via::Probe(_) | Via::Fallback(_)) => Some(restore(&mut inner, &self.troubled, now)),
            (_, Via::Normal(seq)) if seq > inner.ejected_by => {
                inner.level = inner.level.saturating_sub(1);
                Some(restore(&mut inner, &self.troubled, now))
            }
            (_, Via::Normal(_)) => None,
        }
    }

    /// An attempt let through `via` failed at the transport. `may_eject` says whether another
    /// node of the service is still in rotation (asked only when this failure would eject);
    /// `draw` in `[-1, 1]` is the jitter's.
    pub(crate) fn failed(
        &self,
        failure: Failure,
        via: Via,
        settings: &Ejection,
        now: Instant,
        draw: f64,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Change> {
        let seq = via.seq();
        let mut inner = self.inner.lock();
        match (inner.state, via) {
            (State::Healthy, _) => {
                self.troubled.store(true, Ordering::Relaxed);
                // In a row as the failures came, and for a timeout, the attempts sent after it
                // that are all unanswered too; each attempt counted once.
                if seq >= inner.counted_to {
                    inner.failures = inner.failures.saturating_add(1);
                    inner.counted_to = seq + 1;
                }
                if failure == Failure::Timeout
                    && let Some(sent) = self.unanswered_after(seq)
                    && sent > inner.counted_to
                {
                    let more = u32::try_from(sent - inner.counted_to).unwrap_or(u32::MAX);
                    inner.failures = inner.failures.saturating_add(more);
                    inner.counted_to = sent;
                }
                let ejects = failure == Failure::Connection
                    || inner.failures >= settings.consecutive_failures.max(1);
                if !ejects {
                    return None;
                }
                // Asked without the lock: it reads the other nodes' states.
                drop(inner);
                let allowed = may_eject();
                let mut inner = self.inner.lock();
                if !allowed || inner.state != State::Healthy {
                    return None;
                }
                // A node that stayed in rotation for a whole `max` starts again from `base`.
                if inner
                    .restored_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= settings.max)
                {
                    inner.level = 0;
                }
                Some(Change::Ejected(eject(&mut inner, seq, settings, now, draw)))
            }
            (State::Probing { id }, Via::Probe(probe)) if probe == id => Some(Change::Extended(
                eject(&mut inner, seq, settings, now, draw),
            )),
            // Already ejected: late failures of calls sent before add nothing.
            _ => None,
        }
    }

    /// Leaves the ejected state for good (the node left the registry): whether it was
    /// ejected.
    pub(crate) fn forget(&self) -> bool {
        if self.is_clear() {
            return false;
        }
        let mut inner = self.inner.lock();
        let was = inner.state != State::Healthy;
        *inner = Inner::default();
        self.troubled.store(false, Ordering::Relaxed);
        was
    }
}

/// Ejects for the current level's period, jittered, and raises the level; `by` is the
/// number of the attempt whose failure ejects.
fn eject(inner: &mut Inner, by: u64, settings: &Ejection, now: Instant, draw: f64) -> Duration {
    let period = settings.jittered(inner.level, draw);
    inner.state = State::Ejected {
        until: now + period,
    };
    inner.ejected_by = by;
    inner.failures = 0;
    inner.level = inner.level.saturating_add(1).min(31);
    period
}

/// Back in rotation.
fn restore(inner: &mut Inner, troubled: &AtomicBool, now: Instant) -> Change {
    inner.state = State::Healthy;
    inner.failures = 0;
    inner.restored_at = Some(now);
    troubled.store(false, Ordering::Relaxed);
    Change::Restored
}

/// A node picked for an attempt, how ejection let it through and the attempt's number.
/// Dropped without a verdict (the caller gave up, a wrapper refused the call), a probe is
/// released so that the next call may probe. As small as two words: it lives in every call's
/// future.
pub(crate) struct Pass {
    stack: Arc<NodeStack>,
    /// How ([`Pass::NORMAL`], [`Pass::FALLBACK`] or [`Pass::PROBE`]) in the top two bits,
    /// the attempt's number (a probe's id) in the others.
    tag: u64,
}

impl Pass {
    /// The bits of the attempt's number.
    pub(crate) const SEQ: u64 = (1 << 62) - 1;
    const NORMAL: u64 = 0;
    const FALLBACK: u64 = 1 << 62;
    const PROBE: u64 = 2 << 62;

    /// A node not ejected.
    pub(crate) fn normal(stack: Arc<NodeStack>) -> Self {
        Pass {
            stack,
            tag: Self::NORMAL,
        }
    }

    /// The probe `id` of an ejected node.
    pub(crate) fn probe(stack: Arc<NodeStack>, id: u64) -> Self {
        Pass {
            stack,
            tag: Self::PROBE | (id & Self::SEQ),
        }
    }

    /// An ejected node, no other being ready.
    pub(crate) fn fallback(stack: Arc<NodeStack>) -> Self {
        Pass {
            stack,
            tag: Self::FALLBACK,
        }
    }

    /// Numbers the attempt as it is sent (a probe has its number already).
    #[inline]
    pub(crate) fn sending(&mut self) {
        if self.tag & !Self::SEQ != Self::PROBE {
            self.tag = (self.tag & !Self::SEQ) | self.stack.accrual.next_seq();
        }
    }

    /// How the attempt was let through.
    #[inline]
    pub(crate) fn via(&self) -> Via {
        match self.tag & !Self::SEQ {
            Self::NORMAL => Via::Normal(self.seq()),
            Self::FALLBACK => Via::Fallback(self.seq()),
            _ => Via::Probe(self.seq()),
        }
    }

    /// The attempt's number, in the order attempts were sent to the node (0 until
    /// [`Pass::sending`]).
    #[inline]
    pub(crate) fn seq(&self) -> u64 {
        self.tag & Self::SEQ
    }
}

impl std::ops::Deref for Pass {
    type Target = NodeStack;

    #[inline]
    fn deref(&self) -> &NodeStack {
        &self.stack
    }
}

impl std::fmt::Debug for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pass")
            .field("node", &self.stack.info.id)
            .field("via", &self.via())
            .finish()
    }
}

impl Drop for Pass {
    #[inline]
    fn drop(&mut self) {
        if let Via::Probe(id) = self.via() {
            self.stack.accrual.release(id, Instant::now());
        }
    }
}

/// The transport failure an attempt's error shows, if any: what ejects a node. `outcome` is
/// the shared classifier's reading of `err`.
pub(crate) fn transport_failure(
    err: &(dyn std::error::Error + 'static),
    outcome: &Outcome,
) -> Option<Failure> {
    let chain = || std::iter::successors(Some(err), |e| e.source());
    // tonic's channel timer: the attempt ran out of the call's time.
    if chain().any(|e| e.is::<tonic::TimeoutExpired>()) {
        return Some(Failure::Timeout);
    }
    // A certificate the client refuses is configuration, not a node's health.
    if chain().any(|e| e.to_string().contains("certificate")) {
        return None;
    }
    if chain().any(|e| e.is::<tonic::ConnectError>()) {
        return Some(Failure::Connection);
    }
    match outcome.origin {
        // A refused stream is a busy server, not a gone connection.
        Origin::NotSent
            if chain().any(|e| {
                e.downcast_ref::<h2::Error>()
                    .is_some_and(|h2| h2.reason() == Some(h2::Reason::REFUSED_STREAM))
            }) =>
        {
            Some(Failure::Counted)
        }
        Origin::NotSent => Some(Failure::Connection),
        Origin::Broken => Some(Failure::Counted),
        // A status: an answer from a server or a wrapper's own refusal.
        Origin::Answered | Origin::Local | Origin::Cancelled => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn settings() -> Ejection {
        Ejection {
            jitter: 0.0,
            ..Ejection::default()
        }
    }

    const NORMAL: Via = Via::Normal(0);

    /// `via` for the attempt `seq` (a probe keeps its id).
    fn numbered(via: Via, seq: u64) -> Via {
        match via {
            Via::Normal(_) => Via::Normal(seq),
            Via::Fallback(_) => Via::Fallback(seq),
            Via::Probe(id) => Via::Probe(id),
        }
    }

    /// An attempt sent to the node: its number.
    fn send(a: &Accrual) -> u64 {
        a.next_seq()
    }

    /// The attempt `seq` let through `via` failed at `now` (another node in rotation).
    fn fail(a: &Accrual, failure: Failure, via: Via, seq: u64, now: Instant) -> Option<Change> {
        a.failed(failure, numbered(via, seq), &settings(), now, 0.0, || true)
    }

    /// The attempt `seq` let through `via` got an answer at `now`.
    fn answer(a: &Accrual, via: Via, seq: u64, now: Instant) -> Option<Change> {
        a.answer(seq);
        a.succeeded(numbered(via, seq), now)
    }

    /// The probe let through at `now`, and its number.
    fn probe(a: &Accrual, now: Instant) -> (Via, u64) {
        match a.admit(now) {
            Admit::Probe(id) => (Via::Probe(id), id),
            other => panic!("no probe at {now:?}: {other:?}"),
        }
    }

    #[test]
    fn a_refused_connection_ejects_at_once_and_timeouts_after_three_in_a_row() {
        let t0 = Instant::now();
        let refused = Accrual::default();
        let n = send(&refused);
        assert_eq!(
            fail(&refused, Failure::Connection, NORMAL, n, t0),
            Some(Change::Ejected(ms(1000)))
        );
        assert_eq!(refused.admit(t0 + ms(999)), Admit::No);

        // One caller, one call at a time: each timeout is the last attempt sent.
        let slow = Accrual::default();
        assert!(slow.is_clear());
        for _ in 0..2 {
            let n = send(&slow);
            assert_eq!(fail(&slow, Failure::Timeout, NORMAL, n, t0), None);
        }
        assert!(!slow.is_clear() && !slow.is_ejected());
        // An answer in between starts the count again.
        let n = send(&slow);
        assert_eq!(answer(&slow, NORMAL, n, t0), None);
        assert!(slow.is_clear());
        for _ in 0..2 {
            let n = send(&slow);
            fail(&slow, Failure::Timeout, NORMAL, n, t0);
        }
        let n = send(&slow);
        assert_eq!(
            fail(&slow, Failure::Timeout, NORMAL, n, t0),
            Some(Change::Ejected(ms(1000)))
        );
        assert!(slow.is_ejected());
    }

    #[test]
    fn a_timeout_whose_later_attempts_are_all_unanswered_counts_them_all() {
        let t0 = Instant::now();
        // A node cut off: every caller's call waits on it when the first one times out.
        let cut = Accrual::default();
        let answered = send(&cut);
        answer(&cut, NORMAL, answered, t0);
        let waiting: Vec<u64> = (0..3).map(|_| send(&cut)).collect();
        assert_eq!(
            fail(&cut, Failure::Timeout, NORMAL, waiting[0], t0 + ms(2000)),
            Some(Change::Ejected(ms(1000)))
        );
        // Their timeouts, later, add nothing.
        for n in &waiting[1..] {
            assert_eq!(
                fail(&cut, Failure::Timeout, NORMAL, *n, t0 + ms(2010)),
                None
            );
        }

        // Two waiting are not three, and the second's timeout is not counted twice.
        let two = Accrual::default();
        let (first, second) = (send(&two), send(&two));
        assert_eq!(fail(&two, Failure::Timeout, NORMAL, first, t0), None);
        assert_eq!(fail(&two, Failure::Timeout, NORMAL, second, t0), None);
        assert!(!two.is_ejected());
        // The third in a row ejects.
        let third = send(&two);
        assert_eq!(
            fail(&two, Failure::Timeout, NORMAL, third, t0),
            Some(Change::Ejected(ms(1000)))
        );

        // A broken connection or a refused stream comes fast, before later attempts could
        // answer: counted once.
        let broken = Accrual::default();
        let first = send(&broken);
        for _ in 0..5 {
            send(&broken);
        }
        assert_eq!(fail(&broken, Failure::Counted, NORMAL, first, t0), None);
        assert!(!broken.is_ejected());
    }

    #[test]
    fn one_slow_call_on_a_node_that_answers_the_calls_sent_after_it_counts_once() {
        let t0 = Instant::now();
        let a = Accrual::default();
        let slow = send(&a);
        let later: Vec<u64> = (0..5).map(|_| send(&a)).collect();
        // One sent after the slow call answered before it timed out.
        answer(&a, NORMAL, later[0], t0 + ms(100));
        assert_eq!(
            fail(&a, Failure::Timeout, NORMAL, slow, t0 + ms(2000)),
            None
        );
        assert!(!a.is_clear() && !a.is_ejected());
        // An answer sent before the slow call does not vouch for the calls after it.
        let b = Accrual::default();
        let before = send(&b);
        let slow = send(&b);
        let (x, y) = (send(&b), send(&b));
        answer(&b, NORMAL, before, t0 + ms(1900));
        assert_eq!(
            fail(&b, Failure::Timeout, NORMAL, slow, t0 + ms(2000)),
            Some(Change::Ejected(ms(1000)))
        );
        // The node is slow for that call's deadline (the calls sent after it answer late):
        // the first of them to answer restores the node, and the period is not doubled.
        assert_eq!(answer(&b, NORMAL, before, t0 + ms(2050)), None);
        assert_eq!(answer(&b, NORMAL, x, t0 + ms(2100)), Some(Change::Restored));
        assert!(b.is_clear());
        assert_eq!(answer(&b, NORMAL, y, t0 + ms(2100)), None);
        let n = send(&b);
        assert_eq!(
            fail(&b, Failure::Connection, NORMAL, n, t0 + ms(2200)),
            Some(Change::Ejected(ms(1000)))
        );
    }

    #[test]
    fn one_probe_after_the_period_its_success_restores_its_failure_doubles_the_period() {
        let t0 = Instant::now();
        let a = Accrual::default();
        let before = send(&a);
        let n = send(&a);
        fail(&a, Failure::Connection, NORMAL, n, t0);
        assert_eq!(a.admit(t0 + ms(500)), Admit::No);
        assert!(!a.probe_due(t0 + ms(999)) && a.probe_due(t0 + ms(1000)));
        let (first, id) = probe(&a, t0 + ms(1000));
        // Only one probe at a time.
        assert_eq!(a.admit(t0 + ms(1001)), Admit::No);
        // A late failure of a call sent before the ejection changes nothing.
        assert_eq!(
            fail(&a, Failure::Timeout, NORMAL, before, t0 + ms(1002)),
            None
        );
        // The probe fails: 2 s, then 4 s, ..., at most 30 s.
        assert_eq!(
            fail(&a, Failure::Timeout, first, id, t0 + ms(1100)),
            Some(Change::Extended(ms(2000)))
        );
        assert_eq!(a.admit(t0 + ms(3099)), Admit::No);
        let mut now = t0 + ms(3100);
        for want in [4, 8, 16, 30, 30] {
            let (p, id) = probe(&a, now);
            assert_eq!(
                fail(&a, Failure::Connection, p, id, now),
                Some(Change::Extended(Duration::from_secs(want)))
            );
            now += Duration::from_secs(want);
        }
        // A late answer to an old call does not restore; the probe's answer does.
        assert_eq!(answer(&a, NORMAL, before, now), None);
        let (p, id) = probe(&a, now);
        assert_eq!(answer(&a, p, id, now), Some(Change::Restored));
        assert!(a.is_clear());
        assert_eq!(a.admit(now), Admit::Yes);
        // Failing again soon: the period keeps growing from where it was.
        let n = send(&a);
        assert_eq!(
            fail(&a, Failure::Connection, NORMAL, n, now + ms(10)),
            Some(Change::Ejected(Duration::from_secs(30)))
        );
        // After a whole `max` in rotation, it starts again from `base`.
        let later = now + ms(10) + Duration::from_secs(31);
        let (p, id) = probe(&a, later);
        answer(&a, p, id, later);
        let n = send(&a);
        assert_eq!(
            fail(
                &a,
                Failure::Connection,
                NORMAL,
                n,
                later + Duration::from_secs(30)
            ),
            Some(Change::Ejected(ms(1000)))
        );
    }

    #[test]
    fn a_probe_that_ends_without_a_verdict_lets_the_next_call_probe() {
        let t0 = Instant::now();
        let a = Accrual::default();
        let n = send(&a);
        fail(&a, Failure::Connection, NORMAL, n, t0);
        let (_, slot) = probe(&a, t0 + ms(1000));
        assert_eq!(a.admit(t0 + ms(1500)), Admit::No);
        // Dropped (cancelled, or a wrapper refused it): released.
        a.release(slot, t0 + ms(1600));
        let (second, id) = probe(&a, t0 + ms(1600));
        // The first probe's late release does not end the second.
        a.release(slot, t0 + ms(1700));
        assert_eq!(a.admit(t0 + ms(1700)), Admit::No);
        assert_eq!(
            answer(&a, second, id, t0 + ms(1800)),
            Some(Change::Restored)
        );
    }

    #[test]
    fn the_last_node_in_rotation_is_not_ejected_and_a_fallback_answer_restores() {
        let t0 = Instant::now();
        let s = settings();
        let a = Accrual::default();
        let n = send(&a);
        assert_eq!(
            a.failed(Failure::Connection, Via::Normal(n), &s, t0, 0.0, || false),
            None
        );
        assert_eq!(a.admit(t0), Admit::Yes);
        let b = Accrual::default();
        let n = send(&b);
        fail(&b, Failure::Connection, NORMAL, n, t0);
        // Sent to it anyway because no other node was ready, and answered: restored.
        let n = send(&b);
        assert_eq!(
            answer(&b, Via::Fallback(0), n, t0 + ms(10)),
            Some(Change::Restored)
        );
        assert!(!b.forget());
        let n = send(&b);
        fail(&b, Failure::Connection, NORMAL, n, t0);
        assert!(b.forget());
        assert!(b.is_clear());
    }

    #[test]
    fn the_jitter_stays_within_its_share() {
        let s = Ejection::default();
        assert_eq!(s.jittered(0, -1.0), ms(800));
        assert_eq!(s.jittered(0, 1.0), ms(1200));
        assert_eq!(s.jittered(10, 0.0), Duration::from_secs(30));
        assert_eq!(s.jittered(40, 1.0), Duration::from_secs(36));
        assert_eq!(s.jittered(0, 7.0), ms(1200));
    }

    #[test]
    fn only_transport_failures_count() {
        let status = |s: tonic::Status, origin| {
            let outcome = Outcome::from_status(&s, origin);
            transport_failure(&s, &outcome)
        };
        assert_eq!(
            status(tonic::Status::unavailable("handler says no"), Origin::Local),
            None
        );
        assert_eq!(
            status(tonic::Status::unavailable("draining"), Origin::Answered),
            None
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let outcome = Outcome::from_error(&io);
        assert_eq!(transport_failure(&io, &outcome), Some(Failure::Counted));
        let cert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        let outcome = Outcome::from_error(&cert);
        assert_eq!(transport_failure(&cert, &outcome), None);
    }
}
