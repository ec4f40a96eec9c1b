//! Tracing and metrics end to end over real TCP: greeter1 -> greeter2 as one trace (OTLP over
//! gRPC and HTTP to local receivers decoded with opentelemetry-proto), every propagation
//! format through the chain, malformed headers, receivers that are down or hung, the metrics
//! endpoint (/metrics, /health, /ready against a real etcd), and the wrappers in a bare tonic
//! app.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use examples::{Greeter1, Greeter2};
use micro::{
    registry::{Etcd, Memory},
    trace::{Exporter, OtlpProtocol, Propagation, SamplerConfig, TraceConfig},
};
use micro_test_support::{
    EtcdServer,
    peers::{OtlpGrpcReceiver, OtlpHttpReceiver, Received, Silent, http_get, poll},
};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use proto::greeter::{Request, greeter_client::GreeterClient, greeter_server::GreeterServer};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What greeter2 received as `baggage`, per call.
#[derive(Clone, Default)]
struct SeenHeaders(Arc<Mutex<Vec<Option<String>>>>);

/// A handler wrapper that records greeter2's incoming `baggage` header.
fn record_baggage(seen: SeenHeaders) -> impl micro::Wrapper {
    tower::layer::layer_fn(move |inner: micro::BoxService| {
        let seen = seen.clone();
        tower::util::MapRequest::new(inner, move |request: http::Request<tonic::body::Body>| {
            let value = request
                .headers()
                .get("baggage")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Ok(mut all) = seen.0.lock() {
                all.push(value);
            }
            request
        })
    })
}

struct Chain {
    greeter1: GreeterClient<Channel>,
    baggage: SeenHeaders,
    running: Vec<micro::Running>,
}

impl Chain {
    async fn stop(self) {
        for running in self.running {
            running.stop().await.unwrap();
        }
    }
}

/// greeter2 and greeter1 (calling greeter2) on their own memory registry, each traced with
/// `config` under its own service name.
async fn chain(config: TraceConfig) -> Chain {
    let registry = Memory::new();
    let baggage = SeenHeaders::default();
    let greeter2 = micro::Service::new()
        .name("greeter2")
        .registry(registry.clone())
        .tracing(config.clone().service_name("greeter2"))
        .wrap_handler(record_baggage(baggage.clone()))
        .handle(GreeterServer::new(Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await
        .unwrap();
    let mut greeter1 = micro::Service::new()
        .name("greeter1")
        .registry(registry)
        .tracing(config.service_name("greeter1"));
    let client = GreeterClient::new(greeter1.client().channel("greeter2"));
    let greeter1 = greeter1
        .handle(GreeterServer::new(Greeter1 { greeter2: client }))
        .start()
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{}", greeter1.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Chain {
        greeter1: GreeterClient::new(channel),
        baggage,
        running: vec![greeter1, greeter2],
    }
}

fn traced(exporter: Exporter, endpoint: String, protocol: OtlpProtocol) -> TraceConfig {
    TraceConfig::default()
        .exporters([exporter])
        .otlp_endpoint(endpoint)
        .otlp_protocol(protocol)
        .sampler(SamplerConfig::AlwaysOn)
        .batch_delay(Duration::from_millis(100))
}

/// The three spans of the chain's trace `trace_id`, once all arrived.
async fn three_spans(received: &Received, trace_id: Option<&[u8]>) -> Vec<(String, Span)> {
    poll(WAIT, || async {
        let spans = received.spans();
        let trace = match trace_id {
            Some(id) => id.to_vec(),
            None => spans
                .iter()
                .find(|(s, sp)| s == "greeter1" && sp.kind == SpanKind::Server as i32)?
                .1
                .trace_id
                .clone(),
        };
        let of_trace: Vec<_> = spans
            .into_iter()
            .filter(|(_, s)| s.trace_id == trace)
            .collect();
        (of_trace.len() >= 3).then_some(of_trace)
    })
    .await
    .unwrap_or_else(|| panic!("no three spans in {WAIT:?}: got {:#?}", received.spans()))
}

fn find<'a>(spans: &'a [(String, Span)], service: &str, kind: SpanKind) -> &'a Span {
    spans
        .iter()
        .find(|(s, span)| s == service && span.kind == kind as i32)
        .map(|(_, span)| span)
        .unwrap_or_else(|| panic!("no {kind:?} span of {service} in {spans:#?}"))
}

