//! What can go wrong, and the exit code each failure gives.

/// Exit code of a failed call, an unhealthy node or an I/O failure.
pub(crate) const EXIT_FAILED: i32 = 1;
/// Exit code of bad input: usage, malformed JSON, a field of the wrong type, an unknown
/// endpoint, a .proto that does not compile.
pub(crate) const EXIT_INPUT: i32 = 2;
/// Exit code of an unknown service or node.
pub(crate) const EXIT_NOT_FOUND: i32 = 3;
/// Exit code of a registry that cannot be reached.
pub(crate) const EXIT_REGISTRY: i32 = 4;

/// A failure of a command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Bad arguments or input.
    #[error("{0}")]
    Input(String),
    /// The service is not in the registry.
    #[error("service {service:?} not found in the registry ({registry})")]
    UnknownService {
        /// The name asked for.
        service: String,
        /// Which registry was asked.
        registry: String,
    },
    /// `--node` names no node of the service.
    #[error("node {node:?} is not a node of {service} (nodes: {known})")]
    UnknownNode {
        /// The id asked for.
        node: String,
        /// The service.
        service: String,
        /// The ids it has.
        known: String,
    },
    /// The registry could not be reached.
    #[error("registry unavailable: {0}")]
    Registry(String),
    /// The call failed: the go-micro error, printed as its JSON.
    #[error("{0}")]
    Call(micro::errors::Error),
    /// The schema could not be had (no reflection, a reflection error).
    #[error("{0}")]
    Schema(String),
    /// Some node is not serving (its line already says why).
    #[error("not every node is serving")]
    Unhealthy,
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

impl CliError {
    /// The process exit code for this failure.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            CliError::Input(_) => EXIT_INPUT,
            CliError::UnknownService { .. } | CliError::UnknownNode { .. } => EXIT_NOT_FOUND,
            CliError::Registry(_) => EXIT_REGISTRY,
            CliError::Call(_) | CliError::Schema(_) | CliError::Unhealthy | CliError::Io(_) => {
                EXIT_FAILED
            }
        }
    }

    /// A call's gRPC status as go-micro's error.
    pub(crate) fn from_status(status: &tonic::Status) -> Self {
        CliError::Call(micro::errors::Error::from_status(status))
    }
}

/// A registry error for `service` (`None`: a listing) on `registry`.
pub(crate) fn registry_error(
    error: micro::registry::Error,
    service: Option<&str>,
    registry: &str,
) -> CliError {
    match (error, service) {
        (micro::registry::Error::NotFound, Some(service)) => CliError::UnknownService {
            service: service.to_owned(),
            registry: registry.to_owned(),
        },
        // The registry's own message names it and its addresses.
        (micro::registry::Error::Unavailable(why), _) => CliError::Registry(why),
        (error, _) => CliError::Registry(format!("{registry}: {error}")),
    }
}
