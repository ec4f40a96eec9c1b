//! The metrics wrapper's cost per call, alone: `N` calls through a `Metrics` layer over a
//! service that answers at once, to compare with the same calls without the layer (`bare`).
//! `scripts/callgrind-metrics` runs it under callgrind and DHAT with two values of `N`: the
//! difference of the totals over the difference of the calls is the cost of one call, the
//! start-up and the first calls (which resolve the series) left out.
//!
//!   cargo bench -p micro-wrappers --bench metrics_calls -- <bare|server|client|tonic> [N]
//!
//! `server` and `client` carry a micro `CallInfo` as micro's server and client do (baseline
//! `bare`); `tonic` is a bare tonic app's call (no `CallInfo`: the labels come from the path;
//! baseline `bare-tonic`).
#![allow(missing_docs)]

use std::{
    convert::Infallible,
    future::Future,
    hint::black_box,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use micro_core::CallInfo;
use micro_wrappers::metrics::{Metrics, MetricsConfig};
use tower::{Layer, Service, ServiceExt};

const PATH: &str = "/greeter.Greeter/Hello";

/// The body tonic answers a unary call with: the message, then `grpc-status: 0` trailers (where
/// the outcome is read).
type Answer =
    StreamBody<futures::stream::Iter<std::array::IntoIter<Result<Frame<Bytes>, Infallible>, 2>>>;

/// Answers at once, as tonic does a successful unary call.
async fn answer(_: Request<Empty<Bytes>>) -> Result<Response<Answer>, Infallible> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x05hello"))),
        Ok(Frame::trailers(trailers)),
    ];
    Ok(Response::new(StreamBody::new(futures::stream::iter(
        frames,
    ))))
}

fn poll_now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the service answers at once"),
    }
}

fn request(info: Option<&CallInfo>) -> Request<Empty<Bytes>> {
    let mut request = Request::builder()
        .uri(PATH)
        .body(Empty::new())
        .expect("a valid request");
    if let Some(info) = info {
        request.extensions_mut().insert(info.clone());
    }
    request
}

/// One call through `service`, its body read to the end (where the outcome is recorded).
fn call<S, B>(service: &mut S, info: Option<&CallInfo>)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let response = poll_now(service.ready())
        .expect("ready")
        .call(request(info));
    let body = poll_now(response).expect("answered").into_body();
    black_box(poll_now(body.collect()).expect("a body"));
}

fn measure<S, B>(mode: &str, mut service: S, info: Option<&CallInfo>, calls: u64)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    for _ in 0..calls {
        call(&mut service, info);
    }
    println!("{mode}: {calls} calls");
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().map_or("server", String::as_str);
    let calls = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let info = CallInfo::from_path(Arc::<str>::from("greeter"), PATH);
    let metrics = Metrics::new(MetricsConfig {
        process: false,
        ..MetricsConfig::default()
    });
    let inner = tower::service_fn(answer);
    match mode {
        "bare" => measure(mode, inner, Some(&info), calls),
        "bare-tonic" => measure(mode, inner, None, calls),
        "server" => measure(mode, metrics.server().layer(inner), Some(&info), calls),
        "client" => measure(mode, metrics.client().layer(inner), Some(&info), calls),
        "tonic" => measure(mode, metrics.server().layer(inner), None, calls),
        other => {
            eprintln!("unknown mode {other}: want bare, bare-tonic, server, client or tonic");
            std::process::exit(2);
        }
    }
    let text = metrics.encode();
    assert!(
        mode.starts_with("bare") || text.contains("status=\"success\""),
        "{text}"
    );
}
