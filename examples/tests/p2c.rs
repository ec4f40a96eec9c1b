//! p2c against a frozen node: two greeter2 processes on a real etcd, one stopped with SIGSTOP
//! (its registration outlives the test, so clients keep listing it), and a client with a 1 s
//! timeout. p2c counts pending calls and timeouts as load and steers away from the frozen
//! node; random keeps sending it about half of the calls.

use std::{
    collections::HashSet,
    future::Future,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use micro_test_support::EtcdServer;
use proto::greeter::{Request, Response};
use tokio::{
    process::{Child, Command},
    sync::Semaphore,
};

/// Longer than the whole test: the frozen node cannot renew, and must stay listed.
const TTL: &str = "600";

fn greeter2(etcd: &EtcdServer, id: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_greeter2"))
        .env("MICRO_REGISTRY", "etcd")
        .env("MICRO_REGISTRY_ADDRESS", etcd.endpoint())
        .env("MICRO_REGISTER_TTL", TTL)
        .env("MICRO_REGISTER_INTERVAL", "300")
        .env("MICRO_SERVER_ADDRESS", "127.0.0.1:0")
        .env("MICRO_SERVER_ID", id)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("greeter2 starts")
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`) to process `pid` (the shell's `kill`: no
/// procps needed).
fn signal(pid: u32, signal: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{signal} {pid}"))
        .status()
        .is_ok_and(|s| s.success())
}

/// A process frozen with SIGSTOP: continued and killed when dropped, panics included.
struct Frozen(u32);

impl Frozen {
    fn freeze(child: &Child) -> Frozen {
        let pid = child.id().expect("greeter2 is running");
        assert!(signal(pid, "STOP"), "SIGSTOP {pid}");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "CONT");
        signal(self.0, "KILL");
    }
}

/// Polls `check` every 20 ms until it is true or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A client on `etcd` with this selector (as `--selector`) and a 1 s timeout, no retries of
/// timeouts (the default policy).
fn client(etcd: &EtcdServer, selector: &str) -> micro::Client {
    micro::Service::new()
        .try_init_from([
            "client",
            "--registry",
            "etcd",
            "--registry_address",
            &etcd.endpoint(),
            "--selector",
            selector,
            "--client_request_timeout",
            "1s",
        ])
        .expect("client flags")
        .client()
}

async fn test_call(client: &micro::Client) -> Result<String, tonic::Status> {
    let reply: Response = client
        .call("greeter2", "Greeter.Test", Request { name: "p".into() })
        .await?;
    Ok(reply.msg)
}

/// 200 calls, 4 in flight: how many failed.
async fn failures_of_200(client: &micro::Client) -> usize {
    let slots = Arc::new(Semaphore::new(4));
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let (client, slots) = (client.clone(), slots.clone());
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await.expect("semaphore open");
                test_call(&client).await.is_err()
            })
        })
        .collect();
    let mut failed = 0;
    for call in calls {
        failed += usize::from(call.await.expect("call task"));
    }
    failed
}

#[tokio::test]
async fn p2c_steers_away_from_a_frozen_node_and_random_does_not() {
    let etcd = EtcdServer::start().await.unwrap();
    let live = greeter2(&etcd, "g2-live");
    let frozen = greeter2(&etcd, "g2-frozen");
    let (p2c, random) = (client(&etcd, "p2c"), client(&etcd, "random"));

    // Both nodes serve both clients before one is frozen.
    for client in [&p2c, &random] {
        let served = Arc::new(Mutex::new(HashSet::new()));
        let both = eventually(Duration::from_secs(20), || {
            let (client, served) = (client.clone(), served.clone());
            async move {
                if let Ok(msg) = test_call(&client).await {
                    let node = msg.rsplit(' ').next().unwrap_or("").to_owned();
                    served.lock().unwrap().insert(node);
                }
                served.lock().unwrap().len() == 2
            }
        })
        .await;
        assert!(both, "served by {:?} only", served.lock().unwrap());
    }
    let _frozen = Frozen::freeze(&frozen);

    let p2c_failed = failures_of_200(&p2c).await;
    let random_failed = failures_of_200(&random).await;
    eprintln!("frozen node: p2c {p2c_failed} / 200 failed, random {random_failed} / 200");
    assert!(p2c_failed <= 20, "p2c: {p2c_failed} of 200 calls failed");
    assert!(
        (60..=140).contains(&random_failed),
        "random: {random_failed} of 200 calls failed"
    );
    drop(live);
}
