//! The rate-limit layer on a bare tonic server over real TCP, and its arithmetic on a manual
//! clock.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use micro_core::Error;
use micro_test_support::{Backend, concurrently, greeter_at};
use micro_wrappers::clock::ManualClock;
use micro_wrappers::ratelimit::{Key, LimitEvent, Mode, RateLimitLayer};
use proto::greeter::Request;
use proto::greeter::greeter_client::GreeterClient;
use proto::greeter::greeter_server::GreeterServer;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

/// A tonic server behind `layer`, on a free loopback port.
async fn serve(layer: RateLimitLayer, backend: Backend) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(GreeterServer::new(backend))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_mode_admits_exactly_the_burst() {
    let backend = Backend::default();
    // One token an hour: nothing refills during the test.
    let layer = RateLimitLayer::with_quantum(Duration::from_secs(3600), 5, 1).unwrap();
    let addr = serve(layer, backend.clone()).await;
    let client = greeter_at(addr).await;
    let calls = (0..20).map(|i| {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .test(Request {
                    name: format!("{i}"),
                })
                .await
        })
    });
    let mut admitted = 0;
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let error = Error::parse(status.message());
                assert_eq!(
                    (error.id.as_str(), error.code, error.detail.as_str()),
                    ("go.micro.server", 429, "too many request")
                );
                refused += 1;
            }
        }
    }
    assert_eq!((admitted, refused), (5, 15));
    assert_eq!(backend.calls(), 5);
}

#[tokio::test]
async fn refill_is_k_fill_intervals_times_the_quantum() {
    let clock = ManualClock::new();
    let layer = RateLimitLayer::with_quantum(Duration::from_millis(100), 50, 3)
        .unwrap()
        .clock(clock.clone());
    let mut service = tower::Layer::layer(
        &layer,
        tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, Status>(http::Response::new(()))
        }),
    );
    let mut take = async || {
        service
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
    };
    for _ in 0..50 {
        take().await.unwrap();
    }
    assert!(take().await.is_err());
    assert_eq!(layer.available(), Some(0));
    for k in [1i64, 2, 5] {
        clock.advance(Duration::from_millis(100) * u32::try_from(k).unwrap());
        assert_eq!(layer.available(), Some(k * 3));
        for _ in 0..k * 3 {
            take().await.unwrap();
        }
        assert!(take().await.is_err(), "k = {k}: no more than k x quantum");
    }
    // Never more than the capacity.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(layer.available(), Some(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_spreads_calls_at_the_rate_and_refuses_short_deadlines() {
    let backend = Backend::default();
    // 20 per second, capacity 2: 10 calls need (10 - 2) / 20 = 400 ms, less up to one tick
    // (50 ms): as juju's, the bucket fills on a grid of ticks from its start, so the first
    // token after the two in the bucket comes at the next tick, not a whole tick after the
    // first call.
    let layer = RateLimitLayer::new(20.0, 2).unwrap().mode(Mode::Wait);
    let addr = serve(layer, backend.clone()).await;
    let client = greeter_at(addr).await;
    let started = std::time::Instant::now();
    let calls = concurrently(10, 10, |i| {
        let mut client = client.clone();
        async move {
            client
                .test(Request {
                    name: format!("{i}"),
                })
                .await
        }
    });
    for call in calls.await {
        call.unwrap();
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(350), "took {took:?}");

    // Empty the bucket, then ask with a deadline shorter than the wait: 429 at once, no 408.
    let layer = RateLimitLayer::with_quantum(Duration::from_secs(10), 1, 1)
        .unwrap()
        .mode(Mode::Wait);
    let addr = serve(layer, Backend::default()).await;
    let mut client = client_with_timeout(addr).await;
    // (the client's own timeout is longer than the grpc-timeout it sends, so a 408 would
    // come from the server's deadline, a Cancelled from this side)
    client
        .test(Request {
            name: "first".into(),
        })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut request = tonic::Request::new(Request {
        name: "second".into(),
    });
    request.set_timeout(Duration::from_secs(2)); // grpc-timeout: 2 s; the token is 10 s away
    let status = client.test(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(Error::parse(status.message()).code, 429);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not after the deadline"
    );
}

async fn client_with_timeout(
    addr: std::net::SocketAddr,
) -> GreeterClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    GreeterClient::new(channel)
}

#[tokio::test]
async fn keyed_buckets_stay_within_the_bound() {
    let name = http::HeaderName::from_static("x-api-key");
    let refused = Arc::new(AtomicUsize::new(0));
    let seen = refused.clone();
    let layer = RateLimitLayer::with_quantum(Duration::from_secs(3600), 1, 1)
        .unwrap()
        .key(Key::Metadata(name.clone()))
        .max_keys(1000)
        .on_event(move |_, event| {
            if event == LimitEvent::Refused {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        });
    let mut service = tower::Layer::layer(
        &layer,
        tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, Status>(http::Response::new(()))
        }),
    );
    for i in 0..100_000 {
        let mut request = http::Request::new(());
        request
            .headers_mut()
            .insert(&name, format!("key-{i}").parse().unwrap());
        let _ = service.ready().await.unwrap().call(request).await;
    }
    assert_eq!(layer.buckets(), 1000);
    // The first 1000 keys had their own token; the 99 000 others shared one overflow token.
    assert_eq!(refused.load(Ordering::SeqCst), 100_000 - 1000 - 1);
    // A known key keeps its (empty) bucket: no fresh token.
    let mut request = http::Request::new(());
    request
        .headers_mut()
        .insert(&name, "key-7".parse().unwrap());
    assert!(service.ready().await.unwrap().call(request).await.is_err());
}
