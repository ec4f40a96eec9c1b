//! One side's call series (handled calls, or calls made): the handles of each (service,
//! endpoint), resolved once, and their encoding at scrape time.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use micro_core::Outcome;
use parking_lot::RwLock;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};
use tonic::Code;

use super::{
    MetricsConfig, OPENCENSUS_LATENCY_MS, OTHER,
    histogram::{Bounds, Histogram, Reading},
    values::Values,
};

/// The gRPC codes, in the order of their numbers (`Code as usize` indexes it).
const CODES: usize = 17;

/// The series of one side: `<prefix>_request_total` and `<prefix>_request_duration_seconds`
/// by `service`, `endpoint` and `status` (and the seed's OpenCensus views if configured).
///
/// Each (service, endpoint) gets its [`Handles`] once, when first seen (or known); a call
/// then only adds to atomics. Label values are bounded: see [`MAX_VALUES`](super::MAX_VALUES).
pub struct Series {
    total: String,
    duration: String,
    side: &'static str,
    bounds: Arc<Bounds>,
    /// The OpenCensus views' latency bounds (milliseconds) and names, if on.
    opencensus: Option<Arc<Bounds>>,
    services: Values,
    /// Says whether a service is known elsewhere (the client's registry), asked when a new
    /// service comes past the bound.
    known_services: OnceLock<Box<Known>>,
    endpoints: Values,
    table: RwLock<Table>,
    cache: Cache,
}

/// The call path's way to a (service, endpoint)'s handles: a fixed table, filled once per
/// pair and only read after, so finding a pair is a hash of its names and atomic loads of
/// slots no core writes again (no lock, no shared write). Keyed by the names a call carries:
/// its `CallInfo`'s service and endpoint, or for a bare tonic app its path (service empty).
struct Cache {
    slots: Box<[OnceLock<Entry>]>,
    hasher: foldhash::fast::FixedState,
}

struct Entry {
    hash: u64,
    service: Arc<str>,
    endpoint: Arc<str>,
    handles: Arc<Handles>,
}

/// Slots of the cache (a power of two); pairs past them take the slow path.
const SLOTS: usize = 512;
/// Slots looked at before a pair is taken as absent.
const PROBES: usize = 8;

impl Cache {
    fn new() -> Self {
        Cache {
            slots: (0..SLOTS).map(|_| OnceLock::new()).collect(),
            hasher: foldhash::fast::FixedState::with_seed(0x6d69_6372_6f2d_7273),
        }
    }

    #[inline]
    fn hash(&self, service: &str, endpoint: &str) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = self.hasher.build_hasher();
        hasher.write(service.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(endpoint.as_bytes());
        hasher.finish()
    }

    #[inline]
    fn find(&self, service: &str, endpoint: &str) -> Option<&Arc<Handles>> {
        let hash = self.hash(service, endpoint);
        for probe in 0..PROBES {
            let entry = self.slots[(hash as usize).wrapping_add(probe) & (SLOTS - 1)].get()?;
            if entry.hash == hash && *entry.endpoint == *endpoint && *entry.service == *service {
                return Some(&entry.handles);
            }
        }
        None
    }

    fn insert(&self, service: Arc<str>, endpoint: Arc<str>, handles: Arc<Handles>) {
        let hash = self.hash(&service, &endpoint);
        let mut entry = Entry {
            hash,
            service,
            endpoint,
            handles,
        };
        for probe in 0..PROBES {
            let slot = &self.slots[(hash as usize).wrapping_add(probe) & (SLOTS - 1)];
            if let Some(taken) = slot.get() {
                if taken.hash == hash
                    && taken.endpoint == entry.endpoint
                    && taken.service == entry.service
                {
                    return;
                }
                continue;
            }
            match slot.set(entry) {
                Ok(()) => return,
                // Another call took the slot first: try the next.
                Err(back) => entry = back,
            }
        }
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let filled = self.slots.iter().filter(|s| s.get().is_some()).count();
        f.debug_struct("Cache").field("filled", &filled).finish()
    }
}

impl std::fmt::Debug for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Series")
            .field("total", &self.total)
            .field("duration", &self.duration)
            .field("services", &self.services)
            .field("endpoints", &self.endpoints)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// Every (service, endpoint) exported, by service then endpoint; in the order first seen.
