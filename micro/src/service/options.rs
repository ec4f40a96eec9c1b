//! What the service is and where it listens and registers: the go-micro options.

use std::{sync::Arc, time::Duration};

use micro_registry::Registry;

use super::{Service, ServiceError};

impl Service {
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
    pub fn descriptors(mut self, encoded: &[u8]) -> Result<Self, ServiceError> {
        self.server.add_descriptors(encoded)?;
        Ok(self)
    }
}
