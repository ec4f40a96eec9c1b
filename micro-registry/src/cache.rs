//! The client's view of the registry: a map of services kept fresh by one watch.
//!
//! - A lookup of a known service is a map read plus an `Arc` clone: no registry round trip.
//! - The first lookup of a name asks the registry and keeps the answer. A `NotFound` is
//!   remembered for 1 s only (and forgotten at once when a node of that service
//!   appears), so a service that starts later is found quickly.
//! - One background task per cache (started by the first lookup, ended when the last clone of
//!   the cache is dropped) watches every service and applies each event: create/update replace
//!   that node within its version, delete removes it, a version without nodes disappears.
//! - When the watch is lost the task waits (backoff from 100 ms, doubling up to 5 s), watches
//!   again and then re-lists every known service, publishing the differences as events; each
//!   restart is counted ([`Cache::watch_restarts`]).
//! - Entries never expire: while the registry is unreachable they are served stale, which is
//!   what a client wants (go-micro does the same); while the watch is live they are fresh.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use tokio::{
    sync::{broadcast, oneshot, watch},
    time::Instant,
};

use crate::{Action, Error, Event, Registry, Service, WatchOptions};

/// How long a `NotFound` answer is remembered.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// First wait after losing the watch.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest wait between two watch attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// How long a first lookup waits for the watch to be in place before asking the registry.
const WATCH_READY_WAIT: Duration = Duration::from_secs(1);
/// Events a subscriber may fall behind by.
const SUBSCRIBER_BUFFER: usize = 1024;

/// Registry cache for clients. Cheap to clone; clones share the entries and the watch task.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("registry", &self.inner.registry.name())
            .field("services", &self.inner.entries.read().len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    registry: Arc<dyn Registry>,
    /// foldhash: this map is read on every call; SipHash was a visible part of its cost.
    entries: RwLock<HashMap<String, Slot, foldhash::fast::RandomState>>,
    events: broadcast::Sender<Event>,
    /// Started watch task: dropping the sender (with `Inner`) stops it.
    task: Mutex<Option<oneshot::Sender<()>>>,
    /// `true` while the watch is in place.
    watching: watch::Sender<bool>,
    /// Watches put in place again after a lost or failed one.
    restarts: watch::Sender<u64>,
}

/// A [`Cache`] that may be gone: see [`Cache::downgrade`].
#[derive(Clone)]
pub struct WeakCache(Weak<Inner>);

impl WeakCache {
    /// The cache, if a clone of it is still alive.
    pub fn upgrade(&self) -> Option<Cache> {
        self.0.upgrade().map(|inner| Cache { inner })
    }
}

impl std::fmt::Debug for WeakCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakCache")
            .field("alive", &(self.0.strong_count() > 0))
            .finish()
    }
}

enum Slot {
    Found(Arc<[Service]>),
    Missing(Instant),
    /// A first lookup is asking the registry; watch events seen meanwhile, to replay.
    Fetching(Vec<Event>),
}

impl Cache {
    /// A cache over `registry`. Does no I/O until the first lookup.
    pub fn new(registry: Arc<dyn Registry>) -> Cache {
        let (events, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        Cache {
            inner: Arc::new(Inner {
                registry,
                entries: RwLock::new(HashMap::default()),
                events,
                task: Mutex::new(None),
                watching: watch::Sender::new(false),
                restarts: watch::Sender::new(0),
            }),
        }
    }

    /// The registry this cache reads.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.inner.registry
    }

    /// Every version of `name` with its nodes. Served from memory once known; the first lookup
    /// asks the registry. Unknown service: [`Error::NotFound`]; registry unreachable on a
    /// first lookup: [`Error::Unavailable`].
    pub async fn get_service(&self, name: &str) -> Result<Arc<[Service]>, Error> {
        match self.inner.entries.read().get(name) {
            Some(Slot::Found(services)) => return Ok(services.clone()),
            Some(Slot::Missing(until)) if Instant::now() < *until => return Err(Error::NotFound),
            _ => {}
        }
        self.start();
        self.fetch(name).await
    }

    /// The cached services of `name`, without any I/O.
    pub fn peek(&self, name: &str) -> Option<Arc<[Service]>> {
        match self.inner.entries.read().get(name) {
            Some(Slot::Found(services)) => Some(services.clone()),
            _ => None,
        }
    }

