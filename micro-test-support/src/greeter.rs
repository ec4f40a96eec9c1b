//! The seed's greeters as a test uses them: greeter2 started in-process, a client on a test
//! etcd, a call of `Greeter.Test`, what etcd and the registry hold for a node, many calls at
//! once, and Python grpcio's stubs of the greeter proto.

use std::{future::Future, path::Path, sync::Arc, time::Duration};

use micro::registry::{Etcd, Memory, Registry};
use proto::greeter::{Request, Response, greeter_server::GreeterServer};
use tempfile::TempDir;
use tokio::sync::Semaphore;

use crate::EtcdServer;

/// greeter2 (the examples' handler, `Test` answering at once) started on `registry`.
pub async fn greeter2(registry: &Memory) -> micro::Running {
    micro::Service::new()
        .name("greeter2")
        .registry(registry.clone())
        .handle(GreeterServer::new(examples::Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await
        .expect("greeter2 starts")
}

/// A client discovering in `etcd`, picking nodes with `strategy`, otherwise the defaults.
pub fn client_on(etcd: &EtcdServer, strategy: micro::client::Strategy) -> micro::Client {
    let options = micro::client::Options {
        strategy,
        ..Default::default()
    };
    micro::Service::new()
        .registry(Etcd::new([etcd.endpoint()]))
        .client_options(options)
        .client()
}

/// greeter2's `Greeter.Test` with `name`, through `client`: the reply's message.
pub async fn test_call(client: &micro::Client, name: &str) -> Result<String, tonic::Status> {
    let reply: Response = client
        .call("greeter2", "Greeter.Test", Request { name: name.into() })
        .await?;
    Ok(reply.msg)
}

/// `n` calls made by `call(i)`, each in its own task, at most `in_flight` at a time: their
/// results in order.
pub async fn concurrently<T, F, Fut>(n: usize, in_flight: usize, call: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (call, slots) = (call(i), slots.clone());
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await.expect("semaphore open");
                call.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for task in tasks {
        results.push(task.await.expect("call task"));
    }
    results
}

/// The address `registry` lists for node `id` of `service`, if it lists it.
pub async fn node_address(registry: &impl Registry, service: &str, id: &str) -> Option<String> {
    let services = registry.get_service(service).await.ok()?;
    services
        .iter()
        .flat_map(|s| &s.nodes)
        .find(|n| n.id == id)
        .map(|n| n.address.clone())
}

/// Whether `etcd` holds the registration key of node `id` of `service`. An etcd that does not
/// answer fails the test (it is not read as "no key").
pub async fn key_exists(etcd: &EtcdServer, service: &str, id: &str) -> bool {
    let mut client = etcd.client().await.expect("etcd client");
    let key = micro::registry::node_key(service, id);
    client.get(key, None).await.expect("etcd get").count() > 0
}

/// Python grpcio's stubs of proto/greeter.proto (`greeter_pb2`, `greeter_pb2_grpc`), made with
/// grpcio-tools in a temporary directory (put it on `PYTHONPATH`). Without grpcio-tools the
/// test fails saying how to get it.
pub async fn python_greeter_stubs() -> TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let proto_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto");
    let generated = tokio::process::Command::new("python3")
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto_dir.display()))
        .arg(format!("--python_out={}", dir.path().display()))
        .arg(format!("--grpc_python_out={}", dir.path().display()))
        .arg("greeter.proto")
        .output()
        .await
        .expect("python3 runs");
    assert!(
        generated.status.success(),
        "grpc_tools.protoc failed (pip install grpcio grpcio-tools; scripts/test does): {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    dir
}
