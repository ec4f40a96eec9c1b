//! One stack per node: the call wrappers over that node's own tonic channel (one HTTP/2
//! connection, multiplexed), built on first use and dropped when the node leaves the registry,
//! as linkerd2-proxy's per-endpoint stacks. A call wrapper is therefore per node: a
//! `ConcurrencyLimitLayer` limits each node, a breaker trips for one node. Each stack also
//! keeps the node's failure accrual ([`crate::accrual`]): an ejected node's stack counts as not
//! ready, whatever its wrappers say.

use std::{collections::HashMap, sync::Arc, time::Duration};

use micro_core::{BoxError, BoxService, Error, NodeInfo, StackPool, Wrapper, stack};
use micro_registry::Node;
use parking_lot::RwLock;
use tonic::transport::Endpoint;
use tower::{ServiceExt, util::BoxCloneSyncService};

use tokio::time::Instant;

use crate::{
    accrual::{Accrual, Change, Ejection, EjectionEvent, EjectionObserver, Failure, Pass},
    load::{DEFAULT_DECAY, DEFAULT_RTT, Load},
};

/// A node's stack and what the selector knows of it.
pub(crate) struct NodeStack {
    /// The node, as call wrappers see it in [`micro_core::CallInfo::node`].
    pub(crate) info: NodeInfo,
    /// Copies of the call wrappers over the node's channel.
    pub(crate) stack: StackPool,
    /// Latency and pending calls, for p2c.
    pub(crate) load: Load,
    /// Transport failures and ejection (kept when the channel is replaced).
    pub(crate) accrual: Arc<Accrual>,
    /// The service the node was first called as (for ejection logs and metrics).
    pub(crate) service: Arc<str>,
    /// Whether the node is dialled with TLS (kept when the channel is replaced).
    pub(crate) secure: bool,
}

impl std::fmt::Debug for NodeStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStack")
            .field("info", &self.info)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// How each node's channel connects.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    /// Time to open a connection.
    pub(crate) dial_timeout: Duration,
    /// HTTP/2 pings while calls are open: every `.0`, `.1` to answer.
    pub(crate) keepalive: Option<(Duration, Duration)>,
    /// Which nodes are dialled with TLS, and how.
    pub(crate) tls: Arc<crate::tls::Tls>,
}

/// The stacks of the nodes called so far, by node id.
pub(crate) struct Nodes {
    stacks: RwLock<HashMap<Arc<str>, Arc<NodeStack>, foldhash::fast::RandomState>>,
    layers: Vec<Arc<dyn Wrapper>>,
    transport: Transport,
    /// Failure accrual settings; `None`: no node is ever ejected.
    pub(crate) ejection: Option<Ejection>,
    on_ejection: Option<EjectionObserver>,
}

impl Nodes {
    pub(crate) fn new(
        layers: Vec<Arc<dyn Wrapper>>,
        transport: Transport,
        ejection: Option<Ejection>,
        on_ejection: Option<EjectionObserver>,
    ) -> Self {
        Nodes {
            stacks: RwLock::default(),
            layers,
            transport,
            ejection,
            on_ejection,
        }
    }

    /// The stack of `node` of `service`, built on first use (and again if the node moved to
    /// another address). Fails only for an address that is not `host:port`.
    pub(crate) fn get(&self, node: &Node, service: &Arc<str>) -> Result<Arc<NodeStack>, BoxError> {
        if let Some(stack) = self.peek(node) {
            return Ok(stack);
        }
        let info = NodeInfo {
            id: node.id.as_str().into(),
            address: node.address.as_str().into(),
        };
        let secure = self.transport.tls.dials_tls(service, node);
        let built = self.build(info, service.clone(), Arc::default(), secure)?;
        let mut stacks = self.stacks.write();
        let entry = stacks
            .entry(node.id.as_str().into())
            .or_insert_with(|| built.clone());
        if *entry.info.address != *node.address {
            *entry = built;
        }
        Ok(entry.clone())
    }

