//! micro-rs: go-micro's ergonomics for Rust microservices, on tokio and tonic.
//!
//! A [`Service`] hosts tonic-generated services, registers itself in a registry (embedded
//! memory by default, etcd for real deployments, wire-compatible with go-micro), and gives a
//! [`client`](Service::client) that finds other services by name. Handler and client
//! wrappers are tower layers.
//!
//! ```no_run
//! # use std::time::Duration;
//! # async fn run() -> Result<(), micro::ServiceError> {
//! let mut service = micro::Service::new()
//!     .name("greeter1")
//!     .registry(micro::registry::Etcd::new(["127.0.0.1:2379"]))
//!     .register_ttl(Duration::from_secs(5))
//!     .register_interval(Duration::from_secs(4))
//!     .init();
//! let greeter2 = service.client().channel("greeter2"); // for GreeterClient::new(..)
//! # let _ = greeter2;
//! service.run().await
//! # }
//! ```

mod flags;
mod observe;
mod service;

pub use flags::{
    BreakerFlag, BreakerScopeFlag, Flags, registry_from_flags, registry_from_flags_tls,
};
pub use micro_client::{CallOptions, Channel, Client};
pub use micro_core::{
    BoxError, BoxService, CallContext, CallInfo, Deadline, NodeInfo, Origin, Outcome, Wrapper,
};
pub use service::{ClientTlsFlags, RegistryTlsFlags, ServerTlsFlags, TlsFlags};
pub use service::{
    DEFAULT_MAX_IN_FLIGHT, Running, Service, ServiceError, Subscriber, default_registry,
};

/// The former name of [`ServiceError`], a service's lifecycle error (go-micro's error model is
/// [`errors::Error`]).
#[deprecated(
    since = "0.1.0",
    note = "renamed `ServiceError`; `micro::errors::Error` is go-micro's error model"
)]
pub type Error = ServiceError;

/// go-micro's error model (`{id, code, detail, status}`), as go-micro's `errors` package.
pub mod errors {
    pub use micro_core::{Error, grpc_to_http, http_to_grpc};
}

/// Events: brokers (embedded, NATS), go-micro's envelope, publishers and subscriber
/// dispatch (see [`Service::publisher`] and [`Service::subscribe`]).
pub mod broker {
    pub use micro_broker::*;
}

/// Service discovery: registries and the model.
pub mod registry {
    pub use micro_registry::*;
}

/// The client: options, selector strategies and filters.
pub mod client {
    pub use micro_client::*;
}

/// Breakers and rate limits (and the algorithms behind them) as wrappers.
pub mod wrappers {
    pub use micro_wrappers::*;
}

/// Tracing: client and server spans (recorded off the call path), propagation (W3C, B3, Jaeger)
/// and export (OTLP, Zipkin) (see [`Service::tracing`]).
pub mod trace {
    pub use micro_wrappers::trace::*;
}

/// Metrics: Prometheus series and the framework's health (see [`Service::metrics_address`]).
pub mod metrics {
    pub use micro_wrappers::metrics::*;
}

/// TLS settings: the server's certificate and client CA, the client's mode, CA, certificate
/// and server name ([`Service::server_tls`], [`Service::client_tls`]); etcd's is
/// [`registry::EtcdTls`].
pub mod tls {
    pub use micro_core::tls::*;
}

/// The server: options and handler types.
pub mod server {
    pub use micro_server::*;
}
