//! Events through a service: typed publish / subscribe on the embedded broker and on a real
//! NATS (started by the test), subscribers listed in the registry as go-micro lists them,
//! metadata and trace position carried, bad input counted, unsupported brokers refused.

use std::{sync::Arc, time::Duration};

use micro::{
    broker::{
        Memory, Message,
        context::{call_context, sampled},
    },
    registry::{Memory as MemoryRegistry, Registry},
};
use micro_test_support::{NatsServer, eventually, user_and_trace};
use parking_lot::Mutex;
use proto::greeter::{FILE_DESCRIPTOR_SET, Response};

/// Waits for `check`, failing the test with `what` when it does not hold within `limit`.
async fn wait_for(limit: Duration, what: &str, check: impl AsyncFnMut() -> bool) {
    assert!(
        eventually(limit, check).await.is_some(),
        "not within {limit:?}: {what}"
    );
}

type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<(u128, u64)>)>>>;

/// A subscriber that records each message, its `x-user` metadata and trace position.
fn recording(topic: &str, seen: &Seen) -> micro::Subscriber {
    let seen = seen.clone();
    micro::Subscriber::new(topic, move |event: Response| {
        let seen = seen.clone();
        async move {
            let (user, trace) = user_and_trace();
            if event.msg == "fail" {
                return Err("asked to fail");
            }
            seen.lock().push((event.msg, user, trace));
            Ok(())
        }
    })
}

#[tokio::test]
async fn embedded_publish_reaches_subscribers_with_metadata_and_trace() -> anyhow::Result<()> {
    let broker = Memory::new();
    let registry = MemoryRegistry::new();
    let seen: Seen = Default::default();
    let consumer = micro::Service::new()
        .name("consumer")
        .registry(registry.clone())
        .broker(broker.clone())
        .descriptors(FILE_DESCRIPTOR_SET)?
        .subscriber(recording("greeter.events", &seen))
        .start()
        .await?;
    let producer = micro::Service::new()
        .name("producer")
        .registry(registry.clone())
        .broker(broker.clone());
    let events = producer.publisher::<Response>("greeter.events");

    // Published while handling a call: the call's metadata and span travel along.
    let mut metadata = http::HeaderMap::new();
    metadata.insert("x-user", "ada".parse()?);
    let context = call_context(metadata, Some(sampled(7, 9)));
    context
        .scope(events.publish(&Response { msg: "one".into() }))
        .await?;
    events.publish(&Response { msg: "fail".into() }).await?;
    events.publish(&Response { msg: "two".into() }).await?;
    // A body that is not a greeter.Response: counted as failed, the subscription goes on.
    micro::broker::Broker::publish(
        &broker,
        "greeter.events",
        Message::new(&b"\xff\xff\xff"[..]),
    )
    .await?;
    events
        .publish(&Response {
            msg: "three".into(),
        })
        .await?;
    wait_for(
        Duration::from_secs(5),
        "three messages handled",
        async || seen.lock().len() == 3,
    )
    .await;
    let seen = seen.lock().clone();
    assert_eq!(
        seen[0],
        ("one".into(), Some("ada".into()), Some((7, 9))),
        "metadata and trace carried"
    );
    assert_eq!(seen[1], ("two".into(), None, None));
    assert_eq!(seen[2].0, "three");
    let counts = consumer_counts(&producer, "greeter.events");
    assert_eq!(counts, (4, 0, 0), "published, counted on the producer side");

    // Listed in the registry as go-micro lists a subscriber.
    let services = registry.get_service("consumer").await?;
    let endpoint = services[0]
        .endpoints
        .iter()
        .find(|e| e.metadata.get("subscriber").map(String::as_str) == Some("true"))
        .expect("the subscriber is listed");
    assert_eq!(endpoint.name, "Func");
    assert_eq!(endpoint.metadata["topic"], "greeter.events");
    let request = endpoint.request.as_ref().expect("the message's shape");
    assert_eq!(
        (request.name.as_str(), request.kind.as_str()),
        ("Response", "Response")
    );
    assert_eq!(request.values[0].name, "msg");
    assert_eq!(services[0].nodes[0].metadata["broker"], "memory");
    consumer.stop().await?;
    Ok(())
}

