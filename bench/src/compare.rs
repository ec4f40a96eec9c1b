//! The comparison driver: etcd, one server process per scenario, interleaved rounds of load
//! processes, and a table of medians with ratios to the baseline.

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, ChildStdin, Command},
    task::JoinHandle,
};

use crate::{
    Scenario, gomicro, load,
    observe::{self, SpanCounts},
    procstat,
    sink::{self, SinkReport},
};

/// How long a server process may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What to compare.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `bench` binary (server and load processes are spawned from it).
    pub bin: PathBuf,
    /// Interleaved rounds.
    pub rounds: usize,
    /// Calls in flight, warm-up and window of each load run.
    pub load: load::Config,
    /// The scenarios, in table order.
    pub scenarios: Vec<Scenario>,
    /// A foreign greeter server to load too (`host:port`), with its pid if known.
    pub foreign: Option<(String, Option<u32>)>,
    /// An etcd to use instead of starting one.
    pub etcd: Option<String>,
    /// Runs the servers and the load generator on separate CPUs.
    pub pin: Option<Pin>,
    /// Also loads the go-micro peers (`--foreign go-micro`), started from the binaries in this
    /// directory: rows `go-micro` (baseline `micro`) and `chain-go-micro` (baseline
    /// `chain-micro`).
    pub go_micro: Option<PathBuf>,
}

/// Which CPUs the servers and the load generator run on (`taskset -c` lists).
///
/// Unpinned, the two processes share every core and throughput follows how their threads
/// happen to interleave; pinned, each side has its own cores, as a client and a server on two
/// machines would, and run-to-run spread is much smaller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// CPUs of every server process.
    pub servers: String,
    /// CPUs of every load process.
    pub load: String,
}

impl Pin {
    /// The servers on the first half of this machine's CPUs, the load generator on the rest.
    pub fn halves() -> anyhow::Result<Pin> {
        let cpus = std::thread::available_parallelism()
            .context("counting CPUs")?
            .get();
        anyhow::ensure!(
            cpus >= 2,
            "pinning needs at least 2 CPUs, this machine has {cpus}"
        );
        let taskset = std::process::Command::new("taskset")
            .arg("--version")
            .output()
            .context("running taskset (util-linux)")?;
        anyhow::ensure!(taskset.status.success(), "taskset --version failed");
        let list = |range: std::ops::Range<usize>| {
            range.map(|c| c.to_string()).collect::<Vec<_>>().join(",")
        };
        Ok(Pin {
            servers: list(0..cpus / 2),
            load: list(cpus / 2..cpus),
        })
    }
}

/// A command running `bin`, on `cpus` (through `taskset`, which execs it: same pid) if given.
fn command(bin: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpus).arg(bin);
            command
        }
        None => Command::new(bin),
    }
}

/// One scenario's result in one round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    /// Round number, from 0.
    pub round: usize,
    /// Scenario name.
    pub scenario: String,
    /// The load process's report.
    pub report: load::Report,
    /// Peak RSS of the server process so far, KiB.
    pub server_peak_rss_kib: Option<u64>,
}

/// One scenario's medians over the rounds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Baseline scenario name (itself for a baseline).
    pub baseline: String,
    /// Remote hops per call.
    pub hops: u32,
    /// Rounds measured.
    pub rounds: usize,
    /// Median successful calls per second.
    pub calls_per_sec: f64,
    /// Median p50 latency, µs.
    pub p50_us: f64,
    /// Median p90 latency, µs.
    pub p90_us: f64,
    /// Median p99 latency, µs.
    pub p99_us: f64,
    /// Median p99.9 latency, µs.
    pub p999_us: f64,
    /// Median server CPU ms per 1000 calls.
    pub server_cpu_ms_per_1k: Option<f64>,
    /// Median client CPU ms per 1000 calls.
    pub client_cpu_ms_per_1k: f64,
    /// Peak RSS of the server process over the run, KiB.
    pub server_peak_rss_kib: Option<u64>,
    /// RSS of the server processes once started and registered, before any load, KiB.
    #[serde(default)]
    pub server_idle_rss_kib: Option<u64>,
    /// Successful calls over all rounds.
    pub calls: u64,
    /// Failed calls over all rounds (window and warm-up).
    pub errors: u64,
    /// First error seen.
    pub first_error: Option<String>,
    /// calls/s divided by the baseline's.
    pub ratio_calls_per_sec: Option<f64>,
    /// p50 divided by the baseline's.
    pub ratio_p50: Option<f64>,
    /// p99 divided by the baseline's.
    pub ratio_p99: Option<f64>,
    /// Median per-round paired calls/s ratios: lowest and highest.
    pub paired_ratio_range: Option<(f64, f64)>,
    /// What became of the spans, for an observed scenario.
    #[serde(default)]
    pub spans: Option<Spans>,
}

