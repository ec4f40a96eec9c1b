//! go-micro's command-line flags and `MICRO_*` environment variables, same names.

use std::{sync::Arc, time::Duration};

use clap::Parser;
use micro_registry::{Etcd, Registry};

use crate::{ServiceError, default_registry};

/// The flags `Service::init` reads. A flag wins over its environment variable; either wins
/// over what the code set.
#[derive(Clone, Debug, Default, Parser)]
#[command(about = "A micro-rs service", disable_version_flag = true)]
pub struct Flags {
    /// Registry: memory (embedded, default) or etcd.
    #[arg(long, env = "MICRO_REGISTRY")]
    pub registry: Option<String>,
    /// Comma-separated registry addresses, host:port.
    #[arg(
        long = "registry_address",
        env = "MICRO_REGISTRY_ADDRESS",
        value_delimiter = ','
    )]
    pub registry_address: Vec<String>,
    /// Broker for events: memory (embedded, default) or nats.
    #[arg(long, env = "MICRO_BROKER")]
    pub broker: Option<String>,
    /// Comma-separated broker addresses, host:port (nats default 127.0.0.1:4222).
    #[arg(
        long = "broker_address",
        env = "MICRO_BROKER_ADDRESS",
        value_delimiter = ','
    )]
    pub broker_address: Vec<String>,
    /// Registration TTL, whole seconds.
    #[arg(long = "register_ttl", env = "MICRO_REGISTER_TTL")]
    pub register_ttl: Option<u64>,
    /// Re-registration interval, whole seconds.
    #[arg(long = "register_interval", env = "MICRO_REGISTER_INTERVAL")]
    pub register_interval: Option<u64>,
    /// Service name.
    #[arg(long = "server_name", env = "MICRO_SERVER_NAME")]
    pub server_name: Option<String>,
    /// Node id.
    #[arg(long = "server_id", env = "MICRO_SERVER_ID")]
    pub server_id: Option<String>,
    /// Service version.
    #[arg(long = "server_version", env = "MICRO_SERVER_VERSION")]
    pub server_version: Option<String>,
    /// Listen address, host:port.
    #[arg(long = "server_address", env = "MICRO_SERVER_ADDRESS")]
    pub server_address: Option<String>,
    /// Address to register instead of the listen address.
    #[arg(long = "server_advertise", env = "MICRO_SERVER_ADVERTISE")]
    pub server_advertise: Option<String>,
    /// Node metadata, key=value (repeat the flag, or comma-separate in the variable).
    #[arg(
        long = "server_metadata",
        env = "MICRO_SERVER_METADATA",
        value_delimiter = ','
    )]
    pub server_metadata: Vec<String>,
    /// Request timeout of client calls, a duration (`5s`, `1m`).
    #[arg(long = "client_request_timeout", env = "MICRO_CLIENT_REQUEST_TIMEOUT", value_parser = humantime::parse_duration)]
    pub client_request_timeout: Option<Duration>,
    /// Retries of client calls.
    #[arg(long = "client_retries", env = "MICRO_CLIENT_RETRIES")]
    pub client_retries: Option<u32>,
    /// Failure accrual: `on` (default) takes a node whose attempts fail at the transport out
    /// of rotation for a while; `off` never does (micro-rs addition).
    #[arg(long = "client_ejection", env = "MICRO_CLIENT_EJECTION", value_parser = parse_on_off)]
    pub client_ejection: Option<bool>,
    /// Per-attempt timeout of calls to idempotent endpoints, a duration (`300ms`); off by
    /// default (micro-rs addition).
    #[arg(long = "client_attempt_timeout", env = "MICRO_CLIENT_ATTEMPT_TIMEOUT", value_parser = humantime::parse_duration)]
    pub client_attempt_timeout: Option<Duration>,
    /// Accepted for go-micro compatibility; micro-rs multiplexes one HTTP/2 connection per node.
    #[arg(long = "client_pool_size", env = "MICRO_CLIENT_POOL_SIZE")]
    pub client_pool_size: Option<usize>,
    /// Accepted for go-micro compatibility (see client_pool_size).
    #[arg(long = "client_pool_ttl", env = "MICRO_CLIENT_POOL_TTL", value_parser = humantime::parse_duration)]
    pub client_pool_ttl: Option<Duration>,
    /// Selector strategy: random (default), roundrobin or p2c.
    #[arg(long, env = "MICRO_SELECTOR")]
    pub selector: Option<String>,
    /// Metrics endpoint (/metrics, /health, /ready), host:port, or `off` (micro-rs addition).
    #[arg(long = "metrics_address", env = "MICRO_METRICS_ADDRESS")]
    pub metrics_address: Option<String>,
    /// Shutdown grace period for in-flight calls, a duration (micro-rs addition).
    #[arg(long = "server_grace_period", env = "MICRO_SERVER_GRACE_PERIOD", value_parser = humantime::parse_duration)]
    pub server_grace_period: Option<Duration>,
    /// How long shutdown keeps accepting after deregistering, a duration (micro-rs addition).
    #[arg(long = "server_deregister_delay", env = "MICRO_SERVER_DEREGISTER_DELAY", value_parser = humantime::parse_duration)]
    pub server_deregister_delay: Option<Duration>,
    /// Client circuit breaker: off (default), gobreaker, hystrix, adaptive (micro-rs addition).
    #[arg(long = "client_breaker", env = "MICRO_CLIENT_BREAKER", value_enum)]
    pub client_breaker: Option<BreakerFlag>,
    /// What one client breaker covers: service (default), endpoint, node (micro-rs addition).
    #[arg(
        long = "client_breaker_scope",
        env = "MICRO_CLIENT_BREAKER_SCOPE",
        value_enum
    )]
    pub client_breaker_scope: Option<BreakerScopeFlag>,
    /// Calls per second for the whole server, 0 = off (default; micro-rs addition).
    #[arg(long = "server_ratelimit", env = "MICRO_SERVER_RATELIMIT", value_parser = parse_rate)]
    pub server_ratelimit: Option<f64>,
    /// Bucket capacity of the server limit (default: the rate).
    #[arg(long = "server_ratelimit_burst", env = "MICRO_SERVER_RATELIMIT_BURST", value_parser = parse_burst)]
    pub server_ratelimit_burst: Option<i64>,
    /// true: calls wait for a token (within their deadline); false: refused with 429 (default).
    #[arg(long = "server_ratelimit_wait", env = "MICRO_SERVER_RATELIMIT_WAIT", value_parser = parse_bool)]
    pub server_ratelimit_wait: Option<bool>,
    /// Calls per second per called service, 0 = off (default; micro-rs addition).
    #[arg(long = "client_ratelimit", env = "MICRO_CLIENT_RATELIMIT", value_parser = parse_rate)]
    pub client_ratelimit: Option<f64>,
    /// Bucket capacity of the client limit (default: the rate).
    #[arg(long = "client_ratelimit_burst", env = "MICRO_CLIENT_RATELIMIT_BURST", value_parser = parse_burst)]
    pub client_ratelimit_burst: Option<i64>,
    /// true: calls wait for a token (within their deadline); false: refused with 429 (default).
    #[arg(long = "client_ratelimit_wait", env = "MICRO_CLIENT_RATELIMIT_WAIT", value_parser = parse_bool)]
    pub client_ratelimit_wait: Option<bool>,
    /// TLS for the server, the client and etcd (micro-rs additions).
    #[command(flatten)]
    pub tls: crate::TlsFlags,
}

