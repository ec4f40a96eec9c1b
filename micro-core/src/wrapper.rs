//! Wrappers: any tower layer over a type-erased call, so that layers of different types stack.

use bytes::Bytes;
use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer, Service, util::BoxCloneSyncService};

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
        BoxCloneSyncService::new(Adapt(self.layer(inner)))
    }
}

/// A layer's service with the stack's response and error types: one adapter future per call
/// (`map_response` then `map_err` would be two).
#[derive(Clone)]
struct Adapt<S>(S);

type Adapted<F, B, E> = futures::future::Map<F, fn(Result<Response<B>, E>) -> AdaptedResult>;
type AdaptedResult = Result<Response<Body>, BoxError>;

impl<S, ResBody> Service<Request<Body>> for Adapt<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Adapted<S::Future, ResBody, S::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        futures::FutureExt::map(self.0.call(request), adapt as fn(_) -> _)
    }
}

fn adapt<B, E>(result: Result<Response<B>, E>) -> AdaptedResult
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    result
        .map(|response| response.map(Body::new))
        .map_err(Into::into)
}

/// Stacks wrappers around `inner`; the first in the list is the outermost, as in go-micro.
pub fn stack(inner: BoxService, wrappers: &[std::sync::Arc<dyn Wrapper>]) -> BoxService {
    wrappers
        .iter()
        .rev()
        .fold(inner, |service, wrapper| wrapper.wrap(service))
}
