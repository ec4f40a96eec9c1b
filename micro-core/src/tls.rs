//! TLS settings shared by the server and the client: PEM files in, rustls configurations out,
//! re-read from disk when the files change (certificates rotate without a restart).
//!
//! One crypto provider, rustls's `ring` ([`provider`]): the one etcd-client's `tls` feature and
//! tonic's `tls-ring` use, so a binary carries one. Verification is on by default: a client
//! checks the server's chain against its CA bundle (or the system's roots) and the server's
//! name; turning that off takes [`ClientTls::dangerous_skip_verification`].
//!
//! Rotation polls the files' modification times and sizes (every
//! [`DEFAULT_RELOAD_INTERVAL`] by default): a server swaps its certificate in its
//! [`ResolvesServerCert`] resolver and rebuilds its configuration for a new client CA; a
//! client rebuilds its configuration. Connections already open keep the certificate they were
//! made with; new ones get the new one. Files that changed but do not load (a key written
//! after its certificate, a half-written file) are logged and the previous ones kept; they
//! are tried again on their next change.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, Weak},
    time::{Duration, SystemTime},
};

use parking_lot::RwLock;
pub use rustls;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    client::ResolvesClientCert,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};

/// How often certificate files are checked for changes by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The ALPN protocol gRPC runs on.
const H2: &[u8] = b"h2";

/// The crypto provider of every TLS configuration micro-rs builds: rustls's `ring`.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What went wrong loading TLS files or building a configuration from them.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("TLS {what} {path}: cannot read: {source}")]
    Read {
        /// Which file: `certificate`, `key`, `CA bundle`.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file was read but holds no usable PEM item of the kind wanted.
    #[error("TLS {what} {path}: {reason}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why (e.g. no `CERTIFICATE` block, bad base64).
        reason: String,
    },
    /// The files load but rustls refuses them (e.g. a key that does not match the
    /// certificate, an unsupported key type, a CA certificate it cannot parse).
    #[error("TLS {what}: {reason}")]
    Invalid {
        /// What was being built: `server certificate`, `client CA`, ...
        what: &'static str,
        /// rustls's reason.
        reason: String,
    },
    /// A name that cannot be a TLS server name.
    #[error("TLS server name {0:?} is not a DNS name or an IP address")]
    ServerName(String),
    /// A setting's value is not one of its choices.
    #[error("{0}")]
    Setting(String),
}

/// A certificate chain and its private key, as PEM files (chain: leaf first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Identity {
    /// The pair at these paths.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Identity {
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// Reads and checks the pair: the key must match the first certificate.
    pub fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let chain = certificates(&self.cert, "certificate")?;
        let key = private_key(&self.key)?;
        CertifiedKey::from_der(chain, key, provider).map_err(|err| TlsError::Invalid {
            what: "certificate and key",
            reason: format!("{} with {}: {err}", self.cert.display(), self.key.display()),
        })
    }
}

/// Whether a server that verifies client certificates requires one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without a certificate signed by the client CA is refused (the default).
    #[default]
    Required,
    /// A client may connect without a certificate; one it presents must verify.
    Optional,
}

impl FromStr for ClientAuth {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, TlsError> {
        match s {
            "required" | "require" => Ok(ClientAuth::Required),
            "optional" => Ok(ClientAuth::Optional),
            other => Err(TlsError::Setting(format!(
                "client auth {other:?}: want required or optional"
            ))),
        }
    }
}

/// When a client dials a node with TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Nodes whose metadata says `secure: "true"`, and by go-micro's rule nodes on port 443
    /// or with an `https://` address (the default).
    #[default]
    Auto,
    /// Every node (e.g. go-micro servers with `AuthTLS`, which look plaintext in the registry).
    Always,
    /// No node.
    Never,
}

impl FromStr for TlsMode {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, TlsError> {
        match s {
            "auto" => Ok(TlsMode::Auto),
            "always" | "on" | "true" => Ok(TlsMode::Always),
            "never" | "off" | "false" => Ok(TlsMode::Never),
            other => Err(TlsError::Setting(format!(
                "client TLS {other:?}: want auto, always or never"
            ))),
        }
    }
}

