//! Registration and discovery latencies, and the RSS of an idle greeter service.
//!
//! A watching client is a micro registry [`Cache`] over its own etcd connection, subscribed
//! to changes; each change is timestamped the moment the cache publishes it (the cache has
//! applied it by then, so a lookup would see it).
//! - visible: a node of a known service is started in this process (`Service::start`
//!   returns once it is registered); time from `start` returning to the cache's event;
//! - gone after a graceful stop: time from calling `Running::stop` to the cache's delete;
//! - start to registered: a `bench serve micro` process is spawned; time from the spawn to
//!   the cache's event for its node; then, idle for a second, its RSS;
//! - gone after a kill: that process is killed with SIGKILL; time to the cache's delete
//!   (the lease must expire: at most the TTL after its last renewal).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use micro::registry::{Action, Cache, Etcd};
use proto::greeter::greeter_server::GreeterServer;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{Scenario, compare::ServerProcess, compare::median, procstat};

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `bench` binary (for the spawned greeter processes).
    pub bin: PathBuf,
    /// An etcd to use instead of starting one.
    pub etcd: Option<String>,
    /// In-process register / stop repetitions.
    pub reps: usize,
    /// Spawn / kill repetitions.
    pub kills: usize,
    /// Registration TTL of the spawned and in-process nodes.
    pub ttl: Duration,
    /// Registration renewal interval.
    pub interval: Duration,
}

/// The measurements, in milliseconds (RSS in KiB), one entry per repetition.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// TTL used, ms.
    pub ttl_ms: f64,
    /// `Service::start` (bind, register in etcd) duration, in process, ms.
    pub start_call_ms: Vec<f64>,
    /// From `Service::start` returning to the watching cache's event, ms (negative: the event
    /// came before `start` returned).
    pub visible_after_register_ms: Vec<f64>,
    /// From calling `Running::stop` to the watching cache's delete, ms.
    pub gone_after_stop_ms: Vec<f64>,
    /// From spawning a greeter process to the watching cache's event for its node, ms.
    pub spawn_to_registered_ms: Vec<f64>,
    /// RSS of that process after a second idle, KiB.
    pub idle_rss_kib: Vec<u64>,
    /// Peak RSS of that process by then, KiB.
    pub idle_peak_rss_kib: Vec<u64>,
    /// From SIGKILL to the watching cache's delete, ms.
    pub killed_gone_ms: Vec<f64>,
}

struct Seen {
    at: Instant,
    action: Action,
    service: String,
    node: String,
}

/// Runs the measurements.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let mut etcd_server = None;
    let etcd = match &options.etcd {
        Some(etcd) => etcd.clone(),
        None => {
            let server = micro_test_support::EtcdServer::start().await?;
            let endpoint = server.endpoint();
            etcd_server = Some(server);
            endpoint
        }
    };
    let result = measure(options, &etcd).await;
    drop(etcd_server);
    result
}

async fn measure(options: &Options, etcd: &str) -> anyhow::Result<Report> {
    let cache = Cache::new(Arc::new(Etcd::new([etcd.to_owned()])));
    let mut events = cache.subscribe();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            let at = Instant::now();
            for node in &event.service.nodes {
                let _ = seen_tx.send(Seen {
                    at,
                    action: event.action,
                    service: event.service.name.clone(),
                    node: node.id.clone(),
                });
            }
        }
    });
    let serve_options = crate::serve::Options {
        etcd: Some(etcd.to_owned()),
        name: Some("disc".into()),
        ttl: options.ttl,
        interval: options.interval,
        otlp: None,
        tls: None,
    };

    // A node that stays, so the service is known to the cache (new nodes of a known
    // service is what a client sees in production).
    let anchor = crate::serve::start(Scenario::Micro, &serve_options).await?;
    cache
        .get_service("disc")
        .await
        .context("anchor not found")?;
    // Let the watch settle and drop the anchor's own events.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while seen.try_recv().is_ok() {}

    let mut report = Report {
        ttl_ms: ms(options.ttl),
        ..Report::default()
    };
    let wait = Duration::from_secs(5);
    for _ in 0..options.reps {
        let service = micro::Service::new()
            .name("disc")
            .registry(Etcd::new([etcd.to_owned()]))
            .register_ttl(options.ttl)
            .register_interval(options.interval)
            .handle(GreeterServer::new(examples::Greeter2 {
                test_sleep: Duration::ZERO,
            }));
        let called = Instant::now();
        let running = service.start().await?;
        let registered = Instant::now();
        let node = running.node().id.to_string();
        let at = wait_for(&mut seen, wait, |s| {
            s.node == node && s.action != Action::Delete
        })
        .await
        .context("new node never seen")?;
        report.start_call_ms.push(ms(registered - called));
        report
            .visible_after_register_ms
            .push(signed_ms(registered, at));

        tokio::time::sleep(Duration::from_millis(50)).await;
        let stopping = Instant::now();
        running.stop().await?;
        let at = wait_for(&mut seen, wait, |s| {
            s.node == node && s.action == Action::Delete
        })
        .await
        .context("stopped node never gone")?;
        report.gone_after_stop_ms.push(signed_ms(stopping, at));
    }

    let args = [
        "--etcd".to_owned(),
        etcd.to_owned(),
        "--name".into(),
        "disc-proc".into(),
        "--ttl".into(),
        humantime::format_duration(options.ttl).to_string(),
        "--interval".into(),
        humantime::format_duration(options.interval).to_string(),
    ];
    for _ in 0..options.kills {
        while seen.try_recv().is_ok() {}
        let spawned = Instant::now();
        let server = ServerProcess::spawn(&options.bin, Scenario::Micro, &args).await?;
        let mut node = String::new();
        let at = wait_for(&mut seen, wait, |s| {
            if s.service == "disc-proc" && s.action != Action::Delete {
                node = s.node.clone();
                true
            } else {
                false
            }
        })
        .await
        .context("spawned node never seen")?;
        report.spawn_to_registered_ms.push(ms(at - spawned));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let memory = procstat::memory(server.pid)?;
        report.idle_rss_kib.push(memory.rss_kib);
        report.idle_peak_rss_kib.push(memory.peak_rss_kib);

        let killed = Instant::now();
        server.kill().await?;
        let at = wait_for(&mut seen, options.ttl + Duration::from_secs(10), |s| {
            s.node == node && s.action == Action::Delete
        })
        .await
        .context("killed node never gone")?;
        report.killed_gone_ms.push(ms(at - killed));
    }
    anchor.stop().await?;
    Ok(report)
}