/// An observed scenario's spans and metrics over the whole run (warm-ups included).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Spans {
    /// The load clients' spans, summed over the rounds.
    pub client: SpanCounts,
    /// The server's spans, from its tracer at exit (`None`: it printed none).
    pub server: Option<SpanCounts>,
    /// Spans the sink received from the server and the load clients (`None`: no report).
    pub sink_received: Option<u64>,
    /// Spans dropped on both sides (`None` when the server's counts are missing).
    pub dropped: Option<u64>,
    /// Metric samples scraped once from the server's endpoint after the last round.
    pub server_metric_samples: Option<u64>,
    /// Metric samples in the load client's registry at the end of its last run.
    pub client_metric_samples: Option<u64>,
}

/// The whole result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    /// Every run, in the order made.
    pub runs: Vec<Run>,
    /// Medians per scenario.
    pub rows: Vec<Row>,
    /// Where the processes ran (`None`: sharing every CPU).
    #[serde(default)]
    pub pin: Option<Pin>,
    /// What the span sink received, when a scenario was observed.
    #[serde(default)]
    pub sink: Option<SinkReport>,
}

/// A server process started with `bench serve` (or the span sink, `bench sink`).
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The address it printed.
    pub addr: String,
    /// Its pid.
    pub pid: u32,
    /// Every other line it printed on stdout, so far.
    output: Arc<Mutex<Vec<String>>>,
    drain: Option<JoinHandle<()>>,
}

impl ServerProcess {
    /// Spawns `bin serve <scenario> <args>` and waits for its `ready <addr>` line.
    pub async fn spawn(bin: &Path, scenario: Scenario, args: &[String]) -> anyhow::Result<Self> {
        Self::spawn_on(bin, scenario, args, None).await
    }

    /// [`ServerProcess::spawn`] on these CPUs (a `taskset -c` list).
    pub async fn spawn_on(
        bin: &Path,
        scenario: Scenario,
        args: &[String],
        cpus: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut all = vec!["serve".to_owned(), scenario.name().to_owned()];
        all.extend_from_slice(args);
        Self::spawn_command(bin, &all, cpus, scenario.name()).await
    }

    /// Spawns the span sink (`bin sink`) on these CPUs and waits for its `ready <addr>`.
    pub async fn spawn_sink(bin: &Path, cpus: Option<&str>) -> anyhow::Result<Self> {
        Self::spawn_command(bin, &["sink".to_owned()], cpus, "sink").await
    }

    async fn spawn_command(
        bin: &Path,
        args: &[String],
        cpus: Option<&str>,
        what: &str,
    ) -> anyhow::Result<Self> {
        let mut child = command(bin, cpus)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {} {}", bin.display(), args.join(" ")))?;
        let pid = child.id().context("server exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut before = Vec::new();
        let ready = async {
            loop {
                match lines.next_line().await? {
                    Some(line) => match line.strip_prefix("ready ") {
                        Some(addr) => return Ok(Some(addr.trim().to_owned())),
                        None => before.push(line),
                    },
                    None => return Ok::<_, std::io::Error>(None),
                }
            }
        };
        let addr = tokio::time::timeout(READY_TIMEOUT, ready)
            .await
            .with_context(|| format!("{what}: not ready after {READY_TIMEOUT:?}"))??
            .with_context(|| format!("{what}: exited before ready (printed {before:?})"))?;
        let output = Arc::new(Mutex::new(before));
        // Keep draining stdout so the server never blocks on a full pipe.
        let drain = tokio::spawn({
            let output = output.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut output) = output.lock() {
                        output.push(line);
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(ServerProcess {
            child,
            stdin,
            addr,
            pid,
            output,
            drain: Some(drain),
        })
    }

    /// The first line printed so far (before or after `ready`) that starts with `prefix`,
    /// without the prefix.
    pub fn line(&self, prefix: &str) -> Option<String> {
        find_line(&self.output.lock().ok()?, prefix)
    }

    /// Closes its stdin (it stops gracefully) and waits; kills it after 10 s.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop_with_output().await.map(|_| ())
    }

    /// [`ServerProcess::stop`], then every line it printed besides `ready` (what it printed
    /// at exit included).
    pub async fn stop_with_output(mut self) -> anyhow::Result<Vec<String>> {
        drop(self.stdin.take());
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("server {} exited with {status}", self.pid);
                }
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("server {} did not stop in 10 s: killed", self.pid);
            }
        }
        if let Some(drain) = self.drain.take() {
            // Its stdout is closed: the drain ends with the last line.
            let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        }
        let output = match self.output.lock() {
            Ok(output) => output.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Ok(output)
    }

