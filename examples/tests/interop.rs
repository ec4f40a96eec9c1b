//! micro-rs and real go-micro (v5.30, `interop/`) in one etcd: each side finds and calls the
//! other, reads the other's registrations, errors, deadlines and metadata, and sees the other's
//! nodes come and go. Python grpcio is the third-party client at the entry.
//!
//! The Go binaries (`greeter`, `gocall`, `goregistry`) are built by `scripts/test`, which points
//! `MICRO_INTEROP_BIN` at them; without them every test here fails, saying how to build them
//! (Go is installed on every machine these tests run on). Run alone with:
//! `(cd interop && go build -o ../target/interop/ ./cmd/...) &&
//! MICRO_INTEROP_BIN=$PWD/target/interop cargo test -p examples --test interop`.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Output, Stdio},
    sync::Arc,
    time::Duration,
};

use micro::{
    CallContext, CallInfo, CallOptions,
    errors::Error as MicroError,
    registry::{Action, Cache, Etcd, RegisterOptions, Registry, WatchOptions},
};
use micro_test_support::{
    EtcdServer, MicroProcess, Poll, REGISTER_INTERVAL as INTERVAL, REGISTER_TTL as TTL,
    client_on as rust_client, eventually, free_port, greeter_at, next_event, node_address,
    python_greeter_stubs, require::go_binaries, sigterm,
};
use proto::greeter::{
    FILE_DESCRIPTOR_SET, Request, Response, greeter_client::GreeterClient, greeter_server,
    greeter_server::GreeterServer,
};
use serde::Deserialize;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
    time::Instant,
};
use tonic::Status;

/// Generous: first calls dial, processes start on a loaded machine.
const START: Duration = Duration::from_secs(30);

// === the Go side ===

/// A go-micro greeter process: registers as `<name>-<id>` on `127.0.0.1:<free port>`.
struct GoGreeter {
    child: Child,
    node: String,
    address: String,
}

fn go_greeter(
    go: &Path,
    etcd: &EtcdServer,
    name: &str,
    id: &str,
    extra: &[(&str, &str)],
) -> GoGreeter {
    let address = format!("127.0.0.1:{}", free_port().unwrap());
    let child = MicroProcess::on(go.join("greeter"), etcd)
        .quiet()
        .env("MICRO_SERVER_NAME", name)
        .id(id)
        .address(&address)
        // The http broker listens too: keep it on loopback.
        .env("MICRO_BROKER_ADDRESS", "127.0.0.1:0")
        .envs(extra.iter().copied())
        .spawn();
    GoGreeter {
        child,
        node: format!("{name}-{id}"),
        address,
    }
}

/// A micro-rs example binary (`greeter1`, `greeter2`) with node id `id`.
fn rust_binary(binary: &str, etcd: &EtcdServer, id: &str, extra: &[(&str, &str)]) -> Child {
    MicroProcess::on(binary, etcd)
        .quiet()
        .id(id)
        .envs(extra.iter().copied())
        .spawn()
}

/// Runs the Go tool `tool` (`gocall`, `goregistry`) on `etcd` with `args`, to its end.
async fn go_tool(go: &Path, tool: &str, etcd: &EtcdServer, args: &[&str]) -> Output {
    Command::new(go.join(tool))
        .env("MICRO_REGISTRY_ADDRESS", etcd.endpoint())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{tool} runs: {e}"))
}

/// One call's outcome as `gocall` prints it.
#[derive(Debug, Deserialize)]
struct GoResult {
    msg: Option<String>,
    error: Option<MicroError>,
}

