//! The throughput, latency and memory targets, checked against the rows.

use serde::{Deserialize, Serialize};

use super::{Comparison, Row, Run, median};
use crate::load;

/// A target of the issue, checked against the rows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Check {
    /// What the target says.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Whether it is met.
    pub met: bool,
}

/// The median over the rounds of `ours`'s figure divided by `peer`'s in the same round.
pub fn paired(
    runs: &[Run],
    ours: &str,
    peer: &str,
    figure: fn(&load::Report) -> f64,
) -> Option<f64> {
    let ratios: Vec<f64> = runs
        .iter()
        .filter(|r| r.scenario == ours)
        .filter_map(|r| {
            runs.iter()
                .find(|p| p.round == r.round && p.scenario == peer)
                .map(|p| figure(&r.report) / figure(&p.report))
        })
        .collect();
    (!ratios.is_empty()).then(|| median(ratios))
}

/// The throughput and latency targets that the rows can answer.
pub fn checks(comparison: &Comparison) -> Vec<Check> {
    let rows = &comparison.rows;
    let runs = &comparison.runs;
    let row = |name: &str| rows.iter().find(|r| r.scenario == name);
    let mut checks = Vec::new();
    // The call stack's targets: the median paired ratio against the peer doing the same work.
    let mut paired_target =
        |ours: &str, peer: &str, calls_at_least: f64, p99_at_most: Option<f64>| {
            if let Some(calls) = paired(runs, ours, peer, |r| r.calls_per_sec) {
                checks.push(Check {
                    target: format!("{ours}: >= {calls_at_least} x {peer} calls/s (median paired)"),
                    measured: format!("{calls:.3} x"),
                    met: calls >= calls_at_least,
                });
            }
            if let Some(line) = p99_at_most
                && let Some(p99) = paired(runs, ours, peer, |r| r.p99_us)
            {
                checks.push(Check {
                    target: format!("{ours}: p99 <= {line} x {peer} (median paired)"),
                    measured: format!("{p99:.3} x"),
                    met: p99 <= line,
                });
            }
        };
    paired_target("micro", "tonic-deadline", 0.98, Some(1.05));
    paired_target("micro-tower", "tonic-tower", 0.97, None);
    // The same, against bare tonic also sending the deadline micro always sends.
    paired_target("micro-tower", "tonic-tower-deadline", 0.97, None);
    // p2c against random over the same two nodes.
    paired_target("micro-p2c", "micro-two-nodes", 0.97, None);
    paired_target("micro-breaker", "micro", 0.97, Some(1.05));
    paired_target("micro-ratelimit", "micro", 0.97, Some(1.05));
    // Issue 11's cost of observing: tracing (0.9, OTLP to the sink) and metrics both sides.
    paired_target("micro-observed", "micro", 0.95, Some(1.10));
    paired_target("micro-full", "tonic", 0.90, None);
    // Issue 25: mutual TLS on both sides, pooled connections, against bare tonic's TLS with
    // the same certificates and provider, and against plaintext micro.
    paired_target("micro-tls", "tonic-tls", 0.97, Some(1.10));
    paired_target("micro-tls", "micro", 0.90, None);
    for row in rows {
        let Some(spans) = &row.spans else { continue };
        // A peer's tracer does not report what it ended: its spans are counted by the sink
        // only (the table's "sink received").
        if row.scenario.starts_with("go-micro") {
            continue;
        }
        let ended = spans.client.ended + spans.server.map_or(0, |s| s.ended);
        checks.push(Check {
            target: format!("{}: no span dropped (client and server)", row.scenario),
            measured: match spans.dropped {
                Some(dropped) => format!("{dropped} dropped of {ended} sampled"),
                None => "the server's span counts are missing".into(),
            },
            met: spans.dropped == Some(0),
        });
    }
    if let Some(micro) = row("micro")
        && let (Some(calls), Some(p99)) = (micro.ratio_calls_per_sec, micro.ratio_p99)
    {
        checks.push(Check {
            target: "micro, no wrappers: >= 0.97 x bare tonic calls/s".into(),
            measured: format!("{calls:.3} x"),
            met: calls >= 0.97,
        });
        checks.push(Check {
            target: "micro, no wrappers: p99 <= 1.05 x bare tonic".into(),
            measured: format!("{p99:.3} x"),
            met: p99 <= 1.05,
        });
    }
    // Not targets of the issue: micro against bare tonic doing the same work.
    let reference = |checks: &mut Vec<Check>, ours: &str, peer: &str, what: &str, line: f64| {
        if let (Some(ours), Some(peer)) = (row(ours), row(peer)) {
            let calls = ours.calls_per_sec / peer.calls_per_sec;
            checks.push(Check {
                target: format!("(reference) {what}: calls/s"),
                measured: format!("{calls:.3} x"),
                met: calls >= line,
            });
        }
    };
    reference(
        &mut checks,
        "micro",
        "tonic-deadline",
        "micro vs bare tonic sending the same 30 s deadline",
        0.97,
    );
    if let Some(tower) = row("micro-tower")
        && let Some(calls) = tower.ratio_calls_per_sec
    {
        checks.push(Check {
            target: "micro, tower middleware each side: >= 0.95 x bare tonic calls/s".into(),
            measured: format!("{calls:.3} x"),
            met: calls >= 0.95,
        });
    }
    // The wrapper plumbing alone.
    reference(
        &mut checks,
        "micro-tower",
        "tonic-tower",
        "micro-tower vs bare tonic with the same middleware",
        0.95,
    );
    if let (Some(chain), Some(base)) = (row("chain-micro"), row("chain-tonic")) {
        let per_hop = (chain.p50_us - base.p50_us) / f64::from(chain.hops);
        checks.push(Check {
            target: "chain: <= 50 µs added per hop at p50 over bare tonic".into(),
            measured: format!(
                "{per_hop:.1} µs per hop (p50 {:.1} vs {:.1} µs, {} hops)",
                chain.p50_us, base.p50_us, chain.hops
            ),
            met: per_hop <= 50.0,
        });
    }
    go_micro_checks(rows, &mut checks);
    observed_checks(rows, &mut checks);
    checks
}

