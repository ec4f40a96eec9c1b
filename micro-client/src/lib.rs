//! The micro-rs client.
//!
//! Calls go to a service by name: a [`Channel`] that any tonic-generated client runs over
//! (`GreeterClient::new(client.channel("greeter2"))`), or the dynamic [`Client::call`].
//! Each call passes the client wrappers (around the whole call, retries included), then the
//! retry loop: pick a node from the registry cache (never a registry round trip per call),
//! pass the call wrappers (around each attempt on one node), then the node's pooled channel.

mod dispatch;
mod options;
mod pool;
mod replay;
mod selector;

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll},
};

use http::{Request, Response, uri::PathAndQuery};
pub use micro_core::BoxService;
use micro_core::{
    BoxError, CallContext, CallInfo, Deadline, EndpointCache, StackPool, Wrapper, stack,
};
use micro_registry::{Action, Cache};
use tonic::{Status, body::Body};
use tower_service::Service;

pub use options::{CallOptions, Options, RetryPolicy, retry_on_unavailable};
pub use selector::{Filter, Strategy};

use crate::{
    dispatch::{Shared, attempt_service, dispatch, dispatch_service},
    pool::Pool,
    selector::Selector,
};

/// Builds a [`Client`]: options and wrappers.
#[derive(Default)]
pub struct Builder {
    options: Options,
    client_layers: Vec<Arc<dyn Wrapper>>,
    call_layers: Vec<Arc<dyn Wrapper>>,
}

impl Builder {
    /// A builder with go-micro's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the options.
    #[must_use]
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Mutable options.
    pub fn options_mut(&mut self) -> &mut Options {
        &mut self.options
    }

    /// Adds a client wrapper: around the whole call, retries included. The first added is the
    /// outermost, as in go-micro. The request carries its [`CallInfo`] (no node yet).
    #[must_use]
    pub fn wrap_client(mut self, wrapper: impl Wrapper) -> Self {
        self.client_layers.push(Arc::new(wrapper));
        self
    }

    /// Adds a client wrapper outside every client wrapper added so far (e.g. the metrics and
    /// trace wrappers, which must see what the other wrappers refuse).
    #[must_use]
    pub fn wrap_client_outermost(mut self, wrapper: impl Wrapper) -> Self {
        self.client_layers.insert(0, Arc::new(wrapper));
        self
    }

    /// Adds a call wrapper: around each attempt on one node; [`CallInfo::node`] is set.
    #[must_use]
    pub fn wrap_call(mut self, wrapper: impl Wrapper) -> Self {
        self.call_layers.push(Arc::new(wrapper));
        self
    }

    /// The client, reading services from `cache`. Needs a tokio runtime (it follows the cache's
    /// changes to drop connections to nodes that left).
    pub fn build(self, cache: Cache) -> Client {
        let pool = Arc::new(Pool::new(self.options.dial_timeout));
        let selector = Selector::new(self.options.strategy, self.options.filters.clone());
        evict_departed_nodes(&cache, Arc::downgrade(&pool));
        // Without wrappers there is no stack: calls run the retry loop and the attempt
        // directly, and copying a channel copies nothing but two `Arc`s.
        let call_stack = (!self.call_layers.is_empty())
            .then(|| stack(attempt_service(pool.clone()), &self.call_layers));
        let shared = Arc::new(Shared {
            options: self.options,
            cache,
            selector,
            pool,
            call_stack,
            endpoints: EndpointCache::default(),
        });
        let client_stack = (!self.client_layers.is_empty())
            .then(|| StackPool::new(stack(dispatch_service(shared.clone()), &self.client_layers)));
        Client {
            client_stack,
            shared,
        }
    }
}

