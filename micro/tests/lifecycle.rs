//! The lifecycle over real TCP, on a real etcd where the registry matters: a failing
//! after-start hook, a dropped service, the deregister delay, and a rolling restart under load.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use examples::Greeter2;
use micro::registry::{Cache, Etcd, Memory, Registry};
use micro_test_support::{EtcdServer, eventually, key_exists};
use proto::greeter::{
    FILE_DESCRIPTOR_SET, Request, Response, greeter_client::GreeterClient,
    greeter_server::GreeterServer,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A greeter2 node with id `id` on `registry`, `Test` sleeping `sleep`, renewing every second.
fn greeter2(registry: impl Registry, id: &str, sleep: Duration) -> micro::Service {
    micro::Service::new()
        .name("greeter2")
        .registry(registry)
        .register_ttl(Duration::from_secs(30))
        .register_interval(Duration::from_secs(1))
        .try_init_from(["greeter2", "--server_id", id])
        .expect("flags")
        .descriptors(FILE_DESCRIPTOR_SET)
        .expect("descriptors")
        .handle(GreeterServer::new(Greeter2 { test_sleep: sleep }))
}

async fn accepts(address: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(address).await.is_ok()
}

/// `Greeter.Test` on a new connection to `address`, as a plain tonic client.
async fn call_directly(address: SocketAddr) -> Result<String, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let reply = GreeterClient::new(channel)
        .test(Request { name: "t".into() })
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply.into_inner().msg)
}

/// The health status of `address` (1 SERVING, 2 NOT_SERVING), asked on a new connection.
async fn health(address: SocketAddr) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let request = HealthCheckRequest {
        service: "greeter.Greeter".into(),
    };
    let reply = HealthClient::new(channel).check(request).await.ok()?;
    Some(reply.into_inner().status)
}

#[tokio::test]
async fn a_failing_after_start_hook_stops_the_server_and_leaves_no_key_in_etcd() {
    let etcd = EtcdServer::start().await.unwrap();
    let registered_during_hook = Arc::new(AtomicBool::new(false));
    let seen = registered_during_hook.clone();
    let endpoint = etcd.endpoint();
    let err = greeter2(Etcd::new([endpoint.clone()]), "g2-hook", Duration::ZERO)
        .deregister_delay(Duration::from_millis(100))
        .after_start(move || {
            // The node is registered when the hook runs (read from etcd on another thread:
            // hooks are synchronous).
            let endpoint = endpoint.clone();
            let registered = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let services = Etcd::new([endpoint]).get_service("greeter2").await?;
                    Ok::<_, micro::BoxError>(
                        services
                            .iter()
                            .flat_map(|s| &s.nodes)
                            .any(|n| n.id == "g2-hook"),
                    )
                })
            })
            .join()
            .map_err(|_| "etcd reader panicked")??;
            seen.store(registered, Ordering::SeqCst);
            Err("no database".into())
        })
        .start()
        .await
        .err()
        .expect("the failing hook fails the start")
        .to_string();
    assert_eq!(err, "after start hook failed: no database");
    assert!(registered_during_hook.load(Ordering::SeqCst));
    assert!(
        !key_exists(&etcd, "greeter2", "g2-hook").await,
        "deregistered"
    );
    // The registrar is stopped too: three renewal intervals later, still no key.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !key_exists(&etcd, "greeter2", "g2-hook").await,
        "not registered again"
    );
}

#[tokio::test]
async fn dropping_a_started_service_deregisters_it_and_stops_serving() {
    let etcd = EtcdServer::start().await.unwrap();
    let running = greeter2(Etcd::new([etcd.endpoint()]), "g2-dropped", Duration::ZERO)
        .start()
        .await
        .unwrap();
    let address = running.local_addr();
    assert!(key_exists(&etcd, "greeter2", "g2-dropped").await);
    assert!(call_directly(address).await.is_ok());
    drop(running);
    assert!(
        eventually(Duration::from_secs(10), || async {
            !key_exists(&etcd, "greeter2", "g2-dropped").await
        })
        .await
        .is_some(),
        "the dropped service is still registered"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            !accepts(address).await
        })
        .await
        .is_some(),
        "the dropped service still accepts connections"
    );
    // And the registrar does not bring it back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!key_exists(&etcd, "greeter2", "g2-dropped").await);
}

#[test]
fn dropping_a_started_service_outside_a_runtime_does_not_panic() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let registry = Memory::new();
    let running = runtime
        .block_on(greeter2(registry.clone(), "g2-late", Duration::ZERO).start())
        .unwrap();
    drop(runtime);
    // No runtime to deregister on: logged, and the registration would expire with its TTL.
    drop(running);
}

