//! The services a server hosts, and which of them a call goes to.

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

/// Hosted services, each call sent to the one its path names: the user services (the
/// innermost service of the handler stack) and, apart, the built-in ones (health, reflection).
///
/// This is what tonic's `Routes` does with an axum router, without the router: the entry has
/// already resolved the path, so the choice is one comparison per service, and the bodies are
/// not converted to axum's and back. tower's `Steer` would fit, but it is `Sync` only for
/// requests that are, and a request's body is not.
#[derive(Clone, Default)]
pub(crate) struct Hosted {
    services: Vec<(&'static str, HandlerService)>,
}

impl Hosted {
    /// Hosts a tonic-generated service under its proto name (`greeter.Greeter`); one hosted
    /// under the same name before is replaced.
    pub(crate) fn add<S: Hostable>(&mut self, service: S) {
        let service =
            BoxCloneSyncService::new(ServiceExt::<Request<Body>>::map_err(service, |never| {
                match never {}
            }));
        match self.services.iter_mut().find(|(name, _)| *name == S::NAME) {
            Some((_, hosted)) => *hosted = service,
            None => self.services.push((S::NAME, service)),
        }
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
        let wanted = micro_core::split_grpc_path(path).map_or("", |(service, _)| service);
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

#[cfg(test)]
mod tests {
    use std::future::Ready;

    use super::*;

    /// A hosted service answering with its own tag in a header.
    #[derive(Clone)]
    struct Tagged<const N: u8>(&'static str);

    impl<const N: u8> NamedService for Tagged<N> {
        const NAME: &'static str = if N == 0 { "a.A" } else { "b.B" };
    }

    impl<const N: u8> Service<Request<Body>> for Tagged<N> {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = Ready<Result<Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            let mut response = Response::new(Body::empty());
            response
                .headers_mut()
                .insert("tag", http::HeaderValue::from_static(self.0));
            std::future::ready(Ok(response))
        }
    }

    async fn tag_of(hosted: &mut Hosted, path: &'static str) -> Option<String> {
        std::future::poll_fn(|cx| hosted.poll_ready(cx))
            .await
            .unwrap();
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = hosted.call(request).await.unwrap();
        let tag = response.headers().get("tag")?;
        Some(tag.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn each_call_goes_to_the_service_its_path_names_and_a_second_of_a_name_replaces_the_first()
     {
        let mut hosted = Hosted::default();
        hosted.add(Tagged::<0>("first a"));
        hosted.add(Tagged::<1>("b"));
        hosted.add(Tagged::<0>("second a"));
        assert_eq!(hosted.names(), ["a.A", "b.B"]);
        assert_eq!(
            tag_of(&mut hosted, "/a.A/Any").await.as_deref(),
            Some("second a")
        );
        assert_eq!(tag_of(&mut hosted, "/b.B/Any").await.as_deref(), Some("b"));
        // Nothing hosted under the path: go-micro's 501, as a status in the response.
        assert_eq!(tag_of(&mut hosted, "/c.C/Any").await, None);
        let request = Request::builder()
            .uri("/c.C/Any")
            .body(Body::empty())
            .unwrap();
        let response = hosted.call(request).await.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(status.message().contains("/c.C/Any"), "{status:?}");
    }
}
