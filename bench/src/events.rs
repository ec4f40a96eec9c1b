//! `bench events`: publish -> subscriber delivery through one local NATS (started here), for
//! micro-rs's events against a bare `async-nats` publisher and subscriber in the same run, and
//! against go-micro's publisher -> subscriber (`interop/cmd/goevents`) through the same NATS.
//!
//! - `async-nats`: a bare client publishes payloads of the size micro's envelope has (a send
//!   timestamp in the first 8 bytes), a bare subscription on a second connection receives
//!   them; nothing is encoded or decoded.
//! - `micro`: a `Service::publisher::<greeter.Response>` publishes (protobuf, go-micro's
//!   envelope, headers), a second service's subscriber (`max_in_flight` 1, go-micro's
//!   default) decodes and handles each; two NATS connections as for the bare pair.
//!
//! Both Rust scenarios run in this process with at most `--window` messages unreceived (a
//! semaphore), below the subscription's bound, so nothing is dropped; throughput is messages
//! received per second of wall time, latency publish -> handler, CPU the whole process's
//! (publisher and subscriber). go-micro runs as two processes (publisher, subscriber) with no
//! window (go-micro has none): its CPU is both processes' (each reports its own `getrusage`).
//! NATS's own CPU is counted for no one.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use micro::broker::Nats;
use micro_test_support::NatsServer;
use parking_lot::Mutex;
use proto::greeter::Response;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    sync::Semaphore,
};

/// What one scenario measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Messages received.
    pub received: u64,
    /// Messages published.
    pub published: u64,
    /// Wall time from the first publish to the last message handled.
    pub elapsed: Duration,
    /// CPU time of the publisher and the subscriber.
    pub cpu: Duration,
    /// Publish -> handler latency, µs (none for go-micro).
    pub latency: Option<Histogram<u64>>,
}

impl Measured {
    /// Messages received per second.
    pub fn per_second(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }

    /// Messages received per CPU-second (publisher and subscriber).
    pub fn per_cpu_second(&self) -> f64 {
        self.received as f64 / self.cpu.as_secs_f64().max(1e-9)
    }
}

/// This process's user + system CPU time.
fn own_cpu() -> anyhow::Result<Duration> {
    crate::procstat::cpu_time(std::process::id())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// The message micro publishes: its text carries the send time, padded to `size` bytes.
fn message(sent_ns: u64, size: usize) -> Response {
    use std::fmt::Write as _;
    let mut msg = String::with_capacity(size.max(21));
    let _ = write!(msg, "{sent_ns:020} ");
    msg.extend(std::iter::repeat_n('x', size.saturating_sub(msg.len())));
    Response { msg }
}

/// The bare scenario: raw payloads of `payload_len` bytes.
pub async fn bare(
    nats: &NatsServer,
    messages: u64,
    window: usize,
    payload_len: usize,
) -> anyhow::Result<Measured> {
    let publisher = async_nats_connect(nats).await?;
    let subscriber = async_nats_connect(nats).await?;
    let mut subscription = subscriber.subscribe("bench.bare").await?;
    subscriber.flush().await?;
    let start = Instant::now();
    let permits = Arc::new(Semaphore::new(window));
    let receiver = {
        let permits = permits.clone();
        tokio::spawn(async move {
            let mut latency = histogram();
            let mut received = 0u64;
            while received < messages {
                let Some(message) = subscription.next().await else {
                    break;
                };
                let sent = u64::from_le_bytes(message.payload[..8].try_into().unwrap_or([0; 8]));
                let now = start.elapsed().as_nanos() as u64;
                let _ = latency.record((now.saturating_sub(sent) / 1000).max(1));
                received += 1;
                permits.add_permits(1);
            }
            (received, latency, start.elapsed())
        })
    };
    let cpu_before = own_cpu()?;
    let mut payload = vec![b'x'; payload_len.max(8)];
    for _ in 0..messages {
        permits.acquire().await?.forget();
        let sent = start.elapsed().as_nanos() as u64;
        payload[..8].copy_from_slice(&sent.to_le_bytes());
        publisher
            .publish("bench.bare", payload.clone().into())
            .await?;
    }
    publisher.flush().await?;
    let (received, latency, elapsed) = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .context("bare: not every message arrived within 60 s")??;
    Ok(Measured {
        scenario: "async-nats",
        received,
        published: messages,
        elapsed,
        cpu: own_cpu()? - cpu_before,
        latency: Some(latency),
    })
}

async fn async_nats_connect(nats: &NatsServer) -> anyhow::Result<async_nats::Client> {
    Ok(async_nats::connect(nats.url()).await?)
}

/// The micro scenario: `Service::publisher` -> a service's subscriber.
pub async fn micro(
    nats: &NatsServer,
    messages: u64,
    window: usize,
    size: usize,
) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let permits = Arc::new(Semaphore::new(window));
    let received = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(histogram()));
    let done = Arc::new(tokio::sync::Notify::new());
    let subscriber_broker = Nats::connect(&[nats.address()]).await?;
    let handler = {
        let (permits, received, latency, done) = (
            permits.clone(),
            received.clone(),
            latency.clone(),
            done.clone(),
        );
        move |event: Response| {
            let sent: u64 = event
                .msg
                .split(' ')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let now = start.elapsed().as_nanos() as u64;
            let _ = latency
                .lock()
                .record((now.saturating_sub(sent) / 1000).max(1));
            permits.add_permits(1);
            if received.fetch_add(1, Ordering::Relaxed) + 1 == messages {
                done.notify_one();
            }
            async { Ok::<_, std::convert::Infallible>(()) }
        }
    };
    let consumer = micro::Service::new()
        .name("bench-consumer")
        .registry(micro::registry::Memory::new())
        .broker(subscriber_broker.clone())
        .subscribe("bench.micro", handler)
        .start()
        .await?;
    subscriber_broker.flush().await?;
    let publisher_broker = Nats::connect(&[nats.address()]).await?;
    let producer = micro::Service::new()
        .name("bench-producer")
        .broker(publisher_broker.clone());
    let events = producer.publisher::<Response>("bench.micro");
    let cpu_before = own_cpu()?;
    for _ in 0..messages {
        permits.acquire().await?.forget();
        let sent = start.elapsed().as_nanos() as u64;
        events.publish(&message(sent, size)).await?;
    }
    publisher_broker.flush().await?;
    tokio::time::timeout(Duration::from_secs(60), done.notified())
        .await
        .context("micro: not every message arrived within 60 s")?;
    let elapsed = start.elapsed();
    let cpu = own_cpu()? - cpu_before;
    consumer.stop().await?;
    let latency = latency.lock().clone();
    Ok(Measured {
        scenario: "micro",
        received: received.load(Ordering::Relaxed),
        published: messages,
        elapsed,
        cpu,
        latency: Some(latency),
    })
}

