//! How a call ended: the one answer that retries, breakers, limiters, metrics and tracing read.
//!
//! A call can end in five places: a trailers-only response (an error answered without a
//! body), the `grpc-status` in the trailers at the end of the body, an error from the body, a
//! body dropped before its end (the caller cancelled), or an error from a service (a status, a
//! timer, a load shedder, a connection failure, anything else). [`Outcome`] reads each of them
//! the same way, and [`OutcomeBody`] / [`OutcomeFuture`] report it exactly once (to an
//! [`OnOutcome`]).
//!
//! tower-http's `GrpcErrorsAsFailures` was the model, but it answers only "failure or not" from
//! a code bitmask: it keeps neither go-micro's error JSON, nor whether the request reached a
//! server (what a safe retry needs), nor a dropped body (a cancelled call, which a breaker must
//! not count), so this module does its own reading with the same shape (head, then end of
//! stream).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::{Code, Status};

use crate::{BoxError, Error};

/// Where an outcome came from, as far as the caller can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A server answered with a status: its handler, or a wrapper in front of it. The call may
    /// have run.
    Answered,
    /// The request never reached a server: the connection was refused or failed, the stream
    /// was refused, or a GOAWAY said it was not processed. It did not run: safe to send again.
    NotSent,
    /// The connection or the stream broke after the request was sent: the call may have run.
    Broken,
    /// A layer on this side ended the call itself (a wrapper's refusal, a timer).
    Local,
    /// The caller dropped the call before it ended.
    Cancelled,
}

/// How a call ended.
///
/// ```
/// use micro_core::{Error, Outcome, Origin};
/// let refused = Error::too_many_requests("go.micro.server", "too many request").to_status();
/// let outcome = Outcome::from_status(&refused, Origin::Answered);
/// assert_eq!(outcome.code, tonic::Code::ResourceExhausted);
/// assert_eq!(outcome.http_code(), 429);
/// assert!(outcome.json);
/// assert!(!outcome.is_success());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The gRPC code (`Ok` for a success).
    pub code: Code,
    /// Where it came from.
    pub origin: Origin,
    /// go-micro's error of a failed call: the JSON the status carried, or one built from its
    /// code and message. `None` on success.
    pub error: Option<Error>,
    /// Whether `error` is go-micro JSON a server or a wrapper put in the status (rather than
    /// built here from a bare gRPC status).
    pub json: bool,
}

impl Outcome {
    /// A call that succeeded.
    pub const SUCCESS: Outcome = Outcome {
        code: Code::Ok,
        origin: Origin::Answered,
        error: None,
        json: false,
    };

    /// A call the caller dropped before its end.
    pub fn cancelled() -> Self {
        Outcome {
            code: Code::Cancelled,
            origin: Origin::Cancelled,
            error: None,
            json: false,
        }
    }

    /// Whether the call succeeded.
    pub fn is_success(&self) -> bool {
        self.code == Code::Ok
    }

    /// Whether the caller dropped the call before its end.
    pub fn is_cancelled(&self) -> bool {
        self.origin == Origin::Cancelled
    }

    /// go-micro's HTTP code: the JSON's code, or the one of the gRPC code (200 on success).
    pub fn http_code(&self) -> i32 {
        match &self.error {
            Some(err) if err.code != 0 => err.code,
            _ => crate::grpc_to_http(self.code),
        }
    }

    /// The outcome a status stands for.
    pub fn from_status(status: &Status, origin: Origin) -> Self {
        if status.code() == Code::Ok {
            return Outcome {
                origin,
                ..Outcome::SUCCESS
            };
        }
        let parsed = Error::parse(status.message());
        let json = parsed.code != 0;
        let error = if json {
            parsed
        } else {
            Error::from_status(status)
        };
        Outcome {
            code: status.code(),
            origin,
            error: Some(error),
            json,
        }
    }

