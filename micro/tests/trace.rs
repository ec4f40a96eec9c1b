//! Tracing end to end over real TCP: two services in one process each find their spans only
//! at their own exporter, under their own name; a handler's own spans (the `tracing` crate,
//! recorded by the `HandlerSpans` layer) sit under the call's server span, nested ones under
//! their enclosing span, with the handler's calls under them, read back from a real Zipkin.

use std::time::Duration;

use examples::Greeter2;
use micro::{
    registry::Memory,
    trace::{Exporter, OtlpProtocol, SamplerConfig, TraceConfig},
};
use micro_test_support::peers::{OtlpGrpcReceiver, Zipkin, http_get, poll};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use proto::greeter::{
    Request, Response,
    greeter_client::GreeterClient,
    greeter_server::{Greeter, GreeterServer},
};
use serde_json::Value;
use tonic::{Status, transport::Channel};
use tracing::Instrument as _;

const WAIT: Duration = Duration::from_secs(60);

fn traced() -> TraceConfig {
    TraceConfig::default()
        .sampler(SamplerConfig::AlwaysOn)
        .batch_delay(Duration::from_millis(100))
}

fn otlp(endpoint: String) -> TraceConfig {
    traced()
        .exporters([Exporter::Otlp])
        .otlp_protocol(OtlpProtocol::Grpc)
        .otlp_endpoint(endpoint)
}

async fn connect(address: std::net::SocketAddr) -> GreeterClient<Channel> {
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    GreeterClient::new(channel)
}