#[derive(Debug, Default)]
struct Table {
    by_service: HashMap<Arc<str>, ByEndpoint, Fold>,
    all: Vec<Arc<Handles>>,
}

type Fold = foldhash::fast::RandomState;

/// Says whether a label value is known elsewhere.
type Known = dyn Fn(&str) -> bool + Send + Sync;

/// The handles of each endpoint of one service.
type ByEndpoint = HashMap<Arc<str>, Arc<Handles>, Fold>;

/// The OpenCensus latencies of one (service, endpoint): their bounds, one histogram per code.
type ByCode = (Arc<Bounds>, Box<[OnceLock<Histogram>; CODES]>);

/// The handles of one (service, endpoint): what a call adds to when it ends.
#[derive(Debug)]
pub struct Handles {
    service: Arc<str>,
    endpoint: Arc<str>,
    bounds: Arc<Bounds>,
    success: Histogram,
    fail: Histogram,
    /// The OpenCensus views: one latency histogram (milliseconds) per gRPC code, made when
    /// the code is first seen.
    opencensus: Option<ByCode>,
}

impl Handles {
    /// Counts a call that ended with `outcome` after `nanos` nanoseconds: two relaxed atomic
    /// adds (three with the OpenCensus views).
    #[inline]
    pub fn record(&self, outcome: &Outcome, nanos: u64) {
        let status = if outcome.is_success() {
            &self.success
        } else {
            &self.fail
        };
        status.observe(&self.bounds, nanos);
        if let Some((bounds, by_code)) = &self.opencensus
            && let Some(slot) = by_code.get(outcome.code as usize)
        {
            slot.get_or_init(|| Histogram::new(bounds))
                .observe(bounds, nanos);
        }
    }

    /// The exported service label.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The exported endpoint label (`other` when folded).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Series {
    /// The series named `<prefix>_...`, for `side` (`server` or `client`, in the help).
    pub(crate) fn new(prefix: &str, side: &'static str, config: &MetricsConfig) -> Self {
        let name = |n: &str| super::full_name(&[prefix, n]);
        Series {
            total: name("request"),
            duration: name("request_duration_seconds"),
            side,
            bounds: Arc::new(Bounds::new(&config.buckets, 1e9)),
            opencensus: config
                .opencensus
                .then(|| Arc::new(Bounds::new(&OPENCENSUS_LATENCY_MS, 1e6))),
            services: Values::default(),
            known_services: OnceLock::new(),
            endpoints: Values::default(),
            table: RwLock::default(),
            cache: Cache::new(),
        }
    }