/// go-micro's publisher -> subscriber, two processes of `interop/cmd/goevents`.
pub async fn go_micro(
    nats: &NatsServer,
    binaries: &Path,
    messages: u64,
) -> anyhow::Result<Measured> {
    let goevents = binaries.join("goevents");
    let command = |mode: &str| {
        let mut command = tokio::process::Command::new(&goevents);
        command
            .env("GOEVENTS_MODE", mode)
            .env("GOEVENTS_TOPIC", "bench.go")
            .env("GOEVENTS_QUIET", "1")
            .env("GOEVENTS_COUNT", messages.to_string())
            .env("GOEVENTS_EXPECT", messages.to_string())
            .env("MICRO_BROKER", "nats")
            .env("MICRO_BROKER_ADDRESS", nats.address())
            .env("MICRO_REGISTRY", "memory")
            .env("MICRO_SERVER_ADDRESS", "127.0.0.1:0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    };
    let mut sub = command("sub")
        .spawn()
        .with_context(|| format!("starting {}", goevents.display()))?;
    let mut sub_lines = BufReader::new(sub.stdout.take().context("piped")?).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), sub_lines.next_line()).await??;
    if ready.as_deref() != Some(r#"{"ready":true}"#) {
        bail!("goevents sub: {ready:?}");
    }
    let start = Instant::now();
    let publisher = command("pub").output().await?;
    if !publisher.status.success() {
        bail!("goevents pub failed: {:?}", publisher.status);
    }
    let published: serde_json::Value = serde_json::from_slice(&publisher.stdout)?;
    let pub_cpu = published["cpu_ms"].as_u64().unwrap_or(0);
    // The subscriber's line once it has them all; if some were lost, its count at SIGTERM.
    let done = tokio::time::timeout(Duration::from_secs(60), sub_lines.next_line()).await;
    let elapsed = start.elapsed();
    let line = match done {
        Ok(line) => line?,
        Err(_) => {
            if let Some(pid) = sub.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            tokio::time::timeout(Duration::from_secs(10), sub_lines.next_line()).await??
        }
    };
    let received: serde_json::Value =
        serde_json::from_str(line.as_deref().unwrap_or("{}")).context("goevents sub's count")?;
    let _ = sub.kill().await;
    Ok(Measured {
        scenario: "go-micro",
        received: received["received"].as_u64().unwrap_or(0),
        published: messages,
        elapsed,
        cpu: Duration::from_millis(pub_cpu + received["cpu_ms"].as_u64().unwrap_or(0)),
        latency: None,
    })
}

