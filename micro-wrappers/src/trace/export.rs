//! Export off the call path. The collector ([`collect`](super::collect)) hands the ended
//! spans in batches to [`route`], which sends each to the [`Tracing`] that made it (a span
//! carries its route). Each `Tracing` holds a bounded queue and an export thread of its own:
//! a full queue drops the span (counted), a receiver that is down or hung costs that thread's
//! batches (counted), never a call.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use parking_lot::{Condvar, Mutex, RwLock};

use super::{
    Side, collect,
    config::{ConfigError, Exporter, Propagation, Resolved, SamplerConfig, SpanNames},
    otlp,
    record::SpanRecord,
    service,
    service::{Endpoint, Endpoints},
    zipkin,
};

/// What the exporters did with the sampled spans.
#[derive(Debug, Default)]
pub struct SpanStats {
    ended: AtomicU64,
    exported: AtomicU64,
    dropped: AtomicU64,
}

impl SpanStats {
    /// Sampled spans that ended (handed to the export queue, once per exporter).
    pub fn ended(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }

    /// Spans a receiver accepted.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans lost: the queue was full, or their batch failed to export (receiver down,
    /// timed out, refused).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Why spans did not leave.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// An exporter's last batch failed.
    #[error("{exporter} export failed: {reason}")]
    Failed {
        /// `otlp` or `zipkin`.
        exporter: &'static str,
        /// Why.
        reason: String,
    },
    /// The export thread did not finish in time (a receiver that never answers).
    #[error("spans not exported within {0:?}")]
    Timeout(Duration),
}

/// An exporter: sends a batch, says why not.
pub(crate) trait Export: Send {
    fn name(&self) -> &'static str;
    fn export(&mut self, spans: &[SpanRecord]) -> Result<(), String>;
}

/// Builds an exporter on the export thread (its clients belong there).
pub(crate) type Maker = Box<dyn FnOnce() -> Result<Box<dyn Export>, String> + Send>;

/// An installed tracer: what the trace wrappers use. Cheap to clone. Not a global: each
/// service (or bare tonic app) holds its own, with its own exporters.
#[derive(Clone, Debug)]
pub struct Tracing {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) route: usize,
    pub(crate) sampler: SamplerConfig,
    pub(crate) formats: Vec<Propagation>,
    pub(crate) endpoints: [Endpoints; 2],
    /// The endpoint of spans past the endpoints' capacity, per side.
    pub(crate) other: [&'static Endpoint; 2],
    names: SpanNames,
    queue: Arc<Queue>,
    thread: Mutex<Option<JoinHandle<()>>>,
    service_name: String,
    /// How long a flush waits for the export thread.
    patience: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.stop();
        if let Some(slot) = ROUTES.write().get_mut(self.route) {
            *slot = None;
        }
    }
}

/// The queues of the installed `Tracing`s, by route (`None` once shut down).
static ROUTES: RwLock<Vec<Option<Arc<Queue>>>> = RwLock::new(Vec::new());

impl Tracing {
    /// Checks the exporters' settings and starts this tracer's export thread.
    pub fn install(config: Resolved) -> Result<Self, ConfigError> {
        let stats = Arc::new(SpanStats::default());
        // Settings are checked here; the clients are built on the export thread.
        let mut makers: Vec<Maker> = Vec::new();
        for exporter in &config.exporters {
            match exporter {
                Exporter::Otlp => makers.push(otlp::maker(&config)?),
                Exporter::Zipkin => makers.push(zipkin::maker(&config)?),
            }
        }
        let queue = Arc::new(Queue {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
            max: config.max_queue,
            batch: config.max_batch,
            exporters: makers.len() as u64,
            stats,
        });
        let route = {
            let mut routes = ROUTES.write();
            routes.push(Some(queue.clone()));
            routes.len() - 1
        };
        let names = config.span_names;
        let other = [Side::Server, Side::Client]
            .map(|side| service::new_endpoint("/other", None, None, names, side, route));
        let thread = {
            let queue = queue.clone();
            let (delay, batch) = (config.batch_delay, config.max_batch);
            std::thread::Builder::new()
                .name(format!("micro-trace-{route}"))
                .spawn(move || run(&queue, makers, delay, batch))
                .map_err(|e| ConfigError::Exporter {
                    exporter: "tracing",
                    reason: format!("starting the export thread: {e}"),
                })?
        };
        let patience = (config.export_timeout + config.batch_delay)
            * (config.exporters.len().max(1) as u32)
            + Duration::from_secs(1);
        Ok(Tracing {
            inner: Arc::new(Inner {
                route,
                sampler: config.sampler,
                formats: config.propagators,
                endpoints: [Endpoints::new(names), Endpoints::new(names)],
                other,
                names,
                queue,
                thread: Mutex::new(Some(thread)),
                service_name: config.service_name,
                patience,
            }),
        })
    }

