//! The retry loop under the client wrappers: for each attempt, pick a READY node (its own
//! stack of call wrappers says it can take the call), send the attempt through that stack,
//! read how it ended from the shared classifier ([`Outcome`]), and retry on another node while
//! the policy, the retry budget, the retries and the time allow.

use std::{
    future::poll_fn,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use micro_core::{BoxError, BoxService, CallInfo, Deadline, EndpointCache, Error, Outcome};
use micro_registry::{Cache, Node};
use parking_lot::RwLock;
use tokio::time::Instant;
use tonic::{Code, body::Body};
use tower::retry::budget::{Budget, TpsBudget};
use tower_service::Service as _;

use crate::{
    CLIENT_ID, CallOptions, Options,
    accrual::{Admit, Pass, Via, transport_failure},
    nodes::{NodeStack, Nodes},
    options::retry_idempotent,
    replay::Replay,
    selector::{Candidates, Selector},
};

/// State shared by every call of one client.
pub(crate) struct Shared {
    pub(crate) options: Options,
    pub(crate) cache: Cache,
    pub(crate) selector: Selector,
    pub(crate) nodes: Nodes,
    /// Endpoint names of the paths called (`Greeter.Hello`).
    pub(crate) endpoints: EndpointCache,
    /// Told of each retry decision, if set.
    pub(crate) on_retry: Option<crate::RetryObserver>,
    /// Retry budgets, one per called service.
    budgets:
        RwLock<std::collections::HashMap<Arc<str>, Arc<TpsBudget>, foldhash::fast::RandomState>>,
}

impl Shared {
    pub(crate) fn new(options: Options, cache: Cache, selector: Selector, nodes: Nodes) -> Self {
        Shared {
            options,
            cache,
            selector,
            nodes,
            endpoints: EndpointCache::default(),
            on_retry: None,
            budgets: RwLock::default(),
        }
    }

    /// The retry budget of `service`, if budgets are on.
    fn budget(&self, service: &Arc<str>) -> Option<Arc<TpsBudget>> {
        let settings = self.options.retry_budget?;
        if let Some(budget) = self.budgets.read().get(service) {
            return Some(budget.clone());
        }
        let budget = self
            .budgets
            .write()
            .entry(service.clone())
            .or_insert_with(|| {
                Arc::new(TpsBudget::new(
                    settings.ttl,
                    settings.min_per_sec,
                    settings.percent,
                ))
            })
            .clone();
        Some(budget)
    }
}

/// The service below the client wrappers: the retry loop, for the [`CallInfo`] the request
/// carries.
pub(crate) fn dispatch_service(shared: Arc<Shared>) -> BoxService {
    BoxService::new(tower::service_fn(move |request: Request<Body>| {
        dispatch(shared.clone(), request)
    }))
}

/// The retry loop: each attempt picks a ready node and goes through that node's stack, until
/// one answers or the policy, the budget, the retries or the time run out.
///
/// Its future is boxed for every call, so it is kept under glibc's small-allocation cache
/// (1 KiB): the request head is used where it was captured (an `async fn` would hold a second
/// copy), and the rare waits (first lookup, busy nodes, backoff) are boxed where they happen.
fn dispatch(
    shared: Arc<Shared>,
    request: Request<Body>,
) -> impl Future<Output = Result<Response<Body>, BoxError>> + Send + 'static {
    let (mut parts, body) = request.into_parts();
    async move {
        // Kept: the call's names and deadline, and the options the loop reads (the whole
        // `CallInfo` and `CallOptions` would grow this future, boxed for every call).
        let Some((target, deadline)) = parts.extensions.get::<CallInfo>().map(|info| {
            let target = Target {
                service: info.service.clone(),
                endpoint: info.endpoint.clone(),
            };
            (target, info.deadline)
        }) else {
            return Err(Error::internal(CLIENT_ID, "request has no CallInfo")
                .to_status()
                .into());
        };
        let deadline = deadline.unwrap_or_else(|| Deadline::after(shared.options.request_timeout));
        let CallOptions {
            retries,
            filters,
            idempotent,
            attempt_timeout,
            ..
        } = parts.extensions.remove::<CallOptions>().unwrap_or_default();
        let idempotent =
            idempotent.unwrap_or_else(|| shared.options.is_idempotent(&target.endpoint));
        // Only an idempotent call may be abandoned and sent again while it may be running.
        // In whole milliseconds (rounded up), so that it packs in every call's future.
        let attempt_timeout = attempt_timeout
            .or(shared.options.attempt_timeout)
            .filter(|_| idempotent)
            .and_then(|t| {
                let ms = t.as_nanos().div_ceil(1_000_000);
                std::num::NonZeroU32::new(u32::try_from(ms).unwrap_or(u32::MAX))
            });
        let retries = retries.unwrap_or(shared.options.retries);
        let budget = shared.budget(&target.service);
        if let Some(budget) = &budget {
            budget.deposit();
        }

        // No timer spans the whole call: each attempt's network wait is bounded by tonic's
        // channel, which enforces the `grpc-timeout` sent with it; the phases that can wait
        // here (registry lookup on a cache miss, a busy node, backoff) are bounded below.
        let mut body = Replay::read(body)?;
        let mut tried: Vec<Arc<str>> = Vec::new();
        let mut attempt_no = 0;
        loop {
            if attempt_no > 0 {
                let pause = Instant::now() + shared.options.backoff_for(attempt_no);
                if pause >= deadline.0 {
                    return Err(timeout_error(&target));
                }
                // Boxed: only retries pause, and a timer would grow every call's future.
                Box::pin(tokio::time::sleep_until(pause)).await;
            }
            // In a block, so that what readies the attempt is not kept in the future while
            // the attempt is awaited.
            let (node, last, in_flight, response) = {
                let services = match shared.cache.peek(&target.service) {
                    Some(services) => services,
                    // Boxed: few calls look up, and the lookup's future would double this one's size.
                    None => Box::pin(look_up(&shared, &target, deadline)).await?,
                };
                let (mut node, mut copy) =
                    match pick_now(&shared, &target, &services, &filters, &tried)? {
                        Picked::Ready(readied) => readied,
                        // Boxed: only busy nodes make a call wait here.
                        Picked::Busy(busy) => {
                            Box::pin(wait_for_ready(&shared, &target, busy, deadline)).await?
                        }
                    };
                // The time left, read once the node is chosen (a first lookup may have waited).
                let left = deadline.remaining();
                if left.is_zero() {
                    return Err(timeout_error(&target));
                }
                // Set on the request head before it is copied, so the copy is sized for it.
                set_timeout_header(&mut parts.headers, left);
                // Every attempt sends the head it has, and all but the last keep a copy for
                // the next: the head sent, with the extensions the caller set, is then
                // dropped while still in cache by the transport, and the copy kept is only
                // as large as a retry needs.
                let last = attempt_no >= retries || !body.is_replayable();
                let in_flight = shared
                    .selector
                    .reads_loads()
                    .then(|| node.load.start(Instant::now()));
                let kept = if last {
                    Request::new(()).into_parts().0
                } else {
                    copy_parts(&parts, shared.nodes.are_wrapped())
                };
                let mut attempt_parts = std::mem::replace(&mut parts, kept);
                // The call wrappers see the CallInfo, now naming the node.
                if let Some(info) = attempt_parts.extensions.get_mut::<CallInfo>() {
                    info.node = Some(node.info.clone());
                }
                shared.nodes.sending(&mut node);
                let response = copy.call(Request::from_parts(attempt_parts, body.body()));
                node.stack.give(copy);
                (node, last, in_flight, response)
            };
            // The per-attempt timeout: not on the last attempt, and only if it ends sooner
            // than the call.
            let attempt = match attempt_timeout
                .filter(|_| !last)
                .map(|ms| Instant::now() + Duration::from_millis(u64::from(ms.get())))
                .filter(|until| *until < deadline.0)
            {
                // Boxed: only calls with an attempt timeout run a timer per attempt.
                Some(until) => {
                    Attempt::Timed(Box::pin(within(until, response, &budget, &shared, &target)))
                }
                // A probe or a call sent to an ejected node waits on a new connection (an
                // ejection renews it), and tonic's channel starts its deadline timer only once
                // connected: without this a probe of a node cut off from the network waited
                // for the dial timeout (5 s) past a 2 s deadline.
                None if !matches!(node.via(), Via::Normal(_)) => {
                    Attempt::Bounded(Box::pin(tokio::time::timeout_at(deadline.0, response)))
                }
                None => Attempt::Plain(response),
            };
            // One wait, either way: two would each keep their result in every call's future.
            let ended = attempt.await;
            let result = match ended {
                Some(result) => result,
                None => {
                    // Abandoned: an attempt out of time, on to another node.
                    if let Some(in_flight) = in_flight {
                        in_flight.finish(Instant::now(), true);
                    }
                    shared
                        .nodes
                        .failed(&node, crate::accrual::Failure::Timeout, || {
                            others_in_rotation(&shared, &target.service, &node)
                        });
                    tracing::debug!(service = %target.service, node = %node.info.id, attempt = attempt_no, "attempt timeout: trying another node");
                    tried.push(node.info.id.clone());
                    attempt_no += 1;
                    continue;
                }
            };
            // A TLS failure is the client's or the deployment's configuration, which every
            // node would repeat: not the node's health, and not retried.
            let tls_failure = result
                .as_ref()
                .err()
                .and_then(|err| crate::tls::failure(&**err));
            // How the attempt ended, as far as its head tells (a streaming answer ends later);
            // an answer of any status, or a transport failure, goes to the node's accrual.
            let outcome = match &result {
                Ok(response) => {
                    shared.nodes.answered(&node);
                    Outcome::from_headers(response.headers())
                }
                Err(err) => {
                    let outcome = Outcome::from_error(&**err);
                    if tls_failure.is_none()
                        && let Some(failure) = transport_failure(&**err, &outcome)
                    {
                        shared.nodes.failed(&node, failure, || {
                            others_in_rotation(&shared, &target.service, &node)
                        });
                    }
                    Some(outcome)
                }
            };
            if let Some(in_flight) = in_flight {
                let failed = outcome.as_ref().is_some_and(|o| {
                    matches!(o.code, Code::DeadlineExceeded | Code::Unavailable)
                        || o.origin != micro_core::Origin::Answered
                });
                in_flight.finish(Instant::now(), failed);
            }
            if let Some(reason) = tls_failure {
                let detail = format!("service {}: {reason}", target.service);
                return Err(Error::unavailable(CLIENT_ID, detail).to_status().into());
            }
            let Some(outcome) = outcome.filter(|o| !o.is_success()) else {
                return result;
            };
            // tonic's channel timer (this attempt's `grpc-timeout`) fired: our deadline passed.
            if let Err(err) = &result
                && source_chain(&**err).any(|e| e.is::<tonic::TimeoutExpired>())
            {
                return Err(timeout_error(&target));
            }
            // No retry whose pause would end past the deadline: the caller then gets this
            // attempt's failure (e.g. the node's refusal), not a timeout that hides it.
            let retry = !last
                && ((shared.options.retry)(&outcome) || (idempotent && retry_idempotent(&outcome)))
                && Instant::now() + shared.options.backoff_for(attempt_no + 1) < deadline.0;
            let within_budget = || budget.as_ref().is_none_or(|b| b.withdraw());
            if !retry || !within_budget() {
                if retry {
                    tracing::debug!(service = %target.service, "retry budget spent: not retrying");
                    if let Some(on_retry) = &shared.on_retry {
                        on_retry(&target.service, crate::RetryEvent::BudgetRefused);
                    }
                }
                return result.map_err(|err| answer(&target, &outcome, err));
            }
            if let Some(on_retry) = &shared.on_retry {
                on_retry(&target.service, crate::RetryEvent::Retried);
            }
            tracing::debug!(service = %target.service, node = %node.info.id, attempt = attempt_no, code = ?outcome.code, "retrying");
            tried.push(node.info.id.clone());
            attempt_no += 1;
        }
    }
}

