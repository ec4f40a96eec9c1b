//! A service's lifecycle errors.

use micro_core::BoxError;

/// Errors of a service's lifecycle.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
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
    /// The broker could not be connected or a subscription made.
    #[error("broker: {0}")]
    Broker(micro_broker::Error),
    /// A tracing setting is wrong or an exporter could not be built.
    #[error("tracing: {0}")]
    Tracing(#[from] micro_wrappers::trace::ConfigError),
}
