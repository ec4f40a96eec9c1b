//! The seed's greeter handlers, shared by the example binaries, the demo and the tests.
//!
//! greeter1's `Hello` calls greeter2's `Test` through discovery and answers with its reply;
//! greeter2's `Test` sleeps (100 ms in the seed), then answers.

use std::time::Duration;

use micro::{CallInfo, Channel};
use proto::greeter::{Request, Response, greeter_client::GreeterClient, greeter_server::Greeter};
use tonic::Status;

/// greeter2's handler.
#[derive(Clone, Debug)]
pub struct Greeter2 {
    /// How long `Test` sleeps (the seed: 100 ms).
    pub test_sleep: Duration,
}

impl Default for Greeter2 {
    fn default() -> Self {
        Greeter2 {
            test_sleep: Duration::from_millis(100),
        }
    }
}

#[tonic::async_trait]
impl Greeter for Greeter2 {
    async fn hello(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        let name = request.into_inner().name;
        Ok(tonic::Response::new(Response {
            msg: format!("hello {name} from greeter2"),
        }))
    }

    async fn test(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        let (_, extensions, Request { name }) = request.into_parts();
        let info = extensions.get::<CallInfo>();
        let deadline = info.and_then(|info| info.deadline).map(|d| d.remaining());
        let node = node_of(info);
        tracing::info!(
            hop = "greeter2",
            endpoint = "Greeter.Test",
            %node,
            ?deadline,
            "handling"
        );
        if !self.test_sleep.is_zero() {
            tokio::time::sleep(self.test_sleep).await;
        }
        Ok(tonic::Response::new(Response {
            msg: format!("test {name} from {node}"),
        }))
    }
}

/// greeter2's handler that also publishes each `Test` answer (a `greeter.Response`) on an
/// event topic (`greeter.events` in the binaries and the demo). A failed publish is logged;
/// the call still answers.
#[derive(Clone, Debug)]
pub struct Greeter2Events {
    /// The handler answering the calls.
    pub inner: Greeter2,
    /// Where the answers are published.
    pub events: micro::broker::Publisher<Response>,
}

#[tonic::async_trait]
impl Greeter for Greeter2Events {
    async fn hello(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        self.inner.hello(request).await
    }

    async fn test(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        let response = self.inner.test(request).await?;
        // Published in the call's context: its metadata and trace go along.
        if let Err(error) = self.events.publish(response.get_ref()).await {
            tracing::warn!(%error, topic = self.events.topic(), "publishing the answer failed");
        }
        Ok(response)
    }
}

/// greeter1's handler: calls greeter2's `Test`. Generic over the channel so the same handler
/// runs over a micro [`Channel`] (discovery, balancing, retries, wrappers; the default) or a
/// plain tonic channel (the benchmark's bare-tonic peer).
#[derive(Clone, Debug)]
pub struct Greeter1<C = Channel> {
    /// A client of greeter2.
    pub greeter2: GreeterClient<C>,
}

#[tonic::async_trait]
impl<C> Greeter for Greeter1<C>
where
    C: tonic::client::GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    C::Future: Send,
    C::Error: Into<micro::BoxError>,
    C::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <C::ResponseBody as http_body::Body>::Error: Into<micro::BoxError> + Send,
{
    async fn hello(
        &self,
        request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        let node = node_of(request.extensions().get::<CallInfo>());
        tracing::info!(
            hop = "greeter1",
            endpoint = "Greeter.Hello",
            %node,
            "handling; calling greeter2 Greeter.Test"
        );
        let name = request.into_inner().name;
        // The call inherits this request's deadline and metadata.
        let reply = self
            .greeter2
            .clone()
            .test(Request { name })
            .await?
            .into_inner();
        Ok(tonic::Response::new(Response {
            msg: format!("greeter1 <- {}", reply.msg),
        }))
    }

    async fn test(
        &self,
        _request: tonic::Request<Request>,
    ) -> Result<tonic::Response<Response>, Status> {
        Ok(tonic::Response::new(Response {
            msg: "greeter1 test".into(),
        }))
    }
}

/// The id of the node handling the call ("" outside micro).
fn node_of(info: Option<&CallInfo>) -> &str {
    info.and_then(|info| info.node.as_ref())
        .map_or("", |node| &node.id)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}
