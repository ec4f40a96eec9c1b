//! The breaker's response future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Response;
use http_body_util::combinators::Collect;
use micro_core::outcome::{OnOutcome, report_outcome};
use micro_core::{BoxError, Error, Outcome};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tonic::Status;

use super::body::ResponseBody;
use super::circuit::Guard;
use super::classify::{Classifier, Verdict};
use super::fallback::{self, Fallback};

/// Reports a call's verdict to its breaker when the call ends (at the end of its response
/// body, on an error, or as cancelled when dropped).
#[derive(Debug)]
pub struct Reporter {
    guard: Guard,
    classifier: Classifier,
}

impl Reporter {
    pub(crate) fn new(guard: Guard, classifier: Classifier) -> Self {
        Reporter { guard, classifier }
    }
}

impl OnOutcome for Reporter {
    #[inline]
    fn on_outcome(self, outcome: &Outcome) {
        self.guard.finish(self.classifier.verdict(outcome));
    }
}

/// A Hystrix command timeout: the timer and the id its 502 carries.
pub(crate) type CommandTimeout = (Pin<Box<Sleep>>, Arc<str>);

pin_project! {
    /// The future of a call through a breaker.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = Projected]
    enum State<F> {
        /// Let through: the inner call, its outcome reported.
        Called {
            #[pin]
            inner: F,
            reporter: Option<Reporter>,
            timeout: Option<CommandTimeout>,
        },
        /// Refused, with this status.
        Refused {
            status: Option<Status>,
        },
        /// Refused, answered by the fallback once the request's body is read.
        Fallback {
            #[pin]
            collect: Collect<tonic::body::Body>,
            fallback: Fallback,
            error: Error,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(inner: F, reporter: Reporter, timeout: Option<CommandTimeout>) -> Self {
        let state = State::Called {
            inner,
            reporter: Some(reporter),
            timeout,
        };
        ResponseFuture { state }
    }

    pub(crate) fn refused(status: Status) -> Self {
        let state = State::Refused {
            status: Some(status),
        };
        ResponseFuture { state }
    }

    pub(crate) fn fallback(body: tonic::body::Body, fallback: Fallback, error: Error) -> Self {
        let state = State::Fallback {
            collect: http_body_util::BodyExt::collect(body),
            fallback,
            error,
        };
        ResponseFuture { state }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            Projected::Called {
                inner,
                reporter,
                timeout,
            } => match inner.poll(cx) {
                Poll::Ready(Ok(response)) => {
                    let reporter = reporter
                        .take()
                        .unwrap_or_else(|| Reporter::new(Guard::None, Classifier::default()));
                    Poll::Ready(Ok(
                        report_outcome(response, reporter).map(ResponseBody::inner)
                    ))
                }
                Poll::Ready(Err(err)) => {
                    let err: BoxError = err.into();
                    if let Some(reporter) = reporter.take() {
                        reporter.on_outcome(&Outcome::from_error(&*err));
                    }
                    Poll::Ready(Err(err))
                }
                Poll::Pending => {
                    if let Some((sleep, id)) = timeout
                        && sleep.as_mut().poll(cx).is_ready()
                    {
                        if let Some(reporter) = reporter.take() {
                            reporter.guard.finish(Verdict::Timeout);
                        }
                        let error = Error::new(&**id, 502, "hystrix: timeout");
                        return Poll::Ready(Err(super::refusal(&error).into()));
                    }
                    Poll::Pending
                }
            },
            Projected::Refused { status } => Poll::Ready(Err(status
                .take()
                .unwrap_or_else(|| Status::internal("breaker future polled after completion"))
                .into())),
            Projected::Fallback {
                collect,
                fallback,
                error,
            } => {
                let collected = match collect.poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(collected) => collected,
                };
                let answer = collected
                    .map_err(|e| Status::internal(format!("reading the request: {e}")))
                    .and_then(|body| fallback.answer(body.to_bytes(), error));
                Poll::Ready(
                    answer.map_err(|status| fallback::failed(&status, error, &error.id).into()),
                )
            }
        }
    }
}
