//! greeter2: the seed's second service; `Greeter.Test` sleeps 100 ms.
//!
//! Run with: `cargo run -p examples --bin greeter2` (embedded registry), or against etcd:
//! `MICRO_REGISTRY=etcd MICRO_REGISTRY_ADDRESS=127.0.0.1:2379 MICRO_REGISTER_TTL=5
//! MICRO_REGISTER_INTERVAL=4 cargo run -p examples --bin greeter2`.

use examples::Greeter2;
use proto::greeter::{FILE_DESCRIPTOR_SET, greeter_server::GreeterServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    examples::init_logging();
    micro::Service::new()
        .name("greeter2")
        .descriptors(FILE_DESCRIPTOR_SET)?
        .init()
        .handle(GreeterServer::new(Greeter2::default()))
        .run()
        .await?;
    Ok(())
}