    /// The outcome in response headers or trailers, if they carry a `grpc-status`.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        // A `&str` name would be parsed on every lookup.
        static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
        let value = headers.get(&GRPC_STATUS)?;
        // The common case, a success, reads one byte and allocates nothing.
        if value.as_bytes() == b"0" {
            return Some(Outcome::SUCCESS);
        }
        Some(match Status::from_header_map(headers) {
            Some(status) => Outcome::from_status(&status, Origin::Answered),
            None => Outcome::broken(Code::Internal, "malformed grpc-status"),
        })
    }

    /// The outcome of a service error, read through its source chain: the first error of a
    /// known kind decides; a chain with only generic transport errors reads as broken.
    pub fn from_error(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut transport = false;
        for e in std::iter::successors(Some(err), |e| e.source()) {
            if let Some(status) = e.downcast_ref::<Status>() {
                return Outcome::from_status(status, Origin::Local);
            }
            if let Some(micro) = e.downcast_ref::<Error>() {
                return Outcome {
                    code: crate::http_to_grpc(micro.code),
                    origin: Origin::Local,
                    error: Some(micro.clone()),
                    json: true,
                };
            }
            if e.is::<tonic::TimeoutExpired>() || e.is::<tower::timeout::error::Elapsed>() {
                return Outcome::local(Code::DeadlineExceeded, 408, "deadline exceeded");
            }
            if e.is::<tower::load_shed::error::Overloaded>() {
                return Outcome::local(Code::Unavailable, 503, "service overloaded");
            }
            // The channel's request buffer is gone, or the connection could not be made: the
            // request never left this process.
            if e.is::<tonic::ConnectError>() || e.is::<tower::buffer::error::Closed>() {
                return Outcome::not_sent(err);
            }
            if let Some(h2) = e.downcast_ref::<h2::Error>() {
                // A refused stream, or one past a GOAWAY's last stream id, was not processed.
                let refused = h2.reason() == Some(h2::Reason::REFUSED_STREAM);
                if refused || (h2.is_go_away() && h2.is_remote()) {
                    return Outcome::not_sent(err);
                }
                return Outcome::broken(Code::Unavailable, &describe(err));
            }
            if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
                // Canceled or closed: the connection ended before the request was sent.
                if hyper.is_canceled() || hyper.is_closed() {
                    return Outcome::not_sent(err);
                }
            }
            transport |= e.is::<std::io::Error>()
                || e.is::<hyper::Error>()
                || e.is::<tonic::transport::Error>();
        }
        if transport {
            return Outcome::broken(Code::Unavailable, &describe(err));
        }
        Outcome::local(Code::Internal, 500, &describe(err))
    }

    /// The status to answer with, carrying go-micro's JSON; errors built here get `id`.
    pub fn to_status(&self, id: &str) -> Status {
        match &self.error {
            None => Status::ok(""),
            Some(err) if self.json => Status::new(self.code, err.to_string()),
            Some(err) => {
                let mut err = err.clone();
                if err.id.is_empty() {
                    err.id = id.to_owned();
                }
                Status::new(self.code, err.to_string())
            }
        }
    }

    fn local(code: Code, http: i32, detail: &str) -> Self {
        Outcome {
            code,
            origin: Origin::Local,
            error: Some(Error::new("", http, detail)),
            json: false,
        }
    }

    fn not_sent(err: &(dyn std::error::Error + 'static)) -> Self {
        Outcome {
            code: Code::Unavailable,
            origin: Origin::NotSent,
            error: Some(Error::new("", 503, describe(err))),
            json: false,
        }
    }

    fn broken(code: Code, detail: &str) -> Self {
        Outcome {
            code,
            origin: Origin::Broken,
            error: Some(Error::new("", crate::grpc_to_http(code), detail)),
            json: false,
        }
    }
}

/// An error with its sources, `transport error: connection refused`, as the detail of the
/// go-micro error it becomes (the top error alone often says only "transport error").
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    for source in std::iter::successors(err.source(), |e| e.source()) {
        let next = source.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
    }
    text
}

