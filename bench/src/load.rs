//! The closed-loop load generator: `concurrency` calls in flight, a warm-up, then a measured
//! window of fixed length.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{observe::SpanCounts, procstat};

/// How to load a server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Calls in flight at any time.
    pub concurrency: usize,
    /// Calls made before the measured window (connections, discovery, caches warm up).
    pub warmup: Duration,
    /// Length of the measured window.
    pub duration: Duration,
    /// Server processes whose CPU time is sampled at the window's edges.
    pub server_pids: Vec<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            concurrency: 64,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            server_pids: Vec::new(),
        }
    }
}

/// What one load run measured (calls completed inside the measured window).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Successful calls completed in the window.
    pub calls: u64,
    /// Failed calls completed in the window.
    pub errors: u64,
    /// Failed calls during the warm-up.
    pub warmup_errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Length of the window, in seconds.
    pub seconds: f64,
    /// Successful calls per second.
    pub calls_per_sec: f64,
    /// Latency percentiles of successful calls, in microseconds.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Slowest call, µs.
    pub max_us: f64,
    /// CPU seconds of the load generator in the window.
    pub client_cpu_s: f64,
    /// CPU seconds of the server processes in the window (`None` when no pid was given).
    pub server_cpu_s: Option<f64>,
    /// The load client's spans over the run, warm-up included (read once its tracer shut
    /// down), when it traces.
    #[serde(default)]
    pub client_spans: Option<SpanCounts>,
    /// Metric samples in the load client's registry at the end, when it meters.
    #[serde(default)]
    pub client_metric_samples: Option<u64>,
}

impl Report {
    /// Client CPU milliseconds per 1000 calls.
    pub fn client_cpu_ms_per_1k(&self) -> f64 {
        per_1k_calls(self.client_cpu_s, self.calls)
    }

    /// Server CPU milliseconds per 1000 calls.
    pub fn server_cpu_ms_per_1k(&self) -> Option<f64> {
        self.server_cpu_s.map(|s| per_1k_calls(s, self.calls))
    }
}

fn per_1k_calls(cpu_s: f64, calls: u64) -> f64 {
    if calls == 0 {
        return f64::NAN;
    }
    cpu_s * 1e3 * 1e3 / calls as f64
}

struct TaskResult {
    histogram: Histogram<u64>,
    errors: u64,
    warmup_errors: u64,
    first_error: Option<String>,
}

/// Runs the closed loop: `config.concurrency` tasks, each calling `call` again as soon as
/// its previous call ends. Needs a multi-thread tokio runtime to use more than one core.
pub async fn run<F, Fut, E>(config: &Config, call: F) -> anyhow::Result<Report>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let window_start = start + config.warmup;
    let window_end = window_start + config.duration;

    let mut tasks = Vec::with_capacity(config.concurrency);
    for _ in 0..config.concurrency.max(1) {
        let call = call.clone();
        let histogram = new_histogram()?;
        tasks.push(tokio::spawn(async move {
            let mut result = TaskResult {
                histogram,
                errors: 0,
                warmup_errors: 0,
                first_error: None,
            };
            loop {
                let began = Instant::now();
                if began >= window_end {
                    break;
                }
                let outcome = call().await;
                let ended = Instant::now();
                let in_window = ended >= window_start && ended < window_end;
                match outcome {
                    Ok(()) if in_window => {
                        let nanos = u64::try_from((ended - began).as_nanos()).unwrap_or(u64::MAX);
                        result.histogram.saturating_record(nanos.max(1));
                    }
                    Ok(()) => {}
                    Err(err) => {
                        if in_window {
                            result.errors += 1;
                        } else if ended < window_start {
                            result.warmup_errors += 1;
                        }
                        if result.first_error.is_none() {
                            result.first_error = Some(err.to_string());
                        }
                    }
                }
            }
            result
        }));
    }

    // CPU at the window's edges (this process and the servers).
    let pids = config.server_pids.clone();
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(window_start.into()).await;
        let before = sample(&pids);
        tokio::time::sleep_until(window_end.into()).await;
        let after = sample(&pids);
        (before, after)
    });

    let mut histogram = new_histogram()?;
    let mut errors = 0;
    let mut warmup_errors = 0;
    let mut first_error = None;
    for task in tasks {
        let result = task.await.context("load task panicked")?;
        histogram
            .add(&result.histogram)
            .context("merging histograms")?;
        errors += result.errors;
        warmup_errors += result.warmup_errors;
        first_error = first_error.or(result.first_error);
    }
    let (before, after) = sampler.await.context("sampler panicked")?;
    let (before, after) = (before?, after?);

    let seconds = config.duration.as_secs_f64();
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1e3;
    let calls = histogram.len();
    Ok(Report {
        calls,
        errors,
        warmup_errors,
        first_error,
        seconds,
        calls_per_sec: calls as f64 / seconds,
        p50_us: us(0.50),
        p90_us: us(0.90),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: histogram.max() as f64 / 1e3,
        client_cpu_s: (after.client - before.client).as_secs_f64(),
        server_cpu_s: (!config.server_pids.is_empty())
            .then(|| (after.servers - before.servers).as_secs_f64()),
        client_spans: None,
        client_metric_samples: None,
    })
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 ns .. 60 s at 3 significant figures; `saturating_record` clamps anything beyond.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).context("histogram bounds")
}

struct Sample {
    client: Duration,
    servers: Duration,
}

fn sample(pids: &[u32]) -> anyhow::Result<Sample> {
    let client = procstat::cpu_time(std::process::id())?;
    let mut servers = Duration::ZERO;
    for pid in pids {
        servers += procstat::cpu_time(*pid)?;
    }
    Ok(Sample { client, servers })
}
