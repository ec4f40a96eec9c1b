//! The seed's chain in one process: greeter2 and greeter1 on the embedded registry, over real
//! TCP, then a plain tonic client (any gRPC client would do) calls greeter1 a few times.
//! Then the resilience wrappers at work: greeter1's client breaker opens while greeter2 is
//! stopped (the fallback answers), goes half-open and closes once greeter2 is back, and
//! greeter2's rate limiter refuses a burst. Every transition is printed as it happens.
//!
//! Run with: `cargo run -p examples --bin demo`

use std::time::{Duration, Instant};

use examples::{Greeter1, Greeter2};
use micro::wrappers::breaker::{BreakerLayer, Fallback, Settings};
use micro::wrappers::ratelimit::{LimitEvent, RateLimitLayer};
use proto::greeter::{
    FILE_DESCRIPTOR_SET, Request, Response, greeter_client::GreeterClient,
    greeter_server::GreeterServer,
};
use tonic::transport::Channel;

/// How long greeter1's breaker stays open before a half-open probe.
const OPEN_FOR: Duration = Duration::from_secs(2);

async fn start_greeter2(limit: Option<RateLimitLayer>) -> anyhow::Result<micro::Running> {
    let mut service = micro::Service::new()
        .name("greeter2")
        .register_ttl(Duration::from_secs(5))
        .register_interval(Duration::from_secs(4))
        .descriptors(FILE_DESCRIPTOR_SET)?;
    if let Some(limit) = limit {
        service = service.wrap_handler(limit);
    }
    let running = service
        .handle(GreeterServer::new(Greeter2::default()))
        .start()
        .await?;
    println!(
        "greeter2 listening on {} as node {}",
        running.local_addr(),
        running.node().id
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
    examples::init_logging();
    let demo_started = Instant::now();

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
        .on_state_change(|name, from, to| println!("  >> breaker {name}: {from} -> {to}"));
    // Prometheus metrics on a free loopback port (the seed serves them on :9000); the breaker
    // feeds the health series too.
    let greeter1 = micro::Service::new()
        .name("greeter1")
        .register_ttl(Duration::from_secs(5))
        .register_interval(Duration::from_secs(4))
        .descriptors(FILE_DESCRIPTOR_SET)?
        .metrics_address("127.0.0.1:0");
    let breaker = greeter1.health().observe_breaker(breaker);
    let mut greeter1 = greeter1.wrap_client(breaker);
    let client_of_greeter2 = GreeterClient::new(greeter1.client().channel("greeter2"));
    let greeter1 = greeter1
        .handle(GreeterServer::new(Greeter1 {
            greeter2: client_of_greeter2,
        }))
        .start()
        .await?;
    println!(
        "greeter1 listening on {} as node {}",
        greeter1.local_addr(),
        greeter1.node().id
    );

    // An outside caller: plain tonic over TCP, knowing only greeter1's address.
    let mut caller = GreeterClient::connect(format!("http://{}", greeter1.local_addr())).await?;
    for i in 1..=3 {
        let started = Instant::now();
        let reply = caller
            .hello(Request {
                name: format!("demo-{i}"),
            })
            .await?
            .into_inner();
        println!(
            "call {i}: caller -> greeter1 Greeter.Hello -> greeter2 Greeter.Test (sleeps 100 ms) -> {:?} in {:.1} ms",
            reply.msg,
            started.elapsed().as_secs_f64() * 1e3
        );
    }

    println!("\n== circuit breaker: stopping greeter2");
    greeter2.stop().await?;
    for i in 1..=10 {
        let result = hello(&mut caller, &format!("down-{i}")).await;
        println!("call down-{i}: {}", describe(&result));
        if result.is_ok() {
            break;
        }
    }
    println!("greeter2 back (new node); the breaker probes after {OPEN_FOR:?}");
    let limit = RateLimitLayer::new(5.0, 3)?.on_event(|endpoint, event| {
        if event == LimitEvent::Refused {
            println!("  >> greeter2 limiter: refused a call to {endpoint} (429)");
        }
    });
    let greeter2 = start_greeter2(Some(limit)).await?;
    let waiting = Instant::now();
    loop {
        let result = hello(&mut caller, "back").await;
        let real = result.as_ref().is_ok_and(|m| m.contains("test back"));
        if real || waiting.elapsed() > OPEN_FOR * 5 {
            println!(
                "call back after {:.1} s: {}",
                waiting.elapsed().as_secs_f64(),
                describe(&result)
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    println!("\n== rate limit: greeter2 allows 5 calls/s, bursts of 3; a burst of 10 at once");
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
                    println!("unexpected: {}", describe(&Err(status)));
                }
            }
        }
    }
    println!("burst of 10: {admitted} admitted, {refused} refused with 429 \"too many request\"");
    println!("(a 429 is the caller's own error: greeter1's breaker stays closed)");

    if let (Some(address), Some(metrics)) = (greeter1.metrics_addr(), greeter1.metrics()) {
        println!(
            "\n== metrics: greeter1 serves http://{address}/metrics (and /health, /ready); some of its series"
        );
        let shown = [
            "micro_request_total{",
            "micro_client_request_total{",
            "micro_breaker_state{",
            "micro_breaker_transitions_total{",
        ];
        metrics
            .encode()
            .lines()
            .filter(|line| shown.iter().any(|name| line.starts_with(name)))
            .for_each(|line| println!("  {line}"));
    }

    greeter1.stop().await?;
    greeter2.stop().await?;
    println!(
        "both services deregistered and stopped ({:.1} s)",
        demo_started.elapsed().as_secs_f64()
    );
    Ok(())
}
