//! `micro publish` and `micro subscribe` against a real NATS (and etcd for `describe`), with
//! micro-rs services in this process: greeter2 publishing its answers, a subscriber listed in
//! the registry.

use std::{path::PathBuf, process::Stdio, time::Duration};

use micro::registry::Etcd;
use micro_test_support::{EtcdServer, NatsServer};
use proto::greeter::{FILE_DESCRIPTOR_SET, Request, Response, greeter_server::GreeterServer};
use serde_json::Value;
use tokio::process::{Child, Command};

fn greeter_proto() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../proto/proto/greeter.proto")
        .display()
        .to_string()
}

fn micro(nats: &NatsServer, etcd: Option<&EtcdServer>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_micro"));
    command
        .args(args)
        .env("MICRO_BROKER", "nats")
        .env("MICRO_BROKER_ADDRESS", nats.address())
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(etcd) = etcd {
        command
            .env("MICRO_REGISTRY", "etcd")
            .env("MICRO_REGISTRY_ADDRESS", etcd.endpoint());
    }
    command
}

/// `micro subscribe <topic> -o json --count 1` for greeter.Response.
fn subscribe_once(nats: &NatsServer, topic: &str) -> Child {
    let proto = greeter_proto();
    micro(
        nats,
        None,
        &[
            "subscribe",
            topic,
            "-o",
            "json",
            "--count",
            "1",
            "--proto",
            &proto,
            "--message",
            "greeter.Response",
        ],
    )
    .spawn()
    .expect("micro subscribe starts")
}

/// Runs `act` every 200 ms until `subscriber` exits (it got its message), at most 20 s; its
/// one JSON line.
async fn until_received(subscriber: Child, mut act: impl AsyncFnMut()) -> Value {
    let waiting = subscriber.wait_with_output();
    tokio::pin!(waiting);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::select! {
            output = &mut waiting => {
                let output = output.expect("micro subscribe ran");
                let stdout = String::from_utf8_lossy(&output.stdout);
                assert!(output.status.success(), "{stdout} {}", String::from_utf8_lossy(&output.stderr));
                return serde_json::from_str(stdout.trim()).expect("one JSON line");
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                assert!(tokio::time::Instant::now() < deadline, "micro subscribe got nothing");
                act().await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe_with_a_proto() {
    let nats = NatsServer::start().await.unwrap();
    let proto = greeter_proto();
    let subscriber = subscribe_once(&nats, "cli.events");
    let line = until_received(subscriber, async || {
        let output = micro(
            &nats,
            None,
            &[
                "publish",
                "cli.events",
                r#"{"msg": "from the cli"}"#,
                "-m",
                "user=alice",
                "--proto",
                &proto,
                "--message",
                "greeter.Response",
            ],
        )
        .output()
        .await
        .unwrap();
        assert!(output.status.success(), "{output:?}");
    })
    .await;
    assert_eq!(line["message"]["msg"], "from the cli");
    assert_eq!(line["topic"], "cli.events");
    assert_eq!(line["header"]["user"], "alice");
    assert_eq!(line["header"]["Content-Type"], "application/grpc+proto");
    assert_eq!(line["header"]["Micro-Topic"], "cli.events");

    // Bad input is a clear error (exit 2), never a panic.
    for (args, expected) in [
        (vec!["publish", "t", "{}"], "--proto FILE --message NAME"),
        (
            vec![
                "publish",
                "t",
                r#"{"nope": 1}"#,
                "--proto",
                &proto,
                "--message",
                "greeter.Response",
            ],
            "does not fit greeter.Response",
        ),
        (
            vec![
                "publish",
                "t",
                "{}",
                "--proto",
                &proto,
                "--message",
                "greeter.Nope",
            ],
            "greeter.Response",
        ),
        (vec!["subscribe", "t", "--broker", "http"], "not supported"),
    ] {
        let output = micro(&nats, None, &args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeter2_publishes_its_answers_and_describe_lists_subscribers() {
    let nats = NatsServer::start().await.unwrap();
    let etcd = EtcdServer::start().await.unwrap();
    let flags = |name: &str| {
        vec![
            "test".to_owned(),
            format!("--server_name={name}"),
            "--broker=nats".into(),
            format!("--broker_address={}", nats.address()),
        ]
    };
    let greeter2 = micro::Service::new()
        .registry(Etcd::new([etcd.endpoint()]))
        .descriptors(FILE_DESCRIPTOR_SET)
        .unwrap()
        .try_init_from(flags("greeter2"))
        .unwrap();
    let events = greeter2.publisher("greeter.events");
    let greeter2 = greeter2
        .handle(GreeterServer::new(examples::Greeter2Events {
            inner: examples::Greeter2 {
                test_sleep: Duration::ZERO,
            },
            events,
        }))
        .start()
        .await
        .unwrap();
    let audit = micro::Service::new()
        .registry(Etcd::new([etcd.endpoint()]))
        .descriptors(FILE_DESCRIPTOR_SET)
        .unwrap()
        .try_init_from(flags("audit"))
        .unwrap()
        .subscribe("greeter.events", |_: Response| async {
            Ok::<_, std::convert::Infallible>(())
        })
        .start()
        .await
        .unwrap();

    let mut client = micro_test_support::greeter_at(greeter2.local_addr()).await;
    let subscriber = subscribe_once(&nats, "greeter.events");
    let line = until_received(subscriber, async || {
        client
            .test(Request { name: "cli".into() })
            .await
            .expect("greeter2 answers");
    })
    .await;
    let msg = line["message"]["msg"].as_str().unwrap_or_default();
    assert!(msg.starts_with("test cli from greeter2-"), "{line}");

    let output = micro(&nats, Some(&etcd), &["describe", "audit"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("Func (subscriber of greeter.events)"),
        "{text}"
    );
    assert!(text.contains("broker=nats"), "{text}");
    audit.stop().await.unwrap();
    greeter2.stop().await.unwrap();
}
