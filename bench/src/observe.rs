//! What the observed scenarios turn on and what they report: tracing over OTLP gRPC to the
//! harness's sink with the default sampler, span counts, and a count of metric samples.

use micro::trace::{Exporter, OtlpProtocol, SamplerConfig, SpanStats, TraceConfig};
use serde::{Deserialize, Serialize};

/// The metrics endpoint of every observed service: a free loopback port.
pub const METRICS_ADDRESS: &str = "127.0.0.1:0";

/// The line a server process prints before `ready`: `metrics <addr>`.
pub const METRICS_PREFIX: &str = "metrics ";

/// The line a server process prints at exit: `spans <json SpanCounts>`.
pub const SPANS_PREFIX: &str = "spans ";

/// Tracing of an observed service: OTLP over gRPC to `endpoint`, the default sampler
/// (parent-based, 0.9 of root traces) whatever the environment says, spans reported as
/// `service`.
pub fn trace_config(endpoint: &str, service: &str) -> TraceConfig {
    TraceConfig::default()
        .exporters([Exporter::Otlp])
        .otlp_protocol(OtlpProtocol::Grpc)
        .otlp_endpoint(endpoint)
        .sampler(SamplerConfig::default())
        .service_name(service)
}

/// The service name the load client's spans are reported under when it calls `service`
/// (so the sink can tell each scenario's client spans apart).
pub fn client_service_name(service: &str) -> String {
    format!("bench-load.{service}")
}

/// What one tracer did with its sampled spans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanCounts {
    /// Sampled spans that ended.
    pub ended: u64,
    /// Spans the sink accepted.
    pub exported: u64,
    /// Spans whose batch failed to export.
    pub failed: u64,
}

impl SpanCounts {
    /// The counters of a tracer (read after it shut down, so nothing is still queued).
    pub fn of(stats: &SpanStats) -> Self {
        SpanCounts {
            ended: stats.ended(),
            exported: stats.exported(),
            failed: stats.dropped(),
        }
    }

    /// Spans that ended but never reached the sink: failed batches and the spans the SDK
    /// dropped when its queue was full.
    pub fn dropped(&self) -> u64 {
        self.ended.saturating_sub(self.exported)
    }
}

impl std::ops::Add for SpanCounts {
    type Output = SpanCounts;

    fn add(self, other: SpanCounts) -> SpanCounts {
        SpanCounts {
            ended: self.ended + other.ended,
            exported: self.exported + other.exported,
            failed: self.failed + other.failed,
        }
    }
}

/// Samples (lines that are neither comments nor blank) in a Prometheus text exposition.
pub fn metric_samples(text: &str) -> u64 {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_is_what_ended_and_never_left() {
        let counts = SpanCounts {
            ended: 10,
            exported: 7,
            failed: 2,
        };
        // 2 in failed batches, 1 lost in a full queue.
        assert_eq!(counts.dropped(), 3);
        assert_eq!((counts + counts).dropped(), 6);
        assert_eq!(SpanCounts::default().dropped(), 0);
    }

    #[test]
    fn samples_skip_comments_and_blank_lines() {
        let text = "# HELP a A.\n# TYPE a counter\na_total 1\n\nb{x=\"y\"} 2\n# EOF\n";
        assert_eq!(metric_samples(text), 2);
        assert_eq!(metric_samples(""), 0);
    }

    #[test]
    fn the_sampler_is_the_default_whatever_the_environment() {
        let resolved = trace_config("http://127.0.0.1:1", "s")
            .resolve("x", |name| {
                (name == "OTEL_TRACES_SAMPLER").then(|| "always_off".to_owned())
            })
            .unwrap();
        assert_eq!(resolved.sampler, SamplerConfig::default());
        assert_eq!(resolved.service_name, "s");
        assert_eq!(resolved.otlp_endpoint, "http://127.0.0.1:1");
    }
}
