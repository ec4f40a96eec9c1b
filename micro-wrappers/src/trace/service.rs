use std::{
    borrow::Cow,
    sync::OnceLock,
    task::{Context as TaskContext, Poll},
};

use fastrace::{Span, collector::SpanContext as FastContext};
use http::{HeaderMap, Request, Response};
use micro_core::{
    BoxError, CallContext, CallInfo, TraceParent,
    outcome::{OnOutcome, OutcomeBody},
};
use parking_lot::{Mutex, RwLock};
use tonic::Code;
use tower_service::Service;

use super::{Side, SpanNames, Tracing, future::ResponseFuture, propagate};

/// The traced service: see [`TraceLayer`](super::TraceLayer).
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
    tracing: Tracing,
    side: Side,
}

impl<S> Trace<S> {
    /// Traces `inner`'s calls as `side`.
    pub fn new(inner: S, tracing: Tracing, side: Side) -> Self {
        Trace {
            inner,
            tracing,
            side,
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
}

/// Calls that are not traced: gRPC health checks and reflection.
pub(crate) fn is_infrastructure(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Trace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<OutcomeBody<ResBody, SpanEnd>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if is_infrastructure(request.uri().path()) {
            return ResponseFuture::plain(self.inner.call(request), SpanEnd(None));
        }
        match self.side {
            Side::Server => {
                let (span, parent) = self.server_span(&request);
                // The handler's calls find their parent here (or in the span, made the local
                // parent while the handler is polled).
                let context = CallContext::with_current(|c| CallContext {
                    deadline: c.deadline,
                    metadata: c.metadata.clone(),
                    trace: Some(parent.clone()),
                })
                .unwrap_or_else(|| CallContext {
                    deadline: None,
                    metadata: HeaderMap::new(),
                    trace: Some(parent),
                });
                let future = self.inner.call(request);
                ResponseFuture::scoped(context.scope(future), SpanEnd(span))
            }
            Side::Client => {
                let (span, parent) = self.client_span(&request);
                propagate::inject(request.headers_mut(), &self.tracing.inner.formats, &parent);
                ResponseFuture::plain(self.inner.call(request), SpanEnd(span))
            }
        }
    }
}

impl<S> Trace<S> {
    fn endpoint<B>(&self, request: &Request<B>) -> &'static Endpoint {
        let info = CallInfo::of(request);
        let node = if self.side == Side::Server {
            info.and_then(|i| i.node.as_ref()).map(|n| &*n.id)
        } else {
            None
        };
        self.tracing.inner.endpoints[self.side as usize].get(
            request.uri().path(),
            info.map(|i| (&*i.service, &*i.endpoint)),
            node,
            &self.tracing,
            self.side,
        )
    }

    /// The server span (if sampled) under the caller's context, and what its children inherit.
    fn server_span<B>(&self, request: &Request<B>) -> (Option<Open>, TraceParent) {
        let inner = &self.tracing.inner;
        let remote = propagate::extract(request.headers(), &inner.formats);
        let (trace_id, parent_id, parent_sampled, state) = match remote {
            Some(r) => (r.trace_id, r.span_id, r.sampled, r.state),
            None => (new_trace_id(), 0, None, None),
        };
        let sampled = inner.sampler.sample(trace_id, parent_sampled);
        self.open(trace_id, parent_id, sampled, state, None, request)
    }

    /// The client span (if sampled) under the handler's span or the call's, and what the
    /// callee inherits.
    fn client_span<B>(&self, request: &Request<B>) -> (Option<Open>, TraceParent) {
        let inner = &self.tracing.inner;
        let carried = CallContext::with_current(|c| c.trace.clone()).flatten();
        // The innermost span the handler opened with `tracing`, else fastrace's local parent
        // (a span opened with fastrace, else the server span while the handler is polled).
        let (local, in_stack) = match user_parent() {
            Some(user) => (Some(user), false),
            None => (FastContext::current_local_parent(), true),
        };
        let (trace_id, parent_id, parent_sampled, state) = match (local, carried) {
            (Some(local), carried) => {
                let state = carried
                    .filter(|c| c.trace_id == local.trace_id.0)
                    .and_then(|c| c.state);
                (
                    local.trace_id.0,
                    local.span_id.0,
                    Some(local.sampled),
                    state,
                )
            }
            (None, Some(c)) => (c.trace_id, c.span_id, Some(c.sampled), c.state),
            (None, None) => (new_trace_id(), 0, None, None),
        };
        let sampled = inner.sampler.sample(trace_id, parent_sampled);
        let under_local = in_stack && local.is_some_and(|l| l.sampled);
        self.open(
            trace_id,
            parent_id,
            sampled,
            state,
            Some(under_local),
            request,
        )
    }

