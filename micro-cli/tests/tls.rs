//! The `micro` binary against a TLS deployment: etcd with client-certificate auth, and a
//! service serving mutual TLS; services, describe, call and health work with the TLS flags
//! (as variables here), and a missing client certificate is a clear error.

use std::{process::Stdio, time::Duration};

use micro::{
    registry::Etcd,
    tls::{ClientAuth, ServerTls},
};
use micro_test_support::{EtcdServer, certs::Pki};
use proto::greeter::{FILE_DESCRIPTOR_SET, greeter_server::GreeterServer};

/// What one run of `micro` gave: exit code, stdout, stderr.
async fn micro(env: &[(&str, String)], args: &[&str]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_micro"));
    command
        .args(args)
        .env("RUST_LOG", "error")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("micro finishes")
        .expect("micro runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "micro {args:?}: {stderr}");
    (
        output.status.code().expect("micro exited"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_describes_and_calls_a_tls_deployment() {
    let etcd = EtcdServer::start_tls().await.unwrap();
    let etcd_tls = etcd.tls().unwrap();
    let pki = Pki::new().unwrap();
    let cert = pki.server("greeter2").unwrap();
    let greeter2 = micro::Service::new()
        .name("greeter2")
        .registry(Etcd::new([etcd.endpoint()]).with_tls(etcd_tls.registry()))
        .deregister_delay(Duration::ZERO)
        .server_tls(ServerTls::new(&cert.cert, &cert.key).client_ca(&pki.ca, ClientAuth::Required))
        .descriptors(FILE_DESCRIPTOR_SET)
        .unwrap()
        .handle(GreeterServer::new(examples::Greeter2 {
            test_sleep: Duration::ZERO,
        }))
        .start()
        .await
        .unwrap();

    let path = |p: &std::path::Path| p.display().to_string();
    let cli = pki.client("cli").unwrap();
    let mut env = vec![
        ("MICRO_REGISTRY", "etcd".to_owned()),
        ("MICRO_REGISTRY_ADDRESS", etcd.endpoint()),
        ("MICRO_REGISTRY_TLS_CA", path(&etcd_tls.pki.ca)),
        ("MICRO_REGISTRY_TLS_CERT", path(&etcd_tls.client.cert)),
        ("MICRO_REGISTRY_TLS_KEY", path(&etcd_tls.client.key)),
        ("MICRO_CLIENT_TLS_CA", path(&pki.ca)),
    ];

    let (code, out, err) = micro(&env, &["services", "--output", "json"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("greeter2"), "{out}");
    let (code, out, err) = micro(&env, &["describe", "greeter2", "--output", "json"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(r#""secure": "true""#) || out.contains(r#""secure":"true""#),
        "{out}"
    );

    // No client certificate: the service refuses, and says so.
    let call = ["call", "greeter2", "Greeter.Test", r#"{"name":"cli"}"#];
    let (code, _, err) = micro(&env, &call).await;
    assert_ne!(code, 0);
    assert!(err.contains("requires a client certificate"), "{err}");

    env.push(("MICRO_CLIENT_TLS_CERT", path(&cli.cert)));
    env.push(("MICRO_CLIENT_TLS_KEY", path(&cli.key)));
    let (code, out, err) = micro(&env, &call).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("test cli from greeter2-"), "{out}");
    let (code, out, err) = micro(&env, &["health", "greeter2", "--output", "json"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SERVING"), "{out}");
    // The flags work after the subcommand too.
    let (code, out, err) = micro(
        &env[..2],
        &[
            "services",
            "--registry_tls_ca",
            &path(&etcd_tls.pki.ca),
            "--registry_tls_cert",
            &path(&etcd_tls.client.cert),
            "--registry_tls_key",
            &path(&etcd_tls.client.key),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("greeter2"), "{out}");
    greeter2.stop().await.unwrap();
}
