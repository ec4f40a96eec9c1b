//! The first thing every request meets: resolves go-micro's path form, records the call's
//! [`CallInfo`] (with its [`Deadline`]) and [`CallContext`], then hands the request to the handler
//! wrappers (user services) or straight to the built-in services (health, reflection).

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, Uri};
use micro_core::{
    BoxError, CallContext, CallInfo, Deadline, NodeInfo, PoolCall, StackPool, timeout,
};
use parking_lot::RwLock;
use pin_project_lite::pin_project;
use tokio::{task::futures::TaskLocalFuture, time::Sleep};
use tonic::body::Body;
use tower::ServiceExt;
use tower_service::Service;

use crate::hosted::{Hosted, Responding};

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
        let Some((service, method)) = micro_core::split_grpc_path(path) else {
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

/// The handler stack's answer: whatever the wrappers fail with leaves as a status with
/// go-micro's JSON, never as a reset stream.
fn handled(result: Result<Response<Body>, BoxError>) -> Result<Response<Body>, BoxError> {
    result.or_else(|err| {
        let status = micro_core::outcome::edge_status(&err, SERVER_ID);
        tracing::debug!(%err, code = ?status.code(), "handler stack failed");
        Ok(status.into_http())
    })
}

const SERVER_ID: &str = "go.micro.server";

/// go-micro's answer to a path no hosted service serves.
pub(crate) fn unknown_service(path: &str) -> Response<Body> {
    micro_core::Error::not_implemented(SERVER_ID, format!("unknown service {path}"))
        .to_status()
        .into_http()
}

pin_project! {
    /// The entry's response, held in the transport's own per-request future (not boxed).
    #[project = EntryProjection]
    pub(crate) enum EntryFuture {
        User { #[pin] call: TaskLocalFuture<CallContext, Within> },
        /// Built-in services and unknown paths: boxed, being rare, so that every user call's
        /// future is only as large as its own.
        Other { call: Responding },
    }
}

impl Future for EntryFuture {
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EntryProjection::User { call } => call.poll(cx),
            EntryProjection::Other { call } => call.as_mut().poll(cx),
        }
    }
}

/// The entry service. Cloned by the transport for every request, so it is one `Arc`; each
/// request clones only the stack it goes to.
#[derive(Clone)]
pub(crate) struct Entry(Arc<EntryInner>);

struct EntryInner {
    handlers: StackPool,
    builtin: Hosted,
    paths: PathMap,
    service: Arc<str>,
    node: NodeInfo,
}

impl Entry {
    pub(crate) fn new(
        handlers: StackPool,
        builtin: Hosted,
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
            Route::Builtin => EntryFuture::Other {
                call: Box::pin(entry.builtin.clone().oneshot(req)),
            },
            Route::Unknown => EntryFuture::Other {
                call: Box::pin(std::future::ready(Ok(unknown_service(req.uri().path())))),
            },
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
                // The stack is called at once when ready: its wrappers' `call` sees the
                // context too (and may set the trace position in it), not only their futures.
                EntryFuture::User {
                    call: context.enter(|| Within::new(entry.handlers.call(req), enforce)),
                }
            }
        }
    }
}

pin_project! {
    /// A user call's response: the handler stack's, or DeadlineExceeded when the caller's
    /// deadline passes first (go-micro's `timeout` header is enforced here; tonic already
    /// enforces `grpc-timeout`). Written out, not `async`, so that it holds the stack's future
    /// once; the timer is boxed because few calls have one to enforce.
    struct Within {
        #[pin]
        response: PoolCall,
        deadline: Option<Pin<Box<Sleep>>>,
    }
}

impl Within {
    fn new(response: PoolCall, enforce: Option<Deadline>) -> Self {
        Within {
            response,
            deadline: enforce.map(|deadline| Box::pin(tokio::time::sleep_until(deadline.0))),
        }
    }
}

impl Future for Within {
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.response.poll(cx) {
            return Poll::Ready(handled(result));
        }
        let passed = this
            .deadline
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if passed {
            let err = micro_core::Error::timeout(SERVER_ID, "deadline exceeded");
            return Poll::Ready(Ok(err.to_status().into_http()));
        }
        Poll::Pending
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

    /// The entry's future lives in the transport's task for the request; past glibc's
    /// per-thread cache of small allocations (1032 bytes) that task's allocation takes
    /// malloc's slow path, and each byte of it is memory touched per call. Measured before
    /// `PoolCall` and `Within`: a boxed 1848-byte user call future, and more cache misses per
    /// call than bare tonic's server; 392 bytes before `PoolCall` called a ready stack at once
    /// and the rare routes were boxed.
    #[test]
    fn the_entry_future_is_small() {
        let size = std::mem::size_of::<EntryFuture>();
        eprintln!("entry future: {size} bytes");
        assert!(size <= 256, "{size} bytes");
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