    /// Node changes the cache applies from now on (from the watch, and from re-listing after a
    /// lost watch), each with the one node concerned.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.start();
        self.inner.events.subscribe()
    }

    /// Each known service with its number of nodes (all versions), without any I/O.
    pub fn node_counts(&self) -> Vec<(String, usize)> {
        self.inner
            .entries
            .read()
            .iter()
            .filter_map(|(name, slot)| match slot {
                Slot::Found(services) => {
                    Some((name.clone(), services.iter().map(|s| s.nodes.len()).sum()))
                }
                _ => None,
            })
            .collect()
    }

    /// A handle that does not keep the cache (nor its watch) alive.
    pub fn downgrade(&self) -> WeakCache {
        WeakCache(Arc::downgrade(&self.inner))
    }

    /// How many times the watch was put in place again after it was lost or could not be
    /// started (each is followed by a re-list of the known services).
    pub fn watch_restarts(&self) -> u64 {
        *self.inner.restarts.borrow()
    }

    /// Follows [`Cache::watch_restarts`]: the receiver sees the count change on each restart.
    pub fn subscribe_watch_restarts(&self) -> watch::Receiver<u64> {
        self.inner.restarts.subscribe()
    }

    /// Starts the watch task once (needs a tokio runtime; without one, the next call retries).
    fn start(&self) {
        let mut task = self.inner.task.lock();
        if task.is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        *task = Some(stop_tx);
        let registry = self.inner.registry.clone();
        runtime.spawn(run(Arc::downgrade(&self.inner), registry, stop_rx));
    }

    async fn fetch(&self, name: &str) -> Result<Arc<[Service]>, Error> {
        // Let the watch get in place first, so nothing between our read and the watch is lost.
        let mut watching = self.inner.watching.subscribe();
        let _ = tokio::time::timeout(WATCH_READY_WAIT, watching.wait_for(|up| *up)).await;

        {
            let mut entries = self.inner.entries.write();
            match entries.get(name) {
                Some(Slot::Found(services)) => return Ok(services.clone()),
                Some(Slot::Fetching(_)) => {}
                _ => {
                    entries.insert(name.to_owned(), Slot::Fetching(Vec::new()));
                }
            }
        }
        let result = self.inner.registry.get_service(name).await;
        let mut entries = self.inner.entries.write();
        let pending = match entries.remove(name) {
            Some(Slot::Found(services)) => {
                // Another lookup finished first; keep its entry.
                entries.insert(name.to_owned(), Slot::Found(services.clone()));
                return Ok(services);
            }
            Some(Slot::Fetching(pending)) => pending,
            _ => Vec::new(),
        };
        match result {
            Ok(mut services) => {
                for event in &pending {
                    apply(&mut services, event);
                }
                if services.is_empty() {
                    entries.insert(
                        name.to_owned(),
                        Slot::Missing(Instant::now() + NEGATIVE_TTL),
                    );
                    return Err(Error::NotFound);
                }
                let services: Arc<[Service]> = services.into();
                entries.insert(name.to_owned(), Slot::Found(services.clone()));
                Ok(services)
            }
            Err(Error::NotFound) => {
                entries.insert(
                    name.to_owned(),
                    Slot::Missing(Instant::now() + NEGATIVE_TTL),
                );
                Err(Error::NotFound)
            }
            Err(e) => Err(e),
        }
    }
}

// === the watch task ===

