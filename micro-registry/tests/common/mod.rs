//! Behaviour every registry must show, run against each implementation.
#![allow(dead_code, unreachable_pub)]

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use micro_registry::{
    Action, Cache, Error, Node, RegisterOptions, Registry, Service, WatchOptions,
};
use micro_test_support::Poll;
pub use micro_test_support::next_event;

pub fn service(name: &str, id: &str, address: &str) -> Service {
    Service {
        name: name.into(),
        version: "latest".into(),
        nodes: vec![Node {
            id: id.into(),
            address: address.into(),
            metadata: [("protocol".to_owned(), "grpc".to_owned())].into(),
        }],
        ..Service::default()
    }
}

pub fn ttl(secs: u64) -> RegisterOptions {
    RegisterOptions {
        ttl: Duration::from_secs(secs),
    }
}

/// Polls `check` every 50 ms until it holds, for at most `limit`; fails naming `what`.
pub async fn eventually(limit: Duration, what: &str, check: impl AsyncFnMut() -> bool) {
    Poll::within(limit)
        .every(Duration::from_millis(50))
        .expect(what, check)
        .await;
}

pub async fn node_ids(registry: &dyn Registry, name: &str) -> Option<Vec<String>> {
    match registry.get_service(name).await {
        Ok(services) => Some(
            services
                .iter()
                .flat_map(|s| s.nodes.iter().map(|n| n.id.clone()))
                .collect(),
        ),
        Err(Error::NotFound) => None,
        Err(e) => panic!("get_service({name}): {e}"),
    }
}

/// Register, read back (grouped by version), list, deregister: gone at once.
pub async fn register_get_deregister(registry: &dyn Registry) {
    let a = service("greeter", "greeter-a", "127.0.0.1:1001");
    let mut b = service("greeter", "greeter-b", "127.0.0.1:1002");
    b.version = "2".into();
    registry.register(&a, ttl(10)).await.unwrap();
    registry.register(&b, ttl(10)).await.unwrap();
    registry
        .register(&service("other", "other-1", "127.0.0.1:1003"), ttl(10))
        .await
        .unwrap();

    let got = registry.get_service("greeter").await.unwrap();
    assert_eq!(got.len(), 2, "one Service per version: {got:?}");
    assert_eq!(got[0].nodes, a.nodes);
    assert_eq!(got[1].nodes, b.nodes);
    assert!(matches!(
        registry.get_service("greeter2").await,
        Err(Error::NotFound)
    ));
    let listed = registry.list_services().await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");

    registry.deregister(&a).await.unwrap();
    assert_eq!(
        node_ids(registry, "greeter").await,
        Some(vec!["greeter-b".to_owned()]),
        "deregister removes at once"
    );
    registry.deregister(&b).await.unwrap();
    assert_eq!(node_ids(registry, "greeter").await, None);
}

