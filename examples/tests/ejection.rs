//! Failure accrual and ejection, as a user meets them: real greeter processes on a real etcd.
//!
//! - Rolling SIGKILL of greeter2 nodes under load through greeter1 (which marks `Greeter.Test`
//!   idempotent): no call is lost.
//! - A greeter2 node cut off in a network namespace this test makes (veth pair, iptables DROP)
//!   for 10 s, with a 30 s TTL so the registry never notices: with each selector the failed
//!   calls are at most the callers plus one probe per ejection period, none with an attempt
//!   timeout, and the node takes calls again within an ejection period of the healing.
//! - One node that refuses everything and no other: calls fail with the connection's error,
//!   never "none available".
//!
//! The namespace tests need root (`ip netns`, iptables): they fail, naming what is missing,
//! without it.

use std::{
    collections::HashMap,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use micro::client::{EjectionEvent, Options, Strategy};
use micro_test_support::{
    EtcdServer, MicroProcess, eventually, free_port, key_exists, node_of, served_by, test_call,
};
use proto::greeter::{Request, greeter_client::GreeterClient};
use tokio::process::Child;

fn greeter2(etcd: &EtcdServer, id: &str, ttl: u64, interval: u64) -> Child {
    MicroProcess::on(env!("CARGO_BIN_EXE_greeter2"), etcd)
        .register(ttl, interval)
        .id(id)
        .spawn()
}

/// Rolling SIGKILL through greeter1: 16 calls in flight for 12 s, a greeter2 node killed (and
/// a new one started) every 3 s; etcd keeps a killed node for its TTL (5 s).
#[tokio::test]
async fn rolling_kills_lose_no_call_when_test_is_idempotent() {
    let etcd = EtcdServer::start().await.unwrap();
    let port = free_port().unwrap();
    let _greeter1 = MicroProcess::on(env!("CARGO_BIN_EXE_greeter1"), &etcd)
        .register(5, 2)
        .id("g1")
        .address(&format!("127.0.0.1:{port}"))
        .spawn();
    let mut nodes = vec![greeter2(&etcd, "g2-0", 5, 2), greeter2(&etcd, "g2-1", 5, 2)];
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let greeter1 = GreeterClient::new(channel);

    // Both greeter2 nodes answer through greeter1 before the first kill.
    let seen = served_by(2, Duration::from_secs(20), || {
        let mut client = greeter1.clone();
        async move {
            let reply = client.hello(Request { name: "w".into() }).await.ok()?;
            Some(reply.into_inner().msg)
        }
    })
    .await;
    assert_eq!(seen.len(), 2, "served by {seen:?} only");

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (mut client, stop) = (greeter1.clone(), stop.clone());
            let (ok, failed) = (ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.hello(Request { name: "k".into() }).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(status) => {
                            failed.lock().unwrap().push(status.to_string());
                            0
                        }
                    };
                }
            })
        })
        .collect();
    let start = Instant::now();
    for kill in 0..3 {
        tokio::time::sleep_until((start + Duration::from_secs(3 * (kill + 1))).into()).await;
        let mut victim = nodes.remove(0);
        victim.start_kill().unwrap();
        victim.wait().await.unwrap();
        nodes.push(greeter2(&etcd, &format!("g2-{}", kill + 2), 5, 2));
    }
    tokio::time::sleep_until((start + Duration::from_secs(12)).into()).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        tokio::time::timeout(Duration::from_secs(35), caller)
            .await
            .expect("callers end")
            .unwrap();
    }
    let failed = failed.lock().unwrap();
    let ok = ok.load(Ordering::Relaxed);
    eprintln!("rolling kills: {ok} answered, {} failed", failed.len());
    assert!(ok > 500, "only {ok} calls answered in 12 s");
    assert!(
        failed.is_empty(),
        "{} lost: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

/// The same rolling kills with a client of greeter2 that does not mark `Greeter.Test`
/// idempotent: only calls in flight on a node when it was killed may fail (a broken call may
/// have run, so it is not retried); every failed call started before a killed process was
/// gone and ended after its signal, and no more than the 16 in flight per kill fail.
#[tokio::test]
async fn rolling_kills_fail_only_calls_in_flight_when_test_is_not_idempotent() {
    let etcd = EtcdServer::start().await.unwrap();
    let mut nodes = vec![greeter2(&etcd, "g2-0", 5, 2), greeter2(&etcd, "g2-1", 5, 2)];
    let options = Options {
        request_timeout: Duration::from_secs(5),
        ..Options::default()
    };
    let registry = Arc::new(micro::registry::Etcd::new([etcd.endpoint()]));
    let client = micro::client::Client::builder()
        .options(options)
        .build(micro::registry::Cache::new(registry));
    let seen = served_by(2, Duration::from_secs(20), || async {
        test_call(&client, "c").await.ok()
    })
    .await;
    assert_eq!(seen.len(), 2, "served by {seen:?} only");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    // Each failed call: when it started and ended.
    let failed: Arc<Mutex<Vec<(Instant, Instant, String)>>> = Arc::default();
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (client, stop, ok, failed) =
                (client.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match test_call(&client, "c").await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) => {
                            failed.lock().unwrap().push((
                                started,
                                Instant::now(),
                                status.to_string(),
                            ));
                        }
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut kills = Vec::new();
    for kill in 0..3 {
        tokio::time::sleep_until((start + Duration::from_secs(3 * (kill + 1))).into()).await;
        let mut victim = nodes.remove(0);
        let signalled = Instant::now();
        victim.start_kill().unwrap();
        victim.wait().await.unwrap();
        // From the signal until the process is gone (longer on a loaded machine): a call sent
        // meanwhile may still reach it and break.
        kills.push((signalled, Instant::now()));
        nodes.push(greeter2(&etcd, &format!("g2-{}", kill + 2), 5, 2));
    }
    tokio::time::sleep_until((start + Duration::from_secs(12)).into()).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        tokio::time::timeout(Duration::from_secs(10), caller)
            .await
            .expect("callers end")
            .unwrap();
    }
    let failed = failed.lock().unwrap();
    let ok = ok.load(Ordering::Relaxed);
    eprintln!(
        "rolling kills, not idempotent: {ok} answered, {} failed",
        failed.len()
    );
    assert!(ok > 500, "only {ok} calls answered in 12 s");
    assert!(failed.len() <= 3 * 16, "{} failed", failed.len());
    for (started, ended, status) in failed.iter() {
        // In flight at a kill: sent before the killed process was gone (and the client's
        // connection had 50 ms to see the reset), ended after the signal.
        let at_a_kill = kills.iter().any(|(signalled, gone)| {
            *started <= *gone + Duration::from_millis(50) && *ended >= *signalled
        });
        assert!(at_a_kill, "a call not in flight at a kill failed: {status}");
    }
}

