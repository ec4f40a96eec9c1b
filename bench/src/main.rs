//! `bench`: the end-to-end load harness.
//!
//! Run the whole comparison with
//! `cargo run --release -p bench -- compare --rounds 5 --duration 5s`,
//! the discovery measurements with `cargo run --release -p bench -- discovery`,
//! and load any greeter server with
//! `cargo run --release -p bench -- load --target 127.0.0.1:50051`.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use bench::{Scenario, client::Target, compare, discovery, load, serve};
use clap::{Parser, Subcommand};
use tokio::io::AsyncReadExt;

#[derive(Parser)]
#[command(about = "End-to-end load harness for micro-rs, against bare tonic")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts a scenario's servers, prints `ready <addr>`, serves until stdin closes or a
    /// signal.
    Serve {
        /// The scenario.
        scenario: Scenario,
        /// etcd endpoint, for micro scenarios.
        #[arg(long)]
        etcd: Option<String>,
        /// Registered service name (micro, micro-tower).
        #[arg(long)]
        name: Option<String>,
        /// Registration TTL.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        ttl: Duration,
        /// Registration renewal interval.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "4s")]
        interval: Duration,
        /// OTLP gRPC endpoint (`http://127.0.0.1:PORT`, a `bench sink`) the observed
        /// scenarios' servers export their spans to.
        #[arg(long)]
        otlp: Option<String>,
        /// The TLS scenarios' certificates: a directory as `compare` makes it.
        #[arg(long)]
        tls: Option<PathBuf>,
    },
    /// The observed scenarios' span sink: an OTLP gRPC receiver that accepts and discards,
    /// counting spans per service. Prints `ready <addr>`; at exit (stdin closed or a signal)
    /// prints `received <json>`.
    Sink,
    /// Closed-loop load on one greeter server (`greeter.Greeter/Hello`).
    Load {
        /// Any greeter server's address (plain tonic client over one channel).
        #[arg(long, conflicts_with = "etcd")]
        target: Option<String>,
        /// etcd endpoint: find `--service` there with a micro client.
        #[arg(long, requires = "service")]
        etcd: Option<String>,
        /// Service name to discover.
        #[arg(long)]
        service: Option<String>,
        /// Adds a tower timeout: over the plain channel (`--target`), or through the micro
        /// client's `wrap_client`.
        #[arg(long)]
        tower: bool,
        /// With `--etcd`: the micro client's selector (random, roundrobin, p2c).
        #[arg(long, requires = "etcd")]
        selector: Option<micro::client::Strategy>,
        /// With `--etcd`: a gobreaker on the micro client (`wrap_client`).
        #[arg(long, requires = "etcd")]
        breaker: bool,
        /// With `--etcd`: traces the micro client (OTLP gRPC to this endpoint, parent-based
        /// 0.9 sampler) and meters it; the report then holds its span counts.
        #[arg(long, requires = "etcd")]
        observe: Option<String>,
        /// With `--target`: send this request timeout (`grpc-timeout`) on every call, as a
        /// micro client always does, to measure what carrying a deadline costs bare tonic.
        #[arg(long = "request-timeout", value_parser = humantime::parse_duration, requires = "target")]
        request_timeout: Option<std::time::Duration>,
        /// Mutual TLS with the certificates in this directory (as `compare` makes it): tonic's
        /// TLS with `--target`, micro's with `--etcd`.
        #[arg(long)]
        tls: Option<PathBuf>,
        #[command(flatten)]
        load: LoadArgs,
        /// Server process whose CPU time to measure (repeatable).
        #[arg(long = "server-pid")]
        server_pids: Vec<u32>,
        /// Prints the report as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Every scenario in its own server process, interleaved rounds, a table of medians.
    Compare {
        /// Interleaved rounds.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[command(flatten)]
        load: LoadArgs,
        /// Scenarios (default: all).
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<Scenario>,
        /// Also loads a foreign peer: `go-micro` starts the go-micro greeter (a `Hello` server
        /// and a greeter1 -> greeter2 chain, go-micro v5.30, from `--go-micro-bin`) pinned like
        /// the servers and registered in the same etcd, and with an observed scenario a `Hello`
        /// server observed as go-micro users do (row `go-micro-observed`); anything else is the
        /// `host:port` of a greeter server already running.
        #[arg(long)]
        foreign: Option<String>,
        /// Where the go-micro binaries are (default `$MICRO_INTEROP_BIN`, else `target/interop`).
        #[arg(long)]
        go_micro_bin: Option<PathBuf>,
        /// The foreign server's pid, to measure its CPU and RSS.
        #[arg(long, requires = "foreign")]
        foreign_pid: Option<u32>,
        /// etcd endpoint to use instead of starting one.
        #[arg(long)]
        etcd: Option<String>,
        /// Writes every run and the rows as JSON here.
        #[arg(long)]
        json_out: Option<PathBuf>,
        /// Lets the servers and the load generator share every CPU. By default the servers run
        /// on the first half of the CPUs and the load generator on the rest (`taskset`), when
        /// there are at least 2 CPUs and `taskset` runs.
        #[arg(long)]
        share_cpus: bool,
    },
    /// Events: publish -> subscriber delivery through one local NATS (started here), micro
    /// against bare async-nats in the same run, and go-micro's publisher -> subscriber
    /// (`MICRO_INTEROP_BIN`'s goevents) with `--go`.
    Events {
        /// Rounds of every scenario (medians reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Messages per scenario and round.
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// At most this many messages published and not yet received (Rust scenarios).
        #[arg(long, default_value_t = 512)]
        window: usize,
        /// Size of the message's text, bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Also go-micro (interop/cmd/goevents from MICRO_INTEROP_BIN or target/interop).
        #[arg(long)]
        go: bool,
    },
    /// Makes the TLS scenarios' certificates in a directory (for `serve --tls` and
    /// `load --tls` run by hand, e.g. by `scripts/callgrind-calls`).
    Certs {
        /// The directory (created if missing; files of the same names are replaced).
        dir: PathBuf,
    },
    /// Registration and discovery latencies, idle RSS.
    Discovery {
        /// etcd endpoint to use instead of starting one.
        #[arg(long)]
        etcd: Option<String>,
        /// In-process register / stop repetitions.
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// Spawn / kill repetitions.
        #[arg(long, default_value_t = 3)]
        kills: usize,
        /// Registration TTL.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
        ttl: Duration,
        /// Registration renewal interval.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        interval: Duration,
        /// Writes the raw measurements as JSON here.
        #[arg(long)]
        json_out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Calls in flight.
    #[arg(long, short = 'c', default_value_t = 64)]
    concurrency: usize,
    /// Warm-up before the measured window.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,
    /// The measured window.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
}

impl LoadArgs {
    fn config(&self, server_pids: Vec<u32>) -> load::Config {
        load::Config {
            concurrency: self.concurrency,
            warmup: self.warmup,
            duration: self.duration,
            server_pids,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();

    match Cli::parse().command {
        Command::Serve {
            scenario,
            etcd,
            name,
            ttl,
            interval,
            otlp,
            tls,
        } => {
            let options = serve::Options {
                etcd,
                name,
                ttl,
                interval,
                otlp,
                tls,
            };
            let started = serve::start(scenario, &options).await?;
            if let Some(metrics) = started.metrics {
                println!("{}{metrics}", bench::observe::METRICS_PREFIX);
            }
            println!("ready {}", started.addr);
            until_stdin_closes_or_signal().await?;
            let stats = started.span_stats();
            started.stop().await?;
            // Read after the stop: the tracers have sent their last spans.
            if !stats.is_empty() {
                let counts = stats
                    .iter()
                    .map(|s| bench::observe::SpanCounts::of(s))
                    .fold(bench::observe::SpanCounts::default(), |a, b| a + b);
                println!(
                    "{}{}",
                    bench::observe::SPANS_PREFIX,
                    serde_json::to_string(&counts)?
                );
            }
            // The stdin reader is a blocking read the runtime would wait for on a signal:
            // exit now that the servers have stopped.
            std::process::exit(0)
        }
        Command::Load {
            target,
            etcd,
            service,
            tower,
            selector,
            breaker,
            observe,
            request_timeout,
            tls,
            load,
            server_pids,
            json,
        } => {
            let tls = tls.as_deref().map(bench::tls::Files::in_dir);
            let target = match (target, etcd, service) {
                (Some(address), _, _) => Target::Address {
                    address,
                    timeout: request_timeout,
                    tower,
                    tls,
                },
                (None, Some(etcd), Some(service)) => Target::Discover {
                    etcd,
                    service,
                    tower,
                    selector: selector.unwrap_or_default(),
                    breaker,
                    observe,
                    tls,
                },
                _ => anyhow::bail!("give --target ADDR, or --etcd ADDR --service NAME"),
            };
            let connected = bench::client::connect(&target).await?;
            let call = connected.call;
            let mut report = load::run(&load.config(server_pids), move || call()).await?;
            if let Some(observed) = connected.observed {
                let (spans, samples) = observed.finish().await?;
                report.client_spans = Some(spans);
                report.client_metric_samples = Some(samples);
            }
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report:#?}");
            }
            Ok(())
        }
        Command::Sink => {
            let sink = bench::sink::Sink::start().await?;
            println!("ready {}", sink.addr());
            until_stdin_closes_or_signal().await?;
            let report = sink.stop().await?;
            println!(
                "{}{}",
                bench::sink::RECEIVED_PREFIX,
                serde_json::to_string(&report)?
            );
            std::process::exit(0)
        }
        Command::Compare {
            rounds,
            load,
            scenarios,
            foreign,
            foreign_pid,
            go_micro_bin,
            etcd,
            json_out,
            share_cpus,
        } => {
            let go_micro = foreign.as_deref() == Some("go-micro");
            let foreign = foreign.filter(|_| !go_micro);
            let options = compare::Options {
                bin: std::env::current_exe().context("finding the bench binary")?,
                rounds,
                load: load.config(Vec::new()),
                scenarios: if scenarios.is_empty() {
                    Scenario::ALL.to_vec()
                } else {
                    scenarios
                },
                foreign: foreign.map(|addr| (addr, foreign_pid)),
                go_micro: go_micro
                    .then(|| go_micro_bin.unwrap_or_else(bench::gomicro::default_bin_dir)),
                etcd,
                pin: if share_cpus {
                    None
                } else {
                    compare::Pin::halves()
                        .inspect_err(|err| eprintln!("bench: not pinning: {err:#}"))
                        .ok()
                },
            };
            let comparison = compare::run(&options).await?;
            if let Some(path) = json_out {
                std::fs::write(&path, serde_json::to_vec_pretty(&comparison)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            print!("{}", compare::table(&comparison));
            Ok(())
        }
        Command::Events {
            rounds,
            messages,
            window,
            size,
            go,
        } => {
            let binaries = go.then(micro_test_support::require::go_binaries);
            bench::events::run(rounds, messages, window, size, binaries.as_deref()).await
        }
        Command::Certs { dir } => bench::tls::write_to(&dir),
        Command::Discovery {
            etcd,
            reps,
            kills,
            ttl,
            interval,
            json_out,
        } => {
            let options = discovery::Options {
                bin: std::env::current_exe().context("finding the bench binary")?,
                etcd,
                reps,
                kills,
                ttl,
                interval,
            };
            let report = discovery::run(&options).await?;
            if let Some(path) = json_out {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            print!("{}", discovery::table(&report));
            Ok(())
        }
    }
}

/// Completes when stdin reaches end of file (the driver went away) or on SIGTERM / SIGINT.
async fn until_stdin_closes_or_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stdin = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = stdin => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
