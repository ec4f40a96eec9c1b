//! Picks the node for each attempt from the cached services.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use micro_registry::{Node, Service};
use parking_lot::RwLock;
use rand::Rng;

/// How a node is chosen among the candidates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Uniformly at random (go-micro's default).
    #[default]
    Random,
    /// A real rotation across calls, per service (go-micro's restarts at a random index on
    /// each call, so it only rotates across retries).
    RoundRobin,
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "random" | "" => Ok(Strategy::Random),
            "roundrobin" | "round_robin" | "round-robin" => Ok(Strategy::RoundRobin),
            other => Err(format!(
                "unknown selector strategy {other:?} (random, roundrobin)"
            )),
        }
    }
}

/// Narrows the candidates, as go-micro's selector filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Only nodes of this service version.
    Version(String),
    /// Only nodes whose metadata has `key = value`.
    Label(String, String),
    /// Only services that list this endpoint (services that list none are kept).
    Endpoint(String),
    /// Only the node with this id (the `micro` CLI's `--node`).
    Node(String),
}

impl Filter {
    fn keeps_service(&self, service: &Service) -> bool {
        match self {
            Filter::Version(version) => &service.version == version,
            Filter::Endpoint(endpoint) => {
                service.endpoints.is_empty()
                    || service.endpoints.iter().any(|e| &e.name == endpoint)
            }
            Filter::Label(..) | Filter::Node(_) => true,
        }
    }

    fn keeps_node(&self, node: &Node) -> bool {
        match self {
            Filter::Label(key, value) => node.metadata.get(key) == Some(value),
            Filter::Node(id) => &node.id == id,
            _ => true,
        }
    }
}

/// Chooses nodes.
#[derive(Debug, Default)]
pub(crate) struct Selector {
    strategy: Strategy,
    filters: Vec<Filter>,
    next: RwLock<HashMap<String, Arc<AtomicUsize>>>,
}

impl Selector {
    pub(crate) fn new(strategy: Strategy, filters: Vec<Filter>) -> Self {
        Selector {
            strategy,
            filters,
            next: RwLock::default(),
        }
    }

    /// A node of `services` that passes the filters (the client's and the call's), preferring
    /// nodes not yet `tried`; `None` when no node passes.
    pub(crate) fn select<'a>(
        &self,
        name: &str,
        services: &'a [Service],
        extra: &[Filter],
        tried: &[Arc<str>],
    ) -> Option<&'a Node> {
        // Two passes over the (small) node list instead of collecting: no allocation per call.
        let filters = || self.filters.iter().chain(extra);
        let candidates = || {
            services
                .iter()
                .filter(move |s| filters().all(|f| f.keeps_service(s)))
                .flat_map(|s| s.nodes.iter())
                .filter(move |n| filters().all(|f| f.keeps_node(n)))
        };
        let untried = || candidates().filter(|n| !tried.iter().any(|t| **t == *n.id));
        let fresh = if tried.is_empty() {
            0
        } else {
            untried().count()
        };
        let (count, use_untried) = match fresh {
            0 => (candidates().count(), false),
            n => (n, true),
        };
        let index = match (count, self.strategy) {
            (0, _) => return None,
            (1, _) => 0,
            (n, Strategy::Random) => rand::rng().random_range(0..n),
            (n, Strategy::RoundRobin) => self.counter(name).fetch_add(1, Ordering::Relaxed) % n,
        };
        if use_untried {
            untried().nth(index)
        } else {
            candidates().nth(index)
        }
    }

    fn counter(&self, name: &str) -> Arc<AtomicUsize> {
        if let Some(counter) = self.next.read().get(name) {
            return counter.clone();
        }
        self.next
            .write()
            .entry(name.to_owned())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, label: Option<(&str, &str)>) -> Node {
        let mut node = Node {
            id: id.into(),
            address: format!("{id}:1"),
            ..Node::default()
        };
        if let Some((k, v)) = label {
            node.metadata.insert(k.into(), v.into());
        }
        node
    }

    fn services() -> Vec<Service> {
        vec![
            Service {
                name: "s".into(),
                version: "v1".into(),
                nodes: vec![node("a", Some(("zone", "x"))), node("b", None)],
                ..Service::default()
            },
            Service {
                name: "s".into(),
                version: "v2".into(),
                nodes: vec![node("c", Some(("zone", "x")))],
                ..Service::default()
            },
        ]
    }

    #[test]
    fn round_robin_rotates_across_calls() {
        let selector = Selector::new(Strategy::RoundRobin, vec![]);
        let services = services();
        let picks: Vec<_> = (0..6)
            .map(|_| {
                selector
                    .select("s", &services, &[], &[])
                    .unwrap()
                    .id
                    .clone()
            })
            .collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn filters_and_tried_nodes_narrow_the_choice() {
        let selector = Selector::new(Strategy::Random, vec![Filter::Version("v1".into())]);
        let services = services();
        for _ in 0..20 {
            let id = &selector.select("s", &services, &[], &[]).unwrap().id;
            assert!(id == "a" || id == "b");
        }
        let label = [Filter::Label("zone".into(), "x".into())];
        assert_eq!(
            selector.select("s", &services, &label, &[]).unwrap().id,
            "a"
        );
        let tried: Vec<Arc<str>> = vec!["a".into()];
        assert_eq!(
            selector.select("s", &services, &[], &tried).unwrap().id,
            "b"
        );
        // Every node tried: any candidate again rather than none.
        let all: Vec<Arc<str>> = vec!["a".into(), "b".into()];
        assert!(selector.select("s", &services, &[], &all).is_some());
        let node = [Filter::Node("b".into())];
        for _ in 0..20 {
            assert_eq!(selector.select("s", &services, &node, &[]).unwrap().id, "b");
        }
        let nothing = [Filter::Version("v9".into())];
        assert!(selector.select("s", &services, &nothing, &[]).is_none());
        assert!(selector.select("s", &[], &[], &[]).is_none());
    }

    #[test]
    fn strategy_parses_go_micro_names() {
        assert_eq!("roundrobin".parse::<Strategy>(), Ok(Strategy::RoundRobin));
        assert_eq!("random".parse::<Strategy>(), Ok(Strategy::Random));
        assert!("fastest".parse::<Strategy>().is_err());
    }
}