    /// How spans are named.
    pub fn span_names(&self) -> SpanNames {
        self.inner.names
    }

    /// The service name spans are reported under.
    pub fn service_name(&self) -> &str {
        &self.inner.service_name
    }

    /// Export counters.
    pub fn stats(&self) -> &Arc<SpanStats> {
        &self.inner.queue.stats
    }

    /// Exports every ended span now; blocks until the exporters answered (or timed out), and
    /// fails if the last batch of an exporter failed. Call from a blocking context
    /// (`tokio::task::spawn_blocking`).
    pub fn force_flush(&self) -> Result<(), ExportError> {
        if !collect::flush(self.inner.patience) {
            return Err(ExportError::Timeout(self.inner.patience));
        }
        self.inner.queue.flush(self.inner.patience)
    }

    /// Flushes the last spans and stops the export thread; blocking, like
    /// [`Tracing::force_flush`]. Spans that end afterwards are not exported.
    pub fn shutdown(&self) -> Result<(), ExportError> {
        let flushed = self.force_flush();
        self.inner.queue.stop();
        if let Some(thread) = self.inner.thread.lock().take()
            && self.inner.queue.wait_stopped(self.inner.patience)
        {
            let _ = thread.join();
        }
        flushed
    }

    /// [`Tracing::shutdown`] from async code: runs it on a blocking thread.
    pub async fn shutdown_async(&self) -> Result<(), ExportError> {
        let tracing = self.clone();
        tokio::task::spawn_blocking(move || tracing.shutdown())
            .await
            .unwrap_or_else(|e| {
                Err(ExportError::Failed {
                    exporter: "tracing",
                    reason: e.to_string(),
                })
            })
    }

    /// The server-side wrapper: a span per handled call.
    pub fn server(&self) -> super::TraceLayer {
        super::TraceLayer::new(self.clone(), Side::Server)
    }

    /// The client-side wrapper: a span per call made.
    pub fn client(&self) -> super::TraceLayer {
        super::TraceLayer::new(self.clone(), Side::Client)
    }
}

// === the queue between the collector and a Tracing's exporters ===

#[derive(Debug)]
struct Queue {
    state: Mutex<State>,
    /// Wakes the export thread: a full batch, a flush, the stop.
    wake: Condvar,
    /// Wakes flushers and the stopper.
    done: Condvar,
    max: usize,
    batch: usize,
    exporters: u64,
    stats: Arc<SpanStats>,
}

#[derive(Debug, Default)]
struct State {
    spans: Vec<SpanRecord>,
    flush_asked: u64,
    flushed: u64,
    /// The last failure of each exporter's last batch, if it failed.
    failed: Option<(&'static str, String)>,
    stop: bool,
    stopped: bool,
}

impl Queue {
    /// Takes what fits; counts the rest as dropped. Wakes the thread at a full batch.
    fn push(&self, spans: &mut Vec<SpanRecord>) {
        let n = spans.len() as u64;
        self.stats
            .ended
            .fetch_add(n * self.exporters, Ordering::Relaxed);
        if self.exporters == 0 {
            spans.clear();
            return;
        }
        let mut state = self.state.lock();
        if state.stop {
            self.stats
                .dropped
                .fetch_add(n * self.exporters, Ordering::Relaxed);
            spans.clear();
            return;
        }
        let room = self.max.saturating_sub(state.spans.len());
        if spans.len() > room {
            let lost = (spans.len() - room) as u64;
            self.stats
                .dropped
                .fetch_add(lost * self.exporters, Ordering::Relaxed);
            spans.truncate(room);
        }
        state.spans.append(spans);
        if state.spans.len() >= self.batch {
            self.wake.notify_one();
        }
    }

