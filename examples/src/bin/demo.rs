//! The seed's chain in one process: greeter2 and greeter1 on the embedded registry, over real
//! TCP, then a plain tonic client (any gRPC client would do) calls greeter1 a few times.
//! Then the resilience wrappers at work: greeter1's client breaker opens while greeter2 is
//! stopped (the fallback answers), goes half-open and closes once greeter2 is back, and
//! greeter2's rate limiter refuses a burst. Last, a few of the series greeter1 serves on
//! `/metrics`. Throughout, greeter2 publishes each `Test` answer on `greeter.events` (the
//! embedded broker) and greeter1's subscriber prints it.
//!
//! It prints the story only: numbered, aligned lines, each transition as it happens. Logs go
//! to stderr at `warn` unless `RUST_LOG` asks for more (`RUST_LOG=info` shows every hop).
//! Colours only on a terminal without `NO_COLOR` (`anstream`).
//!
//! Run with: `cargo run -p examples --bin demo`

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use anstyle::{AnsiColor, Style};
use examples::{Greeter1, Greeter2, Greeter2Events};
use micro::wrappers::breaker::{BreakerLayer, Fallback, Settings};
use micro::wrappers::ratelimit::{LimitEvent, RateLimitLayer};
use proto::greeter::{
    FILE_DESCRIPTOR_SET, Request, Response, greeter_client::GreeterClient,
    greeter_server::GreeterServer,
};
use tonic::transport::Channel;

/// How long greeter1's breaker stays open before a half-open probe.
const OPEN_FOR: Duration = Duration::from_secs(2);

/// What a line of the story is about; its label is printed in its colour.
#[derive(Clone, Copy)]
enum Kind {
    Start,
    Call,
    Stop,
    Breaker,
    Limiter,
    Metric,
    Event,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Start => "start",
            Kind::Call => "call",
            Kind::Stop => "stop",
            Kind::Breaker => "breaker",
            Kind::Limiter => "limiter",
            Kind::Metric => "metric",
            Kind::Event => "event",
        }
    }

    fn style(self) -> Style {
        match self {
            Kind::Start | Kind::Stop => Style::new().bold(),
            Kind::Call => AnsiColor::Green.on_default(),
            Kind::Breaker => AnsiColor::Yellow.on_default().bold(),
            Kind::Limiter => AnsiColor::Red.on_default(),
            Kind::Metric => AnsiColor::Cyan.on_default(),
            Kind::Event => AnsiColor::Magenta.on_default(),
        }
    }
}

/// The story's last line number. The breaker and limiter callbacks print too, as things
/// happen (the limiter's from concurrent calls): a line is numbered and printed under the lock.
static LINE: Mutex<usize> = Mutex::new(0);

/// Prints one numbered line of the story: `NN  kind     text`.
fn story(kind: Kind, text: impl std::fmt::Display) {
    let mut line = LINE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    *line += 1;
    let n = *line;
    let style = kind.style();
    anstream::println!("{n:>2}  {style}{:<8}{style:#} {text}", kind.label());
}

/// A heading between the acts of the story.
fn act(title: &str) {
    let style = Style::new().bold().underline();
    anstream::println!("\n{style}{title}{style:#}");
}

/// A call's line: what was called, how long it took, what came back.
fn call_line(name: &str, started: Instant, result: &Result<String, tonic::Status>) {
    story(
        Kind::Call,
        format_args!(
            "{name:<8} {:>7.1} ms  {}",
            started.elapsed().as_secs_f64() * 1e3,
            describe(result)
        ),
    );
}

/// Logs on stderr (colours as the story's): `warn` and above unless `RUST_LOG` says
/// otherwise, except the breaker's own warning of each transition, which the story prints.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,micro_wrappers::breaker=error")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(anstream::stderr)
        .try_init();
}

async fn start_greeter2(limit: Option<RateLimitLayer>) -> anyhow::Result<micro::Running> {
    let mut service = micro::Service::new()
        .name("greeter2")
        .register_ttl(Duration::from_secs(5))
        .register_interval(Duration::from_secs(4))
        .descriptors(FILE_DESCRIPTOR_SET)?;
    if let Some(limit) = limit {
        service = service.wrap_handler(limit);
    }
    // Each Test answer is published on greeter.events (the embedded broker); greeter1 prints them.
    let events = service.publisher("greeter.events");
    let running = service
        .handle(GreeterServer::new(Greeter2Events {
            inner: Greeter2::default(),
            events,
        }))
        .start()
        .await?;
    story(
        Kind::Start,
        format_args!(
            "greeter2 on {} (node {})",
            running.local_addr(),
            running.node().id
        ),
    );
    Ok(running)
}

async fn hello(caller: &mut GreeterClient<Channel>, name: &str) -> Result<String, tonic::Status> {
    caller
        .hello(Request { name: name.into() })
        .await
        .map(|r| r.into_inner().msg)
}

