//! The adaptive (SRE client-side throttling) rules of `shared/spec/breaker.md`, on the manual
//! clock with injected randomness.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use micro_wrappers::breaker::adaptive::{
    AdaptiveBreaker, AdaptiveConfigError, AdaptiveCounts, AdaptiveError, AdaptiveSettings,
    Throttled,
};
use micro_wrappers::breaker::{Event, Rejection};
use micro_wrappers::clock::ManualClock;
use parking_lot::Mutex;

type Breaker = AdaptiveBreaker<ManualClock>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A breaker whose random source returns the value stored in the returned cell, at first 1.0
/// (never below the drop ratio, so nothing is dropped until a test lowers it).
fn breaker(settings: AdaptiveSettings) -> (Breaker, ManualClock, Arc<AtomicU64>) {
    let clock = ManualClock::new();
    let random = Arc::new(AtomicU64::new(1.0_f64.to_bits()));
    let r = random.clone();
    let b = AdaptiveBreaker::with_clock(
        settings.random(move || f64::from_bits(r.load(Ordering::Relaxed))),
        clock.clone(),
    )
    .expect("valid settings");
    (b, clock, random)
}

fn set(random: &AtomicU64, v: f64) {
    random.store(v.to_bits(), Ordering::Relaxed);
}

fn record(b: &Breaker, accepts: u64, failures: u64) {
    for _ in 0..accepts {
        b.allow().expect("allowed").done(true);
    }
    for _ in 0..failures {
        b.allow().expect("allowed").done(false);
    }
}

#[test]
fn first_five_requests_always_pass() {
    let (b, _, random) = breaker(AdaptiveSettings::new("zero"));
    record(&b, 0, 5);
    // From now on the random source says "drop" whenever the ratio is above zero.
    set(&random, 0.0);
    assert_eq!(b.drop_ratio(), 0.0);
    assert!(b.allow().is_ok());
    b.allow().unwrap().done(false);
    // 6 requests, none accepted: (6 - 5 - 0) / 7.
    assert_eq!(b.drop_ratio(), 1.0 / 7.0);
    assert_eq!(b.allow().map(|_| ()), Err(Throttled));
    assert_eq!(Throttled.to_string(), "circuit breaker is open");
}

#[test]
fn drop_ratio_is_the_sre_formula() {
    let (b, _, random) = breaker(AdaptiveSettings::new("sre").protection(0));
    record(&b, 4, 6);
    // (10 - 1.5 * 4) / (10 + 1) = 4 / 11
    assert_eq!(
        b.counts(),
        AdaptiveCounts {
            requests: 10,
            accepts: 4
        }
    );
    assert_eq!(b.drop_ratio(), (10.0 - 1.5 * 4.0) / 11.0);
    set(&random, 0.36);
    assert_eq!(b.allow().map(|_| ()), Err(Throttled));
    set(&random, 0.37);
    assert!(b.allow().is_ok());

    // With go-zero's protection of 5: (10 - 5 - 6) / 11 < 0 -> 0.
    let (b, _, _) = breaker(AdaptiveSettings::new("go-zero"));
    record(&b, 4, 6);
    assert_eq!(b.drop_ratio(), 0.0);
    record(&b, 0, 10);
    // (20 - 5 - 6) / 21
    assert_eq!(b.drop_ratio(), 9.0 / 21.0);
}

#[test]
fn no_drop_while_requests_within_k_times_accepts() {
    let (b, _, _) = breaker(AdaptiveSettings::new("healthy").protection(0));
    record(&b, 100, 50); // 150 <= 1.5 * 100
    assert_eq!(b.drop_ratio(), 0.0);
    record(&b, 0, 1);
    assert!(b.drop_ratio() > 0.0);
}

#[test]
fn k_is_configurable() {
    let (b, _, _) = breaker(AdaptiveSettings::new("k2").k(2.0).protection(0));
    record(&b, 4, 6);
    assert_eq!(b.drop_ratio(), (10.0 - 2.0 * 4.0) / 11.0);
}

#[test]
fn window_rolls_over_40_buckets_of_250_ms() {
    let (b, clock, _) = breaker(AdaptiveSettings::new("roll").protection(0));
    record(&b, 0, 10); // bucket [0, 250 ms)
    clock.set(ms(5_000));
    record(&b, 0, 10);
    assert_eq!(b.counts().requests, 20);
    clock.set(ms(9_999));
    assert_eq!(b.counts().requests, 20);
    clock.set(ms(10_000)); // the first bucket left the window
    assert_eq!(b.counts().requests, 10);
    assert_eq!(b.drop_ratio(), 10.0 / 11.0);
    clock.set(ms(15_000));
    assert_eq!(b.counts(), AdaptiveCounts::default());
    assert_eq!(b.drop_ratio(), 0.0);
}

