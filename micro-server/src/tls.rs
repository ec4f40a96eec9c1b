//! TLS under tonic's `serve_with_incoming_shutdown`: accepted TCP connections are handshaken
//! by tokio-rustls, each on its own task (a slow or silent client holds up no other), with the
//! configuration current at accept time (its certificate resolver follows rotation). Only
//! completed handshakes reach tonic, which puts a `TlsConnectInfo` in each request: handlers
//! read the client's verified certificate chain with `request.peer_certs()` (mutual TLS) and
//! its address with `request.remote_addr()`, as with tonic's own TLS.

use std::{io, sync::Arc, time::Duration};

use micro_core::tls::{ServerTlsConfig, rustls};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Time a client has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server-side TLS connection, as tonic serves it.
pub(crate) type TlsIo = tokio_rustls::server::TlsStream<TcpStream>;

/// The TLS connections accepted on `listener` until `stop`.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTlsConfig>,
    stop: CancellationToken,
) -> ReceiverStream<Result<TlsIo, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, %err, "TCP_NODELAY not set");
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(err)) => match rustls_error(&err) {
                        Some(rustls::Error::InvalidMessage(_)) => {
                            tracing::info!(%peer, "TLS handshake refused: not TLS (a plaintext client?)");
                        }
                        Some(reason) => {
                            tracing::info!(%peer, %reason, "TLS handshake refused");
                        }
                        None => tracing::debug!(%peer, %err, "TLS handshake failed"),
                    },
                    Err(_) => {
                        tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The TLS error behind a failed handshake, if it was one (not a reset or an EOF).
fn rustls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}
