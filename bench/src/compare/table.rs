//! The comparison as markdown.

use std::fmt::Write as _;

use super::{Comparison, Row, Spans, checks};

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// The comparison as a markdown table, then the targets.
pub fn table(comparison: &Comparison) -> String {
    let mut out = String::new();
    let _ = match &comparison.pin {
        Some(pin) => writeln!(
            out,
            "Servers on CPUs {}, load generator on CPUs {}.\n",
            pin.servers, pin.load
        ),
        None => writeln!(out, "Servers and load generator sharing every CPU.\n"),
    };
    let _ = writeln!(
        out,
        "| scenario | calls/s | p50 µs | p90 µs | p99 µs | p99.9 µs | server CPU ms/1k calls | client CPU ms/1k calls | server peak RSS MiB | server idle RSS MiB | calls/s ratio | p50 ratio | p99 ratio | paired calls/s ratio min..max | errors |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    );
    for row in &comparison.rows {
        let is_base = row.scenario == row.baseline;
        let ratio = |v: Option<f64>| {
            if is_base {
                "1 (baseline)".to_owned()
            } else {
                opt(v, 3)
            }
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.calls_per_sec,
            row.p50_us,
            row.p90_us,
            row.p99_us,
            row.p999_us,
            opt(row.server_cpu_ms_per_1k, 1),
            row.client_cpu_ms_per_1k,
            opt(row.server_peak_rss_kib.map(|k| k as f64 / 1024.0), 1),
            opt(row.server_idle_rss_kib.map(|k| k as f64 / 1024.0), 1),
            ratio(row.ratio_calls_per_sec),
            ratio(row.ratio_p50),
            ratio(row.ratio_p99),
            match (is_base, row.paired_ratio_range) {
                (true, _) => "-".to_owned(),
                (false, Some((lo, hi))) => format!("{lo:.3}..{hi:.3}"),
                (false, None) => "-".to_owned(),
            },
            row.errors,
        );
    }
    spans_table(&mut out, comparison);
    let checks = checks(comparison);
    if !checks.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "| target | measured | |");
        let _ = writeln!(out, "|---|---|---|");
        for check in checks {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                check.target,
                check.measured,
                if check.met { "met" } else { "MISSED" }
            );
        }
    }
    out
}

/// The observed scenarios' spans and metrics, when there are any.
fn spans_table(out: &mut String, comparison: &Comparison) {
    let observed: Vec<(&Row, &Spans)> = comparison
        .rows
        .iter()
        .filter_map(|row| Some((row, row.spans.as_ref()?)))
        .collect();
    if observed.is_empty() {
        return;
    }
    let count = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| scenario | client spans ended | client exported | client dropped | server spans ended | server exported | server dropped | spans dropped | sink received | metric samples server / client |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (row, spans) in observed {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            row.scenario,
            spans.client.ended,
            spans.client.exported,
            spans.client.dropped(),
            count(spans.server.map(|s| s.ended)),
            count(spans.server.map(|s| s.exported)),
            count(spans.server.map(|s| s.dropped())),
            count(spans.dropped),
            count(spans.sink_received),
            count(spans.server_metric_samples),
            count(spans.client_metric_samples),
        );
    }
    let _ = writeln!(
        out,
        "\nSpans over the whole run, warm-ups included; sampled parent-based at 0.9; dropped = \
         ended but never accepted by the sink (failed batches and full-queue drops)."
    );
}
