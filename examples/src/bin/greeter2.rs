//! greeter2: the seed's second service; `Greeter.Test` sleeps 100 ms.
//!
//! Run with: `cargo run -p examples --bin greeter2` (embedded registry), or against etcd:
//! `MICRO_REGISTRY=etcd MICRO_REGISTRY_ADDRESS=127.0.0.1:2379 MICRO_REGISTER_TTL=5
//! MICRO_REGISTER_INTERVAL=4 cargo run -p examples --bin greeter2`.
//!
//! With `MICRO_BROKER` set (`memory` or `nats`, and `MICRO_BROKER_ADDRESS`), each `Test` answer
//! is also published as a `greeter.Response` on the topic `greeter.events`
//! (`micro subscribe greeter.events --proto proto/proto/greeter.proto --message
//! greeter.Response` shows them). Without it nothing is published.

use examples::{Greeter2, Greeter2Events};
use proto::greeter::{FILE_DESCRIPTOR_SET, greeter_server::GreeterServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    examples::init_logging();
    let service = micro::Service::new()
        .name("greeter2")
        .descriptors(FILE_DESCRIPTOR_SET)?
        .init();
    let service = if std::env::var_os("MICRO_BROKER").is_some_and(|b| !b.is_empty()) {
        let events = service.publisher("greeter.events");
        service.handle(GreeterServer::new(Greeter2Events {
            inner: Greeter2::default(),
            events,
        }))
    } else {
        service.handle(GreeterServer::new(Greeter2::default()))
    };
    service.run().await?;
    Ok(())
}