async fn wait_for(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    limit: Duration,
    mut matches: impl FnMut(&Seen) -> bool,
) -> anyhow::Result<Instant> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some(s)) if matches(&s) => return Ok(s.at),
            Ok(Some(_)) => {}
            Ok(None) => bail!("cache events ended"),
            Err(_) => bail!("not within {limit:?}"),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn signed_ms(from: Instant, to: Instant) -> f64 {
    if to >= from {
        ms(to - from)
    } else {
        -ms(from - to)
    }
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

/// The report as a markdown table, with the targets.
pub fn table(report: &Report) -> String {
    let mut rows = Vec::new();
    let mut row = |what: &str, values: &[f64], unit: &str, target: &str, met: Option<bool>| {
        rows.push(format!(
            "| {what} | {} | {:.1} | {:.1} | {:.1} | {target} | {} |",
            values.len(),
            median(values.iter().copied()),
            values.iter().copied().fold(f64::NAN, f64::min),
            max(values),
            match met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            }
        ));
        let _ = unit;
    };
    let rss_mb: Vec<f64> = report
        .idle_rss_kib
        .iter()
        .map(|k| *k as f64 * 1024.0 / 1e6)
        .collect();
    row(
        "idle greeter RSS (MB, 10^6 B)",
        &rss_mb,
        "MB",
        "<= 15 MB",
        (!rss_mb.is_empty()).then(|| max(&rss_mb) <= 15.0),
    );
    let peak_mb: Vec<f64> = report
        .idle_peak_rss_kib
        .iter()
        .map(|k| *k as f64 * 1024.0 / 1e6)
        .collect();
    row(
        "idle greeter peak RSS so far (MB)",
        &peak_mb,
        "MB",
        "",
        None,
    );
    row(
        "process spawn -> registered, seen by a watcher (ms)",
        &report.spawn_to_registered_ms,
        "ms",
        "<= 100 ms",
        (!report.spawn_to_registered_ms.is_empty())
            .then(|| max(&report.spawn_to_registered_ms) <= 100.0),
    );
    row(
        "in-process Service::start (bind + register) (ms)",
        &report.start_call_ms,
        "ms",
        "",
        None,
    );
    row(
        "registered -> visible to a watching cache (ms)",
        &report.visible_after_register_ms,
        "ms",
        "<= 50 ms",
        (!report.visible_after_register_ms.is_empty())
            .then(|| max(&report.visible_after_register_ms) <= 50.0),
    );
    row(
        "graceful stop called -> gone from the cache (ms)",
        &report.gone_after_stop_ms,
        "ms",
        "<= 50 ms",
        (!report.gone_after_stop_ms.is_empty()).then(|| max(&report.gone_after_stop_ms) <= 50.0),
    );
    let limit = report.ttl_ms + 1000.0;
    row(
        &format!(
            "SIGKILL -> gone from the cache (ms, TTL {:.0} ms)",
            report.ttl_ms
        ),
        &report.killed_gone_ms,
        "ms",
        &format!("<= TTL + 1 s = {limit:.0} ms"),
        (!report.killed_gone_ms.is_empty()).then(|| max(&report.killed_gone_ms) <= limit),
    );
    let mut out = String::from(
        "| measurement | n | median | min | max | target | verdict (on max) |\n|---|---:|---:|---:|---:|---|---|\n",
    );
    for line in rows {
        out.push_str(&line);
        out.push('\n');
    }
    out
}
