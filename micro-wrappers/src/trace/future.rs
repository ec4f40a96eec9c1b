use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;
use micro_core::{
    BoxError,
    outcome::{OutcomeBody, OutcomeFuture},
};
use opentelemetry::context::WithContext;
use pin_project_lite::pin_project;

use super::service::SpanEnd;

pin_project! {
    /// The response future of [`Trace`](super::Trace): the inner future, polled with the
    /// call's span as the current OpenTelemetry context, ending the span with the call.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: OutcomeFuture<WithContext<F>, SpanEnd>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: OutcomeFuture<WithContext<F>, SpanEnd>) -> Self {
        ResponseFuture { inner }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<OutcomeBody<B, SpanEnd>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
