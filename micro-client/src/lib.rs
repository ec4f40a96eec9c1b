//! The micro-rs client.
//!
//! Calls go to a service by name: a [`Channel`] that any tonic-generated client runs over
//! (`GreeterClient::new(client.channel("greeter2"))`), or the dynamic [`Client::call`].
//! Each call passes the client wrappers (around the whole call, retries included), then the
//! retry loop: pick a READY node from the registry cache (never a registry round trip per
//! call) with the selector's strategy (random, round robin, p2c), then that node's own stack:
//! the call wrappers over the node's channel. How each attempt ended is read from the shared
//! classifier ([`micro_core::Outcome`]); only attempts that never reached a server are retried
//! by default, within a retry budget per called service. A node whose attempts fail at the
//! transport is ejected for a while ([`Ejection`]), so that a crashed or cut-off node costs
//! the calls that were on it, not one per call until the registry notices.

mod accrual;
mod dispatch;
mod load;
mod nodes;
mod options;
mod replay;
mod selector;
mod tls;

use std::{
    sync::{Arc, Weak},
    task::{Context, Poll},
};

use http::{Request, Response, uri::PathAndQuery};
pub use micro_core::BoxService;
use micro_core::{BoxError, CallContext, CallInfo, Deadline, StackPool, Wrapper, stack};
use micro_registry::{Action, Cache};
use tonic::{Status, body::Body};
use tower_service::Service;

pub use accrual::{Ejection, EjectionEvent, EjectionObserver};
pub use options::{
    CallOptions, Options, RetryBudget, RetryEvent, RetryObserver, RetryPolicy, retry_idempotent,
    retry_not_sent,
};
pub use selector::{Filter, Strategy};

/// The node pick's parts, for the `select` criterion bench (`benches/select.rs`): not an API,
/// and not covered by semver.
#[doc(hidden)]
pub mod bench {
    pub use crate::load::Load;
    pub use crate::selector::{AllReady, Candidates, Selector};
}

use crate::{
    dispatch::{Shared, dispatch_service},
    nodes::Nodes,
    selector::Selector,
};

/// The id of the errors this client raises, as go-micro's.
pub(crate) const CLIENT_ID: &str = "go.micro.client";

/// Builds a [`Client`]: options and wrappers.
#[derive(Default)]
pub struct Builder {
    options: Options,
    client_layers: Vec<Arc<dyn Wrapper>>,
    call_layers: Vec<Arc<dyn Wrapper>>,
    on_retry: Option<RetryObserver>,
    on_ejection: Option<EjectionObserver>,
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

    /// TLS to nodes (see [`Options::tls`]).
    #[must_use]
    pub fn tls(mut self, tls: micro_core::tls::ClientTls) -> Self {
        self.options.tls = tls;
        self
    }

    /// TLS to the nodes of `service`, instead of the client's (e.g. another CA or server name).
    #[must_use]
    pub fn tls_for(mut self, service: impl Into<String>, tls: micro_core::tls::ClientTls) -> Self {
        self.options.tls_services.push((service.into(), tls));
        self
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

    /// Tells `f` of every retry decision: the called service and whether the attempt is
    /// retried or the retry budget refused it (e.g. for metrics). Each call adds an observer;
    /// without one the retry loop pays nothing.
    #[must_use]
    pub fn on_retry(mut self, f: impl Fn(&str, RetryEvent) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(micro_core::add_observer(self.on_retry.take(), f));
        self
    }

    /// Tells `f` of every ejection and restoration of a node, with the node's service (e.g.
    /// for metrics). Each call adds an observer.
    #[must_use]
    pub fn on_ejection(mut self, f: impl Fn(&str, EjectionEvent) + Send + Sync + 'static) -> Self {
        self.on_ejection = Some(micro_core::add_observer(self.on_ejection.take(), f));
        self
    }

    /// The client, reading services from `cache`. Needs a tokio runtime (it follows the cache's
    /// changes to drop the stacks of nodes that left).
    pub fn build(self, cache: Cache) -> Client {
        let selector = Selector::new(self.options.strategy, self.options.filters.clone());
        let transport = nodes::Transport {
            dial_timeout: self.options.dial_timeout,
            keepalive: self
                .options
                .keepalive_interval
                .map(|interval| (interval, self.options.keepalive_timeout)),
            tls: Arc::new(tls::Tls::new(
                self.options.tls.clone(),
                self.options.tls_services.clone(),
            )),
        };
        let nodes = Nodes::new(
            self.call_layers,
            transport,
            self.options.ejection,
            self.on_ejection,
        );
        let mut shared = Shared::new(self.options, cache, selector, nodes);
        shared.on_retry = self.on_retry;
        let shared = Arc::new(shared);
        evict_departed_nodes(&shared.cache, Arc::downgrade(&shared));
        // One path: with no client wrappers the stack is the retry loop alone.
        let client_stack =
            StackPool::new(stack(dispatch_service(shared.clone()), &self.client_layers));
        Client {
            client_stack,
            shared,
        }
    }
}

/// Drops the stacks of nodes the registry says are gone.
fn evict_departed_nodes(cache: &Cache, shared: Weak<Shared>) {
    let mut events = cache.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) if event.action == Action::Delete => {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    event
                        .service
                        .nodes
                        .iter()
                        .for_each(|node| shared.nodes.remove(&node.id));
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if shared.strong_count() == 0 {
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
    /// The client wrappers over the retry loop.
    client_stack: StackPool,
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
#[derive(Clone)]
pub struct Channel {
    service: Arc<str>,
    /// Copies of the client wrappers over the retry loop.
    client_stack: StackPool,
    shared: Arc<Shared>,
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
    type Future = micro_core::PoolCall;

    /// Always ready: each call readies its own copy of the client stack, so that a wrapper's
    /// refusal reaches the caller as its status (tonic turns a readiness error into an
    /// `Unknown` "not ready" instead).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
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
        // The call's facts travel once, in the request: every wrapper and the retry loop read
        // them there (the retry loop names the node on each attempt's copy).
        let info = CallInfo {
            service: self.service.clone(),
            endpoint: self.shared.endpoints.endpoint(request.uri().path()),
            node: None,
            deadline: Some(deadline),
        };
        request.extensions_mut().insert(info);
        self.client_stack.call(request)
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
