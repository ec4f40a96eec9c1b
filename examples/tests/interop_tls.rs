//! micro-rs and real go-micro (v5.30, `interop/`) over mutual TLS, both ways: a micro-rs
//! client calls the go-micro greeter serving TLS with `AuthTLS`, whose go-micro client
//! (`AuthTLS` too) calls a micro-rs greeter2 requiring client certificates. go-micro writes no
//! TLS marker in the registry, so the micro-rs client dials with `MICRO_CLIENT_TLS=always`.
//!
//! Needs the Go binaries, as `interop.rs`: `(cd interop && go build -o ../target/interop/
//! ./cmd/...) && MICRO_INTEROP_BIN=$PWD/target/interop cargo test -p examples --test
//! interop_tls`.

use std::time::Duration;

use micro::{
    registry::Etcd,
    tls::{ClientAuth, ClientTls, ServerTls, TlsMode},
};
use micro_test_support::{
    EtcdServer, MicroProcess, certs::Pki, eventually, free_port, node_address, require::go_binaries,
};
use proto::greeter::{Request, Response, greeter_server::GreeterServer};
use tonic::Code;

#[tokio::test]
async fn micro_rs_and_go_micro_call_each_other_over_mutual_tls() {
    let go = go_binaries();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]);
    let pki = Pki::new().unwrap();
    let path = |p: &std::path::Path| p.display().to_string();

    // micro-rs greeter2: mTLS, client certificates required.
    let rs_cert = pki.server("greeter2").unwrap();
    let greeter2 = micro::Service::new()
        .name("greeter2")
        .registry(registry.clone())
        .deregister_delay(Duration::ZERO)
        .server_tls(
            ServerTls::new(&rs_cert.cert, &rs_cert.key).client_ca(&pki.ca, ClientAuth::Required),
        )
        .handle(GreeterServer::new(examples::Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await
        .unwrap();

    // go-micro greeter1: AuthTLS on its server (requiring client certificates) and client.
    let go_cert = pki.server("greeter1").unwrap();
    let address = format!("127.0.0.1:{}", free_port().unwrap());
    let _go1 = MicroProcess::on(go.join("greeter"), &etcd)
        .quiet()
        .env("MICRO_SERVER_NAME", "greeter1")
        .id("go")
        .address(&address)
        .env("MICRO_BROKER_ADDRESS", "127.0.0.1:0")
        .env("INTEROP_CALL", "greeter2")
        .env("INTEROP_TLS_CERT", path(&go_cert.cert))
        .env("INTEROP_TLS_KEY", path(&go_cert.key))
        .env("INTEROP_TLS_CA", path(&pki.ca))
        .env("INTEROP_TLS_SERVER_NAME", "greeter2")
        .spawn();
    let up = eventually(Duration::from_secs(30), async || {
        node_address(&registry, "greeter1", "greeter1-go")
            .await
            .is_some()
    })
    .await;
    assert!(up.is_some(), "the go-micro greeter1 did not register");

    // micro-rs -> go-micro (TLS) -> micro-rs (mTLS).
    let me = pki.client("rs-caller").unwrap();
    let tls = ClientTls::new(&pki.ca)
        .identity(&me.cert, &me.key)
        .server_name("greeter1")
        .mode(TlsMode::Always);
    let client = micro::Service::new()
        .registry(registry.clone())
        .client_tls(tls)
        .client();
    let reply: Response = client
        .call("greeter1", "Greeter.Hello", Request { name: "rs".into() })
        .await
        .unwrap();
    assert_eq!(
        reply.msg,
        format!("greeter1 <- test rs from {}", greeter2.node().id)
    );

    // go-micro's server refuses a micro-rs client without a certificate, and it says so.
    let bare = micro::Service::new()
        .registry(registry.clone())
        .client_tls(
            ClientTls::new(&pki.ca)
                .server_name("greeter1")
                .mode(TlsMode::Always),
        )
        .client();
    let status = bare
        .call::<_, Response>("greeter1", "Greeter.Hello", Request { name: "rs".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("TLS with node greeter1-go")
            && status.message().contains("client certificate"),
        "{status:?}"
    );
    greeter2.stop().await.unwrap();
}
