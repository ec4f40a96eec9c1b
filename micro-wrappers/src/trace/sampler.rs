//! The sampling decision, OpenTelemetry's to the bit: a trace that crosses go-micro (Go SDK)
//! and micro-rs services is sampled alike on both sides.

use super::SamplerConfig;

/// `TraceIdRatioBased`: sampled when the trace id's low 63 bits (bytes 8..16 read big-endian,
/// shifted right by one) are below `ratio * 2^63`, as opentelemetry_sdk's `sampler.rs`.
fn ratio(ratio: f64, trace_id: u128) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    // The u128 is the id read big-endian: its low 64 bits are bytes 8..16.
    ((trace_id as u64) >> 1) < bound
}

impl SamplerConfig {
    /// Whether a span of `trace_id` is sampled; `parent` is the parent's decision, `None` for
    /// a root.
    pub fn sample(&self, trace_id: u128, parent: Option<bool>) -> bool {
        match self {
            SamplerConfig::AlwaysOn => true,
            SamplerConfig::AlwaysOff => false,
            SamplerConfig::Ratio(r) => ratio(*r, trace_id),
            SamplerConfig::ParentBased(root) => match parent {
                Some(sampled) => sampled,
                None => root.sample(trace_id, None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_decides_and_roots_follow_the_ratio() {
        let s = SamplerConfig::default();
        assert!(s.sample(u128::MAX, Some(true)));
        assert!(!s.sample(0, Some(false)));
        assert!(s.sample(0, None), "the lowest ids are sampled");
        assert!(
            !s.sample(u128::from(u64::MAX), None),
            "the highest are not at 0.9"
        );
        assert!(SamplerConfig::Ratio(1.0).sample(u128::MAX, Some(false)));
        assert!(!SamplerConfig::Ratio(0.0).sample(0, Some(true)));
    }
}
