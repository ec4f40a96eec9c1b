//! A short run of every scenario (about a second each) in real processes, plus a foreign
//! server and a short discovery pass: proves the harness works. No timing is asserted here;
//! figures come from `bench compare` in --release (see BENCHMARKS.md).

use std::{path::PathBuf, time::Duration};

use bench::{Scenario, compare, discovery, load};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bench"))
}

/// One short round of `scenarios` (16 calls in flight for a second), pinned where there are
/// CPUs to split, so `taskset` is exercised too.
fn short_run(
    scenarios: Vec<Scenario>,
    foreign: Option<(String, Option<u32>)>,
    go_micro: Option<PathBuf>,
) -> compare::Options {
    compare::Options {
        bin: bin(),
        rounds: 1,
        load: load::Config {
            concurrency: 16,
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
            server_pids: Vec::new(),
        },
        scenarios,
        foreign,
        etcd: None,
        pin: compare::Pin::halves().ok(),
        go_micro,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_without_errors() {
    // A "foreign" greeter server: any greeter server will do; a bare tonic one here.
    let foreign = compare::ServerProcess::spawn(&bin(), Scenario::Tonic, &[])
        .await
        .unwrap();
    let options = short_run(
        Scenario::ALL.to_vec(),
        Some((foreign.addr.clone(), Some(foreign.pid))),
        None,
    );
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

    // The observed scenarios: spans made on both sides, every exported one at the sink, the
    // drops counted (not asserted zero: that is a benchmark figure), metrics on both sides.
    let observed: Vec<_> = Scenario::ALL.iter().filter(|s| s.observed()).collect();
    assert_eq!(observed.len(), 2);
    let sink = comparison.sink.as_ref().expect("the sink's report");
    let mut exported_everywhere = 0;
    for scenario in observed {
        let row = comparison
            .rows
            .iter()
            .find(|r| r.scenario == scenario.name())
            .unwrap();
        let spans = row.spans.as_ref().expect("span counts");
        let server = spans.server.expect("the server's span counts");
        assert!(spans.client.ended > 0, "{scenario}: {spans:?}");
        assert!(server.ended > 0, "{scenario}: {spans:?}");
        assert_eq!(
            spans.dropped,
            Some(spans.client.dropped() + server.dropped()),
            "{scenario}"
        );
        let exported = spans.client.exported + server.exported;
        assert!(exported > 0, "{scenario}: {spans:?}");
        // The sink counts a batch before it answers, the exporter after the answer.
        assert!(
            spans.sink_received >= Some(exported),
            "{scenario}: {spans:?}"
        );
        exported_everywhere += exported;
        assert!(
            spans.server_metric_samples > Some(0),
            "{scenario}: {spans:?}"
        );
        assert!(
            spans.client_metric_samples > Some(0),
            "{scenario}: {spans:?}"
        );
    }
    assert!(sink.spans >= exported_everywhere, "{sink:?}");
    assert!(sink.requests > 0, "{sink:?}");
    // Only the observed scenarios trace.
    for row in &comparison.rows {
        let observed = Scenario::ALL
            .iter()
            .any(|s| s.observed() && s.name() == row.scenario);
        assert_eq!(row.spans.is_some(), observed, "{}", row.scenario);
    }
    let table = compare::table(&comparison);
    assert!(table.contains("| spans dropped |"), "{table}");
    assert!(
        table.contains("micro-observed: >= 0.95 x micro calls/s"),
        "{table}"
    );
    assert!(
        table.contains("micro-full: >= 0.9 x tonic calls/s"),
        "{table}"
    );
    assert!(table.contains("micro-full: no span dropped"), "{table}");
}

/// An observed scenario without a sink to export to is a clear error, not a panic.
#[test]
fn observed_server_without_a_sink_is_a_clear_error() {
    let output = std::process::Command::new(bin())
        .args(["serve", "micro-observed", "--etcd", "127.0.0.1:1"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("micro-observed needs --otlp ENDPOINT"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
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
    let go = micro_test_support::require::go_binaries();
    let options = short_run(vec![Scenario::Micro, Scenario::ChainMicro], None, Some(go));
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
