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

use super::CallSeries;
use crate::trace::is_infrastructure;

/// The measured service: see [`MetricsLayer`](super::MetricsLayer).
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    series: Arc<CallSeries>,
}

// === impl MetricsService ===

impl<S> MetricsService<S> {
    /// Records `inner`'s calls into `series`.
    pub fn new(inner: S, series: Arc<CallSeries>) -> Self {
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
        let measure = if is_infrastructure(request.uri().path()) {
            Measure(None)
        } else {
            let (service, endpoint) = match CallInfo::of(&request) {
                Some(info) => (info.service.clone(), info.endpoint.clone()),
                // A bare tonic app: the gRPC service and the go-micro endpoint of the path.
                None => {
                    let path = request.uri().path();
                    let service = path
                        .trim_start_matches('/')
                        .split_once('/')
                        .map_or("", |(service, _)| service);
                    (service.into(), micro_core::endpoint_of(path).into())
                }
            };
            Measure(Some(Started {
                series: self.series.clone(),
                service,
                endpoint,
                at: quanta::Instant::now(),
            }))
        };
        ResponseFuture {
            inner: OutcomeFuture::new(self.inner.call(request), measure),
        }
    }
}

struct Started {
    series: Arc<CallSeries>,
    service: Arc<str>,
    endpoint: Arc<str>,
    at: quanta::Instant,
}

/// Records a call when it ends (nothing for health checks and reflection).
pub struct Measure(Option<Started>);

impl std::fmt::Debug for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Measure")
    }
}

impl OnOutcome for Measure {
    fn on_outcome(self, outcome: &Outcome) {
        if let Some(started) = self.0 {
            started.series.record(
                &started.service,
                &started.endpoint,
                outcome,
                started.at.elapsed(),
            );
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
