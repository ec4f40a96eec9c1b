//! An ended span as the exporters read it, and the clock spans are timed with.

use std::{
    sync::LazyLock,
    time::{SystemTime, UNIX_EPOCH},
};

use super::service::Endpoint;

/// An ended span: a few words, the endpoint's name and attributes by reference. A span of
/// the framework allocates nothing here but its error's text; a span a handler opened owns
/// its fields.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpanRecord {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    /// 0: the root of its trace.
    pub(crate) parent_id: u64,
    pub(crate) begin_time_unix_ns: u64,
    pub(crate) duration_ns: u64,
    /// Which `Tracing` exports it (its index among the installed ones).
    pub(crate) route: u32,
    /// The call it describes; `None` for a span the handler opened.
    pub(crate) endpoint: Option<&'static Endpoint>,
    /// The name of a span the handler opened (a call's span is named by its endpoint).
    pub(crate) name: &'static str,
    /// The call's gRPC status code.
    pub(crate) code: Option<u8>,
    /// Why the span is an error, if it is one.
    pub(crate) error: Option<std::borrow::Cow<'static, str>>,
    /// The fields of a span the handler opened.
    pub(crate) properties: Vec<(&'static str, String)>,
}

impl SpanRecord {
    /// The span's name.
    pub(crate) fn name(&self) -> &str {
        self.endpoint.map_or(self.name, |e| e.name)
    }
}

/// When a span began: a monotonic reading (TSC where it is steady), made a wall-clock time
/// only on the export side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Began(quanta::Instant);

/// The wall-clock time and the monotonic reading taken together once, to turn one into the
/// other.
static ANCHOR: LazyLock<(u64, quanta::Instant)> = LazyLock::new(|| {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (unix, quanta::Instant::now())
});

impl Began {
    pub(crate) fn now() -> Self {
        LazyLock::force(&ANCHOR);
        Began(quanta::Instant::now())
    }

    /// `(begin_time_unix_ns, duration_ns)` of a span that began then and ends now.
    pub(crate) fn times(self) -> (u64, u64) {
        let end = quanta::Instant::now();
        let (unix, anchor) = *ANCHOR;
        let since = self.0.saturating_duration_since(anchor).as_nanos() as u64;
        let duration = end.saturating_duration_since(self.0).as_nanos() as u64;
        (unix + since, duration)
    }
}
