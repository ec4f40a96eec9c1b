//! The etcd registry against a real etcd (started by the test on free loopback ports).

mod common;

use std::{sync::Arc, time::Duration};

use common::{eventually, next_event, node_ids, service, ttl};
use etcd_client::{Txn, TxnOp};
use micro_registry::{
    Action, Cache, Endpoint, Etcd, Registry, Service, Value, WatchOptions, node_key,
};
use micro_test_support::{EtcdServer, capture_logs, init_tracing};

async fn setup() -> (EtcdServer, Etcd) {
    init_tracing();
    let etcd = EtcdServer::start().await.unwrap();
    let registry = Etcd::new([etcd.endpoint()]).with_timeout(Duration::from_secs(2));
    (etcd, registry)
}

async fn raw_get(etcd: &EtcdServer, key: &str) -> Option<etcd_client::KeyValue> {
    let mut client = etcd.client().await.unwrap();
    client.get(key, None).await.unwrap().kvs().first().cloned()
}

#[tokio::test]
async fn registration_writes_go_micro_key_and_json() {
    let (etcd, registry) = setup().await;
    let mut svc = service("go.micro/greeter", "greeter/6f1c0a9e", "127.0.0.1:50051");
    svc.endpoints = vec![Endpoint {
        name: "Greeter.Hello".into(),
        request: Some(Value {
            name: "Request".into(),
            kind: "Request".into(),
            values: vec![Value {
                name: "name".into(),
                kind: "string".into(),
                values: vec![],
            }],
        }),
        response: None,
        metadata: Default::default(),
    }];
    registry.register(&svc, ttl(5)).await.unwrap();

    let key = "/micro/registry/go.micro-greeter/greeter-6f1c0a9e";
    assert_eq!(node_key(&svc.name, &svc.nodes[0].id), key);
    let kv = raw_get(&etcd, key).await.expect("key written");
    assert_eq!(
        kv.value_str().unwrap(),
        concat!(
            r#"{"name":"go.micro/greeter","version":"latest","metadata":{},"#,
            r#""endpoints":[{"request":{"name":"Request","type":"Request","#,
            r#""values":[{"name":"name","type":"string","values":[]}]},"response":null,"metadata":{},"name":"Greeter.Hello"}],"#,
            r#""nodes":[{"metadata":{"protocol":"grpc"},"id":"greeter/6f1c0a9e","address":"127.0.0.1:50051"}]}"#
        )
    );
    // Its own lease, with the TTL.
    assert_ne!(kv.lease(), 0);
    let mut client = etcd.client().await.unwrap();
    let lease = client.lease_time_to_live(kv.lease(), None).await.unwrap();
    assert!(lease.granted_ttl() == 5, "granted {}", lease.granted_ttl());

    // Two nodes: two keys, two leases, one value each.
    let mut two = service("greeter", "greeter-1", "127.0.0.1:1");
    two.nodes.push(
        service("greeter", "greeter-2", "127.0.0.1:2")
            .nodes
            .remove(0),
    );
    registry.register(&two, ttl(5)).await.unwrap();
    let one = raw_get(&etcd, "/micro/registry/greeter/greeter-1")
        .await
        .unwrap();
    let other = raw_get(&etcd, "/micro/registry/greeter/greeter-2")
        .await
        .unwrap();
    assert_ne!(one.lease(), other.lease());
    let decoded: Service = serde_json::from_slice(other.value()).unwrap();
    assert_eq!(decoded.nodes.len(), 1);
    assert_eq!(decoded.nodes[0].id, "greeter-2");
}