/// `--client_breaker` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BreakerFlag {
    /// No breaker.
    Off,
    /// sony/gobreaker's defaults: open after more than 5 consecutive failures, for 60 s.
    Gobreaker,
    /// Hystrix's defaults (10 s window, 20 requests, 50 %, 5 s), the call's own deadline
    /// instead of a 1 s timeout, no concurrency cap.
    Hystrix,
    /// The SRE book's adaptive throttling (go-zero's defaults).
    Adaptive,
}

/// `--client_breaker_scope` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BreakerScopeFlag {
    /// One breaker per called service.
    Service,
    /// One per service and endpoint.
    Endpoint,
    /// One per node (an open node is skipped by the selector).
    Node,
}

fn parse_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!(
            "{value:?} is not a rate: want calls per second, a number >= 0"
        )),
    }
}

fn parse_burst(value: &str) -> Result<i64, String> {
    match value.parse::<i64>() {
        Ok(burst) if burst > 0 => Ok(burst),
        _ => Err(format!("{value:?} is not a burst: want a whole number > 0")),
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{value:?}: want true or false")),
    }
}

fn parse_on_off(value: &str) -> Result<bool, String> {
    match value {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("{value:?}: want on or off")),
    }
}

impl Flags {
    /// Parses these arguments (the first is the program name) and the environment.
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Flags::try_parse_from(args)
    }
}

/// The registry that go-micro's `--registry` / `MICRO_REGISTRY` (`kind`) and
/// `--registry_address` / `MICRO_REGISTRY_ADDRESS` (`addresses`) select, as
/// [`Service::init`](crate::Service::init) builds it: `memory` (or empty) is the embedded registry; `etcd` uses
/// `addresses` (`127.0.0.1:2379` when none) and `ETCD_USERNAME` / `ETCD_PASSWORD`.
///
/// ```
/// let registry = micro::registry_from_flags("etcd", &["10.0.0.1:2379".to_owned()]).unwrap();
/// assert_eq!(registry.name(), "etcd");
/// assert!(micro::registry_from_flags("consul", &[]).is_err());
/// ```
pub fn registry_from_flags(
    kind: &str,
    addresses: &[String],
) -> Result<Arc<dyn Registry>, ServiceError> {
    registry_from_flags_tls(kind, addresses, None)
}

