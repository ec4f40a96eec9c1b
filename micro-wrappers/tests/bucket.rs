//! Conformance tables of `shared/spec/ratelimit.md` (juju/ratelimit), property tests against a
//! slow reference model, and a concurrency bound, all on the manual clock.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use micro_wrappers::clock::{Clock, ManualClock};
use micro_wrappers::ratelimit::{Bucket, BucketError};
use proptest::prelude::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn bucket(fill: Duration, capacity: i64, quantum: i64) -> (Bucket<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    let b = Bucket::with_clock(fill, capacity, quantum, clock.clone()).expect("valid bucket");
    (b, clock)
}

/// (name, fill interval ms, capacity, [(t ms, count, expected wait ms)])
type TakeCase = (&'static str, u64, i64, &'static [(u64, i64, u64)]);

const TAKE_CASES: &[TakeCase] = &[
    (
        "serial",
        250,
        10,
        &[(0, 0, 0), (0, 10, 0), (0, 1, 250), (250, 1, 250)],
    ),
    (
        "concurrent",
        250,
        10,
        &[(0, 10, 0), (0, 2, 500), (0, 2, 1000), (0, 1, 1250)],
    ),
    ("more than capacity", 1, 10, &[(0, 10, 0), (20, 15, 5)]),
    (
        "sub-quantum time",
        10,
        10,
        &[(0, 10, 0), (7, 1, 3), (8, 1, 12)],
    ),
    (
        "within capacity",
        10,
        5,
        &[(0, 5, 0), (60, 5, 0), (60, 1, 10), (80, 2, 10)],
    ),
];

#[test]
fn take_conformance() {
    for (name, fill, cap, reqs) in TAKE_CASES {
        let (b, clock) = bucket(ms(*fill), *cap, 1);
        for (i, (t, count, want)) in reqs.iter().enumerate() {
            clock.set(ms(*t));
            assert_eq!(b.take(*count), ms(*want), "{name} request {i}");
        }
    }
}

#[test]
fn take_max_duration_conformance() {
    for (name, fill, cap, reqs) in TAKE_CASES {
        let (b, clock) = bucket(ms(*fill), *cap, 1);
        for (i, (t, count, want)) in reqs.iter().enumerate() {
            clock.set(ms(*t));
            if *want > 0 {
                let before = b.available();
                for short in [ms(*want) - ms(1), ms(*want) - Duration::from_nanos(1)] {
                    assert_eq!(
                        b.take_max_duration(*count, short),
                        None,
                        "{name} request {i} with max_wait {short:?}"
                    );
                    assert_eq!(
                        b.available(),
                        before,
                        "{name} request {i}: refused take changed the bucket"
                    );
                }
            }
            assert_eq!(
                b.take_max_duration(*count, ms(*want)),
                Some(ms(*want)),
                "{name} request {i}"
            );
        }
    }
}

#[test]
fn take_available_conformance() {
    type Case = (&'static str, u64, i64, &'static [(u64, i64, i64)]);
    const CASES: &[Case] = &[
        (
            "serial",
            250,
            10,
            &[(0, 0, 0), (0, 10, 10), (0, 1, 0), (250, 1, 1)],
        ),
        (
            "concurrent",
            250,
            10,
            &[(0, 5, 5), (0, 2, 2), (0, 5, 3), (0, 1, 0)],
        ),
        ("more than capacity", 1, 10, &[(0, 10, 10), (20, 15, 10)]),
        (
            "within capacity",
            10,
            5,
            &[(0, 5, 5), (60, 5, 5), (70, 1, 1)],
        ),
    ];
    for (name, fill, cap, reqs) in CASES {
        let (b, clock) = bucket(ms(*fill), *cap, 1);
        for (i, (t, count, want)) in reqs.iter().enumerate() {
            clock.set(ms(*t));
            assert_eq!(b.take_available(*count), *want, "{name} request {i}");
        }
    }
}

#[test]
fn rate_conformance() {
    let b = Bucket::new(Duration::from_nanos(1), 1).unwrap();
    assert_eq!(b.rate(), 1e9);
    let b = Bucket::new(Duration::from_secs(2), 1).unwrap();
    assert_eq!(b.rate(), 0.5);
    let b = Bucket::new_with_quantum(ms(100), 1, 5).unwrap();
    assert_eq!(b.rate(), 50.0);
}

