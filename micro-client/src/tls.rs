//! TLS to nodes: which nodes are dialled with TLS (the client's [`TlsMode`] over the node's
//! `secure` metadata), the connector that dials them (TCP, then a tokio-rustls handshake
//! with the configuration current at connect time, so rotated files apply to new
//! connections), and the errors a refused handshake becomes.
//!
//! A TLS failure is a configuration fault every node would repeat (an unknown CA, a name
//! mismatch, an expired certificate, a server that wants a client certificate, a node that
//! does not speak TLS): the call ends with go-micro's 503 naming the node and the reason; it
//! is not retried on another node and does not count against the node for ejection.

use std::{
    collections::HashMap,
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use hyper_util::rt::TokioIo;
use micro_core::{
    BoxError, NodeInfo,
    tls::{ClientTls, ClientTlsConfig, TlsError, rustls},
};
use micro_registry::Node;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// How the client's messages about a TLS failure begin; also how one is recognised once
/// HTTP/2 has kept only its message (h2 carries a connection's I/O error as text).
const PREFIX: &str = "TLS with node ";

/// The client's TLS settings: the default and per-service ones, each loaded on first use.
#[derive(Debug)]
pub(crate) struct Tls {
    default: ClientTls,
    services: HashMap<String, ClientTls, foldhash::fast::RandomState>,
    /// Loaded configurations by settings (`None`: the default), kept current by their watch.
    loaded: Mutex<HashMap<Option<String>, Arc<ClientTlsConfig>, foldhash::fast::RandomState>>,
}

impl Tls {
    pub(crate) fn new(default: ClientTls, services: Vec<(String, ClientTls)>) -> Self {
        Tls {
            default,
            services: services.into_iter().collect(),
            loaded: Mutex::default(),
        }
    }

    fn settings(&self, service: &str) -> (Option<&str>, &ClientTls) {
        match self.services.get_key_value(service) {
            Some((name, settings)) => (Some(name.as_str()), settings),
            None => (None, &self.default),
        }
    }

    /// Whether `node` of `service` is dialled with TLS.
    pub(crate) fn dials_tls(&self, service: &str, node: &Node) -> bool {
        let (_, settings) = self.settings(service);
        let secure = node.metadata.get("secure").map(String::as_str);
        settings.mode.dials_tls(&node.address, secure)
    }

    /// The connector for a node of `service` at `host:port`.
    pub(crate) fn connector(
        &self,
        service: &str,
        node: &NodeInfo,
        host: &str,
    ) -> Result<Connector, TlsError> {
        let (key, settings) = self.settings(service);
        let name = settings.name_for(host)?;
        let key = key.map(str::to_owned);
        let config = {
            let mut loaded = self.loaded.lock();
            match loaded.get(&key) {
                Some(config) => config.clone(),
                None => {
                    let config = settings.load()?;
                    loaded.insert(key, config.clone());
                    config
                }
            }
        };
        Ok(Connector {
            config,
            name,
            node: node.clone(),
        })
    }
}

/// Dials one node: TCP, then the TLS handshake.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    config: Arc<ClientTlsConfig>,
    name: ServerName<'static>,
    node: NodeInfo,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<ClientIo>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config.current());
        let name = self.name.clone();
        let node = self.node.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| format!("node {} has no host:port", node.id))?;
            let tcp = TcpStream::connect(authority.as_str()).await?;
            tcp.set_nodelay(true)?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|err| handshake_failure(&node, err))?;
            Ok(TokioIo::new(ClientIo {
                stream: Box::new(stream),
                node,
            }))
        })
    }
}

/// A TLS failure with a node, as the caller reads it.
#[derive(Debug, thiserror::Error)]
#[error("{PREFIX}{node} ({address}) failed: {reason}")]
pub(crate) struct TlsFailure {
    node: Arc<str>,
    address: Arc<str>,
    reason: String,
}

