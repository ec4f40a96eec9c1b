//! The embedded registry: everything in this process's memory.
//!
//! It keeps one record per node, as etcd keeps one key per node, so it behaves like the etcd
//! registry: `create` / `update` / `delete` events per node, an unchanged re-registration only
//! renews the TTL (no event), reads group nodes by version, an unknown service is
//! [`Error::NotFound`].
//!
//! # Expiry
//! A node expires `ttl` after its last `register` (`ttl` zero: never). Expired nodes are
//! removed, with a `delete` event, by every call (so reads never return them) and by a sweep
//! task that sleeps until the next expiry. The sweep task is spawned by the first `register`
//! (which runs inside a tokio runtime) and ends when the last clone of the registry is
//! dropped. Times use `tokio::time::Instant`, so tests can pause and advance the clock.

use std::{
    collections::BTreeMap,
    sync::{Arc, Weak},
    time::Duration,
};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::{
    sync::{Notify, broadcast},
    time::Instant,
};

use crate::{
    Action, Error, Event, Node, RegisterOptions, Registry, Service, WatchOptions, Watcher,
    group_by_version, validate, with_one_node,
};

/// Events a watcher may fall behind by before it is told the watch is lost.
const WATCH_BUFFER: usize = 1024;

/// The embedded default registry, shared by every clone (one per process is typical).
#[derive(Clone, Debug)]
pub struct Memory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// service name -> node id -> record.
    services: Mutex<BTreeMap<String, BTreeMap<String, Record>>>,
    events: broadcast::Sender<Event>,
    /// Wakes the sweep task: a new deadline, or the registry was dropped.
    wake: Arc<Notify>,
    sweeper_started: Mutex<bool>,
}

#[derive(Debug)]
struct Record {
    /// The service holding exactly this node.
    service: Service,
    expires: Option<Instant>,
}

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

impl Memory {
    /// An empty registry.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        Memory {
            inner: Arc::new(Inner {
                services: Mutex::new(BTreeMap::new()),
                events,
                wake: Arc::new(Notify::new()),
                sweeper_started: Mutex::new(false),
            }),
        }
    }

    fn start_sweeper(&self) {
        let mut started = self.inner.sweeper_started.lock();
        if *started {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // expiry stays lazy (on every call) without a runtime
        };
        *started = true;
        runtime.spawn(sweep(Arc::downgrade(&self.inner), self.inner.wake.clone()));
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Let the sweep task see that we are gone.
        self.wake.notify_one();
    }
}

impl Inner {
    /// Removes expired records, emitting a `delete` for each, and returns the next deadline.
    fn purge(
        &self,
        services: &mut BTreeMap<String, BTreeMap<String, Record>>,
        now: Instant,
    ) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        services.retain(|_, nodes| {
            nodes.retain(|_, record| match record.expires {
                Some(at) if at <= now => {
                    tracing::debug!(
                        service = %record.service.name,
                        node = ?record.service.nodes.first().map(|n| &n.id),
                        "registration expired"
                    );
                    self.emit(Action::Delete, record.service.clone());
                    false
                }
                Some(at) => {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    true
                }
                None => true,
            });
            !nodes.is_empty()
        });
        next
    }

    fn emit(&self, action: Action, service: Service) {
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(Event { action, service });
    }
}