#[tokio::test]
async fn during_the_deregister_delay_new_calls_succeed_and_health_says_not_serving() {
    let registry = Memory::new();
    let delay = Duration::from_secs(4);
    let running = greeter2(registry.clone(), "g2-delay", Duration::ZERO)
        .deregister_delay(delay)
        .start()
        .await
        .unwrap();
    let address = running.local_addr();
    assert_eq!(health(address).await, Some(1));
    let started = tokio::time::Instant::now();
    let stop = tokio::spawn(running.stop());
    assert!(
        eventually(Duration::from_secs(3), || async {
            health(address).await == Some(2)
        })
        .await
        .is_some(),
        "health never said NOT_SERVING"
    );
    let listed = registry.get_service("greeter2").await;
    assert!(
        matches!(listed, Err(micro::registry::Error::NotFound)),
        "{listed:?}"
    );
    // Deregistered and NOT_SERVING, yet a new connection and call are still served.
    let reply = call_directly(address).await;
    assert!(reply.is_ok(), "{reply:?}");
    assert!(!stop.is_finished(), "stopped before the delay was over");
    stop.await.unwrap().unwrap();
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert!(!accepts(address).await, "still accepting after stop");
}

#[tokio::test]
async fn a_watching_client_drops_the_node_before_the_server_stops_accepting() {
    let etcd = EtcdServer::start().await.unwrap();
    let running = greeter2(Etcd::new([etcd.endpoint()]), "g2-watched", Duration::ZERO)
        .deregister_delay(Duration::from_secs(4))
        .start()
        .await
        .unwrap();
    let address = running.local_addr();
    let cache = Cache::new(Arc::new(Etcd::new([etcd.endpoint()])));
    let listed = |cache: &Cache| {
        cache.peek("greeter2").is_some_and(|services| {
            services
                .iter()
                .any(|s| s.nodes.iter().any(|n| n.id == "g2-watched"))
        })
    };
    cache.get_service("greeter2").await.unwrap();
    assert!(listed(&cache));
    let stop = tokio::spawn(running.stop());
    assert!(
        eventually(Duration::from_secs(3), || async { !listed(&cache) })
            .await
            .is_some(),
        "the watching cache still lists the node"
    );
    // The cache let go of the node while the server still accepts: no client sends it a call
    // it would refuse.
    assert!(
        accepts(address).await,
        "stopped accepting before the watchers dropped it"
    );
    assert!(!stop.is_finished());
    stop.await.unwrap().unwrap();
    assert!(!accepts(address).await);
}

/// A bound on each load worker's calls.
const MAX_CALLS: u32 = 20_000;

#[tokio::test]
async fn a_rolling_restart_under_load_loses_no_call() {
    let etcd = EtcdServer::start().await.unwrap();
    let registry = || Etcd::new([etcd.endpoint()]);
    let sleep = Duration::from_millis(5);
    let mut nodes = vec![
        greeter2(registry(), "g2-a1", sleep).start().await.unwrap(),
        greeter2(registry(), "g2-b1", sleep).start().await.unwrap(),
    ];
    // No retries: a call sent to a node that no longer accepts would fail, not be retried.
    let client = micro::Service::new()
        .registry(registry())
        .client_options(micro::client::Options {
            retries: 0,
            request_timeout: Duration::from_secs(10),
            ..Default::default()
        })
        .client();

    let done = Arc::new(AtomicBool::new(false));
    let served_by = Arc::new(Mutex::new(HashSet::<String>::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (client, done, served_by) = (client.clone(), done.clone(), served_by.clone());
            tokio::spawn(async move {
                let (mut calls, mut failures) = (0u32, Vec::new());
                // Bounded: a few thousand calls of 5 ms at most (the restarts take seconds).
                while !done.load(Ordering::SeqCst) && calls < MAX_CALLS {
                    let request = Request { name: "t".into() };
                    match client
                        .call::<_, Response>("greeter2", "Greeter.Test", request)
                        .await
                    {
                        Ok(reply) => {
                            let node = reply.msg.rsplit(' ').next().unwrap_or("").to_owned();
                            served_by.lock().unwrap().insert(node);
                        }
                        Err(status) => failures.push(status.to_string()),
                    }
                    calls += 1;
                }
                assert!(calls < MAX_CALLS, "the restarts outlasted the load");
                (calls, failures)
            })
        })
        .collect();
    let seen = |id: &'static str| {
        let served_by = served_by.clone();
        move || {
            let served = served_by.lock().unwrap().contains(id);
            async move { served }
        }
    };
    let limit = Duration::from_secs(15);
    assert!(
        eventually(limit, seen("g2-a1")).await.is_some()
            && eventually(limit, seen("g2-b1")).await.is_some()
    );

    // One node at a time: a graceful stop, then its replacement, serving before the next.
    let restarts = [
        ("g2-a1", "g2-a2"),
        ("g2-b1", "g2-b2"),
        ("g2-a2", "g2-a3"),
        ("g2-b2", "g2-b3"),
    ];
    for (old, next) in restarts {
        let at = nodes.iter().position(|n| &*n.node().id == old).unwrap();
        let old = nodes.swap_remove(at);
        old.stop().await.unwrap();
        nodes.push(greeter2(registry(), next, sleep).start().await.unwrap());
        assert!(
            eventually(limit, seen(next)).await.is_some(),
            "{next} never served"
        );
    }
    done.store(true, Ordering::SeqCst);
    let (mut calls, mut failures) = (0, Vec::new());
    for worker in workers {
        let (n, f) = worker.await.unwrap();
        calls += n;
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {failures:?}",
        failures.len()
    );
    assert!(calls >= 50, "only {calls} calls");
    for node in nodes {
        node.stop().await.unwrap();
    }
}