/// Calls through go-micro's gRPC client (`gocall`), discovering in etcd. The process must exit
/// cleanly: a panic in go-micro's client fails the test here.
async fn gocall(go: &Path, etcd: &EtcdServer, args: &[&str]) -> Vec<GoResult> {
    let output = go_tool(go, "gocall", etcd, args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("panic"),
        "gocall {args:?} failed ({}): {stderr}",
        output.status
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

async fn gocall_one(go: &Path, etcd: &EtcdServer, args: &[&str]) -> GoResult {
    let mut results = gocall(go, etcd, args).await;
    assert_eq!(results.len(), 1, "{results:?}");
    results.remove(0)
}

/// go-micro's view of the registry (`goregistry list` / `get NAME`), decoded by micro-rs.
async fn goregistry(go: &Path, etcd: &EtcdServer, args: &[&str]) -> Vec<micro::registry::Service> {
    let raw = goregistry_raw(go, etcd, args).await;
    serde_json::from_str(&raw).expect("go-micro's JSON decodes in micro-rs")
}

/// `goregistry`'s output as go-micro's `encoding/json` wrote it.
async fn goregistry_raw(go: &Path, etcd: &EtcdServer, args: &[&str]) -> String {
    let output = go_tool(go, "goregistry", etcd, args).await;
    assert!(
        output.status.success(),
        "goregistry {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// A long-running `goregistry watch` / `poll`: its JSON lines with the time each arrived.
struct GoLines {
    child: Child,
    lines: mpsc::UnboundedReceiver<(Instant, serde_json::Value)>,
}

impl GoLines {
    fn start(go: &Path, etcd: &EtcdServer, args: &[&str]) -> GoLines {
        let mut child = Command::new(go.join("goregistry"))
            .env("MICRO_REGISTRY_ADDRESS", etcd.endpoint())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("goregistry starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                if tx.send((Instant::now(), value)).is_err() {
                    break;
                }
            }
        });
        GoLines { child, lines }
    }

    /// The next line, within `limit`.
    async fn next(&mut self, limit: Duration) -> Option<(Instant, serde_json::Value)> {
        tokio::time::timeout(limit, self.lines.recv())
            .await
            .ok()
            .flatten()
    }

    /// Lines until one satisfies `check`, within `limit`; returns when it arrived.
    async fn until(
        &mut self,
        limit: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<Instant> {
        let end = Instant::now() + limit;
        while let Some((at, value)) = self
            .next(end.saturating_duration_since(Instant::now()))
            .await
        {
            if check(&value) {
                return Some(at);
            }
        }
        None
    }
}

// === the Rust side ===

/// An in-process micro-rs greeter2 that, like the Go one, returns a chosen error for
/// `error:<code>:<id>:<detail>`, a raw gRPC status for `status:<grpc code>:<message>`, and
/// echoes the metadata and deadline it saw for `echo`.
#[derive(Clone)]
struct RustGreeter2 {
    sleep: Duration,
}

#[tonic::async_trait]
impl greeter_server::Greeter for RustGreeter2 {
    async fn hello(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        self.test(request).await
    }

    async fn test(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        let (headers, extensions, Request { name }) = request.into_parts();
        let traceparent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let info = extensions.get::<CallInfo>();
        let node = info
            .and_then(|i| i.node.as_ref())
            .map(|n| n.id.to_string())
            .unwrap_or_default();
        let deadline_ms = info
            .and_then(|i| i.deadline)
            .map(|d| d.remaining().as_millis() as i64);
        tokio::time::sleep(self.sleep).await;
        if let Some(rest) = name.strip_prefix("error:") {
            let mut parts = rest.splitn(3, ':');
            let (Some(code), Some(id), Some(detail)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(MicroError::bad_request("interop.rust", "bad error spec").into());
            };
            let code = code
                .parse()
                .map_err(|_| Status::invalid_argument("bad code"))?;
            return Err(MicroError::new(id, code, detail).into());
        }
        if let Some(rest) = name.strip_prefix("status:") {
            let (code, message) = rest.split_once(':').unwrap_or((rest, ""));
            let code = code
                .parse::<i32>()
                .map_err(|_| Status::invalid_argument("bad code"))?;
            return Err(Status::new(tonic::Code::from(code), message));
        }
        let msg = if name == "echo" {
            let metadata: BTreeMap<String, String> = CallContext::with_current(|ctx| {
                ctx.metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
            serde_json::json!({"node": node, "metadata": metadata, "deadline_ms": deadline_ms, "traceparent": traceparent})
                .to_string()
        } else {
            format!("test {name} from {node}")
        };
        Ok(tonic::Response::new(Response { msg }))
    }
}

async fn rust_greeter2(etcd: &EtcdServer, sleep: Duration) -> micro::Running {
    micro::Service::new()
        .name("greeter2")
        .registry(Etcd::new([etcd.endpoint()]))
        .address("127.0.0.1:0")
        .register_ttl(Duration::from_secs(TTL))
        .register_interval(Duration::from_secs(INTERVAL))
        .descriptors(FILE_DESCRIPTOR_SET)
        .unwrap()
        .handle(GreeterServer::new(RustGreeter2 { sleep }))
        .start()
        .await
        .expect("micro-rs greeter2 starts")
}

/// Waits until `id` is registered under `service`; returns its address.
async fn registered(registry: &Etcd, service: &str, id: &str) -> String {
    let found = Poll::within(START)
        .value(async || node_address(registry, service, id).await)
        .await;
    let Some((address, _)) = found else {
        panic!("{service} node {id} did not register")
    };
    address
}

/// Python grpcio, the third-party client: calls `Greeter.Hello` at `address` on the proto's
/// own path (`/greeter.Greeter/Hello`), with stubs generated from proto/greeter.proto.
async fn python_hello(address: &str, name: &str) -> String {
    let dir = python_greeter_stubs().await;
    let script = r#"
import sys
sys.path.insert(0, sys.argv[1])
import grpc, greeter_pb2, greeter_pb2_grpc
with grpc.insecure_channel(sys.argv[2]) as channel:
    stub = greeter_pb2_grpc.GreeterStub(channel)
    print(stub.Hello(greeter_pb2.Request(name=sys.argv[3]), timeout=20).msg)
"#;
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(dir.path())
        .arg(address)
        .arg(name)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "python grpcio call failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

// === 1. calls both ways, by discovery ===

#[tokio::test]
async fn python_calls_rust_greeter1_which_finds_and_calls_go_greeter2() {
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let go2 = go_greeter(&go, &etcd, "greeter2", "go", &[]);
    let _greeter1 = rust_binary(env!("CARGO_BIN_EXE_greeter1"), &etcd, "greeter1-rust", &[]);
    registered(&registry, "greeter2", &go2.node).await;
    let address = registered(&registry, "greeter1", "greeter1-rust").await;

    let reply = python_hello(&address, "py").await;
    assert_eq!(reply, "greeter1 <- test py from greeter2-go");
}

#[tokio::test]
async fn python_calls_go_greeter1_which_finds_and_calls_rust_greeter2() {
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let _greeter2 = rust_binary(env!("CARGO_BIN_EXE_greeter2"), &etcd, "greeter2-rust", &[]);
    let go1 = go_greeter(
        &go,
        &etcd,
        "greeter1",
        "go",
        &[("INTEROP_CALL", "greeter2")],
    );
    registered(&registry, "greeter2", "greeter2-rust").await;
    registered(&registry, "greeter1", &go1.node).await;

    // Python on the proto's path (/greeter.Greeter/Hello); go-micro routes on the last segment.
    let reply = python_hello(&go1.address, "py").await;
    assert_eq!(reply, "greeter1 <- test py from greeter2-rust");
    // go-micro's client called greeter2 on its own path, /greeter2.Greeter/Test.
    let via_go = gocall_one(
        &go,
        &etcd,
        &[
            "--service",
            "greeter1",
            "--endpoint",
            "Greeter.Hello",
            "--name",
            "go",
        ],
    )
    .await;
    assert_eq!(
        via_go.msg.as_deref(),
        Some("greeter1 <- test go from greeter2-rust"),
        "{via_go:?}"
    );
}

// === 2. the registry both ways ===

#[tokio::test]
async fn go_micro_lists_rust_nodes_and_micro_rs_lists_go_nodes_as_each_sees_its_own() {
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let _rust = rust_binary(
        env!("CARGO_BIN_EXE_greeter2"),
        &etcd,
        "greeter2-rust",
        &[
            ("MICRO_SERVER_METADATA", "zone=a"),
            ("MICRO_SERVER_VERSION", "1.2.3"),
        ],
    );
    let go1 = go_greeter(
        &go,
        &etcd,
        "gogreeter",
        "go",
        &[("MICRO_SERVER_METADATA", "zone=b")],
    );
    registered(&registry, "greeter2", "greeter2-rust").await;
    registered(&registry, "gogreeter", &go1.node).await;

    // Go's registry API reads micro-rs's registration: same endpoints, node, metadata.
    let rust_view = registry.get_service("greeter2").await.unwrap();
    let go_view = goregistry(&go, &etcd, &["get", "greeter2"]).await;
    assert_eq!(go_view, rust_view.to_vec());
    let listed = goregistry(&go, &etcd, &["list"]).await;
    assert!(
        listed
            .iter()
            .any(|s| s.name == "greeter2" && s.version == "1.2.3"),
        "{listed:?}"
    );
    let service = &go_view[0];
    let endpoints: Vec<&str> = service.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(endpoints, ["Greeter.Hello", "Greeter.Test"]);
    let request = service.endpoints[0].request.as_ref().unwrap();
    assert_eq!(
        (request.name.as_str(), request.values[0].name.as_str()),
        ("Request", "name")
    );
    let node = &service.nodes[0];
    assert_eq!(node.metadata.get("zone").map(String::as_str), Some("a"));
    assert_eq!(
        node.metadata.get("protocol").map(String::as_str),
        Some("grpc")
    );

    // Byte for byte: go-micro re-encoding micro-rs's stored value gives that value back.
    let mut client = etcd.client().await.unwrap();
    let key = micro::registry::node_key("greeter2", "greeter2-rust");
    let stored = client.get(key, None).await.unwrap();
    let stored = stored.kvs()[0].value_str().unwrap().to_owned();
    let reencoded = goregistry_raw(&go, &etcd, &["get", "greeter2"]).await;
    assert_eq!(reencoded.trim(), format!("[{stored}]"));

    // micro-rs reads go-micro's registration as go-micro itself does.
    let go_own = goregistry(&go, &etcd, &["get", "gogreeter"]).await;
    let rust_of_go = registry.get_service("gogreeter").await.unwrap();
    assert_eq!(rust_of_go.to_vec(), go_own);
    let go_node = &rust_of_go[0].nodes[0];
    assert_eq!(go_node.address, go1.address);
    for (key, value) in [
        ("zone", "b"),
        ("protocol", "grpc"),
        ("registry", "etcd"),
        ("server", "grpc"),
    ] {
        assert_eq!(
            go_node.metadata.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    assert!(
        rust_of_go[0]
            .endpoints
            .iter()
            .any(|e| e.name == "Greeter.Test")
    );

    // The stored JSON itself: Go's value (with its `null`s) decodes in micro-rs.
    let key = micro::registry::node_key("gogreeter", &go1.node);
    let raw = client.get(key, None).await.unwrap();
    let raw = raw.kvs()[0].value_str().unwrap().to_owned();
    assert!(
        raw.contains(r#""metadata":null"#),
        "go-micro writes nil maps as null: {raw}"
    );
    let decoded: micro::registry::Service = serde_json::from_str(&raw).unwrap();
    assert_eq!(decoded.nodes, rust_of_go[0].nodes);
}

#[tokio::test]
async fn micro_rs_watches_go_nodes_come_and_go() {
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let mut watcher = registry
        .watch(WatchOptions {
            service: Some("greeter2".into()),
        })
        .await
        .unwrap();
    let mut go2 = go_greeter(&go, &etcd, "greeter2", "go", &[]);
    let created = next_event(&mut watcher, START).await;
    assert_eq!(created.action, Action::Create);
    assert_eq!(created.service.nodes[0].id, go2.node);
    assert_eq!(created.service.nodes[0].address, go2.address);

    sigterm(&go2.child);
    let deleted = next_event(&mut watcher, START).await;
    assert_eq!(deleted.action, Action::Delete);
    assert_eq!(deleted.service.nodes[0].id, go2.node);
    go2.child.wait().await.unwrap();
}

#[tokio::test]
async fn go_micro_watcher_survives_micro_rs_register_update_and_deregister() {
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let mut watch = GoLines::start(&go, &etcd, &["watch", "greeter2"]);
    watch
        .until(START, |v| v["action"] == "ready")
        .await
        .expect("go-micro watcher ready");

    // micro-rs's registry writes as a micro-rs server does: register, renew with a change,
    // deregister.
    let running = rust_greeter2(&etcd, Duration::ZERO).await;
    let node = running.node().id.to_string();
    let of_node = |action: &'static str, node: String| {
        move |v: &serde_json::Value| {
            v["action"] == action && v["service"]["nodes"][0]["id"] == node.as_str()
        }
    };
    watch
        .until(START, of_node("create", node.clone()))
        .await
        .expect("go-micro saw micro-rs's register");
    let mut service = registry.get_service("greeter2").await.unwrap()[0].clone();
    service.nodes[0].metadata.insert("zone".into(), "c".into());
    registry
        .register(
            &service,
            RegisterOptions {
                ttl: Duration::from_secs(TTL),
            },
        )
        .await
        .unwrap();
    let updated = watch.until(START, |v| {
        v["action"] == "update" && v["service"]["nodes"][0]["metadata"]["zone"] == "c"
    });
    updated.await.expect("go-micro saw micro-rs's update");
    running.stop().await.unwrap();
    watch
        .until(START, of_node("delete", node.clone()))
        .await
        .expect("go-micro saw micro-rs's deregister");

    // Still watching after all three: a new node shows up.
    let _again = rust_greeter2(&etcd, Duration::ZERO).await;
    watch
        .until(START, |v| v["action"] == "create")
        .await
        .expect("go-micro's watcher still alive");
    assert!(
        watch.child.try_wait().unwrap().is_none(),
        "go-micro's watcher exited"
    );
}

// === 3. errors both ways ===

const ERRORS: [(i32, &str, &str); 3] = [
    (404, "interop.notfound", "no such greeting"),
    (429, "interop.limit", "too many request"),
    (500, "interop.boom", "it broke: {\"quoted\"}"),
];

#[tokio::test]
async fn a_micro_rs_handlers_errors_reach_go_micros_client_unchanged() {
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let running = rust_greeter2(&etcd, Duration::ZERO).await;
    registered(&registry, "greeter2", &running.node().id).await;

    for (code, id, detail) in ERRORS {
        let name = format!("error:{code}:{id}:{detail}");
        let result = gocall_one(&go, &etcd, &["--name", &name, "--retries", "0"]).await;
        assert_eq!(
            result.error,
            Some(MicroError::new(id, code, detail)),
            "{result:?}"
        );
    }

    // Whatever else a micro-rs server puts in a status, go-micro's client reads it without
    // panicking: gRPC codes with and without go-micro's JSON, empty and odd messages.
    for (grpc, message, want) in [
        (13, "plain text", 500),
        (5, "", 404),
        (14, "unavailable now", 503),
        (8, "{not json", 500),
        (2, r#"{"id":"x","code":418,"detail":"teapot"}"#, 418),
        (16, "who are you", 401),
    ] {
        let name = format!("status:{grpc}:{message}");
        let result = gocall_one(&go, &etcd, &["--name", &name, "--retries", "0"]).await;
        let error = result.error.expect("an error");
        assert_eq!(error.code, want, "status {grpc} {message:?}: {error:?}");
    }
    // An endpoint micro-rs does not serve.
    let result = gocall_one(
        &go,
        &etcd,
        &["--endpoint", "Greeter.Nope", "--retries", "0"],
    )
    .await;
    assert_eq!(result.error.expect("an error").code, 501);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_go_micro_handlers_errors_reach_micro_rss_client_unchanged() {
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let go2 = go_greeter(&go, &etcd, "greeter2", "go", &[("INTEROP_TEST_SLEEP", "0")]);
    registered(&registry, "greeter2", &go2.node).await;
    let client = rust_client(&etcd, micro::client::Strategy::Random);

    for (code, id, detail) in ERRORS {
        let name = format!("error:{code}:{id}:{detail}");
        let status = client
            .call::<_, Response>("greeter2", "Greeter.Test", Request { name })
            .await
            .expect_err("an error");
        assert_eq!(
            MicroError::from_status(&status),
            MicroError::new(id, code, detail),
            "{status:?}"
        );
    }
    // go-micro's answer to an endpoint it does not serve.
    let status = client
        .call::<_, Response>("greeter2", "Greeter.Nope", Request { name: "x".into() })
        .await
        .expect_err("unknown endpoint");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
}

// === 4. deadlines and metadata both ways ===

#[tokio::test]
async fn go_micro_caller_times_out_on_micro_rs_and_its_deadline_and_metadata_arrive() {
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let running = rust_greeter2(&etcd, Duration::from_millis(100)).await;
    registered(&registry, "greeter2", &running.node().id).await;

    let timed_out = gocall_one(&go, &etcd, &["--timeout", "50ms", "--retries", "0"]).await;
    assert_eq!(
        timed_out.error.as_ref().map(|e| e.code),
        Some(408),
        "{timed_out:?}"
    );

    let echo = gocall_one(
        &go,
        &etcd,
        &[
            "--name",
            "echo",
            "--timeout",
            "5s",
            "--md",
            "X-User=alice",
            "--md",
            "x-tenant=t1",
        ],
    )
    .await;
    let echo: serde_json::Value =
        serde_json::from_str(echo.msg.as_deref().expect("a reply")).unwrap();
    assert_eq!(echo["metadata"]["x-user"], "alice", "{echo}");
    assert_eq!(echo["metadata"]["x-tenant"], "t1", "{echo}");
    // go-micro's own transport headers are not the handler's metadata.
    for header in ["timeout", "x-content-type"] {
        assert!(
            echo["metadata"].get(header).is_none(),
            "{header} passed on: {echo}"
        );
    }
    let left = echo["deadline_ms"]
        .as_i64()
        .expect("the handler saw a deadline");
    assert!(left > 0 && left <= 5000, "{echo}");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn micro_rs_caller_times_out_on_go_micro_and_its_deadline_and_metadata_arrive() {
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let go2 = go_greeter(&go, &etcd, "greeter2", "go", &[]);
    registered(&registry, "greeter2", &go2.node).await;
    let client = rust_client(&etcd, micro::client::Strategy::Random);
    let mut greeter = GreeterClient::new(client.channel("greeter2"));

    let mut request = tonic::Request::new(Request {
        name: "late".into(),
    });
    request.extensions_mut().insert(CallOptions {
        timeout: Some(Duration::from_millis(50)),
        retries: Some(0),
        ..Default::default()
    });
    let status = greeter.test(request).await.expect_err("a timeout");
    assert_eq!(MicroError::from_status(&status).code, 408, "{status:?}");

    let mut request = tonic::Request::new(Request {
        name: "echo".into(),
    });
    request
        .metadata_mut()
        .insert("x-user", "alice".parse().unwrap());
    request.extensions_mut().insert(CallOptions {
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    });
    let reply = greeter.test(request).await.expect("echo").into_inner();
    let echo: serde_json::Value = serde_json::from_str(&reply.msg).unwrap();
    assert_eq!(echo["node"], go2.node.as_str());
    assert_eq!(echo["metadata"]["x-user"], "alice", "{echo}");
    let left = echo["deadline_ms"]
        .as_i64()
        .expect("go-micro's handler saw a deadline");
    assert!(left > 0 && left <= 5000, "{echo}");
}

// === 5. discovery under change ===

#[tokio::test]
async fn go_nodes_killed_or_stopped_leave_micro_rss_cache() {
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let mut killed = go_greeter(&go, &etcd, "greeter2", "killed", &[]);
    let mut stopped = go_greeter(&go, &etcd, "greeter2", "stopped", &[]);
    registered(&registry, "greeter2", &killed.node).await;
    registered(&registry, "greeter2", &stopped.node).await;
    let cache = Cache::new(Arc::new(Etcd::new([etcd.endpoint()])));
    let in_cache = |cache: &Cache, id: &str| {
        cache
            .peek("greeter2")
            .is_some_and(|services| services.iter().flat_map(|s| &s.nodes).any(|n| n.id == id))
    };
    let known = eventually(START, || async {
        let _ = cache.get_service("greeter2").await;
        in_cache(&cache, &killed.node) && in_cache(&cache, &stopped.node)
    });
    assert!(known.await.is_some(), "cache never saw both Go nodes");

    killed.child.start_kill().unwrap(); // SIGKILL: go-micro cannot deregister
    killed.child.wait().await.unwrap();
    let gone = eventually(Duration::from_secs(TTL + 1), || async {
        !in_cache(&cache, &killed.node)
    });
    gone.await
        .expect("killed Go node still cached after TTL + 1 s");

    sigterm(&stopped.child);
    let gone = eventually(Duration::from_secs(1), || async {
        !in_cache(&cache, &stopped.node)
    });
    gone.await
        .expect("stopped Go node still cached 1 s after SIGTERM");
    stopped.child.wait().await.unwrap();
}

#[tokio::test]
async fn rust_nodes_killed_or_stopped_leave_go_micros_view() {
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let mut killed = rust_binary(
        env!("CARGO_BIN_EXE_greeter2"),
        &etcd,
        "greeter2-killed",
        &[],
    );
    let mut stopped = rust_binary(
        env!("CARGO_BIN_EXE_greeter2"),
        &etcd,
        "greeter2-stopped",
        &[],
    );
    registered(&registry, "greeter2", "greeter2-killed").await;
    registered(&registry, "greeter2", "greeter2-stopped").await;

    // go-micro's GetService, polled (its watcher drops events, so go-micro reads this way).
    let mut poll = GoLines::start(&go, &etcd, &["poll", "greeter2", "50ms"]);
    let both = |v: &serde_json::Value| {
        v["nodes"] == serde_json::json!(["greeter2-killed", "greeter2-stopped"])
    };
    poll.until(START, both)
        .await
        .expect("go-micro sees both micro-rs nodes");

    killed.start_kill().unwrap();
    killed.wait().await.unwrap();
    let killed_at = Instant::now();
    let one = |v: &serde_json::Value| v["nodes"] == serde_json::json!(["greeter2-stopped"]);
    let gone = poll.until(Duration::from_secs(TTL + 3), one).await;
    let gone = gone
        .expect("go-micro still lists the killed micro-rs node")
        .duration_since(killed_at);
    assert!(
        gone <= Duration::from_secs(TTL + 1),
        "killed node left go-micro's view after {gone:?}"
    );

    sigterm(&stopped);
    let stopped_at = Instant::now();
    let none = |v: &serde_json::Value| v["nodes"] == serde_json::json!([]);
    let gone = poll.until(Duration::from_secs(TTL + 3), none).await;
    let gone = gone
        .expect("go-micro still lists the stopped micro-rs node")
        .duration_since(stopped_at);
    assert!(
        gone < Duration::from_secs(1),
        "stopped node left go-micro's view after {gone:?}"
    );
    stopped.wait().await.unwrap();
}

// === 6. one service, Go and Rust nodes ===

#[tokio::test]
async fn a_mixed_service_is_balanced_across_go_and_rust_nodes_by_both_clients() {
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let go2 = go_greeter(&go, &etcd, "greeter2", "go", &[("INTEROP_TEST_SLEEP", "0")]);
    let _rust = rust_binary(env!("CARGO_BIN_EXE_greeter2"), &etcd, "greeter2-rust", &[]);
    registered(&registry, "greeter2", &go2.node).await;
    registered(&registry, "greeter2", "greeter2-rust").await;

    let client = rust_client(&etcd, micro::client::Strategy::RoundRobin);
    let mut picks = Vec::new();
    for _ in 0..8 {
        let reply: Response = client
            .call("greeter2", "Greeter.Test", Request { name: "t".into() })
            .await
            .expect("no call fails");
        picks.push(reply.msg);
    }
    for pair in picks.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin did not alternate: {picks:?}");
    }
    assert!(
        picks.contains(&"test t from greeter2-go".to_owned()),
        "{picks:?}"
    );
    assert!(
        picks.contains(&"test t from greeter2-rust".to_owned()),
        "{picks:?}"
    );

    // go-micro's client (random selector) reaches both; none fails.
    let results = gocall(&go, &etcd, &["--name", "t", "--count", "30"]).await;
    let replies: Vec<&str> = results
        .iter()
        .map(|r| {
            r.msg
                .as_deref()
                .unwrap_or_else(|| panic!("a call failed: {r:?}"))
        })
        .collect();
    assert!(replies.contains(&"test t from greeter2-go"), "{replies:?}");
    assert!(
        replies.contains(&"test t from greeter2-rust"),
        "{replies:?}"
    );
}

// === 7. one trace across Go and Rust ===

/// Calls `Hello` at `address` with a W3C `traceparent` of `trace_id`; returns the reply.
async fn hello_with_trace(address: &str, name: &str, trace_id: &str) -> String {
    let mut greeter = greeter_at(address).await;
    let mut request = tonic::Request::new(Request { name: name.into() });
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    greeter.hello(request).await.unwrap().into_inner().msg
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn go_micros_w3c_trace_context_reaches_micro_rs_handlers() {
    // The Go side of issue 11's check: go-micro's OpenTelemetry wrappers (INTEROP_OTEL=1, W3C
    // trace context) carry the caller's trace id from Go greeter1 to micro-rs's greeter2.
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let running = rust_greeter2(&etcd, Duration::ZERO).await;
    let go1 = go_greeter(&go, &etcd, "greeter1", "go", &[("INTEROP_OTEL", "1")]);
    registered(&registry, "greeter2", &running.node().id).await;
    registered(&registry, "greeter1", &go1.node).await;

    let reply = hello_with_trace(&go1.address, "echo", TRACE_ID).await;
    let echo: serde_json::Value =
        serde_json::from_str(reply.trim_start_matches("greeter1 <- ")).unwrap();
    let seen = echo["traceparent"].as_str().unwrap_or_default();
    assert!(
        seen.contains(TRACE_ID),
        "trace id lost from Go to Rust: {echo}"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn one_w3c_trace_crosses_rust_and_go() {
    // A call entering micro-rs's greeter1 with a W3C traceparent reaches go-micro's greeter2
    // (whose `echo` shows the metadata it received) in the same trace: greeter1's trace
    // wrappers (on through OTEL_TRACES_EXPORTER) inject their client span's context.
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let go2 = go_greeter(
        &go,
        &etcd,
        "greeter2",
        "go",
        &[("INTEROP_OTEL", "1"), ("INTEROP_TEST_SLEEP", "0")],
    );
    // Spans go to an OTLP endpoint where nothing listens: export fails (counted), calls do not.
    let tracing = [
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
        ("OTEL_TRACES_SAMPLER", "always_on"),
    ];
    let _greeter1 = rust_binary(
        env!("CARGO_BIN_EXE_greeter1"),
        &etcd,
        "greeter1-rust",
        &tracing,
    );
    registered(&registry, "greeter2", &go2.node).await;
    let address = registered(&registry, "greeter1", "greeter1-rust").await;

    let reply = hello_with_trace(&address, "echo", TRACE_ID).await;
    let echo: serde_json::Value =
        serde_json::from_str(reply.trim_start_matches("greeter1 <- ")).unwrap();
    let seen = echo["metadata"]["traceparent"].as_str().unwrap_or_default();
    assert!(
        seen.contains(TRACE_ID),
        "trace id lost from Rust to Go: {echo}"
    );
}
