//! The breaker's response body: the inner one, observed to its end, or a fallback's answer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use micro_core::BoxError;
use micro_core::outcome::OutcomeBody;
use pin_project_lite::pin_project;

use super::future::Reporter;

pin_project! {
    /// The body of a response that passed a breaker: the inner body, whose end (trailers,
    /// error or drop) reports the call's verdict, or a fallback's encoded answer.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = Projected]
    enum Kind<B> {
        /// The dependency's answer.
        Inner {
            #[pin]
            body: OutcomeBody<B, Reporter>,
        },
        /// A fallback's answer: one frame, then the trailers.
        Local {
            data: Option<Bytes>,
            trailers: Option<HeaderMap>,
        },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn local(data: Bytes, trailers: HeaderMap) -> Self {
        ResponseBody {
            kind: Kind::Local {
                data: Some(data),
                trailers: Some(trailers),
            },
        }
    }

    pub(crate) fn inner(body: OutcomeBody<B, Reporter>) -> Self {
        ResponseBody {
            kind: Kind::Inner { body },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            Projected::Inner { body } => body.poll_frame(cx),
            Projected::Local { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Local { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Local { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
