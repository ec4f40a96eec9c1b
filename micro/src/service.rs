//! The `Service` builder and its lifecycle.

use std::{
    future::Future,
    sync::{Arc, OnceLock},
    time::Duration,
};

use micro_client::Client;
use micro_core::Wrapper;
use micro_registry::{Cache, Memory, Registry};
use micro_server::Server;

use crate::{BoxError, Flags, registry_from_flags};

/// A lifecycle hook, as go-micro's `BeforeStart`, `AfterStart`, `BeforeStop`, `AfterStop`.
type Hook = Box<dyn FnMut() -> Result<(), BoxError> + Send>;

/// Errors of a service's lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or environment variable has a bad value.
    #[error("invalid option: {0}")]
    Options(String),
    /// The server could not start.
    #[error(transparent)]
    Server(#[from] micro_server::Error),
    /// A lifecycle hook failed.
    #[error("{stage} hook failed: {source}")]
    Hook {
        /// Which hook.
        stage: &'static str,
        /// Its error.
        source: BoxError,
    },
    /// Waiting for a shutdown signal failed.
    #[error("signal: {0}")]
    Signal(#[from] std::io::Error),
    /// The metrics endpoint could not listen.
    #[error("cannot serve metrics on {address:?} ({setting}): {source}", setting = crate::observe::METRICS_SETTING)]
    Metrics {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// A tracing setting is wrong or an exporter could not be built.
    #[error("tracing: {0}")]
    Tracing(#[from] micro_wrappers::trace::ConfigError),
}

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
/// # async fn run() -> Result<(), micro::Error> {
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
    observe: crate::observe::Observe,
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
        }
    }

    /// Service name (`MICRO_SERVER_NAME`).
    ///
    /// ```
    /// let service = micro::Service::new().name("greeter1");
    /// assert_eq!(service.server_options().name, "greeter1");
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.server.options_mut().name = name.into();
        self
    }

    /// Service version (`MICRO_SERVER_VERSION`; `latest` when unset).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.server.options_mut().version = version.into();
        self
    }

    /// Adds node metadata (`MICRO_SERVER_METADATA`).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.server
            .options_mut()
            .metadata
            .insert(key.into(), value.into());
        self
    }

    /// Listen address, `host:port` (`MICRO_SERVER_ADDRESS`); `127.0.0.1:0` by default,
    /// `0.0.0.0:8080` to serve other hosts.
    ///
    /// ```
    /// let service = micro::Service::new().address("0.0.0.0:8080");
    /// assert_eq!(service.server_options().address, "0.0.0.0:8080");
    /// ```
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.server.options_mut().address = address.into();
        self
    }

    /// Address to register instead of the listen address (`MICRO_SERVER_ADVERTISE`).
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.server.options_mut().advertise = Some(address.into());
        self
    }

    /// The registry (`MICRO_REGISTRY`); the embedded memory registry by default.
    ///
    /// ```
    /// let service = micro::Service::new().registry(micro::registry::Etcd::new(["127.0.0.1:2379"]));
    /// ```
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registry = Arc::new(registry);
        self
    }

    /// TTL of the registration (`MICRO_REGISTER_TTL`, go-micro's default 60 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let service = micro::Service::new().register_ttl(Duration::from_secs(5));
    /// assert_eq!(service.server_options().register_ttl, Duration::from_secs(5));
    /// ```
    pub fn register_ttl(mut self, ttl: Duration) -> Self {
        self.server.options_mut().register_ttl = ttl;
        self
    }

    /// How often the registration is renewed (`MICRO_REGISTER_INTERVAL`, default 30 s).
    pub fn register_interval(mut self, interval: Duration) -> Self {
        self.server.options_mut().register_interval = interval;
        self
    }

    /// How long shutdown keeps accepting calls after deregistering, so that watching clients
    /// drop this node before it stops accepting (`MICRO_SERVER_DEREGISTER_DELAY`, default
    /// 1 s; zero stops accepting right after deregistering).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let service = micro::Service::new().deregister_delay(Duration::from_secs(3));
    /// assert_eq!(service.server_options().deregister_delay, Duration::from_secs(3));
    /// ```
    pub fn deregister_delay(mut self, delay: Duration) -> Self {
        self.server.options_mut().deregister_delay = delay;
        self
    }

    /// How long shutdown waits for in-flight calls once it stops accepting
    /// (`MICRO_SERVER_GRACE_PERIOD`, default 5 s).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.server.options_mut().grace_period = grace;
        self
    }

    /// Client options (retries, timeouts, selector).
    pub fn client_options(mut self, options: micro_client::Options) -> Self {
        self.configure_client("client_options", |builder| builder.options(options));
        self
    }

    /// Describes hosted services with an encoded `FileDescriptorSet`, so their endpoints are
    /// listed in the registry and served by reflection.
    pub fn descriptors(mut self, encoded: &[u8]) -> Result<Self, Error> {
        self.server.add_descriptors(encoded)?;
        Ok(self)
    }

    /// Serves Prometheus metrics at `http://<address>/metrics`, with `/health` and `/ready`
    /// (`MICRO_METRICS_ADDRESS`, `--metrics_address`); `off` disables it. The call series
    /// wrappers go outside every other wrapper. One endpoint per process.
    ///
    /// ```
    /// let service = micro::Service::new().metrics_address("127.0.0.1:9000");
    /// ```
    pub fn metrics_address(mut self, address: impl Into<String>) -> Self {
        self.observe.metrics_address = Some(address.into());
        self
    }

    /// The metrics' options (namespace, subsystems, constant labels, buckets, OpenCensus
    /// views); go-micro's defaults otherwise. Metrics are served once an address is set.
    pub fn metrics(mut self, config: micro_wrappers::metrics::MetricsConfig) -> Self {
        self.observe.metrics_config = Some(config);
        self
    }

    /// Traces every handled call and every call made, with these settings (each one left unset
    /// is read from its `OTEL_*` variable). Without this, tracing is on when
    /// `OTEL_TRACES_EXPORTER` names an exporter. The trace wrappers go outside every other
    /// wrapper; the last spans are flushed on a graceful stop.
    ///
    /// ```
    /// use micro::trace::{Exporter, TraceConfig};
    /// let service = micro::Service::new()
    ///     .tracing(TraceConfig::default().exporters([Exporter::Otlp, Exporter::Zipkin]));
    /// ```
    pub fn tracing(mut self, config: micro_wrappers::trace::TraceConfig) -> Self {
        self.observe.trace_config = Some(config);
        self
    }

    /// The metrics registry, once decided (after [`Service::client`] or [`Service::start`]).
    /// To count your own breakers and limiters, built before that, use [`Service::health`].
    pub fn metrics_registry(&self) -> Option<&micro_wrappers::metrics::Metrics> {
        self.observe.metrics()
    }

    /// The framework health series, usable at any time: breakers and limiters attached to it
    /// are counted once metrics are on (from [`Service::client`] or [`Service::start`]), and
    /// cost one check per event when they stay off. The flags' breakers and limiters are
    /// attached already.
    ///
    /// ```
    /// use micro::wrappers::breaker::{BreakerLayer, Settings};
    /// use micro::wrappers::ratelimit::RateLimitLayer;
    /// let service = micro::Service::new().metrics_address("127.0.0.1:0");
    /// let health = service.health();
    /// let breaker = health.observe_breaker(BreakerLayer::gobreaker(Settings::new("greeter1")));
    /// let limit = health.observe_limiter("mine", RateLimitLayer::new(100.0, 10).unwrap());
    /// let service = service.wrap_client(breaker).wrap_handler(limit);
    /// ```
    pub fn health(&self) -> micro_wrappers::metrics::HealthLink {
        self.observe.health().clone()
    }

    /// The tracer, once decided (after [`Service::client`] or [`Service::start`]).
    pub fn tracer(&self) -> Option<&micro_wrappers::trace::Tracing> {
        self.observe.tracing()
    }

    /// Wraps every handler call; the first wrapper added is the outermost.
    pub fn wrap_handler(mut self, wrapper: impl Wrapper) -> Self {
        self.server.wrap(wrapper);
        self
    }

    /// Wraps every client call, retries included; the first wrapper added is the outermost.
    /// Add client wrappers before the first [`Service::client`] call.
    pub fn wrap_client(mut self, wrapper: impl Wrapper) -> Self {
        self.configure_client("wrap_client", |builder| builder.wrap_client(wrapper));
        self
    }

    /// Wraps each attempt of a client call on one node.
    pub fn wrap_call(mut self, wrapper: impl Wrapper) -> Self {
        self.configure_client("wrap_call", |builder| builder.wrap_call(wrapper));
        self
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

    /// Runs `hook` before the server starts.
    pub fn before_start(
        mut self,
        hook: impl FnMut() -> Result<(), BoxError> + Send + 'static,
    ) -> Self {
        self.before_start.push(Box::new(hook));
        self
    }

    /// Runs `hook` once the server is serving and registered. If it fails, the server is
    /// stopped as by [`Running::stop`] (NOT_SERVING, deregistered, drained; the stop hooks
    /// do not run) and [`Service::start`] returns the error.
    pub fn after_start(
        mut self,
        hook: impl FnMut() -> Result<(), BoxError> + Send + 'static,
    ) -> Self {
        self.after_start.push(Box::new(hook));
        self
    }

    /// Runs `hook` when shutdown begins, before deregistering.
    pub fn before_stop(
        mut self,
        hook: impl FnMut() -> Result<(), BoxError> + Send + 'static,
    ) -> Self {
        self.before_stop.push(Box::new(hook));
        self
    }

    /// Runs `hook` after in-flight calls drained.
    pub fn after_stop(
        mut self,
        hook: impl FnMut() -> Result<(), BoxError> + Send + 'static,
    ) -> Self {
        self.after_stop.push(Box::new(hook));
        self
    }

    /// Reads go-micro's flags and `MICRO_*` environment variables; exits with a clear message
    /// on a bad value, as go-micro's `Init` does. See [`Service::try_init_from`].
    pub fn init(self) -> Self {
        match self.try_init_from(std::env::args_os()) {
            Ok(service) => service,
            Err(err) => {
                eprintln!("{err}");
                std::process::exit(2);
            }
        }
    }

    /// Applies flags from `args` (the first is the program name) and the environment.
    pub fn try_init_from<I, T>(self, args: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let flags = Flags::try_parse_args(args).map_err(|e| Error::Options(e.to_string()))?;
        self.apply(flags)
    }

    /// Applies parsed flags.
    pub fn apply(mut self, flags: Flags) -> Result<Self, Error> {
        self.apply_resilience(&flags)?;
        let options = self.server.options_mut();
        if let Some(v) = flags.server_name {
            options.name = v
        }
        if let Some(v) = flags.server_id {
            options.id = v
        }
        if let Some(v) = flags.server_version {
            options.version = v
        }
        if let Some(v) = flags.server_address {
            options.address = v
        }
        if let Some(v) = flags.server_advertise {
            options.advertise = Some(v)
        }
        if let Some(v) = flags.register_ttl {
            options.register_ttl = Duration::from_secs(v)
        }
        if let Some(v) = flags.register_interval {
            options.register_interval = Duration::from_secs(v)
        }
        if let Some(v) = flags.server_grace_period {
            options.grace_period = v
        }
        if let Some(v) = flags.server_deregister_delay {
            options.deregister_delay = v
        }
        if let Some(v) = flags.metrics_address.clone() {
            self.observe.metrics_address = Some(v)
        }
        for pair in flags.server_metadata.iter().filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                Error::Options(format!("server_metadata {pair:?}: want key=value"))
            })?;
            options.metadata.insert(key.to_owned(), value.to_owned());
        }
        if let Some(kind) = flags.registry.as_deref() {
            self.registry = registry_from_flags(kind, &flags.registry_address)?;
        }
        let strategy = flags.selector.as_deref().map(str::parse).transpose();
        let strategy = strategy.map_err(Error::Options)?;
        self.configure_client("flags", |mut builder| {
            let client = builder.options_mut();
            if let Some(v) = flags.client_request_timeout {
                client.request_timeout = v
            }
            if let Some(v) = flags.client_retries {
                client.retries = v
            }
            if let Some(v) = strategy {
                client.strategy = v
            }
            builder
        });
        Ok(self)
    }

    /// Breakers and rate limits from the flags (micro-rs additions): a server limit as the
    /// innermost handler wrapper, a client limit per called service and a breaker as client
    /// wrappers (or, in node scope, a call wrapper on each node's stack). Each feeds the
    /// health series when metrics are on (limiters `server` and `client`).
    fn apply_resilience(&mut self, flags: &Flags) -> Result<(), Error> {
        use micro_wrappers::breaker::{BreakerLayer, Scope, Settings, adaptive, hystrix};
        use micro_wrappers::ratelimit::{Key, Mode, RateLimitLayer};

        let health = self.observe.health().clone();
        let limit = |flag: &str, rate: f64, burst: Option<i64>, wait: Option<bool>| {
            // A fractional rate still holds at least one call.
            #[allow(clippy::cast_possible_truncation)]
            let burst = burst.unwrap_or((rate.ceil() as i64).max(1));
            let mode = if wait == Some(true) {
                Mode::Wait
            } else {
                Mode::Reject
            };
            RateLimitLayer::new(rate, burst)
                .map(|layer| layer.mode(mode))
                .map_err(|e| Error::Options(format!("{flag} {rate}: {e}")))
        };
        if let Some(rate) = flags.server_ratelimit.filter(|r| *r > 0.0) {
            let layer = limit(
                "server_ratelimit",
                rate,
                flags.server_ratelimit_burst,
                flags.server_ratelimit_wait,
            )?;
            self.server
                .wrap(health.observe_limiter("server", layer.id("go.micro.server")));
        }
        if let Some(rate) = flags.client_ratelimit.filter(|r| *r > 0.0) {
            let layer = limit(
                "client_ratelimit",
                rate,
                flags.client_ratelimit_burst,
                flags.client_ratelimit_wait,
            )?;
            let layer = layer.key(Key::Service).id("go.micro.client");
            let layer = health.observe_limiter("client", layer);
            self.configure_client("flags", |builder| builder.wrap_client(layer));
        }
        let layer = match flags.client_breaker {
            None | Some(crate::BreakerFlag::Off) => return Ok(()),
            Some(crate::BreakerFlag::Gobreaker) => BreakerLayer::gobreaker(Settings::new("client")),
            Some(crate::BreakerFlag::Hystrix) => {
                BreakerLayer::hystrix_with_deadline(hystrix::HystrixConfig::default())
            }
            Some(crate::BreakerFlag::Adaptive) => {
                BreakerLayer::adaptive(adaptive::AdaptiveSettings::new("client"))
                    .map_err(|e| Error::Options(format!("client_breaker adaptive: {e}")))?
            }
        };
        let scope = match flags.client_breaker_scope {
            None | Some(crate::BreakerScopeFlag::Service) => Scope::Service,
            Some(crate::BreakerScopeFlag::Endpoint) => Scope::Endpoint,
            Some(crate::BreakerScopeFlag::Node) => Scope::Node,
        };
        let layer = health.observe_breaker(layer.scope(scope));
        self.configure_client("flags", |builder| match scope {
            Scope::Node => builder.wrap_call(layer),
            _ => builder.wrap_client(layer),
        });
        Ok(())
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

    /// Starts serving and registers; returns a handle to stop it. [`Service::run`] is this
    /// plus waiting for a signal. A failing after-start hook stops the server again before
    /// its error is returned; dropping the [`Running`] without stopping it deregisters.
    pub async fn start(mut self) -> Result<Running, Error> {
        let name = self.server.options().name.clone();
        self.observe.decide(&name)?;
        let listener = self.observe.bind().await?;
        self.observe.wrap_server(&mut self.server);
        run_hooks("before start", &mut self.before_start)?;
        let readiness = self.server.readiness();
        let running = self.server.start(self.registry.clone()).await?;
        let observe = self.observe.start(listener, readiness);
        if let Err(err) = run_hooks("after start", &mut self.after_start) {
            tracing::error!(%err, "stopping the server");
            running.stop().await;
            observe.stop().await;
            return Err(err);
        }
        Ok(Running {
            server: running,
            observe,
            before_stop: self.before_stop,
            after_stop: self.after_stop,
        })
    }

    /// Runs until SIGTERM, SIGINT or SIGQUIT, then stops gracefully.
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(shutdown_signal()?).await
    }

    /// Runs until `shutdown` completes, then stops gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let running = self.start().await?;
        shutdown.await;
        running.stop().await
    }
}