/// The service and endpoint a call goes to, for lookups, logs and errors.
struct Target {
    service: Arc<str>,
    /// go-micro's endpoint name, `Greeter.Hello`.
    endpoint: Arc<str>,
}

/// The error a caller gets for a failed attempt: a status that carries go-micro's JSON as
/// it is; anything else as go-micro's client error for its code.
fn answer(target: &Target, outcome: &Outcome, err: BoxError) -> BoxError {
    if outcome.json {
        return err;
    }
    let detail = outcome
        .error
        .as_ref()
        .map_or_else(|| err.to_string(), |e| e.detail.clone());
    let err = Error::new(
        CLIENT_ID,
        outcome.http_code(),
        format!("service {}: {detail}", target.service),
    );
    tonic::Status::new(outcome.code, err.to_string()).into()
}

/// The attempt's result, or `None` if it did not end by `until` and the retry budget allows
/// another attempt: then it is abandoned (dropping it cancels the stream). Without budget the
/// attempt is kept, as it may still answer within the call's deadline.
async fn within(
    until: Instant,
    response: AttemptFuture,
    budget: &Option<Arc<TpsBudget>>,
    shared: &Shared,
    target: &Target,
) -> Option<Result<Response<Body>, BoxError>> {
    let timer = std::pin::pin!(tokio::time::sleep_until(until));
    let response = match futures::future::select(response, timer).await {
        futures::future::Either::Left((result, _)) => return Some(result),
        futures::future::Either::Right(((), response)) => response,
    };
    let retry = budget.as_ref().is_none_or(|b| b.withdraw());
    if let Some(on_retry) = &shared.on_retry {
        let event = if retry {
            crate::RetryEvent::Retried
        } else {
            crate::RetryEvent::BudgetRefused
        };
        on_retry(&target.service, event);
    }
    if retry {
        return None;
    }
    tracing::debug!(service = %target.service, "retry budget spent: attempt kept past its timeout");
    Some(response.await)
}

