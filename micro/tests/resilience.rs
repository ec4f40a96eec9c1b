//! Breakers and rate limits on real services over TCP (embedded registry): greeter1's client
//! breaker while greeter2 is stopped and back, the flags, and a server limit read by a Python
//! grpcio client.

use std::sync::Arc;
use std::time::Duration;

use micro::registry::Memory;
use micro::wrappers::breaker::adaptive::AdaptiveSettings;
use micro::wrappers::breaker::hystrix::HystrixConfig;
use micro::wrappers::breaker::{BreakerLayer, Event, Fallback, Rejection, Settings, State};
use micro_test_support::{Poll, greeter_at, greeter2, python_greeter_stubs};
use parking_lot::Mutex;
use proto::greeter::{
    Request, Response, greeter_client::GreeterClient, greeter_server::GreeterServer,
};
use tonic::Code;

type Transitions = Arc<Mutex<Vec<(String, State, State)>>>;

/// greeter1 with `breaker` on its client (no retries, so each call is one attempt).
async fn greeter1(registry: &Memory, breaker: BreakerLayer) -> micro::Running {
    let mut service = micro::Service::new()
        .name("greeter1")
        .registry(registry.clone())
        .client_options(micro::client::Options {
            retries: 0,
            request_timeout: Duration::from_secs(5),
            ..Default::default()
        })
        .wrap_client(breaker);
    let to_greeter2 = GreeterClient::new(service.client().channel("greeter2"));
    service
        .handle(GreeterServer::new(examples::Greeter1 {
            greeter2: to_greeter2,
        }))
        .start()
        .await
        .unwrap()
}

async fn caller(greeter1: &micro::Running) -> GreeterClient<tonic::transport::Channel> {
    greeter_at(greeter1.local_addr()).await
}

async fn hello(
    caller: &mut GreeterClient<tonic::transport::Channel>,
) -> Result<String, tonic::Status> {
    caller
        .hello(Request { name: "x".into() })
        .await
        .map(|r| r.into_inner().msg)
}

fn recorder() -> (
    Transitions,
    impl Fn(&str, State, State) + Send + Sync + 'static,
) {
    let seen: Transitions = Arc::default();
    let sink = seen.clone();
    (seen, move |name: &str, from, to| {
        sink.lock().push((name.to_owned(), from, to))
    })
}

fn detail(status: &tonic::Status) -> String {
    micro::errors::Error::parse(status.message()).detail
}

/// Calls until `done` says so or 15 s pass, pausing 20 ms between calls.
async fn until(
    caller: &mut GreeterClient<tonic::transport::Channel>,
    mut done: impl FnMut(&Result<String, tonic::Status>) -> bool,
) -> Result<String, tonic::Status> {
    let mut last = None;
    Poll::within(Duration::from_secs(15))
        .until(async || {
            let result = hello(caller).await;
            let stop = done(&result);
            last = Some(result);
            stop
        })
        .await;
    last.expect("called at least once")
}

#[tokio::test]
async fn gobreaker_opens_while_greeter2_is_stopped_answers_from_the_fallback_and_closes() {
    let registry = Memory::new();
    let first = greeter2(&registry).await;
    let (seen, on_state_change) = recorder();
    let breaker =
        BreakerLayer::gobreaker(Settings::new("greeter1").timeout(Duration::from_secs(1)))
            .fallback(
                "Greeter.Test",
                Fallback::unary(|req: Request, err: &micro::errors::Error| {
                    Ok(Response {
                        msg: format!("fallback for {} ({})", req.name, err.detail),
                    })
                }),
            )
            .on_state_change(on_state_change);
    let greeter1 = greeter1(&registry, breaker.clone()).await;
    let mut caller = caller(&greeter1).await;
    assert!(
        hello(&mut caller)
            .await
            .unwrap()
            .starts_with("greeter1 <- test x from")
    );

    first.stop().await.unwrap();
    // More than 5 consecutive failures trip it; then the fallback answers.
    let mut failures = 0;
    let answer = until(&mut caller, |r| {
        failures += usize::from(r.is_err());
        r.is_ok()
    })
    .await
    .unwrap();
    assert_eq!(
        answer,
        "greeter1 <- fallback for x (circuit breaker is open)"
    );
    assert_eq!(failures, 6);
    assert_eq!(breaker.state("greeter2", ""), Some(State::Open));
    for _ in 0..5 {
        assert_eq!(
            hello(&mut caller).await.unwrap(),
            answer,
            "no network while open"
        );
    }

    let second = greeter2(&registry).await;
    let back = until(&mut caller, |r| {
        r.as_ref().is_ok_and(|m| m.contains("test x"))
    })
    .await;
    assert_eq!(
        back.unwrap(),
        format!("greeter1 <- test x from {}", second.node().id)
    );
    assert_eq!(breaker.state("greeter2", ""), Some(State::Closed));
    let seen: Vec<_> = seen.lock().clone();
    assert_eq!(
        seen,
        [
            ("greeter2".to_owned(), State::Closed, State::Open),
            ("greeter2".to_owned(), State::Open, State::HalfOpen),
            ("greeter2".to_owned(), State::HalfOpen, State::Closed),
        ]
    );
    greeter1.stop().await.unwrap();
    second.stop().await.unwrap();
}

