//! Core NATS, wire-compatible with go-micro's NATS broker (`go-micro.dev/v5/broker/nats`): the
//! subject is the topic, a queue group is NATS's queue group, the payload go-micro's envelope
//! ([`crate::envelope`]).
//!
//! - **Reconnects**: the client reconnects by itself after the server restarts (no limit on
//!   attempts) and subscribes again; what was published to a subscription's topic while it was
//!   away is lost (core NATS is at most once).
//! - **Publishing while down fails fast**: [`Error::NotConnected`], the message not sent, so a
//!   caller learns of the outage at once and no buffer grows while it lasts. A message accepted
//!   just before the connection dropped may still be lost.
//! - **Bounded subscriptions**: each holds at most the connection's subscription capacity
//!   (`async-nats`' "slow consumer" bound, one setting per connection: [`Nats::connect_with`],
//!   [`crate::DEFAULT_CAPACITY`] for [`Nats::connect`]; [`SubscribeOptions::capacity`] is not
//!   read here); past it the client drops messages, counted in [`NatsStats::dropped`] and
//!   logged.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{StreamExt as _, future::BoxFuture};

use crate::{Broker, Delivery, Error, Message, SubscribeOptions, Subscription, envelope};

/// The address go-micro's NATS broker uses when none is given (NATS's default URL).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:4222";

/// A NATS broker: one connection, shared by its publishers and subscriptions.
#[derive(Clone, Debug)]
pub struct Nats {
    client: async_nats::Client,
    address: Arc<str>,
    stats: Arc<NatsStats>,
}

/// What the connection went through, for tests and metrics.
#[derive(Debug, Default)]
pub struct NatsStats {
    disconnects: AtomicU64,
    reconnects: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
}

impl NatsStats {
    /// Times the connection was lost.
    pub fn disconnects(&self) -> u64 {
        self.disconnects.load(Ordering::Relaxed)
    }
    /// Times it was made again after a loss.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }
    /// Slow-consumer events: a subscription was full and NATS's client dropped a message.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Publishes refused because the connection was down.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Nats {
    /// Connects to NATS at the first reachable of `addresses` (`host:port` or `nats://..`;
    /// none: [`DEFAULT_ADDRESS`]). An unreachable server is an error here (within 5 s).
    pub async fn connect(addresses: &[String]) -> Result<Self, Error> {
        Self::connect_with(addresses, crate::DEFAULT_CAPACITY).await
    }

    /// As [`Nats::connect`], each subscription holding at most `capacity` messages.
    pub async fn connect_with(addresses: &[String], capacity: usize) -> Result<Self, Error> {
        let urls: Vec<String> = addresses
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .map(|a| {
                if a.contains("://") {
                    a.to_owned()
                } else {
                    format!("nats://{a}")
                }
            })
            .collect();
        let urls = if urls.is_empty() {
            vec![format!("nats://{DEFAULT_ADDRESS}")]
        } else {
            urls
        };
        let servers = urls
            .iter()
            .map(|url| {
                url.parse::<async_nats::ServerAddr>()
                    .map_err(|e| Error::Address {
                        address: url.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let address: Arc<str> = urls.join(",").into();
        let stats = Arc::new(NatsStats::default());
        let events = stats.clone();
        let events_address = address.clone();
        let client = async_nats::ConnectOptions::new()
            .name("micro-rs")
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .subscription_capacity(capacity.max(1))
            // Reconnect soon after a restart: 0, then 100 ms doubling to at most 2 s.
            .reconnect_delay_callback(|attempts| {
                let attempts = u32::try_from(attempts).unwrap_or(u32::MAX).min(5);
                if attempts <= 1 {
                    Duration::ZERO
                } else {
                    Duration::from_millis(100 << (attempts - 2)).min(Duration::from_secs(2))
                }
            })
            .event_callback(move |event| {
                let stats = events.clone();
                let address = events_address.clone();
                async move { on_event(&stats, &address, event) }
            })
            .connect(servers)
            .await
            .map_err(|e| Error::Connect {
                address: address.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Nats {
            client,
            address,
            stats,
        })
    }

    /// What the connection went through.
    pub fn stats(&self) -> &Arc<NatsStats> {
        &self.stats
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Waits until everything published so far reached the server.
    pub async fn flush(&self) -> Result<(), Error> {
        self.client.flush().await.map_err(|e| Error::Publish {
            topic: String::new(),
            reason: format!("flush: {e}"),
        })
    }
}

fn on_event(stats: &NatsStats, address: &str, event: async_nats::Event) {
    match event {
        async_nats::Event::Disconnected => {
            stats.disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(address, "nats: disconnected, reconnecting");
        }
        async_nats::Event::Connected => {
            if stats.disconnects() > stats.reconnects() {
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!(address, "nats: connected");
        }
        async_nats::Event::SlowConsumer(sid) => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                address,
                subscription = sid,
                "nats: a subscription is full (slow consumer): message dropped"
            );
        }
        other => tracing::info!(address, "nats: {other}"),
    }
}

impl Broker for Nats {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn address(&self) -> String {
        self.address.to_string()
    }

    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if !self.is_connected() {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Error::NotConnected {
                    topic: topic.to_owned(),
                    address: self.address.to_string(),
                });
            }
            let payload = envelope::encode(&message);
            self.client
                .publish(async_nats::Subject::from(topic), payload)
                .await
                .map_err(|e| Error::Publish {
                    topic: topic.to_owned(),
                    reason: e.to_string(),
                })
        })
    }

    fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscription, Error>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            let subscriber = match &options.queue {
                Some(queue) => {
                    self.client
                        .queue_subscribe(topic.clone(), queue.clone())
                        .await
                }
                None => self.client.subscribe(topic.clone()).await,
            }
            .map_err(|e| Error::Subscribe {
                topic: topic.clone(),
                reason: e.to_string(),
            })?;
            let name: Arc<str> = topic.into();
            let stream_name = name.clone();
            let deliveries = subscriber.map(move |message| Delivery {
                topic: if *message.subject == *stream_name {
                    stream_name.clone()
                } else {
                    message.subject.as_str().into()
                },
                message: envelope::decode(&message.payload),
            });
            Ok(Subscription::new(name, options.queue, deliveries))
        })
    }
}