    fn flush(&self, patience: Duration) -> Result<(), ExportError> {
        let mut state = self.state.lock();
        if state.stopped {
            return Ok(());
        }
        state.flush_asked += 1;
        let want = state.flush_asked;
        self.wake.notify_one();
        let until = Instant::now() + patience;
        while state.flushed < want && !state.stopped {
            if self.done.wait_until(&mut state, until).timed_out() {
                return Err(ExportError::Timeout(patience));
            }
        }
        match &state.failed {
            Some((exporter, reason)) => Err(ExportError::Failed {
                exporter,
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_one();
    }

    fn wait_stopped(&self, patience: Duration) -> bool {
        let mut state = self.state.lock();
        let until = Instant::now() + patience;
        while !state.stopped {
            if self.done.wait_until(&mut state, until).timed_out() {
                return false;
            }
        }
        true
    }
}

/// The export thread: a batch every `delay`, or at once when `batch` spans wait or a flush is
/// asked; the last spans at the stop.
fn run(queue: &Queue, makers: Vec<Maker>, delay: Duration, batch: usize) {
    let mut exporters: Vec<Result<Box<dyn Export>, String>> =
        makers.into_iter().map(|make| make()).collect();
    let mut taken: Vec<SpanRecord> = Vec::new();
    loop {
        let (flush, stop) = {
            let mut state = queue.state.lock();
            let until = Instant::now() + delay;
            while state.spans.len() < batch
                && state.flush_asked == state.flushed
                && !state.stop
                && !queue.wake.wait_until(&mut state, until).timed_out()
            {}
            std::mem::swap(&mut taken, &mut state.spans);
            (state.flush_asked, state.stop)
        };
        let sent = !taken.is_empty();
        let mut failed = None;
        for exporter in &mut exporters {
            for chunk in taken.chunks(batch) {
                let n = chunk.len() as u64;
                let result = match exporter {
                    Ok(exporter) => exporter.export(chunk).map_err(|e| (exporter.name(), e)),
                    Err(e) => Err(("tracing", e.clone())),
                };
                match result {
                    Ok(()) => {
                        queue.stats.exported.fetch_add(n, Ordering::Relaxed);
                    }
                    Err((name, reason)) => {
                        tracing::debug!(exporter = name, spans = n, %reason, "span export failed");
                        queue.stats.dropped.fetch_add(n, Ordering::Relaxed);
                        failed = Some((name, reason));
                    }
                }
            }
        }
        taken.clear();
        let mut state = queue.state.lock();
        // A flush with nothing to send reports the latest batch's outcome.
        if sent {
            state.failed = failed;
        }
        state.flushed = state.flushed.max(flush);
        if stop && state.spans.is_empty() {
            state.stopped = true;
            queue.done.notify_all();
            return;
        }
        queue.done.notify_all();
    }
}

// === routing ===

/// Sends each span of `batch` (emptied) to the queue of the `Tracing` that made it; the spans
/// of a `Tracing` shut down are dropped.
pub(crate) fn route(batch: &mut Vec<SpanRecord>) {
    let routes = ROUTES.read();
    // Most batches are one service's: they go whole.
    let first = batch[0].route;
    if batch.iter().all(|span| span.route == first) {
        if let Some(Some(queue)) = routes.get(first as usize) {
            queue.push(batch);
        }
        batch.clear();
        return;
    }
    // Spans of several services in one process: one run per route.
    batch.sort_by_key(|span| span.route);
    while let Some(route) = batch.first().map(|span| span.route) {
        let n = batch.iter().take_while(|span| span.route == route).count();
        let mut run: Vec<SpanRecord> = batch.drain(..n).collect();
        if let Some(Some(queue)) = routes.get(route as usize) {
            queue.push(&mut run);
        }
    }
}

/// Counts `n` spans of `route` lost before they reached its queue.
pub(crate) fn dropped(route: u32, n: u64) {
    if let Some(Some(queue)) = ROUTES.read().get(route as usize) {
        queue
            .stats
            .ended
            .fetch_add(n * queue.exporters, Ordering::Relaxed);
        queue
            .stats
            .dropped
            .fetch_add(n * queue.exporters, Ordering::Relaxed);
    }
}
