//! greeter1: the seed's first service; `Greeter.Hello` calls greeter2's `Greeter.Test`
//! through discovery and answers with its reply.
//!
//! Run with (greeter2 running against the same etcd):
//! `MICRO_REGISTRY=etcd MICRO_REGISTRY_ADDRESS=127.0.0.1:2379 MICRO_SERVER_ADDRESS=127.0.0.1:8081
//! cargo run -p examples --bin greeter1`, then call it with any gRPC client, e.g.
//! `grpcurl -plaintext -d '{"name":"you"}' 127.0.0.1:8081 greeter.Greeter/Hello`.

use examples::Greeter1;
use proto::greeter::{
    FILE_DESCRIPTOR_SET, greeter_client::GreeterClient, greeter_server::GreeterServer,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    examples::init_logging();
    let mut service = micro::Service::new()
        .name("greeter1")
        .descriptors(FILE_DESCRIPTOR_SET)?
        // greeter2's `Test` only sleeps and answers: running it twice changes nothing, so a
        // call whose node crashed mid-call (or went silent past the attempt timeout) is sent
        // again to another node instead of failing the caller.
        .idempotent("Greeter.Test")
        .init();
    let greeter2 = GreeterClient::new(service.client().channel("greeter2"));
    service
        .handle(GreeterServer::new(Greeter1 { greeter2 }))
        .run()
        .await?;
    Ok(())
}
