//! The servers of each scenario: bare tonic, or micro services registered in etcd.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use examples::{Greeter1, Greeter2};
use micro::{registry::Etcd, trace::SpanStats};
use proto::greeter::{
    FILE_DESCRIPTOR_SET,
    greeter_client::GreeterClient,
    greeter_server::{Greeter, GreeterServer},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::{Endpoint, server::TcpIncoming};
use tower::util::MapRequestLayer;

use crate::{Scenario, observe};

/// How a scenario's servers are set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// etcd endpoint (`127.0.0.1:PORT`) for the micro scenarios.
    pub etcd: Option<String>,
    /// Registered name of the entry service, instead of the scenario's.
    pub name: Option<String>,
    /// Registration TTL.
    pub ttl: Duration,
    /// Registration renewal interval.
    pub interval: Duration,
    /// OTLP gRPC endpoint of the span sink, for the observed scenarios.
    pub otlp: Option<String>,
    /// The TLS scenarios' certificates ([`crate::tls::make`]'s directory).
    pub tls: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            etcd: None,
            name: None,
            ttl: Duration::from_secs(5),
            interval: Duration::from_secs(4),
            otlp: None,
            tls: None,
        }
    }
}

/// The greeter every single-hop scenario serves (`Hello` answers at once).
fn greeter2() -> Greeter2 {
    Greeter2 {
        test_sleep: Duration::ZERO,
    }
}

/// The handler-side tower middleware of the `micro-tower` scenario (and the client side's).
pub fn timeout_layer() -> tower::timeout::TimeoutLayer {
    tower::timeout::TimeoutLayer::new(Duration::from_secs(5))
}

/// Running servers of one scenario.
pub struct Started {
    /// Address of the entry server (the one the load generator calls).
    pub addr: SocketAddr,
    /// The metrics endpoint of an observed scenario's server.
    pub metrics: Option<SocketAddr>,
    servers: Vec<Server>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("addr", &self.addr)
            .field("metrics", &self.metrics)
            .field("servers", &self.servers.len())
            .finish()
    }
}

enum Server {
    Micro(Box<micro::Running>),
    Tonic {
        stop: oneshot::Sender<()>,
        task: JoinHandle<Result<(), tonic::transport::Error>>,
    },
}

impl Started {
    /// The span counters of the servers that trace (shared: read them after [`Started::stop`]
    /// for the final figures).
    pub fn span_stats(&self) -> Vec<Arc<SpanStats>> {
        self.servers
            .iter()
            .filter_map(|server| match server {
                Server::Micro(running) => running.tracer().map(|t| t.stats().clone()),
                Server::Tonic { .. } => None,
            })
            .collect()
    }

    /// Stops every server, the entry server first (micro ones deregister, then drain).
    pub async fn stop(self) -> anyhow::Result<()> {
        for server in self.servers.into_iter().rev() {
            match server {
                Server::Micro(running) => running.stop().await?,
                Server::Tonic { stop, task } => {
                    let _ = stop.send(());
                    task.await.context("tonic server task")??;
                }
            }
        }
        Ok(())
    }
}

/// Starts the servers of `scenario`; micro servers are registered when this returns.
pub async fn start(scenario: Scenario, options: &Options) -> anyhow::Result<Started> {
    match scenario {
        Scenario::Tonic
        | Scenario::TonicDeadline
        | Scenario::TonicTower
        | Scenario::TonicTowerDeadline => {
            let tower = matches!(
                scenario,
                Scenario::TonicTower | Scenario::TonicTowerDeadline
            );
            let (addr, server) = tonic_server(GreeterServer::new(greeter2()), tower, None).await?;
            Ok(Started {
                addr,
                metrics: None,
                servers: vec![server],
            })
        }
        Scenario::TonicTls => {
            let tls = tls_files(scenario, options)?.tonic_server()?;
            let (addr, server) =
                tonic_server(GreeterServer::new(greeter2()), false, Some(tls)).await?;
            Ok(Started {
                addr,
                metrics: None,
                servers: vec![server],
            })
        }
        Scenario::ChainTonic | Scenario::ChainTonicDeadline => {
            let (addr2, server2) =
                tonic_server(GreeterServer::new(greeter2()), false, None).await?;
            let channel = Endpoint::from_shared(format!("http://{addr2}"))?
                .tcp_nodelay(true)
                .connect_lazy();
            // The same handler as micro's chain, over a plain tonic channel.
            let deadline = scenario == Scenario::ChainTonicDeadline;
            let channel = tower::ServiceBuilder::new()
                .option_layer(deadline.then(|| MapRequestLayer::new(with_grpc_timeout)))
                .service(channel);
            let greeter1 = Greeter1 {
                greeter2: GreeterClient::new(channel),
            };
            let (addr1, server1) = tonic_server(GreeterServer::new(greeter1), false, None).await?;
            Ok(Started {
                addr: addr1,
                metrics: None,
                servers: vec![server2, server1],
            })
        }
        Scenario::Micro
        | Scenario::MicroTower
        | Scenario::MicroTwoNodes
        | Scenario::MicroP2c
        | Scenario::MicroBreaker
        | Scenario::MicroRatelimit
        | Scenario::MicroObserved
        | Scenario::MicroFull
        | Scenario::MicroTls => {
            let mut nodes = Vec::with_capacity(scenario.nodes());
            for _ in 0..scenario.nodes() {
                nodes.push(micro_node(scenario, options).await?);
            }
            let first = nodes.first().context("a scenario has at least one node")?;
            Ok(Started {
                addr: first.local_addr(),
                metrics: first.metrics_addr(),
                servers: nodes
                    .into_iter()
                    .map(|node| Server::Micro(Box::new(node)))
                    .collect(),
            })
        }
        Scenario::ChainMicro => {
            let greeter2 = micro_service("greeter2", options)?
                .handle(GreeterServer::new(greeter2()))
                .start()
                .await?;
            let mut greeter1 = micro_service(scenario.service(), options)?;
            let client = GreeterClient::new(greeter1.client().channel("greeter2"));
            let greeter1 = greeter1
                .handle(GreeterServer::new(Greeter1 { greeter2: client }))
                .start()
                .await?;
            Ok(Started {
                addr: greeter1.local_addr(),
                metrics: None,
                servers: vec![
                    Server::Micro(Box::new(greeter2)),
                    Server::Micro(Box::new(greeter1)),
                ],
            })
        }
    }
}

