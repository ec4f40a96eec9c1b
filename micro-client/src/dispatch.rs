//! The retry loop: for each attempt, select a node, then run the call wrappers (if any) and
//! the node's pooled channel; retry on another node while the policy allows and time is left.

use std::sync::Arc;

use futures::FutureExt;
use http::{Request, Response};
use micro_core::{BoxError, CallInfo, Deadline, EndpointCache, Error, NodeInfo};
use micro_registry::Cache;
use tonic::{Status, body::Body};
use tower::ServiceExt;
use tower_service::Service as _;

use crate::{BoxService, CallOptions, Options, pool::Pool, replay::Replay, selector::Selector};

const CLIENT_ID: &str = "go.micro.client";

/// State shared by every call of one client.
pub(crate) struct Shared {
    pub(crate) options: Options,
    pub(crate) cache: Cache,
    pub(crate) selector: Selector,
    pub(crate) pool: Arc<Pool>,
    /// The call wrappers over [`attempt_service`], if there are any.
    pub(crate) call_stack: Option<BoxService>,
    /// Endpoint names of the paths called (`Greeter.Hello`).
    pub(crate) endpoints: EndpointCache,
}

/// The service below the client wrappers: the retry loop, for the [`CallInfo`] the request
/// carries.
pub(crate) fn dispatch_service(shared: Arc<Shared>) -> BoxService {
    BoxService::new(tower::service_fn(move |mut request: Request<Body>| {
        let shared = shared.clone();
        async move {
            let Some(info) = request.extensions_mut().remove::<CallInfo>() else {
                return Err(Error::internal(CLIENT_ID, "request has no CallInfo")
                    .to_status()
                    .into());
            };
            dispatch(shared, info, request).await
        }
    }))
}

/// The retry loop: each attempt picks a node and goes through the call wrappers (if any) to
/// that node's channel, until one answers or the policy, the retries or the time run out.
pub(crate) async fn dispatch(
    shared: Arc<Shared>,
    info: CallInfo,
    request: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    let (mut parts, body) = request.into_parts();
    let call = parts.extensions.remove::<CallOptions>().unwrap_or_default();
    let deadline = info
        .deadline
        .unwrap_or_else(|| Deadline::after(shared.options.request_timeout));
    let timed_out = || timeout_error(&info);

    // No timer spans the whole call: each attempt's network wait is bounded by tonic's
    // channel, which enforces the `grpc-timeout` sent with it; the phases that can wait
    // here (registry lookup on a cache miss, backoff) are bounded below. A phase that is
    // ready at once arms no timer.
    let mut body = Replay::read(body).await?;
    let retries = call.retries.unwrap_or(shared.options.retries);
    let mut tried: Vec<Arc<str>> = Vec::new();
    let mut attempt_no = 0;
    loop {
        if attempt_no > 0 {
            let pause = tokio::time::Instant::now() + shared.options.backoff_for(attempt_no);
            if pause >= deadline.0 {
                return Err(timed_out());
            }
            tokio::time::sleep_until(pause).await;
        }
        let services = services(&shared, &info, deadline).await?;
        let node = shared
            .selector
            .select(&info.service, &services, &call.filters, &tried)
            .ok_or_else(|| {
                BoxError::from(
                    Error::internal(
                        CLIENT_ID,
                        format!("service {}: none available", info.service),
                    )
                    .to_status(),
                )
            })?;
        // The time left, read once the node is chosen (a first lookup may have waited).
        let left = deadline.remaining();
        if left.is_zero() {
            return Err(timed_out());
        }
        // Set on the request head before it is copied, so the copy is sized for it.
        set_timeout_header(&mut parts.headers, left);
        // The last attempt takes the request itself; the others send a copy.
        let last = attempt_no >= retries || !body.is_replayable();
        let attempt_parts = if last {
            std::mem::replace(&mut parts, Request::new(()).into_parts().0)
        } else {
            copy_parts(&parts, shared.call_stack.is_some())
        };
        let request = Request::from_parts(attempt_parts, body.body());
        let result = match &shared.call_stack {
            // The call wrappers see the CallInfo, now naming the node.
            Some(stack) => {
                let mut request = request;
                request.extensions_mut().insert(CallInfo {
                    node: Some(NodeInfo {
                        id: node.id.as_str().into(),
                        address: node.address.as_str().into(),
                    }),
                    ..info.clone()
                });
                stack.clone().oneshot(request).await
            }
            None => attempt(&shared.pool, &node.address, Some(deadline), request).await,
        };
        let status = match &result {
            Ok(response) => trailers_only_status(response),
            Err(err) => Some(status_of(err)),
        };
        // tonic's channel timer (this attempt's `grpc-timeout`) fired: our deadline passed.
        if let Err(err) = &result
            && source_chain(&**err).any(|e| e.is::<tonic::TimeoutExpired>())
        {
            return Err(timed_out());
        }
        let retry = !last && status.as_ref().is_some_and(|s| (shared.options.retry)(s));
        if !retry {
            return result.map_err(|err| {
                let status = status_of(&err);
                let detail = format!("service {}: {}", info.service, status.message());
                if status.code() == tonic::Code::Unavailable
                    && Error::parse(status.message()).code == 0
                {
                    Error::unavailable(CLIENT_ID, detail).to_status().into()
                } else {
                    err
                }
            });
        }
        tracing::debug!(service = %info.service, node = %node.id, attempt = attempt_no, "retrying");
        tried.push(node.id.as_str().into());
        attempt_no += 1;
    }
}

