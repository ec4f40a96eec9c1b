//! The Hystrix rules of `shared/spec/breaker.md`, on the manual clock (the async timeout on
//! tokio's paused clock).
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use micro_wrappers::breaker::hystrix::{
    HystrixCircuit, HystrixConfig, HystrixCounts, HystrixError, Outcome, Rejected,
};
use micro_wrappers::breaker::{Event, Rejection, State};
use micro_wrappers::clock::ManualClock;
use parking_lot::Mutex;

type Circuit = HystrixCircuit<ManualClock>;

const NS: Duration = Duration::from_nanos(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn circuit(config: HystrixConfig) -> (Circuit, ManualClock) {
    let clock = ManualClock::new();
    (
        HystrixCircuit::with_clock("cmd", config, clock.clone()),
        clock,
    )
}

fn pass(c: &Circuit, outcome: Outcome) {
    c.allow().expect("allowed").report(outcome);
}

fn record(c: &Circuit, successes: u64, failures: u64) {
    for _ in 0..successes {
        pass(c, Outcome::Success);
    }
    for _ in 0..failures {
        pass(c, Outcome::Failure);
    }
}

/// Opens a default circuit at the clock's current time with 20 failures.
fn open(c: &Circuit) {
    record(c, 0, 20);
    assert_eq!(c.allow().map(|_| ()), Err(Rejected::CircuitOpen));
}

#[test]
fn zero_config_means_defaults() {
    let r = HystrixConfig::default().resolved();
    assert_eq!(r.timeout, ms(1000));
    assert_eq!(r.max_concurrent_requests, 10);
    assert_eq!(r.request_volume_threshold, 20);
    assert_eq!(r.sleep_window, ms(5000));
    assert_eq!(r.error_percent_threshold, 50);
    let custom = HystrixConfig {
        timeout: ms(10),
        error_percent_threshold: 25,
        ..HystrixConfig::default()
    }
    .resolved();
    assert_eq!(custom.timeout, ms(10));
    assert_eq!(custom.error_percent_threshold, 25);
    assert_eq!(custom.max_concurrent_requests, 10);
}

#[test]
fn error_messages_are_hystrix_go_s() {
    assert_eq!(Rejected::CircuitOpen.to_string(), "circuit open");
    assert_eq!(Rejected::MaxConcurrency.to_string(), "max concurrency");
    assert_eq!(
        HystrixError::<String>::CircuitOpen.to_string(),
        "circuit open"
    );
    assert_eq!(
        HystrixError::<String>::MaxConcurrency.to_string(),
        "max concurrency"
    );
    assert_eq!(HystrixError::<String>::Timeout.to_string(), "timeout");
    assert_eq!(HystrixError::Run("boom".to_owned()).to_string(), "boom");
}

#[test]
fn volume_threshold_must_be_reached() {
    let (c, _) = circuit(HystrixConfig::default());
    record(&c, 0, 19);
    assert!(
        !c.is_open(),
        "19 requests, all failed, are below the volume threshold"
    );
    pass(&c, Outcome::Failure);
    assert_eq!(c.counts().requests(), 20);
    assert!(c.is_open());
    assert_eq!(c.state(), State::Open);
}

#[test]
fn error_percent_is_rounded() {
    // 99 / 200 = 49.5 % rounds to 50: open.
    let (c, _) = circuit(HystrixConfig::default());
    record(&c, 101, 99);
    assert_eq!(c.counts().error_percent(), 50);
    assert!(c.is_open());
    // 99 / 201 = 49.25 % rounds to 49: closed.
    let (c, _) = circuit(HystrixConfig::default());
    record(&c, 102, 99);
    assert_eq!(c.counts().error_percent(), 49);
    assert!(!c.is_open());
    // 10 / 20 = 50 %: open at exactly the threshold.
    let (c, _) = circuit(HystrixConfig::default());
    record(&c, 10, 10);
    assert!(c.is_open());
    // 9 / 20 = 45 %: closed.
    let (c, _) = circuit(HystrixConfig::default());
    record(&c, 11, 9);
    assert!(!c.is_open());
}

#[test]
fn error_percent_values() {
    let counts = |successes, failures, timeouts, rejections, short_circuits| HystrixCounts {
        successes,
        failures,
        timeouts,
        rejections,
        short_circuits,
    };
    assert_eq!(counts(0, 0, 0, 0, 0).error_percent(), 0);
    assert_eq!(counts(1, 1, 1, 1, 1).errors(), 4);
    assert_eq!(counts(1, 1, 1, 1, 1).requests(), 5);
    assert_eq!(counts(1, 1, 1, 1, 1).error_percent(), 80);
    assert_eq!(counts(2, 1, 0, 0, 0).error_percent(), 33); // 33.3
    assert_eq!(counts(1, 2, 0, 0, 0).error_percent(), 67); // 66.7
    assert_eq!(counts(7, 1, 0, 0, 0).error_percent(), 13); // 12.5 rounds up
}

#[test]
fn window_is_ten_one_second_buckets() {
    let (c, clock) = circuit(HystrixConfig::default());
    record(&c, 0, 10); // second 0
    clock.set(ms(9_500));
    record(&c, 0, 9); // second 9
    assert_eq!(c.counts().requests(), 19);
    clock.set(ms(9_999));
    pass(&c, Outcome::Failure);
    assert_eq!(c.counts().requests(), 20);
    // At 10 s the bucket of second 0 leaves the window: 10 requests remain.
    clock.set(ms(10_000));
    assert_eq!(c.counts().requests(), 10);
    assert!(!c.is_open());
    // Everything has left the window at 19 s.
    clock.set(ms(19_000));
    assert_eq!(c.counts().requests(), 0);
}

#[test]
fn opening_is_evaluated_before_the_window_rolls() {
    let (c, clock) = circuit(HystrixConfig::default());
    record(&c, 0, 10);
    clock.set(ms(9_999));
    record(&c, 0, 10);
    assert!(
        c.is_open(),
        "20 failures within the window open the circuit"
    );
    // Once open it stays open even when the failures leave the window.
    clock.set(ms(10_000));
    assert!(c.is_open());
}

#[test]
fn one_probe_per_sleep_window() {
    let (c, clock) = circuit(HystrixConfig::default());
    clock.set(ms(1_000));
    open(&c); // opened at 1 s

    clock.set(ms(6_000));
    assert_eq!(
        c.allow().map(|_| ()),
        Err(Rejected::CircuitOpen),
        "not strictly after 5 s"
    );
    clock.advance(NS);
    let probe = c.allow().expect("the probe");
    assert!(probe.is_probe());
    assert_eq!(
        c.allow().map(|_| ()),
        Err(Rejected::CircuitOpen),
        "only one probe"
    );
    clock.advance(ms(4_000));
    assert_eq!(
        c.allow().map(|_| ()),
        Err(Rejected::CircuitOpen),
        "only one probe"
    );

    // A failed probe keeps it open; the next probe comes a sleep window after this one
    // (which passed at 6 s + 1 ns).
    probe.report(Outcome::Failure);
    assert!(c.is_open());
    clock.set(ms(11_000) + NS);
    assert_eq!(c.allow().map(|_| ()), Err(Rejected::CircuitOpen));
    clock.advance(NS);
    let probe = c.allow().expect("the second probe");
    assert!(probe.is_probe());

    // A successful probe closes the circuit and empties the window.
    assert!(c.counts().requests() > 0);
    probe.report(Outcome::Success);
    assert!(!c.is_open());
    assert_eq!(c.counts(), HystrixCounts::default());
    let t = c.allow().expect("closed");
    assert!(!t.is_probe());
    t.report(Outcome::Success);
}

#[test]
fn a_timed_out_probe_keeps_it_open() {
    let (c, clock) = circuit(HystrixConfig::default());
    open(&c);
    clock.advance(ms(5_000) + NS);
    c.allow().expect("probe").report(Outcome::Timeout);
    assert!(c.is_open());
}

#[test]
fn errors_include_short_circuits_and_rejections() {
    let (c, _) = circuit(HystrixConfig {
        max_concurrent_requests: 1,
        ..HystrixConfig::default()
    });
    let held = c.allow().expect("first ticket");
    assert_eq!(c.allow().map(|_| ()), Err(Rejected::MaxConcurrency));
    held.report(Outcome::Success);
    let counts = c.counts();
    assert_eq!((counts.successes, counts.rejections), (1, 1));
    assert_eq!(counts.errors(), 1);

    let (c, _) = circuit(HystrixConfig::default());
    open(&c);
    let _ = c.allow();
    let counts = c.counts();
    assert_eq!(counts.short_circuits, 2);
    assert_eq!(counts.errors(), 22);
    assert_eq!(counts.requests(), 22);
}

#[test]
fn a_cancelled_probe_frees_the_probe_slot() {
    let (c, clock) = circuit(HystrixConfig::default());
    clock.set(ms(1_000));
    open(&c);
    clock.set(ms(6_000) + NS);
    let probe = c.allow().expect("the probe");
    assert_eq!(c.allow().map(|_| ()), Err(Rejected::CircuitOpen));
    drop(probe); // the caller cancelled: not counted, and the slot is free again
    assert_eq!(c.in_flight(), 0);
    let probe = c.allow().expect("another probe at once");
    assert!(probe.is_probe());
    probe.report(Outcome::Success);
    assert!(!c.is_open());
}

#[test]
fn max_concurrency_rejects_and_tickets_return() {
    let (c, _) = circuit(HystrixConfig {
        max_concurrent_requests: 2,
        ..HystrixConfig::default()
    });
    let a = c.allow().expect("ticket 1");
    let b = c.allow().expect("ticket 2");
    assert_eq!(c.in_flight(), 2);
    assert_eq!(
        c.allow().map(|_| ()).unwrap_err().to_string(),
        "max concurrency"
    );
    a.report(Outcome::Success);
    assert_eq!(c.in_flight(), 1);
    let d = c.allow().expect("a returned ticket is reused");
    drop(d); // cancelled: not counted
    b.report(Outcome::Failure);
    assert_eq!(c.in_flight(), 0);
    let counts = c.counts();
    assert_eq!(
        (counts.successes, counts.failures, counts.rejections),
        (1, 1, 1)
    );
}

#[test]
fn events_report_state_changes_and_rejections() {
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let e = events.clone();
    let clock = ManualClock::new();
    let c = HystrixCircuit::with_clock(
        "ev",
        HystrixConfig {
            max_concurrent_requests: 1,
            ..HystrixConfig::default()
        },
        clock.clone(),
    )
    .on_event(move |name, ev| {
        assert_eq!(name, "ev");
        e.lock().push(ev);
    });
    assert_eq!(c.name(), "ev");
    let t = c.allow().unwrap();
    let _ = c.allow();
    t.report(Outcome::Failure);
    record(&c, 0, 18);
    let _ = c.allow();
    clock.advance(ms(5_000) + NS);
    c.allow().unwrap().report(Outcome::Success);
    assert_eq!(
        *events.lock(),
        vec![
            Event::Rejected(Rejection::MaxConcurrency),
            Event::StateChange {
                from: State::Closed,
                to: State::Open
            },
            Event::Rejected(Rejection::Open),
            Event::StateChange {
                from: State::Open,
                to: State::Closed
            },
        ]
    );
}

#[test]
fn a_panicking_command_counts_as_a_failure() {
    let (c, _) = circuit(HystrixConfig::default());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _t = c.allow().unwrap();
        panic!("boom");
    }));
    assert!(r.is_err());
    assert_eq!(c.counts().failures, 1);
    assert_eq!(c.in_flight(), 0);
}

