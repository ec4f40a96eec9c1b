//! Circuit breakers as tower layers: [`BreakerLayer`] runs gobreaker, Hystrix or the adaptive
//! breaker around every call, as micro's `wrap_client` (per service or per endpoint) or
//! `wrap_call` (per node), or in a bare tonic app.
//!
//! * What a failure is comes from the shared classifier ([`micro_core::Outcome`]) through
//!   [`is_failure`]: with go-micro's JSON, a code >= 500 or 408; otherwise `Unknown`,
//!   `DeadlineExceeded`, `Internal`, `Unavailable`, `DataLoss` (and `Unimplemented` if asked).
//!   A caller's own 4xx never counts and a cancelled call counts as neither. Override with
//!   [`BreakerLayer::is_successful`].
//! * The permission a call holds lives as long as the call, its response body included, so a
//!   streaming call is judged by how its stream ends.
//! * Refused calls get go-micro's 502 JSON with the algorithm's message ("circuit breaker is
//!   open", "too many requests", "hystrix: circuit open", "hystrix: max concurrency",
//!   "hystrix: timeout") as gRPC `Unavailable`, without touching the network, or the
//!   endpoint's [`Fallback`] answer.
//! * Every state change is logged at WARN and reported to
//!   [`BreakerLayer::on_state_change`]; [`BreakerLayer::on_event`] also sees refusals.

mod body;
mod circuit;
mod classify;
mod fallback;
pub mod future;
mod layer;
mod service;

pub use body::ResponseBody;
pub use circuit::Guard;
pub use classify::{Verdict, is_failure};
pub use fallback::Fallback;
pub use layer::{BreakerLayer, MAX_BREAKERS, Scope};
pub use service::Breaker;

/// The status a refusal travels as: go-micro's JSON in an `Unavailable` status (a go-micro
/// server would send its 502 as `Unknown`; callers read the code from the JSON).
pub(crate) fn refusal(error: &micro_core::Error) -> tonic::Status {
    tonic::Status::new(tonic::Code::Unavailable, error.to_string())
}
