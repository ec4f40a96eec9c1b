//! greeter1: the seed's first service; `Greeter.Hello` calls greeter2's `Greeter.Test`
//! through discovery and answers with its reply.
//!
//! Run with (greeter2 running against the same etcd):
//! `MICRO_REGISTRY=etcd MICRO_REGISTRY_ADDRESS=127.0.0.1:2379 MICRO_SERVER_ADDRESS=127.0.0.1:8081
//! cargo run -p examples --bin greeter1`, then call it with any gRPC client, e.g.
//! `grpcurl -plaintext -d '{"name":"you"}' 127.0.0.1:8081 greeter.Greeter/Hello`.
//!
//! `GREETER1_BREAKER_OPEN_SECS=2` gives its client of greeter2 the demo's breaker (a gobreaker
//! that answers `Greeter.Test` with a fallback while open and probes again after that many
//! seconds); the flags' breakers (`MICRO_CLIENT_BREAKER`) have no fallback and stay open 60 s.
//!
//! With `MICRO_BROKER` set it also subscribes to `greeter.events` (what greeter2 publishes)
//! and logs each event at `info`.

use std::time::Duration;

use examples::Greeter1;
use micro::wrappers::breaker::{BreakerLayer, Fallback, Settings};
use proto::greeter::{
    FILE_DESCRIPTOR_SET, Request, Response, greeter_client::GreeterClient,
    greeter_server::GreeterServer,
};

/// The variable that turns the demo's breaker on: how long it stays open, in seconds.
const OPEN_SECS: &str = "GREETER1_BREAKER_OPEN_SECS";

/// The demo's breaker for greeter1's calls to greeter2, open for `open_for` after more than 5
/// consecutive failures, answering `Greeter.Test` with a fallback meanwhile.
fn breaker(open_for: Duration) -> BreakerLayer {
    BreakerLayer::gobreaker(Settings::new("greeter1").timeout(open_for))
        .fallback(
            "Greeter.Test",
            Fallback::unary(|req: Request, err: &micro::errors::Error| {
                Ok(Response {
                    msg: format!("fallback for {} ({})", req.name, err.detail),
                })
            }),
        )
        .on_state_change(|name, from, to| tracing::info!("breaker {name}: {from} -> {to}"))
}

/// Reads [`OPEN_SECS`]: unset means no breaker of greeter1's own.
fn open_for() -> anyhow::Result<Option<Duration>> {
    let Ok(value) = std::env::var(OPEN_SECS) else {
        return Ok(None);
    };
    match value.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(Some(Duration::from_secs_f64(secs))),
        _ => anyhow::bail!("{OPEN_SECS}={value:?}: want a number of seconds > 0"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    examples::init_logging();
    let open_for = open_for()?;
    let mut service = micro::Service::new()
        .name("greeter1")
        .descriptors(FILE_DESCRIPTOR_SET)?
        // greeter2's `Test` only sleeps and answers: running it twice changes nothing, so a
        // call whose node crashed mid-call (or went silent past the attempt timeout) is sent
        // again to another node instead of failing the caller.
        .idempotent("Greeter.Test");
    if let Some(open_for) = open_for {
        let breaker = service.health().observe_breaker(breaker(open_for));
        service = service.wrap_client(breaker);
    }
    let mut service = service.init();
    if std::env::var_os("MICRO_BROKER").is_some_and(|b| !b.is_empty()) {
        service = service.subscribe("greeter.events", |event: Response| async move {
            tracing::info!(msg = %event.msg, "greeter.events");
            Ok::<_, std::convert::Infallible>(())
        });
    }
    let greeter2 = GreeterClient::new(service.client().channel("greeter2"));
    service
        .handle(GreeterServer::new(Greeter1 { greeter2 }))
        .run()
        .await?;
    Ok(())
}
