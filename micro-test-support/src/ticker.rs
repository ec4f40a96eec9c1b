//! A test-only server-streaming service (`ticker.Ticker/Ticks`): sends the ticks asked for,
//! then ends the stream with the status asked for, in the trailers after the messages.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status};

/// The generated messages, client and server.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    tonic::include_proto!("ticker");
}

use pb::{Tick, TicksRequest, ticker_server::Ticker as TickerService};

/// The ticker's handler.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ticker;

#[tonic::async_trait]
impl TickerService for Ticker {
    type TicksStream = Pin<Box<dyn Stream<Item = Result<Tick, Status>> + Send>>;

    async fn ticks(
        &self,
        request: Request<TicksRequest>,
    ) -> Result<Response<Self::TicksStream>, Status> {
        let ask = request.into_inner();
        let end = match Code::from_i32(ask.end_code) {
            Code::Ok => None,
            code => Some(Err(Status::new(code, ask.end_message))),
        };
        let interval = std::time::Duration::from_millis(ask.interval_ms.into());
        let ticks = futures::stream::iter(0..ask.count).then(move |n| async move {
            if n > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            Ok(Tick { n })
        });
        let stream = ticks.chain(futures::stream::iter(end));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The ticker as a tonic service, for `Service::handle`.
pub fn server() -> pb::ticker_server::TickerServer<Ticker> {
    pb::ticker_server::TickerServer::new(Ticker)
}
