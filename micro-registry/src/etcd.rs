//! etcd v3 registry, wire-compatible with go-micro's `registry/etcd`.
//!
//! Layout: one key per node, `/micro/registry/<service>/<node-id>` (every `/` inside the
//! service name and the node id replaced by `-`), whose value is the JSON of the service
//! holding only that node. Each node gets its own lease with the registration TTL.
//!
//! `register` is called again every register interval. Per node it then:
//! 1. renews the node's lease with one keep-alive;
//! 2. if the lease is gone (etcd lost it: restarted after expiry, wiped data dir), grants a new
//!    lease and puts the key again;
//! 3. otherwise skips the put when the stored value is unchanged (go-micro hashes the Node
//!    only; we hash the whole stored value, so changed endpoints or metadata are written too),
//!    and puts it when it changed.
//!
//! Registrations without TTL have no lease; for them a cheap count-only read checks that the
//! key still exists, so a wiped etcd gets them back as well.

use std::{
    collections::{HashMap, VecDeque, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions};
use futures::StreamExt;
use tokio::sync::Mutex;

use crate::{
    Action, Error, Event, Node, RegisterOptions, Registry, Service, WatchOptions, Watcher,
    group_by_version, validate, with_one_node,
};

/// The key prefix go-micro's etcd registry uses.
pub const PREFIX: &str = "/micro/registry/";

/// Default dial and request timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// go-micro's key for one node: `/micro/registry/<service>/<node-id>`, `/` replaced by `-`
/// in both parts.
///
/// ```
/// assert_eq!(
///     micro_registry::node_key("go.micro/greeter", "greeter/1"),
///     "/micro/registry/go.micro-greeter/greeter-1"
/// );
/// ```
pub fn node_key(service: &str, node_id: &str) -> String {
    format!("{}{}", service_prefix(service), encode(node_id))
}

/// The prefix of every key of one service: `/micro/registry/<service>/`.
pub fn service_prefix(service: &str) -> String {
    format!("{PREFIX}{}/", encode(service))
}

fn encode(part: &str) -> String {
    part.replace('/', "-")
}

/// The etcd v3 registry. Cheap to clone; clones share the connection and the lease state.
///
/// `new` does no I/O: the connection is made on first use, and made again after a transport
/// failure.
#[derive(Clone)]
pub struct Etcd {
    endpoints: Vec<String>,
    user: Option<(String, String)>,
    tls: Option<EtcdTls>,
    timeout: Duration,
    shared: Arc<Shared>,
}

struct Shared {
    client: Mutex<Option<Client>>,
    /// Per node key: what we last wrote. Held across a whole `register` / `deregister`, so
    /// registrations through one `Etcd` never interleave.
    nodes: Mutex<HashMap<String, NodeState>>,
}

#[derive(Clone, Copy, Debug)]
struct NodeState {
    /// 0: no lease (TTL 0).
    lease: i64,
    ttl: i64,
    hash: u64,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|(user, _)| user))
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// TLS settings for etcd: the CA bundle etcd's certificate chains to, and the client's
/// certificate and key (PEM files) when etcd requires one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM CA bundle (required: etcd clusters run on private CAs).
    pub ca: PathBuf,
    /// PEM client certificate chain and key, for `--client-cert-auth` clusters.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl EtcdTls {
    /// TLS trusting the CA bundle at `ca`.
    pub fn new(ca: impl Into<PathBuf>) -> Self {
        EtcdTls {
            ca: ca.into(),
            identity: None,
        }
    }

    /// Presents this client certificate and key.
    #[must_use]
    pub fn identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// Reads the files: an error names the file that does not read.
    pub fn options(&self) -> Result<etcd_client::TlsOptions, Error> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|err| {
                Error::Unavailable(format!("etcd TLS {what} {}: {err}", path.display()))
            })
        };
        let ca = etcd_client::Certificate::from_pem(read("CA bundle", &self.ca)?);
        let mut options = etcd_client::TlsOptions::new().ca_certificate(ca);
        if let Some((cert, key)) = &self.identity {
            let identity =
                etcd_client::Identity::from_pem(read("certificate", cert)?, read("key", key)?);
            options = options.identity(identity);
        }
        Ok(options)
    }
}

enum Renewal {
    Alive,
    Gone,
}