async fn sweep(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else { return };
            let mut services = inner.services.lock();
            inner.purge(&mut services, Instant::now())
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

#[async_trait]
impl Registry for Memory {
    async fn register(&self, service: &Service, options: RegisterOptions) -> Result<(), Error> {
        validate(service)?;
        let now = Instant::now();
        let expires = (options.ttl > Duration::ZERO).then(|| now + options.ttl);
        {
            let mut services = self.inner.services.lock();
            self.inner.purge(&mut services, now);
            let nodes = services.entry(service.name.clone()).or_default();
            for node in &service.nodes {
                let stored = with_one_node(service, node);
                match nodes.get_mut(&node.id) {
                    Some(record) if record.service == stored => record.expires = expires,
                    Some(record) => {
                        record.service = stored.clone();
                        record.expires = expires;
                        self.inner.emit(Action::Update, stored);
                    }
                    None => {
                        nodes.insert(
                            node.id.clone(),
                            Record {
                                service: stored.clone(),
                                expires,
                            },
                        );
                        self.inner.emit(Action::Create, stored);
                    }
                }
            }
        }
        if expires.is_some() {
            self.start_sweeper();
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<(), Error> {
        let mut services = self.inner.services.lock();
        self.inner.purge(&mut services, Instant::now());
        let Some(nodes) = services.get_mut(&service.name) else {
            return Ok(());
        };
        for Node { id, .. } in &service.nodes {
            if let Some(record) = nodes.remove(id) {
                self.inner.emit(Action::Delete, record.service);
            }
        }
        if nodes.is_empty() {
            services.remove(&service.name);
        }
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>, Error> {
        let mut services = self.inner.services.lock();
        self.inner.purge(&mut services, Instant::now());
        let nodes = services.get(name).ok_or(Error::NotFound)?;
        Ok(group_by_version(
            nodes.values().map(|record| record.service.clone()),
        ))
    }

    async fn list_services(&self) -> Result<Vec<Service>, Error> {
        let mut services = self.inner.services.lock();
        self.inner.purge(&mut services, Instant::now());
        Ok(group_by_version(services.values().flat_map(|nodes| {
            nodes.values().map(|record| record.service.clone())
        })))
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watcher, Error> {
        let receiver = self.inner.events.subscribe();
        let filter = options.service;
        let stream = futures::stream::unfold(Some(receiver), move |state| {
            let filter = filter.clone();
            async move {
                let mut receiver = state?;
                loop {
                    match receiver.recv().await {
                        Ok(event) => {
                            if filter
                                .as_ref()
                                .is_none_or(|name| *name == event.service.name)
                            {
                                return Some((Ok(event), Some(receiver)));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            let error = Error::WatchLost(format!(
                                "watcher fell behind, {missed} events dropped"
                            ));
                            return Some((Err(error), None));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn service(version: &str, id: &str, address: &str) -> Service {
        Service {
            name: "greeter".into(),
            version: version.into(),
            nodes: vec![Node {
                id: id.into(),
                address: address.into(),
                ..Node::default()
            }],
            ..Service::default()
        }
    }

    fn ttl(secs: u64) -> RegisterOptions {
        RegisterOptions {
            ttl: Duration::from_secs(secs),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expires_after_ttl_unless_renewed() {
        let registry = Memory::new();
        let mut watch = registry.watch(WatchOptions::default()).await.unwrap();
        let svc = service("1", "n1", "a:1");
        registry.register(&svc, ttl(2)).await.unwrap();
        assert_eq!(watch.next().await.unwrap().unwrap().action, Action::Create);

        // Renewing before the TTL keeps it, without events.
        tokio::time::advance(Duration::from_millis(1500)).await;
        registry.register(&svc, ttl(2)).await.unwrap();
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(
            registry.get_service("greeter").await.unwrap()[0]
                .nodes
                .len(),
            1
        );

        // Without renewal it expires; the sweep task emits the delete.
        let event = tokio::time::timeout(Duration::from_secs(3), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(event.action, Action::Delete);
        assert_eq!(event.service, svc);
        assert!(matches!(
            registry.get_service("greeter").await,
            Err(Error::NotFound)
        ));
    }

    #[tokio::test]
    async fn groups_versions_and_reports_updates() {
        let registry = Memory::new();
        let mut watch = registry
            .watch(WatchOptions {
                service: Some("greeter".into()),
            })
            .await
            .unwrap();
        registry
            .register(&service("1", "n1", "a:1"), ttl(0))
            .await
            .unwrap();
        registry
            .register(&service("2", "n2", "a:2"), ttl(0))
            .await
            .unwrap();
        registry
            .register(&service("1", "n3", "a:3"), ttl(0))
            .await
            .unwrap();
        let mut other = service("1", "x", "b:1");
        other.name = "other".into();
        registry.register(&other, ttl(0)).await.unwrap();

        let got = registry.get_service("greeter").await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].version, "1");
        assert_eq!(got[0].nodes.len(), 2);
        assert_eq!(got[1].nodes.len(), 1);
        assert_eq!(registry.list_services().await.unwrap().len(), 3);

        // Unchanged: no event. Changed: update.
        registry
            .register(&service("1", "n1", "a:1"), ttl(0))
            .await
            .unwrap();
        registry
            .register(&service("1", "n1", "a:9"), ttl(0))
            .await
            .unwrap();
        registry
            .deregister(&service("1", "n1", "a:9"))
            .await
            .unwrap();
        let actions: Vec<Action> = watch
            .by_ref()
            .take(5)
            .map(|e| e.unwrap().action)
            .collect()
            .await;
        use Action::*;
        assert_eq!(actions, vec![Create, Create, Create, Update, Delete]);
    }

    #[tokio::test]
    async fn lagging_watcher_gets_watch_lost_then_ends() {
        let registry = Memory::new();
        let mut watch = registry.watch(WatchOptions::default()).await.unwrap();
        for i in 0..(WATCH_BUFFER + 10) {
            let svc = service("1", &format!("n{i}"), "a:1");
            registry.register(&svc, ttl(0)).await.unwrap();
        }
        assert!(matches!(watch.next().await, Some(Err(Error::WatchLost(_)))));
        assert!(watch.next().await.is_none());
    }

    #[tokio::test]
    async fn rejects_invalid_registrations() {
        let registry = Memory::new();
        let mut svc = service("1", "n1", "a:1");
        svc.nodes.clear();
        assert!(matches!(
            registry.register(&svc, ttl(0)).await,
            Err(Error::Invalid(_))
        ));
    }
}
