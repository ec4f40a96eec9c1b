//! The embedded broker: publish / subscribe inside one process, no network (go-micro's memory
//! broker). Messages are handed over as they are, not encoded.
//!
//! Each subscription holds at most its capacity of messages; a message published to a full
//! subscription is dropped for that subscription (counted in [`Memory::dropped`], logged), so a
//! slow subscriber neither grows memory nor blocks the publisher and the other subscribers, as
//! on NATS.

use std::{
    collections::HashMap,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_stream::wrappers::ReceiverStream;

use crate::{Broker, Delivery, Error, Message, SubscribeOptions, Subscription};

/// The embedded broker. Clones share the same topics.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    topics: Mutex<HashMap<String, Vec<Member>>>,
    /// Rotates the queue-group member that gets the next message.
    next: AtomicUsize,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Member {
    queue: Option<String>,
    sender: mpsc::Sender<Delivery>,
}

impl Memory {
    /// A new embedded broker with no subscriptions.
    pub fn new() -> Self {
        Self::default()
    }

    /// The embedded broker every service of this process shares unless told otherwise, as the
    /// embedded registry is shared.
    pub fn shared() -> Self {
        static SHARED: OnceLock<Memory> = OnceLock::new();
        SHARED.get_or_init(Memory::new).clone()
    }

    /// Messages dropped because a subscription was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    fn deliver(&self, topic: &str, message: Message) {
        let topic_name: Arc<str> = topic.into();
        let mut topics = self.inner.topics.lock();
        let Some(members) = topics.get_mut(topic) else {
            return;
        };
        members.retain(|member| !member.sender.is_closed());
        // Plain members each get the message; each queue group one of its members.
        let mut groups: HashMap<&str, Vec<&Member>> = HashMap::new();
        let mut targets: Vec<&Member> = Vec::new();
        for member in members.iter() {
            match &member.queue {
                Some(queue) => groups.entry(queue.as_str()).or_default().push(member),
                None => targets.push(member),
            }
        }
        for group in groups.values() {
            let pick = self.inner.next.fetch_add(1, Ordering::Relaxed) % group.len();
            targets.push(group[pick]);
        }
        for member in targets {
            let delivery = Delivery {
                topic: topic_name.clone(),
                message: Ok(message.clone()),
            };
            match member.sender.try_send(delivery) {
                Ok(()) | Err(TrySendError::Closed(_)) => {}
                Err(TrySendError::Full(_)) => {
                    self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        topic,
                        queue = member.queue.as_deref(),
                        "a subscription is full: message dropped for it"
                    );
                }
            }
        }
    }
}

impl Broker for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn address(&self) -> String {
        String::new()
    }

    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<(), Error>> {
        self.deliver(topic, message);
        Box::pin(async { Ok(()) })
    }

    fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscription, Error>> {
        let result = if topic.is_empty() {
            Err(Error::Subscribe {
                topic: topic.to_owned(),
                reason: "empty topic".into(),
            })
        } else {
            let (sender, receiver) = mpsc::channel(options.capacity.max(1));
            self.inner
                .topics
                .lock()
                .entry(topic.to_owned())
                .or_default()
                .push(Member {
                    queue: options.queue.clone(),
                    sender,
                });
            Ok(Subscription::new(
                topic.into(),
                options.queue,
                ReceiverStream::new(receiver),
            ))
        };
        Box::pin(async { result })
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn fan_out_and_queue_groups() {
        let broker = Memory::new();
        let options = SubscribeOptions::default;
        let mut a = broker.subscribe("t", options()).await.unwrap();
        let mut b = broker.subscribe("t", options()).await.unwrap();
        let mut q1 = broker.subscribe("t", options().queue("q")).await.unwrap();
        let mut q2 = broker.subscribe("t", options().queue("q")).await.unwrap();
        for i in 0..4u8 {
            broker.publish("t", Message::new(vec![i])).await.unwrap();
        }
        drop(broker);
        let body = |d: Delivery| d.message.unwrap().body[0];
        for sub in [&mut a, &mut b] {
            let got: Vec<u8> = sub.by_ref().take(4).map(body).collect().await;
            assert_eq!(got, [0, 1, 2, 3]);
        }
        let mut shared = Vec::new();
        for sub in [&mut q1, &mut q2] {
            while let Some(Some(d)) = futures::FutureExt::now_or_never(sub.next()) {
                shared.push(body(d));
            }
        }
        shared.sort_unstable();
        assert_eq!(shared, [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_full_subscription_drops_and_counts() {
        let broker = Memory::new();
        let options = SubscribeOptions {
            capacity: 2,
            ..Default::default()
        };
        let _slow = broker.subscribe("t", options).await.unwrap();
        for _ in 0..5 {
            broker.publish("t", Message::default()).await.unwrap();
        }
        assert_eq!(broker.dropped(), 3);
    }
}