impl Etcd {
    /// A registry on the given etcd endpoints (`host:port`, or `http://host:port`). Connects
    /// lazily on first use.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Etcd {
            endpoints: endpoints
                .into_iter()
                .map(Into::into)
                .filter(|e: &String| !e.trim().is_empty())
                .collect(),
            user: None,
            tls: None,
            timeout: DEFAULT_TIMEOUT,
            shared: Arc::new(Shared {
                client: Mutex::new(None),
                nodes: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Authenticates as `user` (go-micro reads `ETCD_USERNAME` / `ETCD_PASSWORD`).
    #[must_use]
    pub fn with_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// TLS to etcd (`https://`), with a client certificate if the cluster asks for one
    /// (`--client-cert-auth`); beside a user and password or instead of them. The files are
    /// read at each connection, so rotated ones apply when the client reconnects.
    #[must_use]
    pub fn with_tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Dial timeout and timeout of each request (default 5 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn client(&self) -> Result<Client, Error> {
        let mut slot = self.shared.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        if self.endpoints.is_empty() {
            return Err(Error::Unavailable("no etcd endpoints configured".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_timeout(self.timeout)
            .with_keep_alive(Duration::from_secs(10), self.timeout);
        if let Some((user, password)) = &self.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.options()?);
        }
        let connect = Client::connect(&self.endpoints, Some(options));
        let client = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(self.unavailable("connect", &e)),
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "etcd {:?}: connect timed out after {:?}",
                    self.endpoints, self.timeout
                )));
            }
        };
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Maps an etcd error, and drops the connection after a transport failure so the next
    /// call connects again.
    async fn fail(&self, what: &str, error: etcd_client::Error) -> Error {
        if is_transport(&error) {
            *self.shared.client.lock().await = None;
        }
        self.unavailable(what, &error)
    }

    fn unavailable(&self, what: &str, error: &etcd_client::Error) -> Error {
        // TLS 1.3 servers refuse a client certificate after the client's handshake ended, so
        // the refusal reaches us as a closed connection: say what to check.
        let closed = matches!(error, etcd_client::Error::GRpcStatus(status)
            if status.code() == tonic::Code::Cancelled);
        let hint = match &self.tls {
            Some(tls) if closed && tls.identity.is_none() => {
                " (over TLS without a client certificate: does etcd run with --client-cert-auth?)"
            }
            Some(_) if closed => " (over TLS: does etcd trust this client certificate's CA?)",
            _ => "",
        };
        Error::Unavailable(format!("etcd {:?}: {what}: {error}{hint}", self.endpoints))
    }

    /// One keep-alive of `lease`.
    async fn renew(&self, client: &mut Client, lease: i64) -> Result<Renewal, Error> {
        match client.lease_keep_alive(lease).await {
            Ok((_keeper, _stream)) => Ok(Renewal::Alive),
            Err(e) if is_lease_not_found(&e) => Ok(Renewal::Gone),
            Err(e) => Err(self.fail("lease keep-alive", e).await),
        }
    }

    async fn grant(&self, client: &mut Client, ttl: i64) -> Result<i64, Error> {
        if ttl == 0 {
            return Ok(0);
        }
        match client.lease_grant(ttl, None).await {
            Ok(granted) => Ok(granted.id()),
            Err(e) => Err(self.fail("lease grant", e).await),
        }
    }

    async fn put(
        &self,
        client: &mut Client,
        key: &str,
        value: &str,
        lease: i64,
    ) -> Result<(), etcd_client::Error> {
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        client.put(key, value, options).await.map(|_| ())
    }

    /// Registers one node; returns the state to remember.
    async fn register_node(
        &self,
        client: &mut Client,
        key: &str,
        value: &str,
        state: Option<NodeState>,
        ttl: i64,
        hash: u64,
    ) -> Result<NodeState, Error> {
        // An existing lease with the same TTL is renewed and reused.
        let mut lease = None;
        if let Some(state) = state.filter(|s| s.ttl == ttl) {
            let alive = if state.lease != 0 {
                matches!(self.renew(client, state.lease).await?, Renewal::Alive)
            } else {
                // No lease to tell us whether etcd still has the key: ask.
                let options = GetOptions::new().with_count_only();
                match client.get(key, Some(options)).await {
                    Ok(found) => found.count() > 0,
                    Err(e) => return Err(self.fail("get", e).await),
                }
            };
            if alive {
                if state.hash == hash {
                    tracing::trace!(key, "registration unchanged, lease renewed");
                    return Ok(state);
                }
                lease = Some(state.lease);
            } else {
                tracing::info!(key, "registration lost by etcd, registering again");
            }
        }
        let lease = match lease {
            Some(lease) => lease,
            None => self.grant(client, ttl).await?,
        };
        match self.put(client, key, value, lease).await {
            Ok(()) => {}
            Err(e) if is_lease_not_found(&e) => {
                // The lease vanished between keep-alive and put.
                let lease = self.grant(client, ttl).await?;
                if let Err(e) = self.put(client, key, value, lease).await {
                    return Err(self.fail("put", e).await);
                }
                return Ok(NodeState { lease, ttl, hash });
            }
            Err(e) => return Err(self.fail("put", e).await),
        }
        tracing::debug!(key, lease, ttl, "registered");
        Ok(NodeState { lease, ttl, hash })
    }