/// go-micro's client timeout error (408).
fn timeout_error(info: &CallInfo) -> BoxError {
    Error::timeout(
        CLIENT_ID,
        format!("call {}.{} timed out", info.service, info.endpoint),
    )
    .to_status()
    .into()
}

/// The nodes of the called service: from memory once known; only a first lookup waits,
/// bounded by the deadline.
async fn services(
    shared: &Shared,
    info: &CallInfo,
    deadline: Deadline,
) -> Result<Arc<[micro_registry::Service]>, BoxError> {
    if let Some(services) = shared.cache.peek(&info.service) {
        return Ok(services);
    }
    let lookup = shared.cache.get_service(&info.service);
    match tokio::time::timeout_at(deadline.0, lookup).await {
        Err(_) => Err(timeout_error(info)),
        Ok(found) => found.map_err(|err| {
            let detail = match err {
                micro_registry::Error::NotFound => {
                    format!("service {}: not found", info.service)
                }
                other => format!("service {}: {other}", info.service),
            };
            BoxError::from(Error::internal(CLIENT_ID, detail).to_status())
        }),
    }
}

/// A copy of the request head for one attempt. Extensions are copied only for call wrappers:
/// the channel below reads none.
fn copy_parts(parts: &http::request::Parts, extensions: bool) -> http::request::Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    if extensions {
        copy.extensions = parts.extensions.clone();
    }
    copy
}

/// Sends the time left as `grpc-timeout`, which gRPC servers in every language (go-micro's
/// included) turn into the handler's deadline. go-micro's own `timeout` header is read by
/// micro servers but not sent: it would repeat the deadline in a value that changes on every
/// call, defeating header compression.
fn set_timeout_header(headers: &mut http::HeaderMap, left: std::time::Duration) {
    let left = micro_core::timeout::format_grpc_timeout_rounded(left);
    // A `&str` name would be parsed and copied into a new allocation on every call.
    static NAME: http::HeaderName =
        http::HeaderName::from_static(micro_core::timeout::GRPC_TIMEOUT);
    headers.insert(NAME.clone(), left);
}

/// The status of a trailers-only response (an error answered without a body).
fn trailers_only_status(response: &Response<Body>) -> Option<Status> {
    let status = Status::from_header_map(response.headers())?;
    (status.code() != tonic::Code::Ok).then_some(status)
}

/// The gRPC status an error stands for (connection failures are `Unavailable`).
pub(crate) fn status_of(err: &BoxError) -> Status {
    for e in source_chain(&**err) {
        if let Some(status) = e.downcast_ref::<Status>() {
            return Status::new(status.code(), status.message());
        }
        // tonic's channel enforcing the `grpc-timeout` sent with the attempt.
        if e.is::<tonic::TimeoutExpired>() {
            return Status::deadline_exceeded(err.to_string());
        }
    }
    // Transport failures: the request did not reach a handler.
    Status::unavailable(err.to_string())
}

fn source_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

/// The innermost service under call wrappers: sends one attempt to the node in the request's
/// [`CallInfo`].
pub(crate) fn attempt_service(pool: Arc<Pool>) -> BoxService {
    BoxService::new(tower::service_fn(move |request: Request<Body>| {
        let pool = pool.clone();
        async move {
            let info = request.extensions().get::<CallInfo>();
            let Some(address) = info
                .and_then(|i| i.node.as_ref())
                .map(|n| n.address.clone())
            else {
                return Err(Error::internal(CLIENT_ID, "no node chosen")
                    .to_status()
                    .into());
            };
            let deadline = info.and_then(|i| i.deadline);
            attempt(&pool, &address, deadline, request).await
        }
    }))
}

/// Sends one attempt to the node at `address`.
async fn attempt(
    pool: &Pool,
    address: &str,
    deadline: Option<Deadline>,
    request: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    let mut channel = pool.get(address).map_err(|err| {
        BoxError::from(
            Error::internal(CLIENT_ID, format!("bad node address {address}: {err}")).to_status(),
        )
    })?;
    // Waiting for the channel (a full request buffer) is bounded by the deadline; once
    // sent, tonic's own `grpc-timeout` timer bounds the wait for the answer.
    match channel.ready().now_or_never() {
        Some(ready) => ready.map(drop).map_err(BoxError::from)?,
        None => match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline.0, channel.ready()).await {
                Ok(ready) => ready.map(drop).map_err(BoxError::from)?,
                Err(_) => {
                    return Err(Error::timeout(
                        CLIENT_ID,
                        "deadline passed waiting for a connection",
                    )
                    .to_status()
                    .into());
                }
            },
            None => channel.ready().await.map(drop).map_err(BoxError::from)?,
        },
    }
    channel.call(request).await.map_err(BoxError::from)
}