    /// Starts the span when sampled: as a child of the local parent when there is one
    /// (`local == Some(true)`), else as the root of a new local collection under
    /// `trace_id`/`parent_id`.
    fn open<B>(
        &self,
        trace_id: u128,
        parent_id: u64,
        sampled: bool,
        state: Option<http::HeaderValue>,
        local: Option<bool>,
        request: &Request<B>,
    ) -> (Option<Open>, TraceParent) {
        if !sampled {
            let parent = TraceParent {
                trace_id,
                span_id: new_span_id(),
                sampled,
                state,
            };
            return (None, parent);
        }
        let endpoint = self.endpoint(request);
        let span = if local == Some(true) {
            Span::enter_with_local_parent(endpoint.name)
        } else {
            let parent = FastContext::new(
                fastrace::collector::TraceId(trace_id),
                fastrace::collector::SpanId(parent_id),
            );
            Span::root(endpoint.name, parent)
        };
        let span_id = FastContext::from_span(&span).map_or_else(new_span_id, |c| c.span_id.0);
        let parent = TraceParent {
            trace_id,
            span_id,
            sampled,
            state,
        };
        (Some(Open { span, endpoint }), parent)
    }
}

/// The span of the `tracing` crate the handler is in, if it has a fastrace span
/// (`fastrace-tracing`'s layer gives each one).
fn user_parent() -> Option<FastContext> {
    tracing::dispatcher::get_default(|dispatch| {
        use tracing_subscriber::registry::LookupSpan as _;
        let current = dispatch.current_span();
        let id = current.id()?;
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(id)?;
        let extensions = span.extensions();
        extensions.get::<Span>().and_then(FastContext::from_span)
    })
}

fn new_trace_id() -> u128 {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

fn new_span_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// A span being recorded and the endpoint it describes.
pub(crate) struct Open {
    pub(crate) span: Span,
    endpoint: &'static Endpoint,
}

/// Ends a call's span with its outcome (nothing for unsampled or untraced calls).
pub struct SpanEnd(pub(crate) Option<Open>);

impl SpanEnd {
    /// The span, to make it the local parent while the handler runs.
    pub(crate) fn span(&self) -> Option<&Span> {
        self.0.as_ref().map(|open| &open.span)
    }
}

impl std::fmt::Debug for SpanEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanEnd")
    }
}

/// Whether a status code makes a span an error: on the server only the codes that say the
/// server failed (OpenTelemetry's RPC convention), on the client every failure.
fn is_error(side: Side, code: Code) -> bool {
    match side {
        Side::Client => code != Code::Ok,
        Side::Server => matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ),
    }
}

/// The gRPC codes as attribute values, so that none is formatted per call.
const CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

/// The property that names a span's endpoint (and so its route, kind and attributes); the
/// exporters read it and do not export it.
pub(crate) const ENDPOINT_KEY: &str = "micro.endpoint.ref";
/// The status code property (exported as an integer attribute).
pub(crate) const CODE_KEY: &str = "rpc.grpc.status_code";
/// The error description property of a span whose status is an error.
pub(crate) const ERROR_KEY: &str = "otel.status_description";

impl OnOutcome for SpanEnd {
    fn on_outcome(self, outcome: &micro_core::Outcome) {
        let Some(Open { span, endpoint }) = self.0 else {
            return;
        };
        let code = CODES.get(outcome.code as usize).copied().unwrap_or("2");
        // One allocation: the properties, all added at once; dropping the span ends it.
        let span = if is_error(endpoint.side, outcome.code) {
            let detail: Cow<'static, str> = match &outcome.error {
                Some(e) => Cow::Owned(e.detail.clone()),
                None => Cow::Borrowed(outcome.code.description()),
            };
            span.with_properties(|| {
                [
                    (ENDPOINT_KEY, Cow::Borrowed(endpoint.key.as_str())),
                    (CODE_KEY, Cow::Borrowed(code)),
                    (ERROR_KEY, detail),
                ]
            })
        } else {
            span.with_properties(|| [(ENDPOINT_KEY, endpoint.key.as_str()), (CODE_KEY, code)])
        };
        drop(span);
    }
}

// === endpoints ===

