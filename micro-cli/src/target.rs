//! Where commands look: the registry chosen by go-micro's flags, and the client that calls
//! through it (or through a one-node registry for `--address`).

use std::{sync::Arc, time::Duration};

use micro::registry::{Cache, Memory, Node, RegisterOptions, Registry, Service};

use crate::{
    cli::Global,
    error::{CliError, registry_error},
};

/// The registry, with a label for messages (`etcd [127.0.0.1:2379]`).
pub(crate) struct Source {
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) label: String,
}

impl Source {
    /// The registry of `--registry` / `MICRO_REGISTRY` and `--registry_address` /
    /// `MICRO_REGISTRY_ADDRESS`, built by the code `Service::init()` uses; etcd at
    /// `127.0.0.1:2379` when nothing is given.
    pub(crate) fn from_flags(global: &Global) -> Result<Source, CliError> {
        let kind = global.registry.as_deref().unwrap_or("etcd");
        let tls = global
            .registry_tls
            .registry()
            .map_err(|err| CliError::Input(err.to_string()))?;
        let registry = micro::registry_from_flags_tls(kind, &global.registry_address, tls)
            .map_err(|err| CliError::Input(err.to_string()))?;
        let label = match registry.name() {
            "etcd" if global.registry_address.is_empty() => "etcd [127.0.0.1:2379]".to_owned(),
            "etcd" => format!("etcd [{}]", global.registry_address.join(", ")),
            other => {
                eprintln!(
                    "micro: warning: the {other} registry sees only this process; use --registry etcd"
                );
                other.to_owned()
            }
        };
        Ok(Source { registry, label })
    }

    /// Every version of `service`, each with its nodes.
    pub(crate) async fn service(&self, service: &str) -> Result<Vec<Service>, CliError> {
        self.registry
            .get_service(service)
            .await
            .map_err(|err| registry_error(err, Some(service), &self.label))
    }

    /// Every service, one entry per name and version.
    pub(crate) async fn list(&self) -> Result<Vec<Service>, CliError> {
        self.registry
            .list_services()
            .await
            .map_err(|err| registry_error(err, None, &self.label))
    }
}

/// A registry that holds one node of `service` at `address`, so that `--address` calls go
/// through the same client (timeout, metadata, errors) as calls found in the registry.
pub(crate) async fn one_node(service: &str, address: &str) -> Result<Arc<dyn Registry>, CliError> {
    check_address(address)?;
    let memory = Memory::new();
    let registration = Service {
        name: service.to_owned(),
        version: micro::registry::DEFAULT_VERSION.to_owned(),
        nodes: vec![Node {
            id: address.to_owned(),
            address: address.to_owned(),
            ..Node::default()
        }],
        ..Service::default()
    };
    memory
        .register(
            &registration,
            RegisterOptions {
                ttl: Duration::ZERO,
            },
        )
        .await
        .map_err(|err| CliError::Input(format!("--address {address}: {err}")))?;
    Ok(Arc::new(memory))
}

/// `host:port`, with a port number.
fn check_address(address: &str) -> Result<(), CliError> {
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(CliError::Input(format!(
            "--address {address:?}: want host:port"
        ))),
    }
}

/// The micro-rs client over `registry`, with go-micro's defaults changed by `options` and
/// the TLS flags.
pub(crate) fn client(
    registry: Arc<dyn Registry>,
    mut options: micro::client::Options,
    global: &Global,
) -> Result<micro::Client, CliError> {
    options.tls = global
        .client_tls
        .client(options.tls)
        .map_err(|err| CliError::Input(err.to_string()))?;
    Ok(micro::client::Builder::new()
        .options(options)
        .build(Cache::new(registry)))
}

/// Checks that `node` is a node of `service` (as listed in `versions`).
pub(crate) fn check_node(service: &str, versions: &[Service], node: &str) -> Result<(), CliError> {
    let ids: Vec<&str> = versions
        .iter()
        .flat_map(|s| &s.nodes)
        .map(|n| n.id.as_str())
        .collect();
    if ids.contains(&node) {
        return Ok(());
    }
    Err(CliError::UnknownNode {
        node: node.to_owned(),
        service: service.to_owned(),
        known: ids.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_a_port() {
        assert!(check_address("127.0.0.1:8081").is_ok());
        assert!(check_address("[::1]:8081").is_ok());
        for bad in ["127.0.0.1", ":80", "host:port", "host:99999", ""] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn one_node_registry_lists_the_address() {
        let registry = one_node("greeter", "127.0.0.1:9").await.unwrap();
        let services = registry.get_service("greeter").await.unwrap();
        assert_eq!(services[0].nodes[0].address, "127.0.0.1:9");
    }
}