/// `alpha` calls `beta` in one process: alpha's exporter gets alpha's two spans only, beta's
/// gets beta's one, each under its service's name, one trace across both.
#[tokio::test]
async fn two_services_in_one_process_export_only_their_own_spans() {
    let (to_alpha, to_beta) = (
        OtlpGrpcReceiver::start().await.unwrap(),
        OtlpGrpcReceiver::start().await.unwrap(),
    );
    let registry = Memory::new();
    let beta = micro::Service::new()
        .name("greeter2")
        .registry(registry.clone())
        .tracing(otlp(to_beta.endpoint()).service_name("beta"))
        .handle(GreeterServer::new(Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await
        .unwrap();
    let mut alpha = micro::Service::new()
        .name("greeter1")
        .registry(registry)
        .tracing(otlp(to_alpha.endpoint()).service_name("alpha"));
    let greeter2 = GreeterClient::new(alpha.client().channel("greeter2"));
    let alpha = alpha
        .handle(GreeterServer::new(examples::Greeter1 { greeter2 }))
        .start()
        .await
        .unwrap();
    for _ in 0..3 {
        connect(alpha.local_addr())
            .await
            .hello(Request { name: "x".into() })
            .await
            .unwrap();
    }
    poll(WAIT, || async {
        let spans = to_alpha.received().spans();
        (spans.len() >= 6).then_some(spans)
    })
    .await
    .expect("alpha's six spans");
    poll(WAIT, || async {
        let spans = to_beta.received().spans();
        (spans.len() >= 3).then_some(spans)
    })
    .await
    .expect("beta's three spans");
    // Anything misrouted would have arrived with the rest by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (alphas, betas) = (to_alpha.received().spans(), to_beta.received().spans());
    assert_eq!(alphas.len(), 6, "{alphas:#?}");
    assert_eq!(betas.len(), 3, "{betas:#?}");
    assert!(
        alphas.iter().all(|(service, _)| service == "alpha"),
        "{alphas:#?}"
    );
    assert!(
        betas.iter().all(|(service, _)| service == "beta"),
        "{betas:#?}"
    );
    let kinds = |spans: &[(String, opentelemetry_proto::tonic::trace::v1::Span)],
                 kind: SpanKind| {
        spans.iter().filter(|(_, s)| s.kind == kind as i32).count()
    };
    assert_eq!(kinds(&alphas, SpanKind::Server), 3);
    assert_eq!(kinds(&alphas, SpanKind::Client), 3);
    assert_eq!(kinds(&betas, SpanKind::Server), 3);
    for (_, server) in &betas {
        let client = alphas
            .iter()
            .find(|(_, c)| c.span_id == server.parent_span_id)
            .expect("beta's span under one of alpha's client spans");
        assert_eq!(client.1.trace_id, server.trace_id);
    }
    alpha.stop().await.unwrap();
    beta.stop().await.unwrap();
}

/// A handler that opens spans of its own around its calls to greeter2 with the `tracing`
/// crate: one, and one inside another (with a field).
#[derive(Clone)]
struct Spanning {
    greeter2: GreeterClient<micro::Channel>,
}

#[tonic::async_trait]
impl Greeter for Spanning {
    async fn hello(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        let name = request.into_inner().name;
        let mut greeter2 = self.greeter2.clone();
        let first = greeter2
            .test(Request { name: name.clone() })
            .instrument(tracing::info_span!("user.tracing"))
            .await?
            .into_inner();
        let second = async {
            greeter2
                .test(Request { name })
                .instrument(tracing::info_span!("user.inner", step = 2))
                .await
        }
        .instrument(tracing::info_span!("user.outer"))
        .await?
        .into_inner();
        Ok(tonic::Response::new(Response {
            msg: format!("{} {}", first.msg, second.msg),
        }))
    }

    async fn test(&self, _: tonic::Request<Request>) -> Result<tonic::Response<Response>, Status> {
        Err(Status::unimplemented("test"))
    }
}

#[tokio::test]
async fn a_handlers_own_spans_are_children_of_the_server_span_in_zipkin() {
    use tracing_subscriber::{Layer as _, layer::SubscriberExt as _};
    // The application's subscriber: its own spans (this file's) are recorded in the trace.
    let subscriber = tracing_subscriber::registry().with(micro::trace::HandlerSpans.with_filter(
        tracing_subscriber::filter::Targets::new().with_target("trace", tracing::Level::INFO),
    ));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let zipkin = Zipkin::start().await.unwrap();
    let config = traced()
        .exporters([Exporter::Zipkin])
        .zipkin_endpoint(zipkin.spans_endpoint());
    let registry = Memory::new();
    let greeter2 = micro::Service::new()
        .name("greeter2")
        .registry(registry.clone())
        .tracing(config.clone().service_name("users-greeter2"))
        .handle(GreeterServer::new(Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await
        .unwrap();
    let mut greeter1 = micro::Service::new()
        .name("greeter1")
        .registry(registry)
        .tracing(config.service_name("users-greeter1"));
    let client = GreeterClient::new(greeter1.client().channel("greeter2"));
    let greeter1 = greeter1
        .handle(GreeterServer::new(Spanning { greeter2: client }))
        .start()
        .await
        .unwrap();
    connect(greeter1.local_addr())
        .await
        .hello(Request { name: "u".into() })
        .await
        .unwrap();
    greeter1.stop().await.unwrap();
    greeter2.stop().await.unwrap();

    let url = format!(
        "{}/api/v2/traces?serviceName=users-greeter1&limit=10",
        zipkin.url()
    );
    // server1, user.tracing, client, server2, user.outer, user.inner, client, server2
    let trace = poll(WAIT, || async {
        let (_, text) = http_get(&url).await.ok()?;
        let traces: Vec<Vec<Value>> = serde_json::from_str(&text).ok()?;
        traces.into_iter().find(|t| t.len() >= 8)
    })
    .await
    .expect("the trace's eight spans in Zipkin");
    let one = |pred: &dyn Fn(&Value) -> bool, what: &str| -> Value {
        let found: Vec<&Value> = trace.iter().filter(|s| pred(s)).collect();
        assert_eq!(found.len(), 1, "one {what} in {trace:#?}");
        found[0].clone()
    };
    let service = |s: &Value| {
        s["localEndpoint"]["serviceName"]
            .as_str()
            .map(str::to_owned)
    };
    let server1 = one(
        &|s| service(s).as_deref() == Some("users-greeter1") && s["kind"] == "SERVER",
        "greeter1 server span",
    );
    let outer = one(&|s| s["name"] == "user.outer", "user.outer");
    assert_eq!(
        outer["parentId"], server1["id"],
        "user.outer under the server span"
    );
    for (user, parent) in [("user.tracing", &server1), ("user.inner", &outer)] {
        let span = one(&|s| s["name"] == user, user);
        assert_eq!(span["parentId"], parent["id"], "{user} under its parent");
        assert_eq!(service(&span).as_deref(), Some("users-greeter1"));
        let client = one(
            &|s| s["kind"] == "CLIENT" && s["parentId"] == span["id"],
            "client span under the user's span",
        );
        one(
            &|s| s["kind"] == "SERVER" && s["parentId"] == client["id"],
            "greeter2's server span under that client span",
        );
    }
    let inner = one(&|s| s["name"] == "user.inner", "user.inner");
    assert_eq!(inner["tags"]["step"], "2", "the span's field as a tag");
}
