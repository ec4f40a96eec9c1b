//! Keeps this node registered: renews every register interval, as go-micro's server does.

use std::{sync::Arc, time::Duration};

use micro_registry::{RegisterOptions, Registry, Service};
use tokio_util::sync::CancellationToken;

use crate::{health::Health, readiness::Readiness};

/// Registers now; on failure logs and leaves it to the loop (go-micro starts anyway).
pub(crate) async fn register_once(
    registry: &dyn Registry,
    service: &Service,
    ttl: Duration,
    health: &Health,
    readiness: &Readiness,
) -> bool {
    match registry.register(service, RegisterOptions { ttl }).await {
        Ok(()) => {
            readiness.registered(true, ttl);
            health.serving().await;
            true
        }
        Err(err) => {
            readiness.registered(false, ttl);
            tracing::warn!(service = %service.name, registry = registry.name(), %err, "register failed; will retry");
            false
        }
    }
}

/// Re-registers every `interval` until `stop` is cancelled. The registry renews the lease,
/// skips an unchanged node and re-creates a lost registration.
pub(crate) async fn run(
    registry: Arc<dyn Registry>,
    service: Service,
    ttl: Duration,
    interval: Duration,
    health: Health,
    readiness: Readiness,
    stop: CancellationToken,
) {
    if interval.is_zero() {
        return;
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {
                register_once(&*registry, &service, ttl, &health, &readiness).await;
            }
        }
    }
}