/// The client: being configured until [`Service::client`] first builds it, then fixed.
enum ClientState {
    Configuring(Box<micro_client::Builder>),
    Built(Client),
}

/// A started service. Dropped without [`Running::stop`], its server deregisters and stops
/// in the background (the stop hooks do not run).
pub struct Running {
    server: micro_server::Running,
    observe: crate::observe::Running,
    before_stop: Vec<Hook>,
    after_stop: Vec<Hook>,
}

impl Running {
    /// The address the server listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    /// This node's id and registered address.
    pub fn node(&self) -> &micro_core::NodeInfo {
        self.server.node()
    }

    /// The address the metrics endpoint listens on, if it is on.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.observe.metrics_addr()
    }

    /// The metrics registry, if metrics are on.
    pub fn metrics(&self) -> Option<&micro_wrappers::metrics::Metrics> {
        self.observe.metrics()
    }

    /// The tracer, if tracing is on.
    pub fn tracer(&self) -> Option<&micro_wrappers::trace::Tracing> {
        self.observe.tracing()
    }

    /// Whether the node is ready (registered within the TTL and serving): `/ready`.
    pub fn readiness(&self) -> &micro_server::Readiness {
        self.server.readiness()
    }

    /// Stops in go-micro's order: before-stop hooks, NOT_SERVING and deregister, the
    /// deregister delay (still accepting), stop accepting and drain, after-stop hooks; the
    /// metrics endpoint stops and the last spans are sent after the drain.
    pub async fn stop(mut self) -> Result<(), Error> {
        let before = run_hooks("before stop", &mut self.before_stop);
        self.server.stop().await;
        self.observe.stop().await;
        before?;
        run_hooks("after stop", &mut self.after_stop)
    }
}

fn run_hooks(stage: &'static str, hooks: &mut [Hook]) -> Result<(), Error> {
    hooks
        .iter_mut()
        .try_for_each(|hook| hook().map_err(|source| Error::Hook { stage, source }))
}

/// Completes on SIGTERM, SIGINT or SIGQUIT.
fn shutdown_signal() -> Result<impl Future<Output = ()>, std::io::Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            _ = quit.recv() => tracing::info!("SIGQUIT: stopping"),
        }
    })
}
