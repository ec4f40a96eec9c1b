//! The first thing every request meets: resolves go-micro's path form, records the call's
//! [`CallInfo`] (with its [`Deadline`]) and [`CallContext`], then hands the request to the handler
//! wrappers (user services) or straight to the built-in services (health, reflection).

use std::{
    collections::HashMap,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response, Uri};
use micro_core::{BoxError, CallContext, CallInfo, Deadline, NodeInfo, timeout};
use parking_lot::RwLock;
use tonic::body::Body;
use tower::ServiceExt;
use tower_service::Service;

use crate::{
    HandlerService,
    hosted::{BoxFuture, Hosted, within},
};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Where a gRPC service part of a path (`greeter.Greeter`) goes.
#[derive(Default)]
pub(crate) struct PathMap {
    /// The user services by proto name (`greeter.Greeter`).
    user: FastMap<String, Arc<dyn Hosted>>,
    /// Last dot-segment (`Greeter`) -> proto name, for go-micro's `/<any>.Greeter/Hello` form.
    by_short: FastMap<String, String>,
    /// Built-in services (health, reflection) that skip the handler wrappers.
    builtin: FastMap<String, Arc<dyn Hosted>>,
    /// The routes of the user paths seen, so the hot path resolves a path with one lookup.
    seen: RwLock<FastMap<Box<str>, UserRoute>>,
}

impl PathMap {
    /// The most user paths remembered; past it (a peer sending random paths that all map to a
    /// user service) routes are computed each time instead of stored.
    const LIMIT: usize = 1024;

    pub(crate) fn add_user(&mut self, name: &str, service: Arc<dyn Hosted>) {
        self.user.insert(name.to_owned(), service);
        let short = name.rsplit('.').next().unwrap_or(name);
        self.by_short.insert(short.to_owned(), name.to_owned());
    }

    pub(crate) fn add_builtin(&mut self, name: &str, service: Arc<dyn Hosted>) {
        self.builtin.insert(name.to_owned(), service);
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
        let user = |service: &Arc<dyn Hosted>, rewrite| {
            Route::User(UserRoute {
                service: service.clone(),
                endpoint: micro_core::endpoint_of(path).into(),
                rewrite,
            })
        };
        if let Some(hosted) = self.user.get(service) {
            return user(hosted, None);
        }
        if let Some(hosted) = self.builtin.get(service) {
            return Route::Builtin(hosted.clone());
        }
        let short = service.rsplit('.').next().unwrap_or(service);
        let Some((full, hosted)) = self
            .by_short
            .get(short)
            .and_then(|full| Some((full, self.user.get(full)?)))
        else {
            return Route::Unknown;
        };
        match Uri::builder()
            .path_and_query(format!("/{full}/{method}"))
            .build()
        {
            Ok(uri) => user(hosted, Some(uri)),
            Err(_) => Route::Unknown,
        }
    }
}

enum Route {
    User(UserRoute),
    Builtin(Arc<dyn Hosted>),
    Unknown,
}

/// A path of a user service.
#[derive(Clone)]
struct UserRoute {
    /// The service.
    service: Arc<dyn Hosted>,
    /// go-micro's endpoint name, `Greeter.Hello`.
    endpoint: Arc<str>,
    /// The hosted proto path, when the request used go-micro's `/<any>.Greeter/Hello` form.
    rewrite: Option<Uri>,
}

/// The entry service. Cloned by the transport for every request, so it is one `Arc`.
#[derive(Clone)]
pub(crate) struct Entry(Arc<EntryInner>);

struct EntryInner {
    /// The handler wrappers over [`hosted_service`], if there are any.
    wrapped: Option<HandlerService>,
    paths: Arc<PathMap>,
    service: Arc<str>,
    node: NodeInfo,
}

impl Entry {
    pub(crate) fn new(
        wrappers: &[Arc<dyn micro_core::Wrapper>],
        paths: PathMap,
        service: Arc<str>,
        node: NodeInfo,
    ) -> Self {
        let paths = Arc::new(paths);
        let wrapped = (!wrappers.is_empty())
            .then(|| micro_core::stack(hosted_service(paths.clone()), wrappers));
        Entry(Arc::new(EntryInner {
            wrapped,
            paths,
            service,
            node,
        }))
    }
}

/// The service under the handler wrappers: calls the user service the (possibly rewritten)
/// path names.
fn hosted_service(paths: Arc<PathMap>) -> HandlerService {
    HandlerService::new(tower::service_fn(move |req: Request<Body>| {
        match paths.route(req.uri().path()) {
            Route::User(route) => route.service.call(req),
            Route::Builtin(_) | Route::Unknown => Box::pin(std::future::ready(Ok(unknown(&req)))),
        }
    }))
}

/// go-micro's 501 for a path no hosted service answers.
fn unknown<B>(req: &Request<B>) -> Response<Body> {
    micro_core::Error::not_implemented(
        "go.micro.server",
        format!("unknown service {}", req.uri().path()),
    )
    .to_status()
    .into_http()
}

impl Service<Request<Body>> for Entry {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture;

    /// Always ready: each request drives its own copy of what it goes to to readiness.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> BoxFuture {
        let entry = &*self.0;
        match entry.paths.route(req.uri().path()) {
            Route::Builtin(service) => service.call(req),
            Route::Unknown => Box::pin(std::future::ready(Ok(unknown(&req)))),
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
                match &entry.wrapped {
                    None => route.service.call_scoped(req, context, enforce),
                    Some(stack) => {
                        let response = stack.clone().oneshot(req);
                        Box::pin(context.scope(within(enforce, response)))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;

    impl Hosted for Nothing {
        fn call(&self, _: Request<Body>) -> BoxFuture {
            unreachable!("routing tests call nothing")
        }

        fn call_scoped(&self, _: Request<Body>, _: CallContext, _: Option<Deadline>) -> BoxFuture {
            unreachable!("routing tests call nothing")
        }
    }

    fn paths() -> PathMap {
        let mut paths = PathMap::default();
        paths.add_user("greeter.Greeter", Arc::new(Nothing));
        paths.add_builtin("grpc.health.v1.Health", Arc::new(Nothing));
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
                    ..
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
            Route::Builtin(_)
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
