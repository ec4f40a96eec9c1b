//! prost-typed events, in go-micro's shape: a [`Publisher`] of one message type on one topic
//! (go-micro's `micro.NewEvent(topic, client)`), and subscriber handlers that take the decoded
//! message ([`handler`], go-micro's `micro.RegisterSubscriber(topic, server, fn)`).
//!
//! Bodies are protobuf, `Content-Type: application/grpc+proto` (go-micro's gRPC client's
//! default); a subscriber also decodes `application/grpc`, `application/proto`,
//! `application/protobuf` and `application/octet-stream` (go-micro's codec table maps them all
//! to protobuf), and a message without `Content-Type` as protobuf, as go-micro's server does.

use std::{future::Future, marker::PhantomData, sync::Arc};

use micro_core::BoxError;
use tower::{ServiceExt as _, util::BoxCloneSyncService};

use crate::{
    Broker, CONTENT_TYPE, DEFAULT_CONTENT_TYPE, Error, Event, Handler, MICRO_TOPIC, Message,
    context, metrics::TopicCounters,
};

/// A message on its way to the broker, as publish wrappers see it.
#[derive(Clone, Debug)]
pub struct Publication {
    /// The topic.
    pub topic: Arc<str>,
    /// Headers (metadata, `Content-Type`, `Micro-Topic`, trace context) and encoded body.
    pub message: Message,
}

/// The publish path: a tower service of [`Publication`]s, ending in the broker. Publish
/// wrappers are layers over it.
pub type PublishService = BoxCloneSyncService<Publication, (), BoxError>;

/// The innermost publish service: hands the publication to `broker`.
pub fn broker_service(broker: Arc<dyn Broker>) -> PublishService {
    PublishService::new(tower::service_fn(move |publication: Publication| {
        let broker = broker.clone();
        async move {
            broker
                .publish(&publication.topic, publication.message)
                .await
                .map_err(BoxError::from)
        }
    }))
}

/// Publishes messages of type `M` on one topic.
pub struct Publisher<M> {
    topic: Arc<str>,
    path: Path,
    counters: Option<Arc<TopicCounters>>,
    _message: PhantomData<fn(&M)>,
}

impl<M> Clone for Publisher<M> {
    fn clone(&self) -> Self {
        Publisher {
            topic: self.topic.clone(),
            path: self.path.clone(),
            counters: self.counters.clone(),
            _message: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for Publisher<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// How a publisher reaches its broker: straight, or through publish wrappers.
#[derive(Clone)]
enum Path {
    Direct(Arc<dyn Broker>),
    Wrapped(PublishService),
}

impl<M: prost::Message> Publisher<M> {
    /// A publisher on `topic` through `service` (the wrapped publish path), counting in
    /// `counters` if given.
    pub fn new(
        topic: impl Into<Arc<str>>,
        service: PublishService,
        counters: Option<Arc<TopicCounters>>,
    ) -> Self {
        Publisher {
            topic: topic.into(),
            path: Path::Wrapped(service),
            counters,
            _message: PhantomData,
        }
    }

    /// A publisher on `topic` straight to `broker` (no publish wrappers: no tower service per
    /// message), counting in `counters` if given.
    pub fn direct(
        topic: impl Into<Arc<str>>,
        broker: Arc<dyn Broker>,
        counters: Option<Arc<TopicCounters>>,
    ) -> Self {
        Publisher {
            topic: topic.into(),
            path: Path::Direct(broker),
            counters,
            _message: PhantomData,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes `message`: protobuf-encoded, with the current call's metadata and trace
    /// position (when called while handling a call or an event) and go-micro's
    /// `Content-Type` and `Micro-Topic` headers. Returns once the broker took it.
    pub async fn publish(&self, message: &M) -> Result<(), Error> {
        let mut envelope = Message::new(message.encode_to_vec());
        context::inject_current(&mut envelope);
        envelope
            .header
            .insert(CONTENT_TYPE.into(), DEFAULT_CONTENT_TYPE.into());
        envelope
            .header
            .insert(MICRO_TOPIC.into(), self.topic.to_string());
        self.publish_raw(envelope).await
    }

    /// Publishes an already encoded message as it is (headers and body), through the same
    /// wrappers.
    pub async fn publish_raw(&self, message: Message) -> Result<(), Error> {
        let result = match &self.path {
            Path::Direct(broker) => broker.publish(&self.topic, message).await,
            Path::Wrapped(service) => {
                let publication = Publication {
                    topic: self.topic.clone(),
                    message,
                };
                let result = service.clone().oneshot(publication).await;
                result.map_err(|error| match error.downcast::<Error>() {
                    Ok(error) => *error,
                    Err(other) => Error::Wrapper {
                        topic: self.topic.to_string(),
                        source: other,
                    },
                })
            }
        };
        if let Some(counters) = &self.counters {
            match result {
                Ok(()) => counters.published(),
                Err(_) => counters.failed(),
            }
        }
        result
    }
}

/// The content types go-micro's codec table maps to protobuf.
const PROTOBUF: [&str; 5] = [
    "application/grpc+proto",
    "application/grpc",
    "application/proto",
    "application/protobuf",
    "application/octet-stream",
];

/// Decodes a body of `content_type` as the protobuf message `M`.
pub fn decode<M: prost::Message + Default>(message: &Message) -> Result<M, BoxError> {
    let content_type = message.get(CONTENT_TYPE).unwrap_or(DEFAULT_CONTENT_TYPE);
    let base = content_type.split(';').next().unwrap_or_default().trim();
    let protobuf = base.is_empty()
        || PROTOBUF
            .iter()
            .any(|known| known.eq_ignore_ascii_case(base));
    match base {
        _ if protobuf => Ok(M::decode(message.body.as_ref())?),
        other => Err(format!(
            "content type {other:?}: micro-rs subscribers decode protobuf bodies \
             (application/grpc+proto and its aliases)"
        )
        .into()),
    }
}

/// A subscriber handler of `M`s: decodes each message's body (a body that does not decode
/// fails the message, logged and counted) and runs `handler` in a
/// [`CallContext`](micro_core::CallContext) made of the message's headers, so the calls it
/// makes carry the publisher's metadata and trace on.
pub fn handler<M, F, Fut, E>(handler: F) -> Handler
where
    M: prost::Message + Default + 'static,
    F: Fn(M) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    Handler::new(tower::service_fn(move |event: Event| {
        let handler = handler.clone();
        async move {
            let message: M = decode(&event.message)
                .map_err(|e| format!("decoding the body as {}: {e}", std::any::type_name::<M>()))?;
            let call = context::extract(&event.message);
            call.scope(handler(message)).await.map_err(Into::into)
        }
    }))
}
