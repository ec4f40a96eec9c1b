//! Runs a subscription's messages through a handler, a bounded number at a time.
//!
//! The handler is a tower service of [`Event`]s (go-micro's subscriber `server.Message`: topic,
//! headers, encoded body), so subscriber wrappers are tower layers (go-micro's
//! `WrapSubscriber`). **Backpressure**: at most `max_in_flight` messages of one subscription
//! are being handled at once; the dispatcher takes the next message from the subscription
//! only when one of them is done, so the rest wait in the subscription's own bounded buffer
//! ([`crate::SubscribeOptions::capacity`]), and past that bound the broker drops them
//! (counted). A slow handler therefore costs messages, never unbounded memory.
//!
//! A handler's error, a panic in it and a payload that is not go-micro's envelope are logged
//! with the topic and counted ([`SubscriberStats`]); the subscription keeps running. Neither
//! broker has acknowledgements (core NATS is at most once), so a failed message is not
//! delivered again.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{FutureExt as _, StreamExt as _};
use micro_core::BoxError;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::{Service as _, ServiceExt as _, util::BoxCloneSyncService};

use crate::{Message, Subscription};

/// One message for a subscriber: the topic, headers and encoded body (go-micro's
/// `server.Message`).
#[derive(Clone, Debug)]
pub struct Event {
    /// The topic it was published to.
    pub topic: Arc<str>,
    /// Headers and body.
    pub message: Message,
}

/// A subscriber handler: a tower service of events. `Err` means the message failed.
pub type Handler = BoxCloneSyncService<Event, (), BoxError>;

/// How a message ended, as a subscription's observer is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The handler took it.
    Delivered,
    /// The handler failed (or panicked).
    Failed,
    /// The payload was not go-micro's envelope; no handler saw it.
    Undecodable,
}

/// Told of every message's end: (topic, outcome). Metrics attach here.
pub type Observer = Arc<dyn Fn(&str, Outcome) + Send + Sync>;

/// The messages of one subscription so far.
#[derive(Debug, Default)]
pub struct SubscriberStats {
    delivered: AtomicU64,
    failed: AtomicU64,
    undecodable: AtomicU64,
}