/// An attempt, with or without its timer: one future type, so that the retry loop waits at
/// one point and its future keeps one result.
enum Attempt<T> {
    Plain(AttemptFuture),
    Timed(std::pin::Pin<Box<T>>),
    /// Ends at the call's deadline as tonic's timer would ([`tonic::TimeoutExpired`]).
    Bounded(std::pin::Pin<Box<tokio::time::Timeout<AttemptFuture>>>),
}

impl<T> Future for Attempt<T>
where
    T: Future<Output = Option<Result<Response<Body>, BoxError>>>,
{
    type Output = Option<Result<Response<Body>, BoxError>>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Attempt::Plain(response) => response.as_mut().poll(cx).map(Some),
            Attempt::Timed(within) => within.as_mut().poll(cx),
            Attempt::Bounded(bounded) => bounded.as_mut().poll(cx).map(|ended| {
                Some(ended.unwrap_or_else(|_| Err(Box::new(tonic::TimeoutExpired(())))))
            }),
        }
    }
}

/// An attempt on a node's stack.
type AttemptFuture = <BoxService as tower_service::Service<Request<Body>>>::Future;

/// Whether a node of `service` other than `node` is in rotation (not ejected; a node not
/// called yet counts): a node is never ejected when none is.
fn others_in_rotation(shared: &Shared, service: &str, node: &NodeStack) -> bool {
    shared.cache.peek(service).is_some_and(|services| {
        services
            .iter()
            .flat_map(|s| s.nodes.iter())
            .filter(|n| *n.id != *node.info.id)
            .any(|n| {
                shared
                    .nodes
                    .peek(n)
                    .is_none_or(|stack| !stack.accrual.is_ejected())
            })
    })
}

