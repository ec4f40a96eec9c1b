//! TLS and mutual TLS end to end, with certificates the tests make (rcgen, in a temporary
//! directory): the greeter chain over mTLS, a Python grpcio client over TLS, each refusal
//! a clear error (and neither retried nor counted for ejection), and rotation under load.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use micro::{
    registry::{Cache, Memory},
    tls::{ClientAuth, ClientTls, ServerTls, TlsMode},
};
use micro_test_support::{
    certs::{Pair, Pki},
    python_greeter_stubs,
};
use proto::greeter::{
    Request, Response, greeter_client::GreeterClient, greeter_server::GreeterServer,
};
use tonic::Code;

/// greeter2 (answering at once) serving TLS with `tls` on `registry`.
async fn greeter2_tls(registry: &Memory, tls: ServerTls) -> micro::Running {
    micro::Service::new()
        .name("greeter2")
        .registry(registry.clone())
        .deregister_delay(Duration::ZERO)
        .server_tls(tls)
        .handle(GreeterServer::new(examples::Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await
        .expect("greeter2 starts")
}

/// mTLS, client certificate required, with `pair` signed by `pki`.
fn mtls(pki: &Pki, pair: &Pair) -> ServerTls {
    ServerTls::new(&pair.cert, &pair.key).client_ca(&pki.ca, ClientAuth::Required)
}

/// A client trusting `pki`, presenting `pair`.
fn client_tls(pki: &Pki, pair: &Pair) -> ClientTls {
    ClientTls::new(&pki.ca).identity(&pair.cert, &pair.key)
}

/// What a client saw besides answers: retries and ejections.
#[derive(Clone, Default)]
struct Observed {
    retries: Arc<AtomicUsize>,
    ejections: Arc<AtomicUsize>,
}

/// A client on `registry` with `tls`, counting retries and ejections.
fn observed_client(registry: &Memory, tls: ClientTls) -> (micro::Client, Observed) {
    let observed = Observed::default();
    let (retries, ejections) = (observed.retries.clone(), observed.ejections.clone());
    let client = micro::client::Client::builder()
        .tls(tls)
        .on_retry(move |_, _| {
            retries.fetch_add(1, Ordering::Relaxed);
        })
        .on_ejection(move |_, _| {
            ejections.fetch_add(1, Ordering::Relaxed);
        })
        .build(Cache::new(Arc::new(registry.clone())));
    (client, observed)
}

async fn test_call(client: &micro::Client) -> Result<String, tonic::Status> {
    let reply: Response = client
        .call("greeter2", "Greeter.Test", Request { name: "you".into() })
        .await?;
    Ok(reply.msg)
}

#[tokio::test]
async fn greeter_chain_over_mutual_tls_configured_by_flags() {
    let pki = Pki::new().unwrap();
    let registry = Memory::new();
    let greeter2 = greeter2_tls(&registry, mtls(&pki, &pki.server("greeter2").unwrap())).await;
    let registered = micro::registry::Registry::get_service(&registry, "greeter2")
        .await
        .unwrap();
    assert_eq!(registered[0].nodes[0].metadata["secure"], "true");

    // greeter1: TLS server and TLS client, from the flags; greeter2's name checked per service.
    let cert = pki.server("greeter1").unwrap();
    let own = pki.client("greeter1").unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    let mut greeter1 = micro::Service::new()
        .name("greeter1")
        .registry(registry.clone())
        .deregister_delay(Duration::ZERO)
        .try_init_from([
            "greeter1".to_owned(),
            format!("--server_tls_cert={}", path(&cert.cert)),
            format!("--server_tls_key={}", path(&cert.key)),
            format!("--server_tls_client_ca={}", path(&pki.ca)),
            format!("--client_tls_ca={}", path(&pki.ca)),
            format!("--client_tls_cert={}", path(&own.cert)),
            format!("--client_tls_key={}", path(&own.key)),
        ])
        .unwrap()
        .client_tls_for("greeter2", client_tls(&pki, &own).server_name("greeter2"));
    let handler = examples::Greeter1 {
        greeter2: GreeterClient::new(greeter1.client().channel("greeter2")),
    };
    let greeter1 = greeter1
        .handle(GreeterServer::new(handler))
        .start()
        .await
        .unwrap();

    let caller = pki.client("caller").unwrap();
    let (client, observed) =
        observed_client(&registry, client_tls(&pki, &caller).server_name("greeter1"));
    let reply: Response = client
        .call("greeter1", "Greeter.Hello", Request { name: "you".into() })
        .await
        .unwrap();
    assert!(
        reply.msg.starts_with("greeter1 <- test you from greeter2-"),
        "{}",
        reply.msg
    );
    assert_eq!(observed.retries.load(Ordering::Relaxed), 0);
    greeter1.stop().await.unwrap();
    greeter2.stop().await.unwrap();
}

/// One refused call: go-micro's 503 naming the node and `reason`, after one attempt, and no
/// ejection.
async fn assert_refused(client: &micro::Client, observed: &Observed, reason: &str) {
    let status = test_call(client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let error: serde_json::Value = serde_json::from_str(status.message())
        .unwrap_or_else(|e| panic!("not go-micro's JSON ({e}): {status:?}"));
    assert_eq!(error["code"], 503, "{error}");
    assert_eq!(error["id"], "go.micro.client", "{error}");
    let detail = error["detail"].as_str().unwrap();
    eprintln!("refused: {detail}");
    assert!(detail.contains("TLS with node greeter2-"), "{detail}");
    assert!(detail.contains(reason), "want {reason:?}: {detail}");
    assert_eq!(observed.retries.load(Ordering::Relaxed), 0, "{detail}");
    assert_eq!(observed.ejections.load(Ordering::Relaxed), 0, "{detail}");
}

#[tokio::test]
async fn each_refusal_is_a_clear_error_not_retried_and_not_ejected() {
    let pki = Pki::new().unwrap();
    let other = Pki::named("another CA").unwrap();
    let good = pki.server("greeter2").unwrap();
    let me = pki.client("caller").unwrap();

    // Two nodes each time: a refusal must not move on to the second.
    let start_two = |tls: ServerTls| async move {
        let registry = Memory::new();
        let a = greeter2_tls(&registry, tls.clone()).await;
        let b = greeter2_tls(&registry, tls).await;
        (registry, [a, b])
    };

    // No client certificate against a server requiring one.
    let (registry, nodes) = start_two(mtls(&pki, &good)).await;
    let (client, observed) = observed_client(&registry, ClientTls::new(&pki.ca));
    assert_refused(&client, &observed, "requires a client certificate").await;
    // With one, the same nodes answer.
    let (client, _) = observed_client(&registry, client_tls(&pki, &me));
    assert!(test_call(&client).await.unwrap().starts_with("test you"));
    // A client certificate of another CA.
    let stranger = other.client("stranger").unwrap();
    let (client, observed) = observed_client(&registry, client_tls(&other, &stranger));
    assert_refused(&client, &observed, "unknown CA").await;
    let (client, observed) = observed_client(&registry, client_tls(&pki, &stranger));
    assert_refused(&client, &observed, "refused this client's certificate").await;
    // Unverified (the loudly named option): the unknown CA passes.
    let unverified = ClientTls {
        ca: Some(other.ca.clone()),
        dangerous_skip_verification: true,
        ..client_tls(&pki, &me)
    };
    let (client, _) = observed_client(&registry, unverified);
    assert!(test_call(&client).await.unwrap().starts_with("test you"));
    // A name the certificate does not carry.
    let (client, observed) =
        observed_client(&registry, client_tls(&pki, &me).server_name("greeter3"));
    assert_refused(&client, &observed, "does not name it").await;
    // A plaintext client against TLS nodes: a clear error too (no TLS words to give).
    let (client, observed) = observed_client(&registry, client_tls(&pki, &me).mode(TlsMode::Never));
    let status = test_call(&client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    eprintln!("plaintext client: {}", status.message());
    assert!(status.message().contains("greeter2"), "{status:?}");
    drop(observed);
    for node in nodes {
        node.stop().await.unwrap();
    }

    // An expired server certificate.
    let expired = pki.expired_server("greeter2").unwrap();
    let (registry, nodes) = start_two(mtls(&pki, &expired)).await;
    let (client, observed) = observed_client(&registry, client_tls(&pki, &me));
    assert_refused(&client, &observed, "expired").await;
    for node in nodes {
        node.stop().await.unwrap();
    }

    // A TLS client against plaintext nodes.
    let registry = Memory::new();
    let plain = micro_test_support::greeter2(&registry).await;
    let (client, observed) =
        observed_client(&registry, client_tls(&pki, &me).mode(TlsMode::Always));
    assert_refused(&client, &observed, "TLS").await;
    let detail = test_call(&client).await.unwrap_err();
    assert!(
        detail.message().contains("does not answer in TLS")
            || detail.message().contains("during the TLS handshake"),
        "{detail:?}"
    );
    plain.stop().await.unwrap();
}

#[tokio::test]
async fn bad_tls_files_are_start_up_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let err = micro::Service::new()
        .try_init_from([
            "svc".to_owned(),
            format!("--server_tls_cert={}", missing.display()),
            format!("--server_tls_key={}", missing.display()),
        ])
        .err()
        .expect("a missing certificate is an error");
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let err = micro::Service::new()
        .try_init_from([
            "svc".to_owned(),
            format!("--client_tls_ca={}", missing.display()),
        ])
        .err()
        .expect("a missing CA is an error");
    assert!(err.to_string().contains("CA bundle"), "{err}");
    // Through the builder: `start` fails, naming the file.
    let err = micro::Service::new()
        .server_tls(ServerTls::new(&missing, &missing))
        .start()
        .await
        .err()
        .expect("a missing certificate is an error");
    assert!(err.to_string().contains("nope.pem"), "{err}");
}

#[tokio::test]
async fn python_grpcio_calls_over_mutual_tls() {
    let pki = Pki::new().unwrap();
    let registry = Memory::new();
    let server = pki.server("greeter2").unwrap();
    let greeter2 = greeter2_tls(&registry, mtls(&pki, &server)).await;
    let caller = pki.client("python").unwrap();
    let dir = python_greeter_stubs().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/greeter_tls_call.py"
    );
    let run = |with_cert: bool| {
        let mut command = tokio::process::Command::new("python3");
        command
            .arg(script)
            .arg(greeter2.local_addr().to_string())
            .arg(&pki.ca)
            .arg("greeter2");
        if with_cert {
            command.arg(&caller.cert).arg(&caller.key);
        }
        command.env("PYTHONPATH", dir.path()).output()
    };
    let output = run(true).await.unwrap();
    assert!(
        output.status.success(),
        "greeter_tls_call.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(line["code"], "OK", "{line}");
    assert!(
        line["msg"]
            .as_str()
            .unwrap()
            .starts_with("test py from greeter2-"),
        "{line}"
    );
    // Without a certificate the server refuses it.
    let output = run(false).await.unwrap();
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(line["code"], "UNAVAILABLE", "{line}");
    greeter2.stop().await.unwrap();
}

/// The certificate a server at `address` serves to a new connection, trusting `ca`.
async fn served_certificate(address: std::net::SocketAddr, ca: &std::path::Path) -> Vec<u8> {
    let config = ClientTls {
        reload_interval: None,
        ..ClientTls::new(ca)
    }
    .load()
    .unwrap()
    .current();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = micro::tls::rustls::pki_types::ServerName::try_from("greeter2").unwrap();
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_rotates_under_load_without_losing_a_call() {
    const IN_FLIGHT: usize = 16;
    const LOAD: Duration = Duration::from_secs(10);
    let pki = Pki::new().unwrap();
    let registry = Memory::new();
    let before = pki
        .issue("greeter2", &["greeter2", "127.0.0.1"], false)
        .unwrap();
    // The default detection time: 5 s.
    let tls = mtls(&pki, &before);
    assert_eq!(tls.reload_interval, Some(Duration::from_secs(5)));
    let greeter2 = greeter2_tls(&registry, tls).await;
    let address = greeter2.local_addr();
    let me = pki.client("load").unwrap();
    let (client, _) = observed_client(&registry, client_tls(&pki, &me));
    assert_eq!(served_certificate(address, &pki.ca).await, before.der);

    let started = tokio::time::Instant::now();
    let load: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0usize, Vec::new());
                while started.elapsed() < LOAD {
                    match test_call(&client).await {
                        Ok(_) => ok += 1,
                        Err(status) => failed.push(status),
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(2)).await;
    // Same file names: the key lands first, then the certificate (each by rename).
    let after = pki
        .issue("greeter2", &["greeter2", "127.0.0.1"], false)
        .unwrap();
    assert_ne!(after.der, before.der);
    let replaced = tokio::time::Instant::now();
    // A new connection (a new client) gets the new certificate within the detection time.
    let seen = loop {
        if served_certificate(address, &pki.ca).await == after.der {
            break replaced.elapsed();
        }
        assert!(
            replaced.elapsed() < Duration::from_secs(6),
            "the new certificate was not served within 6 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("new certificate served {seen:?} after it was written");
    // And a new micro client calls through it.
    let (fresh, _) = observed_client(&registry, client_tls(&pki, &me));
    assert!(test_call(&fresh).await.unwrap().starts_with("test you"));

    let (mut ok, mut failed) = (0, Vec::new());
    for task in load {
        let (n, f) = task.await.unwrap();
        ok += n;
        failed.extend(f);
    }
    eprintln!("{ok} calls during the rotation, {} failed", failed.len());
    assert!(failed.is_empty(), "lost calls: {failed:?}");
    assert!(ok > IN_FLIGHT * 10, "only {ok} calls");
    greeter2.stop().await.unwrap();
}

#[tokio::test]
async fn client_reloads_its_ca_bundle() {
    let old = Pki::new().unwrap();
    let new = Pki::named("the new CA").unwrap();
    let registry = Memory::new();
    let server = new.server("greeter2").unwrap();
    let greeter2 = greeter2_tls(&registry, ServerTls::new(&server.cert, &server.key)).await;
    // The client's bundle still holds the old CA: refused.
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::copy(&old.ca, &bundle).unwrap();
    let tls = ClientTls {
        reload_interval: Some(Duration::from_millis(200)),
        ..ClientTls::new(&bundle)
    };
    let (client, observed) = observed_client(&registry, tls);
    assert_refused(&client, &observed, "unknown CA").await;
    // The bundle is replaced: new connections trust the new CA, no restart.
    std::fs::copy(&new.ca, dir.path().join("ca.tmp")).unwrap();
    std::fs::rename(dir.path().join("ca.tmp"), &bundle).unwrap();
    let took = micro_test_support::eventually(Duration::from_secs(5), async || {
        test_call(&client).await.is_ok()
    })
    .await;
    assert!(took.is_some(), "the new CA was not trusted within 5 s");
    greeter2.stop().await.unwrap();
}

#[tokio::test]
async fn services_register_and_discover_on_etcd_over_mutual_tls() {
    let etcd = micro_test_support::EtcdServer::start_tls().await.unwrap();
    let files = etcd.tls().unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    let etcd_flags = |name: &str| {
        vec![
            name.to_owned(),
            "--registry=etcd".to_owned(),
            format!("--registry_address={}", etcd.endpoint()),
            format!("--registry_tls_ca={}", path(&files.pki.ca)),
            format!("--registry_tls_cert={}", path(&files.client.cert)),
            format!("--registry_tls_key={}", path(&files.client.key)),
        ]
    };
    let pki = Pki::new().unwrap();
    let cert = pki.server("greeter2").unwrap();
    let mut flags = etcd_flags("greeter2");
    flags.push(format!("--server_tls_cert={}", path(&cert.cert)));
    flags.push(format!("--server_tls_key={}", path(&cert.key)));
    let greeter2 = micro::Service::new()
        .name("greeter2")
        .deregister_delay(Duration::ZERO)
        .try_init_from(flags)
        .unwrap()
        .handle(GreeterServer::new(examples::Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await
        .unwrap();
    let mut flags = etcd_flags("caller");
    flags.push(format!("--client_tls_ca={}", path(&pki.ca)));
    let client = micro::Service::new().try_init_from(flags).unwrap().client();
    let reply = test_call(&client).await.unwrap();
    assert!(reply.starts_with("test you from greeter2-"), "{reply}");
    greeter2.stop().await.unwrap();
}

#[tokio::test]
async fn optional_client_auth_admits_clients_without_a_certificate_only() {
    let pki = Pki::new().unwrap();
    let registry = Memory::new();
    let server = pki.server("greeter2").unwrap();
    let tls = ServerTls::new(&server.cert, &server.key).client_ca(&pki.ca, ClientAuth::Optional);
    let greeter2 = greeter2_tls(&registry, tls).await;
    let (client, _) = observed_client(&registry, ClientTls::new(&pki.ca));
    assert!(test_call(&client).await.unwrap().starts_with("test you"));
    let me = pki.client("me").unwrap();
    let (client, _) = observed_client(&registry, client_tls(&pki, &me));
    assert!(test_call(&client).await.unwrap().starts_with("test you"));
    // A certificate it is shown must still verify.
    let other = Pki::named("another CA").unwrap();
    let stranger = other.client("stranger").unwrap();
    let (client, observed) = observed_client(
        &registry,
        ClientTls::new(&pki.ca).identity(&stranger.cert, &stranger.key),
    );
    assert_refused(&client, &observed, "refused this client's certificate").await;
    greeter2.stop().await.unwrap();
}

#[tokio::test]
async fn a_dead_tls_node_is_still_a_connect_failure_retried_and_ejected() {
    use micro::registry::{Node, RegisterOptions, Registry, Service};
    let pki = Pki::new().unwrap();
    let registry = Memory::new();
    let live = greeter2_tls(&registry, mtls(&pki, &pki.server("greeter2").unwrap())).await;
    // A TLS node nobody listens on: its connection is refused before any TLS.
    let dead = Service {
        name: "greeter2".into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: "greeter2-dead".into(),
            address: format!("127.0.0.1:{}", micro_test_support::free_port().unwrap()),
            metadata: [("secure".to_owned(), "true".to_owned())].into(),
        }],
        ..Service::default()
    };
    registry
        .register(
            &dead,
            RegisterOptions {
                ttl: Duration::ZERO,
            },
        )
        .await
        .unwrap();
    let me = pki.client("me").unwrap();
    let (client, observed) = observed_client(&registry, client_tls(&pki, &me));
    // Random picks: within 50 calls the dead node is picked first at least once (all but
    // 2^-50 of the time), and every call still succeeds on the live one.
    for _ in 0..50 {
        let reply = test_call(&client).await.unwrap();
        assert!(reply.contains(&*live.node().id), "{reply}");
        if observed.retries.load(Ordering::Relaxed) > 0 {
            break;
        }
    }
    assert!(
        observed.retries.load(Ordering::Relaxed) > 0,
        "the dead node was never tried"
    );
    assert!(
        observed.ejections.load(Ordering::Relaxed) > 0,
        "the dead node was not ejected"
    );
    live.stop().await.unwrap();
}

#[tokio::test]
async fn the_compose_scripts_certificates_carry_the_mtls_chain() {
    // deploy/mtls/make-certs.sh (run by docker-compose.mtls.yml at start-up), with openssl.
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/mtls/make-certs.sh");
    let made = tokio::process::Command::new("sh")
        .arg(script)
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        made.status.success(),
        "make-certs.sh (needs openssl): {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let file = |name: &str| dir.path().join(name);
    let registry = Memory::new();
    let greeter2 = greeter2_tls(
        &registry,
        ServerTls::new(file("greeter2.pem"), file("greeter2.key"))
            .client_ca(file("ca.pem"), ClientAuth::Required),
    )
    .await;
    // greeter1 as the compose file configures it: its certificate both ways, greeter2's name.
    let mut greeter1 = micro::Service::new()
        .name("greeter1")
        .registry(registry.clone())
        .deregister_delay(Duration::ZERO)
        .server_tls(
            ServerTls::new(file("greeter1.pem"), file("greeter1.key"))
                .client_ca(file("ca.pem"), ClientAuth::Required),
        )
        .client_tls(
            ClientTls::new(file("ca.pem"))
                .identity(file("greeter1.pem"), file("greeter1.key"))
                .server_name("greeter2"),
        );
    let handler = examples::Greeter1 {
        greeter2: GreeterClient::new(greeter1.client().channel("greeter2")),
    };
    let greeter1 = greeter1
        .handle(GreeterServer::new(handler))
        .start()
        .await
        .unwrap();
    let (client, _) = observed_client(
        &registry,
        ClientTls::new(file("ca.pem"))
            .identity(file("caller.pem"), file("caller.key"))
            .server_name("greeter1"),
    );
    let reply: Response = client
        .call(
            "greeter1",
            "Greeter.Hello",
            Request {
                name: "compose".into(),
            },
        )
        .await
        .unwrap();
    assert!(
        reply
            .msg
            .starts_with("greeter1 <- test compose from greeter2-"),
        "{}",
        reply.msg
    );
    greeter1.stop().await.unwrap();
    greeter2.stop().await.unwrap();
}

#[tokio::test]
async fn a_silent_connection_holds_up_no_other_handshake() {
    let pki = Pki::new().unwrap();
    let registry = Memory::new();
    let greeter2 = greeter2_tls(&registry, mtls(&pki, &pki.server("greeter2").unwrap())).await;
    // Connections that never say a word (each handshake waits up to 10 s on its own task).
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(
            tokio::net::TcpStream::connect(greeter2.local_addr())
                .await
                .unwrap(),
        );
    }
    let me = pki.client("me").unwrap();
    let (client, _) = observed_client(&registry, client_tls(&pki, &me));
    let call = tokio::time::timeout(Duration::from_secs(5), test_call(&client)).await;
    assert!(call.expect("answered while others stay silent").is_ok());
    drop(silent);
    greeter2.stop().await.unwrap();
}

/// Answers `Test` with the client's certificate (hex of its DER) and address, as the server
/// saw them.
struct WhoAsks;

#[tonic::async_trait]
impl proto::greeter::greeter_server::Greeter for WhoAsks {
    async fn hello(
        &self,
        _request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, tonic::Status> {
        Err(tonic::Status::unimplemented("hello"))
    }

    async fn test(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, tonic::Status> {
        let cert = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| hex(c.as_ref())))
            .unwrap_or_default();
        let from = request.remote_addr().map(|a| a.ip().to_string());
        Ok(tonic::Response::new(Response {
            msg: format!("{cert} {}", from.unwrap_or_default()),
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn handlers_see_the_clients_verified_certificate() {
    let pki = Pki::new().unwrap();
    let registry = Memory::new();
    let server = pki.server("greeter2").unwrap();
    let greeter2 = micro::Service::new()
        .name("greeter2")
        .registry(registry.clone())
        .deregister_delay(Duration::ZERO)
        .server_tls(mtls(&pki, &server))
        .handle(GreeterServer::new(WhoAsks))
        .start()
        .await
        .unwrap();
    let caller = pki.client("caller").unwrap();
    let (client, _) = observed_client(&registry, client_tls(&pki, &caller));
    let reply = test_call(&client).await.unwrap();
    assert_eq!(reply, format!("{} 127.0.0.1", hex(&caller.der)));
    greeter2.stop().await.unwrap();
}