    /// Reads every value under `prefix`, skipping (with a warning) what does not decode.
    async fn read(&self, prefix: &str) -> Result<Vec<Service>, Error> {
        let mut client = self.client().await?;
        let response = match client
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
        {
            Ok(response) => response,
            Err(e) => return Err(self.fail("get", e).await),
        };
        Ok(response.kvs().iter().filter_map(decode_kv).collect())
    }
}

/// A TTL in whole seconds, rounded up (etcd leases are whole seconds).
fn ttl_seconds(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn hash_of(value: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

fn is_lease_not_found(error: &etcd_client::Error) -> bool {
    match error {
        // `lease_keep_alive` reports a TTL <= 0 answer this way.
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("not found"),
        // Put with an unknown lease: `etcdserver: requested lease not found`.
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::NotFound && status.message().contains("lease not found")
        }
        _ => false,
    }
}

fn is_transport(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ),
        _ => false,
    }
}

/// Decodes one stored registration; `None` (with a warning) when it is not one.
fn decode_kv(kv: &KeyValue) -> Option<Service> {
    decode_value(&String::from_utf8_lossy(kv.key()), kv.value())
}

fn decode_value(key: &str, value: &[u8]) -> Option<Service> {
    match serde_json::from_slice::<Service>(value) {
        Ok(service) if service.nodes.is_empty() => {
            tracing::warn!(key, "skipping registry value without nodes");
            None
        }
        Ok(service) => Some(service),
        Err(error) => {
            tracing::warn!(key, %error, "skipping registry value that is not a service");
            None
        }
    }
}

/// Turns one etcd watch event into a registry event (`None`, logged, when it cannot).
fn convert(event: &etcd_client::Event) -> Option<Event> {
    let kv = event.kv()?;
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    match event.event_type() {
        EventType::Put => {
            let service = decode_value(&key, kv.value())?;
            let action = if kv.version() == 1 {
                Action::Create
            } else {
                Action::Update
            };
            Some(Event { action, service })
        }
        EventType::Delete => {
            let service = match event.prev_kv() {
                Some(prev) => decode_kv(prev)?,
                None => {
                    // No previous value (e.g. compacted): rebuild what the key tells.
                    let rest = key.strip_prefix(PREFIX)?;
                    let (name, id) = rest.split_once('/')?;
                    tracing::warn!(key, "delete event without previous value");
                    Service {
                        name: name.to_owned(),
                        nodes: vec![Node {
                            id: id.to_owned(),
                            ..Node::default()
                        }],
                        ..Service::default()
                    }
                }
            };
            Some(Event {
                action: Action::Delete,
                service,
            })
        }
    }
}