/// What [`pick_now`] found.
enum Picked {
    /// A ready node and its readied copy.
    Ready(Readied),
    /// No node ready now, these only busy.
    Busy(Vec<Readied>),
}

/// A ready node of the service and a copy of its stack readied for the attempt, or the busy
/// nodes to wait for. Nodes that refuse now (e.g. an open breaker) are skipped; when every
/// candidate refuses, the first refusal is the answer.
fn pick_now(
    shared: &Shared,
    target: &Target,
    services: &[micro_registry::Service],
    filters: &[crate::Filter],
    tried: &[Arc<str>],
) -> Result<Picked, BoxError> {
    let mut candidates = Readiness::new(&shared.nodes, &target.service);
    let node =
        shared
            .selector
            .select_ready(&target.service, services, filters, tried, &mut candidates);
    if let Some(chosen) = node.and_then(|node| candidates.take_readied(node)) {
        return Ok(Picked::Ready(chosen));
    }
    if !candidates.busy.is_empty() {
        return Ok(Picked::Busy(std::mem::take(&mut candidates.busy)));
    }
    // No other node ready: an ejected one takes the call (ejection never empties a service),
    // and fails or answers honestly.
    if let Some(stack) = candidates.ejected.take() {
        let mut copy = stack.stack.take();
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        match copy.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => return Ok(Picked::Ready((Pass::fallback(stack), copy))),
            Poll::Pending => return Ok(Picked::Busy(vec![(Pass::fallback(stack), copy)])),
            Poll::Ready(Err(err)) => {
                candidates.refusal.get_or_insert(err);
            }
        }
    }
    if let Some(refusal) = candidates.refusal.take() {
        return Err(refusal);
    }
    Err(Error::internal(
        CLIENT_ID,
        format!("service {}: none available", target.service),
    )
    .to_status()
    .into())
}

