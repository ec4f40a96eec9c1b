//! A broker named by flags (`--broker`, `--broker_address`), connected at its first use or
//! when a service starts: publishers can be made before the service connects.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::{Broker, Error, Message, SubscribeOptions, Subscription};

/// A broker by name and addresses, connected once, when first needed ([`Lazy::connect`]).
#[derive(Clone)]
pub struct Lazy {
    kind: &'static str,
    addresses: Arc<[String]>,
    connected: Arc<OnceCell<Arc<dyn Broker>>>,
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lazy")
            .field("kind", &self.kind)
            .field("addresses", &self.addresses)
            .field("connected", &self.connected.initialized())
            .finish()
    }
}

impl Lazy {
    /// The broker `kind` (`memory`, `nats`) at `addresses`; an unsupported name is an error
    /// now ([`crate::check_name`]).
    pub fn new(kind: &str, addresses: &[String]) -> Result<Self, Error> {
        crate::check_name(kind)?;
        let kind = crate::SUPPORTED
            .iter()
            .find(|supported| **supported == kind)
            .copied()
            .unwrap_or("memory");
        Ok(Lazy {
            kind,
            addresses: addresses.into(),
            connected: Arc::new(OnceCell::new()),
        })
    }

    /// A broker already made, as a `Lazy` (connected).
    pub fn ready(broker: Arc<dyn Broker>) -> Self {
        Lazy {
            kind: broker.name(),
            addresses: Arc::from(Vec::new()),
            connected: Arc::new(OnceCell::new_with(Some(broker))),
        }
    }

    /// Connects (once; later calls return the same broker). A failed connection is tried
    /// again by the next call.
    pub async fn connect(&self) -> Result<Arc<dyn Broker>, Error> {
        self.connected
            .get_or_try_init(|| crate::connect(self.kind, &self.addresses))
            .await
            .cloned()
    }
}

impl Broker for Lazy {
    fn name(&self) -> &'static str {
        self.kind
    }

    fn address(&self) -> String {
        match self.connected.get() {
            Some(broker) => broker.address(),
            None => self.addresses.join(","),
        }
    }

    fn publish<'a>(&'a self, topic: &'a str, message: Message) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            match self.connected.get() {
                Some(broker) => broker.publish(topic, message).await,
                None => self.connect().await?.publish(topic, message).await,
            }
        })
    }

    fn subscribe(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscription, Error>> {
        let topic = topic.to_owned();
        Box::pin(async move { self.connect().await?.subscribe(&topic, options).await })
    }
}