/// What the spans of one endpoint say, resolved when the endpoint is first seen: the name and
/// the attributes, the side, and the [`Tracing`] whose exporters get them. Kept for the life
/// of the process (at most [`CAPACITY`] per `Tracing` and side), so that a span refers to it
/// with a `&'static str` and the exporters read it from [`ENDPOINTS`].
#[derive(Debug)]
pub(crate) struct Endpoint {
    path: Box<str>,
    service: Option<Box<str>>,
    node: Option<Box<str>>,
    pub(crate) name: &'static str,
    pub(crate) side: Side,
    pub(crate) route: usize,
    pub(crate) attributes: Vec<(&'static str, String)>,
    /// Its index in [`ENDPOINTS`], as text: the value of [`ENDPOINT_KEY`].
    key: String,
    index: usize,
}

impl Endpoint {
    /// Its index in [`ENDPOINTS`].
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The value of [`ENDPOINT_KEY`] that names it.
    #[cfg(test)]
    pub(crate) fn key(&'static self) -> &'static str {
        &self.key
    }
}

/// Every endpoint of every `Tracing`, by [`Endpoint::key`]: read by the exporters.
pub(crate) static ENDPOINTS: RwLock<Vec<&'static Endpoint>> = RwLock::new(Vec::new());

/// The endpoint a span names with its [`ENDPOINT_KEY`] property.
pub(crate) fn endpoint_of(key: &str) -> Option<&'static Endpoint> {
    let index: usize = key.parse().ok()?;
    ENDPOINTS.read().get(index).copied()
}

/// Distinct endpoints kept per `Tracing` and side; beyond, spans are named `other`.
const CAPACITY: usize = 512;

/// One `Tracing`'s endpoints of one side: found without a lock or a hash (a few string
/// comparisons: a service has a handful), added under a lock when first seen.
#[derive(Debug)]
pub(crate) struct Endpoints {
    slots: Box<[OnceLock<&'static Endpoint>]>,
    adding: Mutex<usize>,
    names: SpanNames,
}

impl Endpoints {
    pub(crate) fn new(names: SpanNames) -> Self {
        Endpoints {
            slots: (0..CAPACITY).map(|_| OnceLock::new()).collect(),
            adding: Mutex::new(0),
            names,
        }
    }

    fn find(
        &self,
        path: &str,
        info: Option<(&str, &str)>,
        node: Option<&str>,
    ) -> Result<&'static Endpoint, usize> {
        for (i, slot) in self.slots.iter().enumerate() {
            match slot.get() {
                None => return Err(i),
                Some(e)
                    if *e.path == *path
                        && e.service.as_deref() == info.map(|(s, _)| s)
                        && e.node.as_deref() == node =>
                {
                    return Ok(e);
                }
                Some(_) => {}
            }
        }
        Err(CAPACITY)
    }

    fn get(
        &self,
        path: &str,
        info: Option<(&str, &str)>,
        node: Option<&str>,
        tracing: &Tracing,
        side: Side,
    ) -> &'static Endpoint {
        if let Ok(e) = self.find(path, info, node) {
            return e;
        }
        let mut added = self.adding.lock();
        let free = match self.find(path, info, node) {
            Ok(e) => return e,
            Err(free) => free,
        };
        let route = tracing.inner.route;
        if free >= CAPACITY {
            return tracing.inner.other[side as usize];
        }
        let endpoint = new_endpoint(path, info, node, self.names, side, route);
        *added += 1;
        let _ = self.slots[free].set(endpoint);
        endpoint
    }
}

/// Builds and registers an endpoint (kept for the process's life).
pub(crate) fn new_endpoint(
    path: &str,
    info: Option<(&str, &str)>,
    node: Option<&str>,
    names: SpanNames,
    side: Side,
    route: usize,
) -> &'static Endpoint {
    let (grpc_service, method) =
        micro_core::split_grpc_path(path).unwrap_or_else(|| (path.trim_start_matches('/'), ""));
    let name = match (names, info) {
        (SpanNames::OpenCensus, Some((service, endpoint))) => {
            format!("rpc/{}/{service}/{endpoint}", side.as_str())
        }
        (SpanNames::OpenCensus, None) => {
            format!("rpc/{}/{grpc_service}/{method}", side.as_str())
        }
        (SpanNames::OpenTelemetry, _) => path.trim_start_matches('/').to_owned(),
    };
    let mut attributes = vec![
        ("rpc.system", "grpc".to_owned()),
        ("rpc.service", grpc_service.to_owned()),
        ("rpc.method", method.to_owned()),
    ];
    if let Some((service, endpoint)) = info {
        attributes.push(("micro.service", service.to_owned()));
        attributes.push(("micro.endpoint", endpoint.to_owned()));
    }
    if let Some(node) = node {
        attributes.push(("micro.node", node.to_owned()));
    }
    let mut all = ENDPOINTS.write();
    let endpoint: &'static Endpoint = Box::leak(Box::new(Endpoint {
        path: path.into(),
        service: info.map(|(s, _)| s.into()),
        node: node.map(Into::into),
        name: Box::leak(name.into_boxed_str()),
        side,
        route,
        attributes,
        key: all.len().to_string(),
        index: all.len(),
    }));
    all.push(endpoint);
    endpoint
}
