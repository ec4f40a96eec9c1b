//! The seed's greeters as a test uses them: greeter2 started in-process, a bare greeter whose
//! answers the test chooses, a client on a test etcd or an address, a call of `Greeter.Test`,
//! what etcd and the registry hold for a node, many calls at once, and Python grpcio's stubs of
//! the greeter proto.

use std::{
    collections::HashSet,
    future::Future,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use micro::{
    errors::Error as MicroError,
    registry::{Etcd, Memory, Registry},
};
use proto::greeter::{
    Request, Response,
    greeter_client::GreeterClient,
    greeter_server::{Greeter, GreeterServer},
};
use tempfile::TempDir;
use tokio::sync::Semaphore;
use tonic::{Status, transport::Channel};

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

/// A plain tonic greeter client on `address` (`host:port`): no discovery, no micro.
pub async fn greeter_at(address: impl std::fmt::Display) -> GreeterClient<Channel> {
    GreeterClient::connect(format!("http://{address}"))
        .await
        .unwrap_or_else(|e| panic!("connecting to {address}: {e}"))
}

/// greeter2's `Greeter.Test` with `name`, through `client`: the reply's message.
pub async fn test_call(client: &micro::Client, name: &str) -> Result<String, tonic::Status> {
    let reply: Response = client
        .call("greeter2", "Greeter.Test", Request { name: name.into() })
        .await?;
    Ok(reply.msg)
}

/// The node that answered, from a greeter reply (`... from <node>`).
pub fn node_of(msg: &str) -> &str {
    msg.rsplit(' ').next().unwrap_or_default()
}

/// Calls `call` (a greeter reply's message, or `None` when the call failed) until `n`
/// distinct nodes have answered or `limit` has passed: the nodes that answered.
pub async fn served_by<F, Fut>(n: usize, limit: Duration, mut call: F) -> HashSet<String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let mut seen = HashSet::new();
    crate::eventually(limit, async || {
        if let Some(msg) = call().await {
            seen.insert(node_of(&msg).to_owned());
        }
        seen.len() >= n
    })
    .await;
    seen
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

/// The next event of `watcher` within `limit`; none in time, or a watch that ended or failed,
/// fails the test.
pub async fn next_event(
    watcher: &mut micro::registry::Watcher,
    limit: Duration,
) -> micro::registry::Event {
    use futures::StreamExt;
    tokio::time::timeout(limit, watcher.next())
        .await
        .expect("no event in time")
        .expect("watch ended")
        .expect("watch failed")
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

/// What a [`Backend`] answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Answer {
    /// `hello {name}`.
    #[default]
    Ok,
    /// go-micro's 500 (`Internal`).
    Internal,
    /// go-micro's 404 (`NotFound`).
    NotFound,
    /// go-micro's 429 JSON in an `Unknown` status, as a go-micro server sends it.
    Go429,
    /// Never answers.
    Hang,
}

/// A bare greeter (no micro) whose answers the test chooses ([`Backend::set`]), counting the
/// calls that reached it. `Hello` and `Test` answer alike.
#[derive(Clone, Debug, Default)]
pub struct Backend {
    answer: Arc<Mutex<Answer>>,
    calls: Arc<AtomicUsize>,
}

impl Backend {
    /// Answers `answer` from now on.
    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = answer;
    }

    /// How many calls reached it.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[tonic::async_trait]
impl Greeter for Backend {
    async fn hello(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        self.test(request).await
    }

    async fn test(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = *self.answer.lock().unwrap_or_else(|e| e.into_inner());
        match answer {
            Answer::Ok => Ok(tonic::Response::new(Response {
                msg: format!("hello {}", request.into_inner().name),
            })),
            Answer::Internal => Err(MicroError::internal("backend", "it failed").to_status()),
            Answer::NotFound => Err(MicroError::not_found("backend", "no such name").to_status()),
            Answer::Go429 => Err(Status::unknown(
                MicroError::new("backend", 429, "too many request").to_string(),
            )),
            Answer::Hang => std::future::pending().await,
        }
    }
}