impl TlsMode {
    /// Whether a node at `address` with this `secure` metadata value is dialled with TLS.
    pub fn dials_tls(self, address: &str, secure: Option<&str>) -> bool {
        match self {
            TlsMode::Always => true,
            TlsMode::Never => false,
            TlsMode::Auto => match secure {
                Some(value) => value.eq_ignore_ascii_case("true"),
                None => {
                    address.starts_with("https://")
                        || address.ends_with(":443")
                        || !has_port(address)
                }
            },
        }
    }
}

/// The `host:port` to dial for a node's registered address: go-micro's `https://` prefix
/// dropped, and port 443 added to an address without one (go-micro dials those with TLS).
pub fn dial_address(address: &str) -> std::borrow::Cow<'_, str> {
    let address = address.strip_prefix("https://").unwrap_or(address);
    if has_port(address) {
        address.into()
    } else {
        format!("{address}:443").into()
    }
}

/// Whether `address` ends with a `:port` (an IPv6 host is bracketed).
fn has_port(address: &str) -> bool {
    let address = address.strip_prefix("https://").unwrap_or(address);
    match address.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    }
}

/// A server's TLS: its certificate, and optionally the CA its clients' certificates must be
/// signed by (mutual TLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    /// The server's certificate chain and key.
    pub identity: Identity,
    /// When set, clients are asked for a certificate signed by this PEM CA bundle.
    pub client_ca: Option<PathBuf>,
    /// Whether that certificate is required (the default) or optional.
    pub client_auth: ClientAuth,
    /// How often the files are checked for changes (default 5 s); `None` never re-reads them.
    pub reload_interval: Option<Duration>,
}

impl ServerTls {
    /// TLS with this certificate and key, no client certificates, re-read every 5 s.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        ServerTls {
            identity: Identity::new(cert, key),
            client_ca: None,
            client_auth: ClientAuth::Required,
            reload_interval: Some(DEFAULT_RELOAD_INTERVAL),
        }
    }

    /// Asks clients for a certificate signed by the CA bundle at `ca` (mutual TLS).
    #[must_use]
    pub fn client_ca(mut self, ca: impl Into<PathBuf>, auth: ClientAuth) -> Self {
        self.client_ca = Some(ca.into());
        self.client_auth = auth;
        self
    }

    /// Loads the files into a configuration, and (inside a tokio runtime, with a reload
    /// interval) starts watching them; the watch ends when the returned value is dropped.
    pub fn load(&self) -> Result<Arc<ServerTlsConfig>, TlsError> {
        let stamps = Stamps::read(&self.files());
        let provider = provider();
        let resolver = Arc::new(Resolver::new(self.identity.load(&provider)?));
        let config = self.build(&provider, resolver.clone())?;
        let loaded = Arc::new(ServerTlsConfig {
            settings: self.clone(),
            provider,
            resolver,
            config: RwLock::new(config),
        });
        if let Some(interval) = self.reload_interval {
            watch(
                Arc::downgrade(&loaded),
                self.files(),
                stamps,
                interval,
                |loaded| loaded.reload(),
            );
        }
        Ok(loaded)
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.identity.cert.clone(), self.identity.key.clone()];
        files.extend(self.client_ca.clone());
        files
    }

    fn build(
        &self,
        provider: &Arc<CryptoProvider>,
        resolver: Arc<Resolver>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| invalid("server protocol versions", &err))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = Arc::new(root_store(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
                let verifier = match self.client_auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                let verifier = verifier.build().map_err(|err| invalid("client CA", &err))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(resolver);
        config.alpn_protocols = vec![H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// A server's loaded TLS configuration, kept current with its files.
#[derive(Debug)]
pub struct ServerTlsConfig {
    settings: ServerTls,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    config: RwLock<Arc<ServerConfig>>,
}

impl ServerTlsConfig {
    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.read().clone()
    }

    /// The certificate chain served now (leaf first).
    pub fn certificate(&self) -> Vec<CertificateDer<'static>> {
        self.resolver.current().cert.clone()
    }

    /// Re-reads the files: the new certificate goes into the resolver (so even a
    /// configuration already handed out serves it), a new client CA into a new configuration.
    fn reload(&self) -> Result<(), TlsError> {
        let key = self.settings.identity.load(&self.provider)?;
        let config = match self.settings.client_ca {
            Some(_) => Some(self.settings.build(&self.provider, self.resolver.clone())?),
            None => None,
        };
        self.resolver.set(key);
        if let Some(config) = config {
            *self.config.write() = config;
        }
        Ok(())
    }
}

/// A client's TLS: which nodes it dials with TLS, the CA bundle it trusts, its own
/// certificate for mutual TLS and the name it expects servers to have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// Which nodes are dialled with TLS.
    pub mode: TlsMode,
    /// PEM CA bundle servers' certificates must chain to; the system's roots when unset.
    pub ca: Option<PathBuf>,
    /// The client's own certificate and key, presented to servers that ask (mutual TLS).
    pub identity: Option<Identity>,
    /// The name servers' certificates must carry; the node's host (an IP address, as nodes
    /// register) when unset.
    pub server_name: Option<String>,
    /// Accepts any server certificate: no chain or name check. For debugging only; the
    /// connection is then open to anyone in the middle.
    pub dangerous_skip_verification: bool,
    /// How often the files are checked for changes (default 5 s); `None` never re-reads them.
    pub reload_interval: Option<Duration>,
}

