use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use micro_core::Outcome;
use prometheus_client::{
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};
use tonic::Code;

use super::{
    MAX_SERIES, MetricsConfig, OPENCENSUS_LATENCY_MS,
    labels::{CallLabels, OcLabels},
};

/// Histograms with configured buckets.
#[derive(Clone, Debug)]
struct Buckets(Arc<[f64]>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// The series of one side (handled calls, or calls made).
#[derive(Debug)]
pub struct CallSeries {
    requests: Family<CallLabels, Counter>,
    duration: Family<CallLabels, Histogram, Buckets>,
    opencensus: Option<OpenCensus>,
    unknown: Arc<str>,
    other: Arc<str>,
    /// Label sets seen (an upper bound: two first calls racing both count).
    label_sets: AtomicUsize,
}

/// The seed's OpenCensus default views of one side. Counts are exported as gauges so the
/// names stay exactly OpenCensus' (`..._request_count`, no `_total`).
#[derive(Debug)]
struct OpenCensus {
    request_count: Family<OcLabels, Gauge>,
    latency: Family<OcLabels, Histogram, Buckets>,
    by_method: Family<OcLabels, Gauge>,
    by_status: Family<OcLabels, Gauge>,
}

impl CallSeries {
    /// Registers `<prefix>_request_total` and `<prefix>_request_duration_seconds` (and the
    /// OpenCensus views of `side` if configured).
    pub(crate) fn register(
        registry: &mut Registry,
        prefix: &str,
        side: &str,
        config: &MetricsConfig,
    ) -> Self {
        let name = |n: &str| super::full_name(&[prefix, n]);
        let requests = Family::default();
        registry.register(
            name("request"),
            format!("Requests {side} side, by service, endpoint and status"),
            requests.clone(),
        );
        let duration = Family::new_with_constructor(Buckets(config.buckets.clone().into()));
        registry.register(
            name("request_duration_seconds"),
            format!("Request duration {side} side, seconds"),
            duration.clone(),
        );
        let opencensus = config.opencensus.then(|| {
            let oc = |n: &str| format!("opencensus_io_rpc_{side}_{n}");
            let views = OpenCensus {
                request_count: Family::default(),
                latency: Family::new_with_constructor(Buckets(OPENCENSUS_LATENCY_MS.into())),
                by_method: Family::default(),
                by_status: Family::default(),
            };
            registry.register(
                oc("request_count"),
                "Count of RPCs",
                views.request_count.clone(),
            );
            registry.register(oc("latency"), "Latency of RPCs, ms", views.latency.clone());
            registry.register(
                oc("request_count_by_method"),
                "Count of RPCs by method",
                views.by_method.clone(),
            );
            registry.register(
                oc("response_count_by_status_code"),
                "Count of responses by status code",
                views.by_status.clone(),
            );
            views
        });
        CallSeries {
            requests,
            duration,
            opencensus,
            unknown: "unknown".into(),
            other: "other".into(),
            label_sets: AtomicUsize::new(0),
        }
    }

    /// Records one call.
    pub fn record(
        &self,
        service: &Arc<str>,
        endpoint: &Arc<str>,
        outcome: &Outcome,
        elapsed: Duration,
    ) {
        let status = if outcome.is_success() {
            "success"
        } else {
            "fail"
        };
        let endpoint = if outcome.code == Code::Unimplemented {
            &self.unknown
        } else {
            endpoint
        };
        let mut labels = CallLabels {
            service: service.clone(),
            endpoint: endpoint.clone(),
            status,
        };
        let known = match self.requests.get(&labels) {
            Some(counter) => {
                counter.inc();
                true
            }
            None => false,
        };
        if !known {
            if self.label_sets.fetch_add(1, Ordering::Relaxed) >= MAX_SERIES {
                labels.endpoint = self.other.clone();
            }
            self.requests.get_or_create(&labels).inc();
        }
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(oc) = &self.opencensus {
            let status = outcome.code.description_short();
            let full = OcLabels {
                service: Some(labels.service.clone()),
                endpoint: Some(labels.endpoint.clone()),
                status: Some(status),
            };
            oc.request_count.get_or_create(&full).inc();
            oc.latency
                .get_or_create(&full)
                .observe(elapsed.as_secs_f64() * 1000.0);
            let by_method = OcLabels {
                status: None,
                ..full.clone()
            };
            oc.by_method.get_or_create(&by_method).inc();
            let by_status = OcLabels {
                endpoint: None,
                ..full
            };
            oc.by_status.get_or_create(&by_status).inc();
        }
    }
}

/// OpenCensus' status names (`OK`, `NOT_FOUND`, ...).
trait ShortName {
    fn description_short(self) -> &'static str;
}

impl ShortName for Code {
    fn description_short(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}
