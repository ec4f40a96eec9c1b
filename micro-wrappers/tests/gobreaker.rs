//! Conformance cases of `shared/spec/breaker.md` (gobreaker), on the manual clock.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use micro_wrappers::breaker::gobreaker::{BreakerError, ExecuteError};
use micro_wrappers::breaker::{CircuitBreaker, Counts, Event, Rejection, Settings, State};
use micro_wrappers::clock::{Clock, ManualClock};
use parking_lot::Mutex;

#[derive(Debug, PartialEq)]
struct Fail;

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fail")
    }
}

type Cb = CircuitBreaker<Fail, ManualClock>;
type Outcome = Result<(), ExecuteError<Fail>>;

const NS: Duration = Duration::from_nanos(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn c(
    requests: u32,
    total_successes: u32,
    total_failures: u32,
    consecutive_successes: u32,
    consecutive_failures: u32,
) -> Counts {
    Counts {
        requests,
        total_successes,
        total_failures,
        consecutive_successes,
        consecutive_failures,
    }
}

/// One request through `execute`.
fn exec(cb: &Cb, success: bool) -> Outcome {
    cb.execute(|| if success { Ok(()) } else { Err(Fail) })
}

/// One request through the two-step form.
fn two_step(cb: &Cb, success: bool) -> Outcome {
    let done = cb.allow().map_err(ExecuteError::Rejected)?;
    done.done(success);
    if success {
        Ok(())
    } else {
        Err(ExecuteError::Inner(Fail))
    }
}

fn rejection(r: Outcome) -> Option<BreakerError> {
    match r {
        Err(ExecuteError::Rejected(e)) => Some(e),
        _ => None,
    }
}

fn ran_and_failed(r: Outcome) -> bool {
    matches!(r, Err(ExecuteError::Inner(Fail)))
}

type Transitions = Arc<Mutex<Vec<(String, State, State)>>>;

fn recorder() -> (
    Transitions,
    impl Fn(&str, State, State) + Send + Sync + 'static,
) {
    let log: Transitions = Arc::default();
    let l = log.clone();
    (log, move |name: &str, from, to| {
        l.lock().push((name.to_owned(), from, to))
    })
}

#[test]
fn states_and_errors_display_as_gobreaker() {
    assert_eq!(State::Closed.to_string(), "closed");
    assert_eq!(State::HalfOpen.to_string(), "half-open");
    assert_eq!(State::Open.to_string(), "open");
    assert_eq!(BreakerError::Open.to_string(), "circuit breaker is open");
    assert_eq!(
        BreakerError::TooManyRequests.to_string(),
        "too many requests"
    );
    assert_eq!(
        ExecuteError::<Fail>::Rejected(BreakerError::Open).to_string(),
        "circuit breaker is open"
    );
}

/// Case 1, with each request made by `outcome` (`execute`, or the two-step form for case 6).
fn case_1(outcome: fn(&Cb, bool) -> Outcome) {
    let clock = ManualClock::new();
    let (log, on_change) = recorder();
    let cb: Cb = CircuitBreaker::with_clock(
        Settings::new("default").on_state_change(on_change),
        clock.clone(),
    );
    assert_eq!(cb.name(), "default");
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.counts(), c(0, 0, 0, 0, 0));

    for _ in 0..5 {
        assert!(ran_and_failed(outcome(&cb, false)));
    }
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.counts(), c(5, 0, 5, 0, 5));

    assert!(outcome(&cb, true).is_ok());
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.counts(), c(6, 1, 5, 1, 0));

    assert!(ran_and_failed(outcome(&cb, false)));
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.counts(), c(7, 1, 6, 0, 1));

    // 5 more failures: 6 consecutive, more than 5 -> open, new generation.
    for _ in 0..4 {
        assert!(ran_and_failed(outcome(&cb, false)));
    }
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.counts(), c(11, 1, 10, 0, 5));
    assert!(ran_and_failed(outcome(&cb, false)));
    assert_eq!(cb.state(), State::Open);
    assert_eq!(cb.counts(), c(0, 0, 0, 0, 0));

    // Open: fail fast, counts stay zero.
    for success in [true, false, true] {
        assert_eq!(rejection(outcome(&cb, success)), Some(BreakerError::Open));
    }
    assert_eq!(cb.counts(), c(0, 0, 0, 0, 0));

    // Open to half-open after the 60 s timeout (expiry strictly before now).
    clock.advance(secs(59));
    assert_eq!(cb.state(), State::Open);
    clock.advance(secs(1));
    assert_eq!(
        cb.state(),
        State::Open,
        "at exactly 60 s the expiry is not yet before now"
    );
    clock.advance(NS);
    assert_eq!(cb.state(), State::HalfOpen);

    // Half-open to open on a failure.
    assert!(ran_and_failed(outcome(&cb, false)));
    assert_eq!(cb.state(), State::Open);
    assert_eq!(cb.counts(), c(0, 0, 0, 0, 0));

    // Open to half-open again, then closed on a success (max_requests defaults to 1).
    clock.advance(secs(60) + NS);
    assert_eq!(cb.state(), State::HalfOpen);
    assert!(outcome(&cb, true).is_ok());
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.counts(), c(0, 0, 0, 0, 0));

    let name = || "default".to_owned();
    assert_eq!(
        *log.lock(),
        vec![
            (name(), State::Closed, State::Open),
            (name(), State::Open, State::HalfOpen),
            (name(), State::HalfOpen, State::Open),
            (name(), State::Open, State::HalfOpen),
            (name(), State::HalfOpen, State::Closed),
        ]
    );
}

