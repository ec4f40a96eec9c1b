//! Service discovery for micro-rs.
//!
//! The [`Registry`] trait is go-micro's registry: services register their nodes with a TTL,
//! clients look services up and watch for changes. Two implementations ship here:
//! [`Memory`] (the embedded default, one process) and [`Etcd`] (etcd v3, wire-compatible with
//! go-micro's etcd registry, so Go and Rust services share one etcd). Clients read through a
//! [`Cache`] kept fresh by watch, so a call never waits on the registry.

mod model;

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