/// Watch sees create, update, delete, and the expiry of an unrenewed TTL as a delete carrying
/// the registration as it was.
pub async fn watch_create_update_delete_expire(registry: &dyn Registry) {
    let mut all = registry.watch(WatchOptions::default()).await.unwrap();
    let mut only = registry
        .watch(WatchOptions {
            service: Some("greeter".into()),
        })
        .await
        .unwrap();
    let wait = Duration::from_secs(5);

    let a = service("greeter", "greeter-a", "127.0.0.1:1001");
    registry.register(&a, ttl(10)).await.unwrap();
    let event = next_event(&mut all, wait).await;
    assert_eq!((event.action, &event.service), (Action::Create, &a));

    let mut moved = a.clone();
    moved.nodes[0].address = "127.0.0.1:2001".into();
    registry.register(&moved, ttl(10)).await.unwrap();
    let event = next_event(&mut all, wait).await;
    assert_eq!((event.action, &event.service), (Action::Update, &moved));

    registry
        .register(&service("other", "other-1", "127.0.0.1:1"), ttl(10))
        .await
        .unwrap();
    assert_eq!(next_event(&mut all, wait).await.action, Action::Create);

    registry.deregister(&moved).await.unwrap();
    let event = next_event(&mut all, wait).await;
    assert_eq!((event.action, &event.service), (Action::Delete, &moved));

    // Expiry: registered with a 2 s TTL and never renewed.
    let b = service("greeter", "greeter-b", "127.0.0.1:1002");
    registry.register(&b, ttl(2)).await.unwrap();
    assert_eq!(next_event(&mut all, wait).await.action, Action::Create);
    let event = next_event(&mut all, Duration::from_secs(8)).await;
    assert_eq!(
        (event.action, &event.service),
        (Action::Delete, &b),
        "expiry is a delete decoded from the previous value"
    );

    // The filtered watcher saw only greeter's events.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let event = next_event(&mut only, wait).await;
        assert_eq!(event.service.name, "greeter");
        seen.push(event.action);
    }
    use Action::*;
    assert_eq!(seen, vec![Create, Update, Delete, Create, Delete]);
}

/// A registration not renewed is gone after its TTL (what a kill -9 of a service leaves).
pub async fn expires_without_renewal(registry: &dyn Registry) {
    let svc = service("greeter", "greeter-killed", "127.0.0.1:1001");
    registry.register(&svc, ttl(2)).await.unwrap();
    assert!(node_ids(registry, "greeter").await.is_some());
    eventually(Duration::from_secs(5), "key gone after TTL", || async {
        node_ids(registry, "greeter").await.is_none()
    })
    .await;
}

/// Re-registering every second with a 2 s TTL keeps the node, without rewriting it.
pub async fn renewal_keeps_node_without_events(registry: &dyn Registry) {
    let svc = service("greeter", "greeter-renewed", "127.0.0.1:1001");
    let mut watch = registry.watch(WatchOptions::default()).await.unwrap();
    registry.register(&svc, ttl(2)).await.unwrap();
    assert_eq!(
        next_event(&mut watch, Duration::from_secs(5)).await.action,
        Action::Create
    );
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        registry.register(&svc, ttl(2)).await.unwrap();
    }
    assert_eq!(
        node_ids(registry, "greeter").await,
        Some(vec!["greeter-renewed".to_owned()])
    );
    let extra = tokio::time::timeout(Duration::from_millis(200), watch.next()).await;
    assert!(
        extra.is_err(),
        "no event for an unchanged renewal: {extra:?}"
    );
}

/// The cache follows the watch: a node that arrives shows up, a node that leaves is gone.
pub async fn cache_follows_watch(registry: Arc<dyn Registry>) -> Cache {
    let cache = Cache::new(registry.clone());
    let a = service("greeter", "greeter-a", "127.0.0.1:1001");
    let b = service("greeter", "greeter-b", "127.0.0.1:1002");
    registry.register(&a, ttl(30)).await.unwrap();
    let got = cache.get_service("greeter").await.unwrap();
    assert_eq!(got[0].nodes, a.nodes);
    assert!(matches!(
        cache.get_service("nobody").await,
        Err(Error::NotFound)
    ));

    let mut events = cache.subscribe();
    registry.register(&b, ttl(30)).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "cache sees the new node",
        || async { cache.peek("greeter").is_some_and(|s| s[0].nodes.len() == 2) },
    )
    .await;
    registry.deregister(&a).await.unwrap();
    eventually(Duration::from_secs(5), "cache drops the node", || async {
        cache
            .peek("greeter")
            .is_some_and(|s| s[0].nodes.len() == 1 && s[0].nodes[0].id == "greeter-b")
    })
    .await;
    let first = events.recv().await.unwrap();
    assert_eq!((first.action, &first.service), (Action::Create, &b));
    let second = events.recv().await.unwrap();
    assert_eq!((second.action, &second.service), (Action::Delete, &a));
    cache
}
