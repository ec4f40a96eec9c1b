//! The call series end to end: a bare tonic app with the metrics layer (no micro server, no
//! CallInfo), and a micro service whose client series a real Prometheus scrapes, label values
//! bounded (the 101st service folds into `other`).

use std::time::Duration;

use examples::Greeter2;
use micro::{
    metrics::{MAX_VALUES, Metrics, MetricsConfig, OTHER},
    registry::Memory,
};
use micro_test_support::{
    greeter2,
    peers::{Prometheus, http_get},
    poll,
};
use proto::greeter::{Request, greeter_client::GreeterClient, greeter_server::GreeterServer};
use serde_json::Value;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

/// The value of `series` (its name and labels exactly as exposed), if exposed.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A tonic server (no micro) hosting the greeter and gRPC health, the metrics layer over both;
/// unknown services and methods answered UNIMPLEMENTED by tonic's router.
#[tokio::test]
async fn a_bare_tonic_app_counts_its_calls_with_bounded_labels() {
    let metrics = Metrics::new(MetricsConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(metrics.server())
            .add_service(health)
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
    let mut client = GreeterClient::new(channel.clone());
    for _ in 0..3 {
        client.test(Request { name: "x".into() }).await.unwrap();
    }
    let mut health_client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    health_client
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    // A peer sending random services and methods: answered UNIMPLEMENTED, they never take one
    // of the kept values.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = sent.clone();
    let random = tower::ServiceExt::map_request(channel, move |mut request: http::Request<_>| {
        let i = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut parts = request.uri().clone().into_parts();
        parts.path_and_query = Some(format!("/random{i}.Svc/M{i}").parse().unwrap());
        *request.uri_mut() = http::Uri::from_parts(parts).unwrap();
        request
    });
    let mut random = GreeterClient::new(random);
    for _ in 0..MAX_VALUES + 20 {
        let status = random.test(Request { name: "x".into() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }
    assert_eq!(
        sent.load(std::sync::atomic::Ordering::Relaxed),
        MAX_VALUES + 20
    );
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            "micro_request_total{service=\"greeter.Greeter\",endpoint=\"Greeter.Test\",status=\"success\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "micro_request_total{{service=\"{OTHER}\",endpoint=\"{OTHER}\",status=\"fail\"}}"
            )
        ),
        Some((MAX_VALUES + 20) as f64),
        "{text}"
    );
    assert!(
        !text.contains("random") && !text.contains("Health"),
        "{text}"
    );
    server.abort();
}

/// A caller's client series through a real Prometheus: the calls to greeter2 counted under
/// the same series as before, the first 100 other services by name, the 101st as `other`.
#[tokio::test]
async fn prometheus_scrapes_bounded_client_series() {
    let registry = Memory::new();
    let _greeter2 = greeter2(&registry).await;
    let mut caller = micro::Service::new()
        .name("caller")
        .registry(registry.clone())
        .metrics_address("127.0.0.1:0");
    let mut to_greeter2 = GreeterClient::new(caller.client().channel("greeter2"));
    // With greeter2, 101 services: the last ghost is the 101st.
    let ghosts: Vec<_> = (0..MAX_VALUES)
        .map(|i| GreeterClient::new(caller.client().channel(format!("ghost{i}"))))
        .collect();
    let caller = caller.start().await.unwrap();
    const CALLS: usize = 5;
    for _ in 0..CALLS {
        to_greeter2
            .test(Request { name: "x".into() })
            .await
            .unwrap();
    }
    // Services nobody registered: each call fails, counted under its service while the
    // bound lasts.
    for mut ghost in ghosts {
        ghost.test(Request { name: "x".into() }).await.unwrap_err();
    }
    let address = caller.metrics_addr().expect("a metrics endpoint");
    let (status, text) = http_get(&format!("http://{address}/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");
    let prometheus = Prometheus::start(&[address.to_string()]).await.unwrap();
    let scalar = |answer: &Value| -> Option<f64> {
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    };
    let last = MAX_VALUES - 1;
    for (query, want) in [
        (
            "sum(micro_client_request_total{service=\"greeter2\",endpoint=\"Greeter.Test\",status=\"success\"})".to_owned(),
            CALLS as f64,
        ),
        (
            "sum(micro_client_request_duration_seconds_count{service=\"greeter2\",status=\"success\"})".to_owned(),
            CALLS as f64,
        ),
        (
            "count(micro_client_request_total{service=~\"ghost[0-9]+\"})".to_owned(),
            (MAX_VALUES - 1) as f64,
        ),
        (
            format!("sum(micro_client_request_total{{service=\"{OTHER}\",status=\"fail\"}})"),
            1.0,
        ),
        (
            format!("count(micro_client_request_total{{service=\"ghost{last}\"}}) or vector(0)"),
            0.0,
        ),
    ] {
        let seen = poll(WAIT, || async {
            let answer = prometheus.query(&query).await.ok()?;
            (scalar(&answer)? == want).then_some(())
        })
        .await;
        let answer = prometheus.query(&query).await.ok();
        assert!(seen.is_some(), "{query} != {want}; last answer {answer:?}\n{text}");
    }
    caller.stop().await.unwrap();
}
