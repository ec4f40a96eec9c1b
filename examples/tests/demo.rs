//! The README's first command, `cargo run -p examples --bin demo`, run as a user would (no
//! `RUST_LOG`): it exits cleanly and prints only the story, numbered lines of the chain's
//! calls, the breaker's round trip, the limiter's refusals and greeter1's metrics, with no log
//! line among them.

use std::{process::Stdio, time::Duration};

use tokio::process::Command;

#[tokio::test]
async fn the_demo_prints_only_the_story_of_the_chain_the_breaker_the_limiter_and_the_metrics() {
    let child = Command::new(env!("CARGO_BIN_EXE_demo"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the demo starts");
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the demo finishes within 120 s")
        .expect("the demo's output");
    // What a terminal shows, without its colours (none are written to a pipe anyway).
    let text = anstream::adapter::strip_str(&String::from_utf8_lossy(&output.stdout)).to_string();
    let logs = anstream::adapter::strip_str(&String::from_utf8_lossy(&output.stderr)).to_string();
    assert!(output.status.success(), "{text}\n{logs}");
    assert!(logs.trim().is_empty(), "log lines by default:\n{logs}");

    // Every line is a heading, blank, or the next numbered line of the story.
    let mut next = 1;
    for line in text.lines() {
        let Some((number, rest)) = line.trim_start().split_once("  ") else {
            continue;
        };
        let Ok(number) = number.parse::<usize>() else {
            continue;
        };
        assert_eq!(number, next, "line {line:?} out of order in:\n{text}");
        assert!(
            [
                "start", "call", "stop", "breaker", "limiter", "metric", "event"
            ]
            .iter()
            .any(|kind| rest.starts_with(kind)),
            "line {line:?} has no kind"
        );
        next += 1;
    }
    assert!(next > 20, "too few numbered lines in:\n{text}");

    for expected in [
        "The chain: caller -> greeter1 Greeter.Hello -> greeter2 Greeter.Test",
        "  call     demo-1 ",
        "  call     demo-3 ",
        "  breaker  greeter2: closed -> open",
        "(circuit breaker is open)",
        "  breaker  greeter2: half-open -> closed",
        "  limiter  greeter2 refused a call to Greeter.Test (429)",
        "refused with 429",
        "  metric   micro_request_total{service=\"greeter1\",endpoint=\"Greeter.Hello\",status=\"success\"}",
        "  metric   micro_breaker_transitions_total{breaker=\"greeter2\",from=\"closed\",to=\"open\"} 1",
        "  stop     both services deregistered and stopped",
        "  event    greeter1 got greeter.events \"test demo-1 from greeter2-",
        "  metric   micro_broker_delivered_total{topic=\"greeter.events\"}",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
}
