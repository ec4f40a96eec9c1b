use tower_layer::Layer;

use super::{Side, Trace, Tracing};

/// Traces every call of the service it wraps: a server span per handled call
/// ([`Tracing::server`]) or a client span per call made ([`Tracing::client`]).
#[derive(Clone, Debug)]
pub struct TraceLayer {
    tracing: Tracing,
    side: Side,
}

impl TraceLayer {
    /// A layer tracing `side` with `tracing`.
    pub fn new(tracing: Tracing, side: Side) -> Self {
        TraceLayer { tracing, side }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace::new(inner, self.tracing.clone(), self.side)
    }
}
