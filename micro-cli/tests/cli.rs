//! The `micro` binary against a real etcd and real services on 127.0.0.1: greeter1 -> greeter2
//! in this process (micro services on etcd), bare tonic servers (no health, v1alpha-only or no
//! reflection), and bad input of every kind.

use std::{net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};

use micro::registry::Etcd;
use micro_test_support::{EtcdServer, Poll};
use proto::greeter::{
    FILE_DESCRIPTOR_SET, Request, Response,
    greeter_server::{Greeter, GreeterServer},
};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStderr, ChildStdout, Command},
};
use tonic::Status;

/// Generous: the machine is small and shared.
const LIMIT: Duration = Duration::from_secs(60);

/// What one run of `micro` gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {self:?}"))
    }
}

fn micro_command(etcd: Option<&str>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_micro"));
    command
        .args(args)
        .env_remove("MICRO_REGISTRY")
        .env_remove("MICRO_REGISTRY_ADDRESS")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(endpoint) = etcd {
        command
            .env("MICRO_REGISTRY", "etcd")
            .env("MICRO_REGISTRY_ADDRESS", endpoint);
    }
    command
}

/// Runs `micro args` against `etcd`; never a panic, whatever it answers.
async fn micro(etcd: Option<&str>, args: &[&str]) -> Run {
    let output = tokio::time::timeout(LIMIT, micro_command(etcd, args).output())
        .await
        .unwrap_or_else(|_| panic!("micro {args:?} did not finish within {LIMIT:?}"))
        .expect("micro runs");
    let run = Run {
        code: output.status.code().expect("micro exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "micro {args:?} panicked: {run:?}"
    );
    run
}

/// Runs `micro args` against `etcd`, which must exit with `code`.
async fn micro_exits(etcd: Option<&str>, args: &[&str], code: i32) -> Run {
    let run = micro(etcd, args).await;
    assert_eq!(run.code, code, "micro {args:?}: {run:?}");
    run
}

/// A micro service named `name` on `etcd`, hosting `handler`, with reflection when asked.
async fn start<G: Greeter>(
    etcd: &EtcdServer,
    name: &str,
    handler: G,
    reflection: bool,
    args: &[&str],
) -> micro::Running {
    let mut service = micro::Service::new()
        .name(name)
        .registry(Etcd::new([etcd.endpoint()]))
        .register_ttl(Duration::from_secs(10))
        .register_interval(Duration::from_secs(2))
        .grace_period(Duration::from_secs(5));
    if reflection {
        service = service
            .descriptors(FILE_DESCRIPTOR_SET)
            .expect("descriptors");
    }
    let flags = std::iter::once(name).chain(args.iter().copied());
    service
        .try_init_from(flags)
        .expect("flags")
        .handle(GreeterServer::new(handler))
        .start()
        .await
        .expect("service starts")
}

/// greeter2, then greeter1 calling it through discovery, both with reflection.
async fn chain(etcd: &EtcdServer) -> (micro::Running, micro::Running) {
    let greeter2 = start(etcd, "greeter2", examples::Greeter2::default(), true, &[]).await;
    let mut service = micro::Service::new()
        .name("greeter1")
        .registry(Etcd::new([etcd.endpoint()]))
        .register_ttl(Duration::from_secs(10))
        .register_interval(Duration::from_secs(2))
        .descriptors(FILE_DESCRIPTOR_SET)
        .expect("descriptors");
    let client =
        proto::greeter::greeter_client::GreeterClient::new(service.client().channel("greeter2"));
    let greeter1 = service
        .handle(GreeterServer::new(examples::Greeter1 { greeter2: client }))
        .start()
        .await
        .expect("greeter1 starts");
    (greeter1, greeter2)
}

/// Answers `Hello` with the call's `user` metadata and `Test` with the request's name.
#[derive(Clone, Default)]
struct Echo;

#[tonic::async_trait]
impl Greeter for Echo {
    async fn hello(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        let user = request
            .metadata()
            .get("user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        Ok(tonic::Response::new(Response {
            msg: format!("user={user} name={}", request.into_inner().name),
        }))
    }

    async fn test(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        let name = request.into_inner().name;
        if name == "fail" {
            return Err(micro::errors::Error::bad_request("echo", "asked to fail").to_status());
        }
        Ok(tonic::Response::new(Response { msg: name }))
    }
}