/// Issue 22's target against go-micro observed as its users do (OpenTelemetry SDK at 0.9,
/// Prometheus wrapper): micro-observed >= 2.5 x go-micro-observed's calls per server
/// CPU-second.
fn observed_checks(rows: &[Row], checks: &mut Vec<Check>) {
    let row = |name: &str| rows.iter().find(|r| r.scenario == name);
    let (Some(ours), Some(peer)) = (row("micro-observed"), row("go-micro-observed")) else {
        return;
    };
    if let (Some(our_cpu), Some(peer_cpu)) = (ours.server_cpu_ms_per_1k, peer.server_cpu_ms_per_1k)
    {
        let ratio = peer_cpu / our_cpu;
        checks.push(Check {
            target: "micro-observed: >= 2.5 x go-micro-observed's calls per server CPU-second"
                .into(),
            measured: format!(
                "{ratio:.2} x ({:.0} vs {:.0} calls per CPU-second)",
                1e6 / our_cpu,
                1e6 / peer_cpu
            ),
            met: ratio >= 2.5,
        });
    }
}

/// The targets against the go-micro peer: micro-rs >= 1.3 x go-micro's calls/s per
/// server core (server CPU per call), <= 0.5 x its idle RSS.
fn go_micro_checks(rows: &[Row], checks: &mut Vec<Check>) {
    let row = |name: &str| rows.iter().find(|r| r.scenario == name);
    for (ours, peer) in [("micro", "go-micro"), ("chain-micro", "chain-go-micro")] {
        let (Some(ours), Some(peer)) = (row(ours), row(peer)) else {
            continue;
        };
        if let (Some(our_cpu), Some(peer_cpu)) =
            (ours.server_cpu_ms_per_1k, peer.server_cpu_ms_per_1k)
        {
            // calls/s per server core = 1e6 / (CPU ms per 1000 calls).
            let ratio = peer_cpu / our_cpu;
            checks.push(Check {
                target: format!(
                    "{}: >= 1.3 x {}'s calls/s per server core",
                    ours.scenario, peer.scenario
                ),
                measured: format!(
                    "{ratio:.2} x ({:.0} vs {:.0} calls per CPU-second)",
                    1e6 / our_cpu,
                    1e6 / peer_cpu
                ),
                met: ratio >= 1.3,
            });
        }
        if let (Some(our_rss), Some(peer_rss)) =
            (ours.server_idle_rss_kib, peer.server_idle_rss_kib)
        {
            let ratio = our_rss as f64 / peer_rss as f64;
            checks.push(Check {
                target: format!("{}: idle RSS <= 0.5 x {}'s", ours.scenario, peer.scenario),
                measured: format!(
                    "{ratio:.2} x ({:.1} vs {:.1} MiB)",
                    our_rss as f64 / 1024.0,
                    peer_rss as f64 / 1024.0
                ),
                met: ratio <= 0.5,
            });
        }
    }
}
