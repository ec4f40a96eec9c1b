//! Events for micro-rs: go-micro's broker (publish / subscribe), embedded in the process or on
//! NATS, wire-compatible with go-micro's NATS broker.
//!
//! A [`Broker`] moves [`Message`]s (go-micro's `broker.Message`: a header map and a body) from
//! publishers to the subscriptions of a topic. Without a queue group every subscription of the
//! topic gets each message; the members of one queue group share them, one member each.
//!
//! - [`Memory`]: the embedded broker (the default, as the embedded registry is): in-process,
//!   no network, messages passed as they are.
//! - [`Nats`]: core NATS through `async-nats`. The subject is the topic, the payload go-micro's
//!   envelope (`{"Header":{..},"Body":"<base64>"}`, [`envelope`]), so go-micro services on
//!   NATS and micro-rs services publish to and consume from each other.
//!
//! Delivery is at most once on both (core NATS has no acknowledgements): a message published
//! while no subscription is there, while NATS is down or past a subscription's bound is lost,
//! and counted (see [`Subscription`] and [`nats::NatsStats`]).
//!
//! [`dispatch`] runs a subscription's messages through a handler (a tower service, so
//! subscriber wrappers are tower layers) with a bounded number in flight.

pub mod context;
pub mod dispatch;
pub mod envelope;
pub mod lazy;
pub mod memory;
pub mod metrics;
pub mod nats;
pub mod typed;

use std::{
    collections::BTreeMap,
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{Stream, future::BoxFuture};

pub use dispatch::{Event, Handler, Observer, Outcome, SubscriberHandle, SubscriberStats};
pub use envelope::EnvelopeError;
pub use lazy::Lazy;
pub use memory::Memory;
pub use metrics::BrokerMetrics;
pub use nats::{Nats, NatsStats};
pub use typed::{Publication, PublishService, Publisher};

/// The header naming the body's encoding (go-micro's gRPC client: `application/grpc+proto`).
pub const CONTENT_TYPE: &str = "Content-Type";
/// The header naming the topic the message was published to (go-micro sets it).
pub const MICRO_TOPIC: &str = "Micro-Topic";
/// go-micro's gRPC client's default content type, protobuf.
pub const DEFAULT_CONTENT_TYPE: &str = "application/grpc+proto";

/// The brokers micro-rs has, by the names of `--broker` / `MICRO_BROKER`.
pub const SUPPORTED: &[&str] = &["memory", "nats"];

/// How many messages a subscription holds before new ones are dropped (and counted), unless
/// [`SubscribeOptions::capacity`] says otherwise.
pub const DEFAULT_CAPACITY: usize = 1024;

/// go-micro's `broker.Message`: headers (metadata, `Content-Type`, `Micro-Topic`) and the
/// encoded body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Headers; a `BTreeMap`, so they encode sorted as Go's `encoding/json` writes maps.
    pub header: BTreeMap<String, String>,
    /// The body, encoded as `Content-Type` says.
    pub body: Bytes,
}

impl Message {
    /// A message with this body and no headers.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Message {
            header: BTreeMap::new(),
            body: body.into(),
        }
    }

    /// A header by name, compared without case (go-micro title-cases some keys, `Traceparent`,
    /// and keeps others as given).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.header
            .get(name)
            .or_else(|| {
                self.header
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value)
            })
            .map(String::as_str)
    }
}

/// How a subscription takes its messages.
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    /// Queue group: the subscriptions of one group share the topic's messages, one member
    /// each; `None` gets every message.
    pub queue: Option<String>,
    /// Messages held for this subscription before new ones are dropped (and counted), on the
    /// embedded broker; on NATS the connection's bound applies ([`Nats::connect_with`]).
    pub capacity: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            queue: None,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

impl SubscribeOptions {
    /// Options with this queue group.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
}

/// One message as a subscription received it: the envelope decoded, or why it could not be.
#[derive(Debug)]
pub struct Delivery {
    /// The topic (NATS subject) it arrived on.
    pub topic: Arc<str>,
    /// The message, or the envelope's decoding error (the message is then unusable).
    pub message: Result<Message, EnvelopeError>,
}