#[tokio::test]
async fn go_written_value_decodes_and_garbage_is_skipped_and_logged() {
    let (etcd, registry) = setup().await;
    let mut client = etcd.client().await.unwrap();
    let go = concat!(
        r#"{"name":"greeter","version":"latest","metadata":null,"#,
        r#""endpoints":[{"name":"Greeter.Hello","request":{"name":"Request","type":"Request","#,
        r#""values":[{"name":"name","type":"string","values":null}]},"response":null,"metadata":{}}],"#,
        r#""nodes":[{"id":"greeter-go","address":"10.0.0.1:50051","metadata":{"protocol":"grpc","server":"grpc"}}]}"#
    );
    client
        .put("/micro/registry/greeter/greeter-go", go, None)
        .await
        .unwrap();
    client
        .put("/micro/registry/greeter/greeter-bad", "not json {", None)
        .await
        .unwrap();
    client
        .put(
            "/micro/registry/greeter/greeter-empty",
            r#"{"name":"greeter","nodes":null}"#,
            None,
        )
        .await
        .unwrap();
    registry
        .register(&service("greeter", "greeter-rs", "127.0.0.1:1"), ttl(5))
        .await
        .unwrap();

    let logs = capture_logs();
    let got = registry.get_service("greeter").await.unwrap();
    assert_eq!(got.len(), 1);
    let ids: Vec<&str> = got[0].nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, vec!["greeter-go", "greeter-rs"]);
    assert_eq!(got[0].nodes[0].address, "10.0.0.1:50051");
    assert_eq!(got[0].endpoints[0].name, "Greeter.Hello");
    assert_eq!(registry.list_services().await.unwrap().len(), 1);
    let logged = logs.contents();
    assert!(logged.contains("WARN"), "{logged}");
    assert!(
        logged.contains("/micro/registry/greeter/greeter-bad"),
        "{logged}"
    );
    assert!(
        logged.contains("/micro/registry/greeter/greeter-empty"),
        "{logged}"
    );

    // A watch skips them too, and goes on.
    let mut watch = registry.watch(WatchOptions::default()).await.unwrap();
    client
        .put("/micro/registry/greeter/greeter-bad2", "garbage", None)
        .await
        .unwrap();
    registry
        .register(&service("greeter", "greeter-rs2", "127.0.0.1:2"), ttl(5))
        .await
        .unwrap();
    let event = next_event(&mut watch, Duration::from_secs(5)).await;
    assert_eq!(event.service.nodes[0].id, "greeter-rs2");
    assert!(logs.contents().contains("greeter-bad2"));
}

#[tokio::test]
async fn register_get_deregister() {
    let (_etcd, registry) = setup().await;
    common::register_get_deregister(&registry).await;
}

#[tokio::test]
async fn watch_create_update_delete_expire() {
    let (_etcd, registry) = setup().await;
    common::watch_create_update_delete_expire(&registry).await;
}

#[tokio::test]
async fn watch_delivers_every_event_of_a_response() {
    let (etcd, registry) = setup().await;
    let mut watch = registry.watch(WatchOptions::default()).await.unwrap();
    let a = service("greeter", "greeter-a", "127.0.0.1:1");
    let b = service("greeter", "greeter-b", "127.0.0.1:2");
    // One transaction: both puts arrive in one watch response.
    let txn = Txn::new().and_then([
        TxnOp::put(
            node_key("greeter", "greeter-a"),
            serde_json::to_string(&a).unwrap(),
            None,
        ),
        TxnOp::put(
            node_key("greeter", "greeter-b"),
            serde_json::to_string(&b).unwrap(),
            None,
        ),
    ]);
    etcd.client().await.unwrap().txn(txn).await.unwrap();
    let first = next_event(&mut watch, Duration::from_secs(5)).await;
    let second = next_event(&mut watch, Duration::from_secs(5)).await;
    assert_eq!((first.action, first.service), (Action::Create, a));
    assert_eq!((second.action, second.service), (Action::Create, b));
}

