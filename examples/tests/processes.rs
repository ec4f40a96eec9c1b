//! greeter1 and greeter2 as separate processes on a real etcd (started by the test on free
//! loopback ports): discovery across processes, kill -9 and graceful stop, etcd restarts,
//! load spread, failover and calls while etcd is down.

use std::{sync::Arc, time::Duration};

use micro::registry::Etcd;
use micro_test_support::{
    EtcdServer, Frozen, MicroProcess, REGISTER_INTERVAL as INTERVAL, REGISTER_TTL as TTL,
    client_on, eventually, greeter_at, key_exists, node_address, served_by, sigterm, test_call,
};
use proto::greeter::Request;
use tokio::process::Child;

/// Starts an example binary against `etcd` with node id `id`.
fn spawn(binary: &str, etcd: &EtcdServer, id: &str, extra: &[(&str, &str)]) -> Child {
    MicroProcess::on(binary, etcd)
        .id(id)
        .envs(extra.iter().copied())
        .spawn()
}

fn greeter2(etcd: &EtcdServer, id: &str) -> Child {
    spawn(env!("CARGO_BIN_EXE_greeter2"), etcd, id, &[])
}

#[tokio::test]
async fn separate_processes_find_each_other_and_a_plain_client_gets_greeter2s_reply() {
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let _greeter2 = greeter2(&etcd, "greeter2-p1");
    let _greeter1 = spawn(env!("CARGO_BIN_EXE_greeter1"), &etcd, "greeter1-p1", &[]);
    let found = eventually(Duration::from_secs(20), || async {
        node_address(&registry, "greeter1", "greeter1-p1")
            .await
            .is_some()
            && key_exists(&etcd, "greeter2", "greeter2-p1").await
    })
    .await;
    assert!(found.is_some(), "services did not register");
    let address = node_address(&registry, "greeter1", "greeter1-p1")
        .await
        .unwrap();

    // Any gRPC client: plain tonic, knowing only greeter1's address.
    let mut plain = greeter_at(address).await;
    let reply = plain
        .hello(Request { name: "you".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.msg, "greeter1 <- test you from greeter2-p1");
}

#[tokio::test]
async fn killed_node_expires_after_ttl_and_stopped_node_leaves_at_once() {
    let etcd = EtcdServer::start().await.unwrap();
    let mut killed = greeter2(&etcd, "greeter2-killed");
    let stopped = greeter2(&etcd, "greeter2-stopped");
    let up = eventually(Duration::from_secs(20), || async {
        key_exists(&etcd, "greeter2", "greeter2-killed").await
            && key_exists(&etcd, "greeter2", "greeter2-stopped").await
    })
    .await;
    assert!(up.is_some(), "not registered");

    killed.start_kill().unwrap(); // SIGKILL: no deregistration
    killed.wait().await.unwrap();
    let gone = eventually(Duration::from_secs(TTL + 4), || async {
        !key_exists(&etcd, "greeter2", "greeter2-killed").await
    })
    .await;
    let gone = gone.expect("killed node still registered after TTL");
    assert!(
        gone >= Duration::from_secs(TTL - 1),
        "removed before its TTL: {gone:?}"
    );

    sigterm(&stopped);
    let gone = eventually(Duration::from_secs(TTL), || async {
        !key_exists(&etcd, "greeter2", "greeter2-stopped").await
    })
    .await;
    let gone = gone.expect("gracefully stopped node still registered");
    assert!(
        gone < Duration::from_secs(1),
        "deregistration took {gone:?}"
    );
}

#[tokio::test]
async fn registration_returns_within_an_interval_after_etcd_restarts() {
    let mut etcd = EtcdServer::start().await.unwrap();
    let _node = greeter2(&etcd, "greeter2-restart");
    let registered = || async { key_exists(&etcd, "greeter2", "greeter2-restart").await };
    assert!(
        eventually(Duration::from_secs(20), registered)
            .await
            .is_some()
    );

    // Same data dir.
    etcd.stop().await.unwrap();
    etcd.start_again().await.unwrap();
    let back = eventually(Duration::from_secs(INTERVAL + 3), || async {
        key_exists(&etcd, "greeter2", "greeter2-restart").await
    })
    .await;
    assert!(
        back.is_some(),
        "not registered after restart with the same data"
    );

    // Wiped data dir: key and lease are gone; the next interval puts them back.
    etcd.stop().await.unwrap();
    etcd.wipe_and_start().await.unwrap();
    let back = eventually(Duration::from_secs(INTERVAL + 3), || async {
        key_exists(&etcd, "greeter2", "greeter2-restart").await
    })
    .await;
    let back = back.expect("not registered again after a wipe");
    assert!(
        back <= Duration::from_secs(INTERVAL) + Duration::from_millis(1500),
        "{back:?}"
    );
}

#[tokio::test]
async fn calls_spread_round_robin_survive_a_killed_node_and_an_etcd_outage() {
    let mut etcd = EtcdServer::start().await.unwrap();
    let mut a = greeter2(&etcd, "greeter2-a");
    let _b = greeter2(&etcd, "greeter2-b");
    let both = eventually(Duration::from_secs(20), || async {
        key_exists(&etcd, "greeter2", "greeter2-a").await
            && key_exists(&etcd, "greeter2", "greeter2-b").await
    })
    .await;
    assert!(both.is_some());
    let client = Arc::new(client_on(&etcd, micro::client::Strategy::RoundRobin));

    let mut picks = Vec::new();
    for _ in 0..6 {
        picks.push(test_call(&client, "t").await.unwrap());
    }
    for pair in picks.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin did not alternate: {picks:?}");
    }

    // Kill one: its key stays until the TTL, so calls hit it and retry on the other.
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    for _ in 0..10 {
        assert_eq!(
            test_call(&client, "t").await.unwrap(),
            "test t from greeter2-b"
        );
    }

    // etcd down: the cache serves the known node.
    etcd.stop().await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            test_call(&client, "t").await.unwrap(),
            "test t from greeter2-b"
        );
    }
    etcd.start_again().await.unwrap();
}

