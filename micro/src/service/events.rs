//! Events: go-micro's publish / subscribe on the service's broker (`--broker`,
//! `MICRO_BROKER`; the embedded broker by default).
//!
//! A subscriber is listed in the service's registry entry as go-micro lists it: an endpoint
//! `Func` whose request is the message's shape and whose metadata is
//! `{"subscriber":"true","topic":..}`, after the handlers' endpoints, topics in descending
//! order; the node's metadata `broker` names the broker.

use std::{future::Future, sync::Arc};

use micro_broker::{
    Broker, BrokerMetrics, Handler, Lazy, PublishService, Publisher, SubscribeOptions,
    SubscriberHandle, dispatch,
};
use micro_core::BoxError;
use micro_registry::{Endpoint, Metadata, Value};

use super::{Service, ServiceError};

/// How many messages of one subscription are handled at once unless
/// [`Subscriber::max_in_flight`] says otherwise: one, in order, as go-micro does.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1;

type Wrap<S> = Arc<dyn Fn(S) -> S + Send + Sync>;

/// The service's events: its broker, subscribers and wrappers.
pub(crate) struct Events {
    broker: Lazy,
    subscribers: Vec<Subscriber>,
    publish_wrappers: Vec<Wrap<PublishService>>,
    subscriber_wrappers: Vec<Wrap<Handler>>,
    metrics: BrokerMetrics,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            broker: Lazy::ready(Arc::new(micro_broker::Memory::shared())),
            subscribers: Vec::new(),
            publish_wrappers: Vec::new(),
            subscriber_wrappers: Vec::new(),
            metrics: BrokerMetrics::new(),
        }
    }
}

/// A subscriber to be started with its service: a topic, a handler of decoded messages and how
/// it takes them.
pub struct Subscriber {
    topic: String,
    handler: Handler,
    message: &'static str,
    options: SubscribeOptions,
    max_in_flight: usize,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.topic)
            .field("message", &self.message)
            .field("options", &self.options)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// A subscriber of `topic` whose `handler` takes each message decoded as `M` (protobuf).
    /// A handler's error is logged and counted; neither broker redelivers.
    ///
    /// ```
    /// use proto::greeter::Response;
    /// let subscriber = micro::Subscriber::new("greeter.events", |event: Response| async move {
    ///     println!("{}", event.msg);
    ///     Ok::<_, std::convert::Infallible>(())
    /// })
    /// .queue("printers");
    /// let service = micro::Service::new().subscriber(subscriber);
    /// ```
    pub fn new<M, F, Fut, E>(topic: impl Into<String>, handler: F) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        F: Fn(M) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        Subscriber {
            topic: topic.into(),
            handler: micro_broker::typed::handler(handler),
            message: leak_name::<M>(),
            options: SubscribeOptions::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// Joins the queue group `queue`: its members share the topic's messages, one member
    /// each (go-micro's `server.SubscriberQueue`).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.options.queue = Some(queue.into());
        self
    }

    /// Handles up to `n` messages at once (default 1: in order). The next message is taken
    /// from the broker only when one is done; meanwhile they wait in the subscription's
    /// buffer ([`Subscriber::capacity`]), past which the broker drops them (counted).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Messages the subscription holds while the handler is busy (default 1024); past it new
    /// messages are dropped and counted. On the embedded broker; on NATS every subscription of
    /// the connection has the connection's bound (1024 for a broker from `--broker nats`, or
    /// what [`micro_broker::Nats::connect_with`] was given).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.options.capacity = capacity.max(1);
        self
    }
}

/// The full protobuf name of `M`, kept for the life of the process (one per message type).
fn leak_name<M: prost::Name>() -> &'static str {
    use std::{collections::HashMap, sync::Mutex};
    static NAMES: Mutex<Option<HashMap<String, &'static str>>> = Mutex::new(None);
    let name = M::full_name();
    let mut names = NAMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let names = names.get_or_insert_with(HashMap::new);
    if let Some(kept) = names.get(&name) {
        return kept;
    }
    let kept: &'static str = Box::leak(name.clone().into_boxed_str());
    names.insert(name, kept);
    kept
}

