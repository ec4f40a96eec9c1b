//! Makes a request body sendable more than once, so a failed attempt can be retried.
//!
//! A unary request body is complete the moment it is polled; a streaming one is not. The body
//! is read while its frames are ready: if it ends, it is kept and replayed on every attempt;
//! if it would wait, it is a stream, sent once, and the call is not retried.

use std::{collections::VecDeque, future::poll_fn, pin::Pin, task::Poll};

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
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
    /// Reads `body` while frames are ready.
    pub(crate) async fn read(mut body: Body) -> Result<Replay, BoxError> {
        let mut frames = VecDeque::new();
        let ended = poll_fn(|cx| {
            loop {
                match Pin::new(&mut body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => frames.push_back(frame),
                    Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(BoxError::from(err))),
                    Poll::Ready(None) => return Poll::Ready(Ok(true)),
                    Poll::Pending => return Poll::Ready(Ok(false)),
                }
            }
        })
        .await?;
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
            Replay::Complete(data) => Body::new(Full::new(data.clone())),
            Replay::Streaming(frames, rest) => {
                let head = futures::stream::iter(std::mem::take(frames).into_iter().map(Ok));
                let tail =
                    TryStreamExt::map_ok(std::mem::take(rest).into_data_stream(), Frame::data);
                Body::new(StreamBody::new(futures::StreamExt::chain(head, tail)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn complete_body_replays() {
        let mut replay = Replay::read(Body::new(Full::new(Bytes::from_static(b"abc"))))
            .await
            .unwrap();
        assert!(replay.is_replayable());
        for _ in 0..2 {
            let bytes = replay.body().collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], b"abc");
        }
    }

    #[tokio::test]
    async fn pending_body_is_streamed_whole_once() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
            .await
            .unwrap();
        let stream = tokio_stream_from(rx);
        let mut replay = Replay::read(Body::new(StreamBody::new(stream)))
            .await
            .unwrap();
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
