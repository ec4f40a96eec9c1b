//! Starting, running until a signal, and stopping in go-micro's order.

use std::future::Future;

use super::{
    Service, ServiceError,
    hooks::{Hook, run_hooks},
};

impl Service {
    /// Starts serving and registers; returns a handle to stop it. [`Service::run`] is this
    /// plus waiting for a signal. A failing after-start hook stops the server again before
    /// its error is returned; dropping the [`Running`] without stopping it deregisters.
    pub async fn start(mut self) -> Result<Running, ServiceError> {
        let name = self.server.options().name.clone();
        self.observe.decide(&name)?;
        let listener = self.observe.bind().await?;
        let subscribers = self.start_events().await?;
        self.observe.wrap_server(&mut self.server);
        run_hooks("before start", &mut self.before_start)?;
        let readiness = self.server.readiness();
        let running = self.server.start(self.registry.clone()).await?;
        let observe = self.observe.start(listener, readiness);
        if let Err(err) = run_hooks("after start", &mut self.after_start) {
            tracing::error!(%err, "stopping the server");
            running.stop().await;
            stop_subscribers(subscribers).await;
            observe.stop().await;
            return Err(err);
        }
        Ok(Running {
            server: running,
            observe,
            subscribers,
            before_stop: self.before_stop,
            after_stop: self.after_stop,
        })
    }

    /// Runs until SIGTERM, SIGINT or SIGQUIT, then stops gracefully.
    pub async fn run(self) -> Result<(), ServiceError> {
        self.run_until(shutdown_signal()?).await
    }

    /// Runs until `shutdown` completes, then stops gracefully.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), ServiceError> {
        let running = self.start().await?;
        shutdown.await;
        running.stop().await
    }
}

/// A started service. Dropped without [`Running::stop`], its server deregisters and stops
/// in the background (the stop hooks do not run).
pub struct Running {
    server: micro_server::RunningServer,
    observe: crate::observe::Observing,
    subscribers: Vec<micro_broker::SubscriberHandle>,
    before_stop: Vec<Hook>,
    after_stop: Vec<Hook>,
}

impl Running {
    /// The address the server listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    /// This node's id and registered address.
    pub fn node(&self) -> &micro_core::NodeInfo {
        self.server.node()
    }

    /// The address the metrics endpoint listens on, if it is on.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.observe.metrics_addr()
    }

    /// The metrics registry, if metrics are on.
    pub fn metrics(&self) -> Option<&micro_wrappers::metrics::Metrics> {
        self.observe.metrics()
    }

    /// The tracer, if tracing is on.
    pub fn tracer(&self) -> Option<&micro_wrappers::trace::Tracing> {
        self.observe.tracing()
    }

    /// Whether the node is ready (registered within the TTL and serving): `/ready`.
    pub fn readiness(&self) -> &micro_server::Readiness {
        self.server.readiness()
    }

    /// Stops in go-micro's order: before-stop hooks, NOT_SERVING and deregister, the
    /// deregister delay (still accepting), stop accepting and drain, after-stop hooks; the
    /// metrics endpoint stops and the last spans are sent after the drain.
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        let before = run_hooks("before stop", &mut self.before_stop);
        // Subscribers stop with the server (go-micro unsubscribes when it deregisters).
        let subscribers = std::mem::take(&mut self.subscribers);
        tokio::join!(self.server.stop(), stop_subscribers(subscribers));
        self.observe.stop().await;
        before?;
        run_hooks("after stop", &mut self.after_stop)
    }
}

/// Unsubscribes every subscriber and waits for the messages they are handling.
async fn stop_subscribers(subscribers: Vec<micro_broker::SubscriberHandle>) {
    let grace = std::time::Duration::from_secs(5);
    futures::future::join_all(subscribers.into_iter().map(|s| s.stop(grace))).await;
}

/// Completes on SIGTERM, SIGINT or SIGQUIT.
fn shutdown_signal() -> Result<impl Future<Output = ()>, std::io::Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            _ = quit.recv() => tracing::info!("SIGQUIT: stopping"),
        }
    })
}
