//! The micro-rs server.
//!
//! Hosts any tonic-generated service, lists its endpoints in the registry and keeps the node
//! registered (TTL lease, renewed every register interval), runs every request through the
//! handler wrappers, accepts go-micro's path form (`/<any>.Greeter/Hello`), serves gRPC health
//! and reflection. On shutdown it reports NOT_SERVING and deregisters, keeps accepting for
//! the deregister delay (so watching clients drop the node first), then stops accepting and
//! drains in-flight calls within the grace period. A started server dropped without
//! [`RunningServer::stop`] deregisters too.

mod address;
mod endpoints;
mod entry;
mod health;
mod hosted;
mod readiness;
mod registrar;
mod tls;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use micro_core::{NodeInfo, Wrapper};
use micro_registry::{Endpoint, Metadata, Node, Registry, Service as Registration};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tower::util::BoxCloneSyncService;

pub use hosted::Hostable;
pub use readiness::Readiness;

use crate::{
    endpoints::Descriptors,
    entry::{Entry, PathMap},
    health::Health,
    hosted::Hosted,
};

/// A handler stack as handler wrappers see it, type-erased.
pub type HandlerService = micro_core::BoxService;

/// Server errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be parsed or bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// A descriptor set given to the server did not decode.
    #[error("invalid file descriptor set: {0}")]
    Descriptor(#[from] prost::DecodeError),
    /// Reflection could not be built from the descriptors.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The TLS files did not load.
    #[error(transparent)]
    Tls(#[from] micro_core::tls::TlsError),
}

/// Server options, as go-micro's server options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Service name to register, e.g. `greeter2`.
    pub name: String,
    /// Service version (`latest` when empty).
    pub version: String,
    /// Node id; generated as `<name>-<uuid>` when empty.
    pub id: String,
    /// Address to listen on, `host:port`.
    pub address: String,
    /// Address to register instead of the bound one (e.g. behind NAT).
    pub advertise: Option<String>,
    /// Node metadata added to go-micro's own keys.
    pub metadata: Metadata,
    /// TTL of the registration (go-micro's default 60 s).
    pub register_ttl: Duration,
    /// How often the registration is renewed (go-micro's default 30 s).
    pub register_interval: Duration,
    /// How long shutdown keeps accepting calls after deregistering, so that watching clients
    /// drop the node before it stops accepting (default 1 s).
    pub deregister_delay: Duration,
    /// How long shutdown waits for in-flight calls once it stops accepting.
    pub grace_period: Duration,
    /// Serves TLS (and with a client CA, mutual TLS) when set; the node's metadata then says
    /// `secure: "true"`.
    pub tls: Option<micro_core::tls::ServerTls>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: "go.micro.server".into(),
            version: String::new(),
            id: String::new(),
            address: "127.0.0.1:0".into(),
            advertise: None,
            metadata: Metadata::new(),
            register_ttl: Duration::from_secs(60),
            register_interval: Duration::from_secs(30),
            deregister_delay: Duration::from_secs(1),
            grace_period: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// A server being assembled: services, descriptors and handler wrappers.
pub struct Server {
    options: Options,
    hosted: Hosted,
    descriptors: Descriptors,
    encoded_descriptors: Vec<Vec<u8>>,
    layers: Vec<Arc<dyn Wrapper>>,
    readiness: Readiness,
    /// Endpoints listed after the hosted services' (go-micro's subscribers).
    extra_endpoints: Vec<Endpoint>,
}

impl Server {
    /// A server with these options and no services yet.
    pub fn new(options: Options) -> Self {
        Server {
            options,
            hosted: Hosted::default(),
            descriptors: Descriptors::default(),
            encoded_descriptors: Vec::new(),
            layers: Vec::new(),
            readiness: Readiness::default(),
            extra_endpoints: Vec::new(),
        }
    }

    /// Lists `endpoint` in the registry after the hosted services' endpoints (go-micro lists
    /// its subscribers there: `{"topic":..,"subscriber":"true"}`).
    pub fn add_endpoint(&mut self, endpoint: Endpoint) -> &mut Self {
        self.extra_endpoints.push(endpoint);
        self
    }

    /// The shape of a message (`greeter.Response`) as go-micro lists it, if a descriptor
    /// added with [`Server::add_descriptors`] describes it.
    pub fn message_value(&self, full_name: &str) -> Option<micro_registry::Value> {
        self.descriptors.message_value(full_name)
    }

    /// The server's readiness (registered within the TTL and serving), known before it
    /// starts: not ready until then.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Mutable options, until the server starts.
    pub fn options_mut(&mut self) -> &mut Options {
        &mut self.options
    }

    /// Hosts a tonic-generated service (`GreeterServer::new(handler)`).
    pub fn add_service(&mut self, service: impl Hostable) -> &mut Self {
        self.hosted.add(service);
        self
    }

    /// Adds an encoded `FileDescriptorSet` describing hosted services: their endpoints are
    /// listed in the registry and served by reflection.
    pub fn add_descriptors(&mut self, encoded: &[u8]) -> Result<&mut Self, Error> {
        self.descriptors.add_encoded(encoded)?;
        self.encoded_descriptors.push(encoded.to_vec());
        Ok(self)
    }

    /// Wraps every handler call in a tower layer. The first layer added is the outermost, as
    /// in go-micro. Each request carries its [`micro_core::CallInfo`] in its extensions.
    pub fn wrap(&mut self, wrapper: impl Wrapper) -> &mut Self {
        self.layers.push(Arc::new(wrapper));
        self
    }

    /// Wraps every handler call in a tower layer outside every layer added so far (e.g. the
    /// metrics and trace wrappers, which must see what the other wrappers refuse).
    pub fn wrap_outermost(&mut self, wrapper: impl Wrapper) -> &mut Self {
        self.layers.insert(0, Arc::new(wrapper));
        self
    }

    /// Binds, registers and starts serving. Registration failure is logged and retried every
    /// register interval (as go-micro does); health reports SERVING once registered.
    pub async fn start(self, registry: Arc<dyn Registry>) -> Result<RunningServer, Error> {
        let Server {
            options,
            hosted,
            descriptors,
            encoded_descriptors,
            layers,
            readiness,
            extra_endpoints,
        } = self;
        // TLS files first: a bad file is a start-up error, before anything listens.
        let tls = options.tls.as_ref().map(|tls| tls.load()).transpose()?;
        let listener = TcpListener::bind(&options.address)
            .await
            .map_err(|source| Error::Bind {
                address: options.address.clone(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            address: options.address.clone(),
            source,
        })?;
        let address = address::advertised(local_addr, options.advertise.as_deref()).await;
        let names = hosted.names();
        let mut registration =
            registration(&options, &names, &descriptors, &address, registry.name());
        registration.endpoints.extend(extra_endpoints);
        let node = NodeInfo {
            id: registration.nodes[0].id.as_str().into(),
            address: address.as_str().into(),
        };

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = Health::new(reporter, names.iter().map(|n| (*n).to_owned()).collect());
        health.not_serving().await;

        let mut builtin = Hosted::default();
        builtin.add(health_service);
        if !encoded_descriptors.is_empty() {
            let reflection = || {
                encoded_descriptors.iter().fold(
                    tonic_reflection::server::Builder::configure(),
                    |builder, encoded| builder.register_encoded_file_descriptor_set(encoded),
                )
            };
            let v1 = reflection()
                .build_v1()
                .map_err(|e| Error::Reflection(e.to_string()))?;
            // v1alpha too: many tools (grpcio-reflection, Postman, grpcui, Evans, grpcurl
            // before 1.8.8) speak only v1alpha.
            let v1alpha = reflection()
                .build_v1alpha()
                .map_err(|e| Error::Reflection(e.to_string()))?;
            builtin.add(v1);
            builtin.add(v1alpha);
        }
        let mut paths = PathMap::default();
        names.iter().for_each(|name| paths.add_user(name));
        builtin
            .names()
            .iter()
            .for_each(|name| paths.add_builtin(name));

        // One path: with no wrappers the stack is the hosted services alone.
        let handlers = micro_core::StackPool::new(micro_core::stack(
            BoxCloneSyncService::new(hosted),
            &layers,
        ));
        let entry = Entry::new(
            handlers,
            builtin,
            paths,
            options.name.as_str().into(),
            node.clone(),
        );

        // Two signals: the registrar stops (and the node deregisters) first, the serving
        // stops after the deregister delay.
        let stop_serving = CancellationToken::new();
        let stop_registering = CancellationToken::new();
        let signal = stop_serving.clone();
        let serve = match tls {
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                tokio::spawn(async move {
                    tonic::transport::Server::builder()
                        .serve_with_incoming_shutdown(entry, incoming, signal.cancelled_owned())
                        .await
                })
            }
            Some(tls) => {
                let incoming = tls::incoming(listener, tls, stop_serving.clone());
                tokio::spawn(async move {
                    tonic::transport::Server::builder()
                        .serve_with_incoming_shutdown(entry, incoming, signal.cancelled_owned())
                        .await
                })
            }
        };

        readiness.set_serving(true);
        let registered = registrar::register_once(
            &*registry,
            &registration,
            options.register_ttl,
            &health,
            &readiness,
        )
        .await;
        let registrar = tokio::spawn(registrar::run(
            registry.clone(),
            registration.clone(),
            options.register_ttl,
            options.register_interval,
            health.clone(),
            readiness.clone(),
            stop_registering.clone(),
        ));
        tracing::info!(service = %options.name, node = %node.id, %address, registered, "server started");
        Ok(RunningServer {
            local_addr,
            node,
            registration,
            registry,
            health,
            readiness,
            deregister_delay: options.deregister_delay,
            grace_period: options.grace_period,
            stop_registering,
            stop_serving,
            serve,
            registrar: Some(registrar),
            stopped: false,
        })
    }
}

/// The registration of this node: one service with one node, as go-micro writes it.
fn registration(
    options: &Options,
    names: &[&'static str],
    descriptors: &Descriptors,
    address: &str,
    registry: &str,
) -> Registration {
    let id = if options.id.is_empty() {
        format!("{}-{}", options.name, uuid::Uuid::new_v4())
    } else {
        options.id.clone()
    };
    let mut metadata = options.metadata.clone();
    // Clients dial a node with TLS when it says so (go-micro's HTTP broker's key).
    if options.tls.is_some() {
        metadata.insert("secure".into(), "true".into());
    }
    for (key, value) in [
        ("broker", "http"),
        ("protocol", "grpc"),
        ("registry", registry),
        ("server", "grpc"),
        ("transport", "grpc"),
    ] {
        metadata.entry(key.into()).or_insert_with(|| value.into());
    }
    let endpoints = names
        .iter()
        .flat_map(|name| {
            descriptors.endpoints(name).unwrap_or_else(|| {
                tracing::debug!(service = name, "no descriptor: endpoints not listed");
                Vec::new()
            })
        })
        .collect();
    let version = if options.version.is_empty() {
        micro_registry::DEFAULT_VERSION.to_owned()
    } else {
        options.version.clone()
    };
    Registration {
        name: options.name.clone(),
        version,
        metadata: Metadata::new(),
        endpoints,
        nodes: vec![Node {
            id,
            address: address.to_owned(),
            metadata,
        }],
    }
}

/// A started server. Stop it with [`RunningServer::stop`]; dropped without stopping, it
/// deregisters and stops serving in the background (if a tokio runtime is still there;
/// otherwise the registration expires with its TTL).
pub struct RunningServer {
    local_addr: SocketAddr,
    node: NodeInfo,
    registration: Registration,
    registry: Arc<dyn Registry>,
    health: Health,
    readiness: Readiness,
    deregister_delay: Duration,
    grace_period: Duration,
    stop_registering: CancellationToken,
    stop_serving: CancellationToken,
    serve: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Taken by `stop` or `Drop`, which wait for it to end before deregistering.
    registrar: Option<JoinHandle<()>>,
    /// Set once `stop` completed: nothing left for `Drop` to do.
    stopped: bool,
}

/// The former name of [`RunningServer`].
#[deprecated(
    since = "0.1.0",
    note = "renamed `RunningServer` (`micro::Running` is a started service)"
)]
pub type Running = RunningServer;