#[test]
fn available_conformance() {
    // (capacity, fill interval, take, then sleep -> after take, after sleep)
    let cases: &[(i64, Duration, i64, Duration, i64, i64)] = &[
        (5, ms(1000), 5, ms(1000), 0, 1),
        (2, ms(1000), 1, ms(1000), 1, 2),
        (2, ms(2000), 1, ms(1000), 1, 1),
        (2, ms(2000), 1, ms(3000), 1, 2),
    ];
    for (i, (cap, fill, take, sleep, after_take, after_sleep)) in cases.iter().enumerate() {
        let (b, clock) = bucket(*fill, *cap, 1);
        assert_eq!(b.take_available(*take), *take, "case {i}");
        assert_eq!(b.available(), *after_take, "case {i} after take");
        clock.advance(*sleep);
        assert_eq!(b.available(), *after_sleep, "case {i} after sleep");
    }
}

#[test]
fn no_bonus_tokens_after_full() {
    let (b, clock) = bucket(ms(1000), 100, 20);
    assert_eq!(b.available(), 100);
    clock.advance(ms(5000));
    assert_eq!(b.available(), 100);
    assert_eq!(b.take_available(100), 100);
    assert_eq!(b.available(), 0);
    clock.advance(ms(1000));
    assert_eq!(b.available(), 20);
}

#[test]
fn available_goes_negative_with_debt() {
    let (b, clock) = bucket(ms(10), 5, 1);
    assert_eq!(b.take(8), ms(30));
    assert_eq!(b.available(), -3);
    clock.advance(ms(30));
    assert_eq!(b.available(), 0);
    assert_eq!(b.take_available(1), 0);
}

fn check_rate(rate: f64) {
    let b = Bucket::with_rate_and_clock(rate, 1 << 62, ManualClock::new())
        .unwrap_or_else(|e| panic!("rate {rate}: {e}"));
    assert!(
        ((b.rate() - rate) / rate).abs() <= 0.01,
        "rate {rate}: got {}",
        b.rate()
    );
    assert_eq!(
        b.take_max_duration(1 << 62, Duration::MAX),
        Some(Duration::ZERO)
    );
    // A not-quite multiple of the quantum: the wait shows the actual rate.
    let q = b.quantum();
    let d = b.take(q * 2 - q / 2);
    #[allow(clippy::cast_precision_loss)]
    let expect = 1e9 * q as f64 * 2.0 / rate;
    #[allow(clippy::cast_precision_loss)]
    let got = d.as_nanos() as f64;
    assert!(
        ((got - expect) / expect).abs() <= 0.01,
        "rate {rate}: wait {got} ns, want {expect}"
    );
}

#[test]
fn new_with_rate_within_one_percent() {
    let mut rate = 1.0;
    while rate < 1e6 {
        check_rate(rate);
        rate += 7.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let max = i64::MAX as f64;
    for rate in [
        1024.0 * 1024.0 * 1024.0,
        1e-5,
        0.9e-5,
        0.5,
        0.9,
        0.9e8,
        3e12,
        4e18,
        max,
    ] {
        check_rate(rate);
        check_rate(rate / 3.0);
        check_rate(rate * 1.3);
    }
}

#[test]
fn invalid_arguments_are_errors() {
    let c = ManualClock::new;
    assert_eq!(
        Bucket::with_clock(Duration::ZERO, 1, 1, c()).err(),
        Some(BucketError::InvalidFillInterval)
    );
    assert_eq!(
        Bucket::with_clock(Duration::MAX, 1, 1, c()).err(),
        Some(BucketError::InvalidFillInterval)
    );
    assert_eq!(
        Bucket::with_clock(ms(1), 0, 1, c()).err(),
        Some(BucketError::InvalidCapacity)
    );
    assert_eq!(
        Bucket::with_clock(ms(1), -5, 1, c()).err(),
        Some(BucketError::InvalidCapacity)
    );
    assert_eq!(
        Bucket::with_clock(ms(1), 1, 0, c()).err(),
        Some(BucketError::InvalidQuantum)
    );
    assert_eq!(
        Bucket::with_clock(ms(1), 1, -1, c()).err(),
        Some(BucketError::InvalidQuantum)
    );
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(
            Bucket::with_rate_and_clock(rate, 1, c()).err(),
            Some(BucketError::InvalidRate),
            "rate {rate}"
        );
    }
    assert_eq!(
        Bucket::with_rate_and_clock(1.0, 0, c()).err(),
        Some(BucketError::InvalidCapacity)
    );
    // Far too slow for any quantum below 2^50 with an i64 fill interval.
    assert!(matches!(
        Bucket::with_rate_and_clock(1e-300, 1, c()).err(),
        Some(BucketError::NoSuitableQuantum(_))
    ));
    assert_eq!(
        BucketError::InvalidCapacity.to_string(),
        "token bucket capacity is not > 0"
    );
}

