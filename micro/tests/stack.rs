//! The call stack over real TCP: what each failure turns into at the edges, which attempts
//! are retried, per-node readiness (ejection, busy nodes), the retry budget, and streaming
//! calls classified by their trailers.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::Request as HttpRequest;
use micro::{errors::Error, registry::Memory};
use micro_core::{BoxError, Outcome, outcome::OutcomeFuture};
use micro_test_support::ticker::{self, pb::TicksRequest, pb::ticker_client::TickerClient};
use proto::greeter::{
    FILE_DESCRIPTOR_SET, Request, Response,
    greeter_client::GreeterClient,
    greeter_server::{Greeter, GreeterServer},
};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};

/// greeter2: `Test` sleeps, then answers with its node id; counts the calls it handled.
#[derive(Clone)]
struct Counting {
    sleep: Duration,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Greeter for Counting {
    async fn hello(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        Ok(tonic::Response::new(Response {
            msg: format!("hello {}", request.into_inner().name),
        }))
    }

    async fn test(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let node = node_of(&request);
        tokio::time::sleep(self.sleep).await;
        Ok(tonic::Response::new(Response { msg: node }))
    }
}

/// The id of the node that handles `request`.
fn node_of(request: &tonic::Request<Request>) -> String {
    request
        .extensions()
        .get::<micro::CallInfo>()
        .and_then(|info| info.node.as_ref())
        .map(|node| node.id.to_string())
        .unwrap_or_default()
}

/// A greeter2 node on `registry`, built by `configure`; returns it and its call counter.
async fn greeter2(
    registry: &Memory,
    sleep: Duration,
    configure: impl FnOnce(micro::Service) -> micro::Service,
) -> (micro::Running, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = Counting {
        sleep,
        calls: calls.clone(),
    };
    let service = micro::Service::new()
        .name("greeter2")
        .registry(registry.clone())
        .descriptors(FILE_DESCRIPTOR_SET)
        .unwrap();
    let running = configure(service)
        .handle(GreeterServer::new(handler))
        .start()
        .await
        .unwrap();
    (running, calls)
}

fn micro_error(status: &Status) -> Error {
    Error::parse(status.message())
}

#[tokio::test]
async fn a_handler_wrappers_timeout_is_go_micros_408_not_a_reset_stream() {
    let registry = Memory::new();
    let (server, _) = greeter2(&registry, Duration::from_millis(100), |s| {
        s.wrap_handler(tower::timeout::TimeoutLayer::new(Duration::from_millis(20)))
    })
    .await;
    let address = server.local_addr();

    // A plain tonic client.
    let mut plain = GreeterClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let status = plain.test(Request::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let err = micro_error(&status);
    assert_eq!(
        (err.code, err.id.as_str()),
        (408, "go.micro.server"),
        "{err:?}"
    );

    // A third-party client: Python's grpcio.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/greeter_call.py");
    let output = tokio::process::Command::new("python3")
        .args([script, &address.to_string(), "Test", "py", "5"])
        .output()
        .await
        .expect("python3 runs (scripts/test installs grpcio and grpcio-tools)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(reply["code"], "DEADLINE_EXCEEDED", "{reply}");
    let err = Error::parse(reply["details"].as_str().unwrap());
    assert_eq!(err.code, 408, "{reply}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn any_handler_wrapper_error_leaves_as_a_status_with_go_micros_json() {
    let registry = Memory::new();
    // A layer that fails every call with an error that is not a status.
    let failing = tower::layer::layer_fn(|_inner: micro::BoxService| {
        tower::service_fn(|_req: HttpRequest<Body>| async {
            Err::<http::Response<Body>, BoxError>("the wrapper broke".into())
        })
    });
    let (server, _) = greeter2(&registry, Duration::ZERO, |s| s.wrap_handler(failing)).await;
    let mut plain = GreeterClient::connect(format!("http://{}", server.local_addr()))
        .await
        .unwrap();
    let status = plain.test(Request::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    let err = micro_error(&status);
    assert_eq!(err.code, 500, "{err:?}");
    assert!(err.detail.contains("the wrapper broke"), "{err:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_call_wrappers_timeout_is_not_retried() {
    let registry = Memory::new();
    let (server, calls) = greeter2(&registry, Duration::from_millis(100), |s| s).await;
    let client = micro::Service::new()
        .registry(registry.clone())
        .wrap_call(tower::timeout::TimeoutLayer::new(Duration::from_millis(20)))
        .client();
    let started = Instant::now();
    let status = client
        .call::<_, Response>("greeter2", "Greeter.Test", Request::default())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(micro_error(&status).code, 408, "{status:?}");
    // Let a retried attempt, had there been one, reach the handler.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the handler ran more than once"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    server.stop().await.unwrap();
}

/// A call wrapper whose first-built stack is never ready (the node it was built for gets
/// no attempt); the stacks built after it pass calls through.
#[derive(Clone, Default)]
struct FirstNeverReady {
    built: Arc<AtomicUsize>,
}

impl<S> Layer<S> for FirstNeverReady {
    type Service = MaybeReady<S>;

    fn layer(&self, inner: S) -> MaybeReady<S> {
        MaybeReady {
            inner,
            ready: self.built.fetch_add(1, Ordering::SeqCst) > 0,
        }
    }
}

#[derive(Clone)]
struct MaybeReady<S> {
    inner: S,
    ready: bool,
}

impl<S: Service<HttpRequest<Body>>> Service<HttpRequest<Body>> for MaybeReady<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.ready {
            self.inner.poll_ready(cx)
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, request: HttpRequest<Body>) -> S::Future {
        self.inner.call(request)
    }
}

#[tokio::test]
async fn a_node_whose_stack_is_never_ready_gets_no_attempt() {
    for strategy in [
        micro::client::Strategy::Random,
        micro::client::Strategy::RoundRobin,
        micro::client::Strategy::P2c,
    ] {
        let registry = Memory::new();
        let (a, a_calls) = greeter2(&registry, Duration::ZERO, |s| s).await;
        let (b, b_calls) = greeter2(&registry, Duration::ZERO, |s| s).await;
        let client = micro::Service::new()
            .registry(registry.clone())
            .client_options(micro::client::Options {
                strategy,
                ..Default::default()
            })
            .wrap_call(FirstNeverReady::default())
            .client();
        let mut answered_by = HashMap::new();
        for _ in 0..100 {
            let reply: Response = client
                .call("greeter2", "Greeter.Test", Request::default())
                .await
                .unwrap();
            *answered_by.entry(reply.msg).or_insert(0) += 1;
        }
        // Whichever node's stack was built first is never ready: it got no attempt at all.
        let (a_n, b_n) = (
            a_calls.load(Ordering::SeqCst),
            b_calls.load(Ordering::SeqCst),
        );
        assert!(
            (a_n, b_n) == (100, 0) || (a_n, b_n) == (0, 100),
            "{strategy:?}: {a_n} and {b_n} calls, {answered_by:?}"
        );
        a.stop().await.unwrap();
        b.stop().await.unwrap();
    }
}

/// A call wrapper that refuses every call in `poll_ready`, as an open breaker does.
#[derive(Clone)]
struct Refusing;

impl<S> Layer<S> for Refusing {
    type Service = RefusingService<S>;
    fn layer(&self, inner: S) -> RefusingService<S> {
        RefusingService(inner)
    }
}

#[derive(Clone)]
struct RefusingService<S>(S);

impl<S> Service<HttpRequest<Body>> for RefusingService<S>
where
    S: Service<HttpRequest<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = futures::future::MapErr<S::Future, fn(S::Error) -> BoxError>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let open = Error::bad_gateway("go.micro.client", "circuit breaker is open");
        Poll::Ready(Err(open.to_status().into()))
    }

    fn call(&mut self, request: HttpRequest<Body>) -> Self::Future {
        futures::TryFutureExt::map_err(self.0.call(request), Into::into)
    }
}

#[tokio::test]
async fn when_every_node_refuses_the_call_gets_the_refusal_at_once() {
    let registry = Memory::new();
    let (server, calls) = greeter2(&registry, Duration::ZERO, |s| s).await;
    let client = micro::Service::new()
        .registry(registry.clone())
        .wrap_call(Refusing)
        .client();
    let started = Instant::now();
    let status = client
        .call::<_, Response>("greeter2", "Greeter.Test", Request::default())
        .await
        .unwrap_err();
    let err = micro_error(&status);
    assert_eq!(
        (err.code, err.detail.as_str()),
        (502, "circuit breaker is open"),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "it waited or backed off"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_busy_node_is_waited_for_up_to_the_ready_timeout() {
    let registry = Memory::new();
    let (server, _) = greeter2(&registry, Duration::from_millis(300), |s| s).await;
    let client_with = |ready_timeout| {
        micro::Service::new()
            .registry(registry.clone())
            .client_options(micro::client::Options {
                ready_timeout,
                ..Default::default()
            })
            .wrap_call(tower::limit::ConcurrencyLimitLayer::new(1))
            .client()
    };
    for (ready_timeout, failures) in [(Duration::from_millis(50), 1), (Duration::from_secs(5), 0)] {
        let client = client_with(ready_timeout);
        let calls: Vec<_> = (0..2)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    client
                        .call::<_, Response>("greeter2", "Greeter.Test", Request::default())
                        .await
                })
            })
            .collect();
        let mut failed = Vec::new();
        for call in calls {
            if let Err(status) = call.await.unwrap() {
                failed.push(status);
            }
        }
        assert_eq!(failed.len(), failures, "{ready_timeout:?}: {failed:?}");
        for status in failed {
            let err = micro_error(&status);
            assert_eq!(
                (status.code(), err.code),
                (Code::Unavailable, 503),
                "{err:?}"
            );
            assert!(err.detail.contains("busy"), "{err:?}");
        }
    }
    server.stop().await.unwrap();
}

/// Counts the attempts that pass it (as a call wrapper, one per attempt on a node).
fn counting_layer(
    count: Arc<AtomicUsize>,
) -> tower::util::MapRequestLayer<impl Fn(HttpRequest<Body>) -> HttpRequest<Body> + Clone> {
    tower::util::MapRequestLayer::new(move |request| {
        count.fetch_add(1, Ordering::SeqCst);
        request
    })
}

#[tokio::test]
async fn the_retry_budget_keeps_a_dead_service_from_a_retry_storm() {
    let registry = Memory::new();
    // Three registered nodes where nothing listens: every connection is refused.
    let dead = micro::registry::Service {
        name: "greeter2".into(),
        version: "latest".into(),
        nodes: (1..=3)
            .map(|i| micro::registry::Node {
                id: format!("greeter2-dead-{i}"),
                address: free_port_nothing_listens(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    micro::registry::Registry::register(&registry, &dead, Default::default())
        .await
        .unwrap();
    let calls = 200;
    let mut attempts_by = Vec::new();
    for budget in [Some(micro::client::RetryBudget::default()), None] {
        let attempts = Arc::new(AtomicUsize::new(0));
        let client = micro::Service::new()
            .registry(registry.clone())
            .client_options(micro::client::Options {
                backoff: Duration::ZERO,
                retry_budget: budget,
                ..Default::default()
            })
            .wrap_call(counting_layer(attempts.clone()))
            .client();
        for _ in 0..calls {
            let status = client
                .call::<_, Response>("greeter2", "Greeter.Test", Request::default())
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        }
        attempts_by.push(attempts.load(Ordering::SeqCst));
    }
    let floor = 10 * 10; // min_per_sec x ttl seconds
    let bound = calls * 12 / 10 + floor;
    assert!(
        attempts_by[0] <= bound,
        "with the budget: {} attempts, bound {bound}",
        attempts_by[0]
    );
    // Without it each call makes its first attempt and 5 retries.
    assert_eq!(attempts_by[1], calls * 6);
}

/// A loopback port that was free a moment ago and has nothing listening.
fn free_port_nothing_listens() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}

/// Records every outcome it observes (as a client, call or handler wrapper).
#[derive(Clone, Default)]
struct Outcomes(Arc<Mutex<Vec<Outcome>>>);

impl<S> Layer<S> for Outcomes {
    type Service = Observing<S>;
    fn layer(&self, inner: S) -> Observing<S> {
        Observing {
            inner,
            seen: self.clone(),
        }
    }
}

#[derive(Clone)]
struct Observing<S> {
    inner: S,
    seen: Outcomes,
}

type Report = Box<dyn FnOnce(&Outcome) + Send>;

impl<S, B> Service<HttpRequest<Body>> for Observing<S>
where
    S: Service<HttpRequest<Body>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<micro_core::outcome::OutcomeBody<B, Report>>;
    type Error = BoxError;
    type Future = OutcomeFuture<S::Future, Report>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: HttpRequest<Body>) -> Self::Future {
        let seen = self.seen.0.clone();
        let report: Report = Box::new(move |outcome: &Outcome| {
            seen.lock().unwrap().push(outcome.clone());
        });
        OutcomeFuture::new(self.inner.call(request), report)
    }
}

#[tokio::test]
async fn a_streaming_call_is_classified_by_its_trailers_once_on_both_sides() {
    let registry = Memory::new();
    let server_side = Outcomes::default();
    let server = micro::Service::new()
        .name("ticker")
        .registry(registry.clone())
        .wrap_handler(server_side.clone())
        .handle(ticker::server())
        .start()
        .await
        .unwrap();
    let client_side = Outcomes::default();
    let client = micro::Service::new()
        .registry(registry.clone())
        .wrap_client(client_side.clone())
        .client();
    let mut ticker = TickerClient::new(client.channel("ticker"));
    let mut stream = ticker
        .ticks(TicksRequest {
            count: 3,
            end_code: Code::ResourceExhausted as i32,
            end_message: Error::too_many_requests("ticker", "enough").to_string(),
            interval_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut ticks = Vec::new();
    let end = loop {
        match stream.message().await {
            Ok(Some(tick)) => ticks.push(tick.n),
            Ok(None) => panic!("the stream ended without its error"),
            Err(status) => break status,
        }
    };
    assert_eq!(ticks, [0, 1, 2]);
    assert_eq!(end.code(), Code::ResourceExhausted);
    drop(stream);
    // A good stream, read to its end, on the same client.
    let mut good = ticker
        .ticks(TicksRequest {
            count: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while good.message().await.unwrap().is_some() {}
    // A stream the caller drops half-way: cancelled.
    let mut dropped = ticker
        .ticks(TicksRequest {
            count: 1000,
            interval_ms: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    dropped.message().await.unwrap();
    drop(dropped);

    let wait_for = |seen: &Outcomes, n: usize| {
        let seen = seen.0.clone();
        async move {
            for _ in 0..100 {
                if seen.lock().unwrap().len() >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen.lock().unwrap().clone()
        }
    };
    let on_client = wait_for(&client_side, 3).await;
    assert_eq!(on_client.len(), 3, "{on_client:?}");
    assert_eq!(
        (
            on_client[0].code,
            on_client[0].http_code(),
            on_client[0].json
        ),
        (Code::ResourceExhausted, 429, true)
    );
    assert!(on_client[1].is_success(), "{:?}", on_client[1]);
    assert!(on_client[2].is_cancelled(), "{:?}", on_client[2]);
    let on_server = wait_for(&server_side, 3).await;
    assert_eq!(on_server.len(), 3, "{on_server:?}");
    assert_eq!(on_server[0].code, Code::ResourceExhausted);
    assert!(on_server[1].is_success());
    assert!(on_server[2].is_cancelled(), "{:?}", on_server[2]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn services_hosted_together_share_the_handler_stack_and_each_gets_its_calls() {
    let registry = Memory::new();
    let through_stack = Arc::new(AtomicUsize::new(0));
    let counted = through_stack.clone();
    // Counts what passes the handler wrappers; sends a call marked `x-rewrite` to a path no
    // hosted service serves, as a wrapper may.
    let wrapper = tower::util::MapRequestLayer::new(move |mut request: HttpRequest<Body>| {
        counted.fetch_add(1, Ordering::SeqCst);
        if request.headers().contains_key("x-rewrite") {
            *request.uri_mut() = http::Uri::from_static("/nobody.Nobody/Hello");
        }
        request
    });
    let handler = Counting {
        sleep: Duration::ZERO,
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let server = micro::Service::new()
        .name("multi")
        .registry(registry.clone())
        .wrap_handler(wrapper)
        .handle(GreeterServer::new(handler))
        .handle(ticker::server())
        .start()
        .await
        .unwrap();

    // Plain tonic clients of both services, over one connection.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let reply = GreeterClient::new(channel.clone())
        .hello(Request { name: "a".into() })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().msg, "hello a");
    let mut ticks = TickerClient::new(channel.clone())
        .ticks(TicksRequest {
            count: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ticks.message().await.unwrap().map(|t| t.n), Some(0));
    assert_eq!(ticks.message().await.unwrap().map(|t| t.n), Some(1));
    assert!(ticks.message().await.unwrap().is_none());

    // go-micro's path form reaches the right service; a method the service lacks is its own
    // Unimplemented.
    let client = micro::Service::new().registry(registry.clone()).client();
    let reply: Response = client
        .call("multi", "Greeter.Hello", Request { name: "b".into() })
        .await
        .unwrap();
    assert_eq!(reply.msg, "hello b");
    let status = client
        .call::<_, Response>("multi", "Ticker.Nope", Request::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // A wrapper's rewrite to a path nothing hosts: go-micro's answer, not a reset stream.
    let mut marked = tonic::Request::new(Request::default());
    marked
        .metadata_mut()
        .insert("x-rewrite", "1".parse().unwrap());
    let status = GreeterClient::new(channel).hello(marked).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let err = micro_error(&status);
    assert_eq!(
        (err.id.as_str(), err.code),
        ("go.micro.server", 501),
        "{err:?}"
    );
    assert!(err.detail.contains("/nobody.Nobody/Hello"), "{err:?}");

    assert_eq!(through_stack.load(Ordering::SeqCst), 5);
    server.stop().await.unwrap();
}