    /// A node's stack over a new channel, keeping its accrual.
    fn build(
        &self,
        info: NodeInfo,
        service: Arc<str>,
        accrual: Arc<Accrual>,
        secure: bool,
    ) -> Result<Arc<NodeStack>, BoxError> {
        // go-micro's rule: an `https://` address is a TLS node at that host:port (443 when
        // none is given).
        let dialled = if secure {
            micro_core::tls::dial_address(&info.address)
        } else {
            std::borrow::Cow::Borrowed(&*info.address)
        };
        let address = &*dialled;
        let mut endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|err| {
                Error::internal(
                    crate::CLIENT_ID,
                    format!("bad node address {address}: {err}"),
                )
                .to_status()
            })?
            .connect_timeout(self.transport.dial_timeout)
            .tcp_nodelay(true);
        // Pings only while calls are open: a connection to a node cut off from the network
        // then fails by itself, and idle connections do not ping (gRPC servers, grpc-go's
        // among them, answer idle pings more often than every 5 min with a GOAWAY).
        if let Some((interval, timeout)) = self.transport.keepalive {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(false);
        }
        let channel = if secure {
            let host = endpoint.uri().host().unwrap_or(address).to_owned();
            let connector = self
                .transport
                .tls
                .connector(&service, &info, &host)
                .map_err(|err| {
                    Error::internal(crate::CLIENT_ID, format!("TLS to node {}: {err}", info.id))
                        .to_status()
                })?;
            // The requests say `https` (the connection is TLS whatever the URI says).
            let origin = format!("https://{address}").parse().map_err(|err| {
                Error::internal(
                    crate::CLIENT_ID,
                    format!("bad node address {address}: {err}"),
                )
                .to_status()
            })?;
            endpoint
                .origin(origin)
                .connect_with_connector_lazy(connector)
        } else {
            endpoint.connect_lazy()
        };
        // Boxed once: `BoxService` is this type (a second box would cost an allocation per call).
        let channel: BoxService = BoxCloneSyncService::new(channel.map_err(BoxError::from));
        Ok(Arc::new(NodeStack {
            info,
            stack: StackPool::new(stack(channel, &self.layers)),
            load: Load::new(DEFAULT_RTT, DEFAULT_DECAY),
            accrual,
            service,
            secure,
        }))
    }

    /// Replaces an ejected node's channel: its connection timed out or broke, and a probe
    /// sent on it after the network healed could wait on a TCP connection still backing off
    /// its retransmissions. Calls in flight keep the old one until they end.
    fn renew(&self, old: &NodeStack) {
        let Ok(fresh) = self.build(
            old.info.clone(),
            old.service.clone(),
            old.accrual.clone(),
            old.secure,
        ) else {
            return;
        };
        let mut stacks = self.stacks.write();
        if let Some(entry) = stacks.get_mut(&old.info.id)
            && Arc::ptr_eq(&entry.accrual, &old.accrual)
        {
            *entry = fresh;
        }
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

    /// Drops the stack of the node `id` (its connection closes once in-flight calls end); an
    /// ejected node that leaves no longer counts as ejected.
    pub(crate) fn remove(&self, id: &str) {
        let removed = self.stacks.write().remove(id);
        if let Some(stack) = removed
            && stack.accrual.forget()
        {
            tracing::info!(service = %stack.service, node = %stack.info.id, "ejected node left the registry");
            self.tell(&stack, EjectionEvent::Restored);
        }
    }

    /// An attempt through `pass` got an answer: restores an ejected node it probed.
    #[inline]
    pub(crate) fn answered(&self, pass: &Pass) {
        if self.ejection.is_none() {
            return;
        }
        let stack: &NodeStack = pass;
        stack.accrual.answer(pass.seq());
        if stack.accrual.is_clear() {
            return;
        }
        if let Some(Change::Restored) = stack.accrual.succeeded(pass.via(), Instant::now()) {
            tracing::info!(service = %stack.service, node = %stack.info.id, address = %stack.info.address, "node back in rotation");
            self.tell(stack, EjectionEvent::Restored);
        }
    }

    /// Numbers the attempt through `pass` as it is sent, if nodes may be ejected.
    #[inline]
    pub(crate) fn sending(&self, pass: &mut Pass) {
        if self.ejection.is_some() {
            pass.sending();
        }
    }

    /// An attempt through `pass` failed at the transport. `others_in_rotation` says whether
    /// another node of the service is in rotation (a node is never ejected when none is).
    pub(crate) fn failed(
        &self,
        pass: &Pass,
        failure: Failure,
        others_in_rotation: impl FnOnce() -> bool,
    ) {
        let Some(settings) = &self.ejection else {
            return;
        };
        let stack: &NodeStack = pass;
        let draw = rand::random_range(-1.0..=1.0);
        let change = stack.accrual.failed(
            failure,
            pass.via(),
            settings,
            Instant::now(),
            draw,
            others_in_rotation,
        );
        let (event, period) = match change {
            Some(Change::Ejected(period)) => (EjectionEvent::Ejected, period),
            Some(Change::Extended(period)) => (EjectionEvent::Extended, period),
            Some(Change::Restored) | None => return,
        };
        tracing::warn!(
            service = %stack.service,
            node = %stack.info.id,
            address = %stack.info.address,
            ?failure,
            ?period,
            "node ejected: transport failures",
        );
        if failure != Failure::Connection {
            self.renew(stack);
        }
        self.tell(stack, event);
    }

    fn tell(&self, stack: &NodeStack, event: EjectionEvent) {
        if let Some(observer) = &self.on_ejection {
            observer(&stack.service, event);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.stacks.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accrual::Via;

    fn node(id: &str, address: &str) -> Node {
        Node {
            id: id.into(),
            address: address.into(),
            ..Node::default()
        }
    }

    #[tokio::test]
    async fn one_stack_per_node_until_removed() {
        let transport = Transport {
            dial_timeout: Duration::from_secs(1),
            keepalive: None,
            tls: Arc::new(crate::tls::Tls::new(Default::default(), Vec::new())),
        };
        let nodes = Nodes::new(Vec::new(), transport, None, None);
        let s: Arc<str> = "s".into();
        let a = nodes.get(&node("a", "127.0.0.1:1"), &s).unwrap();
        let again = nodes.get(&node("a", "127.0.0.1:1"), &s).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        nodes.get(&node("b", "127.0.0.1:2"), &s).unwrap();
        assert_eq!(nodes.len(), 2);
        // The same id at a new address: a new stack.
        let moved = nodes.get(&node("a", "127.0.0.1:3"), &s).unwrap();
        assert_eq!(&*moved.info.address, "127.0.0.1:3");
        assert!(nodes.peek(&node("a", "127.0.0.1:1")).is_none());
        nodes.remove("a");
        assert_eq!(nodes.len(), 1);
        assert!(nodes.get(&node("c", "not an address at all"), &s).is_err());
    }

    #[tokio::test]
    async fn a_pass_numbers_its_attempt_when_sent_and_keeps_how_it_was_let_through() {
        let transport = Transport {
            dial_timeout: Duration::from_secs(1),
            keepalive: None,
            tls: Arc::new(crate::tls::Tls::new(Default::default(), Vec::new())),
        };
        let nodes = Nodes::new(
            Vec::new(),
            transport.clone(),
            Some(Ejection::default()),
            None,
        );
        let stack = nodes.get(&node("a", "127.0.0.1:1"), &"s".into()).unwrap();
        let mut first = Pass::normal(stack.clone());
        let mut second = Pass::fallback(stack.clone());
        nodes.sending(&mut first);
        nodes.sending(&mut second);
        assert_eq!(first.via(), Via::Normal(0));
        assert_eq!(second.via(), Via::Fallback(1));
        // A probe is numbered when let through, and keeps its number.
        let mut probe = Pass::probe(stack.clone(), 7);
        nodes.sending(&mut probe);
        assert_eq!(probe.via(), Via::Probe(7));
        // Without ejection nothing is numbered.
        let off = Nodes::new(Vec::new(), transport, None, None);
        let mut pass = Pass::normal(off.get(&node("b", "127.0.0.1:2"), &"s".into()).unwrap());
        off.sending(&mut pass);
        assert_eq!(pass.seq(), 0);
    }
}
