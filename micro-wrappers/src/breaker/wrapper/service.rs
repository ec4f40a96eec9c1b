//! The breaker service.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::{Request, Response};
use micro_core::{BoxError, CallInfo, Error, endpoint_of};
use tower_service::Service;

use super::circuit::{self, Circuit, Guard};
use super::future::{Reporter, ResponseFuture};
use super::layer::{Circuits, Config, Scope};
use crate::breaker::Observer;

/// What a layer's services share.
pub(crate) struct Shared {
    config: Config,
    observer: Observer,
    circuits: Arc<Circuits>,
    empty: Arc<str>,
}

impl Shared {
    fn make(&self, key: Option<(&str, &str)>) -> Circuit {
        let name = match key {
            None => format!("{}:overflow", self.config.base_name),
            Some(("", "")) => self.config.base_name.clone(),
            Some((service, "")) => service.to_owned(),
            Some((service, endpoint)) => format!("{service}.{endpoint}"),
        };
        self.build(name)
    }

    /// A new breaker named `name`, told to the layer's `on_new` observer.
    fn build(&self, name: String) -> Circuit {
        let circuit = self.config.algorithm.build(
            name.clone(),
            self.config.clock.clone(),
            self.observer.clone(),
        );
        if let Some(on_new) = &self.config.on_new {
            on_new(&name, circuit.state());
        }
        circuit
    }
}

/// A service guarded by a circuit breaker; see [`BreakerLayer`](super::BreakerLayer).
pub struct Breaker<S> {
    inner: S,
    shared: Arc<Shared>,
    /// Node scope: this stack's own breaker, made at its first call (named after the node).
    node: Arc<OnceLock<Arc<Circuit>>>,
    /// Node scope: the permission taken in `poll_ready`, for the next call.
    ready: Option<Guard>,
    /// The breaker of the last call's service and endpoint.
    last: Option<(Arc<str>, Arc<str>, Arc<Circuit>)>,
}

// === impl Breaker ===

impl<S> Breaker<S> {
    pub(crate) fn new(inner: S, config: Config, circuits: Arc<Circuits>) -> Self {
        let observer = circuit::observer(config.on_state_change.clone(), config.on_event.clone());
        Breaker {
            inner,
            shared: Arc::new(Shared {
                config,
                observer,
                circuits,
                empty: Arc::from(""),
            }),
            node: Arc::new(OnceLock::new()),
            ready: None,
            last: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The breaker for a request to `service` / `endpoint` (service scope: `None`).
    #[inline]
    fn circuit(&mut self, service: &Arc<str>, endpoint: Option<&Arc<str>>) -> &Circuit {
        let endpoint = endpoint.unwrap_or(&self.shared.empty);
        let hit = matches!(&self.last, Some((s, e, _))
            if (Arc::ptr_eq(s, service) || **s == **service)
                && (Arc::ptr_eq(e, endpoint) || **e == **endpoint));
        if !hit {
            let shared = &self.shared;
            let circuit = shared
                .circuits
                .get_or_make(service, endpoint, |key| shared.make(key));
            self.last = Some((service.clone(), endpoint.clone(), circuit));
        }
        match &self.last {
            Some((_, _, circuit)) => circuit,
            None => unreachable_circuit(),
        }
    }
}

/// `last` was just set; a static disabled breaker keeps this free of panics.
#[cold]
fn unreachable_circuit() -> &'static Circuit {
    static DISABLED: Circuit = Circuit::Disabled;
    &DISABLED
}

impl<S: Clone> Clone for Breaker<S> {
    fn clone(&self) -> Self {
        Breaker {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            node: self.node.clone(),
            ready: None,
            last: self.last.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Breaker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("inner", &self.inner)
            .field("scope", &self.shared.config.scope)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<tonic::body::Body>> for Breaker<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<super::ResponseBody<B>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.shared.config.scope == Scope::Node
            && self.ready.is_none()
            && let Some(circuit) = self.node.get()
        {
            match circuit.acquire() {
                Ok(guard) => self.ready = Some(guard),
                Err(detail) => {
                    let error = Error::new(&*self.shared.config.id, 502, detail);
                    return Poll::Ready(Err(super::refusal(&error).into()));
                }
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let info = CallInfo::of(&request);
        let acquired = match self.shared.config.scope {
            Scope::Node => {
                let shared = &self.shared;
                let circuit = self.node.get_or_init(|| {
                    let service = info.map_or("", |i| &i.service);
                    let node = info.and_then(|i| i.node.as_ref()).map_or("", |n| &n.id);
                    Arc::new(shared.build(format!("{service}/{node}")))
                });
                let guard = match self.ready.take() {
                    Some(guard) => Ok(guard),
                    None => circuit.acquire(),
                };
                guard.map(|g| (g, circuit.timeout()))
            }
            scope => {
                let circuit = match info {
                    Some(info) if scope == Scope::Service => self.circuit(&info.service, None),
                    Some(info) => self.circuit(&info.service, Some(&info.endpoint)),
                    None if scope == Scope::Service => {
                        let empty = self.shared.empty.clone();
                        self.circuit(&empty, None)
                    }
                    None => {
                        let empty = self.shared.empty.clone();
                        let endpoint = Arc::from(endpoint_of(request.uri().path()));
                        self.circuit(&empty, Some(&endpoint))
                    }
                };
                circuit.acquire().map(|g| (g, circuit.timeout()))
            }
        };
        let config = &self.shared.config;
        match acquired {
            Ok((guard, timeout)) => {
                let timeout = timeout.map(|d| (Box::pin(tokio::time::sleep(d)), config.id.clone()));
                let reporter = Reporter::new(guard, config.classifier.clone());
                ResponseFuture::called(self.inner.call(request), reporter, timeout)
            }
            Err(detail) => {
                let error = Error::new(&*config.id, 502, detail);
                let endpoint = info.map_or_else(
                    || endpoint_of(request.uri().path()),
                    |i| i.endpoint.to_string(),
                );
                match config.fallbacks.get(&endpoint) {
                    Some(fallback) => {
                        ResponseFuture::fallback(request.into_body(), fallback.clone(), error)
                    }
                    None => ResponseFuture::refused(super::refusal(&error)),
                }
            }
        }
    }
}
