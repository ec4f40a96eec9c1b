//! Hot paths of the resilience algorithms, with `governor` as the peer for the token bucket.
//!
//! Run with `cargo bench -p micro-wrappers --bench hot_paths`.
//! "2 threads" benchmarks run the same operation on one shared instance from two threads at
//! once and report the time per operation seen by each thread (the slower of the two).
#![allow(missing_docs)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use micro_wrappers::breaker::adaptive::{AdaptiveBreaker, AdaptiveSettings};
use micro_wrappers::breaker::hystrix::{HystrixCircuit, HystrixConfig, Outcome};
use micro_wrappers::breaker::{CircuitBreaker, Settings};
use micro_wrappers::clock::{Clock, SystemClock};
use micro_wrappers::ratelimit::Bucket;

/// Runs `op` `iters` times on each of two threads started together; the slower thread's time.
fn two_threads(iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let run = || {
            barrier.wait();
            let start = Instant::now();
            for _ in 0..iters {
                op();
            }
            start.elapsed()
        };
        let a = s.spawn(run);
        let b = s.spawn(run);
        let a = a.join().expect("bench thread");
        let b = b.join().expect("bench thread");
        a.max(b)
    })
}

fn breakers(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker");

    let cb: CircuitBreaker<()> = CircuitBreaker::new(Settings::new("bench"));
    let gobreaker_op = || {
        let done = cb.allow().expect("closed");
        done.done(black_box(true));
    };
    g.bench_function("gobreaker allow+done, 1 thread", |b| b.iter(gobreaker_op));
    g.bench_function("gobreaker allow+done, 2 threads", |b| {
        b.iter_custom(|iters| two_threads(iters, &gobreaker_op))
    });

    let with_interval: CircuitBreaker<()> =
        CircuitBreaker::new(Settings::new("bench").interval(Duration::from_secs(60)));
    g.bench_function("gobreaker allow+done (interval set), 1 thread", |b| {
        b.iter(|| {
            let done = with_interval.allow().expect("closed");
            done.done(black_box(true));
        })
    });

    let hystrix = HystrixCircuit::new("bench", HystrixConfig::default());
    let hystrix_op = || hystrix.allow().expect("closed").report(Outcome::Success);
    g.bench_function("hystrix allow+report, 1 thread", |b| b.iter(hystrix_op));
    g.bench_function("hystrix allow+report, 2 threads", |b| {
        b.iter_custom(|iters| two_threads(iters, &hystrix_op))
    });

    let adaptive = AdaptiveBreaker::new(AdaptiveSettings::new("bench")).expect("valid");
    let adaptive_op = || adaptive.allow().expect("healthy").done(black_box(true));
    g.bench_function("adaptive allow+done, 1 thread", |b| b.iter(adaptive_op));
    g.bench_function("adaptive allow+done, 2 threads", |b| {
        b.iter_custom(|iters| two_threads(iters, &adaptive_op))
    });
    g.finish();
}

fn buckets(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratelimit");

    // Never runs dry: a billion tokens per second and a huge capacity.
    let bucket = Bucket::new(Duration::from_nanos(1), i64::MAX / 4).expect("valid");
    let take_op = || {
        black_box(bucket.take_max_duration(black_box(1), Duration::ZERO));
    };
    g.bench_function("bucket take, 1 thread", |b| b.iter(take_op));
    g.bench_function("bucket take, 2 threads", |b| {
        b.iter_custom(|iters| two_threads(iters, &take_op))
    });

    let now = bucket.clock().now();
    g.bench_function("bucket take_at (no clock read), 1 thread", |b| {
        b.iter(|| black_box(bucket.take_at(black_box(now), 1, Duration::ZERO)))
    });

    let limiter =
        RateLimiter::direct(Quota::per_second(NonZeroU32::MAX).allow_burst(NonZeroU32::MAX));
    let governor_op = || {
        let _ = black_box(limiter.check());
    };
    g.bench_function("governor check, 1 thread", |b| b.iter(governor_op));
    g.bench_function("governor check, 2 threads", |b| {
        b.iter_custom(|iters| two_threads(iters, &governor_op))
    });

    let clock = SystemClock::new();
    g.bench_function("SystemClock::now", |b| b.iter(|| black_box(clock.now())));
    g.finish();
}

