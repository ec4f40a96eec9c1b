//! One scenario's medians over the rounds, with ratios to its baseline.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Run, driver::Entry};
use crate::{load, observe::SpanCounts};

/// One scenario's medians over the rounds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Baseline scenario name (itself for a baseline).
    pub baseline: String,
    /// Remote hops per call.
    pub hops: u32,
    /// Rounds measured.
    pub rounds: usize,
    /// Median successful calls per second.
    pub calls_per_sec: f64,
    /// Median p50 latency, µs.
    pub p50_us: f64,
    /// Median p90 latency, µs.
    pub p90_us: f64,
    /// Median p99 latency, µs.
    pub p99_us: f64,
    /// Median p99.9 latency, µs.
    pub p999_us: f64,
    /// Median server CPU ms per 1000 calls.
    pub server_cpu_ms_per_1k: Option<f64>,
    /// Median client CPU ms per 1000 calls.
    pub client_cpu_ms_per_1k: f64,
    /// Peak RSS of the server process over the run, KiB.
    pub server_peak_rss_kib: Option<u64>,
    /// RSS of the server processes once started and registered, before any load, KiB.
    #[serde(default)]
    pub server_idle_rss_kib: Option<u64>,
    /// Successful calls over all rounds.
    pub calls: u64,
    /// Failed calls over all rounds (window and warm-up).
    pub errors: u64,
    /// First error seen.
    pub first_error: Option<String>,
    /// calls/s divided by the baseline's.
    pub ratio_calls_per_sec: Option<f64>,
    /// p50 divided by the baseline's.
    pub ratio_p50: Option<f64>,
    /// p99 divided by the baseline's.
    pub ratio_p99: Option<f64>,
    /// Median per-round paired calls/s ratios: lowest and highest.
    pub paired_ratio_range: Option<(f64, f64)>,
    /// What became of the spans, for an observed scenario.
    #[serde(default)]
    pub spans: Option<Spans>,
}

/// An observed scenario's spans and metrics over the whole run (warm-ups included).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Spans {
    /// The load clients' spans, summed over the rounds.
    pub client: SpanCounts,
    /// The server's spans, from its tracer at exit (`None`: it printed none).
    pub server: Option<SpanCounts>,
    /// Spans the sink received from the server and the load clients (`None`: no report).
    pub sink_received: Option<u64>,
    /// Spans dropped on both sides (`None` when the server's counts are missing).
    pub dropped: Option<u64>,
    /// Metric samples scraped once from the server's endpoint after the last round.
    pub server_metric_samples: Option<u64>,
    /// Metric samples in the load client's registry at the end of its last run.
    pub client_metric_samples: Option<u64>,
}
/// The median (mean of the middle two for an even count); NaN when empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}
pub(super) fn rows(entries: &[Entry], runs: &[Run]) -> Vec<Row> {
    let mut by_name: HashMap<&str, Vec<&Run>> = HashMap::new();
    for run in runs {
        by_name.entry(run.scenario.as_str()).or_default().push(run);
    }
    let mut rows: Vec<Row> = entries
        .iter()
        .map(|entry| {
            let runs = by_name
                .get(entry.name.as_str())
                .cloned()
                .unwrap_or_default();
            let med = |f: fn(&load::Report) -> f64| median(runs.iter().map(|r| f(&r.report)));
            let server_cpu = runs
                .iter()
                .filter_map(|r| r.report.server_cpu_ms_per_1k())
                .collect::<Vec<_>>();
            Row {
                scenario: entry.name.clone(),
                baseline: entry.baseline.clone(),
                hops: entry.hops,
                rounds: runs.len(),
                calls_per_sec: med(|r| r.calls_per_sec),
                p50_us: med(|r| r.p50_us),
                p90_us: med(|r| r.p90_us),
                p99_us: med(|r| r.p99_us),
                p999_us: med(|r| r.p999_us),
                server_cpu_ms_per_1k: (!server_cpu.is_empty()).then(|| median(server_cpu)),
                client_cpu_ms_per_1k: med(load::Report::client_cpu_ms_per_1k),
                server_peak_rss_kib: runs.iter().filter_map(|r| r.server_peak_rss_kib).max(),
                server_idle_rss_kib: entry.idle_rss_kib,
                calls: runs.iter().map(|r| r.report.calls).sum(),
                errors: runs
                    .iter()
                    .map(|r| r.report.errors + r.report.warmup_errors)
                    .sum(),
                first_error: runs.iter().find_map(|r| r.report.first_error.clone()),
                ratio_calls_per_sec: None,
                ratio_p50: None,
                ratio_p99: None,
                paired_ratio_range: None,
                spans: entry.observed.as_ref().map(|observed| {
                    let client = runs
                        .iter()
                        .filter_map(|r| r.report.client_spans)
                        .fold(SpanCounts::default(), |a, b| a + b);
                    Spans {
                        client,
                        server: observed.server_spans,
                        sink_received: observed.sink_received,
                        dropped: observed
                            .server_spans
                            .map(|server| server.dropped() + client.dropped()),
                        server_metric_samples: observed.server_metric_samples,
                        client_metric_samples: runs
                            .iter()
                            .rev()
                            .find_map(|r| r.report.client_metric_samples),
                    }
                }),
            }
        })
        .collect();
    let snapshot = rows.clone();
    for row in &mut rows {
        let Some(base) = snapshot.iter().find(|b| b.scenario == row.baseline) else {
            continue;
        };
        row.ratio_calls_per_sec = Some(row.calls_per_sec / base.calls_per_sec);
        row.ratio_p50 = Some(row.p50_us / base.p50_us);
        row.ratio_p99 = Some(row.p99_us / base.p99_us);
        let paired: Vec<f64> = runs
            .iter()
            .filter(|r| r.scenario == row.scenario)
            .filter_map(|r| {
                runs.iter()
                    .find(|b| b.round == r.round && b.scenario == row.baseline)
                    .map(|b| r.report.calls_per_sec / b.report.calls_per_sec)
            })
            .collect();
        if !paired.is_empty() {
            let lo = paired.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = paired.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            row.paired_ratio_range = Some((lo, hi));
        }
    }
    rows
}