/// [`registry_from_flags`] with TLS to etcd (`--registry_tls_*`, micro-rs additions).
pub fn registry_from_flags_tls(
    kind: &str,
    addresses: &[String],
    tls: Option<micro_registry::EtcdTls>,
) -> Result<Arc<dyn Registry>, ServiceError> {
    match kind {
        "memory" | "" => Ok(default_registry()),
        "etcd" => {
            let addresses = if addresses.is_empty() {
                vec!["127.0.0.1:2379".to_owned()]
            } else {
                addresses.to_vec()
            };
            let mut etcd = Etcd::new(addresses);
            if let (Ok(user), Ok(password)) = (
                std::env::var("ETCD_USERNAME"),
                std::env::var("ETCD_PASSWORD"),
            ) {
                etcd = etcd.with_auth(user, password);
            }
            if let Some(tls) = tls {
                etcd = etcd.with_tls(tls);
            }
            Ok(Arc::new(etcd))
        }
        other => Err(ServiceError::Options(format!(
            "registry {other:?} is not supported (memory, etcd)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_micro_flag_names_parse() {
        let flags = Flags::try_parse_args([
            "svc",
            "--registry",
            "etcd",
            "--registry_address",
            "10.0.0.1:2379,10.0.0.2:2379",
            "--register_ttl",
            "5",
            "--register_interval=4",
            "--server_metadata",
            "zone=a,rack=b",
            "--client_request_timeout",
            "1m",
            "--selector",
            "roundrobin",
            "--server_deregister_delay",
            "2500ms",
        ])
        .unwrap();
        assert_eq!(flags.registry.as_deref(), Some("etcd"));
        assert_eq!(flags.registry_address, ["10.0.0.1:2379", "10.0.0.2:2379"]);
        assert_eq!(flags.register_ttl, Some(5));
        assert_eq!(flags.register_interval, Some(4));
        assert_eq!(flags.server_metadata, ["zone=a", "rack=b"]);
        assert_eq!(flags.client_request_timeout, Some(Duration::from_secs(60)));
        assert_eq!(flags.selector.as_deref(), Some("roundrobin"));
        assert_eq!(
            flags.server_deregister_delay,
            Some(Duration::from_millis(2500))
        );
    }

    #[test]
    fn breaker_and_ratelimit_flags_parse() {
        for (value, want) in [
            ("off", BreakerFlag::Off),
            ("gobreaker", BreakerFlag::Gobreaker),
            ("hystrix", BreakerFlag::Hystrix),
            ("adaptive", BreakerFlag::Adaptive),
        ] {
            let flags = Flags::try_parse_args(["svc", "--client_breaker", value]).unwrap();
            assert_eq!(flags.client_breaker, Some(want));
        }
        for (value, want) in [
            ("service", BreakerScopeFlag::Service),
            ("endpoint", BreakerScopeFlag::Endpoint),
            ("node", BreakerScopeFlag::Node),
        ] {
            let flags = Flags::try_parse_args(["svc", "--client_breaker_scope", value]).unwrap();
            assert_eq!(flags.client_breaker_scope, Some(want));
        }
        let flags = Flags::try_parse_args([
            "svc",
            "--server_ratelimit",
            "250.5",
            "--server_ratelimit_burst",
            "40",
            "--server_ratelimit_wait",
            "true",
            "--client_ratelimit=0",
            "--client_ratelimit_burst=3",
            "--client_ratelimit_wait=false",
        ])
        .unwrap();
        assert_eq!(flags.server_ratelimit, Some(250.5));
        assert_eq!(flags.server_ratelimit_burst, Some(40));
        assert_eq!(flags.server_ratelimit_wait, Some(true));
        assert_eq!(flags.client_ratelimit, Some(0.0));
        assert_eq!(flags.client_ratelimit_burst, Some(3));
        assert_eq!(flags.client_ratelimit_wait, Some(false));
    }

    #[test]
    fn bad_breaker_and_ratelimit_values_name_the_flag() {
        for (flag, value) in [
            ("--client_breaker", "netflix"),
            ("--client_breaker_scope", "region"),
            ("--server_ratelimit", "-1"),
            ("--server_ratelimit", "fast"),
            ("--server_ratelimit_burst", "0"),
            ("--server_ratelimit_wait", "maybe"),
            ("--client_ratelimit", "NaN"),
            ("--client_ratelimit_burst", "1.5"),
            ("--client_ratelimit_wait", "yes please"),
            ("--client_ejection", "sometimes"),
            ("--client_attempt_timeout", "soon"),
        ] {
            let arg = format!("{flag}={value}");
            let err = Flags::try_parse_args(["svc", arg.as_str()]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let err = Flags::try_parse_args(["svc", "--register_ttl", "5s"]).unwrap_err();
        assert!(err.to_string().contains("register_ttl"), "{err}");
        let err = Flags::try_parse_args(["svc", "--client_request_timeout", "soon"]).unwrap_err();
        assert!(err.to_string().contains("client_request_timeout"), "{err}");
        let err = Flags::try_parse_args(["svc", "--server_deregister_delay", "later"]).unwrap_err();
        assert!(err.to_string().contains("server_deregister_delay"), "{err}");
    }
}