async fn run(inner: Weak<Inner>, registry: Arc<dyn Registry>, mut stop: oneshot::Receiver<()>) {
    let mut backoff = BACKOFF_START;
    let mut first = true;
    loop {
        let watcher = tokio::select! {
            watcher = registry.watch(WatchOptions::default()) => watcher,
            _ = &mut stop => return,
        };
        match watcher {
            Ok(mut watcher) => {
                if let Some(inner) = inner.upgrade() {
                    inner.watching.send_replace(true);
                    if !first {
                        inner.restarts.send_modify(|n| *n += 1);
                    }
                }
                if !first {
                    // Changes while we were not watching: read every known service again.
                    tokio::select! {
                        _ = relist(&inner, registry.as_ref()) => {}
                        _ = &mut stop => return,
                    }
                }
                first = false;
                tracing::debug!(registry = registry.name(), "registry cache watching");
                let mut healthy = false;
                let lost = loop {
                    let item = tokio::select! {
                        item = watcher.next() => item,
                        _ = &mut stop => return,
                    };
                    match item {
                        Some(Ok(event)) => {
                            healthy = true;
                            let Some(inner) = inner.upgrade() else { return };
                            inner.apply(event);
                        }
                        Some(Err(e)) => break e.to_string(),
                        None => break "watch ended".to_owned(),
                    }
                };
                if let Some(inner) = inner.upgrade() {
                    inner.watching.send_replace(false);
                }
                if healthy {
                    backoff = BACKOFF_START;
                }
                tracing::warn!(
                    registry = registry.name(),
                    reason = %lost,
                    retry_in = ?backoff,
                    "registry watch lost; serving cached entries"
                );
            }
            Err(e) => {
                first = false;
                tracing::warn!(
                    registry = registry.name(),
                    error = %e,
                    retry_in = ?backoff,
                    "registry watch failed; serving cached entries"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut stop => return,
        }
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
}

/// Reads every known service again, replaces its entry and publishes the differences.
async fn relist(inner: &Weak<Inner>, registry: &dyn Registry) {
    let names: Vec<String> = match inner.upgrade() {
        Some(inner) => inner
            .entries
            .read()
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Found(_)))
            .map(|(name, _)| name.clone())
            .collect(),
        None => return,
    };
    for name in names {
        let fresh = match registry.get_service(&name).await {
            Ok(services) => services,
            Err(Error::NotFound) => Vec::new(),
            Err(e) => {
                tracing::warn!(service = %name, error = %e, "re-list failed; keeping cached entry");
                continue;
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        inner.replace(&name, fresh);
    }
}

impl Inner {
    /// Applies one watch event and publishes it.
    fn apply(&self, event: Event) {
        {
            let mut entries = self.entries.write();
            match entries.get_mut(&event.service.name) {
                Some(Slot::Found(services)) => {
                    let mut updated = services.to_vec();
                    apply(&mut updated, &event);
                    if updated.is_empty() {
                        entries.remove(&event.service.name);
                    } else {
                        *services = updated.into();
                    }
                }
                Some(Slot::Fetching(pending)) => pending.push(event.clone()),
                // It exists now: forget the negative answer.
                Some(Slot::Missing(_)) if event.action != Action::Delete => {
                    entries.remove(&event.service.name);
                }
                Some(Slot::Missing(_)) | None => {}
            }
        }
        let _ = self.events.send(event);
    }

    /// Replaces the entry of `name` with a fresh read, publishing what changed.
    fn replace(&self, name: &str, fresh: Vec<Service>) {
        let mut entries = self.entries.write();
        let old: Vec<Service> = match entries.get(name) {
            Some(Slot::Found(services)) => services.to_vec(),
            _ => return, // became unknown or is being fetched: leave it alone
        };
        for event in diff(&old, &fresh) {
            let _ = self.events.send(event);
        }
        if fresh.is_empty() {
            entries.remove(name);
        } else {
            entries.insert(name.to_owned(), Slot::Found(fresh.into()));
        }
    }
}

/// Applies one event to the versions of one service.
fn apply(services: &mut Vec<Service>, event: &Event) {
    for node in &event.service.nodes {
        // A node lives in one version only: take it out everywhere first.
        for service in services.iter_mut() {
            service.nodes.retain(|n| n.id != node.id);
        }
        if event.action == Action::Delete {
            continue;
        }
        match services
            .iter_mut()
            .find(|s| s.version == event.service.version)
        {
            Some(service) => {
                service.endpoints = event.service.endpoints.clone();
                service.metadata = event.service.metadata.clone();
                service.nodes.push(node.clone());
            }
            None => services.push(Service {
                nodes: vec![node.clone()],
                ..event.service.clone()
            }),
        }
    }
    services.retain(|s| !s.nodes.is_empty());
}

/// Events that turn `old` into `new`, one per node.
fn diff(old: &[Service], new: &[Service]) -> Vec<Event> {
    let one = |service: &Service, node: &crate::Node| crate::with_one_node(service, node);
    let find = |services: &[Service], id: &str| {
        services
            .iter()
            .find_map(|s| s.nodes.iter().find(|n| n.id == id).map(|n| one(s, n)))
    };
    let mut events = Vec::new();
    for service in old {
        for node in &service.nodes {
            if find(new, &node.id).is_none() {
                events.push(Event {
                    action: Action::Delete,
                    service: one(service, node),
                });
            }
        }
    }
    for service in new {
        for node in &service.nodes {
            let now = one(service, node);
            match find(old, &node.id) {
                None => events.push(Event {
                    action: Action::Create,
                    service: now,
                }),
                Some(before) if before != now => events.push(Event {
                    action: Action::Update,
                    service: now,
                }),
                Some(_) => {}
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Memory, Node, RegisterOptions};

    fn svc(version: &str, id: &str, address: &str) -> Service {
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

    fn ids(services: &[Service]) -> Vec<(String, Vec<String>)> {
        services
            .iter()
            .map(|s| {
                (
                    s.version.clone(),
                    s.nodes.iter().map(|n| n.id.clone()).collect(),
                )
            })
            .collect()
    }

    fn event(action: Action, service: Service) -> Event {
        Event { action, service }
    }

    #[test]
    fn applies_create_update_delete() {
        let mut services = Vec::new();
        apply(&mut services, &event(Action::Create, svc("1", "a", "x:1")));
        apply(&mut services, &event(Action::Create, svc("1", "b", "x:2")));
        apply(&mut services, &event(Action::Create, svc("2", "c", "x:3")));
        assert_eq!(
            ids(&services),
            vec![
                ("1".into(), vec!["a".into(), "b".into()]),
                ("2".into(), vec!["c".into()])
            ]
        );
        apply(&mut services, &event(Action::Update, svc("1", "a", "x:9")));
        assert_eq!(
            services[0]
                .nodes
                .iter()
                .find(|n| n.id == "a")
                .unwrap()
                .address,
            "x:9"
        );
        assert_eq!(services[0].nodes.len(), 2);
        // A node moving to another version leaves the old one.
        apply(&mut services, &event(Action::Update, svc("2", "b", "x:2")));
        assert_eq!(ids(&services)[1].1, vec!["c".to_owned(), "b".to_owned()]);
        apply(&mut services, &event(Action::Delete, svc("1", "a", "x:9")));
        assert_eq!(
            ids(&services),
            vec![("2".into(), vec!["c".into(), "b".into()])]
        );
        apply(&mut services, &event(Action::Delete, svc("2", "c", "")));
        apply(&mut services, &event(Action::Delete, svc("2", "b", "")));
        assert!(services.is_empty());
    }

    #[test]
    fn diff_reports_each_node() {
        let old = vec![svc("1", "a", "x:1"), svc("1", "b", "x:2")];
        let mut new = vec![svc("1", "b", "x:22")];
        new[0].nodes.extend(svc("1", "c", "x:3").nodes);
        let events: Vec<(Action, String)> = diff(&old, &new)
            .into_iter()
            .map(|e| (e.action, e.service.nodes[0].id.clone()))
            .collect();
        assert_eq!(
            events,
            vec![
                (Action::Delete, "a".into()),
                (Action::Update, "b".into()),
                (Action::Create, "c".into())
            ]
        );
    }

    #[tokio::test]
    async fn follows_the_watch_and_remembers_not_found_briefly() {
        let memory = Memory::new();
        let cache = Cache::new(Arc::new(memory.clone()));
        let mut events = cache.subscribe();
        assert!(matches!(
            cache.get_service("greeter").await,
            Err(Error::NotFound)
        ));
        memory
            .register(&svc("1", "a", "x:1"), RegisterOptions::default())
            .await
            .unwrap();
        assert_eq!(events.recv().await.unwrap().action, Action::Create);
        // The create removed the negative entry: found at once.
        let got = cache.get_service("greeter").await.unwrap();
        assert_eq!(ids(&got), vec![("1".into(), vec!["a".into()])]);

        memory
            .register(&svc("1", "b", "x:2"), RegisterOptions::default())
            .await
            .unwrap();
        assert_eq!(events.recv().await.unwrap().action, Action::Create);
        assert_eq!(cache.peek("greeter").unwrap()[0].nodes.len(), 2);

        memory.deregister(&svc("1", "a", "x:1")).await.unwrap();
        memory.deregister(&svc("1", "b", "x:2")).await.unwrap();
        assert_eq!(events.recv().await.unwrap().action, Action::Delete);
        assert_eq!(events.recv().await.unwrap().action, Action::Delete);
        assert!(cache.peek("greeter").is_none());
    }

    #[tokio::test]
    async fn task_ends_when_cache_is_dropped() {
        let registry: Arc<dyn Registry> = Arc::new(Memory::new());
        let cache = Cache::new(registry.clone());
        let _ = cache.get_service("x").await;
        assert!(Arc::strong_count(&registry) > 2, "task holds the registry");
        let weak = Arc::downgrade(&cache.inner);
        drop(cache);
        assert!(weak.upgrade().is_none());
        // Once the task stops, only our clone remains.
        tokio::time::timeout(Duration::from_secs(1), async {
            while Arc::strong_count(&registry) > 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    }
}
