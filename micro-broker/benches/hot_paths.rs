//! The events' per-message work without the network: go-micro's envelope written and read,
//! the subscriber's context made from the headers, a typed publish into the embedded broker and
//! its delivery through a subscriber.
//!
//! Run with `cargo bench -p micro-broker --bench hot_paths`.
#![allow(missing_docs)]

use std::{hint::black_box, sync::Arc};

use criterion::{Criterion, criterion_group, criterion_main};
use micro_broker::{
    Broker as _, Memory, Message, Publisher, SubscribeOptions, context, dispatch, envelope,
};

/// The message greeter2 publishes: a 64-byte text, go-micro's headers.
fn message() -> Message {
    use prost::Message as _;
    let body = proto::greeter::Response {
        msg: "x".repeat(64),
    }
    .encode_to_vec();
    let mut message = Message::new(body);
    message
        .header
        .insert("Content-Type".into(), "application/grpc+proto".into());
    message
        .header
        .insert("Micro-Topic".into(), "greeter.events".into());
    message
}

fn envelopes(c: &mut Criterion) {
    let message = message();
    let encoded = envelope::encode(&message);
    c.bench_function("envelope encode", |b| {
        b.iter(|| envelope::encode(black_box(&message)))
    });
    c.bench_function("envelope decode", |b| {
        b.iter(|| envelope::decode(black_box(&encoded)))
    });
    c.bench_function("subscriber context from headers", |b| {
        b.iter(|| context::extract(black_box(&message)))
    });
}

fn publish_and_deliver(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let broker = Memory::new();
    let publisher: Publisher<proto::greeter::Response> =
        Publisher::direct("bench", Arc::new(broker.clone()), None);
    let response = proto::greeter::Response {
        msg: "x".repeat(64),
    };
    c.bench_function("typed publish, no subscriber (embedded)", |b| {
        b.iter(|| runtime.block_on(publisher.publish(black_box(&response))))
    });

    // Publish one, wait for the subscriber's handler to take it.
    let (handled, mut taken) = tokio::sync::mpsc::channel::<()>(1);
    let handle = runtime.block_on(async {
        let subscription = broker
            .subscribe("bench", SubscribeOptions::default())
            .await
            .expect("subscribe");
        let handler = micro_broker::typed::handler(move |_: proto::greeter::Response| {
            let handled = handled.clone();
            async move { handled.send(()).await }
        });
        dispatch::spawn(subscription, handler, 1, None)
    });
    c.bench_function("typed publish -> typed handler (embedded)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                publisher.publish(&response).await.expect("publish");
                taken.recv().await
            })
        })
    });
    drop(handle);
}

criterion_group!(benches, envelopes, publish_and_deliver);
criterion_main!(benches);
