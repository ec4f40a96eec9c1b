//! go-micro's flags and `MICRO_*` environment variables, applied to a service.

use std::time::Duration;

use super::{Service, ServiceError};
use crate::Flags;

impl Service {
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
    pub fn try_init_from<I, T>(self, args: I) -> Result<Self, ServiceError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let flags =
            Flags::try_parse_args(args).map_err(|e| ServiceError::Options(e.to_string()))?;
        self.apply(flags)
    }

    /// Applies parsed flags.
    pub fn apply(mut self, flags: Flags) -> Result<Self, ServiceError> {
        self.apply_resilience(&flags)?;
        self.apply_tls(&flags.tls)?;
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
                ServiceError::Options(format!("server_metadata {pair:?}: want key=value"))
            })?;
            options.metadata.insert(key.to_owned(), value.to_owned());
        }
        if let Some(kind) = flags.broker.as_deref() {
            self.broker_from_flags(kind, &flags.broker_address)?;
        }
        if let Some(kind) = flags.registry.as_deref() {
            let tls = flags.tls.registry()?;
            self.registry = crate::registry_from_flags_tls(kind, &flags.registry_address, tls)?;
        }
        let strategy = flags.selector.as_deref().map(str::parse).transpose();
        let strategy = strategy.map_err(ServiceError::Options)?;
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
            if flags.client_ejection == Some(false) {
                client.ejection = None
            }
            if let Some(v) = flags.client_attempt_timeout {
                client.attempt_timeout = Some(v)
            }
            builder
        });
        Ok(self)
    }

    /// Breakers and rate limits from the flags (micro-rs additions): a server limit as the
    /// innermost handler wrapper, a client limit per called service and a breaker as client
    /// wrappers (or, in node scope, a call wrapper on each node's stack). Each feeds the
    /// health series when metrics are on (limiters `server` and `client`).
    fn apply_resilience(&mut self, flags: &Flags) -> Result<(), ServiceError> {
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
                .map_err(|e| ServiceError::Options(format!("{flag} {rate}: {e}")))
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
                    .map_err(|e| ServiceError::Options(format!("client_breaker adaptive: {e}")))?
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
}
