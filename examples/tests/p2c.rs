//! p2c against a frozen node: two greeter2 processes on a real etcd, one stopped with SIGSTOP
//! (its registration outlives the test, so clients keep listing it), and a client with a 1 s
//! timeout. p2c counts pending calls and timeouts as load and steers away from the frozen
//! node; random keeps sending it about half of the calls.

use std::time::Duration;

use micro_test_support::{EtcdServer, Frozen, MicroProcess, concurrently, served_by, test_call};
use tokio::process::Child;

/// Longer than the whole test: the frozen node cannot renew, and must stay listed.
const TTL: u64 = 600;

fn greeter2(etcd: &EtcdServer, id: &str) -> Child {
    MicroProcess::on(env!("CARGO_BIN_EXE_greeter2"), etcd)
        .register(TTL, 300)
        .id(id)
        .spawn()
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
            // The selectors alone: ejection would take the frozen node out for both.
            "--client_ejection",
            "off",
        ])
        .expect("client flags")
        .client()
}

/// 200 calls, 4 in flight: how many failed.
async fn failures_of_200(client: &micro::Client) -> usize {
    let failed = concurrently(200, 4, |_| {
        let client = client.clone();
        async move { test_call(&client, "p").await.is_err() }
    });
    failed.await.into_iter().filter(|&failed| failed).count()
}

#[tokio::test]
async fn p2c_steers_away_from_a_frozen_node_and_random_does_not() {
    let etcd = EtcdServer::start().await.unwrap();
    let live = greeter2(&etcd, "g2-live");
    let frozen = greeter2(&etcd, "g2-frozen");
    let (p2c, random) = (client(&etcd, "p2c"), client(&etcd, "random"));

    // Both nodes serve both clients before one is frozen.
    for client in [&p2c, &random] {
        let served = served_by(2, Duration::from_secs(20), || async {
            test_call(client, "p").await.ok()
        })
        .await;
        assert_eq!(served.len(), 2, "served by {served:?} only");
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
