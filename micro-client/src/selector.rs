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
    /// Uniformly at random (go-micro's default): a random start, the first ready node from
    /// there.
    #[default]
    Random,
    /// A real rotation across calls, per service (go-micro's restarts at a random index on
    /// each call, so it only rotates across retries); a node that is not ready is skipped.
    RoundRobin,
    /// Power of two choices: of two distinct random nodes, the ready one with the lower
    /// load (peak-EWMA latency times pending calls plus one), as tower's `balance::p2c`
    /// with `PeakEwma` and go-zero's default balancer.
    P2c,
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "random" | "" => Ok(Strategy::Random),
            "roundrobin" | "round_robin" | "round-robin" => Ok(Strategy::RoundRobin),
            "p2c" => Ok(Strategy::P2c),
            other => Err(format!(
                "unknown selector strategy {other:?} (random, roundrobin, p2c)"
            )),
        }
    }
}

/// What the caller knows of each node: whether its stack can take a call now, and its load.
pub trait Candidates {
    /// Whether `node` can take a call now. May have a side effect (polling the node's stack
    /// and keeping the readied copy): the selector calls it only for a node it would pick,
    /// at most once per node per [`Selector::select_ready`].
    fn ready(&mut self, node: &Node) -> bool;
    /// The node's load for [`Strategy::P2c`]; lower is better. Asked before
    /// [`Candidates::ready`], of both nodes p2c compares.
    fn cost(&self, node: &Node) -> f64;
}

/// Every node ready at the same cost: the selector's choice among the candidates only.
#[derive(Debug, Default)]
pub struct AllReady;

impl Candidates for AllReady {
    fn ready(&mut self, _: &Node) -> bool {
        true
    }

    fn cost(&self, _: &Node) -> f64 {
        0.0
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
pub struct Selector {
    strategy: Strategy,
    filters: Vec<Filter>,
    /// Round robin's rotation counter per service.
    next: RwLock<HashMap<Box<str>, AtomicUsize, foldhash::fast::RandomState>>,
}

impl Selector {
    /// A selector with this strategy and the client's filters.
    pub fn new(strategy: Strategy, filters: Vec<Filter>) -> Self {
        Selector {
            strategy,
            filters,
            next: RwLock::default(),
        }
    }

    /// Whether the strategy reads the nodes' loads (p2c): only then do calls record them,
    /// and the other strategies pay no clock reads for loads nobody reads.
    pub(crate) fn reads_loads(&self) -> bool {
        self.strategy == Strategy::P2c
    }

    /// A node of `services` that passes the filters (the client's and the call's), preferring
    /// nodes not yet `tried`; `None` when no node passes. Every node counts as ready, at the
    /// same cost ([`AllReady`]).
    #[cfg(test)]
    pub(crate) fn select<'a>(
        &self,
        name: &str,
        services: &'a [Service],
        extra: &[Filter],
        tried: &[Arc<str>],
    ) -> Option<&'a Node> {
        self.select_ready(name, services, extra, tried, &mut AllReady)
    }

