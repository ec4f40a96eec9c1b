//! Starts etcd, the span sink and every scenario's server, runs the rounds, stops everything.

use std::time::Duration;

use anyhow::Context;

use super::{
    Comparison, Options, Run,
    process::{ServerProcess, find_line, run_load},
    rows::rows,
};
use crate::{
    Scenario, gomicro, load,
    observe::{self, SpanCounts},
    procstat,
    sink::{self, SinkReport},
};

/// The `bench load` arguments that target a scenario's server (`sink`: the span sink's
/// endpoint, for the observed scenarios).
fn target_args(
    scenario: Scenario,
    server: &ServerProcess,
    etcd: Option<&str>,
    sink: Option<&str>,
) -> Vec<String> {
    match (scenario.uses_micro(), etcd) {
        (true, Some(etcd)) => {
            let mut args = vec![
                "--etcd".into(),
                etcd.into(),
                "--service".into(),
                scenario.service().into(),
            ];
            if scenario == Scenario::MicroTower {
                args.push("--tower".into());
            }
            if scenario == Scenario::MicroP2c {
                args.extend(["--selector".into(), "p2c".into()]);
            }
            if scenario.client_breaker() {
                args.push("--breaker".into());
            }
            if scenario.observed()
                && let Some(sink) = sink
            {
                args.extend(["--observe".into(), sink.into()]);
            }
            args
        }
        _ if matches!(
            scenario,
            Scenario::TonicDeadline | Scenario::ChainTonicDeadline
        ) =>
        {
            vec![
                "--target".into(),
                server.addr.clone(),
                "--request-timeout".into(),
                "30s".into(),
            ]
        }
        _ if scenario == Scenario::TonicTower => {
            vec!["--target".into(), server.addr.clone(), "--tower".into()]
        }
        _ if scenario == Scenario::TonicTowerDeadline => vec![
            "--target".into(),
            server.addr.clone(),
            "--tower".into(),
            "--request-timeout".into(),
            "30s".into(),
        ],
        _ => vec!["--target".into(), server.addr.clone()],
    }
}
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) baseline: String,
    pub(super) hops: u32,
    pub(super) server: Option<ServerProcess>,
    /// Server processes whose CPU and memory count for this entry.
    pub(super) pids: Vec<u32>,
    pub(super) target: Vec<String>,
    pub(super) idle_rss_kib: Option<u64>,
    /// For an observed scenario: what its server and the sink reported at the end.
    pub(super) observed: Option<ObservedEntry>,
}

/// What an observed scenario's server and the sink said at the end of the run.
#[derive(Default)]
pub(super) struct ObservedEntry {
    /// The server's registered (and tracing) service name.
    pub(super) service: String,
    /// The server's span counts at exit.
    pub(super) server_spans: Option<SpanCounts>,
    /// Metric samples scraped once from the server's endpoint after the last round.
    pub(super) server_metric_samples: Option<u64>,
    /// Spans the sink received from the server and the load clients.
    pub(super) sink_received: Option<u64>,
}

