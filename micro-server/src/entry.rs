//! The first thing every request meets: resolves go-micro's path form, records the call's
//! [`CallInfo`], [`Deadline`] and [`CallContext`], then hands the request to the handler
//! wrappers (user services) or straight to the built-in services (health, reflection).

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, Uri};
use micro_core::{BoxError, CallContext, CallInfo, Deadline, NodeInfo, timeout};
use tonic::{Status, body::Body};

use crate::HandlerService;
use tower_service::Service;

/// Where a gRPC service part of a path (`greeter.Greeter`) goes.
#[derive(Debug, Default)]
pub(crate) struct PathMap {
    /// Proto names of the user services (`greeter.Greeter`).
    user: HashSet<String>,
    /// Last dot-segment (`Greeter`) -> proto name, for go-micro's `/<any>.Greeter/Hello` form.
    by_short: HashMap<String, String>,
    /// Built-in services (health, reflection) that skip the handler wrappers.
    builtin: HashSet<String>,
    /// Endpoint names of the paths seen.
    endpoints: micro_core::EndpointCache,
}

impl PathMap {
    pub(crate) fn add_user(&mut self, name: &str) {
        self.user.insert(name.to_owned());
        let short = name.rsplit('.').next().unwrap_or(name);
        self.by_short.insert(short.to_owned(), name.to_owned());
    }

    pub(crate) fn add_builtin(&mut self, name: &str) {
        self.builtin.insert(name.to_owned());
    }

    fn route(&self, path: &str) -> Route {
        let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
            return Route::Unknown;
        };
        if self.user.contains(service) {
            return Route::User(None);
        }
        if self.builtin.contains(service) {
            return Route::Builtin;
        }
        let short = service.rsplit('.').next().unwrap_or(service);
        match self.by_short.get(short) {
            Some(full) => Route::User(Some(format!("/{full}/{method}"))),
            None => Route::Unknown,
        }
    }
}

enum Route {
    /// A user service; `Some(path)` when the go-micro form was rewritten.
    User(Option<String>),
    Builtin,
    Unknown,
}

/// The entry service.
#[derive(Clone)]
pub(crate) struct Entry {
    handlers: HandlerService,
    builtin: HandlerService,
    paths: Arc<PathMap>,
    service: Arc<str>,
    node: NodeInfo,
}

impl Entry {
    pub(crate) fn new(
        handlers: HandlerService,
        builtin: HandlerService,
        paths: PathMap,
        service: Arc<str>,
        node: NodeInfo,
    ) -> Self {
        Entry {
            handlers,
            builtin,
            paths: Arc::new(paths),
            service,
            node,
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

impl Service<Request<Body>> for Entry {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both stacks must be ready: a request may go to either.
        match self.handlers.poll_ready(cx)? {
            Poll::Ready(()) => self.builtin.poll_ready(cx),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, mut req: Request<Body>) -> BoxFuture {
        match self.paths.route(req.uri().path()) {
            Route::Builtin => {
                let mut builtin = self.builtin.clone();
                std::mem::swap(&mut builtin, &mut self.builtin);
                Box::pin(builtin.call(req))
            }
            Route::Unknown => {
                let err = micro_core::Error::not_implemented(
                    "go.micro.server",
                    format!("unknown service {}", req.uri().path()),
                );
                Box::pin(std::future::ready(Ok(err.to_status().into_http())))
            }
            Route::User(rewrite) => {
                if let Some(path) = rewrite {
                    match Uri::builder().path_and_query(path).build() {
                        Ok(uri) => *req.uri_mut() = uri,
                        Err(err) => {
                            let status = Status::invalid_argument(format!("bad path: {err}"));
                            return Box::pin(std::future::ready(Ok(status.into_http())));
                        }
                    }
                }
                // tonic already enforces a valid `grpc-timeout`; time only go-micro's header.
                let (deadline, enforce) = match timeout::grpc_from_headers(req.headers()) {
                    Some(left) => (Some(Deadline::after(left)), None),
                    None => {
                        let deadline =
                            timeout::micro_from_headers(req.headers()).map(Deadline::after);
                        (deadline, deadline)
                    }
                };
                let context = CallContext::with_deadline(deadline, req.headers());
                let info = CallInfo {
                    service: self.service.clone(),
                    endpoint: self.paths.endpoints.endpoint(req.uri().path()),
                    node: Some(self.node.clone()),
                    deadline,
                };
                req.extensions_mut().insert(info);
                if let Some(deadline) = deadline {
                    req.extensions_mut().insert(deadline);
                }
                let mut handlers = self.handlers.clone();
                std::mem::swap(&mut handlers, &mut self.handlers);
                let response = handlers.call(req);
                Box::pin(context.scope(within(enforce, response)))
            }
        }
    }
}

/// Answers DeadlineExceeded when the caller's deadline passes first (go-micro's `timeout`
/// header is enforced here; tonic already enforces `grpc-timeout`).
async fn within<F>(deadline: Option<Deadline>, response: F) -> Result<Response<Body>, BoxError>
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

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> PathMap {
        let mut paths = PathMap::default();
        paths.add_user("greeter.Greeter");
        paths.add_builtin("grpc.health.v1.Health");
        paths
    }

    #[test]
    fn go_micro_paths_are_rewritten_to_the_proto_path() {
        let paths = paths();
        assert!(matches!(
            paths.route("/greeter.Greeter/Hello"),
            Route::User(None)
        ));
        match paths.route("/greeter2.Greeter/Test") {
            Route::User(Some(path)) => assert_eq!(path, "/greeter.Greeter/Test"),
            _ => panic!("not rewritten"),
        }
        match paths.route("/a.b.c.Greeter/Hello") {
            Route::User(Some(path)) => assert_eq!(path, "/greeter.Greeter/Hello"),
            _ => panic!("not rewritten"),
        }
        assert!(matches!(
            paths.route("/grpc.health.v1.Health/Check"),
            Route::Builtin
        ));
        assert!(matches!(paths.route("/x.Nope/Hello"), Route::Unknown));
        assert!(matches!(paths.route("/garbage"), Route::Unknown));
        assert!(matches!(paths.route(""), Route::Unknown));
    }
}