/// The failure a failed handshake is, or the I/O error it was (a reset or refused
/// connection is a node's health, retried and counted as usual).
fn handshake_failure(node: &NodeInfo, err: io::Error) -> BoxError {
    let reason = match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls) => describe(tls),
        None if err.kind() == io::ErrorKind::UnexpectedEof => {
            "the node closed the connection during the TLS handshake (does it serve TLS?)".into()
        }
        None => return err.into(),
    };
    Box::new(TlsFailure {
        node: node.id.clone(),
        address: node.address.clone(),
        reason,
    })
}

/// A TLS error in words a caller can act on.
fn describe(err: &rustls::Error) -> String {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error};
    match err {
        Error::InvalidCertificate(Cert::UnknownIssuer) => {
            "the node's certificate is signed by an unknown CA".into()
        }
        Error::InvalidCertificate(
            cert @ (Cert::NotValidForName | Cert::NotValidForNameContext { .. }),
        ) => format!("the node's certificate does not name it: {cert}"),
        Error::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            "the node's certificate has expired".into()
        }
        Error::InvalidCertificate(cert) => format!("the node's certificate is refused: {cert}"),
        Error::AlertReceived(Alert::CertificateRequired) => {
            "the node requires a client certificate and this client has none".into()
        }
        Error::AlertReceived(
            alert @ (Alert::UnknownCA
            | Alert::BadCertificate
            | Alert::CertificateUnknown
            | Alert::CertificateExpired
            | Alert::CertificateRevoked
            | Alert::UnsupportedCertificate),
        ) => format!("the node refused this client's certificate ({alert:?})"),
        Error::AlertReceived(Alert::HandshakeFailure) => {
            "the node refused the handshake (no client certificate, or no common cipher suite)"
                .into()
        }
        Error::InvalidMessage(_) => "the node does not answer in TLS (a plaintext server?)".into(),
        other => other.to_string(),
    }
}

/// The TLS failure behind an attempt's error, if it was one: the failure itself when the
/// handshake failed, or its message when the connection failed later (TLS 1.3 servers refuse
/// a client certificate after the client's handshake ended).
pub(crate) fn failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    std::iter::successors(Some(err), |e| e.source()).find_map(|e| {
        if let Some(failure) = e.downcast_ref::<TlsFailure>() {
            return Some(failure.to_string());
        }
        let io = e
            .downcast_ref::<io::Error>()
            .or_else(|| e.downcast_ref::<h2::Error>().and_then(h2::Error::get_io))?;
        let message = io.to_string();
        message.starts_with(PREFIX).then_some(message)
    })
}

/// A client-side TLS connection: read errors the TLS layer raises after the handshake (a
/// refused client certificate) name the node.
pub(crate) struct ClientIo {
    /// Boxed: the stream holds rustls's buffers, and hyper moves the connection around.
    stream: Box<tokio_rustls::client::TlsStream<TcpStream>>,
    node: NodeInfo,
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut *this.stream).poll_read(cx, buf) {
            Poll::Ready(Err(err)) if err.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
                let failure = handshake_failure(&this.node, err);
                Poll::Ready(Err(io::Error::other(failure)))
            }
            other => other,
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_found_typed_or_by_message() {
        let node = NodeInfo {
            id: "greeter2-1".into(),
            address: "127.0.0.1:1".into(),
        };
        let err = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let failure = handshake_failure(&node, err);
        let found = failure_of(&*failure).unwrap();
        assert!(found.contains("greeter2-1 (127.0.0.1:1)"), "{found}");
        assert!(found.contains("unknown CA"), "{found}");
        // As h2 keeps it: the message only.
        let text = io::Error::other(found.clone());
        assert_eq!(failure_of(&text).as_deref(), Some(found.as_str()));
        // A reset is a node's health, not TLS.
        let reset = handshake_failure(&node, io::ErrorKind::ConnectionReset.into());
        assert!(failure_of(&*reset).is_none());
    }

    fn failure_of(err: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<String> {
        failure(err)
    }
}
