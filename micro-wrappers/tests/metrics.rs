//! The metrics layers over a service that answers like tonic (trailers-only errors, a body
//! with trailers on success): series names and labels as go-micro's, bounded label sets,
//! health checks left out.

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use micro_core::CallInfo;
use micro_wrappers::metrics::{MAX_VALUES, Metrics, MetricsConfig};
use tower::{Layer, Service, ServiceExt};

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, micro_core::BoxError>;

/// Answers `/x.Greeter/Fail` trailers-only `INTERNAL`, paths with `Random` trailers-only
/// `UNIMPLEMENTED`, anything else with a body ending in `grpc-status: 0` trailers.
async fn handler(request: Request<Full<Bytes>>) -> Result<Response<BoxBody>, micro_core::BoxError> {
    let path = request.uri().path().to_owned();
    let trailers_only = |code: &str| {
        Response::builder()
            .header("grpc-status", code)
            .body(Full::new(Bytes::new()).map_err(Into::into).boxed_unsync())
            .unwrap()
    };
    Ok(match path.as_str() {
        "/x.Greeter/Fail" => trailers_only("13"),
        p if p.contains("Random") => trailers_only("12"),
        _ => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let frames = futures::stream::iter([
                Ok::<_, micro_core::BoxError>(http_body::Frame::data(Bytes::from_static(b"x"))),
                Ok(http_body::Frame::trailers(trailers)),
            ]);
            Response::new(StreamBody::new(frames).boxed_unsync())
        }
    })
}

async fn call(metrics: &Metrics, server: bool, path: &str) {
    let layer = if server {
        metrics.server()
    } else {
        metrics.client()
    };
    let mut service = layer.layer(tower::service_fn(handler));
    let mut request = Request::builder()
        .uri(path)
        .body(Full::new(Bytes::new()))
        .unwrap();
    request
        .extensions_mut()
        .insert(CallInfo::from_path("greeter2", path));
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    // The outcome of a streamed answer is known at its trailers.
    response.into_body().collect().await.unwrap();
}

fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix))
}

#[tokio::test]
async fn go_micro_series_for_both_sides() {
    let metrics = Metrics::new(MetricsConfig::default());
    for _ in 0..3 {
        call(&metrics, true, "/x.Greeter/Ok").await;
    }
    call(&metrics, true, "/x.Greeter/Fail").await;
    call(&metrics, false, "/x.Greeter/Ok").await;
    call(&metrics, true, "/grpc.health.v1.Health/Check").await;
    let text = metrics.encode();
    assert!(
        text.contains("# TYPE micro_request_total counter"),
        "{text}"
    );
    assert_eq!(
        line(
            &text,
            "micro_request_total{service=\"greeter2\",endpoint=\"Greeter.Ok\",status=\"success\"}"
        ),
        Some(
            "micro_request_total{service=\"greeter2\",endpoint=\"Greeter.Ok\",status=\"success\"} 3"
        )
    );
    assert!(
        line(
            &text,
            "micro_request_total{service=\"greeter2\",endpoint=\"Greeter.Fail\",status=\"fail\"} 1"
        )
        .is_some(),
        "{text}"
    );
    assert!(
        line(&text, "micro_request_duration_seconds_count{service=\"greeter2\",endpoint=\"Greeter.Ok\",status=\"success\"} 3").is_some(),
        "{text}"
    );
    assert!(
        line(&text, "micro_request_duration_seconds_bucket{le=\"0.005\",service=\"greeter2\"").is_some()
            || text.contains("micro_request_duration_seconds_bucket{service=\"greeter2\",endpoint=\"Greeter.Ok\",status=\"success\",le=\"0.005\"}"),
        "{text}"
    );
    assert!(
        line(&text, "micro_client_request_total{service=\"greeter2\",endpoint=\"Greeter.Ok\",status=\"success\"} 1").is_some(),
        "{text}"
    );
    assert!(
        !text.contains("Health"),
        "health checks are not recorded: {text}"
    );
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    assert!(text.contains("process_start_time_seconds"), "{text}");
}

#[tokio::test]
async fn unknown_endpoints_fold_and_label_sets_are_bounded() {
    let metrics = Metrics::new(MetricsConfig {
        process: false,
        ..MetricsConfig::default()
    });
    // greeter2 is a known service (as micro's server knows its own name).
    metrics.server_series().know("greeter2", []);
    for i in 0..20 {
        call(&metrics, true, &format!("/x.Greeter/Random{i}")).await;
    }
    let text = metrics.encode();
    assert!(
        line(
            &text,
            "micro_request_total{service=\"greeter2\",endpoint=\"other\",status=\"fail\"} 20"
        )
        .is_some(),
        "{text}"
    );
    assert!(!text.contains("Random"), "{text}");

    // Past the bound, new endpoints answered OK still fold into `other`.
    let metrics = Metrics::new(MetricsConfig::default());
    for i in 0..MAX_VALUES + 10 {
        call(&metrics, true, &format!("/x.Greeter/M{i}")).await;
    }
    let text = metrics.encode();
    let series = text
        .lines()
        .filter(|l| l.starts_with("micro_request_total{"))
        .count();
    assert_eq!(series, MAX_VALUES + 1, "{series} series");
    assert!(
        line(
            &text,
            "micro_request_total{service=\"greeter2\",endpoint=\"other\",status=\"success\"}"
        )
        .is_some(),
        "no `other` series"
    );
}

#[tokio::test]
async fn options_namespace_constant_labels_buckets_and_opencensus() {
    let metrics = Metrics::new(MetricsConfig {
        namespace: "shop".into(),
        client_subsystem: "out".into(),
        const_labels: vec![("zone".into(), "a".into())],
        buckets: vec![0.5, 1.0],
        opencensus: true,
        process: false,
        ..MetricsConfig::default()
    });
    call(&metrics, true, "/x.Greeter/Ok").await;
    call(&metrics, false, "/x.Greeter/Fail").await;
    let text = metrics.encode();
    assert!(text.contains("shop_request_total{"), "{text}");
    assert!(text.contains("zone=\"a\""), "{text}");
    assert!(
        text.contains("le=\"0.5\"") && !text.contains("le=\"0.005\""),
        "{text}"
    );
    assert!(text.contains("shop_out_request_total{"), "{text}");
    assert!(
        text.contains("opencensus_io_rpc_server_request_count{"),
        "{text}"
    );
    assert!(
        text.contains("opencensus_io_rpc_server_latency_bucket{"),
        "{text}"
    );
    assert!(
        text.contains("opencensus_io_rpc_client_response_count_by_status_code{"),
        "{text}"
    );
    assert!(text.contains("rpc_status=\"INTERNAL\""), "{text}");
}
