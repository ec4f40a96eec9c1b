//! The hosted gRPC services, called by name. micro resolves every path itself (it must, for
//! go-micro's `/<any>.Greeter/Hello` form), so a router in front of the services would only
//! repeat the lookup, with its own allocations, on every request.

use std::{convert::Infallible, future::Future, pin::Pin};

use http::{Request, Response};
use micro_core::{BoxError, CallContext, Deadline};
use tonic::body::Body;
use tower::ServiceExt;
use tower_service::Service;

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

/// One hosted service (a tonic-generated server), callable through a shared reference.
pub(crate) trait Hosted: Send + Sync {
    /// Calls the service.
    fn call(&self, request: Request<Body>) -> BoxFuture;

    /// Calls the service in the call's context and, when `enforce` is set, within that
    /// deadline: one allocation for the whole request.
    fn call_scoped(
        &self,
        request: Request<Body>,
        context: CallContext,
        enforce: Option<Deadline>,
    ) -> BoxFuture;
}

/// A [`Hosted`] tonic service. Each request drives its own copy; copies are cheap, generated
/// servers hold their handler in an `Arc`.
pub(crate) struct HostedService<S>(pub(crate) S);

impl<S> HostedService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    async fn handle(service: S, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        match service.oneshot(request).await {
            Ok(response) => Ok(response),
            Err(never) => match never {},
        }
    }
}

impl<S> Hosted for HostedService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, request: Request<Body>) -> BoxFuture {
        Box::pin(Self::handle(self.0.clone(), request))
    }

    fn call_scoped(
        &self,
        request: Request<Body>,
        context: CallContext,
        enforce: Option<Deadline>,
    ) -> BoxFuture {
        let response = Self::handle(self.0.clone(), request);
        Box::pin(context.scope(within(enforce, response)))
    }
}

/// Answers DeadlineExceeded when the caller's deadline passes first (go-micro's `timeout`
/// header is enforced here; tonic already enforces `grpc-timeout`).
pub(crate) async fn within<F>(
    deadline: Option<Deadline>,
    response: F,
) -> Result<Response<Body>, BoxError>
where
    F: Future<Output = Result<Response<Body>, BoxError>>,
{
    let Some(deadline) = deadline else {
        return response.await;
    };
    match tokio::time::timeout_at(deadline.0, response).await {
        Ok(result) => result,
        Err(_) => {
            let err = micro_core::Error::timeout("go.micro.server", "deadline exceeded");
            Ok(err.to_status().into_http())
        }
    }
}
