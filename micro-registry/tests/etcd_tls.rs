//! The etcd registry over TLS with client-certificate auth, against a real etcd started by the
//! test with `--cert-file --key-file --client-cert-auth --trusted-ca-file` (certificates made
//! by the test).

mod common;

use std::time::Duration;

use micro_registry::{Error, Etcd, EtcdTls, Registry};
use micro_test_support::{EtcdServer, init_tracing};

async fn setup() -> (EtcdServer, Etcd) {
    init_tracing();
    let etcd = EtcdServer::start_tls().await.unwrap();
    let tls = etcd.tls().unwrap().registry();
    let registry = Etcd::new([etcd.endpoint()])
        .with_timeout(Duration::from_secs(2))
        .with_tls(tls);
    (etcd, registry)
}

#[tokio::test]
async fn registration_and_discovery_over_mutual_tls() {
    let (_etcd, registry) = setup().await;
    common::register_get_deregister(&registry).await;
}

#[tokio::test]
async fn watch_over_mutual_tls() {
    let (_etcd, registry) = setup().await;
    common::watch_create_update_delete_expire(&registry).await;
}

#[tokio::test]
async fn refusals_are_clear_errors() {
    let (etcd, _) = setup().await;
    let tls = etcd.tls().unwrap();
    let unavailable = |result: Result<Vec<micro_registry::Service>, Error>| match result {
        Err(Error::Unavailable(message)) => message,
        other => panic!("want Unavailable, got {other:?}"),
    };
    // No client certificate: etcd requires one.
    let registry = Etcd::new([etcd.endpoint()])
        .with_timeout(Duration::from_secs(2))
        .with_tls(EtcdTls::new(&tls.pki.ca));
    let message = unavailable(registry.list_services().await);
    eprintln!("no client certificate: {message}");
    assert!(message.contains("--client-cert-auth"), "{message}");
    // Plaintext against TLS etcd.
    let registry = Etcd::new([etcd.endpoint()]).with_timeout(Duration::from_secs(2));
    let message = unavailable(registry.list_services().await);
    eprintln!("plaintext: {message}");
    // A missing CA file is named.
    let registry = Etcd::new([etcd.endpoint()]).with_tls(EtcdTls::new("/nonexistent/ca.pem"));
    let message = unavailable(registry.list_services().await);
    assert!(message.contains("/nonexistent/ca.pem"), "{message}");
}
