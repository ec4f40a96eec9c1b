//! The observed scenarios' span sink: an OTLP/gRPC trace receiver that accepts every export
//! and discards it, counting the spans per reporting service (`service.name`). `compare`
//! runs it as its own process (`bench sink`) on the load generator's CPUs.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use anyhow::Context;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// The line `bench sink` prints at exit: `received <json SinkReport>`.
pub const RECEIVED_PREFIX: &str = "received ";

/// What the sink received.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkReport {
    /// Export requests accepted.
    pub requests: u64,
    /// Spans in them.
    pub spans: u64,
    /// Spans per `service.name` of their resource (`?` when a resource has none).
    pub by_service: BTreeMap<String, u64>,
}

impl SinkReport {
    /// Spans received from any of these services.
    pub fn from_services<'a>(&self, services: impl IntoIterator<Item = &'a str>) -> u64 {
        services
            .into_iter()
            .filter_map(|s| self.by_service.get(s))
            .sum()
    }

    fn count(&mut self, request: &ExportTraceServiceRequest) {
        self.requests += 1;
        for resource_spans in &request.resource_spans {
            let spans: u64 = resource_spans
                .scope_spans
                .iter()
                .map(|scope| scope.spans.len() as u64)
                .sum();
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(name) => Some(name.as_str()),
                    _ => None,
                })
                .unwrap_or("?");
            self.spans += spans;
            *self.by_service.entry(service.to_owned()).or_default() += spans;
        }
    }
}

#[derive(Clone, Default)]
struct Counter(Arc<Mutex<SinkReport>>);

impl Counter {
    fn snapshot(&self) -> SinkReport {
        match self.0.lock() {
            Ok(report) => report.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[tonic::async_trait]
impl TraceService for Counter {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        match self.0.lock() {
            Ok(mut report) => report.count(&request),
            Err(_) => return Err(tonic::Status::internal("sink counter poisoned")),
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running sink.
pub struct Sink {
    addr: SocketAddr,
    counter: Counter,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Sink {
    /// Starts it on a free `127.0.0.1` port.
    pub async fn start() -> anyhow::Result<Sink> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let counter = Counter::default();
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(counter.clone());
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        Ok(Sink {
            addr,
            counter,
            stop,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it received so far.
    pub fn report(&self) -> SinkReport {
        self.counter.snapshot()
    }

    /// Stops serving (waiting up to 5 s for open connections to close); returns what it
    /// received.
    pub async fn stop(self) -> anyhow::Result<SinkReport> {
        let Sink {
            counter,
            stop,
            task,
            ..
        } = self;
        let _ = stop.send(());
        match tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
            Ok(joined) => joined.context("sink task")??,
            Err(_) => tracing::warn!("sink: connections still open after 5 s, stopping anyway"),
        }
        Ok(counter.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::trace_service_client::TraceServiceClient,
        common::v1::{AnyValue, KeyValue},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };

    use super::*;

    fn resource_spans(service: Option<&str>, spans: usize) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: service
                    .map(|name| KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(name.into())),
                        }),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); spans],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn counts_spans_per_service_over_grpc() {
        let sink = Sink::start().await.unwrap();
        let mut client = TraceServiceClient::connect(format!("http://{}", sink.addr()))
            .await
            .unwrap();
        for request in [
            vec![resource_spans(Some("a"), 3), resource_spans(Some("b"), 2)],
            vec![resource_spans(Some("a"), 1), resource_spans(None, 4)],
            vec![],
        ] {
            client
                .export(ExportTraceServiceRequest {
                    resource_spans: request,
                })
                .await
                .unwrap();
        }
        let report = sink.stop().await.unwrap();
        assert_eq!(report.requests, 3);
        assert_eq!(report.spans, 10);
        assert_eq!(report.by_service.get("a"), Some(&4));
        assert_eq!(report.by_service.get("b"), Some(&2));
        assert_eq!(report.by_service.get("?"), Some(&4));
        assert_eq!(report.from_services(["a", "b", "c"]), 6);
    }
}
