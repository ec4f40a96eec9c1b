//! The context of an incoming call, inherited by the calls its handler makes.
//!
//! go-micro passes a `context.Context` from handler to client; micro-rs keeps the same
//! information in a tokio task-local that the server sets around each handler. Calls made from
//! the handler's task (not from a spawned task) carry its metadata and its deadline.

use std::{cell::Cell, future::Future, time::Duration};

use http::{HeaderMap, HeaderName};
use tokio::{task::futures::TaskLocalFuture, time::Instant};

/// The point in time by which a call must be answered. A handler reads it from the request's
/// [`CallInfo`](crate::CallInfo): `request.extensions().get::<CallInfo>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Deadline(Instant::now() + timeout)
    }

    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

tokio::task_local! {
    static CURRENT: CallContext;
}

/// Deadline, metadata and trace position of the call being handled.
#[derive(Clone, Debug, Default)]
pub struct CallContext {
    /// When the incoming call must be answered by.
    pub deadline: Option<Deadline>,
    /// The incoming call's metadata that outgoing calls carry on (transport and gRPC
    /// protocol headers excluded).
    pub metadata: HeaderMap,
    /// The call's server span, set by the trace wrapper: the parent of the spans the handler
    /// opens and of the calls it makes outside them (and the only parent an unsampled call
    /// has, so that its calls carry its trace and its decision on).
    trace: TraceSlot,
}

/// The trace position, set in place by the wrapper that starts the server span while the
/// context is current (a task-local is read-only).
#[derive(Default)]
struct TraceSlot(Cell<Option<TraceParent>>);

impl Clone for TraceSlot {
    fn clone(&self) -> Self {
        TraceSlot(Cell::new(self.get()))
    }
}

impl std::fmt::Debug for TraceSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl TraceSlot {
    fn get(&self) -> Option<TraceParent> {
        let trace = self.0.take();
        let copy = trace.clone();
        self.0.set(trace);
        copy
    }
}

/// A span as its children see it: the ids they inherit and the sampling decision they follow.
/// Plain data, so that nothing outside the trace wrapper names the tracing library.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (never 0 for a real span).
    pub trace_id: u128,
    /// The span id (never 0 for a real span).
    pub span_id: u64,
    /// Whether the trace is sampled (recorded and exported).
    pub sampled: bool,
    /// W3C `tracestate` received with the trace, passed on unchanged.
    pub state: Option<http::HeaderValue>,
    /// Which of the process's tracers records the trace's spans here (the tracing library's
    /// business; 0 when none does).
    pub route: u32,
}