#[test]
fn case_1_default_breaker() {
    case_1(exec);
}

#[test]
fn case_6_two_step_form_passes_case_1() {
    case_1(two_step);
}

#[test]
fn case_2_custom_breaker() {
    let clock = ManualClock::new();
    let (log, on_change) = recorder();
    let cb: Cb = CircuitBreaker::with_clock(
        Settings::new("custom")
            .max_requests(3)
            .interval(secs(30))
            .timeout(secs(90))
            .ready_to_trip(|c| {
                let ratio = f64::from(c.total_failures) / f64::from(c.requests);
                c.requests >= 3 && ratio >= 0.6
            })
            .on_state_change(on_change),
        clock.clone(),
    );

    for _ in 0..5 {
        assert!(exec(&cb, true).is_ok());
        assert!(ran_and_failed(exec(&cb, false)));
    }
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.counts(), c(10, 5, 5, 0, 1));

    clock.advance(secs(29));
    assert!(exec(&cb, true).is_ok());
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.counts(), c(11, 6, 5, 1, 0));

    // The interval (30 s) has passed: a new generation.
    clock.advance(secs(1) + NS);
    assert!(ran_and_failed(exec(&cb, false)));
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.counts(), c(1, 0, 1, 0, 1));

    // Closed to open: 3 requests, 2/3 failed.
    assert!(exec(&cb, true).is_ok());
    assert!(ran_and_failed(exec(&cb, false)));
    assert_eq!(cb.state(), State::Open);
    assert_eq!(cb.counts(), c(0, 0, 0, 0, 0));
    assert_eq!(
        log.lock().last(),
        Some(&("custom".to_owned(), State::Closed, State::Open))
    );

    // Open to half-open after 90 s.
    clock.advance(secs(90));
    assert_eq!(cb.state(), State::Open);
    clock.advance(NS);
    assert_eq!(cb.state(), State::HalfOpen);
    assert_eq!(
        log.lock().last(),
        Some(&("custom".to_owned(), State::Open, State::HalfOpen))
    );

    assert!(exec(&cb, true).is_ok());
    assert!(exec(&cb, true).is_ok());
    assert_eq!(cb.state(), State::HalfOpen);
    assert_eq!(cb.counts(), c(2, 2, 0, 2, 0));

    // A third request in flight; a fourth is refused.
    let third = cb.allow().expect("third request passes");
    assert_eq!(cb.counts(), c(3, 2, 0, 2, 0));
    let fourth = exec(&cb, true);
    assert_eq!(rejection(fourth), Some(BreakerError::TooManyRequests));
    assert_eq!(
        cb.allow().map(|_| ()).unwrap_err().to_string(),
        "too many requests"
    );

    // Half-open to closed when the third succeeds.
    third.done(true);
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.counts(), c(0, 0, 0, 0, 0));
    assert_eq!(
        log.lock().last(),
        Some(&("custom".to_owned(), State::HalfOpen, State::Closed))
    );
    assert_eq!(log.lock().len(), 3);

    // The interval expiry is set again: counts clear 30 s later.
    assert!(ran_and_failed(exec(&cb, false)));
    assert_eq!(cb.counts(), c(1, 0, 1, 0, 1));
    clock.advance(secs(30));
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.counts(), c(1, 0, 1, 0, 1));
    clock.advance(NS);
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.counts(), c(0, 0, 0, 0, 0));
}

