//! The sampler decides as OpenTelemetry does: opentelemetry_sdk's own sampler is the oracle,
//! for random trace ids, with and without a parent, at the seed's 0.9 and other ratios.

use micro_wrappers::trace::SamplerConfig;
use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
use rand::Rng;

fn oracle(sampler: &Sampler, trace_id: u128, parent: Option<bool>) -> bool {
    let parent = parent.map(|sampled| {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::NOT_SAMPLED
        };
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(trace_id),
            SpanId::from(1_u64),
            flags,
            true,
            TraceState::default(),
        ))
    });
    let result = sampler.should_sample(
        parent.as_ref(),
        TraceId::from(trace_id),
        "x",
        &SpanKind::Server,
        &[],
        &[],
    );
    result.decision == SamplingDecision::RecordAndSample
}

#[test]
fn decisions_equal_opentelemetry_sdk_for_10000_random_trace_ids() {
    let mut rng = rand::rng();
    let ours = SamplerConfig::default();
    let theirs = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.9)));
    let mut sampled = 0;
    for _ in 0..10_000 {
        let id: u128 = rng.random();
        let decision = ours.sample(id, None);
        assert_eq!(decision, oracle(&theirs, id, None), "root {id:032x}");
        sampled += u32::from(decision);
        for parent in [true, false] {
            assert_eq!(
                ours.sample(id, Some(parent)),
                oracle(&theirs, id, Some(parent)),
                "{id:032x} under a parent sampled={parent}"
            );
        }
    }
    assert!(
        (8_800..9_200).contains(&sampled),
        "{sampled} of 10000 at 0.9"
    );
}

#[test]
fn other_ratios_and_the_edges_agree_too() {
    let mut rng = rand::rng();
    for ratio in [0.0, 0.25, 0.5, 0.999, 1.0] {
        let ours = SamplerConfig::Ratio(ratio);
        let theirs = Sampler::TraceIdRatioBased(ratio);
        let edges = [0, 1, u128::from(u64::MAX), u128::MAX, 1 << 64];
        for id in edges.into_iter().chain((0..2_000).map(|_| rng.random())) {
            assert_eq!(
                ours.sample(id, None),
                oracle(&theirs, id, None),
                "{ratio} {id:032x}"
            );
        }
    }
}