/// One greeter2 node in its own network namespace, reachable from this process through a
/// veth pair; its etcd reaches the test's etcd (on 127.0.0.1) through a DNAT rule. Removed on
/// drop.
struct Namespace {
    name: String,
    host_if: String,
    host_ip: String,
    node_ip: String,
    nat_rule: Vec<String>,
}

/// Runs `args`; fails the test with its output when it fails.
#[track_caller]
fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (the namespace tests need root and iproute2)"));
    assert!(
        out.status.success(),
        "{args:?}: {} (the namespace tests need root, iproute2 and iptables)",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Namespace {
    /// Namespace number `n` of this test process, forwarding `etcd_port` to the host's etcd.
    fn new(n: u8, etcd_port: u16) -> Namespace {
        let tag = std::process::id() % 10_000;
        let name = format!("ej{n}-{tag}");
        let host_if = format!("ejh{n}-{tag}");
        let node_if = format!("ejn{n}-{tag}");
        // A /30 per namespace and test process.
        let net = format!("10.{}.{}", 100 + tag % 100, 4 * u32::from(n));
        let (host_ip, node_ip) = (format!("{net}.1"), format!("{net}.2"));
        let mut ns = Namespace {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
            node_ip: node_ip.clone(),
            nat_rule: Vec::new(),
        };
        run(&["ip", "netns", "add", &name]);
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &node_if,
        ]);
        run(&["ip", "link", "set", &node_if, "netns", &name]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &host_if,
        ]);
        run(&["ip", "link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &name];
            all.extend_from_slice(args);
            run(&all);
        };
        inside(&[
            "ip",
            "addr",
            "add",
            &format!("{node_ip}/30"),
            "dev",
            &node_if,
        ]);
        inside(&["ip", "link", "set", &node_if, "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        // The node's registry traffic to host_ip:etcd_port goes to the etcd on 127.0.0.1.
        run(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{host_if}.route_localnet=1"),
        ]);
        let rule: Vec<String> = [
            "PREROUTING",
            "-i",
            &host_if,
            "-d",
            &host_ip,
            "-p",
            "tcp",
            "--dport",
            &etcd_port.to_string(),
            "-j",
            "DNAT",
            "--to-destination",
            &format!("127.0.0.1:{etcd_port}"),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut insert = vec!["iptables", "-t", "nat", "-I"];
        insert.extend(rule.iter().map(String::as_str));
        run(&insert);
        ns.nat_rule = rule;
        ns
    }

    /// Drops every packet in and out of the node's namespace (`cut`), or lets them through.
    fn cut(&self, cut: bool) {
        let action = if cut { "-I" } else { "-D" };
        for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            run(&[
                "ip", "netns", "exec", &self.name, "iptables", action, chain, "!", dir, "lo", "-j",
                "DROP",
            ]);
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if !self.nat_rule.is_empty() {
            let mut delete = vec!["iptables", "-t", "nat", "-D"];
            delete.extend(self.nat_rule.iter().map(String::as_str));
            let _ = Command::new(delete[0]).args(&delete[1..]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// What the client's ejection observer saw: events by kind, and when a node was first
/// restored.
#[derive(Default)]
struct Seen(Mutex<HashMap<&'static str, usize>>, Mutex<Option<Instant>>);

impl Seen {
    fn get(&self, what: &str) -> usize {
        self.0.lock().unwrap().get(what).copied().unwrap_or(0)
    }
}

/// A client of etcd with `strategy`, 2 s deadlines, `Greeter.Test` idempotent and this
/// attempt timeout; ejection events counted in `seen`.
fn client(
    etcd: &EtcdServer,
    strategy: Strategy,
    attempt_timeout: Option<Duration>,
    seen: Arc<Seen>,
) -> micro::Client {
    let options = Options {
        strategy,
        request_timeout: Duration::from_secs(2),
        idempotent: vec!["Greeter.Test".into()],
        attempt_timeout,
        ..Options::default()
    };
    let registry = Arc::new(micro::registry::Etcd::new([etcd.endpoint()]));
    micro::client::Client::builder()
        .options(options)
        .on_ejection(move |_, event| {
            let what = match event {
                EjectionEvent::Ejected => "ejected",
                EjectionEvent::Extended => "extended",
                EjectionEvent::Restored => "restored",
            };
            *seen.0.lock().unwrap().entry(what).or_default() += 1;
            if event == EjectionEvent::Restored {
                seen.1.lock().unwrap().get_or_insert_with(Instant::now);
            }
        })
        .build(micro::registry::Cache::new(registry))
}

const CALLERS: usize = 8;
const CUT: Duration = Duration::from_secs(10);

/// The cut-off node, for one selector: 8 callers, 1 s before the cut, 10 s cut, then until
/// the node answers again. Without then with an attempt timeout.
async fn cut_off_node(strategy: Strategy, n: u8) {
    let etcd = EtcdServer::start().await.unwrap();
    let etcd_port: u16 = etcd
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("etcd's port");
    let ns = Namespace::new(n, etcd_port);
    // Started inside the namespace through `ip netns exec` (a script, as MicroProcess runs
    // one binary).
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("greeter2-in-ns");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec ip netns exec {} {}\n",
            ns.name,
            env!("CARGO_BIN_EXE_greeter2")
        ),
    )
    .unwrap();
    run(&["chmod", "+x", script.to_str().unwrap()]);
    let _cut_node = MicroProcess::on(&script, &etcd)
        .register(30, 10)
        .id("g2-cut")
        .address(&format!("{}:9090", ns.node_ip))
        .env(
            "MICRO_REGISTRY_ADDRESS",
            format!("{}:{etcd_port}", ns.host_ip),
        )
        .spawn();
    let _live = greeter2(&etcd, "g2-live", 30, 10);
    let registered = eventually(Duration::from_secs(20), || async {
        key_exists(&etcd, "greeter2", "g2-cut").await
            && key_exists(&etcd, "greeter2", "g2-live").await
    })
    .await;
    assert!(registered.is_some(), "both nodes registered");

    for attempt_timeout in [None, Some(Duration::from_millis(300))] {
        let seen = Arc::new(Seen::default());
        let client = client(&etcd, strategy, attempt_timeout, seen.clone());
        // Both nodes answer first.
        let served = served_by(2, Duration::from_secs(20), || async {
            test_call(&client, "c").await.ok()
        })
        .await;
        assert_eq!(served.len(), 2, "served by {served:?}");

        let stop = Arc::new(AtomicBool::new(false));
        // Each failed call: when it started and ended (from the callers' start), its error.
        let failed: Arc<Mutex<Vec<(Duration, Duration, String)>>> = Arc::default();
        // The longest call.
        let longest: Arc<Mutex<Duration>> = Arc::default();
        let healed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let back_after: Arc<Mutex<Option<Duration>>> = Arc::default();
        let start = Instant::now();
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (client, stop, failed) = (client.clone(), stop.clone(), failed.clone());
                let (healed_at, back_after) = (healed_at.clone(), back_after.clone());
                let longest = longest.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let began = Instant::now();
                        let result = test_call(&client, "c").await;
                        let took = began.elapsed();
                        let mut longest = longest.lock().unwrap();
                        *longest = (*longest).max(took);
                        drop(longest);
                        match result {
                            Ok(msg) if node_of(&msg) == "g2-cut" => {
                                if let Some(healed) = *healed_at.lock().unwrap() {
                                    back_after.lock().unwrap().get_or_insert(healed.elapsed());
                                }
                            }
                            Ok(_) => {}
                            Err(status) => {
                                let began = began - start;
                                failed.lock().unwrap().push((
                                    began,
                                    began + took,
                                    status.message().to_owned(),
                                ));
                            }
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        ns.cut(true);
        let cut_at = start.elapsed();
        tokio::time::sleep(CUT).await;
        ns.cut(false);
        *healed_at.lock().unwrap() = Some(Instant::now());
        let healed = start.elapsed();
        // Taking calls again (p2c may wait for the node's latency estimate to fade).
        let back = eventually(Duration::from_secs(40), || {
            let back_after = back_after.clone();
            async move { back_after.lock().unwrap().is_some() }
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        for caller in callers {
            caller.await.unwrap();
        }
        let failures = failed.lock().unwrap().clone();
        let failed = failures.len();
        // When and why, for the assertions' messages: from the callers' start, cut and healing.
        let report = format!(
            "cut at {cut_at:?}, healed at {healed:?}; failed calls (start, end, error): {:?}",
            &failures[..failures.len().min(12)]
        );
        let longest = *longest.lock().unwrap();
        let (ejected, extended) = (seen.get("ejected"), seen.get("extended"));
        let back_after = *back_after.lock().unwrap();
        let healed = healed_at.lock().unwrap().expect("healed");
        let restored_after = seen
            .1
            .lock()
            .unwrap()
            .map(|at| at.saturating_duration_since(healed));
        eprintln!(
            "{strategy:?}, attempt timeout {attempt_timeout:?}: {failed} failed, {ejected} \
             ejections, {extended} failed probes, restored {restored_after:?} and first call \
             {back_after:?} after healing, longest call {longest:?}"
        );
        assert!(back.is_some(), "the node never took calls again");
        assert!(ejected >= 1, "the cut node was never ejected");
        // Each ejection period ends in one probe; those that failed extended the ejection.
        let periods = ejected + extended;
        if attempt_timeout.is_some() {
            assert_eq!(failed, 0, "{strategy:?} with an attempt timeout; {report}");
        } else {
            // Each caller loses at most the call it had waiting on the node when the first
            // timeout ejected it (that timeout counts every call sent to the node after it
            // as unanswered too, so no caller starts another there); then each failed probe.
            let bound = CALLERS + extended;
            assert!(
                failed <= bound,
                "{strategy:?}: {failed} failed > {CALLERS} callers + {extended} probes; {report}"
            );
        }
        // No call outlives its 2 s deadline (a probe's new connection included) by more than
        // a loaded machine's timer lag.
        assert!(
            longest < Duration::from_secs(3),
            "{strategy:?}: a call took {longest:?}; {report}"
        );
        // The last period before healing: 1 s doubled per repeat, +20 % jitter, at most 30 s;
        // then one probe (2 s deadline at most).
        let last = Duration::from_secs(1u64 << (periods - 1).min(5)).min(Duration::from_secs(30));
        let bound = last.mul_f64(1.2) + Duration::from_secs(2);
        let restored_after = restored_after.expect("the node was restored");
        assert!(
            restored_after <= bound,
            "{strategy:?}: restored {restored_after:?} after healing, past one period ({bound:?})"
        );
    }
}

#[tokio::test]
async fn a_cut_off_node_costs_at_most_the_callers_and_one_probe_per_period_random() {
    cut_off_node(Strategy::Random, 1).await;
}

#[tokio::test]
async fn a_cut_off_node_costs_at_most_the_callers_and_one_probe_per_period_round_robin() {
    cut_off_node(Strategy::RoundRobin, 2).await;
}

#[tokio::test]
async fn a_cut_off_node_costs_at_most_the_callers_and_one_probe_per_period_p2c() {
    cut_off_node(Strategy::P2c, 3).await;
}

/// One node, killed while registered (TTL 30 s): it refuses every connection, and calls fail
/// with that error; ejection never leaves the service with no node.
#[tokio::test]
async fn the_last_node_is_never_ejected_and_calls_fail_honestly() {
    let etcd = EtcdServer::start().await.unwrap();
    let mut only = greeter2(&etcd, "g2-only", 30, 10);
    let seen = Arc::new(Seen::default());
    let client = client(&etcd, Strategy::Random, None, seen.clone());
    let up = eventually(Duration::from_secs(20), || async {
        test_call(&client, "c").await.is_ok()
    })
    .await;
    assert!(up.is_some(), "greeter2 answers");
    only.start_kill().unwrap();
    only.wait().await.unwrap();
    for _ in 0..5 {
        let err = test_call(&client, "c").await.expect_err("no node listens");
        let message = err.message().to_lowercase();
        assert!(
            message.contains("refused") && !message.contains("none available"),
            "{err:?}"
        );
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    }
    assert_eq!(seen.get("ejected"), 0, "the only node was ejected");
}