#[test]
fn extreme_values_do_not_panic() {
    let (b, clock) = bucket(Duration::from_nanos(1), i64::MAX, i64::MAX);
    assert_eq!(b.take(i64::MAX), Duration::ZERO);
    assert!(b.take(i64::MAX) > Duration::ZERO);
    clock.advance(Duration::from_secs(1 << 40));
    let _ = b.take(i64::MAX);
    let _ = b.take_available(i64::MAX);
    let _ = b.available();
    clock.set(Duration::MAX);
    let _ = b.take(i64::MAX);
    let _ = b.take_max_duration(i64::MAX, Duration::ZERO);
    let _ = b.available();
    let (b, clock) = bucket(Duration::from_secs(1 << 30), 1, 1);
    assert_eq!(b.take(1), Duration::ZERO);
    assert_eq!(
        b.take(i64::MAX),
        Duration::MAX,
        "a debt beyond Duration is refused"
    );
    assert_eq!(b.take(1), Duration::from_secs(1 << 30));
    clock.set(Duration::MAX);
    let _ = b.take(i64::MAX);
    assert!(b.take_max_duration(-3, Duration::ZERO) == Some(Duration::ZERO));
    assert_eq!(b.take_available(-3), 0);
}

#[tokio::test(start_paused = true)]
async fn wait_sleeps_for_the_debt_on_tokio_time() {
    let (b, _clock) = bucket(ms(250), 10, 1);
    let start = tokio::time::Instant::now();
    b.wait(10).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    b.wait(2).await;
    assert_eq!(start.elapsed(), ms(500));
    assert!(!b.wait_max_duration(1, ms(749)).await);
    assert_eq!(start.elapsed(), ms(500));
    assert!(b.wait_max_duration(1, ms(750)).await);
    assert_eq!(start.elapsed(), ms(1250));
    assert_eq!(b.available(), -3);
}

// === reference model ===

/// juju/ratelimit's algorithm, transcribed plainly with i64 fields.
#[derive(Debug)]
struct Reference {
    fill: i64,
    capacity: i64,
    quantum: i64,
    available: i64,
    latest_tick: i64,
}

impl Reference {
    fn new(fill: i64, capacity: i64, quantum: i64) -> Self {
        Self {
            fill,
            capacity,
            quantum,
            available: capacity,
            latest_tick: 0,
        }
    }

    fn adjust(&mut self, tick: i64) {
        let last = self.latest_tick;
        self.latest_tick = tick;
        if self.available >= self.capacity {
            return;
        }
        self.available += (tick - last) * self.quantum;
        if self.available > self.capacity {
            self.available = self.capacity;
        }
    }

    fn take(&mut self, now: i64, count: i64, max_wait: i64) -> Option<i64> {
        if count <= 0 {
            return Some(0);
        }
        let tick = now / self.fill;
        self.adjust(tick);
        let avail = self.available - count;
        if avail >= 0 {
            self.available = avail;
            return Some(0);
        }
        let end_tick = tick + (-avail + self.quantum - 1) / self.quantum;
        let wait = end_tick * self.fill - now;
        if wait > max_wait {
            return None;
        }
        self.available = avail;
        Some(wait)
    }

    fn take_available(&mut self, now: i64, count: i64) -> i64 {
        if count <= 0 {
            return 0;
        }
        self.adjust(now / self.fill);
        if self.available <= 0 {
            return 0;
        }
        let count = count.min(self.available);
        self.available -= count;
        count
    }

    fn available(&mut self, now: i64) -> i64 {
        self.adjust(now / self.fill);
        self.available
    }
}