/// The status a server's edge answers with when whatever sits in front of its handlers fails:
/// a tower timeout becomes 408 DeadlineExceeded, load shedding 503 Unavailable, a limiter's
/// refusal its 429, anything else 500 Internal; always with go-micro's JSON.
pub fn edge_status(err: &BoxError, id: &str) -> Status {
    Outcome::from_error(&**err).to_status(id)
}

/// Told how a call ended, once.
pub trait OnOutcome: Send + 'static {
    /// The call ended this way.
    fn on_outcome(self, outcome: &Outcome);
}

impl<F: FnOnce(&Outcome) + Send + 'static> OnOutcome for F {
    fn on_outcome(self, outcome: &Outcome) {
        self(outcome)
    }
}

/// Both, in order: two observers of one call that read its outcome once.
impl<A: OnOutcome, B: OnOutcome> OnOutcome for (A, B) {
    fn on_outcome(self, outcome: &Outcome) {
        self.0.on_outcome(outcome);
        self.1.on_outcome(outcome);
    }
}

/// Reports at most once; as cancelled if dropped unreported.
struct Report<F: OnOutcome>(Option<F>);

impl<F: OnOutcome> Report<F> {
    fn send(&mut self, outcome: &Outcome) {
        if let Some(on) = self.0.take() {
            on.on_outcome(outcome);
        }
    }
}

impl<F: OnOutcome> Drop for Report<F> {
    fn drop(&mut self) {
        self.send(&Outcome::cancelled());
    }
}

pin_project! {
    /// A response body that reports its call's outcome once: at the trailers, on an error, at
    /// an end without trailers (a protocol error), or as cancelled when dropped before its end.
    pub struct OutcomeBody<B, F: OnOutcome> {
        #[pin]
        inner: B,
        report: Report<F>,
    }
}

impl<B, F: OnOutcome> OutcomeBody<B, F> {
    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B, F> Body for OutcomeBody<B, F>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    F: OnOutcome,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let outcome = Outcome::from_headers(trailers).unwrap_or_else(|| {
                        Outcome::broken(Code::Internal, "trailers without grpc-status")
                    });
                    this.report.send(&outcome);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                let err: BoxError = err.into();
                this.report.send(&Outcome::from_error(&*err));
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                // Polled again after the trailers (the usual end): reported already, so the
                // error (two strings) is not built.
                if this.report.0.is_some() {
                    this.report.send(&Outcome::broken(
                        Code::Internal,
                        "stream ended without grpc-status",
                    ));
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reports the outcome of `response` once: now, if its head already says (a trailers-only
/// response), else when its body ends.
pub fn report_outcome<B, F: OnOutcome>(
    response: Response<B>,
    on: F,
) -> Response<OutcomeBody<B, F>> {
    let mut report = Report(Some(on));
    if let Some(outcome) = Outcome::from_headers(response.headers()) {
        report.send(&outcome);
    }
    response.map(|inner| OutcomeBody { inner, report })
}

pin_project! {
    /// A service's response future whose call's outcome is reported once: from the error, from
    /// the response head, at the end of the body, or as cancelled if either is dropped first.
    pub struct OutcomeFuture<Fut, F: OnOutcome> {
        #[pin]
        inner: Fut,
        report: Report<F>,
    }
}

impl<Fut, F: OnOutcome> OutcomeFuture<Fut, F> {
    /// Reports the outcome of the call `inner` answers to `on`.
    pub fn new(inner: Fut, on: F) -> Self {
        OutcomeFuture {
            inner,
            report: Report(Some(on)),
        }
    }
}

impl<Fut, B, E, F> Future for OutcomeFuture<Fut, F>
where
    Fut: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    F: OnOutcome,
{
    type Output = Result<Response<OutcomeBody<B, F>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(response)) => {
                let mut report = Report(this.report.0.take());
                if let Some(outcome) = Outcome::from_headers(response.headers()) {
                    report.send(&outcome);
                }
                Poll::Ready(Ok(response.map(|inner| OutcomeBody { inner, report })))
            }
            Poll::Ready(Err(err)) => {
                let err: BoxError = err.into();
                this.report.send(&Outcome::from_error(&*err));
                Poll::Ready(Err(err))
            }
        }
    }
}