#[test]
fn case_3_result_of_a_finished_generation_is_ignored() {
    let clock = ManualClock::new();
    let cb: Cb = CircuitBreaker::with_clock(Settings::new("gen").interval(secs(30)), clock.clone());

    let slow = cb.allow().expect("closed");
    assert_eq!(cb.counts(), c(1, 0, 0, 0, 0));

    clock.advance(secs(30) + NS);
    assert!(exec(&cb, true).is_ok());
    assert_eq!(cb.counts(), c(1, 1, 0, 1, 0));

    slow.done(false);
    assert_eq!(cb.counts(), c(1, 1, 0, 1, 0));

    // The same across a state change: a request from the open->half-open generation.
    let clock = ManualClock::new();
    let cb: Cb = CircuitBreaker::with_clock(Settings::new("gen2"), clock.clone());
    let slow = cb.allow().expect("closed");
    for _ in 0..6 {
        assert!(ran_and_failed(exec(&cb, false)));
    }
    assert_eq!(cb.state(), State::Open);
    clock.advance(secs(60) + NS);
    assert_eq!(cb.state(), State::HalfOpen);
    slow.done(false);
    assert_eq!(cb.state(), State::HalfOpen);
    assert_eq!(cb.counts(), c(0, 0, 0, 0, 0));
}

#[test]
fn case_4_custom_is_successful_accepts_every_error() {
    let cb: Cb = CircuitBreaker::with_clock(
        Settings::new("lenient").is_successful(|_: &Fail| true),
        ManualClock::new(),
    );
    for _ in 0..5 {
        // The caller still sees the error.
        assert!(ran_and_failed(exec(&cb, false)));
    }
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.counts(), c(5, 5, 0, 5, 0));
}

#[test]
fn case_5_parallel_successes_are_counted_exactly() {
    let cb: CircuitBreaker<Fail> = CircuitBreaker::new(Settings::new("parallel"));
    std::thread::scope(|s| {
        for _ in 0..10 {
            s.spawn(|| {
                for _ in 0..10_000 {
                    assert!(cb.execute(|| Ok::<_, Fail>(())).is_ok());
                }
            });
        }
    });
    assert_eq!(cb.counts(), c(100_000, 100_000, 0, 100_000, 0));
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn a_panicking_request_counts_as_a_failure_and_panics_on() {
    let cb: Cb = CircuitBreaker::with_clock(Settings::new("panic"), ManualClock::new());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = cb.execute(|| -> Result<(), Fail> { panic!("boom") });
    }));
    assert!(r.is_err());
    assert_eq!(cb.counts(), c(1, 0, 1, 0, 1));
}

#[test]
fn a_dropped_done_counts_as_neither() {
    let cb: Cb = CircuitBreaker::with_clock(Settings::new("drop"), ManualClock::new());
    let _ = exec(&cb, false);
    drop(cb.allow().expect("closed"));
    assert_eq!(cb.counts(), c(1, 0, 1, 0, 1));
}