/// Which reflection a bare tonic server serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reflection {
    None,
    V1,
    V1Alpha,
}

/// A plain tonic server (no micro, no health) on 127.0.0.1:0 hosting [`Echo`].
async fn bare_server(reflection: Reflection) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
    };
    let mut routes = tonic::service::Routes::new(GreeterServer::new(Echo));
    match reflection {
        Reflection::None => {}
        Reflection::V1 => routes = routes.add_service(builder().build_v1().unwrap()),
        Reflection::V1Alpha => routes = routes.add_service(builder().build_v1alpha().unwrap()),
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let serve = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(incoming)
            .await;
    });
    (address, serve)
}

fn greeter_proto() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto/proto/greeter.proto")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_describe_list_the_chain() {
    let etcd = EtcdServer::start().await.unwrap();
    let endpoint = etcd.endpoint();
    let (greeter1, greeter2) = chain(&etcd).await;

    let run = micro_exits(Some(&endpoint), &["services"], 0).await;
    assert!(
        !run.stdout.contains('\u{1b}'),
        "colour codes on a pipe: {run:?}"
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("SERVICE") && lines[0].contains("NODES"),
        "{run:?}"
    );
    for name in ["greeter1", "greeter2"] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing: {run:?}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words, [name, "latest", "1"], "{run:?}");
    }

    let json = micro_exits(Some(&endpoint), &["services", "--output", "json"], 0).await;
    let listed = json.json();
    let names: Vec<&str> = listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["greeter1", "greeter2"]);
    assert_eq!(json.json()[0]["nodes"], 1);

    // Both spellings, go-micro's `describe service <name>` too.
    for args in [
        &["describe", "greeter1"][..],
        &["describe", "service", "greeter1"][..],
    ] {
        let run = micro_exits(Some(&endpoint), args, 0).await;
        assert!(run.stdout.contains(&*greeter1.node().id), "{run:?}");
        assert!(run.stdout.contains(&*greeter1.node().address), "{run:?}");
        assert!(run.stdout.contains("protocol=grpc"), "{run:?}");
        let hello = run
            .stdout
            .lines()
            .find(|l| l.starts_with("Greeter.Hello"))
            .unwrap_or_else(|| panic!("no Greeter.Hello line: {run:?}"));
        assert!(
            hello.contains("Request {name string}") && hello.contains("Response {msg string}"),
            "{hello}"
        );
    }
    let json = micro_exits(Some(&endpoint), &["describe", "greeter2", "-o", "json"], 0).await;
    let described = json.json();
    assert_eq!(described[0]["name"], "greeter2");
    assert_eq!(described[0]["nodes"][0]["id"], *greeter2.node().id);
    assert_eq!(described[0]["endpoints"][0]["name"], "Greeter.Hello");

    greeter1.stop().await.unwrap();
    greeter2.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_goes_through_the_chain_by_reflection() {
    let etcd = EtcdServer::start().await.unwrap();
    let endpoint = etcd.endpoint();
    let (greeter1, greeter2) = chain(&etcd).await;

    let run = micro_exits(
        Some(&endpoint),
        &["call", "greeter1", "Greeter.Hello", r#"{"name":"cli"}"#],
        0,
    )
    .await;
    let expected = format!("greeter1 <- test cli from {}", greeter2.node().id);
    assert_eq!(run.json()["msg"], expected, "{run:?}");

    let json = micro_exits(
        Some(&endpoint),
        &[
            "call",
            "greeter1",
            "greeter.Greeter.Hello",
            r#"{"name":"json"}"#,
            "--output",
            "json",
            "--timeout",
            "20s",
        ],
        0,
    )
    .await;
    assert_eq!(json.stdout.lines().count(), 1, "one line: {json:?}");
    assert!(json.json()["msg"].as_str().unwrap().contains("test json"));

    // One named node; a node that is not there.
    let node = greeter2.node().id.to_string();
    let run = micro_exits(
        Some(&endpoint),
        &[
            "call",
            "greeter2",
            "Greeter.Test",
            r#"{"name":"n"}"#,
            "--node",
            &node,
        ],
        0,
    )
    .await;
    assert_eq!(run.json()["msg"], format!("test n from {node}"));
    let run = micro_exits(
        Some(&endpoint),
        &[
            "call",
            "greeter2",
            "Greeter.Test",
            "{}",
            "--node",
            "greeter2-nope",
        ],
        3,
    )
    .await;
    assert!(
        run.stderr.contains("greeter2-nope") && run.stderr.contains(&node),
        "{run:?}"
    );

    // Straight to an address, without etcd (the registry flags point nowhere).
    let address = greeter2.node().address.to_string();
    let run = micro_exits(
        None,
        &[
            "call",
            "greeter2",
            "Greeter.Hello",
            r#"{"name":"direct"}"#,
            "--address",
            &address,
        ],
        0,
    )
    .await;
    assert_eq!(run.json()["msg"], "hello direct from greeter2");

    greeter1.stop().await.unwrap();
    greeter2.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_with_proto_against_a_service_without_reflection() {
    let etcd = EtcdServer::start().await.unwrap();
    let endpoint = etcd.endpoint();
    let echo = start(&etcd, "echo", Echo, false, &[]).await;

    // No reflection: a clear message that says what to do.
    let run = micro_exits(Some(&endpoint), &["call", "echo", "Greeter.Hello", "{}"], 1).await;
    assert!(
        run.stderr.contains("no gRPC reflection") && run.stderr.contains("--proto"),
        "{run:?}"
    );

    let proto = greeter_proto();
    let proto = proto.to_str().unwrap();
    let run = micro_exits(
        Some(&endpoint),
        &[
            "call",
            "echo",
            "Greeter.Hello",
            r#"{"name":"p"}"#,
            "--proto",
            proto,
            "-m",
            "user=alice",
        ],
        0,
    )
    .await;
    assert_eq!(run.json()["msg"], "user=alice name=p");

    // With an import path, and the request from stdin.
    let dir = greeter_proto().parent().unwrap().to_path_buf();
    let mut command = micro_command(
        Some(&endpoint),
        &[
            "call",
            "echo",
            "Greeter.Test",
            "-",
            "--proto",
            "greeter.proto",
            "-I",
            dir.to_str().unwrap(),
        ],
    );
    command.stdin(Stdio::piped());
    let mut child = command.spawn().unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(br#"{"name":"from stdin"}"#).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("from stdin"), "{stdout}");

    // A failed call: non-zero and go-micro's error JSON on stderr.
    let run = micro_exits(
        Some(&endpoint),
        &[
            "call",
            "echo",
            "Greeter.Test",
            r#"{"name":"fail"}"#,
            "--proto",
            proto,
        ],
        1,
    )
    .await;
    let error: Value = serde_json::from_str(run.stderr.trim()).expect("go-micro error JSON");
    assert_eq!(error["id"], "echo");
    assert_eq!(error["code"], 400);
    assert_eq!(error["detail"], "asked to fail");

    echo.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_of_every_node() {
    let etcd = EtcdServer::start().await.unwrap();
    let endpoint = etcd.endpoint();
    let first = start(&etcd, "greeter2", examples::Greeter2::default(), true, &[]).await;
    let second = start(&etcd, "greeter2", examples::Greeter2::default(), true, &[]).await;

    let run = micro_exits(Some(&endpoint), &["health", "greeter2"], 0).await;
    for node in [&first, &second] {
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&*node.node().id))
            .unwrap_or_else(|| panic!("no line for {}: {run:?}", node.node().id));
        assert!(
            line.contains("SERVING") && !line.contains("NOT_SERVING"),
            "{line}"
        );
    }
    let json = micro_exits(Some(&endpoint), &["health", "greeter2", "-o", "json"], 0).await;
    let nodes = json.json();
    assert_eq!(nodes.as_array().unwrap().len(), 2);
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "SERVING")
    );

    // A node without the health service says so (and the exit is non-zero).
    let (bare, serve) = bare_server(Reflection::None).await;
    let run = micro_exits(None, &["health", "--address", &bare.to_string()], 1).await;
    assert!(run.stdout.contains("NO_HEALTH_SERVICE"), "{run:?}");
    serve.abort();

    // A node that is gone.
    let address = second.node().address.to_string();
    second.stop().await.unwrap();
    let run = micro_exits(None, &["health", "--address", &address, "-o", "json"], 1).await;
    assert_eq!(run.json()[0]["status"], "UNREACHABLE", "{run:?}");

    first.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_during_graceful_drain_shows_not_serving() {
    let etcd = EtcdServer::start().await.unwrap();
    let node = start(
        &etcd,
        "greeter2",
        examples::Greeter2::default(),
        true,
        &["--server_deregister_delay", "5s"],
    )
    .await;
    let address = node.node().address.to_string();
    micro_exits(None, &["health", "--address", &address], 0).await;
    let stopping = tokio::spawn(node.stop());
    // Poll until the node says NOT_SERVING (deregistered, still accepting) or the limit.
    let mut last = None;
    let seen = Poll::within(Duration::from_secs(20))
        .every(Duration::ZERO)
        .until(async || {
            let run = micro(None, &["health", "--address", &address]).await;
            let seen = run.code == 1 && run.stdout.contains("NOT_SERVING");
            last = Some(run);
            seen
        })
        .await;
    assert!(seen.is_some(), "never NOT_SERVING while draining: {last:?}");
    stopping.await.unwrap().unwrap();
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .expect("an event within the limit")
        .expect("stdout readable")
        .expect("watch still running");
    serde_json::from_str(&line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
}

/// A running `micro watch`: its stdout and stderr as lines.
struct Watch {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
}

/// Starts `micro args` (a watch) on `endpoint` and waits until it says it is watching.
async fn start_watch(endpoint: &str, args: &[&str]) -> Watch {
    let mut child = micro_command(Some(endpoint), args)
        .spawn()
        .expect("micro watch starts");
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(LIMIT, stderr.next_line())
        .await
        .expect("watch ready within the limit")
        .expect("stderr readable")
        .expect("watch still running");
    assert!(line.contains("watching"), "{line}");
    Watch {
        child,
        stdout,
        stderr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_create_and_delete() {
    let etcd = EtcdServer::start().await.unwrap();
    let endpoint = etcd.endpoint();

    let mut watch = start_watch(&endpoint, &["watch", "watched", "--output", "json"]).await;

    // Another service's events are not shown: the first event is the watched one's.
    let other = start(&etcd, "other", Echo, false, &[]).await;
    let node = start(&etcd, "watched", Echo, false, &[]).await;
    let id = node.node().id.to_string();
    let address = node.node().address.to_string();
    let created = next_line(&mut watch.stdout).await;
    assert_eq!(created["action"], "create", "{created}");
    assert_eq!(created["service"], "watched");
    assert_eq!(created["node"], *id);
    assert_eq!(created["address"], *address);
    assert!(
        humantime::parse_rfc3339(created["time"].as_str().unwrap()).is_ok(),
        "{created}"
    );
    node.stop().await.unwrap();
    let deleted = next_line(&mut watch.stdout).await;
    assert_eq!(deleted["action"], "delete", "{deleted}");
    assert_eq!(deleted["node"], *id);
    other.stop().await.unwrap();
    watch.child.kill().await.unwrap();

    // The table form, every service.
    let mut watch = start_watch(&endpoint, &["watch"]).await;
    let node = start(&etcd, "tabled", Echo, false, &[]).await;
    let line = tokio::time::timeout(LIMIT, watch.stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words[1..],
        [
            "create",
            "tabled",
            "latest",
            &*node.node().id,
            &*node.node().address
        ]
    );
    node.stop().await.unwrap();
    watch.child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_message_and_a_non_zero_exit() {
    let etcd = EtcdServer::start().await.unwrap();
    let endpoint = etcd.endpoint();
    let greeter2 = start(&etcd, "greeter2", examples::Greeter2::default(), true, &[]).await;
    let e = Some(endpoint.as_str());

    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["call", "greeter2", "Greeter.Test", r#"{"name": "#],
            2,
            "malformed JSON request",
        ),
        (
            &["call", "greeter2", "Greeter.Test", r#"["x"]"#],
            2,
            "must be a JSON object",
        ),
        (
            &["call", "greeter2", "Greeter.Test", r#"{"name": 5}"#],
            2,
            "expected a string",
        ),
        (
            &["call", "greeter2", "Greeter.Test", r#"{"nom": "x"}"#],
            2,
            "nom",
        ),
        (
            &["call", "greeter2", "Greeter.Hola", "{}"],
            2,
            "no method Hola (methods: Hello, Test)",
        ),
        (
            &["call", "greeter2", "Nope.Test", "{}"],
            2,
            "no service Nope",
        ),
        (
            &["call", "greeter2", "Test", "{}"],
            2,
            "want Service.Method",
        ),
        (
            &["call", "greeter2", "Greeter.Test", "{}", "-m", "novalue"],
            2,
            "want key=value",
        ),
        (
            &["call", "greeter9", "Greeter.Test", "{}"],
            3,
            "service \"greeter9\" not found",
        ),
        (
            &["describe", "greeter9"],
            3,
            "service \"greeter9\" not found",
        ),
        (&["health", "greeter9"], 3, "service \"greeter9\" not found"),
        (&["describe", "node", "x"], 2, "only services"),
        (
            &[
                "call",
                "greeter2",
                "Greeter.Test",
                "{}",
                "--address",
                "nowhere",
            ],
            2,
            "host:port",
        ),
        (&["nonsense"], 2, "unrecognized subcommand"),
        (&["--registry", "consul", "services"], 2, "not supported"),
    ];
    for (args, code, message) in cases {
        let run = micro(e, args).await;
        assert_eq!(run.code, *code, "micro {args:?}: {run:?}");
        assert!(
            run.stderr.contains(message),
            "micro {args:?}: want {message:?}: {run:?}"
        );
        assert!(run.stdout.is_empty(), "micro {args:?}: {run:?}");
    }

    // etcd unreachable: every registry command says so.
    let mut stopped = EtcdServer::start().await.unwrap();
    let dead = stopped.endpoint();
    stopped.stop().await.unwrap();
    for args in [
        &["services"][..],
        &["describe", "greeter2"][..],
        &["call", "greeter2", "Greeter.Test", "{}"][..],
        &["health", "greeter2"][..],
        &["watch"][..],
    ] {
        let run = micro(Some(&dead), args).await;
        assert_eq!(run.code, 4, "micro {args:?}: {run:?}");
        assert!(
            run.stderr.contains("registry unavailable") && run.stderr.contains(&dead),
            "micro {args:?}: {run:?}"
        );
    }
    greeter2.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_for_python_and_the_cli_falls_back_to_it() {
    let etcd = EtcdServer::start().await.unwrap();
    let greeter2 = start(&etcd, "greeter2", examples::Greeter2::default(), true, &[]).await;
    let address = greeter2.node().address.to_string();

    // A third-party client that speaks only v1alpha: grpcio-reflection.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reflection_v1alpha.py");
    let python = |address: String| {
        let script = script.clone();
        async move {
            tokio::time::timeout(
                LIMIT,
                Command::new("python3").arg(&script).arg(address).output(),
            )
            .await
            .expect("python finishes")
            .expect("python3 runs (scripts/test installs grpcio-reflection)")
        }
    };
    let output = python(address.clone()).await;
    assert!(output.status.success(), "{output:?}");
    let found: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(found["methods"], serde_json::json!(["Hello", "Test"]));
    assert_eq!(found["hello_input"], "greeter.Request");
    let services: Vec<&str> = found["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(services.contains(&"greeter.Greeter"), "{services:?}");
    assert!(
        services.contains(&"grpc.reflection.v1alpha.ServerReflection"),
        "{services:?}"
    );

    // The same client against a server with v1 only fails: the check above can fail.
    let (v1_only, serve_v1) = bare_server(Reflection::V1).await;
    let output = python(v1_only.to_string()).await;
    assert!(
        !output.status.success(),
        "v1-only server read over v1alpha: {output:?}"
    );

    // micro reads v1 (above, every reflected call), and v1alpha when v1 is unimplemented.
    let (v1alpha_only, serve_v1alpha) = bare_server(Reflection::V1Alpha).await;
    for address in [v1_only, v1alpha_only] {
        let run = micro(
            None,
            &[
                "call",
                "echo",
                "Greeter.Test",
                r#"{"name":"reflected"}"#,
                "--address",
                &address.to_string(),
            ],
        )
        .await;
        assert_eq!(run.code, 0, "{address}: {run:?}");
        assert_eq!(run.json()["msg"], "reflected");
    }
    serve_v1.abort();
    serve_v1alpha.abort();
    greeter2.stop().await.unwrap();
}

#[tokio::test]
async fn help_has_examples_and_completions_generate() {
    let run = micro_exits(None, &["--help"], 0).await;
    for command in [
        "services",
        "describe",
        "call",
        "health",
        "watch",
        "completions",
    ] {
        assert!(run.stdout.contains(command), "{command}: {run:?}");
        let help = micro_exits(None, &[command, "--help"], 0).await;
        assert!(
            help.stdout.contains("micro "),
            "{command} --help has no example: {help:?}"
        );
    }
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef micro"),
        ("fish", "complete -c micro"),
    ] {
        let run = micro_exits(None, &["completions", shell], 0).await;
        assert!(
            run.stdout.contains(marker),
            "{shell}: {}",
            &run.stdout[..200.min(run.stdout.len())]
        );
    }
}

/// What a go-micro v4 service writes for its node (Go's nil maps and slices as `null`).
const GO_NODE: &str = concat!(
    r#"{"name":"go.greeter","version":"v1.2.0","metadata":null,"#,
    r#""endpoints":[{"name":"Greeter.Hello","#,
    r#""request":{"name":"Request","type":"Request","values":[{"name":"name","type":"string","values":null}]},"#,
    r#""response":{"name":"Response","type":"Response","values":[{"name":"msg","type":"string","values":null}]},"#,
    r#""metadata":{}}],"#,
    r#""nodes":[{"id":"go.greeter-6f1c0a9e","address":"127.0.0.1:1","#,
    r#""metadata":{"broker":"http","protocol":"grpc","registry":"etcd","server":"grpc","transport":"grpc"}}]}"#
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_services_read_a_go_micro_node() {
    let etcd = EtcdServer::start().await.unwrap();
    let endpoint = etcd.endpoint();
    let mut raw = etcd.client().await.unwrap();
    let key = micro::registry::node_key("go.greeter", "go.greeter-6f1c0a9e");
    raw.put(key, GO_NODE, None).await.unwrap();

    let run = micro_exits(Some(&endpoint), &["services"], 0).await;
    let words: Vec<&str> = run
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(words, ["go.greeter", "v1.2.0", "1"], "{run:?}");

    let run = micro_exits(Some(&endpoint), &["describe", "service", "go.greeter"], 0).await;
    assert!(run.stdout.contains("version v1.2.0"), "{run:?}");
    assert!(
        run.stdout.contains("go.greeter-6f1c0a9e  127.0.0.1:1"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("Greeter.Hello  Request {name string}  Response {msg string}"),
        "{run:?}"
    );
    let json = micro(Some(&endpoint), &["describe", "go.greeter", "-o", "json"]).await;
    assert_eq!(
        json.json()[0]["endpoints"][0]["request"]["values"][0]["name"],
        "name"
    );

    // Its node is down: health says so, and the call fails with go-micro's error.
    let run = micro_exits(
        Some(&endpoint),
        &["health", "go.greeter", "--timeout", "2s"],
        1,
    )
    .await;
    assert!(run.stdout.contains("UNREACHABLE"), "{run:?}");
    let proto = greeter_proto();
    let run = micro_exits(
        Some(&endpoint),
        &[
            "call",
            "go.greeter",
            "Greeter.Hello",
            "{}",
            "--proto",
            proto.to_str().unwrap(),
            "--retries",
            "0",
        ],
        1,
    )
    .await;
    let error: Value = serde_json::from_str(run.stderr.trim()).expect("go-micro error JSON");
    assert_eq!(error["code"], 503, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_goes_on_after_an_etcd_restart() {
    let mut etcd = EtcdServer::start().await.unwrap();
    let endpoint = etcd.endpoint();
    let mut watch = start_watch(&endpoint, &["watch", "-o", "json"]).await;

    etcd.start_again().await.unwrap();
    // The watch notices, says so, and watches again.
    let again = tokio::time::timeout(LIMIT, async {
        while let Ok(Some(line)) = watch.stderr.next_line().await {
            if line.contains("watching again") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(again, Ok(true), "watch did not resume");

    let node = start(&etcd, "after", Echo, false, &[]).await;
    let created = next_line(&mut watch.stdout).await;
    assert_eq!(created["action"], "create", "{created}");
    assert_eq!(created["node"], *node.node().id);
    node.stop().await.unwrap();
    watch.child.kill().await.unwrap();
}