/// Runs the comparison: starts etcd (unless given) and the servers, runs `rounds` rounds
/// (scenario order reversed every other round, so drift hits all alike), stops everything.
pub async fn run(options: &Options) -> anyhow::Result<Comparison> {
    let needs_etcd = options.scenarios.iter().any(|s| s.uses_micro()) || options.go_micro.is_some();
    let mut etcd_server = None;
    let etcd = match (&options.etcd, needs_etcd) {
        (Some(etcd), _) => Some(etcd.clone()),
        (None, true) => {
            let server = micro_test_support::EtcdServer::start().await?;
            let endpoint = server.endpoint();
            etcd_server = Some(server);
            Some(endpoint)
        }
        (None, false) => None,
    };

    if let Some(pin) = &options.pin {
        eprintln!(
            "bench: servers on CPUs {}, load generator on CPUs {}",
            pin.servers, pin.load
        );
    }
    // The span sink, on the load generator's CPUs, when a scenario exports spans.
    let sink = if options.scenarios.iter().any(|s| s.observed()) {
        let cpus = options.pin.as_ref().map(|pin| pin.load.as_str());
        let sink = ServerProcess::spawn_sink(&options.bin, cpus).await?;
        eprintln!("bench: span sink on {} (pid {})", sink.addr, sink.pid);
        Some(sink)
    } else {
        None
    };
    let sink_endpoint = sink.as_ref().map(|sink| format!("http://{}", sink.addr));
    // The TLS scenarios' certificates, made once, for their servers and load processes.
    let pki = if options.scenarios.iter().any(|s| s.tls()) {
        Some(crate::tls::make()?)
    } else {
        None
    };
    let tls_args = |scenario: Scenario| match &pki {
        Some(pki) if scenario.tls() => {
            vec!["--tls".to_owned(), pki.dir().display().to_string()]
        }
        _ => Vec::new(),
    };
    let mut entries = Vec::new();
    for &scenario in &options.scenarios {
        let mut args = Vec::new();
        if let Some(etcd) = &etcd
            && scenario.uses_micro()
        {
            args.extend(["--etcd".to_owned(), etcd.clone()]);
        }
        if scenario.observed()
            && let Some(endpoint) = &sink_endpoint
        {
            args.extend(["--otlp".to_owned(), endpoint.clone()]);
        }
        args.extend(tls_args(scenario));
        let cpus = options.pin.as_ref().map(|pin| pin.servers.as_str());
        let server = ServerProcess::spawn_on(&options.bin, scenario, &args, cpus).await?;
        eprintln!(
            "bench: {scenario} serving on {} (pid {})",
            server.addr, server.pid
        );
        entries.push(Entry {
            name: scenario.name().into(),
            baseline: scenario.baseline().name().into(),
            hops: scenario.hops(),
            pids: vec![server.pid],
            target: [
                target_args(scenario, &server, etcd.as_deref(), sink_endpoint.as_deref()),
                tls_args(scenario),
            ]
            .concat(),
            server: Some(server),
            idle_rss_kib: None,
            observed: scenario.observed().then(|| ObservedEntry {
                service: scenario.service().to_owned(),
                ..Default::default()
            }),
        });
    }
    if let Some((addr, pid)) = &options.foreign {
        entries.push(Entry {
            name: "foreign".into(),
            baseline: Scenario::Tonic.name().into(),
            hops: 1,
            server: None,
            pids: pid.iter().copied().collect(),
            target: vec!["--target".into(), addr.clone()],
            idle_rss_kib: None,
            observed: None,
        });
    }
    let mut go_peers = None;
    if let (Some(dir), Some(etcd)) = (&options.go_micro, &etcd) {
        let cpus = options.pin.as_ref().map(|pin| pin.servers.as_str());
        // The observed peer when the run has a span sink (an observed scenario).
        let sink_addr = sink.as_ref().map(|sink| sink.addr.as_str());
        let peers = gomicro::Peers::start(dir, etcd, cpus, sink_addr).await?;
        eprintln!(
            "bench: go-micro peers ({}) registered: {} (pid {}), {} (pid {}) -> {} (pid {})",
            gomicro::VERSION,
            peers.greeter.service,
            peers.greeter.pid,
            peers.greeter1.service,
            peers.greeter1.pid,
            peers.greeter2.service,
            peers.greeter2.pid
        );
        let discovered = |service: &str| {
            vec![
                "--etcd".to_owned(),
                etcd.clone(),
                "--service".to_owned(),
                service.to_owned(),
            ]
        };
        entries.push(Entry {
            name: "go-micro".into(),
            baseline: Scenario::Micro.name().into(),
            hops: 1,
            server: None,
            pids: vec![peers.greeter.pid],
            target: discovered(gomicro::GREETER),
            idle_rss_kib: None,
            observed: None,
        });
        entries.push(Entry {
            name: "chain-go-micro".into(),
            baseline: Scenario::ChainMicro.name().into(),
            hops: 2,
            server: None,
            pids: vec![peers.greeter1.pid, peers.greeter2.pid],
            target: discovered(gomicro::GREETER1),
            idle_rss_kib: None,
            observed: None,
        });
        if let (Some(observed), Some(sink)) = (&peers.observed, &sink_endpoint) {
            eprintln!(
                "bench: go-micro observed peer registered: {} (pid {})",
                observed.service, observed.pid
            );
            // The load observes as micro-observed's does: its client spans are sampled and
            // propagated, so the peer's parent-based sampler follows them.
            let mut target = discovered(gomicro::GREETER_OBSERVED);
            target.extend(["--observe".to_owned(), sink.clone()]);
            entries.push(Entry {
                name: "go-micro-observed".into(),
                baseline: Scenario::MicroObserved.name().into(),
                hops: 1,
                server: None,
                pids: vec![observed.pid],
                target,
                idle_rss_kib: None,
                observed: Some(ObservedEntry {
                    service: gomicro::GREETER_OBSERVED.to_owned(),
                    ..Default::default()
                }),
            });
        }
        go_peers = Some(peers);
    }
    // Idle memory: every server started and registered, no call made yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for entry in &mut entries {
        entry.idle_rss_kib = sum_memory(&entry.pids, |m| m.rss_kib);
    }

    let result = rounds(options, &entries).await;

    for entry in &mut entries {
        let Some(server) = entry.server.take() else {
            continue;
        };
        if let Some(observed) = &mut entry.observed {
            observed.server_metric_samples = scrape_metrics(&server).await;
        }
        match server.stop_with_output().await {
            Ok(output) => {
                if let Some(observed) = &mut entry.observed {
                    observed.server_spans = spans_line(&output, &entry.name);
                }
            }
            Err(err) => eprintln!("bench: stopping {}: {err:#}", entry.name),
        }
    }
    // Before the sink: the observed peer sends its last spans when it stops.
    if let Some(peers) = go_peers
        && let Err(err) = peers.stop().await
    {
        eprintln!("bench: stopping the go-micro peers: {err:#}");
    }
    // The sink last: every server and load client has sent its last spans.
    let sink_report = match sink {
        Some(sink) => match stop_sink(sink).await {
            Ok(report) => Some(report),
            Err(err) => {
                eprintln!("bench: the span sink: {err:#}");
                None
            }
        },
        None => None,
    };
    if let Some(report) = &sink_report {
        for entry in &mut entries {
            if let Some(observed) = &mut entry.observed {
                let client = observe::client_service_name(&observed.service);
                observed.sink_received =
                    Some(report.from_services([observed.service.as_str(), client.as_str()]));
            }
        }
    }
    drop(etcd_server);
    let runs = result?;
    let rows = rows(&entries, &runs);
    Ok(Comparison {
        runs,
        rows,
        pin: options.pin.clone(),
        sink: sink_report,
    })
}

