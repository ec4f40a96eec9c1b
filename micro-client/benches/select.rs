//! One node pick: random, round robin and p2c over 3 and 30 nodes (target <= 100 ns).
//!
//! Run with `cargo bench -p micro-client --bench select`.
//! The selector is crate-private; the crate shows it to this bench in `micro_client::bench`
//! (hidden, not an API). "p2c (loads)"
//! looks both candidates' loads up by node id and reads them, then the chosen node again,
//! as the dispatch does.
//!
//! For instruction counts (steady on a loaded machine), `SELECT_LOOP=<n>` runs each pick `n`
//! times in `pick_once` instead of criterion:
//! `SELECT_LOOP=100000 valgrind --tool=callgrind --toggle-collect='*pick_once*' <bench binary>`
//! then `callgrind_annotate` gives the instructions of the `n` picks of each variant.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use micro_client::{
    Strategy,
    bench::{AllReady, Candidates, Load, Selector},
};
use micro_registry::{Node, Service};

fn services(nodes: usize) -> Vec<Service> {
    vec![Service {
        name: "greeter2".into(),
        version: "latest".into(),
        nodes: (0..nodes)
            .map(|i| Node {
                id: format!("greeter2-{i:08x}-0000-0000-0000-000000000000"),
                address: format!("127.0.0.1:{}", 40000 + i),
                ..Node::default()
            })
            .collect(),
        ..Service::default()
    }]
}

/// Every node ready, as the dispatch's `Readiness` does it: `cost` looks the node's load up
/// by id (as `Nodes::peek`) and reads it (no lock); `ready` looks the node up again (as
/// `Nodes::get`).
struct Loads {
    loads: HashMap<String, Load, foldhash::fast::RandomState>,
    now: tokio::time::Instant,
}

impl Candidates for Loads {
    fn ready(&mut self, node: &Node) -> bool {
        self.loads.contains_key(&node.id)
    }

    fn cost(&self, node: &Node) -> f64 {
        self.loads
            .get(&node.id)
            .map_or(0.0, |load| load.cost(self.now))
    }
}

/// One pick, kept out of line so that callgrind can count it alone.
#[inline(never)]
fn pick_once<'a>(
    selector: &Selector,
    services: &'a [Service],
    nodes: &mut dyn Candidates,
) -> Option<&'a Node> {
    selector.select_ready(black_box("greeter2"), black_box(services), &[], &[], nodes)
}

/// `SELECT_LOOP` mode: one variant (`SELECT_VARIANT`, as in criterion's names: `random`,
/// `roundrobin`, `p2c` or `p2c-loads`) over `SELECT_NODES` nodes, `n` times through
/// `pick_once`.
fn loop_mode(n: u64) {
    let variant = std::env::var("SELECT_VARIANT").unwrap_or_else(|_| "random".into());
    let count = std::env::var("SELECT_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let services = services(count);
    let (strategy, with_loads) = match variant.as_str() {
        "p2c-loads" => (Strategy::P2c, true),
        other => (other.parse().unwrap_or_default(), false),
    };
    let selector = Selector::new(strategy, vec![]);
    let mut loads = loads(&services);
    for _ in 0..n {
        if with_loads {
            black_box(pick_once(&selector, &services, &mut loads));
        } else {
            black_box(pick_once(&selector, &services, &mut AllReady));
        }
    }
}

fn loads(services: &[Service]) -> Loads {
    Loads {
        loads: services[0]
            .nodes
            .iter()
            .map(|node| {
                let load = Load::new(Duration::from_millis(30), Duration::from_secs(10));
                (node.id.clone(), load)
            })
            .collect(),
        now: tokio::time::Instant::now(),
    }
}

fn picks(c: &mut Criterion) {
    let mut g = c.benchmark_group("select");
    let tried: Vec<Arc<str>> = Vec::new();
    for n in [3, 30] {
        let services = services(n);
        for strategy in [Strategy::Random, Strategy::RoundRobin, Strategy::P2c] {
            let selector = Selector::new(strategy, vec![]);
            g.bench_function(format!("{strategy:?}, {n} nodes"), |b| {
                b.iter(|| {
                    let node = selector.select_ready(
                        black_box("greeter2"),
                        black_box(&services),
                        &[],
                        &tried,
                        &mut AllReady,
                    );
                    black_box(node.map(|n| n.address.len()))
                })
            });
        }
        let selector = Selector::new(Strategy::P2c, vec![]);
        let mut loads = loads(&services);
        g.bench_function(format!("P2c (loads), {n} nodes"), |b| {
            b.iter(|| {
                let node = selector.select_ready(
                    black_box("greeter2"),
                    black_box(&services),
                    &[],
                    &tried,
                    &mut loads,
                );
                black_box(node.map(|n| n.address.len()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, picks);

fn main() {
    if let Some(n) = std::env::var("SELECT_LOOP")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        return loop_mode(n);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
