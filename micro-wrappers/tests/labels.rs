//! The call series' label values stay bounded: the known ones, then the first
//! `MAX_VALUES` others per label, then one fold value, `other`; a call answered
//! `UNIMPLEMENTED` admits no new value. Calls carry a micro `CallInfo`, or (a bare tonic app)
//! only their path.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use micro_core::CallInfo;
use micro_wrappers::metrics::{MAX_VALUES, Metrics, MetricsConfig, OTHER};
use tower::{Layer, Service, ServiceExt};

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, micro_core::BoxError>;

/// Answers trailers-only: `UNIMPLEMENTED` for paths with `Nope`, else OK.
async fn handler(request: Request<Full<Bytes>>) -> Result<Response<BoxBody>, micro_core::BoxError> {
    let code = if request.uri().path().contains("Nope") {
        "12"
    } else {
        "0"
    };
    Ok(Response::builder()
        .header("grpc-status", code)
        .body(Full::new(Bytes::new()).map_err(Into::into).boxed_unsync())?)
}

/// One handled call of `path`, with a `CallInfo` for `service` if given.
async fn call(metrics: &Metrics, service: Option<&str>, path: &str) {
    let mut layered = metrics.server().layer(tower::service_fn(handler));
    let mut request = Request::builder()
        .uri(path)
        .body(Full::new(Bytes::new()))
        .unwrap();
    if let Some(service) = service {
        request
            .extensions_mut()
            .insert(CallInfo::from_path(service, path));
    }
    let response = layered.ready().await.unwrap().call(request).await.unwrap();
    response.into_body().collect().await.unwrap();
}

fn metrics() -> Metrics {
    Metrics::new(MetricsConfig {
        process: false,
        ..MetricsConfig::default()
    })
}

/// The value of the `micro_request_total` series with these labels.
fn total(text: &str, service: &str, endpoint: &str, status: &str) -> Option<u64> {
    let series = format!(
        "micro_request_total{{service=\"{service}\",endpoint=\"{endpoint}\",status=\"{status}\"}} "
    );
    text.lines()
        .find_map(|line| line.strip_prefix(&series)?.parse().ok())
}

fn series_count(text: &str) -> usize {
    text.lines()
        .filter(|line| line.starts_with("micro_request_total{"))
        .count()
}

#[tokio::test]
async fn the_101st_service_folds_into_other() {
    let metrics = metrics();
    for i in 0..=MAX_VALUES {
        call(&metrics, Some(&format!("svc{i}")), "/x.Greeter/Hello").await;
    }
    // Seen before the bound: still its own series.
    call(&metrics, Some("svc7"), "/x.Greeter/Hello").await;
    let text = metrics.encode();
    assert_eq!(total(&text, "svc0", "Greeter.Hello", "success"), Some(1));
    assert_eq!(total(&text, "svc7", "Greeter.Hello", "success"), Some(2));
    let last = format!("svc{MAX_VALUES}");
    assert_eq!(
        total(&text, &last, "Greeter.Hello", "success"),
        None,
        "{text}"
    );
    assert_eq!(
        total(&text, OTHER, "Greeter.Hello", "success"),
        Some(1),
        "{text}"
    );
    assert_eq!(series_count(&text), MAX_VALUES + 1);
    assert!(!text.contains("unknown"), "one fold value: {text}");
}

#[tokio::test]
async fn known_services_and_endpoints_never_fold() {
    let metrics = metrics();
    metrics
        .server_series()
        .know("greeter", ["Greeter.Hello", "Greeter.Test"]);
    for i in 0..MAX_VALUES + 5 {
        call(
            &metrics,
            Some(&format!("svc{i}")),
            &format!("/x.Greeter/M{i}"),
        )
        .await;
    }
    call(&metrics, Some("greeter"), "/x.Greeter/Test").await;
    let text = metrics.encode();
    assert_eq!(
        total(&text, "greeter", "Greeter.Test", "success"),
        Some(1),
        "{text}"
    );
    // Known before any call: their handles exist, with nothing counted yet.
    assert_eq!(total(&text, "greeter", "Greeter.Hello", "success"), None);
    assert_eq!(total(&text, OTHER, OTHER, "success"), Some(5), "{text}");
}

#[tokio::test]
async fn unimplemented_calls_admit_no_new_value() {
    let metrics = metrics();
    call(&metrics, Some("greeter"), "/x.Greeter/Hello").await;
    for i in 0..3 * MAX_VALUES {
        call(
            &metrics,
            Some(&format!("rnd{i}")),
            &format!("/x.Greeter/Nope{i}"),
        )
        .await;
        call(&metrics, Some("greeter"), &format!("/x.Greeter/Nope{i}")).await;
    }
    let text = metrics.encode();
    assert_eq!(
        total(&text, OTHER, OTHER, "fail"),
        Some(3 * MAX_VALUES as u64)
    );
    assert_eq!(
        total(&text, "greeter", OTHER, "fail"),
        Some(3 * MAX_VALUES as u64)
    );
    assert!(!text.contains("rnd") && !text.contains("Nope"), "{text}");
    // The bound was not used up: a new service and endpoint answered keep their names.
    call(&metrics, Some("late"), "/x.Greeter/Late").await;
    let text = metrics.encode();
    assert_eq!(
        total(&text, "late", "Greeter.Late", "success"),
        Some(1),
        "{text}"
    );
}

#[tokio::test]
async fn a_bare_tonic_apps_labels_come_from_the_path_and_are_bounded() {
    let metrics = metrics();
    for i in 0..MAX_VALUES + 3 {
        call(&metrics, None, &format!("/pkg.S{i}/Hello")).await;
    }
    call(&metrics, None, "/pkg.S0/Hello").await;
    call(&metrics, None, "/grpc.health.v1.Health/Check").await;
    call(
        &metrics,
        None,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    )
    .await;
    let text = metrics.encode();
    assert_eq!(
        total(&text, "pkg.S0", "S0.Hello", "success"),
        Some(2),
        "{text}"
    );
    // The endpoint label is bounded too: each of the 100 first services brought one.
    assert_eq!(total(&text, OTHER, OTHER, "success"), Some(3), "{text}");
    assert!(
        !text.contains("Health") && !text.contains("Reflection"),
        "{text}"
    );
}

#[tokio::test]
async fn services_the_registry_knows_keep_their_names_past_the_bound() {
    let metrics = metrics();
    assert!(
        metrics
            .server_series()
            .known_services(|service| service.starts_with("registered"))
    );
    for i in 0..MAX_VALUES {
        call(&metrics, Some(&format!("svc{i}")), "/x.Greeter/Hello").await;
    }
    call(&metrics, Some("registered-a"), "/x.Greeter/Hello").await;
    call(&metrics, Some("stranger"), "/x.Greeter/Hello").await;
    let text = metrics.encode();
    assert_eq!(
        total(&text, "registered-a", "Greeter.Hello", "success"),
        Some(1),
        "{text}"
    );
    assert_eq!(
        total(&text, OTHER, "Greeter.Hello", "success"),
        Some(1),
        "{text}"
    );
}