/// Waits for one of the busy nodes up to the ready timeout, never past the deadline.
async fn wait_for_ready(
    shared: &Shared,
    target: &Target,
    busy: Vec<Readied>,
    deadline: Deadline,
) -> Result<Readied, BoxError> {
    let wait_until = (Instant::now() + shared.options.ready_timeout).min(deadline.0);
    if let Ok(found) = tokio::time::timeout_at(wait_until, first_ready(busy)).await {
        return found;
    }
    let err = if wait_until >= deadline.0 {
        timeout_error(target)
    } else {
        Error::unavailable(
            CLIENT_ID,
            format!(
                "service {}: every node busy for {:?}",
                target.service, shared.options.ready_timeout
            ),
        )
        .to_status()
        .into()
    };
    Err(err)
}

/// Waits until one of the busy stacks is ready; a stack that refuses meanwhile drops out.
async fn first_ready(busy: Vec<Readied>) -> Result<Readied, BoxError> {
    let mut busy: Vec<_> = busy.into_iter().map(Some).collect();
    let mut refusal = None;
    poll_fn(|cx| {
        for slot in busy.iter_mut() {
            let Some((_, copy)) = slot else { continue };
            match copy.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    if let Some(ready) = slot.take() {
                        return Poll::Ready(Ok(ready));
                    }
                }
                Poll::Ready(Err(err)) => {
                    refusal.get_or_insert(err);
                    *slot = None;
                }
                Poll::Pending => {}
            }
        }
        if busy.iter().all(Option::is_none) {
            let err = refusal.take().unwrap_or_else(|| {
                Error::unavailable(CLIENT_ID, "no node ready")
                    .to_status()
                    .into()
            });
            return Poll::Ready(Err(err));
        }
        Poll::Pending
    })
    .await
}

/// A node (and how ejection let it through) and a copy of its stack readied for the attempt.
type Readied = (Pass, BoxService);

/// What the selector asks of each node it would pick: polls the node's stack once, keeping
/// the readied copy (the selector stops at the first ready node), the first refusal and the
/// busy copies. The readied copy is found again by the address of the `Node` the selector
/// asked about (it passes the same references from one pick's services), not by comparing ids.
struct Readiness<'a> {
    nodes: &'a Nodes,
    service: &'a Arc<str>,
    /// The first ejected node seen: the call's node if no other is ready.
    ejected: Option<Arc<NodeStack>>,
    readied: Option<(usize, Readied)>,
    refusal: Option<BoxError>,
    busy: Vec<Readied>,
    /// The time p2c's costs are read at: once per pick, and only when p2c asks.
    now: std::cell::OnceCell<Instant>,
}

impl<'a> Readiness<'a> {
    fn new(nodes: &'a Nodes, service: &'a Arc<str>) -> Self {
        Readiness {
            nodes,
            service,
            ejected: None,
            readied: None,
            refusal: None,
            busy: Vec::new(),
            now: std::cell::OnceCell::new(),
        }
    }

