//! Tracing and metrics as one wrapper: two wrappers would each box the call's future and
//! body, read its outcome and wrap its body; together they do it once per call. micro puts
//! this one outermost when either is on; [`TraceLayer`](crate::trace::TraceLayer) and
//! [`MetricsLayer`](crate::metrics::MetricsLayer) stay for a bare tonic app that wants one.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use micro_core::{BoxError, outcome::OutcomeBody};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    metrics::{Measure, Metrics, Series},
    trace::{ResponseFuture, Side, SpanEnd, Tracer, Tracing},
};

/// Traces and measures every call of the service it wraps, on one side.
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    tracer: Option<Tracer>,
    series: Option<Arc<Series>>,
}

impl ObserveLayer {
    /// The handler side: `tracing`'s server spans and `metrics`' server series.
    pub fn server(tracing: Option<&Tracing>, metrics: Option<&Metrics>) -> Self {
        ObserveLayer {
            tracer: tracing.map(|t| Tracer::new(t, Side::Server)),
            series: metrics.map(|m| m.server_series().clone()),
        }
    }

    /// The caller side: `tracing`'s client spans and `metrics`' client series.
    pub fn client(tracing: Option<&Tracing>, metrics: Option<&Metrics>) -> Self {
        ObserveLayer {
            tracer: tracing.map(|t| Tracer::new(t, Side::Client)),
            series: metrics.map(|m| m.client_series().clone()),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            tracer: self.tracer.clone(),
            series: self.series.clone(),
        }
    }
}

/// The observed service: see [`ObserveLayer`].
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    tracer: Option<Tracer>,
    series: Option<Arc<Series>>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Observe<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<OutcomeBody<ResBody, (SpanEnd, Measure)>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, (SpanEnd, Measure)>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let measure = match &self.series {
            Some(series) => Measure::start(series, &request),
            None => Measure::none(),
        };
        let (span, context) = match &self.tracer {
            Some(tracer) => tracer.start(&mut request),
            None => (SpanEnd::none(), None),
        };
        ResponseFuture::new(self.inner.call(request), context, (span, measure))
    }
}