    /// A ready node of `services` that passes the filters (the client's and the call's),
    /// chosen by the strategy, preferring nodes not yet `tried`; `None` when no candidate is
    /// ready. `nodes.ready` is asked only of nodes the strategy would pick, at most once per
    /// node. No allocation.
    pub fn select_ready<'a>(
        &self,
        name: &str,
        services: &'a [Service],
        extra: &[Filter],
        tried: &[Arc<str>],
        nodes: &mut dyn Candidates,
    ) -> Option<&'a Node> {
        // Passes over the (small) node list instead of collecting: no allocation per call.
        let all = || services.iter().flat_map(|s| s.nodes.iter());
        if self.filters.is_empty() && extra.is_empty() {
            if tried.is_empty() {
                // The common case: every node is a candidate, reached by index.
                return self.pick(name, &Slices(services), nodes);
            }
            return self.prefer_untried(name, all, tried, nodes);
        }
        let filters = || self.filters.iter().chain(extra);
        let candidates = || {
            services
                .iter()
                .filter(move |s| filters().all(|f| f.keeps_service(s)))
                .flat_map(|s| s.nodes.iter())
                .filter(move |n| filters().all(|f| f.keeps_node(n)))
        };
        self.prefer_untried(name, candidates, tried, nodes)
    }

    /// The strategy's ready node among the untried ones of `pool()`; if none of them is ready
    /// (or there are none), among the tried ones. Each node is in one of the two pools, so
    /// none is asked twice.
    fn prefer_untried<'a, I>(
        &self,
        name: &str,
        pool: impl Fn() -> I + Copy,
        tried: &[Arc<str>],
        nodes: &mut dyn Candidates,
    ) -> Option<&'a Node>
    where
        I: Iterator<Item = &'a Node>,
    {
        if tried.is_empty() {
            return self.pick(name, &Restartable(pool), nodes);
        }
        let was_tried = |n: &Node| tried.iter().any(|t| **t == *n.id);
        let untried = Restartable(|| pool().filter(move |n| !was_tried(n)));
        let tried = Restartable(|| pool().filter(move |n| was_tried(n)));
        self.pick(name, &untried, nodes)
            .or_else(|| self.pick(name, &tried, nodes))
    }

    /// The strategy's ready node of `pool`.
    fn pick<'a>(
        &self,
        name: &str,
        pool: &impl Pool<'a>,
        nodes: &mut dyn Candidates,
    ) -> Option<&'a Node> {
        let count = pool.len();
        match (count, self.strategy) {
            (0, _) => None,
            (1, _) => pool.get(0).filter(|node| nodes.ready(node)),
            (n, Strategy::Random) => {
                pool.first_ready(rand::rng().random_range(0..n), [n; 2], nodes)
            }
            (n, Strategy::RoundRobin) => pool.first_ready(self.next_turn(name) % n, [n; 2], nodes),
            (n, Strategy::P2c) => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let b = match rng.random_range(0..n - 1) {
                    b if b >= a => b + 1,
                    b => b,
                };
                // The cheaper of the two first: only its stack is polled when it is ready,
                // so no readied copy is made just to be dropped.
                let (node_a, node_b) = (pool.get(a)?, pool.get(b)?);
                let (first, second) = if nodes.cost(node_b) < nodes.cost(node_a) {
                    (node_b, node_a)
                } else {
                    (node_a, node_b)
                };
                [first, second]
                    .into_iter()
                    .find(|node| nodes.ready(node))
                    // Neither is ready: any ready node, from a random start.
                    .or_else(|| pool.first_ready(rng.random_range(0..n), [a, b], nodes))
            }
        }
    }

    /// The rotation counter of service `name`, advanced by one.
    fn next_turn(&self, name: &str) -> usize {
        if let Some(counter) = self.next.read().get(name) {
            return counter.fetch_add(1, Ordering::Relaxed);
        }
        let mut next = self.next.write();
        let counter = next.entry(name.into()).or_default();
        counter.fetch_add(1, Ordering::Relaxed)
    }
}

/// The candidates of one pick, by index.
trait Pool<'a> {
    /// How many.
    fn len(&self) -> usize;
    /// The `i`th.
    fn get(&self, i: usize) -> Option<&'a Node>;
    /// The first ready node from index `start` on, wrapping around, skipping the indexes in
    /// `skip` (already asked).
    fn first_ready(
        &self,
        start: usize,
        skip: [usize; 2],
        nodes: &mut dyn Candidates,
    ) -> Option<&'a Node> {
        let n = self.len();
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| !skip.contains(i))
            .filter_map(|i| self.get(i))
            .find(|node| nodes.ready(node))
    }
}

/// Every node of the services: indexing crosses one slice per service.
struct Slices<'a>(&'a [Service]);

impl<'a> Pool<'a> for Slices<'a> {
    fn len(&self) -> usize {
        self.0.iter().map(|s| s.nodes.len()).sum()
    }

    fn get(&self, mut i: usize) -> Option<&'a Node> {
        for service in self.0 {
            match service.nodes.get(i) {
                Some(node) => return Some(node),
                None => i -= service.nodes.len(),
            }
        }
        None
    }
}

/// The nodes an iterator yields, restarted for each pass (filters, tried nodes).
struct Restartable<F>(F);

