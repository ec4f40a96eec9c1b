//! The seed's chain in one process: greeter2 and greeter1 on the embedded registry, over real
//! TCP, then a plain tonic client (any gRPC client would do) calls greeter1 a few times.
//!
//! Run with: `cargo run -p examples --bin demo`

use std::time::{Duration, Instant};

use examples::{Greeter1, Greeter2};
use proto::greeter::{
    FILE_DESCRIPTOR_SET, Request, greeter_client::GreeterClient, greeter_server::GreeterServer,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    examples::init_logging();

    let greeter2 = micro::Service::new()
        .name("greeter2")
        .register_ttl(Duration::from_secs(5))
        .register_interval(Duration::from_secs(4))
        .descriptors(FILE_DESCRIPTOR_SET)?
        .handle(GreeterServer::new(Greeter2::default()))
        .start()
        .await?;
    println!(
        "greeter2 listening on {} as node {}",
        greeter2.local_addr(),
        greeter2.node().id
    );

    let mut greeter1 = micro::Service::new()
        .name("greeter1")
        .register_ttl(Duration::from_secs(5))
        .register_interval(Duration::from_secs(4))
        .descriptors(FILE_DESCRIPTOR_SET)?;
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

    greeter1.stop().await?;
    greeter2.stop().await?;
    println!("both services deregistered and stopped");
    Ok(())
}
