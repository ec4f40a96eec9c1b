//! The metrics endpoint: `/metrics` (Prometheus text), `/health` (live) and `/ready`
//! (registered within the TTL and serving), over HTTP/1.1 with hyper (already in the
//! dependency tree under tonic; three fixed routes need no router).

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use micro_server::Readiness;
use micro_wrappers::metrics::{CONTENT_TYPE, Metrics};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// Answers one request.
pub(crate) fn respond<B>(
    request: &Request<B>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &'static str, body: Bytes| {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    };
    let text = "text/plain; charset=utf-8";
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            Bytes::from_static(b"method not allowed\n"),
        );
    }
    match request.uri().path() {
        "/metrics" => reply(StatusCode::OK, CONTENT_TYPE, Bytes::from(metrics.encode())),
        "/health" => reply(StatusCode::OK, text, Bytes::from_static(b"ok\n")),
        "/ready" if readiness.is_ready() => {
            reply(StatusCode::OK, text, Bytes::from_static(b"ready\n"))
        }
        "/ready" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            Bytes::from_static(b"not ready\n"),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            text,
            Bytes::from_static(b"not found: try /metrics, /health or /ready\n"),
        ),
    }
}

/// Serves `listener` until `stop` is cancelled.
pub(crate) fn serve(
    listener: TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (stream, peer): (_, SocketAddr) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: keep serving the others.
                        tracing::warn!(%err, "metrics endpoint: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let (metrics, readiness, stop) = (metrics.clone(), readiness.clone(), stop.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let response = respond(&request, &metrics, &readiness);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(err) = result {
                            tracing::debug!(%peer, %err, "metrics endpoint: connection ended");
                        }
                    }
                    _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
                }
            });
        }
    })
}
