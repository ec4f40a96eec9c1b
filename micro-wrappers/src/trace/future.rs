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

pin_project! {
    #[project = InnerProjection]
    enum Inner<F> {
        /// A handler's future, run with a context of its own carrying its server span (a bare
        /// tonic app: no server entry set a context). Boxed, so that the common future stays
        /// small.
        Scoped { future: Pin<Box<TaskLocalFuture<CallContext, F>>> },
        /// A call made, or a handler's future in the server entry's context.
        Plain { #[pin] future: F },
    }
}

pin_project! {
    /// The response future of [`Trace`](super::Trace) (and of the observe wrapper): the
    /// inner future, ending the call's span (and measure) with the call: at the response
    /// head, at the end of its body (streams), on an error, or as cancelled when dropped
    /// first.
    pub struct ResponseFuture<F, E: OnOutcome> {
        #[pin]
        inner: Inner<F>,
        end: Option<E>,
    }

    impl<F, E: OnOutcome> PinnedDrop for ResponseFuture<F, E> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(end) = this.project().end.take() {
                end.on_outcome(&Outcome::cancelled());
            }
        }
    }
}

impl<F: Future, E: OnOutcome> ResponseFuture<F, E> {
    /// `future`, run in `context` if it needs one of its own, ended by `end`.
    pub(crate) fn new(future: F, context: Option<CallContext>, end: E) -> Self {
        let inner = match context {
            Some(context) => Inner::Scoped {
                future: Box::pin(context.scope(future)),
            },
            None => Inner::Plain { future },
        };
        ResponseFuture {
            inner,
            end: Some(end),
        }
    }
}

impl<F, B, Err, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<Response<B>, Err>>,
    Err: Into<BoxError>,
    E: OnOutcome,
{
    type Output = Result<Response<OutcomeBody<B, E>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.project() {
            InnerProjection::Scoped { future } => std::task::ready!(future.as_mut().poll(cx)),
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
