//! Whether this node is ready for traffic: registered, serving, and its registration not
//! older than the TTL (a registry unreachable for longer than the TTL has dropped it).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::time::Instant;

type OnRegister = Arc<dyn Fn(bool) + Send + Sync>;

/// The registration state of a server, shared with whoever reports readiness (the metrics
/// endpoint's `/ready`). Cheap to clone.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The last successful registration or renewal, and the TTL it was granted.
    last_ok: Mutex<Option<(Instant, Duration)>>,
    serving: AtomicBool,
    on_register: Mutex<Option<OnRegister>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Readiness {
    /// Ready: serving, and registered within the TTL.
    pub fn is_ready(&self) -> bool {
        self.inner.serving.load(Ordering::Acquire)
            && self
                .inner
                .last_ok
                .lock()
                .is_some_and(|(at, ttl)| at.elapsed() <= ttl)
    }

    /// Calls `f` after every registration attempt (`true`: it succeeded).
    pub fn on_register(&self, f: impl Fn(bool) + Send + Sync + 'static) {
        *self.inner.on_register.lock() = Some(Arc::new(f));
    }

    pub(crate) fn registered(&self, ok: bool, ttl: Duration) {
        if ok {
            *self.inner.last_ok.lock() = Some((Instant::now(), ttl));
        }
        let hook = self.inner.on_register.lock().clone();
        if let Some(hook) = hook {
            hook(ok);
        }
    }

    pub(crate) fn set_serving(&self, serving: bool) {
        self.inner.serving.store(serving, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ready_while_registered_within_the_ttl() {
        let readiness = Readiness::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        readiness.on_register(move |ok| log.lock().push(ok));
        assert!(!readiness.is_ready());
        readiness.set_serving(true);
        assert!(!readiness.is_ready(), "not registered yet");
        readiness.registered(true, Duration::from_secs(5));
        assert!(readiness.is_ready());
        // Renewals fail (registry down): still ready until the TTL has passed.
        tokio::time::advance(Duration::from_secs(4)).await;
        readiness.registered(false, Duration::from_secs(5));
        assert!(readiness.is_ready());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!readiness.is_ready(), "registration older than the TTL");
        readiness.registered(true, Duration::from_secs(5));
        assert!(readiness.is_ready());
        readiness.set_serving(false);
        assert!(!readiness.is_ready(), "stopping");
        assert_eq!(*seen.lock(), [true, false, true]);
    }
}