fn attribute<'a>(
    span: &'a Span,
    key: &str,
) -> Option<&'a opentelemetry_proto::tonic::common::v1::any_value::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// The chain's three spans are one trace with the right parents, kinds, names, attributes.
fn assert_chain(spans: &[(String, Span)]) {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let server1 = find(spans, "greeter1", SpanKind::Server);
    let client1 = find(spans, "greeter1", SpanKind::Client);
    let server2 = find(spans, "greeter2", SpanKind::Server);
    assert_eq!(
        client1.parent_span_id, server1.span_id,
        "client under greeter1's server span"
    );
    assert_eq!(
        server2.parent_span_id, client1.span_id,
        "greeter2 under greeter1's client span"
    );
    assert_eq!(server1.name, "greeter.Greeter/Hello");
    assert_eq!(client1.name, "greeter.Greeter/Test");
    assert_eq!(server2.name, "greeter.Greeter/Test");
    for (span, key, want) in [
        (server1, "rpc.system", "grpc"),
        (server1, "rpc.service", "greeter.Greeter"),
        (server1, "rpc.method", "Hello"),
        (server1, "micro.endpoint", "Greeter.Hello"),
        (client1, "micro.service", "greeter2"),
        (server2, "micro.service", "greeter2"),
    ] {
        assert_eq!(
            attribute(span, key),
            Some(&Value::StringValue(want.into())),
            "{key} of {}",
            span.name
        );
    }
    assert!(attribute(server2, "micro.node").is_some());
    assert_eq!(
        attribute(server2, "rpc.grpc.status_code"),
        Some(&Value::IntValue(0))
    );
    // The handler ran inside the client span, which ran inside the server span.
    assert!(server1.start_time_unix_nano <= client1.start_time_unix_nano);
    assert!(client1.end_time_unix_nano <= server1.end_time_unix_nano);
}

#[tokio::test]
async fn chain_is_one_trace_over_otlp_grpc() {
    let receiver = OtlpGrpcReceiver::start().await.unwrap();
    let chain = chain(traced(
        Exporter::Otlp,
        receiver.endpoint(),
        OtlpProtocol::Grpc,
    ))
    .await;
    let reply = chain
        .greeter1
        .clone()
        .hello(Request { name: "you".into() })
        .await
        .unwrap();
    assert!(reply.into_inner().msg.starts_with("greeter1 <- test you"));
    let spans = three_spans(receiver.received(), None).await;
    assert_chain(&spans);
    assert!(
        find(&spans, "greeter1", SpanKind::Server)
            .parent_span_id
            .is_empty(),
        "a root"
    );
    chain.stop().await;
}

#[tokio::test]
async fn chain_is_one_trace_over_otlp_http() {
    let receiver = OtlpHttpReceiver::start().await.unwrap();
    let endpoint = format!("{}/v1/traces", receiver.endpoint());
    let chain = chain(traced(Exporter::Otlp, endpoint, OtlpProtocol::HttpProtobuf)).await;
    chain
        .greeter1
        .clone()
        .hello(Request { name: "you".into() })
        .await
        .unwrap();
    assert_chain(&three_spans(receiver.received(), None).await);
    chain.stop().await;
}

