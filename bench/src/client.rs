//! The load generator's clients: a plain tonic channel to an address, or a micro client that
//! finds the service in etcd.

use std::{future::Future, pin::Pin, sync::Arc};

use anyhow::Context;
use micro::registry::Etcd;
use proto::greeter::{Request, greeter_client::GreeterClient};
use tonic::{Status, transport::Endpoint};

use crate::{
    observe::{self, SpanCounts},
    serve::timeout_layer,
};

/// Where the load goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// Any greeter server at this address (`host:port` or `http://host:port`), through one
    /// plain tonic channel.
    Address {
        /// The server.
        address: String,
        /// A request timeout sent on every call (`grpc-timeout`).
        timeout: Option<std::time::Duration>,
        /// Adds a `tower::timeout::TimeoutLayer` over the channel.
        tower: bool,
        /// Mutual TLS with tonic's own TLS, these certificates.
        tls: Option<crate::tls::Files>,
    },
    /// A micro service found through etcd, through a micro client (discovery, selector,
    /// pool), optionally with a tower middleware (`wrap_client`).
    Discover {
        /// etcd endpoint.
        etcd: String,
        /// Registered service name.
        service: String,
        /// Adds a `tower::timeout::TimeoutLayer` through `wrap_client`.
        tower: bool,
        /// The client's selector.
        selector: micro::client::Strategy,
        /// Adds a gobreaker (`micro::wrappers::breaker`) through `wrap_client`.
        breaker: bool,
        /// Traces (OTLP gRPC to this endpoint, the default sampler) and meters the client.
        observe: Option<String>,
        /// Mutual TLS to the nodes, these certificates.
        tls: Option<crate::tls::Files>,
    },
}

/// A connected load client.
pub struct Connected {
    /// Makes one call.
    pub call: Call,
    /// The client's tracer and metrics, when it observes.
    pub observed: Option<Observation>,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("observed", &self.observed.is_some())
            .finish()
    }
}

/// The tracer and the metrics of an observing load client.
#[derive(Clone, Debug)]
pub struct Observation {
    tracing: micro::trace::Tracing,
    metrics: micro::metrics::Metrics,
}

impl Observation {
    /// Sends the last spans and stops the tracer, then reads the metrics once (as a scrape
    /// at the end would): the client's span counts and its number of metric samples.
    pub async fn finish(self) -> anyhow::Result<(SpanCounts, u64)> {
        self.tracing
            .shutdown_async()
            .await
            .context("flushing the load client's spans")?;
        let counts = SpanCounts::of(self.tracing.stats());
        Ok((counts, observe::metric_samples(&self.metrics.encode())))
    }
}

/// One `greeter.Greeter/Hello` call.
pub type Call =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), Status>> + Send>> + Send + Sync>;

fn request() -> Request {
    Request {
        name: "bench".into(),
    }
}

/// A function that makes one `Hello` call to `target`, and what observes the client.
pub async fn connect(target: &Target) -> anyhow::Result<Connected> {
    let unobserved = |call| Connected {
        call,
        observed: None,
    };
    match target {
        Target::Address {
            address,
            timeout,
            tower,
            tls,
        } => {
            let timeout = *timeout;
            let scheme = if tls.is_some() { "https" } else { "http" };
            let uri = if address.contains("://") {
                address.clone()
            } else {
                format!("{scheme}://{address}")
            };
            let mut endpoint = Endpoint::from_shared(uri)?.tcp_nodelay(true);
            if let Some(tls) = tls {
                endpoint = endpoint.tls_config(tls.tonic_client()?)?;
            }
            let channel = endpoint
                .connect()
                .await
                .with_context(|| format!("connecting to {address}"))?;
            if *tower {
                let channel = tower::ServiceBuilder::new()
                    .layer(timeout_layer())
                    .service(channel);
                Ok(unobserved(hello_with_timeout(
                    GreeterClient::new(channel),
                    timeout,
                )))
            } else {
                Ok(unobserved(hello_with_timeout(
                    GreeterClient::new(channel),
                    timeout,
                )))
            }
        }
        Target::Discover {
            etcd,
            service,
            tower,
            selector,
            breaker,
            observe,
            tls,
        } => {
            let mut builder = micro::Service::new()
                .name("bench-load")
                .registry(Etcd::new([etcd.clone()]))
                .client_options(micro::client::Options {
                    strategy: *selector,
                    ..Default::default()
                });
            if let Some(endpoint) = observe {
                builder = builder
                    .tracing(observe::trace_config(
                        endpoint,
                        &observe::client_service_name(service),
                    ))
                    .metrics_address(observe::METRICS_ADDRESS);
            }
            if *tower {
                builder = builder.wrap_client(timeout_layer());
            }
            if let Some(tls) = tls {
                builder = builder.client_tls(tls.micro_client());
            }
            if *breaker {
                builder = builder.wrap_client(micro::wrappers::breaker::BreakerLayer::gobreaker(
                    micro::wrappers::breaker::Settings::new("bench"),
                ));
            }
            let channel = builder.client().channel(service.clone());
            let observed = match observe {
                None => None,
                Some(endpoint) => Some(Observation {
                    tracing: builder.tracer().cloned().with_context(|| {
                        format!("the load client's tracing to {endpoint} did not start")
                    })?,
                    metrics: builder
                        .metrics_registry()
                        .cloned()
                        .context("the load client's metrics did not start")?,
                }),
            };
            let client = GreeterClient::new(channel);
            Ok(Connected {
                call: Arc::new(move || {
                    let mut client = client.clone();
                    Box::pin(async move { client.hello(request()).await.map(|_| ()) })
                }),
                observed,
            })
        }
    }
}

/// Calls `Hello` through `client`, sending `timeout` as the request timeout when given.
fn hello_with_timeout<T>(client: GreeterClient<T>, timeout: Option<std::time::Duration>) -> Call
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    T::Future: Send,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    Arc::new(move || {
        let mut client = client.clone();
        Box::pin(async move {
            let mut call = tonic::Request::new(request());
            if let Some(timeout) = timeout {
                call.set_timeout(timeout);
            }
            client.hello(call).await.map(|_| ())
        })
    })
}