// === run: timeout, fallback, cancellation (tokio's paused clock: no real sleeping) ===

#[tokio::test(start_paused = true)]
async fn run_counts_success_and_failure() {
    let (c, _) = circuit(HystrixConfig::default());
    assert_eq!(c.run(async { Ok::<_, String>(1) }).await.ok(), Some(1));
    let e = c.run(async { Err::<(), _>("boom".to_owned()) }).await;
    assert!(matches!(e, Err(HystrixError::Run(ref m)) if m == "boom"));
    let counts = c.counts();
    assert_eq!((counts.successes, counts.failures), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn run_times_out_and_discards_the_late_outcome() {
    let (c, _) = circuit(HystrixConfig::default()); // timeout 1000 ms
    let start = tokio::time::Instant::now();
    let r = c
        .run(async {
            tokio::time::sleep(ms(1_500)).await;
            Ok::<_, String>(())
        })
        .await;
    assert_eq!(start.elapsed(), ms(1_000));
    assert_eq!(r.unwrap_err().to_string(), "timeout");
    tokio::time::sleep(ms(1_000)).await;
    let counts = c.counts();
    assert_eq!((counts.timeouts, counts.successes), (1, 0));
    assert_eq!(c.in_flight(), 0);

    // Finishing just within the timeout succeeds.
    let r = c
        .run(async {
            tokio::time::sleep(ms(999)).await;
            Ok::<_, String>(())
        })
        .await;
    assert!(r.is_ok());
}

#[tokio::test(start_paused = true)]
async fn caller_cancellation_is_not_counted() {
    let (c, _) = circuit(HystrixConfig::default());
    let slow = c.run(async {
        tokio::time::sleep(ms(500)).await;
        Ok::<_, String>(())
    });
    assert!(tokio::time::timeout(ms(100), slow).await.is_err());
    assert_eq!(c.counts(), HystrixCounts::default());
    assert_eq!(c.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn fallback_receives_the_error_and_its_result_counts() {
    let (c, _) = circuit(HystrixConfig::default());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();

    // Fallback success: the call succeeds.
    let s = seen.clone();
    let r = c
        .run_with_fallback(async { Err::<u32, _>("boom".to_owned()) }, |e| {
            s.lock().push(e.to_string());
            async { Ok(42) }
        })
        .await;
    assert_eq!(r.ok(), Some(42));

    // Fallback failure: hystrix-go's message.
    let r = c
        .run_with_fallback(async { Err::<u32, _>("boom".to_owned()) }, |_| async {
            Err("no cache".to_owned())
        })
        .await;
    assert_eq!(
        r.unwrap_err().to_string(),
        "fallback failed with 'no cache'. run error was 'boom'"
    );

    // Timeout, then fallback failure.
    let r = c
        .run_with_fallback(
            async {
                tokio::time::sleep(ms(2_000)).await;
                Ok::<u32, String>(1)
            },
            |_| async { Err("down".to_owned()) },
        )
        .await;
    assert_eq!(
        r.unwrap_err().to_string(),
        "fallback failed with 'down'. run error was 'timeout'"
    );

    // Circuit open: the fallback is called with "circuit open".
    let (c, _) = circuit(HystrixConfig::default());
    open(&c);
    let s = seen.clone();
    let r = c
        .run_with_fallback(async { Ok::<u32, String>(1) }, |e| {
            s.lock().push(e.to_string());
            async { Err("stale".to_owned()) }
        })
        .await;
    assert_eq!(
        r.unwrap_err().to_string(),
        "fallback failed with 'stale'. run error was 'circuit open'"
    );
    assert_eq!(
        *seen.lock(),
        vec!["boom".to_owned(), "circuit open".to_owned()]
    );
}

#[tokio::test(start_paused = true)]
async fn max_concurrency_through_run() {
    let (c, _) = circuit(HystrixConfig {
        max_concurrent_requests: 1,
        timeout: ms(10_000),
        ..HystrixConfig::default()
    });
    let c = Arc::new(c);
    let c2 = c.clone();
    let holder = tokio::spawn(async move {
        c2.run(async {
            tokio::time::sleep(ms(100)).await;
            Ok::<_, String>(())
        })
        .await
    });
    tokio::task::yield_now().await;
    assert_eq!(c.in_flight(), 1);
    let r = c.run(async { Ok::<_, String>(()) }).await;
    assert_eq!(r.unwrap_err().to_string(), "max concurrency");
    assert!(holder.await.unwrap().is_ok());
}

#[test]
fn exactly_one_probe_among_racing_threads() {
    let (c, clock) = circuit(HystrixConfig::default());
    open(&c);
    clock.advance(ms(5_000) + NS);
    let probes = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..1_000 {
                    if let Ok(t) = c.allow() {
                        assert!(t.is_probe());
                        probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        std::mem::forget(t);
                    }
                }
            });
        }
    });
    assert_eq!(probes.into_inner(), 1);
    assert_eq!(c.counts().short_circuits, 1 + 3_999);
}

#[test]
fn parallel_outcomes_are_counted_exactly() {
    let (c, _) = circuit(HystrixConfig {
        max_concurrent_requests: 100,
        request_volume_threshold: u64::MAX,
        ..HystrixConfig::default()
    });
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let c = &c;
            s.spawn(move || {
                for i in 0..30_000u64 {
                    let outcome = if (i + t) % 3 == 0 {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    };
                    c.allow().expect("never opens").report(outcome);
                }
            });
        }
    });
    let counts = c.counts();
    assert_eq!(counts.requests(), 120_000);
    assert_eq!(counts.failures, 40_000);
    assert_eq!(c.in_flight(), 0);
}