/// Each format, injected by the caller, continues through both hops; W3C baggage reaches
/// greeter2.
#[tokio::test]
async fn every_propagation_format_round_trips_through_the_chain() {
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let cases: Vec<(Propagation, Vec<(&str, String)>)> = vec![
        (
            Propagation::TraceContext,
            vec![
                ("traceparent", format!("00-{trace}-{parent}-01")),
                ("baggage", "user=alice".to_owned()),
            ],
        ),
        (Propagation::B3, vec![("b3", format!("{trace}-{parent}-1"))]),
        (
            Propagation::B3Multi,
            vec![
                ("x-b3-traceid", trace.to_owned()),
                ("x-b3-spanid", parent.to_owned()),
                ("x-b3-sampled", "1".to_owned()),
            ],
        ),
        (
            Propagation::Jaeger,
            vec![("uber-trace-id", format!("{trace}:{parent}:0:1"))],
        ),
    ];
    for (format, headers) in cases {
        let receiver = OtlpGrpcReceiver::start().await.unwrap();
        let config = traced(Exporter::Otlp, receiver.endpoint(), OtlpProtocol::Grpc)
            .propagators([format, Propagation::Baggage]);
        let chain = chain(config).await;
        let mut request = tonic::Request::new(Request { name: "p".into() });
        for (name, value) in &headers {
            request.metadata_mut().insert(*name, value.parse().unwrap());
        }
        chain.greeter1.clone().hello(request).await.unwrap();
        let trace_bytes: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&trace[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let spans = three_spans(receiver.received(), Some(&trace_bytes)).await;
        assert_chain(&spans);
        assert_eq!(
            hex(&find(&spans, "greeter1", SpanKind::Server).parent_span_id),
            parent,
            "{format:?}"
        );
        if format == Propagation::TraceContext {
            let seen = chain.baggage.0.lock().unwrap().clone();
            assert_eq!(
                seen,
                [Some("user=alice".to_owned())],
                "baggage reaches greeter2"
            );
        }
        chain.stop().await;
    }
}

#[tokio::test]
async fn a_malformed_header_starts_a_new_root_and_the_call_succeeds() {
    let receiver = OtlpGrpcReceiver::start().await.unwrap();
    let config = traced(Exporter::Otlp, receiver.endpoint(), OtlpProtocol::Grpc).propagators([
        Propagation::TraceContext,
        Propagation::Baggage,
        Propagation::B3,
        Propagation::Jaeger,
    ]);
    let chain = chain(config).await;
    let mut request = tonic::Request::new(Request { name: "m".into() });
    for (name, value) in [
        (
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ),
        ("tracestate", "%%%"),
        ("baggage", "=;;=="),
        ("b3", "not-a-b3-header"),
        ("uber-trace-id", "zz:yy:0:1"),
    ] {
        request.metadata_mut().insert(name, value.parse().unwrap());
    }
    chain.greeter1.clone().hello(request).await.unwrap();
    let spans = three_spans(receiver.received(), None).await;
    assert_chain(&spans);
    let root = find(&spans, "greeter1", SpanKind::Server);
    assert!(root.parent_span_id.is_empty(), "a fresh root");
    assert_ne!(hex(&root.trace_id), "0".repeat(32));
    chain.stop().await;
}

/// Receivers that refuse connections or never answer: every call still succeeds within a
/// 2 s deadline, and the spans lost are counted (also on /metrics).
#[tokio::test]
async fn receivers_down_or_hung_never_fail_calls_and_drops_are_counted() {
    let silent = Silent::start().await.unwrap();
    let closed = format!(
        "http://127.0.0.1:{}",
        micro_test_support::peers::free_port().unwrap()
    );
    for (what, endpoint) in [("hung", silent.endpoint()), ("down", closed)] {
        let registry = Memory::new();
        let config = traced(Exporter::Otlp, endpoint, OtlpProtocol::Grpc)
            .export_timeout(Duration::from_millis(500));
        let greeter2 = micro::Service::new()
            .name("greeter2")
            .registry(registry.clone())
            .metrics_address("127.0.0.1:0")
            .tracing(config)
            .handle(GreeterServer::new(Greeter2 {
                test_sleep: Duration::ZERO,
            }))
            .start()
            .await
            .unwrap();
        let mut caller = micro::Service::new().name("caller").registry(registry);
        let mut client = GreeterClient::new(caller.client().channel("greeter2"));
        for i in 0..20 {
            let mut request = tonic::Request::new(Request {
                name: format!("{i}"),
            });
            request.set_timeout(Duration::from_secs(2));
            let started = std::time::Instant::now();
            client
                .test(request)
                .await
                .unwrap_or_else(|e| panic!("{what}: call {i}: {e}"));
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        let tracer = greeter2.tracer().unwrap().clone();
        let stats = tracer.stats().clone();
        let flushed = tokio::task::spawn_blocking(move || tracer.force_flush())
            .await
            .unwrap();
        assert!(
            flushed.is_err(),
            "{what}: flushing to a dead receiver fails"
        );
        let dropped = poll(WAIT, || async {
            (stats.dropped() >= 20).then(|| stats.dropped())
        })
        .await;
        assert!(
            dropped.is_some(),
            "{what}: dropped {} of 20",
            stats.dropped()
        );
        let url = format!("http://{}/metrics", greeter2.metrics_addr().unwrap());
        let (_, text) = http_get(&url).await.unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("micro_trace_spans_dropped_total"))
            .unwrap_or_else(|| panic!("{text}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 20.0, "{line}");
        greeter2.stop().await.unwrap();
    }
}

#[tokio::test]
async fn metrics_endpoint_serves_metrics_health_and_readiness() {
    let mut etcd = EtcdServer::start().await.unwrap();
    let greeter2 = micro::Service::new()
        .name("greeter2")
        .registry(Etcd::new([etcd.endpoint()]))
        .register_ttl(Duration::from_secs(2))
        .register_interval(Duration::from_secs(1))
        .metrics_address("127.0.0.1:0")
        .handle(GreeterServer::new(Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await
        .unwrap();
    let base = format!("http://{}", greeter2.metrics_addr().unwrap());
    assert_eq!(http_get(&format!("{base}/health")).await.unwrap().0, 200);
    let ready = |want: u16| {
        let url = format!("{base}/ready");
        async move {
            poll(WAIT, || async {
                (http_get(&url).await.ok()?.0 == want).then_some(())
            })
            .await
            .is_some()
        }
    };
    assert!(ready(200).await, "ready once registered");

    let channel = Channel::from_shared(format!("http://{}", greeter2.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GreeterClient::new(channel.clone());
    for _ in 0..3 {
        client.test(Request { name: "x".into() }).await.unwrap();
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    let (status, text) = http_get(&format!("{base}/metrics")).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        text.contains(
            "micro_request_total{service=\"greeter2\",endpoint=\"Greeter.Test\",status=\"success\"} 3"
        ),
        "{text}"
    );
    assert!(
        !text.contains("Health"),
        "health checks are not counted: {text}"
    );
    assert!(
        text.contains("micro_registry_registrations_total{service=\"greeter2\"}"),
        "{text}"
    );
    assert!(text.contains("process_open_fds"), "{text}");
    assert_eq!(http_get(&format!("{base}/nothing")).await.unwrap().0, 404);

    // The registry gone for longer than the TTL: not ready (still live); back: ready.
    etcd.stop().await.unwrap();
    assert!(
        ready(503).await,
        "not ready once the registration outlived its TTL"
    );
    assert_eq!(http_get(&format!("{base}/health")).await.unwrap().0, 200);
    let (_, text) = http_get(&format!("{base}/metrics")).await.unwrap();
    assert!(
        text.contains("micro_registry_renewal_failures_total{service=\"greeter2\"}"),
        "{text}"
    );
    etcd.start_again().await.unwrap();
    assert!(ready(200).await, "ready again once re-registered");
    greeter2.stop().await.unwrap();
}

#[tokio::test]
async fn a_taken_metrics_port_is_a_clear_start_up_error_and_off_disables() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let err = match micro::Service::new()
        .name("taken")
        .registry(Memory::new())
        .metrics_address(address.clone())
        .start()
        .await
    {
        Ok(_) => panic!("started on a taken port"),
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains(&address) && err.contains("MICRO_METRICS_ADDRESS"),
        "{err}"
    );

    let running = micro::Service::new()
        .name("off")
        .registry(Memory::new())
        .try_init_from(["svc", "--metrics_address", "off"])
        .unwrap()
        .start()
        .await
        .unwrap();
    assert!(running.metrics_addr().is_none() && running.metrics().is_none());
    running.stop().await.unwrap();

    let bad = micro::Service::new()
        .name("bad")
        .registry(Memory::new())
        .tracing(TraceConfig::default().otlp_endpoint("not a uri at all"))
        .start()
        .await;
    match bad {
        Ok(running) => {
            // tonic accepts lazily; then the endpoint is only wrong at export time.
            running.stop().await.unwrap();
        }
        Err(err) => assert!(err.to_string().contains("otlp"), "{err}"),
    }
}

/// The wrappers in a plain tonic app (no micro server, no CallInfo).
#[tokio::test]
async fn wrappers_work_in_a_bare_tonic_app() {
    let receiver = OtlpGrpcReceiver::start().await.unwrap();
    let resolved = traced(Exporter::Otlp, receiver.endpoint(), OtlpProtocol::Grpc)
        .resolve("bare", |_| None)
        .unwrap();
    let tracing = micro::trace::Tracing::install(resolved).unwrap();
    let metrics = micro::metrics::Metrics::new(micro::metrics::MetricsConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(tracing.server())
            .layer(metrics.server())
            .add_service(GreeterServer::new(Greeter2 {
                test_sleep: Duration::ZERO,
            }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GreeterClient::new(channel);
    client
        .test(Request {
            name: "bare".into(),
        })
        .await
        .unwrap();
    let spans = poll(WAIT, || async {
        let spans = receiver.received().spans();
        (!spans.is_empty()).then_some(spans)
    })
    .await
    .expect("a span");
    assert_eq!(spans[0].1.name, "greeter.Greeter/Test");
    assert!(
        metrics.encode().contains(
            "micro_request_total{service=\"greeter.Greeter\",endpoint=\"Greeter.Test\",status=\"success\"} 1"
        ),
        "{}",
        metrics.encode()
    );
    tracing.shutdown_async().await.unwrap();
    server.abort();
}

// === the framework health series, read from a real scrape of /metrics ===

/// The body of `running`'s `/metrics`.
async fn scrape(running: &micro::Running) -> String {
    let url = format!("http://{}/metrics", running.metrics_addr().unwrap());
    let (status, text) = http_get(&url).await.unwrap();
    assert_eq!(status, 200, "{text}");
    text
}

/// The value of `series` (its name and labels exactly as exposed), if exposed.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A caller service built from `flags` (metrics on), started so it serves `/metrics`, with a
/// client to greeter2.
async fn caller_with_flags(
    registry: &Memory,
    flags: &[&str],
) -> (micro::Running, GreeterClient<micro::Channel>) {
    let args = ["caller", "--metrics_address", "127.0.0.1:0"]
        .iter()
        .chain(flags)
        .copied();
    let mut service = micro::Service::new()
        .name("caller")
        .registry(registry.clone())
        .try_init_from(args)
        .unwrap();
    let client = GreeterClient::new(service.client().channel("greeter2"));
    (service.start().await.unwrap(), client)
}

/// `--client_breaker gobreaker`: the breaker's gauge exists at 0 (closed) once made, and its
/// opening is on /metrics as state 2, one closed -> open transition and one refusal.
#[tokio::test]
async fn a_flag_breaker_feeds_the_breaker_series() {
    let registry = Memory::new();
    let greeter2 = micro_test_support::greeter2(&registry).await;
    let (caller, mut client) = caller_with_flags(
        &registry,
        &["--client_breaker", "gobreaker", "--client_retries", "0"],
    )
    .await;
    client.test(Request { name: "x".into() }).await.unwrap();
    let text = scrape(&caller).await;
    assert_eq!(
        sample(&text, "micro_breaker_state{breaker=\"greeter2\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "micro_selector_nodes{service=\"greeter2\"}"),
        Some(1.0),
        "{text}"
    );

    // gobreaker's default: more than 5 consecutive failures open it.
    greeter2.stop().await.unwrap();
    for _ in 0..6 {
        let status = client.test(Request { name: "x".into() }).await.unwrap_err();
        assert!(
            !status.message().contains("circuit breaker is open"),
            "{status:?}"
        );
    }
    let status = client.test(Request { name: "x".into() }).await.unwrap_err();
    assert!(
        status.message().contains("circuit breaker is open"),
        "{status:?}"
    );

    let text = scrape(&caller).await;
    assert_eq!(
        sample(&text, "micro_breaker_state{breaker=\"greeter2\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "micro_breaker_transitions_total{breaker=\"greeter2\",from=\"closed\",to=\"open\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "micro_breaker_rejections_total{breaker=\"greeter2\",reason=\"open\"}"
        ),
        Some(1.0),
        "{text}"
    );
    caller.stop().await.unwrap();
}

/// In node scope each node's breaker is made on its stack: its gauge exists at 0 under
/// `service/node`.
#[tokio::test]
async fn a_flag_node_breaker_has_its_gauge_from_the_start() {
    let registry = Memory::new();
    let greeter2 = micro_test_support::greeter2(&registry).await;
    let node = greeter2.node().id.clone();
    let (caller, mut client) = caller_with_flags(
        &registry,
        &[
            "--client_breaker",
            "hystrix",
            "--client_breaker_scope",
            "node",
        ],
    )
    .await;
    client.test(Request { name: "x".into() }).await.unwrap();
    let text = scrape(&caller).await;
    assert_eq!(
        sample(
            &text,
            &format!("micro_breaker_state{{breaker=\"greeter2/{node}\"}}")
        ),
        Some(0.0),
        "{text}"
    );
    caller.stop().await.unwrap();
    greeter2.stop().await.unwrap();
}

/// Sends `calls` calls one after the other: how many went through and how many a limiter
/// refused (ResourceExhausted); any other failure fails the test.
async fn admitted_and_refused<T>(client: &mut GreeterClient<T>, calls: usize) -> (usize, usize)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..calls {
        match client.test(Request { name: "x".into() }).await {
            Ok(_) => ok += 1,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => refused += 1,
            Err(status) => panic!("{status:?}"),
        }
    }
    (ok, refused)
}

/// `--server_ratelimit` refusing: the limiter's counters equal what the caller saw; in wait
/// mode the call that waited is counted as waited.
#[tokio::test]
async fn a_flag_server_limiter_counts_what_callers_saw() {
    // Reject mode, a bucket of 3 that does not refill within the test.
    let running = micro::Service::new()
        .name("limited")
        .registry(Memory::new())
        .try_init_from([
            "limited",
            "--metrics_address",
            "127.0.0.1:0",
            "--server_ratelimit",
            "0.001",
            "--server_ratelimit_burst",
            "3",
        ])
        .unwrap()
        .handle(GreeterServer::new(Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await
        .unwrap();
    let mut client = GreeterClient::connect(format!("http://{}", running.local_addr()))
        .await
        .unwrap();
    assert_eq!(admitted_and_refused(&mut client, 10).await, (3, 7));
    let text = scrape(&running).await;
    let count = |name: &str| sample(&text, &format!("{name}{{limiter=\"server\"}}"));
    assert_eq!(count("micro_ratelimit_admitted_total"), Some(3.0), "{text}");
    assert_eq!(count("micro_ratelimit_refused_total"), Some(7.0), "{text}");
    assert_eq!(count("micro_ratelimit_waited_total"), Some(0.0), "{text}");
    running.stop().await.unwrap();

    // Wait mode, one token per 2 s: of two calls sent together one goes at once, the other
    // waits for the next token.
    let running = micro::Service::new()
        .name("waiting")
        .registry(Memory::new())
        .try_init_from([
            "waiting",
            "--metrics_address",
            "127.0.0.1:0",
            "--server_ratelimit",
            "0.5",
            "--server_ratelimit_burst",
            "1",
            "--server_ratelimit_wait",
            "true",
        ])
        .unwrap()
        .handle(GreeterServer::new(Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await
        .unwrap();
    let client = GreeterClient::connect(format!("http://{}", running.local_addr()))
        .await
        .unwrap();
    let call = |mut client: GreeterClient<Channel>| async move {
        let mut request = tonic::Request::new(Request { name: "w".into() });
        request.set_timeout(Duration::from_secs(20));
        client.test(request).await
    };
    let (a, b) = tokio::join!(call(client.clone()), call(client));
    a.unwrap();
    b.unwrap();
    let text = scrape(&running).await;
    let count = |name: &str| sample(&text, &format!("{name}{{limiter=\"server\"}}"));
    assert_eq!(count("micro_ratelimit_admitted_total"), Some(1.0), "{text}");
    assert_eq!(count("micro_ratelimit_waited_total"), Some(1.0), "{text}");
    assert_eq!(count("micro_ratelimit_refused_total"), Some(0.0), "{text}");
    running.stop().await.unwrap();
}

/// `--client_ratelimit`: the client limiter's refusals are counted as `limiter="client"`.
#[tokio::test]
async fn a_flag_client_limiter_counts_what_the_caller_saw() {
    let registry = Memory::new();
    let greeter2 = micro_test_support::greeter2(&registry).await;
    let (caller, mut client) = caller_with_flags(
        &registry,
        &[
            "--client_ratelimit",
            "0.001",
            "--client_ratelimit_burst",
            "2",
        ],
    )
    .await;
    assert_eq!(admitted_and_refused(&mut client, 5).await, (2, 3));
    let text = scrape(&caller).await;
    let count = |name: &str| sample(&text, &format!("{name}{{limiter=\"client\"}}"));
    assert_eq!(count("micro_ratelimit_admitted_total"), Some(2.0), "{text}");
    assert_eq!(count("micro_ratelimit_refused_total"), Some(3.0), "{text}");
    caller.stop().await.unwrap();
    greeter2.stop().await.unwrap();
}

/// A node registered but not listening: every attempt is refused before it is sent, so the
/// client retries it (backoff 0) exactly `retries` times per call; with a budget that holds
/// nothing, each call's one retry is refused by the budget instead.
#[tokio::test]
async fn client_retries_and_budget_refusals_are_counted() {
    use micro::registry::{Node, RegisterOptions, Registry as _, Service};
    let registry = Memory::new();
    let dead = micro_test_support::peers::free_port().unwrap();
    registry
        .register(
            &Service {
                name: "dead".into(),
                version: "latest".into(),
                nodes: vec![Node {
                    id: "dead-1".into(),
                    address: format!("127.0.0.1:{dead}"),
                    ..Node::default()
                }],
                ..Service::default()
            },
            RegisterOptions::default(),
        )
        .await
        .unwrap();
    let started = |budget: Option<micro::client::RetryBudget>| {
        let registry = registry.clone();
        async move {
            let mut service = micro::Service::new()
                .name("caller")
                .registry(registry)
                .metrics_address("127.0.0.1:0")
                .client_options(micro::client::Options {
                    retries: 3,
                    backoff: Duration::ZERO,
                    request_timeout: Duration::from_secs(10),
                    retry_budget: budget,
                    ..Default::default()
                });
            let client = GreeterClient::new(service.client().channel("dead"));
            (service.start().await.unwrap(), client)
        }
    };

    let (caller, mut client) = started(None).await;
    for _ in 0..2 {
        let status = client.test(Request { name: "x".into() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    let text = scrape(&caller).await;
    assert_eq!(
        sample(&text, "micro_client_retries_total{service=\"dead\"}"),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "micro_client_retry_budget_refusals_total{service=\"dead\"}"
        ),
        None,
        "{text}"
    );
    caller.stop().await.unwrap();

    // No reserve, no share of the calls: tower's TpsBudget refuses every retry.
    let tiny = micro::client::RetryBudget {
        ttl: Duration::from_secs(1),
        min_per_sec: 0,
        percent: 0.0,
    };
    let (caller, mut client) = started(Some(tiny)).await;
    for _ in 0..4 {
        let status = client.test(Request { name: "x".into() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    let text = scrape(&caller).await;
    assert_eq!(
        sample(
            &text,
            "micro_client_retry_budget_refusals_total{service=\"dead\"}"
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "micro_client_retries_total{service=\"dead\"}"),
        None,
        "{text}"
    );
    caller.stop().await.unwrap();
}

/// The client's registry watch lost and restarted with etcd: counted on /metrics.
#[tokio::test]
async fn registry_watch_restarts_are_counted() {
    let mut etcd = EtcdServer::start().await.unwrap();
    let greeter2 = micro::Service::new()
        .name("greeter2")
        .registry(Etcd::new([etcd.endpoint()]))
        .handle(GreeterServer::new(Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await
        .unwrap();
    let mut caller = micro::Service::new()
        .name("caller")
        .registry(Etcd::new([etcd.endpoint()]))
        .metrics_address("127.0.0.1:0");
    let mut client = GreeterClient::new(caller.client().channel("greeter2"));
    let caller = caller.start().await.unwrap();
    client.test(Request { name: "x".into() }).await.unwrap();
    let text = scrape(&caller).await;
    assert_eq!(
        sample(&text, "micro_registry_watch_restarts_total"),
        Some(0.0),
        "{text}"
    );

    etcd.stop().await.unwrap();
    // Down long enough for the watch to notice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    etcd.start_again().await.unwrap();
    let restarts = poll(WAIT, || async {
        let text = scrape(&caller).await;
        sample(&text, "micro_registry_watch_restarts_total").filter(|n| *n >= 1.0)
    })
    .await;
    assert!(restarts.is_some(), "{}", scrape(&caller).await);
    // Served from the cache throughout, and still served now.
    client.test(Request { name: "y".into() }).await.unwrap();
    caller.stop().await.unwrap();
    greeter2.stop().await.unwrap();
}

/// A user's own limiter, attached through `Service::health()` before metrics are decided,
/// keeps its own observer and is counted under its name.
#[tokio::test]
async fn a_users_limiter_attaches_through_service_health() {
    use micro::wrappers::ratelimit::{LimitEvent, RateLimitLayer};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let service = micro::Service::new()
        .name("mine")
        .registry(Memory::new())
        .metrics_address("127.0.0.1:0");
    let limit = RateLimitLayer::new(0.001, 2)
        .unwrap()
        .on_event(move |_, event| sink.lock().unwrap().push(event));
    let limit = service.health().observe_limiter("mine", limit);
    let running = service
        .wrap_handler(limit)
        .handle(GreeterServer::new(Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await
        .unwrap();
    let mut client = GreeterClient::connect(format!("http://{}", running.local_addr()))
        .await
        .unwrap();
    let mut refused = 0;
    for _ in 0..4 {
        if client.test(Request { name: "x".into() }).await.is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, 2);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            LimitEvent::Admitted,
            LimitEvent::Admitted,
            LimitEvent::Refused,
            LimitEvent::Refused
        ]
    );
    let text = scrape(&running).await;
    let count = |name: &str| sample(&text, &format!("{name}{{limiter=\"mine\"}}"));
    assert_eq!(count("micro_ratelimit_admitted_total"), Some(2.0), "{text}");
    assert_eq!(count("micro_ratelimit_refused_total"), Some(2.0), "{text}");
    running.stop().await.unwrap();
}
