//! The breaker layers in a bare tonic app, over real TCP: a tonic server whose answers the
//! test chooses, and a tonic client whose channel is wrapped by the layer.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use micro_core::Error;
use micro_test_support::{Answer, Backend, Poll};
use micro_wrappers::breaker::adaptive::AdaptiveSettings;
use micro_wrappers::breaker::hystrix::HystrixConfig;
use micro_wrappers::breaker::wrapper::{BreakerLayer, Fallback, Scope};
use micro_wrappers::breaker::{Settings, State};
use micro_wrappers::clock::ManualClock;
use parking_lot::Mutex;
use proto::greeter::greeter_client::GreeterClient;
use proto::greeter::greeter_server::GreeterServer;
use proto::greeter::{Request, Response};
use tonic::{Code, Status};

async fn serve(backend: Backend) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GreeterServer::new(backend))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

type Client = GreeterClient<micro_wrappers::breaker::wrapper::Breaker<tonic::transport::Channel>>;

async fn client(addr: std::net::SocketAddr, layer: &BreakerLayer) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    GreeterClient::new(tower::Layer::layer(layer, channel))
}

async fn call(client: &mut Client) -> Result<String, Status> {
    client
        .test(Request { name: "x".into() })
        .await
        .map(|r| r.into_inner().msg)
}

type Transitions = Arc<Mutex<Vec<(String, State, State)>>>;

fn recorded(layer: BreakerLayer) -> (BreakerLayer, Transitions) {
    let seen: Transitions = Arc::default();
    let sink = seen.clone();
    let layer = layer.on_state_change(move |name, from, to| {
        sink.lock().push((name.to_owned(), from, to));
    });
    (layer, seen)
}

fn states(seen: &Transitions) -> Vec<(State, State)> {
    seen.lock().iter().map(|(_, f, t)| (*f, *t)).collect()
}

