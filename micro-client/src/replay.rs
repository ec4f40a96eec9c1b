//! Makes a request body sendable more than once, so a failed attempt can be retried.
//!
//! A unary request body is complete the moment it is polled; a streaming one is not. The body
//! is read while its frames are ready: if it ends, it is kept and replayed on every attempt;
//! if it would wait, it is a stream, sent once, and the call is not retried.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, StreamBody};
use micro_core::BoxError;
use tonic::body::Body;

/// A request body, read as far as it was ready.
pub(crate) enum Replay {
    /// The whole body: can be sent any number of times.
    Complete(Bytes),
    /// The start of a stream and the rest of it: can be sent once.
    Streaming(VecDeque<Frame<Bytes>>, Body),
}

impl Replay {
    /// Reads `body` while frames are ready. Never waits, so it needs no waker of its own: a
    /// body that would wait is polled again, with the transport's waker, once it is sent.
    pub(crate) fn read(mut body: Body) -> Result<Replay, BoxError> {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        // A unary body is one data frame: kept outside the queue, it needs no allocation.
        let mut first = None;
        let mut rest = VecDeque::new();
        let ended = loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) if first.is_none() => first = Some(frame),
                Poll::Ready(Some(Ok(frame))) => rest.push_back(frame),
                Poll::Ready(Some(Err(err))) => return Err(BoxError::from(err)),
                Poll::Ready(None) => break true,
                Poll::Pending => break false,
            }
        };
        let mut frames = rest;
        if let Some(first) = first {
            frames.push_front(first);
        }
        if !ended || frames.iter().any(|f| !f.is_data()) {
            return Ok(Replay::Streaming(frames, body));
        }
        let data = match frames.len() {
            1 => frames
                .pop_front()
                .and_then(|f| f.into_data().ok())
                .unwrap_or_default(),
            _ => {
                let mut all = BytesMut::new();
                frames
                    .into_iter()
                    .filter_map(|f| f.into_data().ok())
                    .for_each(|d| all.extend(d));
                all.freeze()
            }
        };
        Ok(Replay::Complete(data))
    }

    /// Whether the body can be sent again.
    pub(crate) fn is_replayable(&self) -> bool {
        matches!(self, Replay::Complete(_))
    }

    /// The body for one attempt. A streaming body is handed out once; later calls get an
    /// empty body (the retry loop never asks, see [`Replay::is_replayable`]).
    pub(crate) fn body(&mut self) -> Body {
        match self {
            Replay::Complete(data) => Body::new(Once((!data.is_empty()).then(|| data.clone()))),
            Replay::Streaming(frames, rest) => {
                let head = futures::stream::iter(std::mem::take(frames).into_iter().map(Ok));
                let tail =
                    TryStreamExt::map_ok(std::mem::take(rest).into_data_stream(), Frame::data);
                Body::new(StreamBody::new(futures::StreamExt::chain(head, tail)))
            }
        }
    }
}

/// A complete body, sent as one data frame. Unlike `http_body_util::Full` it announces no
/// exact size, so hyper adds no `content-length` header (gRPC has no use for it, and it would
/// cost a header on every call on both sides).
struct Once(Option<Bytes>);

impl http_body::Body for Once {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use http_body_util::Full;

    #[tokio::test]
    async fn complete_body_replays() {
        let mut replay = Replay::read(Body::new(Full::new(Bytes::from_static(b"abc")))).unwrap();
        assert!(replay.is_replayable());
        for _ in 0..2 {
            let bytes = replay.body().collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], b"abc");
        }
    }

    #[tokio::test]
    async fn ready_frames_are_joined_and_announce_no_size() {
        let frames = futures::stream::iter(
            [&b"ab"[..], b"c"].map(|d| Ok::<_, tonic::Status>(Frame::data(Bytes::from_static(d)))),
        );
        let mut replay = Replay::read(Body::new(StreamBody::new(frames))).unwrap();
        assert!(replay.is_replayable());
        let body = replay.body();
        // An exact size would make hyper add a `content-length` header to every call.
        assert_eq!(body.size_hint().exact(), None);
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abc");
        let empty = Replay::read(Body::empty()).unwrap().body();
        assert!(empty.is_end_stream());
    }

    #[tokio::test]
    async fn pending_body_is_streamed_whole_once() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
            .await
            .unwrap();
        let stream = tokio_stream_from(rx);
        let mut replay = Replay::read(Body::new(StreamBody::new(stream))).unwrap();
        assert!(!replay.is_replayable());
        let body = replay.body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"second"))))
            .await
            .unwrap();
        drop(tx);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"firstsecond");
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> futures::stream::BoxStream<'static, T> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }
}
