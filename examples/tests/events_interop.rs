//! Events between micro-rs and real go-micro (v5.30, `interop/cmd/goevents`) through one NATS
//! started by the test: a go-micro publisher to a micro-rs subscriber and a micro-rs publisher
//! to a go-micro subscriber, protobuf bodies, metadata and the W3C trace context carried both
//! ways (go-micro's OpenTelemetry wrappers on the Go side).
//!
//! The Go binaries are built by `scripts/test` (`MICRO_INTEROP_BIN`); without them the tests
//! fail saying how to build them. Run alone with:
//! `(cd interop && go build -o ../target/interop/ ./cmd/...) &&
//! MICRO_INTEROP_BIN=$PWD/target/interop cargo test -p examples --test events_interop`.

use std::{path::PathBuf, process::Stdio, sync::Arc, time::Duration};

use micro::broker::context::{call_context, sampled};
use micro_test_support::{NatsServer, eventually, require::go_binaries, user_and_trace};
use proto::greeter::Response;
use serde::Deserialize;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::Command,
};

fn goevents() -> PathBuf {
    let binary = go_binaries().join("goevents");
    micro_test_support::require(
        "the go-micro events binary (goevents)",
        binary.is_file().then_some(binary),
        "run scripts/test, or `(cd interop && go build -o ../target/interop/ ./cmd/...)`",
    )
}