/// The messages of one subscription, as a stream; dropping it unsubscribes.
pub struct Subscription {
    topic: Arc<str>,
    queue: Option<String>,
    stream: Pin<Box<dyn Stream<Item = Delivery> + Send>>,
}

impl Subscription {
    /// A subscription over a stream of deliveries (for brokers outside this crate).
    pub fn new(
        topic: Arc<str>,
        queue: Option<String>,
        stream: impl Stream<Item = Delivery> + Send + 'static,
    ) -> Self {
        Subscription {
            topic,
            queue,
            stream: Box::pin(stream),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The queue group, if any.
    pub fn queue(&self) -> Option<&str> {
        self.queue.as_deref()
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Delivery;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.stream.as_mut().poll_next(cx)
    }
}

/// A broker: publishes messages to topics and subscribes to them (go-micro's
/// `broker.Broker`).
pub trait Broker: Send + Sync + 'static {
    /// Its name as `--broker` takes it and as the registry's node metadata `broker` shows it
    /// (`memory`, `nats`).
    fn name(&self) -> &'static str;

    /// Where it is (`nats://127.0.0.1:4222`), empty for the embedded broker.
    fn address(&self) -> String;

    /// Publishes `message` to `topic`. Returns once the broker took it (not once delivered).
    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<(), Error>>;

    /// Subscribes to `topic`.
    fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscription, Error>>;
}

impl<B: Broker + ?Sized> Broker for Arc<B> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn address(&self) -> String {
        (**self).address()
    }
    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<(), Error>> {
        (**self).publish(topic, message)
    }
    fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscription, Error>> {
        (**self).subscribe(topic, options)
    }
}

/// Checks a broker name of `--broker` / `MICRO_BROKER` before anything connects: go-micro's
/// other brokers (`http`, its default, and `rabbitmq`) are a clear error naming those micro-rs
/// has.
pub fn check_name(kind: &str) -> Result<(), Error> {
    if SUPPORTED.contains(&kind) {
        Ok(())
    } else {
        Err(Error::Unsupported(kind.to_owned()))
    }
}

/// The broker `--broker` / `MICRO_BROKER` names, at `--broker_address` /
/// `MICRO_BROKER_ADDRESS` (comma-separated `host:port`; NATS defaults to `127.0.0.1:4222`).
/// `memory` is the process's shared embedded broker ([`Memory::shared`]). NATS is connected
/// here: an unreachable server is an error now, not at the first publish.
pub async fn connect(kind: &str, addresses: &[String]) -> Result<Arc<dyn Broker>, Error> {
    check_name(kind)?;
    match kind {
        "nats" => Ok(Arc::new(Nats::connect(addresses).await?)),
        _ => Ok(Arc::new(Memory::shared())),
    }
}

/// What a broker fails with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--broker` named a broker micro-rs does not have.
    #[error(
        "broker {0:?} is not supported: micro-rs has `memory` (embedded, the default) and `nats` \
         (go-micro's `http` and `rabbitmq` brokers are not built; use nats to exchange events \
         with go-micro services)"
    )]
    Unsupported(String),
    /// The broker's address is not usable.
    #[error("broker address {address:?}: {reason}")]
    Address {
        /// The address given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The broker could not be reached at start.
    #[error("connecting to nats at {address}: {reason}")]
    Connect {
        /// Where.
        address: String,
        /// Why not.
        reason: String,
    },
    /// Publishing while the connection to the broker is down: the message was not sent
    /// (publishing fails fast rather than buffering).
    #[error(
        "publish to {topic:?}: not connected to {address} (reconnecting); the message was not sent"
    )]
    NotConnected {
        /// The topic.
        topic: String,
        /// The broker's address.
        address: String,
    },
    /// The broker refused the message (a bad subject, a payload over the server's maximum).
    #[error("publish to {topic:?}: {reason}")]
    Publish {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// The subscription could not be made.
    #[error("subscribe to {topic:?}: {reason}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// A publish wrapper failed the message.
    #[error("publish to {topic:?}: {source}")]
    Wrapper {
        /// The topic.
        topic: String,
        /// The wrapper's error.
        source: micro_core::BoxError,
    },
    /// The message could not be encoded.
    #[error("encoding a message for {topic:?}: {reason}")]
    Encode {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
}