/// Drops pooled channels of nodes the registry says are gone.
fn evict_departed_nodes(cache: &Cache, pool: Weak<Pool>) {
    let mut events = cache.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) if event.action == Action::Delete => {
                    let Some(pool) = pool.upgrade() else { return };
                    event
                        .service
                        .nodes
                        .iter()
                        .for_each(|node| pool.remove(&node.address));
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if pool.strong_count() == 0 {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// Calls services by name. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    /// The client wrappers over the retry loop, if there are any.
    client_stack: Option<StackPool>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A builder.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// A channel to the named service, for tonic-generated clients:
    /// `GreeterClient::new(client.channel("greeter2"))`.
    pub fn channel(&self, service: impl Into<Arc<str>>) -> Channel {
        Channel {
            service: service.into(),
            client_stack: self.client_stack.clone(),
            ready: None,
            shared: self.shared.clone(),
        }
    }

    /// Calls `endpoint` (`Greeter.Test`) of `service` (`greeter2`) without a generated client,
    /// on go-micro's path `/<service>.<Greeter>/<Test>`; an endpoint starting with `/` is used
    /// as the path unchanged.
    pub async fn call<Req, Rsp>(
        &self,
        service: &str,
        endpoint: &str,
        request: Req,
    ) -> Result<Rsp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Rsp: prost::Message + Default + Send + Sync + 'static,
    {
        self.call_with(service, endpoint, request, CallOptions::default())
            .await
    }

    /// [`Client::call`] with per-call options.
    pub async fn call_with<Req, Rsp>(
        &self,
        service: &str,
        endpoint: &str,
        request: Req,
        options: CallOptions,
    ) -> Result<Rsp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Rsp: prost::Message + Default + Send + Sync + 'static,
    {
        let path = go_micro_path(service, endpoint)?;
        let mut grpc = tonic::client::Grpc::new(self.channel(service));
        grpc.ready()
            .await
            .map_err(|err| Status::unavailable(err.to_string()))?;
        let mut request = tonic::Request::new(request);
        request.extensions_mut().insert(options);
        let codec = tonic_prost::ProstCodec::<Req, Rsp>::default();
        grpc.unary(request, path, codec)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// go-micro's gRPC path for an endpoint: `greeter2` + `Greeter.Test` -> `/greeter2.Greeter/Test`.
fn go_micro_path(service: &str, endpoint: &str) -> Result<PathAndQuery, Status> {
    let path = if endpoint.starts_with('/') {
        endpoint.to_owned()
    } else {
        let (svc, method) = endpoint.split_once('.').ok_or_else(|| {
            micro_core::Error::bad_request(
                "go.micro.client",
                format!("invalid endpoint {endpoint:?}: want Service.Method"),
            )
            .to_status()
        })?;
        format!("/{service}.{svc}/{method}")
    };
    PathAndQuery::try_from(path).map_err(|err| {
        micro_core::Error::bad_request(
            "go.micro.client",
            format!("invalid endpoint {endpoint:?}: {err}"),
        )
        .to_status()
    })
}

/// A channel to one service, found through the registry; what tonic-generated clients run
/// over. Cheap to clone.
pub struct Channel {
    service: Arc<str>,
    /// Copies of the client wrappers over the retry loop, if there are any.
    client_stack: Option<StackPool>,
    /// The copy `poll_ready` readied for the next `call`.
    ready: Option<BoxService>,
    shared: Arc<Shared>,
}

impl Clone for Channel {
    /// A channel with nothing readied yet (a readied copy serves one call of one channel).
    fn clone(&self) -> Self {
        Channel {
            service: self.service.clone(),
            client_stack: self.client_stack.clone(),
            ready: None,
            shared: self.shared.clone(),
        }
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// The service this channel calls.
    pub fn service(&self) -> &str {
        &self.service
    }
}

impl Service<Request<Body>> for Channel {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &self.client_stack {
            Some(pool) => self.ready.get_or_insert_with(|| pool.take()).poll_ready(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The deadline: the call's timeout, or the handled call's deadline if that is sooner.
        let timeout = request
            .extensions()
            .get::<CallOptions>()
            .and_then(|options| options.timeout)
            .unwrap_or(self.shared.options.request_timeout);
        let mut deadline = Deadline::after(timeout);
        CallContext::with_current(|incoming| {
            if let Some(inherited) = incoming.deadline {
                deadline = deadline.min(inherited);
            }
            // go-micro carries the handled call's metadata on; the caller's own headers win.
            for (name, value) in &incoming.metadata {
                if !request.headers().contains_key(name) {
                    request.headers_mut().insert(name.clone(), value.clone());
                }
            }
        });
        let info = CallInfo {
            service: self.service.clone(),
            endpoint: self.shared.endpoints.endpoint(request.uri().path()),
            node: None,
            deadline: Some(deadline),
        };
        match &self.client_stack {
            // The copy readied by `poll_ready` takes the call, then serves later calls; the
            // wrappers read the CallInfo from the request.
            Some(pool) => {
                request.extensions_mut().insert(info);
                let mut stack = self.ready.take().unwrap_or_else(|| pool.take());
                let response = stack.call(request);
                pool.give(stack);
                response
            }
            None => Box::pin(dispatch(self.shared.clone(), info, request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_micro_paths() {
        assert_eq!(
            go_micro_path("greeter2", "Greeter.Test").unwrap(),
            "/greeter2.Greeter/Test"
        );
        assert_eq!(
            go_micro_path("x", "/greeter.Greeter/Test").unwrap(),
            "/greeter.Greeter/Test"
        );
        assert_eq!(
            go_micro_path("x", "NoDot").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            go_micro_path("x", "A.b c").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
