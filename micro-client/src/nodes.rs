//! One stack per node: the call wrappers over that node's own tonic channel (one HTTP/2
//! connection, multiplexed), built on first use and dropped when the node leaves the registry,
//! as linkerd2-proxy's per-endpoint stacks. A call wrapper is therefore per node: a
//! `ConcurrencyLimitLayer` limits each node, a breaker trips for one node.

use std::{collections::HashMap, sync::Arc, time::Duration};

use micro_core::{BoxError, BoxService, Error, NodeInfo, StackPool, Wrapper, stack};
use micro_registry::Node;
use parking_lot::RwLock;
use tonic::transport::Endpoint;
use tower::{ServiceExt, util::BoxCloneSyncService};

use crate::load::{DEFAULT_DECAY, DEFAULT_RTT, Load};

/// A node's stack and what the selector knows of it.
pub(crate) struct NodeStack {
    /// The node, as call wrappers see it in [`micro_core::CallInfo::node`].
    pub(crate) info: NodeInfo,
    /// Copies of the call wrappers over the node's channel.
    pub(crate) stack: StackPool,
    /// Latency and pending calls, for p2c.
    pub(crate) load: Load,
}

/// The stacks of the nodes called so far, by node id.
pub(crate) struct Nodes {
    stacks: RwLock<HashMap<Arc<str>, Arc<NodeStack>, foldhash::fast::RandomState>>,
    layers: Vec<Arc<dyn Wrapper>>,
    dial_timeout: Duration,
}

impl Nodes {
    pub(crate) fn new(layers: Vec<Arc<dyn Wrapper>>, dial_timeout: Duration) -> Self {
        Nodes {
            stacks: RwLock::default(),
            layers,
            dial_timeout,
        }
    }

    /// The stack of `node`, built on first use (and again if the node moved to another
    /// address). Fails only for an address that is not `host:port`.
    pub(crate) fn get(&self, node: &Node) -> Result<Arc<NodeStack>, BoxError> {
        if let Some(stack) = self.peek(node) {
            return Ok(stack);
        }
        let channel = Endpoint::from_shared(format!("http://{}", node.address))
            .map_err(|err| {
                Error::internal(
                    crate::CLIENT_ID,
                    format!("bad node address {}: {err}", node.address),
                )
                .to_status()
            })?
            .connect_timeout(self.dial_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        // Boxed once: `BoxService` is this type (a second box would cost an allocation per call).
        let channel: BoxService = BoxCloneSyncService::new(channel.map_err(BoxError::from));
        let built = Arc::new(NodeStack {
            info: NodeInfo {
                id: node.id.as_str().into(),
                address: node.address.as_str().into(),
            },
            stack: StackPool::new(stack(channel, &self.layers)),
            load: Load::new(DEFAULT_RTT, DEFAULT_DECAY),
        });
        let mut stacks = self.stacks.write();
        let entry = stacks
            .entry(node.id.as_str().into())
            .or_insert_with(|| built.clone());
        if *entry.info.address != *node.address {
            *entry = built;
        }
        Ok(entry.clone())
    }

    /// Whether the nodes' stacks have call wrappers (which read a request's extensions).
    pub(crate) fn are_wrapped(&self) -> bool {
        !self.layers.is_empty()
    }

    /// The stack of `node` if it was built.
    pub(crate) fn peek(&self, node: &Node) -> Option<Arc<NodeStack>> {
        self.stacks
            .read()
            .get(node.id.as_str())
            .filter(|stack| *stack.info.address == *node.address)
            .cloned()
    }

    /// Drops the stack of the node `id` (its connection closes once in-flight calls end).
    pub(crate) fn remove(&self, id: &str) {
        self.stacks.write().remove(id);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.stacks.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, address: &str) -> Node {
        Node {
            id: id.into(),
            address: address.into(),
            ..Node::default()
        }
    }

    #[tokio::test]
    async fn one_stack_per_node_until_removed() {
        let nodes = Nodes::new(Vec::new(), Duration::from_secs(1));
        let a = nodes.get(&node("a", "127.0.0.1:1")).unwrap();
        let again = nodes.get(&node("a", "127.0.0.1:1")).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        nodes.get(&node("b", "127.0.0.1:2")).unwrap();
        assert_eq!(nodes.len(), 2);
        // The same id at a new address: a new stack.
        let moved = nodes.get(&node("a", "127.0.0.1:3")).unwrap();
        assert_eq!(&*moved.info.address, "127.0.0.1:3");
        assert!(nodes.peek(&node("a", "127.0.0.1:1")).is_none());
        nodes.remove("a");
        assert_eq!(nodes.len(), 1);
        assert!(nodes.get(&node("c", "not an address at all")).is_err());
    }
}
