//! go-micro's error model: `{id, code, detail, status}`, carried as JSON in a gRPC status.

use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

/// A go-micro error. `code` is an HTTP status code; `status` its reason phrase.
///
/// Its string form is its JSON, as in go-micro, and a gRPC status carries that JSON as its
/// message, so Go and Rust services read each other's errors.
///
/// ```
/// let err = micro_core::Error::not_found("go.micro.client", "service greeter2: not found");
/// assert_eq!(
///     err.to_string(),
///     r#"{"id":"go.micro.client","code":404,"detail":"service greeter2: not found","status":"Not Found"}"#
/// );
/// assert_eq!(err.to_status().code(), tonic::Code::NotFound);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    /// Who raised it, e.g. `go.micro.client`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// HTTP status code.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: i32,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// HTTP reason phrase of `code`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
}

fn is_zero(code: &i32) -> bool {
    *code == 0
}

impl Error {
    /// An error with the given id, HTTP code and detail; `status` is derived from the code.
    pub fn new(id: impl Into<String>, code: i32, detail: impl Into<String>) -> Self {
        let status = u16::try_from(code)
            .ok()
            .and_then(|c| http::StatusCode::from_u16(c).ok())
            .and_then(|c| c.canonical_reason())
            .unwrap_or_default()
            .to_owned();
        Error {
            id: id.into(),
            code,
            detail: detail.into(),
            status,
        }
    }

    /// 400.
    pub fn bad_request(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 400, detail)
    }
    /// 404.
    pub fn not_found(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 404, detail)
    }
    /// 408: the request timed out.
    pub fn timeout(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 408, detail)
    }
    /// 429: rate limited.
    pub fn too_many_requests(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 429, detail)
    }
    /// 500.
    pub fn internal(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 500, detail)
    }
    /// 501.
    pub fn not_implemented(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 501, detail)
    }
    /// 502: what go-micro's breaker wrappers return when open.
    pub fn bad_gateway(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 502, detail)
    }
    /// 503.
    pub fn unavailable(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 503, detail)
    }

    /// Parses go-micro's string form; a string that is not an error's JSON becomes the detail.
    pub fn parse(text: &str) -> Self {
        match serde_json::from_str::<Error>(text) {
            Ok(err) if err.code != 0 || !err.id.is_empty() || !err.detail.is_empty() => err,
            _ => Error {
                detail: text.to_owned(),
                ..Error::default()
            },
        }
    }

    /// The gRPC status that carries this error: code mapped from HTTP, message = JSON.
    pub fn to_status(&self) -> Status {
        Status::new(http_to_grpc(self.code), self.to_string())
    }

    /// Reads a gRPC status as go-micro does: the message's JSON if it is one, otherwise a new
    /// error with the HTTP code of the gRPC code and the message as detail.
    pub fn from_status(status: &Status) -> Self {
        let parsed = Error::parse(status.message());
        if parsed.code != 0 {
            return parsed;
        }
        let mut err = Error::new(parsed.id, grpc_to_http(status.code()), parsed.detail);
        if err.detail.is_empty() {
            err.detail = status.code().description().to_owned();
        }
        err
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_string(self) {
            Ok(json) => f.write_str(&json),
            Err(_) => write!(f, "{} {}: {}", self.id, self.code, self.detail),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        err.to_status()
    }
}

/// go-micro's HTTP code -> gRPC code table.
pub fn http_to_grpc(code: i32) -> Code {
    match code {
        200 => Code::Ok,
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 => Code::DeadlineExceeded,
        409 => Code::AlreadyExists,
        412 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        500 => Code::Internal,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// gRPC code -> HTTP code, the inverse of [`http_to_grpc`] (unmapped codes give 500).
pub fn grpc_to_http(code: Code) -> i32 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::DeadlineExceeded | Code::Cancelled => 408,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::FailedPrecondition => 412,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_omits_empty_fields() {
        assert_eq!(Error::default().to_string(), "{}");
        let err = Error::new("go.micro.server", 429, "too many request");
        assert_eq!(
            err.to_string(),
            r#"{"id":"go.micro.server","code":429,"detail":"too many request","status":"Too Many Requests"}"#
        );
    }

    #[test]
    fn parse_reads_go_json_in_any_order_and_plain_text() {
        let err = Error::parse(r#"{"status":"Request Timeout","detail":"x","code":408,"id":"a"}"#);
        assert_eq!(err, Error::timeout("a", "x"));
        let plain = Error::parse("connection refused");
        assert_eq!(plain.detail, "connection refused");
        assert_eq!(plain.code, 0);
        assert_eq!(Error::parse("").detail, "");
        assert_eq!(Error::parse("{not json").detail, "{not json");
    }

    #[test]
    fn status_round_trip_keeps_the_error() {
        for code in [400, 401, 403, 404, 408, 409, 412, 429, 500, 501, 503] {
            let err = Error::new("id", code, "d");
            let status = err.to_status();
            assert_eq!(grpc_to_http(status.code()), code, "code {code}");
            assert_eq!(Error::from_status(&status), err);
        }
        assert_eq!(http_to_grpc(418), Code::Unknown);
    }

    #[test]
    fn foreign_status_becomes_an_error() {
        let err = Error::from_status(&Status::unavailable("tcp connect error"));
        assert_eq!(err.code, 503);
        assert_eq!(err.detail, "tcp connect error");
        assert_eq!(err.status, "Service Unavailable");
        let empty = Error::from_status(&Status::unimplemented(""));
        assert_eq!(empty.code, 501);
        assert!(!empty.detail.is_empty());
    }
}