impl Service {
    /// The broker (`MICRO_BROKER`); the process's embedded broker by default.
    ///
    /// ```
    /// let service = micro::Service::new().broker(micro::broker::Memory::new());
    /// ```
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.events.broker = Lazy::ready(Arc::new(broker));
        self
    }

    /// The broker as `--broker` / `--broker_address` name it, connected when the service
    /// starts (or at the first publish).
    pub(crate) fn broker_from_flags(
        &mut self,
        kind: &str,
        addresses: &[String],
    ) -> Result<(), ServiceError> {
        self.events.broker =
            Lazy::new(kind, addresses).map_err(|e| ServiceError::Options(e.to_string()))?;
        Ok(())
    }

    /// Subscribes `handler` to `topic` when the service starts (go-micro's
    /// `micro.RegisterSubscriber`); every subscriber of a topic without a queue group gets
    /// every message. See [`Subscriber`] for queue groups and bounds.
    ///
    /// ```
    /// let service = micro::Service::new()
    ///     .subscribe("greeter.events", |event: proto::greeter::Response| async move {
    ///         tracing::info!(msg = %event.msg, "greeted");
    ///         Ok::<_, std::convert::Infallible>(())
    ///     });
    /// ```
    pub fn subscribe<M, F, Fut, E>(self, topic: impl Into<String>, handler: F) -> Self
    where
        M: prost::Message + prost::Name + Default + 'static,
        F: Fn(M) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.subscriber(Subscriber::new(topic, handler))
    }

    /// Adds a subscriber, started with the service.
    pub fn subscriber(mut self, subscriber: Subscriber) -> Self {
        self.events.subscribers.push(subscriber);
        self
    }

    /// Wraps every subscriber's handler in a tower layer (go-micro's `WrapSubscriber`); the
    /// first added is the outermost. The layer sees [`micro_broker::Event`]s (topic, headers,
    /// encoded body) and fails a message with an error.
    pub fn wrap_subscriber<L>(mut self, layer: L) -> Self
    where
        L: tower_layer::Layer<Handler> + Send + Sync + 'static,
        L::Service: tower_service::Service<micro_broker::Event, Response = (), Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower_service::Service<micro_broker::Event>>::Future: Send + 'static,
    {
        self.events
            .subscriber_wrappers
            .push(Arc::new(move |inner| Handler::new(layer.layer(inner))));
        self
    }

    /// Wraps every publish in a tower layer (go-micro's client wrappers see `Publish`); the
    /// first added is the outermost. The layer sees [`micro_broker::Publication`]s.
    pub fn wrap_publish<L>(mut self, layer: L) -> Self
    where
        L: tower_layer::Layer<PublishService> + Send + Sync + 'static,
        L::Service: tower_service::Service<micro_broker::Publication, Response = (), Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower_service::Service<micro_broker::Publication>>::Future: Send + 'static,
    {
        self.events.publish_wrappers.push(Arc::new(move |inner| {
            PublishService::new(layer.layer(inner))
        }));
        self
    }

    /// A publisher of `M` on `topic` through this service's broker and publish wrappers
    /// (go-micro's `micro.NewEvent`). Make it after the wrappers are added; it can be made
    /// before the service starts (the broker connects at start or at the first publish).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), micro::broker::Error> {
    /// use proto::greeter::Response;
    /// let service = micro::Service::new().name("greeter2");
    /// let events = service.publisher::<Response>("greeter.events");
    /// events.publish(&Response { msg: "hello".into() }).await?;
    /// # Ok(()) }
    /// ```
    pub fn publisher<M: prost::Message>(&self, topic: impl Into<String>) -> Publisher<M> {
        let topic: String = topic.into();
        let broker: Arc<dyn Broker> = Arc::new(self.events.broker.clone());
        let counters = self.events.metrics.topic(&topic);
        if self.events.publish_wrappers.is_empty() {
            return Publisher::direct(topic, broker, Some(counters));
        }
        let mut service = micro_broker::typed::broker_service(broker);
        for wrap in self.events.publish_wrappers.iter().rev() {
            service = wrap(service);
        }
        Publisher::new(topic, service, Some(counters))
    }

    /// The per-topic event counts (exposed as `micro_broker_*_total` when metrics are on).
    pub fn broker_metrics(&self) -> &BrokerMetrics {
        &self.events.metrics
    }

    /// Connects the broker, lists the subscribers in the registry entry and subscribes them.
    /// Runs before the server starts: a broker that cannot be reached fails the start with no
    /// node registered.
    pub(super) async fn start_events(&mut self) -> Result<Vec<SubscriberHandle>, ServiceError> {
        let uses_broker =
            !self.events.subscribers.is_empty() || !matches!(self.events.broker.name(), "memory");
        let broker = if uses_broker {
            Some(
                self.events
                    .broker
                    .connect()
                    .await
                    .map_err(ServiceError::Broker)?,
            )
        } else {
            None
        };
        self.server
            .options_mut()
            .metadata
            .entry("broker".into())
            .or_insert_with(|| self.events.broker.name().into());
        if let Some(metrics) = self.observe.metrics() {
            let namespace = self
                .observe
                .metrics_config
                .as_ref()
                .map_or("micro", |config| config.namespace.as_str());
            metrics.register_collector(self.events.metrics.collector(namespace));
        }
        let Some(broker) = broker else {
            return Ok(Vec::new());
        };
        let mut subscribers = std::mem::take(&mut self.events.subscribers);
        // go-micro lists its subscribers by topic, descending.
        subscribers.sort_by(|a, b| b.topic.cmp(&a.topic));
        let mut handles = Vec::with_capacity(subscribers.len());
        for subscriber in subscribers {
            self.server
                .add_endpoint(self.subscriber_endpoint(&subscriber));
            let subscription = broker
                .subscribe(&subscriber.topic, subscriber.options.clone())
                .await
                .map_err(ServiceError::Broker)?;
            let mut handler = subscriber.handler;
            for wrap in self.events.subscriber_wrappers.iter().rev() {
                handler = wrap(handler);
            }
            let counters = self.events.metrics.topic(&subscriber.topic);
            let observer: micro_broker::Observer = Arc::new(move |_topic, outcome| match outcome {
                micro_broker::Outcome::Delivered => counters.delivered(),
                _ => counters.failed(),
            });
            tracing::info!(topic = %subscriber.topic, queue = subscriber.options.queue.as_deref(), broker = broker.name(), "subscribed");
            handles.push(dispatch::spawn(
                subscription,
                handler,
                subscriber.max_in_flight,
                Some(observer),
            ));
        }
        Ok(handles)
    }

    /// The registry endpoint of a subscriber, as go-micro's gRPC server writes it.
    fn subscriber_endpoint(&self, subscriber: &Subscriber) -> Endpoint {
        let short = subscriber
            .message
            .rsplit('.')
            .next()
            .unwrap_or(subscriber.message);
        let request = self
            .server
            .message_value(subscriber.message)
            .unwrap_or_else(|| Value {
                name: short.to_owned(),
                kind: short.to_owned(),
                values: Vec::new(),
            });
        let mut metadata = Metadata::new();
        metadata.insert("subscriber".into(), "true".into());
        metadata.insert("topic".into(), subscriber.topic.clone());
        Endpoint {
            name: "Func".into(),
            request: Some(request),
            response: None,
            metadata,
        }
    }
}