#[tokio::test]
async fn hystrix_opens_probes_once_per_sleep_window_and_a_good_probe_closes_it() {
    let registry = Memory::new();
    let first = greeter2(&registry).await;
    let (seen, on_state_change) = recorder();
    let refusals = Arc::new(Mutex::new(0usize));
    let counted = refusals.clone();
    let breaker = BreakerLayer::hystrix_with_deadline(HystrixConfig {
        request_volume_threshold: 5,
        sleep_window: Duration::from_millis(500),
        ..HystrixConfig::default()
    })
    .on_state_change(on_state_change)
    .on_event(move |_, event| {
        if event == Event::Rejected(Rejection::Open) {
            *counted.lock() += 1;
        }
    });
    let greeter1 = greeter1(&registry, breaker.clone()).await;
    let mut caller = caller(&greeter1).await;
    hello(&mut caller).await.unwrap();
    first.stop().await.unwrap();

    let refused = until(&mut caller, |r| {
        r.as_ref()
            .is_err_and(|s| detail(s) == "hystrix: circuit open")
    })
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(micro::errors::Error::parse(refused.message()).code, 502);

    // While greeter2 is down: calls for 1.6 s; those that were not refused are the probes,
    // at most one per 500 ms window.
    let started = tokio::time::Instant::now();
    let mut probes = 0;
    while started.elapsed() < Duration::from_millis(1600) {
        let result = hello(&mut caller).await;
        let status = result.unwrap_err();
        if detail(&status) != "hystrix: circuit open" {
            probes += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_millis();
    assert!(probes >= 1, "a probe per sleep window");
    assert!(
        probes <= usize::try_from(elapsed / 500 + 1).unwrap(),
        "{probes} probes in {elapsed} ms"
    );
    assert!(*refusals.lock() > 10);

    let second = greeter2(&registry).await;
    let back = until(&mut caller, |r| r.is_ok()).await;
    assert!(back.unwrap().contains("test x"));
    assert_eq!(breaker.state("greeter2", ""), Some(State::Closed));
    let changes: Vec<_> = seen.lock().iter().map(|(_, f, t)| (*f, *t)).collect();
    assert_eq!(
        changes,
        [(State::Closed, State::Open), (State::Open, State::Closed)]
    );
    greeter1.stop().await.unwrap();
    second.stop().await.unwrap();
}

#[tokio::test]
async fn adaptive_drop_rate_rises_while_greeter2_is_down_and_falls_back_to_zero() {
    let registry = Memory::new();
    let first = greeter2(&registry).await;
    let breaker =
        BreakerLayer::adaptive(AdaptiveSettings::new("greeter1").window(Duration::from_secs(2), 8))
            .unwrap();
    let greeter1 = greeter1(&registry, breaker.clone()).await;
    let mut caller = caller(&greeter1).await;
    hello(&mut caller).await.unwrap();
    first.stop().await.unwrap();
    for _ in 0..60 {
        let _ = hello(&mut caller).await;
    }
    let high = breaker.drop_ratio("greeter2", "").unwrap();
    assert!(high > 0.5, "drop ratio {high} while down");

    let second = greeter2(&registry).await;
    Poll::within(Duration::from_secs(15))
        .every(Duration::from_millis(50))
        .until(async || {
            if breaker.drop_ratio("greeter2", "") == Some(0.0) {
                return true;
            }
            let _ = hello(&mut caller).await;
            false
        })
        .await;
    assert_eq!(breaker.drop_ratio("greeter2", ""), Some(0.0));
    assert!(hello(&mut caller).await.unwrap().contains("test x"));
    greeter1.stop().await.unwrap();
    second.stop().await.unwrap();
}

#[tokio::test]
async fn a_handlers_4xx_never_trips_the_client_breaker() {
    let registry = Memory::new();
    let greeter2 = micro::Service::new()
        .name("greeter2")
        .registry(registry.clone())
        .handle(GreeterServer::new(NotFound))
        .start()
        .await
        .unwrap();
    let breaker = BreakerLayer::gobreaker(Settings::new("c"));
    let mut service = micro::Service::new()
        .registry(registry.clone())
        .wrap_client(breaker.clone());
    let mut client = GreeterClient::new(service.client().channel("greeter2"));
    for _ in 0..20 {
        let status = client.test(Request { name: "x".into() }).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    assert_eq!(breaker.state("greeter2", ""), Some(State::Closed));
    greeter2.stop().await.unwrap();
}

#[derive(Clone)]
struct NotFound;

#[tonic::async_trait]
impl proto::greeter::greeter_server::Greeter for NotFound {
    async fn hello(
        &self,
        _: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, tonic::Status> {
        Err(micro::errors::Error::not_found("greeter2", "nobody").to_status())
    }

    async fn test(
        &self,
        _: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, tonic::Status> {
        Err(micro::errors::Error::not_found("greeter2", "nobody").to_status())
    }
}

#[tokio::test]
async fn the_flags_build_a_client_breaker_and_bad_values_are_clear_errors() {
    let registry = Memory::new();
    let running = greeter2(&registry).await;
    let mut service = micro::Service::new()
        .registry(registry.clone())
        .try_init_from([
            "greeter1",
            "--client_breaker",
            "gobreaker",
            "--client_retries",
            "0",
        ])
        .unwrap();
    let mut client = GreeterClient::new(service.client().channel("greeter2"));
    client.test(Request { name: "x".into() }).await.unwrap();
    running.stop().await.unwrap();
    for _ in 0..6 {
        let status = client.test(Request { name: "x".into() }).await.unwrap_err();
        assert_ne!(detail(&status), "circuit breaker is open");
    }
    let status = client.test(Request { name: "x".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(detail(&status), "circuit breaker is open");

    for (flag, value) in [
        ("--client_breaker", "netflix"),
        ("--client_breaker_scope", "planet"),
        ("--server_ratelimit", "-3"),
        ("--client_ratelimit_wait", "perhaps"),
    ] {
        let arg = format!("{flag}={value}");
        let err = micro::Service::new()
            .try_init_from(["svc", arg.as_str()])
            .err()
            .unwrap();
        assert!(err.to_string().contains(flag), "{err}");
    }
}

/// A server limit from the flags, reject mode, with a fill interval far longer than the
/// test: a burst of 20 concurrent calls from a Python grpcio client gets exactly the burst
/// through and ResourceExhausted with go-micro's 429 JSON for the rest.
#[tokio::test]
async fn server_limit_refuses_a_burst_as_seen_by_a_python_grpcio_client() {
    let registry = Memory::new();
    let running = micro::Service::new()
        .name("greeter2")
        .registry(registry.clone())
        .try_init_from([
            "greeter2",
            "--server_ratelimit",
            "0.001",
            "--server_ratelimit_burst",
            "5",
        ])
        .unwrap()
        .handle(GreeterServer::new(examples::Greeter2 {
            test_sleep: Duration::from_millis(200),
        }))
        .start()
        .await
        .unwrap();
    let dir = python_greeter_stubs().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/burst.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(running.local_addr().to_string())
        .arg("20")
        .env("PYTHONPATH", dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "burst.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20);
    let ok = lines.iter().filter(|l| l["code"] == "OK").count();
    let refused: Vec<_> = lines
        .iter()
        .filter(|l| l["code"] == "RESOURCE_EXHAUSTED")
        .collect();
    assert_eq!((ok, refused.len()), (5, 15), "{lines:?}");
    for line in refused {
        let error: serde_json::Value =
            serde_json::from_str(line["details"].as_str().unwrap()).unwrap();
        assert_eq!(error["code"], 429);
        assert_eq!(error["detail"], "too many request");
        assert_eq!(error["id"], "go.micro.server");
    }
    running.stop().await.unwrap();
}