    /// Kills it with SIGKILL, as a crash would.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// The first of `lines` starting with `prefix`, without it.
fn find_line(lines: &[String], prefix: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|rest| rest.trim().to_owned())
}

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

/// Runs `bin load <target> ...` and reads its JSON report.
pub async fn run_load(
    bin: &Path,
    target: &[String],
    config: &load::Config,
    cpus: Option<&str>,
) -> anyhow::Result<load::Report> {
    let mut command = command(bin, cpus);
    command
        .arg("load")
        .args(target)
        .arg("--concurrency")
        .arg(config.concurrency.to_string())
        .arg("--warmup")
        .arg(humantime::format_duration(config.warmup).to_string())
        .arg("--duration")
        .arg(humantime::format_duration(config.duration).to_string())
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for pid in &config.server_pids {
        command.arg("--server-pid").arg(pid.to_string());
    }
    let limit = config.warmup + config.duration + Duration::from_secs(60);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .with_context(|| format!("load {target:?} did not finish in {limit:?}"))??;
    if !output.status.success() {
        bail!("load {target:?} exited with {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("load {target:?}: no report in {stdout:?}"))?;
    serde_json::from_str(line).with_context(|| format!("load report {line:?}"))
}

struct Entry {
    name: String,
    baseline: String,
    hops: u32,
    server: Option<ServerProcess>,
    /// Server processes whose CPU and memory count for this entry.
    pids: Vec<u32>,
    target: Vec<String>,
    idle_rss_kib: Option<u64>,
    /// For an observed scenario: what its server and the sink reported at the end.
    observed: Option<ObservedEntry>,
}

/// What an observed scenario's server and the sink said at the end of the run.
#[derive(Default)]
struct ObservedEntry {
    /// The server's registered (and tracing) service name.
    service: String,
    /// The server's span counts at exit.
    server_spans: Option<SpanCounts>,
    /// Metric samples scraped once from the server's endpoint after the last round.
    server_metric_samples: Option<u64>,
    /// Spans the sink received from the server and the load clients.
    sink_received: Option<u64>,
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
            target: target_args(scenario, &server, etcd.as_deref(), sink_endpoint.as_deref()),
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
        let peers = gomicro::Peers::start(dir, etcd, cpus).await?;
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
    if let Some(peers) = go_peers
        && let Err(err) = peers.stop().await
    {
        eprintln!("bench: stopping the go-micro peers: {err:#}");
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

/// The median (mean of the middle two for an even count); NaN when empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn rows(entries: &[Entry], runs: &[Run]) -> Vec<Row> {
    let mut by_name: HashMap<&str, Vec<&Run>> = HashMap::new();
    for run in runs {
        by_name.entry(run.scenario.as_str()).or_default().push(run);
    }
    let mut rows: Vec<Row> = entries
        .iter()
        .map(|entry| {
            let runs = by_name
                .get(entry.name.as_str())
                .cloned()
                .unwrap_or_default();
            let med = |f: fn(&load::Report) -> f64| median(runs.iter().map(|r| f(&r.report)));
            let server_cpu = runs
                .iter()
                .filter_map(|r| r.report.server_cpu_ms_per_1k())
                .collect::<Vec<_>>();
            Row {
                scenario: entry.name.clone(),
                baseline: entry.baseline.clone(),
                hops: entry.hops,
                rounds: runs.len(),
                calls_per_sec: med(|r| r.calls_per_sec),
                p50_us: med(|r| r.p50_us),
                p90_us: med(|r| r.p90_us),
                p99_us: med(|r| r.p99_us),
                p999_us: med(|r| r.p999_us),
                server_cpu_ms_per_1k: (!server_cpu.is_empty()).then(|| median(server_cpu)),
                client_cpu_ms_per_1k: med(load::Report::client_cpu_ms_per_1k),
                server_peak_rss_kib: runs.iter().filter_map(|r| r.server_peak_rss_kib).max(),
                server_idle_rss_kib: entry.idle_rss_kib,
                calls: runs.iter().map(|r| r.report.calls).sum(),
                errors: runs
                    .iter()
                    .map(|r| r.report.errors + r.report.warmup_errors)
                    .sum(),
                first_error: runs.iter().find_map(|r| r.report.first_error.clone()),
                ratio_calls_per_sec: None,
                ratio_p50: None,
                ratio_p99: None,
                paired_ratio_range: None,
                spans: entry.observed.as_ref().map(|observed| {
                    let client = runs
                        .iter()
                        .filter_map(|r| r.report.client_spans)
                        .fold(SpanCounts::default(), |a, b| a + b);
                    Spans {
                        client,
                        server: observed.server_spans,
                        sink_received: observed.sink_received,
                        dropped: observed
                            .server_spans
                            .map(|server| server.dropped() + client.dropped()),
                        server_metric_samples: observed.server_metric_samples,
                        client_metric_samples: runs
                            .iter()
                            .rev()
                            .find_map(|r| r.report.client_metric_samples),
                    }
                }),
            }
        })
        .collect();
    let snapshot = rows.clone();
    for row in &mut rows {
        let Some(base) = snapshot.iter().find(|b| b.scenario == row.baseline) else {
            continue;
        };
        row.ratio_calls_per_sec = Some(row.calls_per_sec / base.calls_per_sec);
        row.ratio_p50 = Some(row.p50_us / base.p50_us);
        row.ratio_p99 = Some(row.p99_us / base.p99_us);
        let paired: Vec<f64> = runs
            .iter()
            .filter(|r| r.scenario == row.scenario)
            .filter_map(|r| {
                runs.iter()
                    .find(|b| b.round == r.round && b.scenario == row.baseline)
                    .map(|b| r.report.calls_per_sec / b.report.calls_per_sec)
            })
            .collect();
        if !paired.is_empty() {
            let lo = paired.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = paired.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            row.paired_ratio_range = Some((lo, hi));
        }
    }
    rows
}

/// A target of the issue, checked against the rows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Check {
    /// What the target says.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Whether it is met.
    pub met: bool,
}

/// The median over the rounds of `ours`'s figure divided by `peer`'s in the same round.
pub fn paired(
    runs: &[Run],
    ours: &str,
    peer: &str,
    figure: fn(&load::Report) -> f64,
) -> Option<f64> {
    let ratios: Vec<f64> = runs
        .iter()
        .filter(|r| r.scenario == ours)
        .filter_map(|r| {
            runs.iter()
                .find(|p| p.round == r.round && p.scenario == peer)
                .map(|p| figure(&r.report) / figure(&p.report))
        })
        .collect();
    (!ratios.is_empty()).then(|| median(ratios))
}

/// The throughput and latency targets that the rows can answer.
pub fn checks(comparison: &Comparison) -> Vec<Check> {
    let rows = &comparison.rows;
    let runs = &comparison.runs;
    let row = |name: &str| rows.iter().find(|r| r.scenario == name);
    let mut checks = Vec::new();
    // The call stack's targets: the median paired ratio against the peer doing the same work.
    let mut paired_target =
        |ours: &str, peer: &str, calls_at_least: f64, p99_at_most: Option<f64>| {
            if let Some(calls) = paired(runs, ours, peer, |r| r.calls_per_sec) {
                checks.push(Check {
                    target: format!("{ours}: >= {calls_at_least} x {peer} calls/s (median paired)"),
                    measured: format!("{calls:.3} x"),
                    met: calls >= calls_at_least,
                });
            }
            if let Some(line) = p99_at_most
                && let Some(p99) = paired(runs, ours, peer, |r| r.p99_us)
            {
                checks.push(Check {
                    target: format!("{ours}: p99 <= {line} x {peer} (median paired)"),
                    measured: format!("{p99:.3} x"),
                    met: p99 <= line,
                });
            }
        };
    paired_target("micro", "tonic-deadline", 0.98, Some(1.05));
    paired_target("micro-tower", "tonic-tower", 0.97, None);
    // The same, against bare tonic also sending the deadline micro always sends.
    paired_target("micro-tower", "tonic-tower-deadline", 0.97, None);
    // p2c against random over the same two nodes.
    paired_target("micro-p2c", "micro-two-nodes", 0.97, None);
    paired_target("micro-breaker", "micro", 0.97, Some(1.05));
    paired_target("micro-ratelimit", "micro", 0.97, Some(1.05));
    // Issue 11's cost of observing: tracing (0.9, OTLP to the sink) and metrics both sides.
    paired_target("micro-observed", "micro", 0.95, Some(1.10));
    paired_target("micro-full", "tonic", 0.90, None);
    for row in rows {
        let Some(spans) = &row.spans else { continue };
        let ended = spans.client.ended + spans.server.map_or(0, |s| s.ended);
        checks.push(Check {
            target: format!("{}: no span dropped (client and server)", row.scenario),
            measured: match spans.dropped {
                Some(dropped) => format!("{dropped} dropped of {ended} sampled"),
                None => "the server's span counts are missing".into(),
            },
            met: spans.dropped == Some(0),
        });
    }
    if let Some(micro) = row("micro")
        && let (Some(calls), Some(p99)) = (micro.ratio_calls_per_sec, micro.ratio_p99)
    {
        checks.push(Check {
            target: "micro, no wrappers: >= 0.97 x bare tonic calls/s".into(),
            measured: format!("{calls:.3} x"),
            met: calls >= 0.97,
        });
        checks.push(Check {
            target: "micro, no wrappers: p99 <= 1.05 x bare tonic".into(),
            measured: format!("{p99:.3} x"),
            met: p99 <= 1.05,
        });
    }
    // Not targets of the issue: micro against bare tonic doing the same work.
    let reference = |checks: &mut Vec<Check>, ours: &str, peer: &str, what: &str, line: f64| {
        if let (Some(ours), Some(peer)) = (row(ours), row(peer)) {
            let calls = ours.calls_per_sec / peer.calls_per_sec;
            checks.push(Check {
                target: format!("(reference) {what}: calls/s"),
                measured: format!("{calls:.3} x"),
                met: calls >= line,
            });
        }
    };
    reference(
        &mut checks,
        "micro",
        "tonic-deadline",
        "micro vs bare tonic sending the same 30 s deadline",
        0.97,
    );
    if let Some(tower) = row("micro-tower")
        && let Some(calls) = tower.ratio_calls_per_sec
    {
        checks.push(Check {
            target: "micro, tower middleware each side: >= 0.95 x bare tonic calls/s".into(),
            measured: format!("{calls:.3} x"),
            met: calls >= 0.95,
        });
    }
    // The wrapper plumbing alone.
    reference(
        &mut checks,
        "micro-tower",
        "tonic-tower",
        "micro-tower vs bare tonic with the same middleware",
        0.95,
    );
    if let (Some(chain), Some(base)) = (row("chain-micro"), row("chain-tonic")) {
        let per_hop = (chain.p50_us - base.p50_us) / f64::from(chain.hops);
        checks.push(Check {
            target: "chain: <= 50 µs added per hop at p50 over bare tonic".into(),
            measured: format!(
                "{per_hop:.1} µs per hop (p50 {:.1} vs {:.1} µs, {} hops)",
                chain.p50_us, base.p50_us, chain.hops
            ),
            met: per_hop <= 50.0,
        });
    }
    go_micro_checks(rows, &mut checks);
    checks
}

/// The targets against the go-micro peer: micro-rs >= 1.3 x go-micro's calls/s per
/// server core (server CPU per call), <= 0.5 x its idle RSS.
fn go_micro_checks(rows: &[Row], checks: &mut Vec<Check>) {
    let row = |name: &str| rows.iter().find(|r| r.scenario == name);
    for (ours, peer) in [("micro", "go-micro"), ("chain-micro", "chain-go-micro")] {
        let (Some(ours), Some(peer)) = (row(ours), row(peer)) else {
            continue;
        };
        if let (Some(our_cpu), Some(peer_cpu)) =
            (ours.server_cpu_ms_per_1k, peer.server_cpu_ms_per_1k)
        {
            // calls/s per server core = 1e6 / (CPU ms per 1000 calls).
            let ratio = peer_cpu / our_cpu;
            checks.push(Check {
                target: format!(
                    "{}: >= 1.3 x {}'s calls/s per server core",
                    ours.scenario, peer.scenario
                ),
                measured: format!(
                    "{ratio:.2} x ({:.0} vs {:.0} calls per CPU-second)",
                    1e6 / our_cpu,
                    1e6 / peer_cpu
                ),
                met: ratio >= 1.3,
            });
        }
        if let (Some(our_rss), Some(peer_rss)) =
            (ours.server_idle_rss_kib, peer.server_idle_rss_kib)
        {
            let ratio = our_rss as f64 / peer_rss as f64;
            checks.push(Check {
                target: format!("{}: idle RSS <= 0.5 x {}'s", ours.scenario, peer.scenario),
                measured: format!(
                    "{ratio:.2} x ({:.1} vs {:.1} MiB)",
                    our_rss as f64 / 1024.0,
                    peer_rss as f64 / 1024.0
                ),
                met: ratio <= 0.5,
            });
        }
    }
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// The comparison as a markdown table, then the targets.
pub fn table(comparison: &Comparison) -> String {
    let mut out = String::new();
    let _ = match &comparison.pin {
        Some(pin) => writeln!(
            out,
            "Servers on CPUs {}, load generator on CPUs {}.\n",
            pin.servers, pin.load
        ),
        None => writeln!(out, "Servers and load generator sharing every CPU.\n"),
    };
    let _ = writeln!(
        out,
        "| scenario | calls/s | p50 µs | p90 µs | p99 µs | p99.9 µs | server CPU ms/1k calls | client CPU ms/1k calls | server peak RSS MiB | server idle RSS MiB | calls/s ratio | p50 ratio | p99 ratio | paired calls/s ratio min..max | errors |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    );
    for row in &comparison.rows {
        let is_base = row.scenario == row.baseline;
        let ratio = |v: Option<f64>| {
            if is_base {
                "1 (baseline)".to_owned()
            } else {
                opt(v, 3)
            }
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            row.scenario,
            row.calls_per_sec,
            row.p50_us,
            row.p90_us,
            row.p99_us,
            row.p999_us,
            opt(row.server_cpu_ms_per_1k, 1),
            row.client_cpu_ms_per_1k,
            opt(row.server_peak_rss_kib.map(|k| k as f64 / 1024.0), 1),
            opt(row.server_idle_rss_kib.map(|k| k as f64 / 1024.0), 1),
            ratio(row.ratio_calls_per_sec),
            ratio(row.ratio_p50),
            ratio(row.ratio_p99),
            match (is_base, row.paired_ratio_range) {
                (true, _) => "-".to_owned(),
                (false, Some((lo, hi))) => format!("{lo:.3}..{hi:.3}"),
                (false, None) => "-".to_owned(),
            },
            row.errors,
        );
    }
    spans_table(&mut out, comparison);
    let checks = checks(comparison);
    if !checks.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "| target | measured | |");
        let _ = writeln!(out, "|---|---|---|");
        for check in checks {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                check.target,
                check.measured,
                if check.met { "met" } else { "MISSED" }
            );
        }
    }
    out
}

/// The observed scenarios' spans and metrics, when there are any.
fn spans_table(out: &mut String, comparison: &Comparison) {
    let observed: Vec<(&Row, &Spans)> = comparison
        .rows
        .iter()
        .filter_map(|row| Some((row, row.spans.as_ref()?)))
        .collect();
    if observed.is_empty() {
        return;
    }
    let count = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| scenario | client spans ended | client exported | client dropped | server spans ended | server exported | server dropped | spans dropped | sink received | metric samples server / client |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (row, spans) in observed {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            row.scenario,
            spans.client.ended,
            spans.client.exported,
            spans.client.dropped(),
            count(spans.server.map(|s| s.ended)),
            count(spans.server.map(|s| s.exported)),
            count(spans.server.map(|s| s.dropped())),
            count(spans.dropped),
            count(spans.sink_received),
            count(spans.server_metric_samples),
            count(spans.client_metric_samples),
        );
    }
    let _ = writeln!(
        out,
        "\nSpans over the whole run, warm-ups included; sampled parent-based at 0.9; dropped = \
         ended but never accepted by the sink (failed batches and full-queue drops)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_splits_the_cpus_in_two() {
        let Ok(pin) = Pin::halves() else {
            return; // one CPU: nothing to split
        };
        let cpus = std::thread::available_parallelism().unwrap().get();
        let mut all: Vec<usize> = [&pin.servers, &pin.load]
            .iter()
            .flat_map(|list| list.split(',').map(|c| c.parse::<usize>().unwrap()))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..cpus).collect::<Vec<_>>());
        assert!(!pin.servers.is_empty() && !pin.load.is_empty());
    }
}