/// Node scope: two greeter2 processes, one frozen with SIGSTOP; greeter1 with a gobreaker per
/// node (from the flags) and a 1 s timeout. Only the calls that reach the frozen node before
/// its breaker opens time out (more than 5 consecutive failures trip it, and calls here are
/// sequential: one in flight; no probe comes within gobreaker's 60 s); all others succeed.
#[tokio::test]
async fn a_node_breaker_ejects_a_frozen_node() {
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    // A long TTL, so the frozen node stays registered: only its breaker can eject it.
    let long_ttl = [
        ("MICRO_REGISTER_TTL", "60"),
        ("MICRO_REGISTER_INTERVAL", "30"),
    ];
    let bin = env!("CARGO_BIN_EXE_greeter2");
    let _healthy = spawn(bin, &etcd, "greeter2-ok", &long_ttl);
    let frozen = spawn(bin, &etcd, "greeter2-frozen", &long_ttl);
    let _greeter1 = spawn(
        env!("CARGO_BIN_EXE_greeter1"),
        &etcd,
        "greeter1-nodes",
        &[
            ("MICRO_CLIENT_BREAKER", "gobreaker"),
            ("MICRO_CLIENT_BREAKER_SCOPE", "node"),
            ("MICRO_CLIENT_REQUEST_TIMEOUT", "1s"),
        ],
    );
    let found = eventually(Duration::from_secs(20), || async {
        node_address(&registry, "greeter1", "greeter1-nodes")
            .await
            .is_some()
            && key_exists(&etcd, "greeter2", "greeter2-ok").await
            && key_exists(&etcd, "greeter2", "greeter2-frozen").await
    })
    .await;
    assert!(found.is_some(), "services did not register");
    let address = node_address(&registry, "greeter1", "greeter1-nodes")
        .await
        .unwrap();
    let mut plain = greeter_at(address).await;
    // Both nodes answer before the freeze.
    let seen = served_by(2, Duration::from_secs(20), || {
        let mut plain = plain.clone();
        async move {
            let reply = plain.hello(Request { name: "w".into() }).await.ok()?;
            Some(reply.into_inner().msg)
        }
    })
    .await;
    assert_eq!(seen.len(), 2, "both nodes answered: {seen:?}");

    let frozen = Frozen::freeze(&frozen);
    let (mut timeouts, mut ok) = (0, 0);
    for _ in 0..40 {
        match plain.hello(Request { name: "n".into() }).await {
            Ok(reply) => {
                assert!(reply.into_inner().msg.ends_with("greeter2-ok"));
                ok += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
                timeouts += 1;
            }
        }
    }
    drop(frozen);
    eprintln!("node breaker: {timeouts} timeouts, {ok} answers");
    // Trip count (6) + calls in flight (1) + probes (0 within 60 s).
    assert!(timeouts <= 7, "{timeouts} timeouts");
    assert_eq!(ok + timeouts, 40);
}