impl Default for ClientTls {
    /// `auto` mode, the system's roots, no client certificate, re-read every 5 s.
    fn default() -> Self {
        ClientTls {
            mode: TlsMode::Auto,
            ca: None,
            identity: None,
            server_name: None,
            dangerous_skip_verification: false,
            reload_interval: Some(DEFAULT_RELOAD_INTERVAL),
        }
    }
}

impl ClientTls {
    /// TLS in `auto` mode trusting the CA bundle at `ca`, re-read every 5 s.
    pub fn new(ca: impl Into<PathBuf>) -> Self {
        ClientTls {
            ca: Some(ca.into()),
            ..ClientTls::default()
        }
    }

    /// Presents this certificate to servers that ask (mutual TLS).
    #[must_use]
    pub fn identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some(Identity::new(cert, key));
        self
    }

    /// Expects servers' certificates to carry `name`.
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Dials nodes with TLS in this mode.
    #[must_use]
    pub fn mode(mut self, mode: TlsMode) -> Self {
        self.mode = mode;
        self
    }

    /// The name to verify for a node at `host`: the configured one, else the host.
    pub fn name_for(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        // An IPv6 host comes bracketed from `host:port`.
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName(name.to_owned()))
    }

    /// Loads the files into a configuration, and (inside a tokio runtime, with a reload
    /// interval) starts watching them; the watch ends when the returned value is dropped.
    pub fn load(&self) -> Result<Arc<ClientTlsConfig>, TlsError> {
        if let Some(name) = &self.server_name {
            self.name_for(name)?;
        }
        let stamps = Stamps::read(&self.files());
        let provider = provider();
        let config = self.build(&provider)?;
        let loaded = Arc::new(ClientTlsConfig {
            settings: self.clone(),
            provider,
            config: RwLock::new(config),
        });
        if let Some(interval) = self.reload_interval {
            watch(
                Arc::downgrade(&loaded),
                self.files(),
                stamps,
                interval,
                |loaded| loaded.reload(),
            );
        }
        Ok(loaded)
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.ca.iter().cloned().collect();
        if let Some(identity) = &self.identity {
            files.extend([identity.cert.clone(), identity.key.clone()]);
        }
        files
    }

    fn build(&self, provider: &Arc<CryptoProvider>) -> Result<Arc<ClientConfig>, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| invalid("client protocol versions", &err))?;
        let builder = if self.dangerous_skip_verification {
            tracing::warn!(
                "TLS server certificates are NOT verified (dangerous_skip_verification): \
                 anyone in the middle can read and change these calls"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerification(provider.clone())))
        } else {
            let roots = match &self.ca {
                Some(ca) => root_store(ca)?,
                None => system_roots()?,
            };
            builder.with_root_certificates(roots)
        };
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                let key = identity.load(provider)?;
                builder.with_client_cert_resolver(Arc::new(Resolver::new(key)))
            }
        };
        config.alpn_protocols = vec![H2.to_vec()];
        Ok(Arc::new(config))
    }
}

