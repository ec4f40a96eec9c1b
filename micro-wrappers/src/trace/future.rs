use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;
use micro_core::{
    BoxError, CallContext, Outcome,
    outcome::{OnOutcome, OutcomeBody, report_outcome},
};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;

use super::service::SpanEnd;

pin_project! {
    #[project = InnerProjection]
    enum Inner<F> {
        /// A handler's future, run with a context of its own carrying its server span (a bare
        /// tonic app: no server entry set a context).
        Scoped { #[pin] future: TaskLocalFuture<CallContext, F> },
        /// A call made (or an untraced call).
        Plain { #[pin] future: F },
    }
}

pin_project! {
    /// The response future of [`Trace`](super::Trace): the inner future, ending the span with
    /// the call: at the response head, at the end of its body (streams), on an error, or as
    /// cancelled when dropped first.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Inner<F>,
        end: Option<SpanEnd>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(end) = this.project().end.take() {
                end.on_outcome(&Outcome::cancelled());
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn scoped(future: TaskLocalFuture<CallContext, F>, end: SpanEnd) -> Self {
        ResponseFuture {
            inner: Inner::Scoped { future },
            end: Some(end),
        }
    }

    pub(crate) fn plain(future: F, end: SpanEnd) -> Self {
        ResponseFuture {
            inner: Inner::Plain { future },
            end: Some(end),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<OutcomeBody<B, SpanEnd>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.project() {
            InnerProjection::Scoped { future } => std::task::ready!(future.poll(cx)),
            InnerProjection::Plain { future } => std::task::ready!(future.poll(cx)),
        };
        let Some(end) = this.end.take() else {
            return Poll::Ready(Err("polled after completion".into()));
        };
        Poll::Ready(match result {
            Ok(response) => Ok(report_outcome(response, end)),
            Err(err) => {
                let err: BoxError = err.into();
                end.on_outcome(&Outcome::from_error(&*err));
                Err(err)
            }
        })
    }
}