/// The former name of [`OutcomeBody`].
#[deprecated(since = "0.1.0", note = "renamed `OutcomeBody`: it reports an outcome")]
pub type ObservedBody<B, F> = OutcomeBody<B, F>;

/// The former name of [`OutcomeFuture`].
#[deprecated(
    since = "0.1.0",
    note = "renamed `OutcomeFuture`: it reports an outcome"
)]
pub type Observed<Fut, F> = OutcomeFuture<Fut, F>;

/// The former name of [`report_outcome`].
#[deprecated(since = "0.1.0", note = "renamed `report_outcome`")]
pub fn observe<B, F: OnOutcome>(response: Response<B>, on: F) -> Response<OutcomeBody<B, F>> {
    report_outcome(response, on)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;

    use super::*;

    type Seen = Arc<Mutex<Vec<Outcome>>>;
    type Reporter = Box<dyn FnOnce(&Outcome) + Send>;

    fn recorder() -> (Seen, impl Fn() -> Reporter) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let make = {
            let seen = seen.clone();
            move || {
                let seen = seen.clone();
                Box::new(move |o: &Outcome| seen.lock().unwrap().push(o.clone())) as Reporter
            }
        };
        (seen, make)
    }

    #[derive(Debug)]
    struct Wrapped(BoxError);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    /// Every source a service error can come from, and the code it reads as.
    #[test]
    fn service_errors_table() {
        let micro = Error::too_many_requests("go.micro.server", "too many request");
        let h2_refused: h2::Error = h2::Reason::REFUSED_STREAM.into();
        let h2_reset: h2::Error = h2::Reason::INTERNAL_ERROR.into();
        let cases: Vec<(BoxError, Code, Origin, i32)> = vec![
            (
                Box::new(Status::unavailable("down")),
                Code::Unavailable,
                Origin::Local,
                503,
            ),
            (
                Box::new(micro.to_status()),
                Code::ResourceExhausted,
                Origin::Local,
                429,
            ),
            (
                Box::new(micro.clone()),
                Code::ResourceExhausted,
                Origin::Local,
                429,
            ),
            (
                Box::new(tonic::TimeoutExpired(())),
                Code::DeadlineExceeded,
                Origin::Local,
                408,
            ),
            (
                Box::new(tower::timeout::error::Elapsed::new()),
                Code::DeadlineExceeded,
                Origin::Local,
                408,
            ),
            (
                Box::new(tower::load_shed::error::Overloaded::new()),
                Code::Unavailable,
                Origin::Local,
                503,
            ),
            (
                Box::new(tonic::ConnectError(Box::new(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                )))),
                Code::Unavailable,
                Origin::NotSent,
                503,
            ),
            (
                Box::new(h2_refused),
                Code::Unavailable,
                Origin::NotSent,
                503,
            ),
            (Box::new(h2_reset), Code::Unavailable, Origin::Broken, 503),
            (
                Box::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
                Code::Unavailable,
                Origin::Broken,
                503,
            ),
            (
                Box::new(Wrapped(Box::new(tower::timeout::error::Elapsed::new()))),
                Code::DeadlineExceeded,
                Origin::Local,
                408,
            ),
            ("anything else".into(), Code::Internal, Origin::Local, 500),
        ];
        for (err, code, origin, http) in cases {
            let outcome = Outcome::from_error(&*err);
            assert_eq!(
                (outcome.code, outcome.origin, outcome.http_code()),
                (code, origin, http),
                "{err}"
            );
            let status = edge_status(&err, "go.micro.server");
            let carried = Error::parse(status.message());
            assert_eq!(carried.code, http, "{err}: {}", status.message());
            assert!(!carried.id.is_empty(), "{err}");
        }
    }

    #[test]
    fn heads_and_trailers() {
        let mut headers = HeaderMap::new();
        assert_eq!(Outcome::from_headers(&headers), None);
        headers.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(Outcome::from_headers(&headers), Some(Outcome::SUCCESS));
        let status = Error::new("go.micro.server", 404, "no such thing").to_status();
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        let outcome = Outcome::from_headers(&headers).unwrap();
        assert_eq!((outcome.code, outcome.json), (Code::NotFound, true));
        assert_eq!(outcome.error.unwrap().detail, "no such thing");
        // A Go server's 429 arrives as Unknown with the code in its JSON.
        let go = Status::unknown(Error::new("go.micro.server", 429, "slow down").to_string());
        let outcome = Outcome::from_status(&go, Origin::Answered);
        assert_eq!((outcome.code, outcome.http_code()), (Code::Unknown, 429));
        // A plain status: no JSON, an error built from the code.
        let plain = Outcome::from_status(&Status::internal("boom"), Origin::Answered);
        assert!(!plain.json);
        assert_eq!(plain.http_code(), 500);
        let mut garbage = HeaderMap::new();
        garbage.insert("grpc-status", "abc".parse().unwrap());
        assert_eq!(Outcome::from_headers(&garbage).unwrap().code, Code::Unknown);
    }

    fn trailers(status: Status) -> HeaderMap {
        let mut map = HeaderMap::new();
        status.add_header(&mut map).unwrap();
        map
    }

    #[tokio::test]
    async fn body_reports_once_at_its_end() {
        let (seen, make) = recorder();
        let frames = vec![
            Ok::<_, Status>(Frame::data(Bytes::from_static(b"one"))),
            Ok(Frame::data(Bytes::from_static(b"two"))),
            Ok(Frame::trailers(trailers(Status::unavailable("late")))),
        ];
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        let response = report_outcome(Response::new(body), make());
        assert!(seen.lock().unwrap().is_empty());
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(&collected.to_bytes()[..], b"onetwo");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].code, seen[0].origin),
            (Code::Unavailable, Origin::Answered)
        );
    }

    #[tokio::test]
    async fn dropped_errored_and_trailers_only_bodies() {
        let (seen, make) = recorder();
        // Dropped before its end: cancelled.
        let body = http_body_util::StreamBody::new(futures::stream::pending::<
            Result<Frame<Bytes>, Status>,
        >());
        drop(report_outcome(Response::new(body), make()));
        // An error from the body.
        let frames = vec![Err::<Frame<Bytes>, _>(Status::data_loss("cut"))];
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        let _ = report_outcome(Response::new(body), make())
            .into_body()
            .collect()
            .await;
        // Trailers-only: reported from the head, once, though the body is read to its end.
        let mut response = Response::new(http_body_util::Empty::<Bytes>::new());
        *response.headers_mut() = trailers(Status::not_found("x"));
        let _ = report_outcome(response, make()).into_body().collect().await;
        // Ended without any status: a protocol error.
        let body = http_body_util::Full::new(Bytes::from_static(b"x"));
        let _ = report_outcome(Response::new(body), make())
            .into_body()
            .collect()
            .await;
        let codes: Vec<_> = seen.lock().unwrap().iter().map(|o| o.code).collect();
        assert_eq!(
            codes,
            [
                Code::Cancelled,
                Code::DataLoss,
                Code::NotFound,
                Code::Internal
            ]
        );
    }

    #[tokio::test]
    async fn future_reports_errors_and_drops() {
        let (seen, make) = recorder();
        let failing = std::future::ready(Err::<Response<http_body_util::Empty<Bytes>>, _>(
            tower::timeout::error::Elapsed::new(),
        ));
        assert!(OutcomeFuture::new(failing, make()).await.is_err());
        drop(OutcomeFuture::new(
            std::future::pending::<Result<Response<http_body_util::Empty<Bytes>>, Status>>(),
            make(),
        ));
        let codes: Vec<_> = seen.lock().unwrap().iter().map(|o| o.code).collect();
        assert_eq!(codes, [Code::DeadlineExceeded, Code::Cancelled]);
    }
}
