use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use micro_core::{
    BoxError, CallInfo, Outcome,
    outcome::{OnOutcome, OutcomeBody, OutcomeFuture},
};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{Handles, Series};

/// The measured service: see [`MetricsLayer`](super::MetricsLayer).
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    series: Arc<Series>,
}

// === impl MetricsService ===

impl<S> MetricsService<S> {
    /// Records `inner`'s calls into `series`.
    pub fn new(inner: S, series: Arc<Series>) -> Self {
        MetricsService { inner, series }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<OutcomeBody<ResBody, Measure>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let measure = Measure::start(&self.series, &request);
        ResponseFuture {
            inner: OutcomeFuture::new(self.inner.call(request), measure),
        }
    }
}

/// gRPC's own services (health checking, reflection): not calls of the application, so not
/// counted. Their names come from the services themselves.
pub(crate) fn is_builtin(grpc_service: &str) -> bool {
    BUILTIN.contains(&grpc_service)
}

const BUILTIN: [&str; 3] = [
    tonic_health::pb::health_server::SERVICE_NAME,
    tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
    tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
];

/// The package every built-in service is in, to tell most calls apart by their first bytes.
const BUILTIN_PATHS: &str = "/grpc.";

/// Where a call counts, as far as known when it starts.
enum Started {
    /// Its handles, found.
    Found(Arc<Handles>),
    /// A call whose names were not counted yet: resolved when it ends, with its code. Boxed:
    /// rare, and the measure travels with the response, so it is kept small.
    New(Box<Pending>),
}

struct Pending {
    series: Arc<Series>,
    /// What the call path will find the handles by.
    names: (Arc<str>, Arc<str>),
    /// Its service and endpoint labels, before bounding.
    labels: (Arc<str>, Arc<str>),
}

/// Counts a call when it ends (nothing for gRPC's health checks and reflection).
pub struct Measure(Option<(Started, quanta::Instant)>);

impl Measure {
    /// Measures nothing.
    pub(crate) fn none() -> Self {
        Measure(None)
    }

    /// The measure of `request`, a call into `series`.
    #[inline]
    pub(crate) fn start<B>(series: &Arc<Series>, request: &Request<B>) -> Self {
        let path = request.uri().path();
        // The common call is told apart from gRPC's own services by its first bytes.
        if path.starts_with(BUILTIN_PATHS)
            && micro_core::split_grpc_path(path).is_some_and(|(service, _)| is_builtin(service))
        {
            return Measure(None);
        }
        let info = CallInfo::of(request);
        // A bare tonic app has no CallInfo: its path names the call.
        let (service, endpoint) = match info {
            Some(info) => (&*info.service, &*info.endpoint),
            None => ("", path),
        };
        let started = match series.find(service, endpoint) {
            Some(handles) => Started::Found(handles),
            None => match Pending::of(series, info, path) {
                Some(pending) => Started::New(Box::new(pending)),
                None => return Measure(None),
            },
        };
        Measure(Some((started, quanta::Instant::now())))
    }
}

impl Pending {
    /// A call not counted before; `None` if it has neither a `CallInfo` nor a gRPC path.
    #[cold]
    fn of(series: &Arc<Series>, info: Option<&CallInfo>, path: &str) -> Option<Self> {
        let (names, labels) = match info {
            Some(info) => {
                let names = (info.service.clone(), info.endpoint.clone());
                (names.clone(), names)
            }
            // The gRPC service and the go-micro endpoint of the path.
            None => {
                let (grpc_service, _) = micro_core::split_grpc_path(path)?;
                (
                    (Arc::from(""), Arc::from(path)),
                    (
                        Arc::from(grpc_service),
                        Arc::from(micro_core::endpoint_of(path)),
                    ),
                )
            }
        };
        Some(Pending {
            series: series.clone(),
            names,
            labels,
        })
    }
}

impl std::fmt::Debug for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Measure")
    }
}

impl OnOutcome for Measure {
    #[inline]
    fn on_outcome(self, outcome: &Outcome) {
        let Some((started, at)) = self.0 else { return };
        let nanos = u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX);
        match started {
            Started::Found(handles) => handles.record(outcome, nanos),
            Started::New(pending) => {
                let Pending {
                    series,
                    names,
                    labels,
                } = *pending;
                series
                    .resolve_named((&names.0, &names.1), (&labels.0, &labels.1), outcome.code)
                    .record(outcome, nanos)
            }
        }
    }
}

pin_project! {
    /// The response future of [`MetricsService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: OutcomeFuture<F, Measure>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<OutcomeBody<B, Measure>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_service_is_under_the_prefix() {
        for name in BUILTIN {
            assert!(format!("/{name}/").starts_with(BUILTIN_PATHS), "{name}");
            assert!(is_builtin(name));
        }
        assert!(!is_builtin("greeter.Greeter"));
    }
}