    /// Keeps `service` and its `endpoints` as labels whatever the bound, and resolves their
    /// handles now (the services a server hosts, or a client found in the registry).
    pub fn know<'a>(&self, service: &str, endpoints: impl IntoIterator<Item = &'a str>) {
        self.services.know(service);
        let service = self.services.get(service);
        for endpoint in endpoints {
            self.endpoints.know(endpoint);
            if let (Some(service), Some(endpoint)) = (&service, self.endpoints.get(endpoint)) {
                let handles = self.handles_of(service, &endpoint);
                self.cache.insert(service.clone(), endpoint, handles);
            }
        }
    }

    /// Asks `known` whether a service is known (e.g. found in the registry) when a new one
    /// comes past the bound: a known service keeps its name. The first one set stays; `false`
    /// if one was set before.
    pub fn known_services(&self, known: impl Fn(&str) -> bool + Send + Sync + 'static) -> bool {
        self.known_services.set(Box::new(known)).is_ok()
    }

    /// The handles of a call's names (its service and endpoint, or an empty service and its
    /// path), if a call with these names was counted before: the call path's lookup, with no
    /// lock.
    #[inline]
    pub fn find(&self, service: &str, endpoint: &str) -> Option<Arc<Handles>> {
        self.cache.find(service, endpoint).cloned()
    }

    /// The handles of exported labels, if made.
    fn lookup(&self, service: &str, endpoint: &str) -> Option<Arc<Handles>> {
        self.table
            .read()
            .by_service
            .get(service)?
            .get(endpoint)
            .cloned()
    }

    /// The handles a call named (`service`, `endpoint`) (as [`Series::find`] is asked) counts
    /// into: `labels` are its service and endpoint labels, resolved as [`Series::resolve`].
    /// The names find these handles directly from now on, unless a label was folded.
    pub fn resolve_named(
        &self,
        names: (&Arc<str>, &Arc<str>),
        labels: (&Arc<str>, &Arc<str>),
        code: Code,
    ) -> Arc<Handles> {
        let handles = self.resolve(labels.0, labels.1, code);
        if handles.service == *labels.0 && handles.endpoint == *labels.1 {
            self.cache
                .insert(names.0.clone(), names.1.clone(), handles.clone());
        }
        handles
    }

    /// The handles a call of (`service`, `endpoint`) that ended with `code` counts into, made
    /// if new: its labels as admitted, each past the bound folded into `other`. A call
    /// answered `UNIMPLEMENTED` admits no new value (a label not seen before folds into
    /// `other`): a peer sending random services or methods does not use up the bound.
    pub fn resolve(&self, service: &Arc<str>, endpoint: &Arc<str>, code: Code) -> Arc<Handles> {
        if let Some(handles) = self.lookup(service, endpoint) {
            return handles;
        }
        let other = || Arc::<str>::from(OTHER);
        let (service, endpoint) = if code == Code::Unimplemented {
            (self.services.get(service), self.endpoints.get(endpoint))
        } else {
            let known = self.known_services.get().map(|known| &**known);
            (
                self.services.admit(service, known),
                self.endpoints.admit(endpoint, None),
            )
        };
        let (service, endpoint) = (
            service.unwrap_or_else(other),
            endpoint.unwrap_or_else(other),
        );
        self.handles_of(&service, &endpoint)
    }

    /// The handles of labels already admitted, made if new.
    fn handles_of(&self, service: &Arc<str>, endpoint: &Arc<str>) -> Arc<Handles> {
        if let Some(handles) = self.lookup(service, endpoint) {
            return handles;
        }
        let mut table = self.table.write();
        let by_endpoint = table.by_service.entry(service.clone()).or_default();
        if let Some(handles) = by_endpoint.get(endpoint) {
            return handles.clone();
        }
        let handles = Arc::new(Handles {
            service: service.clone(),
            endpoint: endpoint.clone(),
            bounds: self.bounds.clone(),
            success: Histogram::new(&self.bounds),
            fail: Histogram::new(&self.bounds),
            opencensus: self
                .opencensus
                .clone()
                .map(|bounds| (bounds, Box::new(std::array::from_fn(|_| OnceLock::new())))),
        });
        by_endpoint.insert(endpoint.clone(), handles.clone());
        table.all.push(handles.clone());
        handles
    }

    /// A snapshot of the handles, for encoding without holding the table.
    fn snapshot(&self) -> Vec<Arc<Handles>> {
        self.table.read().all.clone()
    }

    fn encode_views(
        &self,
        all: &[Arc<Handles>],
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let Some(bounds) = &self.opencensus else {
            return Ok(());
        };
        let side = self.side;
        let name = format!("opencensus_io_rpc_{side}_request_count");
        let mut metric =
            encoder.encode_descriptor(&name, "Count of RPCs", None, MetricType::Gauge)?;
        for handles in all {
            for (status, histogram) in by_code(handles) {
                let labels = method_labels(handles, status);
                ConstGauge::new(histogram.count()).encode(metric.encode_family(&labels)?)?;
            }
        }
        let name = format!("opencensus_io_rpc_{side}_latency");
        let mut metric =
            encoder.encode_descriptor(&name, "Latency of RPCs, ms", None, MetricType::Histogram)?;
        for handles in all {
            for (status, histogram) in by_code(handles) {
                let labels = method_labels(handles, status);
                encode_histogram(metric.encode_family(&labels)?, &histogram.read(bounds))?;
            }
        }
        let name = format!("opencensus_io_rpc_{side}_request_count_by_method");
        let mut metric =
            encoder.encode_descriptor(&name, "Count of RPCs by method", None, MetricType::Gauge)?;
        for handles in all {
            let count: u64 = by_code(handles).iter().map(|(_, h)| h.count()).sum();
            if count > 0 {
                let labels = [
                    ("rpc_service", &*handles.service),
                    ("rpc_endpoint", &*handles.endpoint),
                ];
                ConstGauge::new(count).encode(metric.encode_family(&labels)?)?;
            }
        }
        // By service and code, summed over the endpoints.
        let mut by_status = std::collections::BTreeMap::<(&str, &str), u64>::new();
        for handles in all {
            for (status, histogram) in by_code(handles) {
                *by_status.entry((&handles.service, status)).or_default() += histogram.count();
            }
        }
        let name = format!("opencensus_io_rpc_{side}_response_count_by_status_code");
        let mut metric = encoder.encode_descriptor(
            &name,
            "Count of responses by status code",
            None,
            MetricType::Gauge,
        )?;
        for ((service, status), count) in by_status {
            let labels = [("rpc_service", service), ("rpc_status", status)];
            ConstGauge::new(count).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The OpenCensus latencies of one (service, endpoint), by the name of their code.
/// The OpenCensus views' labels of one endpoint's calls that ended with `status`.
fn method_labels<'a>(handles: &'a Handles, status: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("rpc_service", &handles.service),
        ("rpc_endpoint", &handles.endpoint),
        ("rpc_status", status),
    ]
}