/// One started node of a single-hop micro scenario, with the scenario's wrappers.
async fn micro_node(scenario: Scenario, options: &Options) -> anyhow::Result<micro::Running> {
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| scenario.service().to_owned());
    let mut service = micro_service(&name, options)?;
    if scenario == Scenario::MicroTower {
        service = service.wrap_handler(timeout_layer());
    }
    if scenario.tls() {
        service = service.server_tls(tls_files(scenario, options)?.micro_server());
    }
    if scenario.observed() {
        let otlp = options.otlp.as_deref().with_context(|| {
            format!("{scenario} needs --otlp ENDPOINT (a `bench sink`'s address)")
        })?;
        service = service
            .tracing(observe::trace_config(otlp, &name))
            .metrics_address(observe::METRICS_ADDRESS);
    }
    if scenario.server_ratelimit() {
        // A billion calls per second: far above any load here, so it never refuses.
        let limit = micro::wrappers::ratelimit::RateLimitLayer::new(1e9, 1_000_000_000)?;
        service = service.wrap_handler(limit);
    }
    let running = service
        .handle(GreeterServer::new(greeter2()))
        .start()
        .await?;
    anyhow::ensure!(
        !scenario.observed() || running.tracer().is_some(),
        "{scenario}: tracing did not start"
    );
    Ok(running)
}

/// Sends a 30 s `grpc-timeout` on greeter1's call to greeter2, as a micro client sends the
/// caller's remaining deadline on.
fn with_grpc_timeout(
    mut request: http::Request<tonic::body::Body>,
) -> http::Request<tonic::body::Body> {
    request
        .headers_mut()
        .insert("grpc-timeout", http::HeaderValue::from_static("30S"));
    request
}

fn micro_service(name: &str, options: &Options) -> anyhow::Result<micro::Service> {
    let etcd = options
        .etcd
        .clone()
        .context("a micro scenario needs --etcd")?;
    Ok(micro::Service::new()
        .name(name)
        .registry(Etcd::new([etcd]))
        .register_ttl(options.ttl)
        .register_interval(options.interval)
        .descriptors(FILE_DESCRIPTOR_SET)?)
}

/// The certificates of a TLS scenario.
fn tls_files(scenario: Scenario, options: &Options) -> anyhow::Result<crate::tls::Files> {
    let dir = options
        .tls
        .as_deref()
        .with_context(|| format!("{scenario} needs --tls DIR (certificates)"))?;
    Ok(crate::tls::Files::in_dir(dir))
}

/// A plain tonic server on a free port; `tower` adds [`timeout_layer`], `tls` tonic's TLS.
async fn tonic_server<T: Greeter>(
    service: GreeterServer<T>,
    tower: bool,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> anyhow::Result<(SocketAddr, Server)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    // Two arms: the layered server's service type differs (tower's `Either` would need the
    // same error type on both sides, which a `map_err` on the baseline would have to add).
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let task = if tower {
        let mut builder = builder.layer(timeout_layer());
        tokio::spawn(
            builder
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stopped),
        )
    } else {
        let mut builder = builder;
        tokio::spawn(
            builder
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stopped),
        )
    };
    Ok((addr, Server::Tonic { stop, task }))
}