impl SubscriberStats {
    /// Handled without error.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
    /// The handler failed or panicked.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// The payload was not an envelope (no handler saw it).
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    fn record(&self, outcome: Outcome) {
        match outcome {
            Outcome::Delivered => &self.delivered,
            Outcome::Failed => &self.failed,
            Outcome::Undecodable => &self.undecodable,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// A running subscriber. [`SubscriberHandle::stop`] unsubscribes and waits for the messages
/// in flight; dropped, it unsubscribes and lets them finish.
#[derive(Debug)]
pub struct SubscriberHandle {
    topic: Arc<str>,
    queue: Option<String>,
    stats: Arc<SubscriberStats>,
    stop: CancellationToken,
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SubscriberHandle {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The queue group, if any.
    pub fn queue(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    /// The counts so far.
    pub fn stats(&self) -> &Arc<SubscriberStats> {
        &self.stats
    }

    /// Unsubscribes, then waits up to `grace` for the messages being handled.
    pub async fn stop(mut self, grace: Duration) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let drained = self.in_flight.acquire_many(self.max_in_flight);
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(topic = %self.topic, "subscriber stopped with messages still being handled");
        }
    }
}

impl Drop for SubscriberHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Runs `subscription` through `handler` on a task of the current runtime, at most
/// `max_in_flight` (at least 1) messages at once.
pub fn spawn(
    subscription: Subscription,
    handler: Handler,
    max_in_flight: usize,
    observer: Option<Observer>,
) -> SubscriberHandle {
    let max_in_flight = u32::try_from(max_in_flight.clamp(1, Semaphore::MAX_PERMITS))
        .unwrap_or(u32::MAX)
        .max(1);
    let topic: Arc<str> = subscription.topic().into();
    let queue = subscription.queue().map(str::to_owned);
    let stats = Arc::new(SubscriberStats::default());
    let stop = CancellationToken::new();
    let in_flight = Arc::new(Semaphore::new(max_in_flight as usize));
    let task = tokio::spawn(run(
        subscription,
        handler,
        in_flight.clone(),
        stats.clone(),
        observer,
        stop.clone(),
    ));
    SubscriberHandle {
        topic,
        queue,
        stats,
        stop,
        in_flight,
        max_in_flight,
        task: Some(task),
    }
}

async fn run(
    mut subscription: Subscription,
    mut handler: Handler,
    in_flight: Arc<Semaphore>,
    stats: Arc<SubscriberStats>,
    observer: Option<Observer>,
    stop: CancellationToken,
) {
    let record = move |topic: &str, outcome: Outcome| {
        stats.record(outcome);
        if let Some(observer) = &observer {
            observer(topic, outcome);
        }
    };
    let record = Arc::new(record);
    let inline = in_flight.available_permits() == 1;
    loop {
        // A permit first: the next message is taken only when there is room for it.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let delivery = tokio::select! {
            _ = stop.cancelled() => break,
            delivery = subscription.next() => match delivery {
                Some(delivery) => delivery,
                None => break,
            },
        };
        let message = match delivery.message {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(topic = %delivery.topic, %error, "message dropped: it does not decode");
                record(&delivery.topic, Outcome::Undecodable);
                continue;
            }
        };
        let event = Event {
            topic: delivery.topic,
            message,
        };
        let topic = event.topic.clone();
        if inline {
            // One at a time: no task per message, the order kept, the handler not cloned.
            let handled = async {
                let ready = handler.ready().await?;
                ready.call(event).await
            };
            handle(handled, topic, &*record, permit).await;
        } else {
            let handled = handler.clone().oneshot(event);
            let record = record.clone();
            tokio::spawn(async move { handle(handled, topic, &*record, permit).await });
        }
    }
    tracing::debug!(topic = subscription.topic(), "subscriber ended");
}

/// Runs one event through the handler, records how it ended, then frees its permit.
async fn handle(
    handled: impl std::future::Future<Output = Result<(), BoxError>>,
    topic: Arc<str>,
    record: &impl Fn(&str, Outcome),
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let handled = AssertUnwindSafe(handled).catch_unwind().await;
    let outcome = match handled {
        Ok(Ok(())) => Outcome::Delivered,
        Ok(Err(error)) => {
            tracing::warn!(%topic, %error, "subscriber failed");
            Outcome::Failed
        }
        Err(_) => {
            tracing::error!(%topic, "subscriber panicked");
            Outcome::Failed
        }
    };
    record(&topic, outcome);
    drop(permit);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::{Broker as _, Memory, SubscribeOptions};

    /// At most `max_in_flight` messages are handled at once; past the subscription's capacity
    /// the broker drops (and counts) instead of buffering without bound.
    #[tokio::test]
    async fn in_flight_and_buffer_are_bounded() {
        let broker = Memory::new();
        let options = SubscribeOptions {
            capacity: 4,
            ..Default::default()
        };
        let subscription = broker.subscribe("t", options).await.unwrap();
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let handler = {
            let (now, peak, gate) = (now.clone(), peak.clone(), gate.clone());
            Handler::new(tower::service_fn(move |_event: Event| {
                let (now, peak, gate) = (now.clone(), peak.clone(), gate.clone());
                async move {
                    let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(running, Ordering::SeqCst);
                    gate.acquire().await?.forget();
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, BoxError>(())
                }
            }))
        };
        let handle = spawn(subscription, handler, 3, None);
        for _ in 0..20 {
            broker.publish("t", Message::default()).await.unwrap();
            tokio::task::yield_now().await;
        }
        // 3 being handled, 4 waiting in the subscription, the rest dropped.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(broker.dropped(), 20 - 3 - 4);
        gate.add_permits(100);
        let stats = handle.stats().clone();
        for _ in 0..100 {
            if stats.delivered() == 7 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.delivered(), 7);
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        handle.stop(Duration::from_secs(1)).await;
    }
}