impl<'a, F, I> Pool<'a> for Restartable<F>
where
    F: Fn() -> I,
    I: Iterator<Item = &'a Node>,
{
    fn len(&self) -> usize {
        (self.0)().count()
    }

    fn get(&self, i: usize) -> Option<&'a Node> {
        (self.0)().nth(i)
    }

    /// One pass from `start` to the end, then one from the beginning to `start`.
    fn first_ready(
        &self,
        start: usize,
        skip: [usize; 2],
        nodes: &mut dyn Candidates,
    ) -> Option<&'a Node> {
        let after = (self.0)().enumerate().skip(start);
        let before = (self.0)().enumerate().take(start);
        after
            .chain(before)
            .filter(|(i, _)| !skip.contains(i))
            .map(|(_, n)| n)
            .find(|n| nodes.ready(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load;
    use std::time::Duration;

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

    /// Ready unless listed; counts the `ready` questions per node.
    #[derive(Default)]
    struct Fixed {
        not_ready: Vec<&'static str>,
        costs: HashMap<String, f64>,
        asked: HashMap<String, usize>,
    }

    impl Fixed {
        fn not_ready(ids: &[&'static str]) -> Self {
            Fixed {
                not_ready: ids.to_vec(),
                ..Fixed::default()
            }
        }

        /// Picks once; asserts no node was asked twice.
        fn pick<'a>(
            &mut self,
            selector: &Selector,
            services: &'a [Service],
            tried: &[Arc<str>],
        ) -> Option<&'a str> {
            self.asked.clear();
            let node = selector.select_ready("s", services, &[], tried, self);
            assert!(self.asked.values().all(|&n| n == 1), "{:?}", self.asked);
            node.map(|n| n.id.as_str())
        }
    }

    impl Candidates for Fixed {
        fn ready(&mut self, node: &Node) -> bool {
            *self.asked.entry(node.id.clone()).or_default() += 1;
            !self.not_ready.contains(&node.id.as_str())
        }

        fn cost(&self, node: &Node) -> f64 {
            self.costs.get(&node.id).copied().unwrap_or(1.0)
        }
    }

    const ALL: [Strategy; 3] = [Strategy::Random, Strategy::RoundRobin, Strategy::P2c];

    #[test]
    fn nodes_that_are_not_ready_are_never_picked_and_asked_at_most_once() {
        let services = services();
        for strategy in ALL {
            let selector = Selector::new(strategy, vec![]);
            let mut nodes = Fixed::not_ready(&["a", "c"]);
            for _ in 0..200 {
                assert_eq!(
                    nodes.pick(&selector, &services, &[]),
                    Some("b"),
                    "{strategy:?}"
                );
            }
            let mut none = Fixed::not_ready(&["a", "b", "c"]);
            assert_eq!(none.pick(&selector, &services, &[]), None, "{strategy:?}");
            assert_eq!(none.asked.len(), 3, "{strategy:?}: every node asked once");
            // All ready: random and round robin ask only the node they pick, p2c its two.
            let mut ready = Fixed::default();
            assert!(ready.pick(&selector, &services, &[]).is_some());
            let most = if strategy == Strategy::P2c { 2 } else { 1 };
            assert!(ready.asked.len() <= most, "{strategy:?}: {:?}", ready.asked);
        }
    }

    #[test]
    fn round_robin_stays_exact_and_skips_a_node_that_is_not_ready() {
        let selector = Selector::new(Strategy::RoundRobin, vec![]);
        let services = services();
        let mut nodes = Fixed::not_ready(&["b"]);
        let picks: Vec<_> = (0..6)
            .map(|_| nodes.pick(&selector, &services, &[]).unwrap().to_owned())
            .collect();
        // The rotation goes on: b's turn goes to the next ready node.
        assert_eq!(picks, ["a", "c", "c", "a", "c", "c"]);
    }

    #[test]
    fn untried_ready_nodes_first_then_tried_ones() {
        let services = services();
        let tried: Vec<Arc<str>> = vec!["a".into()];
        for strategy in ALL {
            let selector = Selector::new(strategy, vec![]);
            let mut ready = Fixed::default();
            for _ in 0..50 {
                let id = ready.pick(&selector, &services, &tried).unwrap();
                assert_ne!(id, "a", "{strategy:?}");
            }
            // The untried ones are not ready: the tried node again rather than none.
            let mut busy = Fixed::not_ready(&["b", "c"]);
            assert_eq!(
                busy.pick(&selector, &services, &tried),
                Some("a"),
                "{strategy:?}"
            );
            let mut none = Fixed::not_ready(&["a", "b", "c"]);
            assert_eq!(
                none.pick(&selector, &services, &tried),
                None,
                "{strategy:?}"
            );
            assert_eq!(none.asked.len(), 3);
        }
    }

    #[test]
    fn p2c_picks_the_cheaper_of_two_and_never_the_dearest() {
        let selector = Selector::new(Strategy::P2c, vec![]);
        let services = services();
        let mut nodes = Fixed {
            costs: [("a", 1.0), ("b", 10.0), ("c", 100.0)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            ..Fixed::default()
        };
        let mut picks: HashMap<String, usize> = HashMap::new();
        for _ in 0..3000 {
            let id = nodes.pick(&selector, &services, &[]).unwrap();
            *picks.entry(id.to_owned()).or_default() += 1;
        }
        // Pairs (a,b) and (a,c) go to a, (b,c) to b: about 2/3 and 1/3; c never.
        assert_eq!(picks.get("c"), None, "{picks:?}");
        let (a, b) = (picks["a"], picks["b"]);
        assert!(a > 1700 && b > 700, "{picks:?}");
        // One of the two not ready: the other, whatever it costs.
        let mut only_c = Fixed::not_ready(&["a", "b"]);
        only_c.costs = nodes.costs.clone();
        for _ in 0..100 {
            assert_eq!(only_c.pick(&selector, &services, &[]), Some("c"));
        }
    }

    /// Loads on a hand-driven clock, as the dispatch will give them.
    struct Loaded {
        loads: HashMap<String, load::Load>,
        now: tokio::time::Instant,
    }

    impl Candidates for Loaded {
        fn ready(&mut self, _: &Node) -> bool {
            true
        }

        fn cost(&self, node: &Node) -> f64 {
            self.loads[&node.id].cost(self.now)
        }
    }

    /// `calls` calls, 4 in flight, to nodes `fast` and `slow`, each call ending after
    /// `outcome(node)` (its latency, and whether it failed), the clock moved from one
    /// completion to the next; the picks of `slow`.
    fn simulate(
        strategy: Strategy,
        calls: usize,
        outcome: impl Fn(&str) -> (Duration, bool),
    ) -> usize {
        use std::{cmp::Reverse, collections::BinaryHeap};
        let services = vec![Service {
            name: "s".into(),
            nodes: vec![node("fast", None), node("slow", None)],
            ..Service::default()
        }];
        let selector = Selector::new(strategy, vec![]);
        let t0 = tokio::time::Instant::now();
        let mut nodes = Loaded {
            loads: ["fast", "slow"]
                .into_iter()
                .map(|id| {
                    let load = load::Load::new_at(load::DEFAULT_RTT, load::DEFAULT_DECAY, t0);
                    (id.to_owned(), load)
                })
                .collect(),
            now: t0,
        };
        let mut in_flight = BinaryHeap::new();
        let mut inflights = HashMap::new();
        let (mut slow, mut sent) = (0, 0);
        while sent < calls || !in_flight.is_empty() {
            while in_flight.len() < 4 && sent < calls {
                let node = selector
                    .select_ready("s", &services, &[], &[], &mut nodes)
                    .unwrap();
                slow += usize::from(node.id == "slow");
                let (latency, failed) = outcome(&node.id);
                let call = nodes.loads[&node.id].start(nodes.now);
                in_flight.push(Reverse((nodes.now + latency, sent)));
                inflights.insert(sent, (call, failed));
                sent += 1;
            }
            let Reverse((at, id)) = in_flight.pop().unwrap();
            nodes.now = at;
            let (call, failed) = inflights.remove(&id).unwrap();
            call.finish(at, failed);
        }
        slow
    }

    fn slow_node_picks(strategy: Strategy) -> usize {
        simulate(strategy, 2000, |id| match id {
            "slow" => (Duration::from_millis(100), false),
            _ => (Duration::from_millis(10), false),
        })
    }

    #[test]
    fn p2c_sends_few_calls_to_a_frozen_node() {
        // The process test, on the hand-driven clock: 200 calls at 4 in flight, a
        // node answering in 100 ms and a frozen one whose calls time out after 1 s.
        let frozen = |strategy| {
            simulate(strategy, 200, |id| match id {
                "slow" => (Duration::from_secs(1), true),
                _ => (Duration::from_millis(100), false),
            })
        };
        let p2c = frozen(Strategy::P2c);
        eprintln!("p2c: {p2c} of 200 calls to the frozen node");
        assert!(p2c <= 20, "p2c: {p2c} of 200 calls to the frozen node");
        let random = frozen(Strategy::Random);
        assert!((60..=140).contains(&random), "random: {random} of 200");
    }

    #[test]
    fn p2c_gives_a_node_ten_times_slower_at_most_a_fifth_of_the_picks() {
        let slow = slow_node_picks(Strategy::P2c);
        eprintln!("p2c: slow node got {slow} of 2000 picks");
        assert!(slow <= 2000 / 5, "slow node got {slow} of 2000 picks");
        // Random ignores the load: about half (the contrast that makes the test mean something).
        let random = slow_node_picks(Strategy::Random);
        eprintln!("random: slow node got {random} of 2000 picks");
        assert!((700..=1300).contains(&random), "random: {random} of 2000");
    }

    #[test]
    fn strategy_parses_go_micro_names() {
        assert_eq!("roundrobin".parse::<Strategy>(), Ok(Strategy::RoundRobin));
        assert_eq!("random".parse::<Strategy>(), Ok(Strategy::Random));
        assert_eq!("p2c".parse::<Strategy>(), Ok(Strategy::P2c));
        assert_eq!("".parse::<Strategy>(), Ok(Strategy::default()));
        assert_eq!(Strategy::default(), Strategy::Random);
        let err = "fastest".parse::<Strategy>().unwrap_err();
        assert!(err.contains("p2c"), "{err}");
        assert!("fastest".parse::<Strategy>().is_err());
    }
}