impl RunningServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node (id and registered address).
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// What the server registers.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// Whether the node is ready (registered within the TTL and serving).
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Stops gracefully: stop re-registering, report NOT_SERVING and deregister, keep
    /// accepting calls for the deregister delay (watching clients drop the node meanwhile),
    /// then stop accepting and wait for in-flight calls up to the grace period.
    pub async fn stop(mut self) {
        self.readiness.set_serving(false);
        self.stop_registering.cancel();
        if let Some(registrar) = self.registrar.take() {
            let _ = registrar.await;
        }
        self.health.not_serving().await;
        if let Err(err) = self.registry.deregister(&self.registration).await {
            tracing::warn!(service = %self.registration.name, %err, "deregister failed");
        }
        if !self.deregister_delay.is_zero() {
            tracing::debug!(delay = ?self.deregister_delay, "deregistered; still accepting");
            tokio::time::sleep(self.deregister_delay).await;
        }
        self.stop_serving.cancel();
        match tokio::time::timeout(self.grace_period, &mut self.serve).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => tracing::warn!(%err, "server ended with an error"),
            Ok(Err(err)) => tracing::warn!(%err, "server task failed"),
            Err(_) => {
                tracing::warn!(grace = ?self.grace_period, "grace period over with calls in flight");
                self.serve.abort();
            }
        }
        self.stopped = true;
        tracing::info!(service = %self.registration.name, node = %self.node.id, "server stopped");
    }
}

impl Drop for RunningServer {
    /// Not stopped (dropped, or `stop` cancelled half way): stop re-registering, and in the
    /// background report NOT_SERVING, deregister and stop serving (no delay: nobody waits).
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.readiness.set_serving(false);
        self.stop_registering.cancel();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                service = %self.registration.name,
                node = %self.node.id,
                "server dropped outside a tokio runtime: not deregistered, its registration \
                 expires with its TTL"
            );
            self.stop_serving.cancel();
            return;
        };
        tracing::info!(service = %self.registration.name, node = %self.node.id, "server dropped without stop: deregistering");
        let registry = self.registry.clone();
        let registration = self.registration.clone();
        let health = self.health.clone();
        let stop_serving = self.stop_serving.clone();
        let registrar = self.registrar.take();
        runtime.spawn(async move {
            // The registrar may be renewing right now: let it end first, so it cannot
            // register the node again after the deregistration.
            if let Some(registrar) = registrar {
                let _ = registrar.await;
            }
            health.not_serving().await;
            if let Err(err) = registry.deregister(&registration).await {
                tracing::warn!(service = %registration.name, %err, "deregister failed");
            }
            stop_serving.cancel();
        });
    }
}