#[tokio::test]
async fn gobreaker_trips_refuses_without_the_network_then_probes_and_closes() {
    let backend = Backend::default();
    let addr = serve(backend.clone()).await;
    let clock = ManualClock::new();
    let (layer, seen) = recorded(
        BreakerLayer::gobreaker(Settings::new("bare").timeout(Duration::from_secs(60)))
            .clock(clock.clone()),
    );
    let mut client = client(addr, &layer).await;

    backend.set(Answer::Internal);
    for _ in 0..6 {
        assert_eq!(call(&mut client).await.unwrap_err().code(), Code::Internal);
    }
    assert_eq!(layer.state("", ""), Some(State::Open));
    let reached = backend.calls();
    let refused = call(&mut client).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    let error = Error::parse(refused.message());
    assert_eq!(
        (error.id.as_str(), error.code, error.detail.as_str()),
        ("go.micro.client", 502, "circuit breaker is open")
    );
    assert_eq!(
        backend.calls(),
        reached,
        "refused without reaching the server"
    );

    backend.set(Answer::Ok);
    clock.advance(Duration::from_secs(60) + Duration::from_millis(1));
    assert_eq!(call(&mut client).await.unwrap(), "hello x");
    assert_eq!(layer.state("", ""), Some(State::Closed));
    assert_eq!(
        states(&seen),
        [
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
    assert_eq!(
        seen.lock()[0].0,
        "bare",
        "named after the settings without CallInfo"
    );
}

#[tokio::test]
async fn the_fallback_answers_with_the_generated_types() {
    let backend = Backend::default();
    let addr = serve(backend.clone()).await;
    let layer = BreakerLayer::gobreaker(Settings::new("fb")).fallback(
        "Greeter.Test",
        Fallback::unary(|req: Request, err: &Error| {
            Ok(Response {
                msg: format!("fallback for {} ({} {})", req.name, err.code, err.detail),
            })
        }),
    );
    let mut client = client(addr, &layer).await;
    backend.set(Answer::Internal);
    for _ in 0..6 {
        call(&mut client).await.unwrap_err();
    }
    let reached = backend.calls();
    assert_eq!(
        call(&mut client).await.unwrap(),
        "fallback for x (502 circuit breaker is open)"
    );
    // Hello has no fallback: the 502.
    let hello = client
        .hello(Request { name: "y".into() })
        .await
        .unwrap_err();
    assert_eq!(Error::parse(hello.message()).code, 502);
    assert_eq!(backend.calls(), reached);

    // A failing fallback: Hystrix's wording.
    let failing = BreakerLayer::gobreaker(Settings::new("fb2")).fallback(
        "Greeter.Test",
        Fallback::unary(|_: Request, _: &Error| -> Result<Response, Status> {
            Err(Status::internal("no cache"))
        }),
    );
    let mut client = self::client(addr, &failing).await;
    for _ in 0..6 {
        call(&mut client).await.unwrap_err();
    }
    let err = call(&mut client).await.unwrap_err();
    assert_eq!(
        Error::parse(err.message()).detail,
        "fallback failed with 'no cache'. run error was 'circuit breaker is open'"
    );
}

#[tokio::test]
async fn the_callers_own_errors_never_trip_it() {
    let backend = Backend::default();
    let addr = serve(backend.clone()).await;
    let layer = BreakerLayer::gobreaker(Settings::new("4xx"));
    let mut client = client(addr, &layer).await;
    for mode in [Answer::NotFound, Answer::Go429] {
        backend.set(mode);
        for _ in 0..20 {
            call(&mut client).await.unwrap_err();
        }
    }
    assert_eq!(layer.state("", ""), Some(State::Closed));
    assert_eq!(backend.calls(), 40);
}

#[tokio::test]
async fn a_cancelled_call_frees_its_half_open_slot() {
    let backend = Backend::default();
    let addr = serve(backend.clone()).await;
    let clock = ManualClock::new();
    let layer = BreakerLayer::gobreaker(Settings::new("cancel")).clock(clock.clone());
    let mut client = client(addr, &layer).await;
    backend.set(Answer::Internal);
    for _ in 0..6 {
        call(&mut client).await.unwrap_err();
    }
    clock.advance(Duration::from_secs(61));
    backend.set(Answer::Hang);
    // The half-open probe hangs; the caller gives up on it.
    let probe = tokio::time::timeout(Duration::from_millis(300), call(&mut client)).await;
    assert!(probe.is_err(), "the probe hangs");
    assert_eq!(layer.state("", ""), Some(State::HalfOpen));
    backend.set(Answer::Ok);
    assert_eq!(
        call(&mut client).await.unwrap(),
        "hello x",
        "the cancelled probe's slot is free"
    );
    assert_eq!(layer.state("", ""), Some(State::Closed));
}

#[tokio::test]
async fn endpoint_scope_keeps_one_breaker_per_endpoint() {
    let backend = Backend::default();
    let addr = serve(backend.clone()).await;
    let layer = BreakerLayer::gobreaker(Settings::new("ep")).scope(Scope::Endpoint);
    let mut client = client(addr, &layer).await;
    backend.set(Answer::Internal);
    for _ in 0..6 {
        call(&mut client).await.unwrap_err();
    }
    assert_eq!(layer.state("", "Greeter.Test"), Some(State::Open));
    assert_eq!(layer.state("", "Greeter.Hello"), None);
    backend.set(Answer::Ok);
    let hello = client.hello(Request { name: "h".into() }).await.unwrap();
    assert_eq!(hello.into_inner().msg, "hello h");
}

#[tokio::test]
async fn hystrix_opens_probes_once_per_sleep_window_and_closes() {
    let backend = Backend::default();
    let addr = serve(backend.clone()).await;
    let clock = ManualClock::new();
    let (layer, seen) = recorded(
        BreakerLayer::hystrix_with_deadline(HystrixConfig::default()).clock(clock.clone()),
    );
    let mut client = client(addr, &layer).await;
    backend.set(Answer::Internal);
    for _ in 0..20 {
        call(&mut client).await.unwrap_err();
    }
    let refused = call(&mut client).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(
        Error::parse(refused.message()).detail,
        "hystrix: circuit open"
    );
    assert_eq!(layer.state("", ""), Some(State::Open));

    // One probe per sleep window: a failed one keeps it open.
    clock.advance(Duration::from_millis(5_001));
    let reached = backend.calls();
    assert_eq!(call(&mut client).await.unwrap_err().code(), Code::Internal);
    assert_eq!(backend.calls(), reached + 1, "the probe reached the server");
    let refused = call(&mut client).await.unwrap_err();
    assert_eq!(
        Error::parse(refused.message()).detail,
        "hystrix: circuit open"
    );
    backend.set(Answer::Ok);
    clock.advance(Duration::from_millis(5_001));
    assert_eq!(call(&mut client).await.unwrap(), "hello x");
    assert_eq!(layer.state("", ""), Some(State::Closed));
    assert_eq!(
        states(&seen),
        [(State::Closed, State::Open), (State::Open, State::Closed)]
    );
}

#[tokio::test]
async fn hystrix_timeout_and_max_concurrency_messages() {
    let backend = Backend::default();
    let addr = serve(backend.clone()).await;
    let layer = BreakerLayer::hystrix(HystrixConfig {
        timeout: Duration::from_millis(200),
        max_concurrent_requests: 1,
        ..HystrixConfig::default()
    });
    let mut client = client(addr, &layer).await;
    backend.set(Answer::Hang);
    let mut slow = client.clone();
    let hanging = tokio::spawn(async move { call(&mut slow).await });
    // Wait until the hanging call holds the only ticket.
    Poll::within(Duration::from_secs(10))
        .every(Duration::from_millis(5))
        .until(async || backend.calls() > 0)
        .await;
    let busy = call(&mut client).await.unwrap_err();
    let timed_out = hanging.await.unwrap().unwrap_err();
    assert_eq!(
        Error::parse(busy.message()).detail,
        "hystrix: max concurrency"
    );
    assert_eq!(Error::parse(timed_out.message()).detail, "hystrix: timeout");
    assert_eq!(Error::parse(timed_out.message()).code, 502);
}

#[tokio::test]
async fn adaptive_drops_while_failing_and_recovers() {
    let backend = Backend::default();
    let addr = serve(backend.clone()).await;
    let clock = ManualClock::new();
    let layer = BreakerLayer::adaptive(AdaptiveSettings::new("sre"))
        .unwrap()
        .clock(clock.clone());
    let mut client = client(addr, &layer).await;
    backend.set(Answer::Internal);
    let mut dropped = 0;
    for _ in 0..200 {
        let err = call(&mut client).await.unwrap_err();
        if err.code() == Code::Unavailable {
            assert_eq!(
                Error::parse(err.message()).detail,
                "circuit breaker is open"
            );
            dropped += 1;
        }
    }
    let high = layer.drop_ratio("", "").unwrap();
    assert!(high > 0.5, "drop ratio {high}");
    assert!(dropped > 50, "dropped {dropped}");
    backend.set(Answer::Ok);
    // The window (10 s) rolls past the failures; successes bring the ratio to 0.
    clock.advance(Duration::from_secs(11));
    for _ in 0..20 {
        call(&mut client).await.unwrap();
    }
    assert_eq!(layer.drop_ratio("", ""), Some(0.0));
}

/// A streaming answer is judged by how its stream ends: a 200 head with `Internal` in the
/// trailers is a failure, counted only once the body reaches them; a body dropped before its
/// end is a cancelled call.
#[tokio::test]
async fn a_stream_is_judged_by_its_end() {
    use http_body_util::BodyExt;
    use tower::{Service, ServiceExt};

    let inner = tower::service_fn(|_req: http::Request<tonic::body::Body>| async {
        let mut trailers = http::HeaderMap::new();
        Status::internal("broke mid-stream")
            .add_header(&mut trailers)
            .unwrap();
        let frames = vec![
            Ok::<_, Status>(http_body::Frame::data(bytes::Bytes::from_static(b"part"))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(tokio_stream::iter(frames));
        Ok::<_, Status>(http::Response::new(body))
    });
    let layer = BreakerLayer::gobreaker(Settings::new("stream"));
    let mut service = tower::Layer::layer(&layer, inner);
    let request = || http::Request::new(tonic::body::Body::empty());
    for _ in 0..6 {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap();
        assert_eq!(
            layer.state("", ""),
            Some(State::Closed),
            "not judged at the head"
        );
        let _ = response.into_body().collect().await;
    }
    assert_eq!(layer.state("", ""), Some(State::Open));

    let layer = BreakerLayer::gobreaker(Settings::new("dropped"));
    let mut service = tower::Layer::layer(&layer, inner);
    for _ in 0..10 {
        drop(
            service
                .ready()
                .await
                .unwrap()
                .call(request())
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        layer.state("", ""),
        Some(State::Closed),
        "dropped bodies count as neither"
    );
}
