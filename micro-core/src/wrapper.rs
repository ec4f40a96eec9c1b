//! Wrappers: any tower layer over a type-erased call, so that layers of different types stack.

use bytes::Bytes;
use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt, util::BoxCloneSyncService};

use crate::BoxError;

/// A call as wrappers see it (client or server side), type-erased.
pub type BoxService = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// A wrapper: implemented for every tower [`Layer`] whose service handles gRPC requests,
/// is `Clone + Send + Sync`, and fails with anything convertible to [`BoxError`] (e.g.
/// `tower::timeout::TimeoutLayer`, `tower::limit::ConcurrencyLimitLayer`).
pub trait Wrapper: Send + Sync + 'static {
    /// Wraps `inner`.
    fn wrap(&self, inner: BoxService) -> BoxService;
}

impl<L, S, ResBody> Wrapper for L
where
    L: Layer<BoxService, Service = S> + Send + Sync + 'static,
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    fn wrap(&self, inner: BoxService) -> BoxService {
        BoxCloneSyncService::new(
            self.layer(inner)
                .map_response(|r| r.map(Body::new))
                .map_err(Into::into),
        )
    }
}

/// Stacks wrappers around `inner`; the first in the list is the outermost, as in go-micro.
pub fn stack(inner: BoxService, wrappers: &[std::sync::Arc<dyn Wrapper>]) -> BoxService {
    wrappers
        .iter()
        .rev()
        .fold(inner, |service, wrapper| wrapper.wrap(service))
}
