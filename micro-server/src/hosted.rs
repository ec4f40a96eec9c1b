//! The user services a server hosts: the innermost service of its handler stack.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use micro_core::BoxError;
use tonic::{body::Body, server::NamedService};
use tower::{ServiceExt, util::BoxCloneSyncService};
use tower_service::Service;

use crate::HandlerService;

/// What a server can host: a tonic-generated service (`GreeterServer::new(handler)`).
pub trait Hostable:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
    + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Hostable for S where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A hosted service's response.
pub(crate) type Responding = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

/// The hosted services, each call sent to the one its path names.
///
/// This is what tonic's `Routes` does with an axum router, without the router: the entry has
/// already resolved the path, so the choice is one comparison per service, and the bodies are
/// not converted to axum's and back (which boxed each body twice more per call). tower's
/// `Steer` would fit, but it is `Sync` only for requests that are, and a request's body is not.
#[derive(Clone, Default)]
pub(crate) struct Hosted {
    services: Vec<(&'static str, HandlerService)>,
}

impl Hosted {
    /// Hosts a tonic-generated service under its proto name (`greeter.Greeter`).
    pub(crate) fn add<S: Hostable>(&mut self, service: S) {
        let service = ServiceExt::<Request<Body>>::map_err(service, |never| match never {});
        self.services
            .push((S::NAME, BoxCloneSyncService::new(service)));
    }

    /// The proto names of the hosted services, in the order added.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.services.iter().map(|(name, _)| *name).collect()
    }
}

impl Service<Request<Body>> for Hosted {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Responding;

    /// Ready when every hosted service is: which one a call goes to is known only at `call`.
    /// (tonic-generated services always are.)
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        for (_, service) in &mut self.services {
            ready!(service.poll_ready(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Responding {
        let path = request.uri().path();
        let wanted = path
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(service, _)| service);
        match self.services.iter_mut().find(|(name, _)| *name == wanted) {
            Some((_, service)) => service.call(request),
            // The entry sends only hosted paths here; a wrapper may have rewritten one.
            None => {
                let unknown = crate::entry::unknown_service(path);
                Box::pin(std::future::ready(Ok(unknown)))
            }
        }
    }
}