/// One call through `service` over a ready inner service answering at once with a
/// trailers-only `grpc-status: 0` head (the outcome is read there), polled once.
fn hop<S>(service: &mut S, info: &micro_core::CallInfo)
where
    S: tower::Service<http::Request<tonic::body::Body>>,
    S::Future: std::future::Future,
{
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let mut request = http::Request::new(tonic::body::Body::empty());
    request.extensions_mut().insert(info.clone());
    let future = std::pin::pin!(service.call(request));
    match future.poll(&mut cx) {
        Poll::Ready(response) => drop(black_box(response)),
        Poll::Pending => panic!("the inner service is always ready"),
    }
}

fn ready_inner() -> impl tower::Service<
    http::Request<tonic::body::Body>,
    Response = http::Response<tonic::body::Body>,
    Error = std::convert::Infallible,
    Future = std::future::Ready<
        Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
    >,
> + Clone {
    tower::service_fn(|_req: http::Request<tonic::body::Body>| {
        let mut response = http::Response::new(tonic::body::Body::empty());
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("0"));
        std::future::ready(Ok(response))
    })
}

fn layers(c: &mut Criterion) {
    use micro_wrappers::breaker::wrapper::BreakerLayer;
    use micro_wrappers::ratelimit::RateLimitLayer;
    use tower::Layer;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let info = micro_core::CallInfo {
        service: "greeter2".into(),
        endpoint: "Greeter.Test".into(),
        ..Default::default()
    };
    let mut g = c.benchmark_group("layers");

    let mut bare = ready_inner();
    g.bench_function("inner service alone", |b| b.iter(|| hop(&mut bare, &info)));

    let mut gobreaker = BreakerLayer::gobreaker(Settings::new("bench")).layer(ready_inner());
    g.bench_function("gobreaker layer (closed)", |b| {
        b.iter(|| hop(&mut gobreaker, &info))
    });
    let mut hystrix =
        BreakerLayer::hystrix_with_deadline(HystrixConfig::default()).layer(ready_inner());
    g.bench_function("hystrix layer (closed, call deadline)", |b| {
        b.iter(|| hop(&mut hystrix, &info))
    });
    let mut adaptive = BreakerLayer::adaptive(AdaptiveSettings::new("bench"))
        .expect("valid")
        .layer(ready_inner());
    g.bench_function("adaptive layer", |b| b.iter(|| hop(&mut adaptive, &info)));

    let mut limit = RateLimitLayer::with_quantum(Duration::from_nanos(1), i64::MAX / 4, 1)
        .expect("valid")
        .layer(ready_inner());
    g.bench_function("ratelimit layer (token available)", |b| {
        b.iter(|| hop(&mut limit, &info))
    });
    // The flags' limiters carry a health observer: not connected (metrics off), connected.
    let token = || RateLimitLayer::with_quantum(Duration::from_nanos(1), i64::MAX / 4, 1);
    let link = micro_wrappers::metrics::HealthLink::new();
    let mut unlinked = link
        .observe_limiter("bench", token().expect("valid"))
        .layer(ready_inner());
    g.bench_function("ratelimit layer + health link, metrics off", |b| {
        b.iter(|| hop(&mut unlinked, &info))
    });
    let metrics = micro_wrappers::metrics::Metrics::new(Default::default());
    let connected = micro_wrappers::metrics::HealthLink::new();
    connected.connect(metrics.health());
    let mut counted = connected
        .observe_limiter("bench", token().expect("valid"))
        .layer(ready_inner());
    g.bench_function("ratelimit layer + health link, metrics on", |b| {
        b.iter(|| hop(&mut counted, &info))
    });
    let mut direct = metrics
        .health()
        .observe_limiter("direct", token().expect("valid"))
        .layer(ready_inner());
    g.bench_function("ratelimit layer + Health::observe_limiter", |b| {
        b.iter(|| hop(&mut direct, &info))
    });
    let mut tower_limit =
        tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(3600)).layer(ready_inner());
    g.bench_function("tower::limit::RateLimit", |b| {
        b.iter(|| hop(&mut tower_limit, &info))
    });
    g.finish();
}

