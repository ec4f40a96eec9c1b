//! The rate limiter's response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Request;
use micro_core::BoxError;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tonic::Status;
use tower_service::Service;

pin_project! {
    /// The future of a call through a rate limiter.
    pub struct ResponseFuture<S, F, B> {
        #[pin]
        state: State<S, F, B>,
    }
}

pin_project! {
    #[project = Projected]
    enum State<S, F, B> {
        Called {
            #[pin]
            inner: F,
        },
        Waiting {
            sleep: Pin<Box<Sleep>>,
            service: Option<S>,
            request: Option<Request<B>>,
        },
        Refused {
            status: Option<Status>,
        },
    }
}

impl<S, F, B> ResponseFuture<S, F, B> {
    pub(crate) fn called(inner: F) -> Self {
        ResponseFuture {
            state: State::Called { inner },
        }
    }

    pub(crate) fn waiting(wait: Duration, service: S, request: Request<B>) -> Self {
        ResponseFuture {
            state: State::Waiting {
                sleep: Box::pin(tokio::time::sleep(wait)),
                service: Some(service),
                request: Some(request),
            },
        }
    }

    pub(crate) fn refused(status: Status) -> Self {
        ResponseFuture {
            state: State::Refused {
                status: Some(status),
            },
        }
    }
}

impl<S, F, B, R, E> Future for ResponseFuture<S, F, B>
where
    S: Service<Request<B>, Future = F, Error = E>,
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    type Output = Result<R, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                Projected::Called { inner } => return inner.poll(cx).map_err(Into::into),
                Projected::Refused { status } => {
                    return Poll::Ready(Err(status
                        .take()
                        .unwrap_or_else(|| Status::internal("polled after completion"))
                        .into()));
                }
                Projected::Waiting {
                    sleep,
                    service,
                    request,
                } => {
                    ready!(sleep.as_mut().poll(cx));
                    match (service.take(), request.take()) {
                        (Some(mut service), Some(request)) => service.call(request),
                        _ => {
                            return Poll::Ready(Err(
                                Status::internal("polled after completion").into()
                            ));
                        }
                    }
                }
            };
            self.as_mut()
                .project()
                .state
                .set(State::Called { inner: next });
        }
    }
}
