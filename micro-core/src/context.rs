//! The context of an incoming call, inherited by the calls its handler makes.
//!
//! go-micro passes a `context.Context` from handler to client; micro-rs keeps the same
//! information in a tokio task-local that the server sets around each handler. Calls made from
//! the handler's task (not from a spawned task) carry its metadata and its deadline.

use std::{future::Future, sync::Arc, time::Duration};

use http::HeaderMap;
use tokio::time::Instant;

/// The point in time by which a call must be answered. The server stores it in the request's
/// extensions, so a handler can read it: `request.extensions().get::<Deadline>()`.
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
    static CURRENT: Arc<CallContext>;
}

/// Deadline and metadata of the call being handled.
#[derive(Clone, Debug, Default)]
pub struct CallContext {
    /// When the incoming call must be answered by.
    pub deadline: Option<Deadline>,
    /// The incoming call's metadata that outgoing calls carry on (transport and gRPC
    /// protocol headers excluded).
    pub metadata: HeaderMap,
}

impl CallContext {
    /// The context of an incoming request with these headers, received now.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let deadline = crate::timeout::from_headers(headers).map(Deadline::after);
        Self::with_deadline(deadline, headers)
    }

    /// The context of an incoming request whose deadline the caller already read.
    pub fn with_deadline(deadline: Option<Deadline>, headers: &HeaderMap) -> Self {
        let metadata = headers
            .iter()
            .filter(|(name, _)| is_propagated(name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        CallContext { deadline, metadata }
    }

    /// Runs `future` with this context as the current one.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(Arc::new(self), future)
    }

    /// The context of the call being handled by this task, if any.
    pub fn current() -> Option<Arc<CallContext>> {
        CURRENT.try_with(Arc::clone).ok()
    }
}

/// Whether an incoming header is call metadata to pass on (go-micro passes on its context's
/// metadata), rather than a transport or protocol header of this hop.
pub fn is_propagated(name: &str) -> bool {
    !(name.starts_with(':')
        || name.starts_with("grpc-")
        || matches!(
            name,
            "content-type"
                | "content-length"
                | "te"
                | "user-agent"
                | "host"
                | "accept-encoding"
                | "connection"
                | "timeout"
                | "traceparent"
                | "tracestate"
                | "b3"
                | "uber-trace-id"
        )
        || name.starts_with("x-b3-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
}