/// The health observers alone, as the layers call them.
fn health(c: &mut Criterion) {
    use micro_wrappers::breaker::{Event, Rejection};
    use micro_wrappers::metrics::{HealthLink, Metrics, MetricsConfig};
    use micro_wrappers::ratelimit::LimitEvent;

    let metrics = Metrics::new(MetricsConfig::default());
    let mut g = c.benchmark_group("health");
    let off = HealthLink::new().limit_observer("bench");
    g.bench_function("limit observer, link not connected", |b| {
        b.iter(|| off(black_box("Greeter.Test"), black_box(LimitEvent::Admitted)))
    });
    let link = HealthLink::new();
    link.connect(metrics.health());
    let on = link.limit_observer("bench");
    g.bench_function("limit observer, link connected", |b| {
        b.iter(|| on(black_box("Greeter.Test"), black_box(LimitEvent::Admitted)))
    });
    let direct = metrics.health().limit_observer("direct");
    g.bench_function("limit observer, Health", |b| {
        b.iter(|| direct(black_box("Greeter.Test"), black_box(LimitEvent::Admitted)))
    });
    let breaker = metrics.health().breaker_observer();
    g.bench_function("breaker observer, rejection", |b| {
        b.iter(|| {
            breaker(
                black_box("greeter2"),
                black_box(Event::Rejected(Rejection::Open)),
            )
        })
    });
    g.finish();
}

/// The metrics wrapper per call: the layer over a ready service (its handles found), the
/// counting alone on one and two threads, and prometheus-client's `Family` + `Histogram` (a
/// SipHash lookup under a lock, a mutex per observation: what the wrapper did before).
fn metrics(c: &mut Criterion) {
    use micro_core::{CallInfo, Outcome};
    use micro_wrappers::metrics::{Metrics, MetricsConfig};
    use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
    use tower::Layer;

    const PATH: &str = "/greeter.Greeter/Hello";
    /// One call of `PATH`, with `info` if given (as `hop`, with a gRPC path).
    fn call<S>(service: &mut S, info: Option<&CallInfo>)
    where
        S: tower::Service<http::Request<tonic::body::Body>>,
    {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let mut cx = Context::from_waker(Waker::noop());
        assert!(service.poll_ready(&mut cx).is_ready());
        let mut request = http::Request::new(tonic::body::Body::empty());
        *request.uri_mut() = http::Uri::from_static(PATH);
        if let Some(info) = info {
            request.extensions_mut().insert(info.clone());
        }
        let future = std::pin::pin!(service.call(request));
        match future.poll(&mut cx) {
            Poll::Ready(response) => drop(black_box(response)),
            Poll::Pending => panic!("the inner service is always ready"),
        }
    }

    let metrics = Metrics::new(MetricsConfig {
        process: false,
        ..MetricsConfig::default()
    });
    let info = CallInfo::from_path("greeter", PATH);
    let mut g = c.benchmark_group("metrics");
    let mut bare = ready_inner();
    g.bench_function("no layer (baseline)", |b| {
        b.iter(|| call(&mut bare, Some(&info)))
    });
    let mut server = metrics.server().layer(ready_inner());
    g.bench_function("metrics layer, micro call", |b| {
        b.iter(|| call(&mut server, Some(&info)))
    });
    let mut tonic = metrics.server().layer(ready_inner());
    g.bench_function("metrics layer, bare tonic call", |b| {
        b.iter(|| call(&mut tonic, None))
    });
    let handles = metrics
        .server_series()
        .find("greeter", "Greeter.Hello")
        .expect("resolved by the calls above");
    let ok = Outcome::SUCCESS;
    g.bench_function("find + record", |b| {
        b.iter(|| {
            let found = metrics
                .server_series()
                .find(black_box("greeter"), black_box("Greeter.Hello"));
            found.expect("found").record(&ok, black_box(1_234_567));
        })
    });
    g.bench_function("record, 2 threads", |b| {
        b.iter_custom(|iters| two_threads(iters, &|| handles.record(&ok, black_box(1_234_567))))
    });
    let requests = Family::<[(&str, &str); 3], Counter>::default();
    let durations = Family::<[(&str, &str); 3], Histogram>::new_with_constructor(|| {
        Histogram::new(micro_wrappers::metrics::DEFAULT_BUCKETS)
    });
    let record = || {
        let labels = [
            ("service", black_box("greeter")),
            ("endpoint", "Greeter.Hello"),
            ("status", "success"),
        ];
        requests.get_or_create(&labels).inc();
        durations
            .get_or_create(&labels)
            .observe(black_box(0.001_234_567));
    };
    g.bench_function("prometheus-client Family + Histogram", |b| b.iter(record));
    g.bench_function("prometheus-client Family + Histogram, 2 threads", |b| {
        b.iter_custom(|iters| two_threads(iters, &record))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = breakers, buckets, layers, health, metrics
}
criterion_main!(benches);