#[tokio::test]
async fn killed_service_expires_after_ttl_and_deregister_is_immediate() {
    let (etcd, registry) = setup().await;
    let killed = service("greeter", "greeter-killed", "127.0.0.1:1");
    registry.register(&killed, ttl(2)).await.unwrap();
    drop(registry); // like kill -9: no deregister, no more renewals
    let key = node_key("greeter", "greeter-killed");
    assert!(raw_get(&etcd, &key).await.is_some());
    eventually(Duration::from_secs(5), "key gone after the TTL", || async {
        raw_get(&etcd, &key).await.is_none()
    })
    .await;

    let registry = Etcd::new([etcd.endpoint()]);
    let stopped = service("greeter", "greeter-stopped", "127.0.0.1:2");
    registry.register(&stopped, ttl(30)).await.unwrap();
    registry.deregister(&stopped).await.unwrap();
    assert!(
        raw_get(&etcd, &node_key("greeter", "greeter-stopped"))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn renewal_keeps_key_without_rewriting_it() {
    let (etcd, registry) = setup().await;
    // Registers with a 2 s TTL, then again every second for 5 s.
    common::renewal_keeps_node_without_events(&registry).await;
    let key = node_key("greeter", "greeter-renewed");
    let after = raw_get(&etcd, &key).await.expect("still registered");
    assert_eq!(after.mod_revision(), after.create_revision(), "no re-put");
    assert_eq!(after.version(), 1, "written once");

    // A changed node is written again, on the same lease.
    let mut changed = service("greeter", "greeter-renewed", "127.0.0.1:9");
    changed.nodes[0]
        .metadata
        .insert("changed".into(), "yes".into());
    registry.register(&changed, ttl(2)).await.unwrap();
    let rewritten = raw_get(&etcd, &key).await.unwrap();
    assert!(rewritten.mod_revision() > after.mod_revision());
    assert_eq!(rewritten.lease(), after.lease());
}

/// Calls `register` as the server's interval loop does (the first call after a restart may
/// meet a broken connection) until the key is back.
async fn register_until_present(registry: &Etcd, svc: &Service, etcd: &EtcdServer) {
    let key = node_key(&svc.name, &svc.nodes[0].id);
    eventually(Duration::from_secs(10), "registration restored", || async {
        if let Err(e) = registry.register(svc, ttl(2)).await {
            tracing::info!(error = %e, "register failed, retrying as the interval loop would");
        }
        raw_get(etcd, &key).await.is_some()
    })
    .await;
}

#[tokio::test]
async fn registration_survives_etcd_restart_and_wipe() {
    let (mut etcd, registry) = setup().await;
    let svc = service("greeter", "greeter-survivor", "127.0.0.1:1");
    let key = node_key("greeter", "greeter-survivor");
    registry.register(&svc, ttl(2)).await.unwrap();
    let written = raw_get(&etcd, &key).await.unwrap();

    // Same data dir, down longer than the TTL.
    etcd.stop().await.unwrap();
    assert!(registry.register(&svc, ttl(2)).await.is_err());
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.start_again().await.unwrap();
    register_until_present(&registry, &svc, &etcd).await;
    // etcd restores leases on restart: the old lease is renewed, the key not rewritten.
    let kept = raw_get(&etcd, &key).await.unwrap();
    assert_eq!(
        (kept.lease(), kept.mod_revision()),
        (written.lease(), written.mod_revision())
    );
    // And it stays: renewals keep working on whatever lease it now has.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        registry.register(&svc, ttl(2)).await.unwrap();
    }
    assert!(raw_get(&etcd, &key).await.is_some());

    // Wiped data dir: key and lease are gone.
    etcd.wipe_and_start().await.unwrap();
    assert!(raw_get(&etcd, &key).await.is_none());
    register_until_present(&registry, &svc, &etcd).await;
    let kv = raw_get(&etcd, &key).await.unwrap();
    assert_ne!(kv.lease(), 0, "registered with a new lease");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        registry.register(&svc, ttl(2)).await.unwrap();
    }
    assert!(raw_get(&etcd, &key).await.is_some());
}

#[tokio::test]
async fn registration_without_ttl_is_restored_after_wipe() {
    let (mut etcd, registry) = setup().await;
    let svc = service("greeter", "greeter-forever", "127.0.0.1:1");
    let key = node_key("greeter", "greeter-forever");
    registry.register(&svc, ttl(0)).await.unwrap();
    let kv = raw_get(&etcd, &key).await.unwrap();
    assert_eq!(kv.lease(), 0, "TTL 0: no lease");
    registry.register(&svc, ttl(0)).await.unwrap();
    assert_eq!(
        raw_get(&etcd, &key).await.unwrap().mod_revision(),
        kv.mod_revision()
    );
    etcd.wipe_and_start().await.unwrap();
    eventually(Duration::from_secs(10), "registration restored", || async {
        let _ = registry.register(&svc, ttl(0)).await;
        raw_get(&etcd, &key).await.is_some()
    })
    .await;
}

#[tokio::test]
async fn cache_follows_watch_and_serves_stale_while_etcd_is_down() {
    let (mut etcd, registry) = setup().await;
    let registry: Arc<dyn Registry> = Arc::new(registry);
    let cache: Cache = common::cache_follows_watch(registry.clone()).await;

    assert_eq!(cache.watch_restarts(), 0, "the first watch is no restart");
    let mut restarts = cache.subscribe_watch_restarts();

    // etcd down: the known service is still served, from memory.
    etcd.stop().await.unwrap();
    for _ in 0..5 {
        let got = cache.get_service("greeter").await.unwrap();
        assert_eq!(got[0].nodes[0].id, "greeter-b");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // etcd back: the cache watches again and re-lists. A node registered after recovery
    // becomes visible.
    etcd.start_again().await.unwrap();
    let late = service("greeter", "greeter-late", "127.0.0.1:1003");
    let fresh = Etcd::new([etcd.endpoint()]);
    fresh.register(&late, ttl(30)).await.unwrap();
    eventually(
        Duration::from_secs(15),
        "cache sees the node registered after recovery",
        || async {
            cache.peek("greeter").is_some_and(|s| {
                s.iter()
                    .flat_map(|s| &s.nodes)
                    .any(|n| n.id == "greeter-late")
            })
        },
    )
    .await;
    assert!(
        node_ids(registry.as_ref(), "greeter")
            .await
            .unwrap()
            .contains(&"greeter-late".to_owned())
    );
    // Seen only through a new watch (or its re-list): the restart was counted and told.
    assert!(cache.watch_restarts() >= 1);
    assert!(*restarts.borrow_and_update() >= 1);
}