/// Scrapes an observed server's metrics endpoint once (the `metrics <addr>` line it printed):
/// the number of samples, `None` (said on stderr) when it cannot.
async fn scrape_metrics(server: &ServerProcess) -> Option<u64> {
    let addr = server.line(observe::METRICS_PREFIX)?;
    match micro_test_support::peers::http_get(&format!("http://{addr}/metrics")).await {
        Ok((200, body)) => Some(observe::metric_samples(&body)),
        Ok((status, _)) => {
            eprintln!("bench: scraping {addr}/metrics: HTTP {status}");
            None
        }
        Err(err) => {
            eprintln!("bench: scraping {addr}/metrics: {err:#}");
            None
        }
    }
}

/// The span counts an observed server printed at exit.
fn spans_line(output: &[String], name: &str) -> Option<SpanCounts> {
    let Some(line) = find_line(output, observe::SPANS_PREFIX) else {
        eprintln!("bench: {name}: the server printed no span counts at exit");
        return None;
    };
    serde_json::from_str(&line)
        .inspect_err(|err| eprintln!("bench: {name}: span counts {line:?}: {err}"))
        .ok()
}

/// Stops the span sink and reads what it received.
async fn stop_sink(sink: ServerProcess) -> anyhow::Result<SinkReport> {
    let output = sink.stop_with_output().await?;
    let line = find_line(&output, sink::RECEIVED_PREFIX)
        .with_context(|| format!("the sink printed no report: {output:?}"))?;
    serde_json::from_str(&line).with_context(|| format!("the sink's report {line:?}"))
}

async fn rounds(options: &Options, entries: &[Entry]) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for round in 0..options.rounds {
        let order: Vec<&Entry> = if round % 2 == 0 {
            entries.iter().collect()
        } else {
            entries.iter().rev().collect()
        };
        for entry in order {
            let config = load::Config {
                server_pids: entry.pids.clone(),
                ..options.load.clone()
            };
            let cpus = options.pin.as_ref().map(|pin| pin.load.as_str());
            let report = run_load(&options.bin, &entry.target, &config, cpus)
                .await
                .with_context(|| format!("round {round}, {}", entry.name))?;
            let server_peak_rss_kib = sum_memory(&entry.pids, |m| m.peak_rss_kib);
            eprintln!(
                "bench: round {round} {:<16} {:>9.0} calls/s  p50 {:>7.1} µs  p99 {:>7.1} µs  errors {}",
                entry.name,
                report.calls_per_sec,
                report.p50_us,
                report.p99_us,
                report.errors + report.warmup_errors
            );
            runs.push(Run {
                round,
                scenario: entry.name.clone(),
                report,
                server_peak_rss_kib,
            });
        }
    }
    Ok(runs)
}

/// A memory figure summed over `pids` (`None` without pids or when one cannot be read).
fn sum_memory(pids: &[u32], field: fn(&procstat::Memory) -> u64) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|&pid| procstat::memory(pid).ok().map(|m| field(&m)))
        .sum()
}
