//! The `Service` builder and its lifecycle, one file per job: its options (`options`), the
//! observation settings (`observation`), wrappers (`wrap`), lifecycle hooks (`hooks`),
//! flags and environment (`init`), starting and stopping (`lifecycle`) and its errors
//! (`error`).

mod error;
mod events;
mod hooks;
mod init;
mod lifecycle;
mod observation;
mod options;
mod tls;
mod wrap;

use std::sync::{Arc, OnceLock};

use micro_client::Client;
use micro_registry::{Cache, Memory, Registry};
use micro_server::Server;

pub use error::ServiceError;
pub use events::{DEFAULT_MAX_IN_FLIGHT, Subscriber};
pub use lifecycle::Running;
pub use tls::{ClientTlsFlags, RegistryTlsFlags, ServerTlsFlags, TlsFlags};

use hooks::Hook;

/// The embedded registry every service of this process shares unless told otherwise, as
/// go-micro's default registry.
pub fn default_registry() -> Arc<dyn Registry> {
    static DEFAULT: OnceLock<Memory> = OnceLock::new();
    Arc::new(DEFAULT.get_or_init(Memory::new).clone())
}

/// A micro service: a server that registers itself and a client that finds others.
///
/// ```no_run
/// # use std::time::Duration;
/// # async fn run() -> Result<(), micro::ServiceError> {
/// micro::Service::new()
///     .name("greeter2")
///     .register_ttl(Duration::from_secs(5))
///     .register_interval(Duration::from_secs(4))
///     .init()
///     .run()
///     .await
/// # }
/// ```
#[must_use = "a service does nothing until it runs"]
pub struct Service {
    server: Server,
    client: ClientState,
    registry: Arc<dyn Registry>,
    before_start: Vec<Hook>,
    after_start: Vec<Hook>,
    before_stop: Vec<Hook>,
    after_stop: Vec<Hook>,
    observe: crate::observe::Observation,
    events: events::Events,
}

impl Default for Service {
    fn default() -> Self {
        Self::new()
    }
}

impl Service {
    /// A service with go-micro's defaults on the embedded registry, listening on
    /// `127.0.0.1:0`.
    pub fn new() -> Self {
        Service {
            server: Server::new(micro_server::Options::default()),
            client: ClientState::Configuring(Box::default()),
            registry: default_registry(),
            before_start: Vec::new(),
            after_start: Vec::new(),
            before_stop: Vec::new(),
            after_stop: Vec::new(),
            observe: Default::default(),
            events: Default::default(),
        }
    }
    /// Changes the client's configuration; once the client is built it is fixed.
    fn configure_client(
        &mut self,
        what: &str,
        change: impl FnOnce(micro_client::Builder) -> micro_client::Builder,
    ) {
        match &mut self.client {
            ClientState::Configuring(builder) => {
                **builder = change(std::mem::take(&mut **builder));
            }
            ClientState::Built(_) => tracing::warn!("{what} after client(): ignored"),
        }
    }

    /// The server options as configured so far.
    pub fn server_options(&self) -> &micro_server::Options {
        self.server.options()
    }

    /// The registry in use.
    pub fn registry_ref(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// The client: finds services through this service's registry (via a watch-fed cache),
    /// wrapped by the client wrappers added so far. Needs a tokio runtime.
    pub fn client(&mut self) -> Client {
        if let ClientState::Built(client) = &self.client {
            return client.clone();
        }
        let name = self.server.options().name.clone();
        if let Err(err) = self.observe.decide(&name) {
            // Reported again by `start`.
            tracing::error!(%err, "tracing is off");
        }
        let client = match &mut self.client {
            ClientState::Built(client) => return client.clone(),
            ClientState::Configuring(builder) => {
                let cache = Cache::new(self.registry.clone());
                self.observe.watch_cache(&cache);
                self.observe
                    .wrap_client(std::mem::take(&mut **builder))
                    .build(cache)
            }
        };
        self.client = ClientState::Built(client.clone());
        client
    }

    /// Hosts a tonic-generated service (`GreeterServer::new(handler)`).
    pub fn handle(mut self, service: impl micro_server::Hostable) -> Self {
        self.server.add_service(service);
        self
    }
}

/// The client: being configured until [`Service::client`] first builds it, then fixed.
enum ClientState {
    Configuring(Box<micro_client::Builder>),
    Built(Client),
}