fn by_code(handles: &Handles) -> Vec<(&'static str, &Histogram)> {
    let views = handles.opencensus.as_ref().map(|(_, v)| &v[..]);
    views
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(code, slot)| Some((code_name(code), slot.get()?)))
        .collect()
}

fn encode_histogram(
    mut encoder: prometheus_client::encoding::MetricEncoder,
    reading: &Reading,
) -> Result<(), std::fmt::Error> {
    encoder.encode_histogram::<NoLabelSet>(reading.sum, reading.count, &reading.buckets, None)
}

/// Reads a [`Series`] at scrape time (registered in the metrics' registry).
#[derive(Debug)]
pub(crate) struct SeriesCollector(pub(crate) Arc<Series>);

impl Collector for SeriesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let series = &self.0;
        let all = series.snapshot();
        let statuses = |handles: &Handles| {
            [("success", &handles.success), ("fail", &handles.fail)]
                .into_iter()
                .map(|(status, histogram)| (status, histogram.read(&series.bounds)))
                .filter(|(_, reading)| reading.count > 0)
                .collect::<Vec<_>>()
        };
        let readings: Vec<_> = all.iter().map(|handles| statuses(handles)).collect();
        let help = format!(
            "Requests {} side, by service, endpoint and status",
            series.side
        );
        let mut metric =
            encoder.encode_descriptor(&series.total, &help, None, MetricType::Counter)?;
        for (handles, readings) in all.iter().zip(&readings) {
            for (status, reading) in readings {
                let labels = [
                    ("service", &*handles.service),
                    ("endpoint", &*handles.endpoint),
                    ("status", *status),
                ];
                ConstCounter::new(reading.count).encode(metric.encode_family(&labels)?)?;
            }
        }
        let help = format!("Request duration {} side, seconds", series.side);
        let mut metric =
            encoder.encode_descriptor(&series.duration, &help, None, MetricType::Histogram)?;
        for (handles, readings) in all.iter().zip(&readings) {
            for (status, reading) in readings {
                let labels = [
                    ("service", &*handles.service),
                    ("endpoint", &*handles.endpoint),
                    ("status", *status),
                ];
                encode_histogram(metric.encode_family(&labels)?, reading)?;
            }
        }
        series.encode_views(&all, &mut encoder)
    }
}

/// OpenCensus' status names (`OK`, `NOT_FOUND`, ...), by code number.
fn code_name(code: usize) -> &'static str {
    const NAMES: [&str; CODES] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code).copied().unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_follow_the_code_numbers() {
        assert_eq!(code_name(Code::Ok as usize), "OK");
        assert_eq!(code_name(Code::Internal as usize), "INTERNAL");
        assert_eq!(code_name(Code::Unauthenticated as usize), "UNAUTHENTICATED");
    }
}