#[derive(Debug, Clone)]
enum Op {
    Take { count: i64, max_wait: Option<u64> },
    TakeAvailable { count: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (-2i64..60, proptest::option::of(0u64..5_000))
            .prop_map(|(count, max_wait)| Op::Take { count, max_wait }),
        (-2i64..60).prop_map(|count| Op::TakeAvailable { count }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every result and `available()` match the reference model, and the tokens whose wait is
    /// over never exceed capacity + elapsed ticks * quantum.
    #[test]
    fn matches_reference_and_never_exceeds_the_bound(
        fill in 1i64..200,
        capacity in 1i64..50,
        quantum in 1i64..8,
        steps in proptest::collection::vec((0u64..400, op()), 1..80),
    ) {
        let (b, clock) = bucket(Duration::from_nanos(fill.unsigned_abs()), capacity, quantum);
        let mut reference = Reference::new(fill, capacity, quantum);
        let mut granted: Vec<(i64, i64)> = Vec::new(); // (ready at ns, tokens)
        let mut now: i64 = 0;
        for (advance, op) in steps {
            now += i64::try_from(advance).unwrap();
            clock.set(Duration::from_nanos(now.unsigned_abs()));
            match op {
                Op::Take { count, max_wait } => {
                    let max = max_wait.map_or(Duration::MAX, Duration::from_nanos);
                    let got = b.take_max_duration(count, max).map(|d| i64::try_from(d.as_nanos()).unwrap());
                    let want = reference.take(now, count, max_wait.map_or(i64::MAX, |m| i64::try_from(m).unwrap()));
                    prop_assert_eq!(got, want);
                    if let (Some(wait), true) = (got, count > 0) {
                        granted.push((now + wait, count));
                    }
                }
                Op::TakeAvailable { count } => {
                    let got = b.take_available(count);
                    prop_assert_eq!(got, reference.take_available(now, count));
                    granted.push((now, got));
                }
            }
            prop_assert_eq!(b.available(), reference.available(now));
            let ready: i64 = granted.iter().filter(|(at, _)| *at <= now).map(|(_, n)| n).sum();
            prop_assert!(ready <= capacity + (now / fill) * quantum);
        }
    }
}

// === concurrency ===

#[test]
fn threads_at_a_fixed_time_take_exactly_the_capacity() {
    let (b, _clock) = bucket(ms(10), 10_000, 1);
    let taken = AtomicI64::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (b, taken) = (&b, &taken);
            s.spawn(move || {
                loop {
                    let n = if t % 2 == 0 {
                        b.take_available(3)
                    } else if b.take_max_duration(1, Duration::ZERO).is_some() {
                        1
                    } else {
                        0
                    };
                    if n == 0 {
                        break;
                    }
                    taken.fetch_add(n, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(taken.load(Ordering::Relaxed), 10_000);
    assert_eq!(b.available(), 0);
}

#[test]
fn threads_never_take_more_than_capacity_plus_elapsed_ticks() {
    let fill = Duration::from_micros(1);
    let (capacity, quantum) = (100, 3);
    let (b, clock) = bucket(fill, capacity, quantum);
    let taken = AtomicI64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..4_i64 {
            let (b, taken, stop) = (&b, &taken, &stop);
            s.spawn(move || {
                // At least one round each: the first takes (8 tokens in all) always succeed.
                loop {
                    let n = if t % 2 == 0 {
                        b.take_available(1 + t)
                    } else {
                        b.take_max_duration(2, Duration::ZERO).map_or(0, |_| 2)
                    };
                    taken.fetch_add(n, Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            });
        }
        for _ in 0..20_000 {
            clock.advance(Duration::from_nanos(250));
            std::hint::spin_loop();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let ticks = i64::try_from(clock.now().as_nanos() / fill.as_nanos()).unwrap();
    let taken = taken.load(Ordering::Relaxed);
    assert!(
        taken <= capacity + ticks * quantum,
        "took {taken} > {capacity} + {ticks} * {quantum}"
    );
    assert!(taken >= 8);
}

#[test]
fn refusals_are_reported_to_the_observer() {
    use micro_wrappers::ratelimit::BucketEvent;
    let events = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let e = events.clone();
    let clock = ManualClock::new();
    let b = Bucket::with_clock(ms(10), 5, 1, clock.clone())
        .unwrap()
        .on_event(move |ev| e.lock().push(ev));
    assert_eq!(b.take_available(3), 3);
    assert_eq!(b.take_available(3), 2);
    assert_eq!(b.take_available(1), 0);
    assert_eq!(b.take_max_duration(1, ms(9)), None);
    assert_eq!(b.take_max_duration(1, ms(10)), Some(ms(10)));
    assert_eq!(
        *events.lock(),
        vec![
            BucketEvent::Short {
                requested: 3,
                taken: 2
            },
            BucketEvent::Short {
                requested: 1,
                taken: 0
            },
            BucketEvent::Refused { requested: 1 },
        ]
    );
}
