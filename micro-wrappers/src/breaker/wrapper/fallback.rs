//! Local fallbacks written with the generated message types, encoded as gRPC unary answers.

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response};
use micro_core::Error;
use tonic::Status;

use super::body::ResponseBody;

type Answer = dyn Fn(Bytes, &Error) -> Result<Bytes, Status> + Send + Sync;

/// What a breaker answers with instead of its refusal, for one endpoint: the user's function
/// gets the decoded request and go-micro's error (the 502 with the breaker's message) and
/// returns the response, which is encoded for them.
///
/// ```
/// use micro_wrappers::breaker::wrapper::Fallback;
/// use proto::greeter::{Request, Response};
/// let fallback = Fallback::unary(|req: Request, err: &micro_core::Error| {
///     Ok(Response { msg: format!("cached answer for {} ({})", req.name, err.detail) })
/// });
/// # let _ = fallback;
/// ```
#[derive(Clone)]
pub struct Fallback(Arc<Answer>);

impl Fallback {
    /// A fallback for a unary endpoint with request `Req` and response `Rsp`. An error it
    /// returns reaches the caller as Hystrix's "fallback failed with '`its message`'. run
    /// error was '<the breaker's message>'" (a 502).
    pub fn unary<Req, Rsp, F>(f: F) -> Self
    where
        Req: prost::Message + Default,
        Rsp: prost::Message,
        F: Fn(Req, &Error) -> Result<Rsp, Status> + Send + Sync + 'static,
    {
        Fallback(Arc::new(move |message: Bytes, error: &Error| {
            let request = Req::decode(message)
                .map_err(|e| Status::invalid_argument(format!("bad request message: {e}")))?;
            let response = f(request, error)?;
            Ok(Bytes::from(response.encode_to_vec()))
        }))
    }

    /// The answer to a request whose whole body is `body` (one gRPC frame).
    pub(crate) fn answer<B>(
        &self,
        body: Bytes,
        error: &Error,
    ) -> Result<Response<ResponseBody<B>>, Status> {
        let message = decode_frame(body)?;
        let encoded = (self.0)(message, error)?;
        Ok(unary_response(encoded))
    }
}

impl fmt::Debug for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fallback")
    }
}

/// The message of a request body holding exactly one uncompressed gRPC frame.
fn decode_frame(mut body: Bytes) -> Result<Bytes, Status> {
    if body.len() < 5 {
        return Err(Status::invalid_argument(
            "request body is not a gRPC message",
        ));
    }
    if body[0] != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not supported by the fallback",
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() - 5 != len {
        return Err(Status::invalid_argument(
            "request body is not exactly one gRPC message",
        ));
    }
    Ok(body.split_off(5))
}

/// A unary gRPC response: one frame, then trailers with `grpc-status: 0`.
fn unary_response<B>(message: Bytes) -> Response<ResponseBody<B>> {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    // A message a prost type encoded into memory fits in u32 in practice; longer is refused
    // by every gRPC peer anyway.
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.put_slice(&message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut response = Response::new(ResponseBody::local(frame.freeze(), trailers));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The status of a fallback that failed, as Hystrix words it.
pub(crate) fn failed(fallback: &Status, run: &Error, id: &str) -> Status {
    let detail = format!(
        "fallback failed with '{}'. run error was '{}'",
        fallback.message(),
        run.detail
    );
    super::refusal(&Error::new(id, 502, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert!(decode_frame(Bytes::from_static(b"\0\0\0")).is_err());
        assert_eq!(
            decode_frame(Bytes::from_static(b"\x01\0\0\0\0"))
                .unwrap_err()
                .code(),
            tonic::Code::Unimplemented
        );
        assert!(decode_frame(Bytes::from_static(b"\0\0\0\0\x02a")).is_err());
        assert_eq!(
            decode_frame(Bytes::from_static(b"\0\0\0\0\x01a")).unwrap(),
            Bytes::from_static(b"a")
        );
    }
}