#[test]
fn a_cancelled_half_open_request_frees_its_slot() {
    let clock = ManualClock::new();
    let cb: Cb = CircuitBreaker::with_clock(Settings::new("slot").timeout(secs(1)), clock.clone());
    for _ in 0..6 {
        let _ = exec(&cb, false);
    }
    clock.advance(secs(1) + NS);
    let probe = cb.allow().expect("half-open lets one through");
    assert_eq!(
        cb.allow().map(|_| ()),
        Err(BreakerError::TooManyRequests),
        "the slot is taken"
    );
    drop(probe); // the caller cancelled
    assert_eq!(cb.state(), State::HalfOpen);
    assert_eq!(cb.counts(), c(0, 0, 0, 0, 0));
    let probe = cb.allow().expect("the freed slot");
    probe.done(true);
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn guards_outlive_the_breaker_handle() {
    let cb: Cb = CircuitBreaker::with_clock(Settings::new("owned"), ManualClock::new());
    let done = cb.allow().expect("closed");
    let handle = std::thread::spawn(move || done.done(true));
    handle.join().unwrap();
    assert_eq!(cb.counts(), c(1, 1, 0, 1, 0));
}

#[test]
fn defaults_zero_max_requests_is_one() {
    let clock = ManualClock::new();
    let cb: Cb = CircuitBreaker::with_clock(
        Settings::new("d").max_requests(0).timeout(secs(1)),
        clock.clone(),
    );
    for _ in 0..6 {
        let _ = exec(&cb, false);
    }
    clock.advance(secs(1) + NS);
    let probe = cb.allow().expect("half-open lets one through");
    assert_eq!(cb.allow().map(|_| ()), Err(BreakerError::TooManyRequests));
    probe.done(true);
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn events_report_state_changes_and_rejections() {
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let e = events.clone();
    let cb: Cb = CircuitBreaker::with_clock(
        Settings::new("ev").on_event(move |name, ev| {
            assert_eq!(name, "ev");
            e.lock().push(ev);
        }),
        ManualClock::new(),
    );
    for _ in 0..6 {
        let _ = exec(&cb, false);
    }
    let _ = exec(&cb, true);
    assert_eq!(
        *events.lock(),
        vec![
            Event::StateChange {
                from: State::Closed,
                to: State::Open
            },
            Event::Rejected(Rejection::Open),
        ]
    );
}

#[test]
fn on_state_change_may_call_back_into_the_breaker() {
    let cb: Arc<Mutex<Option<Arc<Cb>>>> = Arc::default();
    let seen: Arc<Mutex<Vec<State>>> = Arc::default();
    let (cb2, seen2) = (cb.clone(), seen.clone());
    let breaker = Arc::new(CircuitBreaker::with_clock(
        Settings::new("reentrant").on_state_change(move |_, _, _| {
            if let Some(b) = cb2.lock().as_ref() {
                seen2.lock().push(b.state());
            }
        }),
        ManualClock::new(),
    ));
    *cb.lock() = Some(breaker.clone());
    for _ in 0..6 {
        let _ = exec(&breaker, false);
    }
    assert_eq!(*seen.lock(), vec![State::Open]);
    *cb.lock() = None;
}

#[tokio::test]
async fn async_call_counts_outcomes() {
    let cb: Cb = CircuitBreaker::with_clock(Settings::new("async"), ManualClock::new());
    assert_eq!(cb.call(async { Ok::<_, Fail>(7) }).await.ok(), Some(7));
    assert!(matches!(
        cb.call(async { Err::<(), _>(Fail) }).await,
        Err(ExecuteError::Inner(Fail))
    ));
    assert_eq!(cb.counts(), c(2, 1, 1, 0, 1));
}

// === the lock-free fast path against a plain transcription of gobreaker ===

#[test]
fn more_successes_than_the_fast_path_delta_holds() {
    let cb: Cb = CircuitBreaker::with_clock(Settings::new("many"), ManualClock::new());
    for _ in 0..600_000 {
        assert!(exec(&cb, true).is_ok());
    }
    assert_eq!(cb.counts(), c(600_000, 600_000, 0, 600_000, 0));
    assert!(ran_and_failed(exec(&cb, false)));
    assert_eq!(cb.counts(), c(600_001, 600_000, 1, 0, 1));
}

#[test]
fn parallel_mixed_outcomes_stay_consistent() {
    let cb: CircuitBreaker<Fail> =
        CircuitBreaker::new(Settings::new("mixed").ready_to_trip(|_| false));
    std::thread::scope(|s| {
        for t in 0..4 {
            let cb = &cb;
            s.spawn(move || {
                for i in 0..20_000 {
                    let done = cb.allow().expect("never trips");
                    done.done((i + t) % 7 != 0);
                }
            });
        }
    });
    let counts = cb.counts();
    assert_eq!(counts.requests, 80_000);
    assert_eq!(counts.total_successes + counts.total_failures, 80_000);
    let failures = (0..4)
        .flat_map(|t| (0..20_000).map(move |i| (i + t) % 7 == 0))
        .filter(|f| *f)
        .count();
    assert_eq!(counts.total_failures as usize, failures);
    assert!(counts.consecutive_successes == 0 || counts.consecutive_failures == 0);
}

/// sony/gobreaker transcribed plainly (one struct, no fast path), to compare with.
struct Model {
    max_requests: u32,
    interval: Option<Duration>,
    timeout: Duration,
    state: State,
    generation: u64,
    counts: Counts,
    expiry: Option<Duration>,
}

impl Model {
    fn new(max_requests: u32, interval: Option<Duration>, timeout: Duration) -> Self {
        Self {
            max_requests,
            interval,
            timeout,
            state: State::Closed,
            generation: 0,
            counts: Counts::default(),
            expiry: interval,
        }
    }

    fn current_state(&mut self, now: Duration) -> (State, u64) {
        match (self.state, self.expiry) {
            (State::Closed, Some(e)) if e < now => self.new_generation(now),
            (State::Open, Some(e)) if e < now => self.set_state(State::HalfOpen, now),
            _ => {}
        }
        (self.state, self.generation)
    }

    fn new_generation(&mut self, now: Duration) {
        self.generation += 1;
        self.counts = Counts::default();
        self.expiry = match self.state {
            State::Closed => self.interval.map(|i| now + i),
            State::Open => Some(now + self.timeout),
            State::HalfOpen => None,
        };
    }

    fn set_state(&mut self, to: State, now: Duration) {
        if self.state != to {
            self.state = to;
            self.new_generation(now);
        }
    }

    fn allow(&mut self, now: Duration) -> Result<u64, BreakerError> {
        let (state, generation) = self.current_state(now);
        match state {
            State::Open => Err(BreakerError::Open),
            State::HalfOpen if self.counts.requests >= self.max_requests => {
                Err(BreakerError::TooManyRequests)
            }
            _ => {
                self.counts.requests += 1;
                Ok(generation)
            }
        }
    }

    fn done(&mut self, before: u64, success: bool, now: Duration) {
        let (state, generation) = self.current_state(now);
        if generation != before {
            return;
        }
        if success {
            self.counts.total_successes += 1;
            self.counts.consecutive_successes += 1;
            self.counts.consecutive_failures = 0;
            if state == State::HalfOpen && self.counts.consecutive_successes >= self.max_requests {
                self.set_state(State::Closed, now);
            }
        } else {
            self.counts.total_failures += 1;
            self.counts.consecutive_failures += 1;
            self.counts.consecutive_successes = 0;
            let trip = match state {
                State::Closed => self.counts.consecutive_failures > 2,
                _ => true,
            };
            if trip {
                self.set_state(State::Open, now);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Allow,
    Done { index: usize, success: bool },
    Advance { ms: u64 },
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        3 => Just(Op::Allow),
        4 => (any::<usize>(), proptest::bool::weighted(0.6))
            .prop_map(|(index, success)| Op::Done { index, success }),
        1 => (0u64..4_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    #[test]
    fn matches_the_plain_transcription(
        interval in proptest::option::of(1u64..6),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let interval = interval.map(secs);
        let timeout = secs(3);
        let clock = ManualClock::new();
        let mut settings = Settings::new("model")
            .max_requests(2)
            .timeout(timeout)
            .ready_to_trip(|c| c.consecutive_failures > 2);
        if let Some(i) = interval {
            settings = settings.interval(i);
        }
        let cb: Cb = CircuitBreaker::with_clock(settings, clock.clone());
        let mut model = Model::new(2, interval, timeout);
        let mut outstanding = Vec::new();
        for op in ops {
            let now = clock.now();
            match op {
                Op::Allow => {
                    let got = cb.allow();
                    let want = model.allow(now);
                    proptest::prop_assert_eq!(got.as_ref().err(), want.as_ref().err());
                    if let (Ok(done), Ok(generation)) = (got, want) {
                        outstanding.push((done, generation));
                    }
                }
                Op::Done { index, success } => {
                    if !outstanding.is_empty() {
                        let (done, generation) = outstanding.swap_remove(index % outstanding.len());
                        done.done(success);
                        model.done(generation, success, now);
                    }
                }
                Op::Advance { ms } => clock.advance(Duration::from_millis(ms)),
            }
            proptest::prop_assert_eq!(cb.counts(), model.counts);
            let now = clock.now();
            proptest::prop_assert_eq!(cb.state(), model.current_state(now).0);
            proptest::prop_assert_eq!(cb.counts(), model.counts);
        }
        for (done, generation) in outstanding {
            done.done(true);
            model.done(generation, true, clock.now());
        }
        proptest::prop_assert_eq!(cb.counts(), model.counts);
    }
}
