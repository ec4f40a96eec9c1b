//! The README's first command, `cargo run -p examples --bin demo`, run as a user would: it
//! exits cleanly and prints the chain's calls, the breaker's round trip, the limiter's
//! refusals and greeter1's metrics.

use std::{process::Stdio, time::Duration};

use tokio::process::Command;

#[tokio::test]
async fn the_demo_shows_the_chain_the_breaker_the_limiter_and_the_metrics() {
    let child = Command::new(env!("CARGO_BIN_EXE_demo"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the demo starts");
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the demo finishes within 120 s")
        .expect("the demo's output");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    for expected in [
        "call 1: caller -> greeter1 Greeter.Hello -> greeter2 Greeter.Test",
        "call 3: caller -> greeter1",
        "breaker greeter2: closed -> open",
        "breaker greeter2: half-open -> closed",
        "refused with 429",
        "micro_request_total{service=\"greeter1\",endpoint=\"Greeter.Hello\",status=\"success\"}",
        "micro_breaker_transitions_total{breaker=\"greeter2\",from=\"closed\",to=\"open\"} 1",
        "both services deregistered and stopped",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
}
