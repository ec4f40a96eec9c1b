//! greeter1 and greeter2 as separate processes on a real etcd, observed by real peers:
//! Prometheus scrapes both `/metrics` endpoints and its query API counts the calls made;
//! Zipkin receives the chain's three spans (sent at shutdown: the batch delay is longer than
//! the test) and serves them back as one trace; Jaeger v2 does the same over OTLP (the spans sent
//! by the batch timer while the greeters run). scripts/test builds Jaeger once per machine; without
//! it the Jaeger test fails, saying how to get it.

use std::time::Duration;

use micro_test_support::{
    EtcdServer, MicroProcess, Poll, free_port, greeter_at,
    peers::{Jaeger, Prometheus, Zipkin, http_get},
    poll, require, sigterm,
};
use proto::greeter::Request;
use serde_json::Value;
use tokio::process::Child;

const WAIT: Duration = Duration::from_secs(60);

struct Greeters {
    greeter1: Child,
    greeter2: Child,
    grpc1: String,
    metrics: [String; 2],
}

/// Starts greeter2 then greeter1 against `etcd`, with their metrics endpoints on free loopback
/// ports, plus `env`; waits until both are ready. A free port can be taken by another process
/// before a greeter binds it (the tests and their peers run side by side): a greeter that
/// exits before it is ready is started again on new ports.
async fn greeters(etcd: &EtcdServer, env: &[(&str, String)]) -> Greeters {
    for _ in 0..3 {
        if let Some(greeters) = try_greeters(etcd, env).await {
            return greeters;
        }
    }
    panic!("the greeters did not start in three attempts");
}

/// One attempt of [`greeters`]: `None` when a greeter exited before it was ready.
async fn try_greeters(etcd: &EtcdServer, env: &[(&str, String)]) -> Option<Greeters> {
    let spawn = |binary: &str, grpc: &str, metrics: &str| {
        MicroProcess::on(binary, etcd)
            .register(5, 1)
            .address(grpc)
            .env("MICRO_METRICS_ADDRESS", metrics)
            .envs(env.iter().cloned())
            .spawn()
    };
    let port = || free_port().unwrap();
    let (grpc1, grpc2) = (
        format!("127.0.0.1:{}", port()),
        format!("127.0.0.1:{}", port()),
    );
    let metrics = [
        format!("127.0.0.1:{}", port()),
        format!("127.0.0.1:{}", port()),
    ];
    let mut greeter2 = spawn(env!("CARGO_BIN_EXE_greeter2"), &grpc2, &metrics[1]);
    let mut greeter1 = spawn(env!("CARGO_BIN_EXE_greeter1"), &grpc1, &metrics[0]);
    for address in &metrics {
        let url = format!("http://{address}/ready");
        let exited = |child: &mut Child| child.try_wait().ok().flatten().is_some();
        // Some(true): ready; Some(false): a greeter exited first.
        let ready = Poll::within(WAIT)
            .every(Duration::from_millis(100))
            .value(async || {
                if http_get(&url).await.is_ok_and(|(status, _)| status == 200) {
                    return Some(true);
                }
                (exited(&mut greeter1) || exited(&mut greeter2)).then_some(false)
            })
            .await;
        match ready {
            Some((true, _)) => {}
            Some((false, _)) => {
                eprintln!("a greeter exited before it was ready (a port taken?): again");
                return None;
            }
            None => panic!("{url} not ready within {WAIT:?}"),
        }
    }
    Some(Greeters {
        greeter1,
        greeter2,
        grpc1,
        metrics,
    })
}

async fn call(grpc: &str, n: usize) {
    let mut client = greeter_at(grpc).await;
    for i in 0..n {
        let reply = client
            .hello(Request {
                name: format!("call {i}"),
            })
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert!(reply.into_inner().msg.contains("from greeter2"));
    }
}

/// SIGTERM (a graceful stop: deregister, drain, flush the last spans), then waits for exit.
async fn terminate(child: &mut Child) {
    sigterm(child);
    let exited = tokio::time::timeout(WAIT, child.wait()).await;
    assert!(matches!(exited, Ok(Ok(s)) if s.success()), "{exited:?}");
}