fn consumer_counts(service: &micro::Service, topic: &str) -> (u64, u64, u64) {
    service.broker_metrics().topic(topic).get()
}

#[tokio::test]
async fn nats_fan_out_and_queue_group_through_services() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let registry = MemoryRegistry::new();
    let flags = |name: &str| {
        vec![
            "test".to_owned(),
            "--server_name".into(),
            name.into(),
            "--broker".into(),
            "nats".into(),
            "--broker_address".into(),
            nats.address(),
        ]
    };
    let (a, b, q1, q2): (Seen, Seen, Seen, Seen) = Default::default();
    let mut running = Vec::new();
    for (name, subscriber) in [
        ("plain-a", recording("orders", &a)),
        ("plain-b", recording("orders", &b)),
        ("worker-1", recording("orders", &q1).queue("workers")),
        ("worker-2", recording("orders", &q2).queue("workers")),
    ] {
        let service = micro::Service::new()
            .registry(registry.clone())
            .try_init_from(flags(name))?
            .subscriber(subscriber);
        running.push(service.start().await?);
    }
    let producer = micro::Service::new()
        .registry(registry.clone())
        .try_init_from(flags("producer"))?;
    let orders = producer.publisher::<Response>("orders");
    // The subscriptions are made before `start` returns; give NATS a moment to route them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..100 {
        orders
            .publish(&Response {
                msg: format!("order {n}"),
            })
            .await?;
    }
    wait_for(
        Duration::from_secs(10),
        "every message delivered",
        async || {
            a.lock().len() == 100
                && b.lock().len() == 100
                && q1.lock().len() + q2.lock().len() == 100
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        q1.lock().len() + q2.lock().len(),
        100,
        "each message once in the group"
    );
    assert!(!q1.lock().is_empty() && !q2.lock().is_empty());
    let services = registry.get_service("worker-1").await?;
    assert_eq!(services[0].nodes[0].metadata["broker"], "nats");
    for service in running {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn unsupported_brokers_are_a_clear_error_naming_the_supported_ones() {
    for kind in ["http", "rabbitmq", "kafka"] {
        let err = micro::Service::new()
            .try_init_from(["test", "--broker", kind])
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(
            text.contains(kind) && text.contains("memory") && text.contains("nats"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_nats_fails_the_start_with_no_node_registered() -> anyhow::Result<()> {
    let port = micro_test_support::free_port()?;
    let registry = MemoryRegistry::new();
    let service = micro::Service::new()
        .name("lonely")
        .registry(registry.clone())
        .try_init_from([
            "test".to_owned(),
            "--broker=nats".into(),
            format!("--broker_address=127.0.0.1:{port}"),
        ])?;
    let err = service.start().await.err().expect("no NATS there");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        registry
            .get_service("lonely")
            .await
            .unwrap_or_default()
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn wrappers_see_every_message_and_the_series_count_per_topic() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let broker = Memory::new();
    let seen: Seen = Default::default();
    let wrapped = Arc::new(AtomicUsize::new(0));
    let count = wrapped.clone();
    let service = micro::Service::new()
        .name("observed")
        .registry(MemoryRegistry::new())
        .broker(broker)
        .metrics_address("127.0.0.1:0")
        // A publish wrapper adds metadata; a subscriber wrapper counts what it sees.
        .wrap_publish(tower::layer::layer_fn(
            |inner: micro::broker::PublishService| {
                tower::service_fn(move |mut publication: micro::broker::Publication| {
                    publication
                        .message
                        .header
                        .insert("x-user".into(), "wrapper".into());
                    tower::ServiceExt::oneshot(inner.clone(), publication)
                })
            },
        ))
        .wrap_subscriber(tower::layer::layer_fn(
            move |inner: micro::broker::Handler| {
                let count = count.clone();
                tower::service_fn(move |event: micro::broker::Event| {
                    count.fetch_add(1, Ordering::Relaxed);
                    tower::ServiceExt::oneshot(inner.clone(), event)
                })
            },
        ))
        .subscriber(recording("audit", &seen));
    let audit = service.publisher::<Response>("audit");
    let running = service.start().await?;
    for msg in ["a", "fail", "b"] {
        audit.publish(&Response { msg: msg.into() }).await?;
    }
    wait_for(Duration::from_secs(5), "two handled", async || {
        seen.lock().len() == 2
    })
    .await;
    assert_eq!(
        seen.lock()[0].1.as_deref(),
        Some("wrapper"),
        "the publish wrapper's header"
    );
    wait_for(
        Duration::from_secs(5),
        "the wrapper saw three",
        async || wrapped.load(Ordering::Relaxed) == 3,
    )
    .await;
    let address = running.metrics_addr().expect("metrics on");
    let expected = [
        r#"micro_broker_published_total{topic="audit"} 3"#,
        r#"micro_broker_delivered_total{topic="audit"} 2"#,
        r#"micro_broker_failed_total{topic="audit"} 1"#,
    ];
    let mut text = String::new();
    wait_for(Duration::from_secs(5), "the broker series", async || {
        text = micro_test_support::peers::http_get(&format!("http://{address}/metrics"))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        expected.iter().all(|line| text.contains(line))
    })
    .await;
    running.stop().await?;
    Ok(())
}

/// Tracing on: a handler publishes while handling a call; the subscriber's calls continue that
/// trace, their client span a child of the publishing handler's server span.
#[tokio::test]
async fn a_traced_publisher_s_trace_continues_in_the_subscriber_s_calls() -> anyhow::Result<()> {
    use micro::trace::{Exporter, OtlpProtocol, SamplerConfig, TraceConfig};
    use micro_test_support::peers::OtlpGrpcReceiver;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use proto::greeter::{Request, greeter_client::GreeterClient, greeter_server::GreeterServer};

    let traced = |receiver: &OtlpGrpcReceiver, name: &str| {
        TraceConfig::default()
            .sampler(SamplerConfig::AlwaysOn)
            .batch_delay(Duration::from_millis(100))
            .exporters([Exporter::Otlp])
            .otlp_protocol(OtlpProtocol::Grpc)
            .otlp_endpoint(receiver.endpoint())
            .service_name(name)
    };
    let (to_producer, to_consumer) = (
        OtlpGrpcReceiver::start().await?,
        OtlpGrpcReceiver::start().await?,
    );
    let registry = MemoryRegistry::new();
    let broker = Memory::new();
    let backend = micro::Service::new()
        .name("backend")
        .registry(registry.clone())
        .handle(GreeterServer::new(examples::Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await?;
    let mut consumer = micro::Service::new()
        .name("consumer")
        .registry(registry.clone())
        .broker(broker.clone())
        .tracing(traced(&to_consumer, "consumer"));
    let backend_client = GreeterClient::new(consumer.client().channel("backend"));
    let consumer = consumer
        .subscribe("answers", move |event: Response| {
            let mut backend = backend_client.clone();
            async move {
                backend.test(Request { name: event.msg }).await?;
                Ok::<_, tonic::Status>(())
            }
        })
        .start()
        .await?;
    let producer = micro::Service::new()
        .name("producer")
        .registry(registry.clone())
        .broker(broker.clone())
        .tracing(traced(&to_producer, "producer"));
    let events = producer.publisher("answers");
    let producer = producer
        .handle(GreeterServer::new(examples::Greeter2Events {
            inner: examples::Greeter2 {
                test_sleep: Duration::ZERO,
            },
            events,
        }))
        .start()
        .await?;

    micro_test_support::greeter_at(producer.local_addr())
        .await
        .test(Request { name: "t".into() })
        .await?;
    let mut found = None;
    wait_for(Duration::from_secs(20), "both spans exported", async || {
        let server = to_producer
            .received()
            .spans()
            .into_iter()
            .map(|(_, span)| span)
            .find(|span| span.kind == SpanKind::Server as i32);
        let client = to_consumer
            .received()
            .spans()
            .into_iter()
            .map(|(_, span)| span)
            .find(|span| span.kind == SpanKind::Client as i32);
        found = server.zip(client);
        found.is_some()
    })
    .await;
    let (server, client) = found.expect("spans");
    assert_eq!(
        client.trace_id, server.trace_id,
        "one trace across the broker"
    );
    assert_eq!(
        client.parent_span_id, server.span_id,
        "the subscriber's call is a child of the publishing handler's span"
    );
    producer.stop().await?;
    consumer.stop().await?;
    backend.stop().await?;
    Ok(())
}
