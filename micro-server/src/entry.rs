//! The first thing every request meets: resolves go-micro's path form, records the call's
//! [`CallInfo`] (with its [`Deadline`]) and [`CallContext`], then hands the request to the handler
//! wrappers (user services) or straight to the built-in services (health, reflection).

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, Uri};
use micro_core::{BoxError, CallContext, CallInfo, Deadline, NodeInfo, StackPool, timeout};
use parking_lot::RwLock;
use tonic::{body::Body, service::Routes};
use tower::ServiceExt;
use tower_service::Service;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// Where a gRPC service part of a path (`greeter.Greeter`) goes.
#[derive(Debug, Default)]
pub(crate) struct PathMap {
    /// Proto names of the user services (`greeter.Greeter`).
    user: FastSet<String>,
    /// Last dot-segment (`Greeter`) -> proto name, for go-micro's `/<any>.Greeter/Hello` form.
    by_short: FastMap<String, String>,
    /// Built-in services (health, reflection) that skip the handler wrappers.
    builtin: FastSet<String>,
    /// The routes of the user paths seen, so the hot path resolves a path with one lookup.
    seen: RwLock<FastMap<Box<str>, UserRoute>>,
}

impl PathMap {
    /// The most user paths remembered; past it (a peer sending random paths that all map to a
    /// user service) routes are computed each time instead of stored.
    const LIMIT: usize = 1024;

    pub(crate) fn add_user(&mut self, name: &str) {
        self.user.insert(name.to_owned());
        let short = name.rsplit('.').next().unwrap_or(name);
        self.by_short.insert(short.to_owned(), name.to_owned());
    }

    pub(crate) fn add_builtin(&mut self, name: &str) {
        self.builtin.insert(name.to_owned());
    }

    fn route(&self, path: &str) -> Route {
        if let Some(user) = self.seen.read().get(path) {
            return Route::User(user.clone());
        }
        let route = self.resolve(path);
        if let Route::User(user) = &route {
            let mut seen = self.seen.write();
            if seen.len() < Self::LIMIT {
                seen.insert(path.into(), user.clone());
            }
        }
        route
    }

    fn resolve(&self, path: &str) -> Route {
        let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
            return Route::Unknown;
        };
        let user = |rewrite| {
            Route::User(UserRoute {
                endpoint: micro_core::endpoint_of(path).into(),
                rewrite,
            })
        };
        if self.user.contains(service) {
            return user(None);
        }
        if self.builtin.contains(service) {
            return Route::Builtin;
        }
        let short = service.rsplit('.').next().unwrap_or(service);
        let Some(full) = self.by_short.get(short) else {
            return Route::Unknown;
        };
        match Uri::builder()
            .path_and_query(format!("/{full}/{method}"))
            .build()
        {
            Ok(uri) => user(Some(uri)),
            Err(_) => Route::Unknown,
        }
    }
}

enum Route {
    User(UserRoute),
    Builtin,
    Unknown,
}

/// A path of a user service.
#[derive(Clone, Debug)]
struct UserRoute {
    /// go-micro's endpoint name, `Greeter.Hello`.
    endpoint: Arc<str>,
    /// The hosted proto path, when the request used go-micro's `/<any>.Greeter/Hello` form.
    rewrite: Option<Uri>,
}

/// The user services behind the handler wrappers (with none, just tonic's routes), copies
/// reused from request to request. Whatever the wrappers fail with leaves as a status with
/// go-micro's JSON, never as a reset stream.
async fn handle(handlers: StackPool, req: Request<Body>) -> Result<Response<Body>, BoxError> {
    match handlers.call(req).await {
        Ok(response) => Ok(response),
        Err(err) => {
            let status = micro_core::outcome::edge_status(&err, SERVER_ID);
            tracing::debug!(%err, code = ?status.code(), "handler stack failed");
            Ok(status.into_http())
        }
    }
}

const SERVER_ID: &str = "go.micro.server";

/// tonic's routes never fail; the entry's error type is the stack's.
fn infallible(result: Result<Response<Body>, Infallible>) -> Result<Response<Body>, BoxError> {
    result.map_err(|never| match never {})
}

/// The entry's response.
pub(crate) type EntryFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

/// The entry service. Cloned by the transport for every request, so it is one `Arc`; each
/// request clones only the stack it goes to.
#[derive(Clone)]
pub(crate) struct Entry(Arc<EntryInner>);

struct EntryInner {
    handlers: StackPool,
    builtin: Routes,
    paths: PathMap,
    service: Arc<str>,
    node: NodeInfo,
}

impl Entry {
    pub(crate) fn new(
        handlers: StackPool,
        builtin: Routes,
        paths: PathMap,
        service: Arc<str>,
        node: NodeInfo,
    ) -> Self {
        Entry(Arc::new(EntryInner {
            handlers,
            builtin,
            paths,
            service,
            node,
        }))
    }
}

impl Service<Request<Body>> for Entry {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = EntryFuture;

    /// Always ready: each request drives its own copy of the stack it goes to to readiness.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> EntryFuture {
        let entry = &*self.0;
        match entry.paths.route(req.uri().path()) {
            Route::Builtin => {
                let builtin = entry.builtin.clone();
                Box::pin(async move { infallible(builtin.oneshot(req).await) })
            }
            Route::Unknown => {
                let err = micro_core::Error::not_implemented(
                    SERVER_ID,
                    format!("unknown service {}", req.uri().path()),
                );
                Box::pin(std::future::ready(Ok(err.to_status().into_http())))
            }
            Route::User(route) => {
                if let Some(uri) = route.rewrite {
                    *req.uri_mut() = uri;
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
                req.extensions_mut().insert(CallInfo {
                    service: entry.service.clone(),
                    endpoint: route.endpoint,
                    node: Some(entry.node.clone()),
                    deadline,
                });
                let response = handle(entry.handlers.clone(), req);
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
            let err = micro_core::Error::timeout(SERVER_ID, "deadline exceeded");
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
            Route::User(UserRoute { rewrite: None, .. })
        ));
        for _ in 0..2 {
            match paths.route("/greeter2.Greeter/Test") {
                Route::User(UserRoute {
                    endpoint,
                    rewrite: Some(uri),
                }) => {
                    assert_eq!(uri.path(), "/greeter.Greeter/Test");
                    assert_eq!(&*endpoint, "Greeter.Test");
                }
                _ => panic!("not rewritten"),
            }
        }
        match paths.route("/a.b.c.Greeter/Hello") {
            Route::User(UserRoute {
                rewrite: Some(uri), ..
            }) => assert_eq!(uri.path(), "/greeter.Greeter/Hello"),
            _ => panic!("not rewritten"),
        }
        assert!(matches!(
            paths.route("/grpc.health.v1.Health/Check"),
            Route::Builtin
        ));
        assert!(matches!(paths.route("/x.Nope/Hello"), Route::Unknown));
        assert!(matches!(paths.route("/garbage"), Route::Unknown));
        assert!(matches!(paths.route(""), Route::Unknown));
        assert!(matches!(paths.route("/x.Greeter/a b"), Route::Unknown));
    }

    #[test]
    fn remembered_paths_are_bounded() {
        let paths = paths();
        for i in 0..PathMap::LIMIT + 10 {
            assert!(matches!(
                paths.route(&format!("/p{i}.Greeter/Hello")),
                Route::User(UserRoute {
                    rewrite: Some(_),
                    ..
                })
            ));
        }
        assert!(matches!(paths.route("/nope.Nope/Hello"), Route::Unknown));
        assert_eq!(paths.seen.read().len(), PathMap::LIMIT);
    }
}