#[async_trait]
impl Registry for Etcd {
    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        validate(service)?;
        let ttl = ttl_seconds(options.ttl);
        let mut nodes = self.shared.nodes.lock().await;
        let mut client = self.client().await?;
        for node in &service.nodes {
            let key = node_key(&service.name, &node.id);
            let value = serde_json::to_string(&with_one_node(service, node))
                .map_err(|e| Error::Invalid(format!("encoding {key}: {e}")))?;
            let hash = hash_of(&value);
            let state = nodes.get(&key).copied();
            match self
                .register_node(&mut client, &key, &value, state, ttl, hash)
                .await
            {
                Ok(state) => {
                    nodes.insert(key, state);
                }
                // Keep what we knew: after an outage the next call renews the same lease
                // (etcd keeps leases across a restart) instead of rewriting the key.
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        let mut nodes = self.shared.nodes.lock().await;
        let mut client = self.client().await?;
        for node in &service.nodes {
            let key = node_key(&service.name, &node.id);
            nodes.remove(&key);
            if let Err(e) = client.delete(key.as_str(), None).await {
                return Err(self.fail("delete", e).await);
            }
            tracing::debug!(key, "deregistered");
        }
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        let services = group_by_version(self.read(&service_prefix(name)).await?);
        if services.is_empty() {
            return Err(Error::NotFound);
        }
        Ok(services)
    }

    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        Ok(group_by_version(self.read(PREFIX).await?))
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        let prefix = match &options.service {
            Some(name) => service_prefix(name),
            None => PREFIX.to_owned(),
        };
        let mut client = self.client().await?;
        let watch_options = etcd_client::WatchOptions::new()
            .with_prefix()
            .with_prev_key();
        let mut stream = match client.watch(prefix.as_str(), Some(watch_options)).await {
            Ok(stream) => stream,
            Err(e) => return Err(self.fail("watch", e).await),
        };
        // Wait for etcd to confirm the watch, so that changes after `watch` returns are seen.
        match tokio::time::timeout(self.timeout, stream.message()).await {
            Ok(Ok(Some(response))) if response.created() && !response.canceled() => {}
            Ok(Ok(Some(response))) => {
                return Err(Error::Unavailable(format!(
                    "etcd refused the watch of {prefix}: {}",
                    response.cancel_reason()
                )));
            }
            Ok(Ok(None)) => {
                return Err(Error::Unavailable(format!(
                    "etcd closed the watch of {prefix}"
                )));
            }
            Ok(Err(e)) => return Err(self.fail("watch", e).await),
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "etcd did not confirm the watch of {prefix} within {:?}",
                    self.timeout
                )));
            }
        }
        tracing::debug!(prefix, "watching");

        struct State {
            stream: etcd_client::WatchStream,
            pending: VecDeque<Event>,
        }
        let state = State {
            stream,
            pending: VecDeque::new(),
        };
        let watcher = futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            loop {
                if let Some(event) = state.pending.pop_front() {
                    return Some((Ok(event), Some(state)));
                }
                let lost = match state.stream.next().await {
                    Some(Ok(response)) if response.canceled() => {
                        format!("etcd canceled the watch: {}", response.cancel_reason())
                    }
                    Some(Ok(response)) => {
                        state
                            .pending
                            .extend(response.events().iter().filter_map(convert));
                        continue;
                    }
                    Some(Err(e)) => format!("etcd watch failed: {e}"),
                    None => "etcd closed the watch".to_owned(),
                };
                tracing::debug!(reason = %lost, "watch lost");
                return Some((Err(Error::WatchLost(lost)), None));
            }
        });
        Ok(Box::pin(watcher))
    }

    fn name(&self) -> &'static str {
        "etcd"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_replace_slashes() {
        assert_eq!(
            node_key("greeter", "greeter-6f1c"),
            "/micro/registry/greeter/greeter-6f1c"
        );
        assert_eq!(
            node_key("a/b/c", "x/y"),
            "/micro/registry/a-b-c/x-y",
            "every slash in both parts"
        );
        assert_eq!(service_prefix("go/x"), "/micro/registry/go-x/");
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::ZERO), 0);
        assert_eq!(ttl_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ttl_seconds(Duration::from_secs(5)), 5);
        assert_eq!(ttl_seconds(Duration::from_millis(5001)), 6);
    }

    #[test]
    fn undecodable_values_are_skipped() {
        assert!(decode_value("/micro/registry/x/y", b"garbage").is_none());
        assert!(decode_value("/micro/registry/x/y", br#"{"name":"x","nodes":null}"#).is_none());
        let ok = br#"{"name":"x","nodes":[{"id":"y","address":"1:2"}]}"#;
        assert_eq!(decode_value("k", ok).unwrap().nodes[0].id, "y");
    }

    #[test]
    fn lease_not_found_is_recognised() {
        let keep_alive = etcd_client::Error::LeaseKeepAliveError("lease not found".into());
        assert!(is_lease_not_found(&keep_alive));
        let put = etcd_client::Error::GRpcStatus(tonic_status_not_found());
        assert!(is_lease_not_found(&put));
        let other = etcd_client::Error::WatchError("x".into());
        assert!(!is_lease_not_found(&other));
    }

    fn tonic_status_not_found() -> tonic::Status {
        tonic::Status::new(
            tonic::Code::NotFound,
            "etcdserver: requested lease not found",
        )
    }

    #[tokio::test]
    async fn new_does_no_io_and_fails_cleanly_without_etcd() {
        // Port 1 on loopback: nothing listens there.
        let registry = Etcd::new(["127.0.0.1:1"]).with_timeout(Duration::from_millis(500));
        let error = registry.get_service("x").await.unwrap_err();
        assert!(matches!(error, Error::Unavailable(_)), "{error}");
        let error = Etcd::new(Vec::<String>::new())
            .list_services()
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Unavailable(_)), "{error}");
    }
}