/// The body size micro's envelope has for a `size`-byte message (what the bare scenario
/// publishes).
pub fn envelope_len(size: usize) -> usize {
    use prost::Message as _;
    let body = message(u64::MAX, size).encode_to_vec();
    let mut envelope = micro::broker::Message::new(body);
    envelope
        .header
        .insert("Content-Type".into(), "application/grpc+proto".into());
    envelope
        .header
        .insert("Micro-Topic".into(), "bench.micro".into());
    micro::broker::envelope::encode(&envelope).len()
}

/// Runs every scenario `rounds` times and prints the medians (and each round).
pub async fn run(
    rounds: usize,
    messages: u64,
    window: usize,
    size: usize,
    go: Option<&Path>,
) -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let payload = envelope_len(size);
    println!(
        "events: {messages} messages of {size}-byte greeter.Response ({payload}-byte envelope), \
         window {window}, {rounds} rounds, NATS {}",
        nats.address()
    );
    let mut results: Vec<Vec<Measured>> = Vec::new();
    for round in 1..=rounds {
        let mut row = vec![
            bare(&nats, messages, window, payload).await?,
            micro(&nats, messages, window, size).await?,
        ];
        if let Some(binaries) = go {
            row.push(go_micro(&nats, binaries, messages).await?);
        }
        for m in &row {
            println!(
                "round {round} {:<10} {:>9.0} msg/s  p99 {:>7} µs  {:>9.0} msg/CPU-s  received {}/{}",
                m.scenario,
                m.per_second(),
                m.latency
                    .as_ref()
                    .map_or("-".into(), |h| h.value_at_quantile(0.99).to_string()),
                m.per_cpu_second(),
                m.received,
                m.published
            );
        }
        results.push(row);
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!();
    println!(
        "| scenario | msg/s | p50 µs | p99 µs | CPU ms / 1k msg | msg per CPU-s | received / published | msg/s ratio | p99 ratio | msg per CPU-s ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|");
    let columns = results[0].len();
    let summary: Vec<(f64, f64, f64, f64, String)> = (0..columns)
        .map(|c| {
            let column: Vec<&Measured> = results.iter().map(|row| &row[c]).collect();
            let mut rate: Vec<f64> = column.iter().map(|m| m.per_second()).collect();
            let mut per_cpu: Vec<f64> = column.iter().map(|m| m.per_cpu_second()).collect();
            let mut p50: Vec<f64> = column
                .iter()
                .filter_map(|m| m.latency.as_ref().map(|h| h.value_at_quantile(0.5) as f64))
                .collect();
            let mut p99: Vec<f64> = column
                .iter()
                .filter_map(|m| m.latency.as_ref().map(|h| h.value_at_quantile(0.99) as f64))
                .collect();
            let received: u64 = column.iter().map(|m| m.received).sum();
            let published: u64 = column.iter().map(|m| m.published).sum();
            (
                median(&mut rate),
                if p50.is_empty() {
                    f64::NAN
                } else {
                    median(&mut p50)
                },
                if p99.is_empty() {
                    f64::NAN
                } else {
                    median(&mut p99)
                },
                median(&mut per_cpu),
                format!("{received} / {published}"),
            )
        })
        .collect();
    let (bare_rate, _, bare_p99, _, _) = summary[0].clone();
    let micro_per_cpu = summary[1].3;
    for (c, (rate, p50, p99, per_cpu, counts)) in summary.iter().enumerate() {
        let name = results[0][c].scenario;
        let show = |v: f64| {
            if v.is_nan() {
                "-".to_owned()
            } else {
                format!("{v:.0}")
            }
        };
        let ratios = match name {
            "async-nats" => "1 (baseline) | 1 (baseline) | -".to_owned(),
            "micro" => format!("{:.3} | {:.3} | -", rate / bare_rate, p99 / bare_p99),
            _ => format!("- | - | micro / go-micro = {:.2}", micro_per_cpu / per_cpu),
        };
        println!(
            "| {name} | {rate:.0} | {} | {} | {:.1} | {per_cpu:.0} | {counts} | {ratios} |",
            show(*p50),
            show(*p99),
            1000.0 * 1000.0 / per_cpu,
        );
    }
    Ok(())
}