fn describe(result: &Result<String, tonic::Status>) -> String {
    match result {
        Ok(msg) => format!("{msg:?}"),
        Err(status) => {
            let error = micro::errors::Error::from_status(status);
            format!(
                "error {} {:?} ({:?})",
                error.code,
                error.detail,
                status.code()
            )
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let demo_started = Instant::now();

    act("The chain: caller -> greeter1 Greeter.Hello -> greeter2 Greeter.Test (sleeps 100 ms)");
    let greeter2 = start_greeter2(None).await?;

    // greeter1's client: a gobreaker per called service, with a fallback for Greeter.Test.
    let breaker = BreakerLayer::gobreaker(Settings::new("greeter1").timeout(OPEN_FOR))
        .fallback(
            "Greeter.Test",
            Fallback::unary(|req: Request, err: &micro::errors::Error| {
                Ok(Response {
                    msg: format!("fallback for {} ({})", req.name, err.detail),
                })
            }),
        )
        .on_state_change(|name, from, to| {
            story(Kind::Breaker, format_args!("{name}: {from} -> {to}"))
        });
    // Prometheus metrics on a free loopback port (the seed serves them on :9000); the breaker
    // feeds the health series too.
    let greeter1 = micro::Service::new()
        .name("greeter1")
        .register_ttl(Duration::from_secs(5))
        .register_interval(Duration::from_secs(4))
        .descriptors(FILE_DESCRIPTOR_SET)?
        .metrics_address("127.0.0.1:0")
        .subscribe("greeter.events", |event: Response| async move {
            story(
                Kind::Event,
                format_args!("greeter1 got greeter.events {:?}", event.msg),
            );
            Ok::<_, std::convert::Infallible>(())
        });
    let breaker = greeter1.health().observe_breaker(breaker);
    let mut greeter1 = greeter1.wrap_client(breaker);
    let client_of_greeter2 = GreeterClient::new(greeter1.client().channel("greeter2"));
    let greeter1 = greeter1
        .handle(GreeterServer::new(Greeter1 {
            greeter2: client_of_greeter2,
        }))
        .start()
        .await?;
    story(
        Kind::Start,
        format_args!(
            "greeter1 on {} (node {})",
            greeter1.local_addr(),
            greeter1.node().id
        ),
    );

    // An outside caller: plain tonic over TCP, knowing only greeter1's address.
    let mut caller = GreeterClient::connect(format!("http://{}", greeter1.local_addr())).await?;
    for i in 1..=3 {
        let started = Instant::now();
        let result = hello(&mut caller, &format!("demo-{i}")).await;
        call_line(&format!("demo-{i}"), started, &result);
        result?;
    }

    act("Circuit breaker: greeter2 stops, greeter1's breaker opens, its fallback answers");
    greeter2.stop().await?;
    story(Kind::Stop, "greeter2 deregistered and stopped");
    for i in 1..=10 {
        let started = Instant::now();
        let result = hello(&mut caller, &format!("down-{i}")).await;
        call_line(&format!("down-{i}"), started, &result);
        if result.is_ok() {
            break;
        }
    }
    let limit = RateLimitLayer::new(5.0, 3)?.on_event(|endpoint, event| {
        if event == LimitEvent::Refused {
            story(
                Kind::Limiter,
                format_args!("greeter2 refused a call to {endpoint} (429)"),
            );
        }
    });
    let greeter2 = start_greeter2(Some(limit)).await?;
    story(
        Kind::Start,
        format_args!("greeter2 is back; the breaker probes after {OPEN_FOR:?}"),
    );
    let waiting = Instant::now();
    loop {
        let started = Instant::now();
        let result = hello(&mut caller, "back").await;
        let real = result.as_ref().is_ok_and(|m| m.contains("test back"));
        if real || waiting.elapsed() > OPEN_FOR * 5 {
            call_line("back", started, &result);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    act("Rate limit: greeter2 allows 5 calls/s, bursts of 3; a burst of 10 at once");
    // Let the limiter's bucket refill after the probe.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let burst: Vec<_> = (1..=10)
        .map(|i| {
            let mut caller = caller.clone();
            tokio::spawn(async move { hello(&mut caller, &format!("burst-{i}")).await })
        })
        .collect();
    let (mut admitted, mut refused) = (0, 0);
    for call in burst {
        match call.await? {
            Ok(_) => admitted += 1,
            Err(status) => {
                let error = micro::errors::Error::from_status(&status);
                if error.code == 429 {
                    refused += 1;
                } else {
                    story(
                        Kind::Call,
                        format_args!("unexpected: {}", describe(&Err(status))),
                    );
                }
            }
        }
    }
    story(
        Kind::Call,
        format_args!(
            "burst of 10: {admitted} admitted, {refused} refused with 429 \"too many request\" \
             (the caller's own error: greeter1's breaker stays closed)"
        ),
    );

    if let (Some(address), Some(metrics)) = (greeter1.metrics_addr(), greeter1.metrics()) {
        act(&format!(
            "Metrics: greeter1 serves http://{address}/metrics (and /health, /ready); a few series"
        ));
        let shown = [
            "micro_request_total{",
            "micro_client_request_total{",
            "micro_breaker_transitions_total{",
            "micro_broker_delivered_total{",
        ];
        metrics
            .encode()
            .lines()
            .filter(|line| shown.iter().any(|name| line.starts_with(name)))
            .for_each(|line| story(Kind::Metric, line));
    }

    greeter1.stop().await?;
    greeter2.stop().await?;
    story(
        Kind::Stop,
        format_args!(
            "both services deregistered and stopped ({:.1} s)",
            demo_started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}
