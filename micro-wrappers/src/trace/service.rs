use std::{
    borrow::Cow,
    task::{Context as TaskContext, Poll},
};

use http::{Request, Response};
use micro_core::{
    BoxError, CallInfo,
    outcome::{OnOutcome, OutcomeFuture},
};
use opentelemetry::{
    Context, KeyValue,
    context::FutureExt as _,
    propagation::TextMapPropagator,
    trace::{SpanKind, Status, TraceContextExt, Tracer},
};
use tonic::Code;
use tower_service::Service;

use super::{
    Side, SpanNames, Tracing,
    future::ResponseFuture,
    metadata::{MetadataExtractor, MetadataInjector},
};

/// The traced service: see [`TraceLayer`](super::TraceLayer).
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
    tracing: Tracing,
    side: Side,
}

// === impl Trace ===

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
    type Response = Response<micro_core::outcome::OutcomeBody<ResBody, SpanEnd>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if is_infrastructure(request.uri().path()) {
            let future = self.inner.call(request);
            return ResponseFuture::new(OutcomeFuture::new(
                future.with_context(Context::current()),
                SpanEnd(None),
            ));
        }
        let parent = match self.side {
            // A malformed header extracts nothing: the call starts a new trace.
            Side::Server => self
                .tracing
                .propagator()
                .extract_with_context(&Context::new(), &MetadataExtractor(request.headers())),
            // The server span of the call being handled, if this task is handling one.
            Side::Client => Context::current(),
        };
        let span = start_span(&self.tracing, self.side, &request, &parent);
        let cx = parent.with_span(span);
        if self.side == Side::Client {
            self.tracing
                .propagator()
                .inject_context(&cx, &mut MetadataInjector(request.headers_mut()));
        }
        let future = {
            // Current while the inner service builds its future too.
            let _attached = cx.clone().attach();
            self.inner.call(request)
        };
        ResponseFuture::new(OutcomeFuture::new(
            future.with_context(cx.clone()),
            SpanEnd(Some((cx, self.side))),
        ))
    }
}

fn start_span<B>(
    tracing: &Tracing,
    side: Side,
    request: &Request<B>,
    parent: &Context,
) -> opentelemetry_sdk::trace::Span {
    let path = request.uri().path();
    let (grpc_service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    let info = CallInfo::of(request);
    let name: Cow<'static, str> = match (tracing.span_names(), info) {
        (SpanNames::OpenCensus, Some(info)) => {
            format!("rpc/{}/{}/{}", side.as_str(), info.service, info.endpoint).into()
        }
        (SpanNames::OpenCensus, None) => {
            format!("rpc/{}/{grpc_service}/{method}", side.as_str()).into()
        }
        (SpanNames::OpenTelemetry, _) => path.trim_start_matches('/').to_owned().into(),
    };
    let mut attributes = Vec::with_capacity(8);
    attributes.push(KeyValue::new("rpc.system", "grpc"));
    attributes.push(KeyValue::new("rpc.service", grpc_service.to_owned()));
    attributes.push(KeyValue::new("rpc.method", method.to_owned()));
    if let Some(info) = info {
        attributes.push(KeyValue::new("micro.service", info.service.clone()));
        attributes.push(KeyValue::new("micro.endpoint", info.endpoint.clone()));
        if let Some(node) = &info.node {
            attributes.push(KeyValue::new("micro.node", node.id.clone()));
            if side == Side::Client {
                attributes.push(KeyValue::new("server.address", node.address.clone()));
            }
        }
    }
    let kind = match side {
        Side::Server => SpanKind::Server,
        Side::Client => SpanKind::Client,
    };
    tracing
        .tracer()
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(tracing.tracer(), parent)
}

/// Ends a call's span with its outcome (nothing for untraced calls).
pub struct SpanEnd(Option<(Context, Side)>);

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

impl OnOutcome for SpanEnd {
    fn on_outcome(self, outcome: &micro_core::Outcome) {
        let Some((cx, side)) = self.0 else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", outcome.code as i64));
        if is_error(side, outcome.code) {
            let detail = outcome
                .error
                .as_ref()
                .map(|e| e.detail.clone())
                .unwrap_or_else(|| outcome.code.description().to_owned());
            span.set_status(Status::error(detail));
        }
        span.end();
    }
}