    /// The copy readied for `node`; the busy ones are dropped with `self`, releasing whatever
    /// they reserved.
    fn take_readied(&mut self, node: &Node) -> Option<Readied> {
        self.readied
            .take_if(|(n, _)| *n == std::ptr::from_ref(node).addr())
            .map(|(_, readied)| readied)
    }
}

impl Candidates for Readiness<'_> {
    fn ready(&mut self, node: &Node) -> bool {
        let stack = match self.nodes.get(node, self.service) {
            Ok(stack) => stack,
            Err(err) => {
                self.refusal.get_or_insert(err);
                return false;
            }
        };
        // An ejected node is not ready, whatever its wrappers say; once its time is up, one
        // call probes it.
        let pass = if stack.accrual.is_clear() {
            Pass::normal(stack)
        } else {
            match stack.accrual.admit(Instant::now()) {
                Admit::Yes => Pass::normal(stack),
                Admit::Probe(id) => Pass::probe(stack, id),
                Admit::No => {
                    self.ejected.get_or_insert(stack);
                    return false;
                }
            }
        };
        let mut copy = pass.stack.take();
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        match copy.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {
                self.readied = Some((std::ptr::from_ref(node).addr(), (pass, copy)));
                true
            }
            Poll::Ready(Err(err)) => {
                self.refusal.get_or_insert(err);
                false
            }
            Poll::Pending => {
                self.busy.push((pass, copy));
                false
            }
        }
    }

    /// p2c asks the cost of both nodes it compares before readying the cheaper: a node
    /// without a stack yet has no calls, so it costs nothing. An ejected node whose probe is due costs nothing, so that p2c asks it (a node it
    /// never asks is never probed, and its failure penalty would keep it last).
    fn cost(&self, node: &Node) -> f64 {
        self.nodes.peek(node).map_or(0.0, |stack| {
            let now = *self.now.get_or_init(Instant::now);
            if stack.accrual.probe_due(now) {
                return 0.0;
            }
            stack.load.cost(now)
        })
    }
}

/// go-micro's client timeout error (408).
fn timeout_error(target: &Target) -> BoxError {
    Error::timeout(
        CLIENT_ID,
        format!("call {}.{} timed out", target.service, target.endpoint),
    )
    .to_status()
    .into()
}

/// The nodes of a service not in memory yet: a first lookup, bounded by the deadline.
async fn look_up(
    shared: &Shared,
    target: &Target,
    deadline: Deadline,
) -> Result<Arc<[micro_registry::Service]>, BoxError> {
    let lookup = shared.cache.get_service(&target.service);
    match tokio::time::timeout_at(deadline.0, lookup).await {
        Err(_) => Err(timeout_error(target)),
        Ok(found) => found.map_err(|err| {
            let detail = match err {
                micro_registry::Error::NotFound => {
                    format!("service {}: not found", target.service)
                }
                other => format!("service {}: {other}", target.service),
            };
            BoxError::from(Error::internal(CLIENT_ID, detail).to_status())
        }),
    }
}

/// A copy of the request head for the next attempt. The extensions are copied only for call
/// wrappers to read: below them the node's channel reads none, and copying them costs an
/// allocation per extension.
fn copy_parts(parts: &http::request::Parts, with_extensions: bool) -> http::request::Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    if with_extensions {
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
    headers.insert(micro_core::timeout::GRPC_TIMEOUT_NAME.clone(), left);
}

fn source_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn size_of_output<F, R>(_: F) -> usize
    where
        F: Fn(Arc<Shared>, Request<Body>) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// Each call boxes the retry loop's future, and with many calls in flight every byte of
    /// it is a cache miss waiting to happen; past glibc's per-thread cache of small
    /// allocations (1032 bytes) the box also takes malloc's slow path. Measured: 1264 bytes
    /// before the rare waits were boxed and the head kept once, 704 before the body was read
    /// without awaiting and the loop kept only the call's names and options, 504 before the
    /// node's pass (how ejection let the attempt through) and the attempt timeout (520).
    #[test]
    fn the_retry_loop_future_is_a_small_allocation() {
        let size = size_of_output(dispatch);
        eprintln!("retry loop future: {size} bytes");
        assert!(size <= 528, "{size} bytes");
    }
}