/// A client's loaded TLS configuration, kept current with its files.
#[derive(Debug)]
pub struct ClientTlsConfig {
    settings: ClientTls,
    provider: Arc<CryptoProvider>,
    config: RwLock<Arc<ClientConfig>>,
}

impl ClientTlsConfig {
    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<ClientConfig> {
        self.config.read().clone()
    }

    /// The settings it was loaded from.
    pub fn settings(&self) -> &ClientTls {
        &self.settings
    }

    fn reload(&self) -> Result<(), TlsError> {
        let config = self.settings.build(&self.provider)?;
        *self.config.write() = config;
        Ok(())
    }
}

/// Hands out the current certificate; rotation swaps it.
#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl Resolver {
    fn new(key: CertifiedKey) -> Self {
        Resolver(RwLock::new(Arc::new(key)))
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().clone()
    }

    fn set(&self, key: CertifiedKey) {
        *self.0.write() = Arc::new(key);
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The certificate verifier of [`ClientTls::dangerous_skip_verification`]: signatures are
/// still checked (the handshake needs them), the chain and the name are not.
#[derive(Debug)]
struct SkipVerification(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for SkipVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificates of a PEM file; at least one.
pub fn certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(path, what, &err))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, "key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Pem {
            what: "key",
            path: path.to_owned(),
            reason: "no PRIVATE KEY block found".into(),
        },
        other => pem_error(path, "key", &other),
    })
}

/// A root store of the certificates in a PEM CA bundle.
fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, "CA bundle")? {
        roots.add(cert).map_err(|err| TlsError::Invalid {
            what: "CA bundle",
            reason: format!("{}: {err}", path.display()),
        })?;
    }
    Ok(roots)
}

/// The system's trusted roots (for clients given no CA bundle).
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(TlsError::Invalid {
            what: "system CA roots",
            reason: format!("{why}; give a CA bundle"),
        });
    }
    Ok(roots)
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, what: &'static str, err: &rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_owned(),
        reason: err.to_string(),
    }
}

fn invalid(what: &'static str, err: &dyn fmt::Display) -> TlsError {
    TlsError::Invalid {
        what,
        reason: err.to_string(),
    }
}

/// What identifies a file's content cheaply: its modification time and size (`None`: absent).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamps(Vec<Option<(SystemTime, u64)>>);

impl Stamps {
    fn read(files: &[PathBuf]) -> Self {
        Stamps(
            files
                .iter()
                .map(|file| {
                    let meta = std::fs::metadata(file).ok()?;
                    Some((meta.modified().ok()?, meta.len()))
                })
                .collect(),
        )
    }
}

