//! A short run of every scenario (about a second each) in real processes, plus a foreign
//! server and a short discovery pass: proves the harness works. No timing is asserted here;
//! figures come from `bench compare` in --release (see BENCHMARKS.md).

use std::{path::PathBuf, time::Duration};

use bench::{Scenario, compare, discovery, load};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bench"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_without_errors() {
    // A "foreign" greeter server: any greeter server will do; a bare tonic one here.
    let foreign = compare::ServerProcess::spawn(&bin(), Scenario::Tonic, &[])
        .await
        .unwrap();
    let options = compare::Options {
        bin: bin(),
        rounds: 1,
        load: load::Config {
            concurrency: 16,
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
            server_pids: Vec::new(),
        },
        scenarios: Scenario::ALL.to_vec(),
        foreign: Some((foreign.addr.clone(), Some(foreign.pid))),
        etcd: None,
        // Pinned where there are CPUs to split, so `taskset` is exercised too.
        pin: compare::Pin::halves().ok(),
        go_micro: None,
    };
    let comparison = compare::run(&options).await.unwrap();
    foreign.stop().await.unwrap();

    println!("{}", compare::table(&comparison));
    assert_eq!(comparison.rows.len(), Scenario::ALL.len() + 1);
    for row in &comparison.rows {
        assert_eq!(row.rounds, 1, "{}", row.scenario);
        assert!(row.calls > 0, "{}: no calls", row.scenario);
        assert_eq!(
            row.errors, 0,
            "{}: errors, first: {:?}",
            row.scenario, row.first_error
        );
        assert!(row.server_cpu_ms_per_1k.is_some(), "{}", row.scenario);
        assert!(row.server_peak_rss_kib.is_some(), "{}", row.scenario);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_measures() {
    let options = discovery::Options {
        bin: bin(),
        etcd: None,
        reps: 2,
        kills: 0,
        ttl: Duration::from_secs(3),
        interval: Duration::from_secs(1),
    };
    let report = discovery::run(&options).await.unwrap();
    println!("{}", discovery::table(&report));
    assert_eq!(report.visible_after_register_ms.len(), 2);
    assert_eq!(report.gone_after_stop_ms.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_micro_peer_runs_beside_micro_without_errors() {
    let Some(dir) = std::env::var_os("MICRO_INTEROP_BIN") else {
        eprintln!(
            "!!! SKIPPED: go-micro peer smoke test: MICRO_INTEROP_BIN is not set (scripts/test \
             sets it when Go is installed) !!!"
        );
        return;
    };
    let options = compare::Options {
        bin: bin(),
        rounds: 1,
        load: load::Config {
            concurrency: 16,
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
            server_pids: Vec::new(),
        },
        scenarios: vec![Scenario::Micro, Scenario::ChainMicro],
        foreign: None,
        etcd: None,
        pin: compare::Pin::halves().ok(),
        go_micro: Some(PathBuf::from(dir)),
    };
    let comparison = compare::run(&options).await.unwrap();
    let table = compare::table(&comparison);
    println!("{table}");
    let names: Vec<&str> = comparison
        .rows
        .iter()
        .map(|r| r.scenario.as_str())
        .collect();
    assert_eq!(
        names,
        ["micro", "chain-micro", "go-micro", "chain-go-micro"]
    );
    for row in &comparison.rows {
        assert!(row.calls > 0, "{}: no calls", row.scenario);
        assert_eq!(row.errors, 0, "{}: {:?}", row.scenario, row.first_error);
        assert!(row.server_cpu_ms_per_1k.is_some(), "{}", row.scenario);
        assert!(row.server_idle_rss_kib.is_some(), "{}", row.scenario);
    }
    let go = &comparison.rows[2];
    assert_eq!(go.baseline, "micro");
    assert!(go.ratio_calls_per_sec.is_some());
    assert!(table.contains("calls/s per server core"), "{table}");
    assert!(table.contains("idle RSS <= 0.5 x"), "{table}");
}
