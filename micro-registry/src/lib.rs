//! Service discovery for micro-rs.
//!
//! The [`Registry`] trait is go-micro's registry: services register their nodes with a TTL,
//! clients look services up and watch for changes. Two implementations ship here:
//! [`Memory`] (the embedded default, one process) and [`Etcd`] (etcd v3, wire-compatible with
//! go-micro's etcd registry, so Go and Rust services share one etcd). Clients read through a
//! [`Cache`] kept fresh by watch, so a call never waits on the registry.

mod cache;
mod etcd;
mod memory;
mod model;

pub use cache::{Cache, WeakCache};
pub use etcd::{Etcd, EtcdTls, PREFIX, node_key, service_prefix};
pub use memory::Memory;
pub use model::{Endpoint, Metadata, Node, Service, Value};

use std::{pin::Pin, time::Duration};

use async_trait::async_trait;
use futures::Stream;

/// The version go-micro uses when a service sets none.
pub const DEFAULT_VERSION: &str = "latest";

/// What a watcher saw happen to one node of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A node appeared.
    Create,
    /// A node's registration was rewritten.
    Update,
    /// A node left: deregistered or its lease expired.
    Delete,
}

impl Action {
    /// go-micro's wire name: `create`, `update`, `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change seen by a watcher. `service` holds the node concerned (for a delete, the
/// registration as it was before).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub action: Action,
    /// The service with the one node concerned.
    pub service: Service,
}

/// Options for [`Registry::register`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterOptions {
    /// Time to live of the registration; `Duration::ZERO` means it never expires.
    pub ttl: Duration,
}

/// Options for [`Registry::watch`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Watch one service only; `None` watches all.
    pub service: Option<String>,
}

/// A stream of registry changes. It ends (or yields an error) when the watch is lost; the
/// caller re-lists and watches again.
pub type Watcher = Pin<Box<dyn Stream<Item = Result<Event, Error>> + Send>>;

/// Service discovery, as go-micro's `registry.Registry`.
///
/// `register` is called again every register interval by the server: an implementation renews
/// the registration's TTL, skips rewriting an unchanged node, and re-creates a registration the
/// backend lost.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Registers (or renews) every node of `service`.
    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error>;
    /// Removes every node of `service`.
    async fn deregister(&self, service: &Service) -> Result<(), Error>;
    /// All versions of the named service, each with its nodes. Unknown service: `Error::NotFound`.
    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error>;
    /// Every service, one entry per name and version.
    async fn list_services(&self) -> Result<Vec<Service>, Error>;
    /// Watches for changes.
    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error>;
    /// Short name for logs and flags: `memory`, `etcd`.
    fn name(&self) -> &'static str;
}

/// Registry errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service is not registered.
    #[error("service not found")]
    NotFound,
    /// The registry backend could not be reached or failed.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// The arguments were not usable (e.g. a service with no nodes, an empty name).
    #[error("invalid registration: {0}")]
    Invalid(String),
    /// The watch was lost; re-list and watch again.
    #[error("watch lost: {0}")]
    WatchLost(String),
}

/// Checks what every registry requires of a registration: a name and at least one node, each
/// with an id.
pub(crate) fn validate(service: &Service) -> Result<(), Error> {
    if service.name.is_empty() {
        return Err(Error::Invalid("service name is empty".into()));
    }
    if service.nodes.is_empty() {
        return Err(Error::Invalid(format!(
            "service {} has no nodes (at least one is required)",
            service.name
        )));
    }
    if let Some(node) = service.nodes.iter().find(|n| n.id.is_empty()) {
        return Err(Error::Invalid(format!(
            "service {} has a node without id (address {:?})",
            service.name, node.address
        )));
    }
    Ok(())
}

/// `service` reduced to the one node `node`: what a registry stores per node.
pub(crate) fn with_one_node(service: &Service, node: &Node) -> Service {
    Service {
        name: service.name.clone(),
        version: service.version.clone(),
        metadata: service.metadata.clone(),
        endpoints: service.endpoints.clone(),
        nodes: vec![node.clone()],
    }
}

/// Groups one-node registrations into one `Service` per (name, version), in first-seen order,
/// nodes appended; endpoints and metadata come from the first registration of each version.
/// This is what go-micro's `GetService` / `ListServices` return.
pub(crate) fn group_by_version(records: impl IntoIterator<Item = Service>) -> Vec<Service> {
    let mut out: Vec<Service> = Vec::new();
    for record in records {
        match out
            .iter_mut()
            .find(|s| s.name == record.name && s.version == record.version)
        {
            Some(existing) => existing.nodes.extend(record.nodes),
            None => out.push(record),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, version: &str, id: &str) -> Service {
        Service {
            name: name.into(),
            version: version.into(),
            nodes: vec![Node {
                id: id.into(),
                address: format!("{id}:1"),
                ..Node::default()
            }],
            ..Service::default()
        }
    }

    #[test]
    fn groups_by_name_and_version_in_first_seen_order() {
        let grouped = group_by_version([
            record("a", "1", "n1"),
            record("a", "2", "n2"),
            record("a", "1", "n3"),
            record("b", "1", "n4"),
        ]);
        let shape: Vec<(&str, &str, Vec<&str>)> = grouped
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.version.as_str(),
                    s.nodes.iter().map(|n| n.id.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("a", "1", vec!["n1", "n3"]),
                ("a", "2", vec!["n2"]),
                ("b", "1", vec!["n4"]),
            ]
        );
    }

    #[test]
    fn validation() {
        assert!(validate(&record("a", "1", "n1")).is_ok());
        assert!(matches!(
            validate(&record("", "1", "n1")),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            validate(&record("a", "1", "")),
            Err(Error::Invalid(_))
        ));
        let mut no_nodes = record("a", "1", "n1");
        no_nodes.nodes.clear();
        assert!(matches!(validate(&no_nodes), Err(Error::Invalid(_))));
        assert_eq!(Action::Delete.to_string(), "delete");
    }
}