/// Polls `files` every `interval` and calls `reload` on `target` when they changed, until
/// `target` is dropped. Outside a tokio runtime nothing is watched (logged).
fn watch<T: Send + Sync + 'static>(
    target: Weak<T>,
    files: Vec<PathBuf>,
    mut seen: Stamps,
    interval: Duration,
    reload: fn(&T) -> Result<(), TlsError>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(
            ?files,
            "TLS files loaded outside a tokio runtime: not watched for rotation"
        );
        return;
    };
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(target) = target.upgrade() else {
                return;
            };
            // Stat on the blocking pool: the files may sit on a slow volume.
            let read = files.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || Stamps::read(&read)).await else {
                continue;
            };
            if now == seen {
                continue;
            }
            // Remembered whether or not they load: a pair written in two steps changes again
            // when its second file lands, and is tried then.
            seen = now;
            match reload(&target) {
                Ok(()) => tracing::info!(?files, "TLS files changed: reloaded"),
                Err(err) => {
                    tracing::warn!(%err, "TLS files changed but do not load: keeping the previous ones");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_the_marker_then_go_micros_rule() {
        let auto = TlsMode::Auto;
        assert!(auto.dials_tls("10.0.0.1:8080", Some("true")));
        assert!(!auto.dials_tls("10.0.0.1:443", Some("false")));
        assert!(auto.dials_tls("10.0.0.1:443", None));
        assert!(auto.dials_tls("https://api.example.com", None));
        assert!(!auto.dials_tls("10.0.0.1:8080", None));
        assert!(!auto.dials_tls("[::1]:8080", None));
        // go-micro: no port means TLS on 443.
        assert!(auto.dials_tls("api.example.com", None));
        assert_eq!(
            dial_address("https://api.example.com"),
            "api.example.com:443"
        );
        assert_eq!(dial_address("https://10.0.0.1:8443"), "10.0.0.1:8443");
        assert_eq!(dial_address("[::1]:8080"), "[::1]:8080");
        assert!(TlsMode::Always.dials_tls("10.0.0.1:8080", Some("false")));
        assert!(!TlsMode::Never.dials_tls("10.0.0.1:443", Some("true")));
        assert_eq!("always".parse::<TlsMode>().unwrap(), TlsMode::Always);
        assert!("sometimes".parse::<TlsMode>().is_err());
        assert_eq!(
            "optional".parse::<ClientAuth>().unwrap(),
            ClientAuth::Optional
        );
        assert!("maybe".parse::<ClientAuth>().is_err());
    }

    /// A self-signed certificate for `name` and its key, written to `cert` and `key`; the DER.
    fn write_pair(name: &str, cert: &Path, key: &Path) -> Vec<u8> {
        let made = rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
        std::fs::write(key, made.signing_key.serialize_pem()).unwrap();
        std::fs::write(cert, made.cert.pem()).unwrap();
        made.cert.der().to_vec()
    }

    #[tokio::test]
    async fn changed_files_are_reloaded_and_bad_ones_keep_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let first = write_pair("one", &cert, &key);
        let tls = ServerTls {
            reload_interval: Some(Duration::from_millis(20)),
            ..ServerTls::new(&cert, &key)
        };
        let loaded = tls.load().unwrap();
        assert_eq!(loaded.certificate()[0].as_ref(), first);
        let settle = || tokio::time::sleep(Duration::from_millis(200));
        // A half-written certificate: logged, the previous one kept.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA").unwrap();
        settle().await;
        assert_eq!(loaded.certificate()[0].as_ref(), first);
        // A new pair: served from the next check on.
        let second = write_pair("two", &cert, &key);
        settle().await;
        assert_eq!(loaded.certificate()[0].as_ref(), second);
        // Dropped: its watch ends (nothing left to observe, but no panic either).
        drop(loaded);
        settle().await;
    }

    #[test]
    fn bad_files_are_typed_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = ServerTls::new(&missing, &missing).load().unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::Read {
                    what: "certificate",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let err = ServerTls::new(&garbage, &garbage).load().unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");

        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["other".into()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, ca.cert.pem()).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let err = ServerTls::new(&cert, &key).load().unwrap_err();
        assert!(matches!(err, TlsError::Invalid { .. }), "{err}");
        // A certificate where the key should be.
        let err = ServerTls::new(&cert, &cert).load().unwrap_err();
        assert!(err.to_string().contains("PRIVATE KEY"), "{err}");

        std::fs::write(&key, ca.signing_key.serialize_pem()).unwrap();
        let loaded = ServerTls::new(&cert, &key).load().unwrap();
        assert_eq!(loaded.certificate()[0].as_ref(), ca.cert.der().as_ref());
        assert_eq!(loaded.current().alpn_protocols, [b"h2".to_vec()]);

        let err = ClientTls::new(&garbage).load().unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::Pem {
                    what: "CA bundle",
                    ..
                }
            ),
            "{err}"
        );
        let err = ClientTls::new(&cert)
            .server_name("no spaces allowed")
            .load();
        assert!(matches!(err, Err(TlsError::ServerName(_))));
        assert!(ClientTls::new(&cert).name_for("[::1]").is_ok());
    }
}