#[test]
fn window_is_configurable() {
    let (b, clock, _) = breaker(AdaptiveSettings::new("w").window(Duration::from_secs(1), 4));
    record(&b, 0, 3);
    clock.set(ms(750));
    record(&b, 0, 3);
    clock.set(ms(1_000));
    assert_eq!(b.counts().requests, 3);
    clock.set(ms(1_750));
    assert_eq!(b.counts().requests, 0);
}

#[test]
fn dropped_requests_are_not_counted_and_recovery_is_smooth() {
    let (b, _, random) = breaker(AdaptiveSettings::new("shed").protection(0));
    record(&b, 10, 20); // (30 - 15) / 31
    let before = b.counts();
    set(&random, 0.0);
    assert_eq!(b.allow().map(|_| ()), Err(Throttled));
    assert_eq!(b.counts(), before);
    let high = b.drop_ratio();
    set(&random, 1.0);
    record(&b, 10, 0); // (40 - 30) / 41: lower
    let lower = b.drop_ratio();
    assert!(lower < high);
    assert!(lower > 0.0);
    record(&b, 10, 0); // (50 - 45) / 51
    assert_eq!(b.drop_ratio(), 5.0 / 51.0);
    record(&b, 5, 0); // 55 - 52.5 = 2.5
    assert_eq!(b.drop_ratio(), 2.5 / 56.0);
    record(&b, 5, 0); // 60 - 60 = 0
    assert_eq!(b.drop_ratio(), 0.0);
}

#[test]
fn execute_and_events() {
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let e = events.clone();
    let (b, _, random) = breaker(AdaptiveSettings::new("ev").protection(0).on_event(
        move |name, ev| {
            assert_eq!(name, "ev");
            e.lock().push(ev);
        },
    ));
    assert_eq!(b.name(), "ev");
    assert!(matches!(
        b.execute(|| Err::<(), _>("down")),
        Err(AdaptiveError::Inner("down"))
    ));
    assert_eq!(
        b.counts(),
        AdaptiveCounts {
            requests: 1,
            accepts: 0
        }
    );
    set(&random, 0.0);
    let r = b.execute(|| Ok::<_, &str>(1));
    assert_eq!(r.unwrap_err().to_string(), "circuit breaker is open");
    assert_eq!(*events.lock(), vec![Event::Rejected(Rejection::Throttled)]);
}

#[test]
fn a_panicking_request_counts_as_a_failure_a_dropped_one_is_not_counted() {
    let (b, _, _) = breaker(AdaptiveSettings::new("p"));
    drop(b.allow().unwrap());
    assert_eq!(b.counts(), AdaptiveCounts::default());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = b.execute(|| -> Result<(), ()> { panic!("boom") });
    }));
    assert!(r.is_err());
    assert_eq!(
        b.counts(),
        AdaptiveCounts {
            requests: 1,
            accepts: 0
        }
    );
}

#[tokio::test]
async fn async_call() {
    let (b, _, _) = breaker(AdaptiveSettings::new("a"));
    assert_eq!(b.call(async { Ok::<_, ()>(3) }).await.ok(), Some(3));
    assert_eq!(
        b.counts(),
        AdaptiveCounts {
            requests: 1,
            accepts: 1
        }
    );
}

#[test]
fn invalid_settings_are_errors() {
    let c = ManualClock::new;
    for k in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(
            AdaptiveBreaker::with_clock(AdaptiveSettings::new("k").k(k), c()).err(),
            Some(AdaptiveConfigError::InvalidK)
        );
    }
    for (window, buckets) in [
        (Duration::ZERO, 40),
        (ms(1), 0),
        (Duration::from_nanos(3), 4),
    ] {
        assert_eq!(
            AdaptiveBreaker::with_clock(AdaptiveSettings::new("w").window(window, buckets), c())
                .err(),
            Some(AdaptiveConfigError::InvalidWindow)
        );
    }
}

#[test]
fn default_randomness_drops_about_the_ratio() {
    // Statistical, with a wide margin: the system random source is used by default.
    let b = AdaptiveBreaker::with_clock(
        AdaptiveSettings::new("rng").protection(0),
        ManualClock::new(),
    )
    .unwrap();
    while b.counts().requests < 100 {
        if let Ok(done) = b.allow() {
            done.done(false);
        }
    }
    let p = b.drop_ratio(); // 100 / 101
    let dropped = (0..1000).filter(|_| b.allow().is_err()).count();
    assert!(p > 0.98);
    assert!(dropped > 900, "dropped {dropped} of 1000 at p = {p}");
}