/// go-micro's environment for a process on `nats`, nothing listening beyond loopback.
fn go_command(nats: &NatsServer, mode: &str) -> Command {
    let mut command = Command::new(goevents());
    command
        .env("GOEVENTS_MODE", mode)
        .env("GOEVENTS_TOPIC", "greeter.events")
        .env("MICRO_BROKER", "nats")
        .env("MICRO_BROKER_ADDRESS", nats.address())
        .env("MICRO_REGISTRY", "memory")
        .env("MICRO_SERVER_ADDRESS", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

fn nats_flags(nats: &NatsServer, name: &str) -> Vec<String> {
    vec![
        "test".into(),
        format!("--server_name={name}"),
        "--broker=nats".into(),
        format!("--broker_address={}", nats.address()),
    ]
}

#[derive(Debug, Deserialize)]
struct Published {
    n: u32,
    trace_id: String,
}

#[tokio::test]
async fn go_micro_publisher_to_micro_rs_subscriber() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let seen = Arc::new(seen::Seen::default());
    let sink = seen.clone();
    let subscriber = micro::Service::new()
        .try_init_from(nats_flags(&nats, "rust-consumer"))?
        .subscribe("greeter.events", move |event: Response| {
            let sink = sink.clone();
            async move {
                let (user, trace) = user_and_trace();
                let trace = trace.map(|(trace_id, _)| format!("{trace_id:032x}"));
                sink.push((event.msg, user, trace));
                Ok::<_, std::convert::Infallible>(())
            }
        })
        .start()
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let output = go_command(&nats, "pub")
        .env("GOEVENTS_COUNT", "3")
        .output()
        .await?;
    assert!(output.status.success(), "goevents pub: {:?}", output.status);
    let published: Vec<Published> = String::from_utf8(output.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(published.len(), 3);

    assert!(
        eventually(Duration::from_secs(10), async || seen.len() == 3)
            .await
            .is_some(),
        "the go-micro messages arrive: {:?}",
        seen.all()
    );
    let mut got = seen.all();
    got.sort();
    for (index, p) in published.iter().enumerate() {
        assert_eq!(
            got[index],
            (
                format!("go {}", p.n),
                Some("gopher".to_owned()),
                Some(p.trace_id.clone())
            ),
            "body, metadata and trace context carried"
        );
    }
    subscriber.stop().await?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Received {
    msg: String,
    metadata: std::collections::BTreeMap<String, String>,
    trace_id: String,
}

#[tokio::test]
async fn micro_rs_publisher_to_go_micro_subscriber() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let mut go = go_command(&nats, "sub").spawn()?;
    let mut lines = BufReader::new(go.stdout.take().expect("piped")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??;
    assert_eq!(ready.as_deref(), Some(r#"{"ready":true}"#));

    let producer = micro::Service::new().try_init_from(nats_flags(&nats, "rust-producer"))?;
    let events = producer.publisher::<Response>("greeter.events");
    let trace_id = 0x5a5a_0000_0000_0000_0000_0000_0000_0001_u128;
    for n in 0..3 {
        let mut metadata = http_metadata();
        metadata.insert("x-user", "ferris".parse()?);
        let context = call_context(metadata, Some(sampled(trace_id, 0x77 + n)));
        context
            .scope(events.publish(&Response {
                msg: format!("rust {n}"),
            }))
            .await?;
    }
    for n in 0..3 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await??
            .expect("a line per message");
        let received: Received = serde_json::from_str(&line)?;
        assert_eq!(
            received.msg,
            format!("rust {n}"),
            "protobuf body decoded by go-micro"
        );
        let user = received
            .metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-user"))
            .map(|(_, v)| v.as_str());
        assert_eq!(user, Some("ferris"), "metadata: {:?}", received.metadata);
        assert_eq!(
            received.metadata.get("Micro-Topic").map(String::as_str),
            Some("greeter.events")
        );
        assert_eq!(
            received.trace_id,
            format!("{trace_id:032x}"),
            "go-micro's Sub span continues the publisher's trace"
        );
    }
    go.kill().await?;
    Ok(())
}

fn http_metadata() -> http::HeaderMap {
    http::HeaderMap::new()
}

/// A list shared between the test and the handler.
mod seen {
    use std::sync::Mutex;

    /// (msg, x-user, trace id) of one message.
    pub(super) type Item = (String, Option<String>, Option<String>);

    /// Every message seen.
    #[derive(Default, Debug)]
    pub(super) struct Seen(Mutex<Vec<Item>>);

    impl Seen {
        pub(super) fn push(&self, item: Item) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(item);
        }
        pub(super) fn len(&self) -> usize {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
        }
        pub(super) fn all(&self) -> Vec<Item> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }
    }
}

/// A subscriber's registry entry as go-micro writes it and as micro-rs writes it, read back
/// from one etcd: the same endpoint (`Func`, the message's shape, `subscriber` / `topic`).
#[tokio::test]
async fn subscribers_are_listed_in_the_registry_as_go_micro_lists_them() -> anyhow::Result<()> {
    use micro::registry::{Etcd, Registry as _};
    let nats = NatsServer::start().await?;
    let etcd = micro_test_support::EtcdServer::start().await?;
    let mut go = go_command(&nats, "sub")
        .env("MICRO_REGISTRY", "etcd")
        .env("MICRO_REGISTRY_ADDRESS", etcd.endpoint())
        .env("MICRO_SERVER_NAME", "go-audit")
        .spawn()?;
    let mut lines = BufReader::new(go.stdout.take().expect("piped")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??;
    assert_eq!(ready.as_deref(), Some(r#"{"ready":true}"#));
    let rust = micro::Service::new()
        .registry(Etcd::new([etcd.endpoint()]))
        .descriptors(proto::greeter::FILE_DESCRIPTOR_SET)?
        .try_init_from(nats_flags(&nats, "rust-audit"))?
        .subscribe("greeter.events", |_: Response| async {
            Ok::<_, std::convert::Infallible>(())
        })
        .start()
        .await?;
    let registry = Etcd::new([etcd.endpoint()]);
    let subscriber_of = |services: Vec<micro::registry::Service>| {
        let service = services.into_iter().next().expect("registered");
        let node_broker = service.nodes[0].metadata.get("broker").cloned();
        let endpoint = service
            .endpoints
            .into_iter()
            .find(|e| e.metadata.get("subscriber").map(String::as_str) == Some("true"))
            .expect("a subscriber endpoint");
        (endpoint, node_broker)
    };
    let (go_endpoint, go_broker) = subscriber_of(registry.get_service("go-audit").await?);
    let (rust_endpoint, rust_broker) = subscriber_of(registry.get_service("rust-audit").await?);
    assert_eq!(rust_endpoint, go_endpoint, "the same endpoint JSON");
    assert_eq!(go_endpoint.metadata["topic"], "greeter.events");
    assert_eq!(
        (go_broker.as_deref(), rust_broker.as_deref()),
        (Some("nats"), Some("nats"))
    );
    rust.stop().await?;
    go.kill().await?;
    Ok(())
}
