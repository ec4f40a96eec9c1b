//! The NATS broker against a real `nats-server` started by each test on a free loopback port:
//! fan-out, queue groups, a server restart while publishing, a payload that is not an envelope.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use micro_broker::{
    Broker, Event, Handler, Message, Nats, SubscribeOptions, SubscriberHandle, dispatch,
};
use micro_test_support::{NatsServer, eventually};

/// Waits for `check`, failing the test with `what` when it does not hold within `limit`.
async fn wait_for(limit: Duration, what: &str, check: impl AsyncFnMut() -> bool) {
    assert!(
        eventually(limit, check).await.is_some(),
        "not within {limit:?}: {what}"
    );
}
use parking_lot::Mutex;

/// A subscriber that records the bodies it gets.
fn recording(
    broker: &Nats,
    subscription: micro_broker::Subscription,
) -> (SubscriberHandle, Arc<Mutex<Vec<u64>>>) {
    let _ = broker;
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let handler = Handler::new(tower::service_fn(move |event: Event| {
        let sink = sink.clone();
        async move {
            let n = std::str::from_utf8(&event.message.body)?.parse::<u64>()?;
            sink.lock().push(n);
            Ok::<_, micro_core::BoxError>(())
        }
    }));
    (dispatch::spawn(subscription, handler, 8, None), got)
}

fn numbered(n: u64) -> Message {
    let mut message = Message::new(n.to_string());
    message
        .header
        .insert("Content-Type".into(), "text/plain".into());
    message
}

async fn connect(nats: &NatsServer) -> Nats {
    Nats::connect(&[nats.address()]).await.expect("connect")
}

#[tokio::test]
async fn fan_out_to_two_subscribers_and_one_per_queue_group() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let broker = connect(&nats).await;
    let options = SubscribeOptions::default;
    let (_a, a) = recording(&broker, broker.subscribe("events", options()).await?);
    let (_b, b) = recording(&broker, broker.subscribe("events", options()).await?);
    let (_q1, q1) = recording(
        &broker,
        broker
            .subscribe("events", options().queue("workers"))
            .await?,
    );
    let (_q2, q2) = recording(
        &broker,
        broker
            .subscribe("events", options().queue("workers"))
            .await?,
    );
    // The subscriptions reach the server before the first publish.
    broker.flush().await?;
    for n in 0..200 {
        broker.publish("events", numbered(n)).await?;
    }
    broker.flush().await?;
    wait_for(
        Duration::from_secs(10),
        "all 200 messages arrive",
        async || {
            a.lock().len() == 200
                && b.lock().len() == 200
                && q1.lock().len() + q2.lock().len() == 200
        },
    )
    .await;
    for plain in [&a, &b] {
        let mut got = plain.lock().clone();
        got.sort_unstable();
        assert_eq!(
            got,
            (0..200).collect::<Vec<_>>(),
            "every plain subscriber gets every message"
        );
    }
    let mut shared: Vec<u64> = q1.lock().iter().chain(q2.lock().iter()).copied().collect();
    shared.sort_unstable();
    assert_eq!(
        shared,
        (0..200).collect::<Vec<_>>(),
        "the group gets each message once"
    );
    assert!(
        !q1.lock().is_empty() && !q2.lock().is_empty(),
        "both members of the group got some: {} and {}",
        q1.lock().len(),
        q2.lock().len()
    );
    Ok(())
}

#[tokio::test]
async fn a_payload_that_is_not_an_envelope_is_counted_and_the_subscription_goes_on()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let broker = connect(&nats).await;
    let (handle, got) = recording(
        &broker,
        broker.subscribe("events", Default::default()).await?,
    );
    broker.flush().await?;
    let raw = async_nats::connect(nats.url()).await?;
    raw.publish("events", "not json".into()).await?;
    raw.publish("events", "{\"Body\":\"@@@\"}".into()).await?;
    raw.flush().await?;
    // A message whose body the handler cannot parse fails, and is counted too.
    broker.publish("events", Message::new("x")).await?;
    broker.publish("events", numbered(7)).await?;
    broker.flush().await?;
    wait_for(
        Duration::from_secs(10),
        "the good message arrives",
        async || got.lock().len() == 1,
    )
    .await;
    wait_for(
        Duration::from_secs(5),
        "two undecodable and one failed counted",
        async || handle.stats().undecodable() == 2 && handle.stats().failed() == 1,
    )
    .await;
    assert_eq!(*got.lock(), [7]);
    assert_eq!(handle.stats().delivered(), 1);
    Ok(())
}

#[tokio::test]
async fn nats_restarted_while_publishing_the_subscriber_resumes_and_losses_are_counted()
-> anyhow::Result<()> {
    let mut nats = NatsServer::start().await?;
    let publisher = connect(&nats).await;
    let consumer = connect(&nats).await;
    let (_handle, got) = recording(
        &consumer,
        consumer.subscribe("events", Default::default()).await?,
    );
    consumer.flush().await?;

    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let publishing = {
        let (sent, refused, stop) = (sent.clone(), refused.clone(), stop.clone());
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            let mut n = 0;
            loop {
                tokio::select! {
                    _ = stop.notified() => break,
                    _ = tick.tick() => {}
                }
                match publisher.publish("events", numbered(n)).await {
                    Ok(()) => sent.fetch_add(1, Ordering::Relaxed),
                    Err(micro_broker::Error::NotConnected { .. }) => {
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => panic!("publish failed otherwise: {e}"),
                };
                n += 1;
            }
        })
    };
    wait_for(
        Duration::from_secs(10),
        "50 messages before the restart",
        async || got.lock().len() >= 50,
    )
    .await;
    nats.stop().await?;
    wait_for(
        Duration::from_secs(10),
        "a publish refused while NATS is down",
        async || refused.load(Ordering::Relaxed) > 0,
    )
    .await;
    nats.start_again().await?;
    let before_restart = got.lock().len();
    // The subscriber resumes: messages published after the restart arrive.
    wait_for(
        Duration::from_secs(20),
        "100 more messages after the restart",
        async || got.lock().len() >= before_restart + 100,
    )
    .await;
    stop.notify_one();
    publishing.await?;
    publisher.flush().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sent = sent.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    let received = got.lock().len() as u64;
    let lost = sent.saturating_sub(received);
    println!(
        "nats restart: {sent} published, {refused} refused while down (fail fast), {received} \
         received, {lost} lost (accepted but not delivered: at most once); publisher \
         disconnects {} reconnects {}, consumer reconnects {}",
        publisher.stats().disconnects(),
        publisher.stats().reconnects(),
        consumer.stats().reconnects(),
    );
    assert!(refused > 0, "publishing while NATS was down failed fast");
    assert_eq!(publisher.stats().refused(), refused);
    assert!(consumer.stats().reconnects() >= 1 && publisher.stats().reconnects() >= 1);
    assert!(received <= sent, "no message twice");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_at_connect() -> anyhow::Result<()> {
    let port = micro_test_support::free_port()?;
    let err = Nats::connect(&[format!("127.0.0.1:{port}")])
        .await
        .expect_err("nothing listens there");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    Ok(())
}
