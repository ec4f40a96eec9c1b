//! What every wrapper knows about a call.

use std::sync::Arc;

/// The node a call goes to (client side) or arrived at (server side).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    /// Registry node id, e.g. `greeter2-6f1c...`.
    pub id: Arc<str>,
    /// `host:port`.
    pub address: Arc<str>,
}

/// The call a request belongs to, stored in the request's extensions by micro's server for
/// every handled call, and by micro's client for its wrappers (a client without wrappers
/// skips the insert). The call's metadata are the request's headers.
///
/// ```
/// # use micro_core::CallInfo;
/// let info = CallInfo::from_path("greeter2", "/greeter.Greeter/Test");
/// assert_eq!(&*info.endpoint, "Greeter.Test");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallInfo {
    /// Registered service name, e.g. `greeter2`.
    pub service: Arc<str>,
    /// go-micro endpoint, `Service.Method`, e.g. `Greeter.Test`.
    pub endpoint: Arc<str>,
    /// The node: chosen per attempt on the client (so `None` outside the retry loop), this
    /// server's node on the server.
    pub node: Option<NodeInfo>,
    /// When the call must be answered by: the client's timeout (or the deadline inherited from
    /// the call being handled, if sooner); on the server, the caller's. A wrapper that waits
    /// (for a token, a permit) waits no longer than this.
    pub deadline: Option<crate::Deadline>,
}

impl CallInfo {
    /// Builds the info of a call from a gRPC path `/<pkg>.<Service>/<Method>`.
    pub fn from_path(service: impl Into<Arc<str>>, path: &str) -> Self {
        CallInfo {
            service: service.into(),
            endpoint: endpoint_of(path).into(),
            node: None,
            deadline: None,
        }
    }

    /// Reads the info from a request, if micro put one there.
    pub fn of<B>(request: &http::Request<B>) -> Option<&CallInfo> {
        request.extensions().get::<CallInfo>()
    }
}

/// `/any.pkg.Greeter/Hello` -> `Greeter.Hello`; a path that is not of that form is kept
/// without its leading `/`.
pub fn endpoint_of(path: &str) -> String {
    match split_grpc_path(path) {
        Some((service, method)) => {
            let short = service.rsplit('.').next().unwrap_or(service);
            format!("{short}.{method}")
        }
        None => path.trim_start_matches('/').to_owned(),
    }
}

/// A gRPC path's service and method: `/any.pkg.Greeter/Hello` -> (`any.pkg.Greeter`, `Hello`).
pub fn split_grpc_path(path: &str) -> Option<(&str, &str)> {
    path.trim_start_matches('/').split_once('/')
}

/// Remembers the endpoint of each gRPC path, so the hot path does not format
/// `Greeter.Hello` on every call. Bounded: paths past the limit (a peer sending random
/// methods) are computed each time instead of stored.
#[derive(Debug, Default)]
pub struct EndpointCache {
    map: std::sync::RwLock<
        std::collections::HashMap<Box<str>, Arc<str>, foldhash::fast::RandomState>,
    >,
}

impl EndpointCache {
    /// The most paths remembered.
    pub const LIMIT: usize = 1024;

    /// The endpoint of `path`, as [`endpoint_of`].
    pub fn endpoint(&self, path: &str) -> Arc<str> {
        if let Ok(map) = self.map.read()
            && let Some(endpoint) = map.get(path)
        {
            return endpoint.clone();
        }
        let endpoint: Arc<str> = endpoint_of(path).into();
        if let Ok(mut map) = self.map.write()
            && map.len() < Self::LIMIT
        {
            map.insert(path.into(), endpoint.clone());
        }
        endpoint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_of_strips_the_package() {
        assert_eq!(endpoint_of("/greeter.Greeter/Hello"), "Greeter.Hello");
        assert_eq!(endpoint_of("/a.b.c.Greeter/Test"), "Greeter.Test");
        assert_eq!(endpoint_of("/Greeter/Test"), "Greeter.Test");
        assert_eq!(endpoint_of("weird"), "weird");
    }

    #[test]
    fn endpoint_cache_is_bounded() {
        let cache = EndpointCache::default();
        assert_eq!(&*cache.endpoint("/greeter.Greeter/Hello"), "Greeter.Hello");
        assert_eq!(&*cache.endpoint("/greeter.Greeter/Hello"), "Greeter.Hello");
        for i in 0..EndpointCache::LIMIT + 10 {
            assert_eq!(&*cache.endpoint(&format!("/a.B/M{i}")), format!("B.M{i}"));
        }
        assert_eq!(cache.map.read().unwrap().len(), EndpointCache::LIMIT);
    }
}
