//! One node pick: random, round robin and p2c over 3 and 30 nodes (target <= 100 ns).
//!
//! Run with `cargo bench -p micro-client --bench select`.
//! The selector is crate-private, so its source is compiled into this bench. "p2c (loads)"
//! reads each candidate's peak-EWMA load from a map by node id, as the dispatch will.
#![allow(missing_docs)]

#[allow(dead_code, unreachable_pub)]
#[path = "../src/selector.rs"]
mod selector;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use micro_registry::{Node, Service};
use selector::{AllReady, Candidates, Selector, Strategy, load::Load};

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

/// Every node ready; its cost read from its `Load` by node id.
struct Loads {
    loads: HashMap<String, Load, foldhash::fast::RandomState>,
    now: tokio::time::Instant,
}

impl Candidates for Loads {
    fn ready(&mut self, _: &Node) -> bool {
        true
    }

    fn cost(&self, node: &Node) -> f64 {
        self.loads
            .get(&node.id)
            .map_or(f64::MAX, |l| l.cost(self.now))
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
        let mut loads = Loads {
            loads: services[0]
                .nodes
                .iter()
                .map(|node| {
                    let load = Load::new(Duration::from_millis(30), Duration::from_secs(10));
                    (node.id.clone(), load)
                })
                .collect(),
            now: tokio::time::Instant::now(),
        };
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
criterion_main!(benches);