impl CallContext {
    /// The context of an incoming request with these headers, received now.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let deadline = crate::timeout::from_headers(headers).map(Deadline::after);
        Self::with_deadline(deadline, headers)
    }

    /// The context of an incoming request whose deadline the caller already read.
    pub fn with_deadline(deadline: Option<Deadline>, headers: &HeaderMap) -> Self {
        // Most calls carry no metadata: build no map for them.
        let metadata = if headers.keys().any(is_propagated) {
            headers
                .iter()
                .filter(|(name, _)| is_propagated(name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        } else {
            HeaderMap::new()
        };
        CallContext {
            deadline,
            metadata,
            trace: TraceSlot::default(),
        }
    }

    /// A context with a trace position only: for a traced call that no server entry set a
    /// context for (a bare tonic app).
    pub fn with_trace(trace: TraceParent) -> Self {
        CallContext {
            trace: TraceSlot(Cell::new(Some(trace))),
            ..Default::default()
        }
    }

    /// The call's server span, if a trace wrapper set it.
    pub fn trace(&self) -> Option<TraceParent> {
        self.trace.get()
    }

    /// Sets the call's server span: the trace wrapper does, while the context is current.
    pub fn set_trace(&self, trace: TraceParent) {
        self.trace.0.set(Some(trace));
    }

    /// Calls `call` with this context current, then returns its future to be run with the
    /// context current too: what `call` set in the context (the trace position) is kept.
    pub fn enter<F: Future>(self, call: impl FnOnce() -> F) -> TaskLocalFuture<CallContext, F> {
        let (future, trace) = CURRENT.sync_scope(self.clone(), || {
            let future = call();
            (future, CURRENT.with(|c| c.trace.0.take()))
        });
        self.trace.0.set(trace);
        self.scope(future)
    }

    /// Runs `future` with this context as the current one.
    pub fn scope<F: Future>(self, future: F) -> TaskLocalFuture<CallContext, F> {
        CURRENT.scope(self, future)
    }

    /// A copy of the context of the call being handled by this task, if any.
    pub fn current() -> Option<CallContext> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `f` on the context of the call being handled by this task, if any, without
    /// copying it.
    pub fn with_current<R>(f: impl FnOnce(&CallContext) -> R) -> Option<R> {
        CURRENT.try_with(f).ok()
    }
}

/// Whether an incoming header is call metadata to pass on (go-micro passes on its context's
/// metadata), rather than a transport or protocol header of this hop. go-micro's gRPC client
/// sends `timeout` and `x-content-type` with every call and its server deletes both before
/// the handler sees the metadata; so does micro-rs.
pub fn is_propagated(name: &HeaderName) -> bool {
    use http::header::{
        ACCEPT_ENCODING, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TE, USER_AGENT,
    };
    // The standard names are compared as names: reading one as a string reads a table, for
    // every header of every call.
    static TRANSPORT: [HeaderName; 7] = [
        CONTENT_TYPE,
        TE,
        USER_AGENT,
        CONTENT_LENGTH,
        HOST,
        ACCEPT_ENCODING,
        CONNECTION,
    ];
    if TRANSPORT.contains(name) {
        return false;
    }
    let name = name.as_str();
    // (A `HeaderName` is never an HTTP/2 pseudo-header: those are not in a `HeaderMap`.)
    !(name.starts_with("grpc-")
        || matches!(
            name,
            "timeout" | "x-content-type" | "traceparent" | "tracestate" | "b3" | "uber-trace-id"
        )
        || name.starts_with("x-b3-"))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn transport_and_trace_headers_are_not_propagated() {
        let not = [
            "content-type",
            "te",
            "user-agent",
            "content-length",
            "host",
            "accept-encoding",
            "connection",
            "grpc-timeout",
            "grpc-accept-encoding",
            "timeout",
            "x-content-type",
            "traceparent",
            "tracestate",
            "b3",
            "uber-trace-id",
            "x-b3-traceid",
        ];
        for name in not {
            assert!(!is_propagated(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["x-user", "authorization", "micro-from-service", "baggage"] {
            assert!(is_propagated(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[tokio::test]
    async fn context_is_visible_inside_the_scope_only() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("alice"));
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-timeout", HeaderValue::from_static("1S"));
        headers.insert("traceparent", HeaderValue::from_static("00-x"));
        let ctx = CallContext::from_headers(&headers);
        assert!(
            ctx.deadline
                .is_some_and(|d| d.remaining() <= Duration::from_secs(1))
        );
        assert!(CallContext::current().is_none());
        ctx.scope(async {
            let current = CallContext::current().unwrap();
            assert_eq!(current.metadata.len(), 1);
            assert_eq!(current.metadata["x-user"], "alice");
        })
        .await;
        assert!(CallContext::current().is_none());
    }

    #[test]
    fn go_micro_transport_headers_are_not_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert("timeout", HeaderValue::from_static("50000000"));
        headers.insert(
            "x-content-type",
            HeaderValue::from_static("application/grpc+proto"),
        );
        headers.insert("x-user", HeaderValue::from_static("alice"));
        let ctx = CallContext::from_headers(&headers);
        let names: Vec<&str> = ctx.metadata.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-user"]);
    }

    #[tokio::test]
    async fn protocol_headers_only_make_empty_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        let ctx = CallContext::from_headers(&headers);
        assert!(ctx.metadata.is_empty() && ctx.deadline.is_none());
        let seen = ctx
            .scope(async { CallContext::with_current(|c| c.metadata.len()) })
            .await;
        assert_eq!(seen, Some(0));
        assert_eq!(CallContext::with_current(|_| ()), None);
    }
}
