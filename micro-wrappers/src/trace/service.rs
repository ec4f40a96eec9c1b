use std::{
    borrow::Cow,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context as TaskContext, Poll},
};

use http::{Request, Response};
use micro_core::{
    BoxError, CallContext, CallInfo, TraceParent,
    outcome::{OnOutcome, OutcomeBody},
};
use parking_lot::Mutex;
use tonic::Code;
use tower_service::Service;

use super::{
    Side, SpanNames, Tracing, collect,
    future::ResponseFuture,
    propagate,
    record::{Began, SpanRecord},
    user,
};

/// The traced service: see [`TraceLayer`](super::TraceLayer).
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
    tracer: Tracer,
}

impl<S> Trace<S> {
    /// Traces `inner`'s calls as `side`.
    pub fn new(inner: S, tracing: Tracing, side: Side) -> Self {
        Trace {
            inner,
            tracer: Tracer { tracing, side },
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
    type Future = ResponseFuture<S::Future, SpanEnd>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let (end, context) = self.tracer.start(&mut request);
        ResponseFuture::new(self.inner.call(request), context, end)
    }
}

/// One side of one [`Tracing`]: starts the spans of the calls it sees.
#[derive(Clone, Debug)]
pub(crate) struct Tracer {
    pub(crate) tracing: Tracing,
    pub(crate) side: Side,
}

impl Tracer {
    pub(crate) fn new(tracing: &Tracing, side: Side) -> Self {
        Tracer {
            tracing: tracing.clone(),
            side,
        }
    }

    /// Starts the call's span (if sampled): a server span is set in the call's context, for
    /// the spans its handler opens and the calls it makes (in the server entry's context, or
    /// else in the one returned, for the handler's future); a client span is injected into
    /// the request's headers.
    pub(crate) fn start<B>(&self, request: &mut Request<B>) -> (SpanEnd, Option<CallContext>) {
        if is_infrastructure(request.uri().path()) {
            return (SpanEnd(None), None);
        }
        match self.side {
            Side::Server => {
                let (span, parent) = self.server_span(request);
                let mut parent = Some(parent);
                CallContext::with_current(|context| {
                    if let Some(parent) = parent.take() {
                        context.set_trace(parent);
                    }
                });
                (SpanEnd(span), parent.map(CallContext::with_trace))
            }
            Side::Client => {
                let (span, parent) = self.client_span();
                propagate::inject(request.headers_mut(), &self.tracing.inner.formats, &parent);
                (
                    SpanEnd(span.map(|open| open.at(self.endpoint(request)))),
                    None,
                )
            }
        }
    }

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
        let (open, parent) = self.open(trace_id, parent_id, sampled, state);
        (open.map(|open| open.at(self.endpoint(request))), parent)
    }

    /// The client span (if sampled) under the span the handler is in, else the call's, and
    /// what the callee inherits.
    fn client_span(&self) -> (Option<Opening>, TraceParent) {
        let inner = &self.tracing.inner;
        let parent = user::current().or_else(|| CallContext::with_current(|c| c.trace()).flatten());
        let (trace_id, parent_id, parent_sampled, state) = match parent {
            Some(p) => (p.trace_id, p.span_id, Some(p.sampled), p.state),
            None => (new_trace_id(), 0, None, None),
        };
        let sampled = inner.sampler.sample(trace_id, parent_sampled);
        self.open(trace_id, parent_id, sampled, state)
    }

    /// Starts the span, when sampled; its children's view of it either way.
    fn open(
        &self,
        trace_id: u128,
        parent_id: u64,
        sampled: bool,
        state: Option<http::HeaderValue>,
    ) -> (Option<Opening>, TraceParent) {
        let span_id = new_span_id();
        let parent = TraceParent {
            trace_id,
            span_id,
            sampled,
            state,
            route: self.tracing.inner.route as u32,
        };
        let open = sampled.then(|| Opening {
            trace_id,
            span_id,
            parent_id,
            began: Began::now(),
        });
        (open, parent)
    }
}

pub(crate) fn new_trace_id() -> u128 {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

pub(crate) fn new_span_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// A span started, before its endpoint is known.
pub(crate) struct Opening {
    trace_id: u128,
    span_id: u64,
    parent_id: u64,
    began: Began,
}

impl Opening {
    fn at(self, endpoint: &'static Endpoint) -> Open {
        Open {
            opening: self,
            endpoint,
        }
    }
}

/// A span being recorded and the endpoint it describes.
pub(crate) struct Open {
    opening: Opening,
    endpoint: &'static Endpoint,
}

/// Ends a call's span with its outcome (nothing for unsampled or untraced calls).
pub struct SpanEnd(pub(crate) Option<Open>);

impl SpanEnd {
    /// Ends no span.
    pub(crate) fn none() -> Self {
        SpanEnd(None)
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

/// The status code attribute.
pub(crate) const CODE_KEY: &str = "rpc.grpc.status_code";

impl OnOutcome for SpanEnd {
    fn on_outcome(self, outcome: &micro_core::Outcome) {
        let Some(Open { opening, endpoint }) = self.0 else {
            return;
        };
        let (begin_time_unix_ns, duration_ns) = opening.began.times();
        let error = is_error(endpoint.side, outcome.code).then(|| match &outcome.error {
            Some(e) => Cow::Owned(e.detail.clone()),
            None => Cow::Borrowed(outcome.code.description()),
        });
        collect::record(SpanRecord {
            trace_id: opening.trace_id,
            span_id: opening.span_id,
            parent_id: opening.parent_id,
            begin_time_unix_ns,
            duration_ns,
            route: endpoint.route as u32,
            endpoint: Some(endpoint),
            name: "",
            code: Some(outcome.code as u8),
            error,
            properties: Vec::new(),
        });
    }
}

// === endpoints ===

/// What the spans of one endpoint say, resolved when the endpoint is first seen: the name and
/// the attributes, the side, and the [`Tracing`] whose exporters get them. Kept for the life
/// of the process (at most [`CAPACITY`] per `Tracing` and side), so that a span refers to it
/// with a `&'static` reference.
#[derive(Debug)]
pub(crate) struct Endpoint {
    path: Box<str>,
    service: Option<Box<str>>,
    node: Option<Box<str>>,
    pub(crate) name: &'static str,
    pub(crate) side: Side,
    pub(crate) route: usize,
    pub(crate) attributes: Vec<(&'static str, String)>,
    index: usize,
}

impl Endpoint {
    /// A number of its own among the process's endpoints (the exporters cache by it).
    pub(crate) fn index(&self) -> usize {
        self.index
    }
}

/// Endpoints made so far in the process.
static ENDPOINTS: AtomicUsize = AtomicUsize::new(0);

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
    Box::leak(Box::new(Endpoint {
        path: path.into(),
        service: info.map(|(s, _)| s.into()),
        node: node.map(Into::into),
        name: Box::leak(name.into_boxed_str()),
        side,
        route,
        attributes,
        index: ENDPOINTS.fetch_add(1, Ordering::Relaxed),
    }))
}