fn scalar(answer: &Value) -> Option<f64> {
    answer["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

#[tokio::test]
async fn prometheus_scrapes_both_greeters_and_counts_the_calls() {
    let etcd = EtcdServer::start().await.unwrap();
    let mut greeters = greeters(&etcd, &[]).await;
    let prometheus = Prometheus::start(&greeters.metrics).await.unwrap();
    const CALLS: usize = 7;
    call(&greeters.grpc1, CALLS).await;
    for (query, service) in [
        (
            "sum(micro_request_total{service=\"greeter1\",endpoint=\"Greeter.Hello\",status=\"success\"})",
            "greeter1",
        ),
        (
            "sum(micro_request_total{service=\"greeter2\",endpoint=\"Greeter.Test\",status=\"success\"})",
            "greeter2",
        ),
        (
            "sum(micro_client_request_total{service=\"greeter2\",endpoint=\"Greeter.Test\",status=\"success\"})",
            "greeter1's client",
        ),
        (
            "sum(micro_request_duration_seconds_count{service=\"greeter2\"})",
            "greeter2's histogram",
        ),
    ] {
        let counted = poll(WAIT, || async {
            let answer = prometheus.query(query).await.ok()?;
            (scalar(&answer)? == CALLS as f64).then_some(())
        })
        .await;
        let last = prometheus.query(query).await.ok();
        assert!(
            counted.is_some(),
            "{service}: {query} != {CALLS}; last answer {last:?}"
        );
    }
    // The health series too: greeter1's client knows greeter2's one node.
    let query = "max(micro_selector_nodes{service=\"greeter2\"})";
    let known = poll(WAIT, || async {
        let answer = prometheus.query(query).await.ok()?;
        (scalar(&answer)? == 1.0).then_some(())
    })
    .await;
    let last = prometheus.query(query).await.ok();
    assert!(known.is_some(), "{query} != 1; last answer {last:?}");
    let up = prometheus.query("sum(up{job=\"micro\"})").await.unwrap();
    assert_eq!(scalar(&up), Some(2.0), "both targets up: {up}");
    let fds = prometheus.query("min(process_open_fds)").await.unwrap();
    assert!(scalar(&fds).is_some_and(|v| v > 0.0), "{fds}");
    terminate(&mut greeters.greeter1).await;
    terminate(&mut greeters.greeter2).await;
}

#[tokio::test]
async fn zipkin_receives_the_chain_as_one_trace_flushed_at_shutdown() {
    let zipkin = Zipkin::start().await.unwrap();
    let etcd = EtcdServer::start().await.unwrap();
    let env = [
        ("OTEL_TRACES_EXPORTER", "zipkin".to_owned()),
        ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", zipkin.spans_endpoint()),
        ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
        // Longer than the test: only the flush at shutdown sends the spans.
        ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()),
    ];
    let mut greeters = greeters(&etcd, &env).await;
    call(&greeters.grpc1, 1).await;
    terminate(&mut greeters.greeter1).await;
    terminate(&mut greeters.greeter2).await;

    let url = format!(
        "{}/api/v2/traces?serviceName=greeter1&limit=10",
        zipkin.url()
    );
    let trace = poll(WAIT, || async {
        let (status, body) = http_get(&url).await.ok()?;
        let traces: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        traces
            .as_array()?
            .iter()
            .find(|t| t.as_array().is_some_and(|spans| spans.len() == 3))
            .cloned()
    })
    .await;
    let Some(trace) = trace else {
        let last = http_get(&url).await.map(|(_, body)| body);
        let services = http_get(&format!("{}/api/v2/services", zipkin.url())).await;
        panic!("no three-span trace at {url}: last answer {last:?}; services {services:?}");
    };
    let spans = trace.as_array().unwrap();
    let trace_id = spans[0]["traceId"].as_str().unwrap();
    assert!(spans.iter().all(|s| s["traceId"] == trace_id), "{trace}");
    let find = |service: &str, kind: &str| {
        spans
            .iter()
            .find(|s| s["localEndpoint"]["serviceName"] == service && s["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} span of {service}: {trace}"))
    };
    let server1 = find("greeter1", "SERVER");
    let client1 = find("greeter1", "CLIENT");
    let server2 = find("greeter2", "SERVER");
    assert!(
        server1.get("parentId").is_none(),
        "greeter1's server span is the root"
    );
    assert_eq!(client1["parentId"], server1["id"]);
    assert_eq!(server2["parentId"], client1["id"]);
    assert_eq!(
        server2["name"], "greeter.greeter/test",
        "Zipkin lower-cases names"
    );
}

/// The spans go out on the batch timer while the greeters run (the Zipkin test covers the flush
/// at shutdown), so the trace is read back before they stop.
#[tokio::test]
async fn jaeger_receives_the_chain_over_otlp() {
    let binary = require::jaeger();
    let jaeger = Jaeger::start(&binary).await.unwrap();
    let etcd = EtcdServer::start().await.unwrap();
    let env = [
        ("OTEL_TRACES_EXPORTER", "otlp".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_grpc()),
        ("OTEL_TRACES_SAMPLER", "always_on".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
    ];
    let mut greeters = greeters(&etcd, &env).await;
    call(&greeters.grpc1, 1).await;
    let url = format!(
        "{}/api/traces?service=greeter1&limit=10",
        jaeger.query_url()
    );
    let trace = poll(WAIT, || async {
        let (status, body) = http_get(&url).await.ok()?;
        let answer: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        answer["data"]
            .as_array()?
            .iter()
            .find(|t| t["spans"].as_array().is_some_and(|s| s.len() == 3))
            .cloned()
    })
    .await;
    let Some(trace) = trace else {
        let last = http_get(&url).await.map(|(_, body)| body);
        let services = http_get(&format!("{}/api/services", jaeger.query_url())).await;
        panic!("no three-span trace at {url}: last answer {last:?}; services {services:?}");
    };
    let processes = &trace["processes"];
    let service_of = |span: &Value| {
        processes[span["processID"].as_str().unwrap()]["serviceName"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let spans = trace["spans"].as_array().unwrap();
    let parent_of = |span: &Value| {
        span["references"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["refType"] == "CHILD_OF"))
            .map(|r| r["spanID"].as_str().unwrap().to_owned())
    };
    let kind_of = |span: &Value| {
        span["tags"]
            .as_array()
            .and_then(|tags| tags.iter().find(|t| t["key"] == "span.kind"))
            .map(|t| t["value"].as_str().unwrap().to_owned())
    };
    let find = |service: &str, kind: &str| {
        spans
            .iter()
            .find(|s| service_of(s) == service && kind_of(s).as_deref() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} span of {service}: {trace}"))
    };
    let server1 = find("greeter1", "server");
    let client1 = find("greeter1", "client");
    let server2 = find("greeter2", "server");
    assert_eq!(parent_of(server1), None);
    assert_eq!(parent_of(client1).as_deref(), server1["spanID"].as_str());
    assert_eq!(parent_of(server2).as_deref(), client1["spanID"].as_str());
    let trace_id = trace["traceID"].as_str().unwrap();
    assert!(spans.iter().all(|s| s["traceID"] == trace_id));
    terminate(&mut greeters.greeter1).await;
    terminate(&mut greeters.greeter2).await;
}
