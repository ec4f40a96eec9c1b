//! Rate limiting: juju/ratelimit's token bucket ([`Bucket`]), lock-free, and
//! [`RateLimitLayer`], the bucket as a tower layer for handlers and clients.
//!
//! * Reject mode (default): a call without a token gets go-micro's 429 "too many request" as
//!   gRPC `ResourceExhausted`, id `go.micro.server` (or `go.micro.client` on a client).
//! * Wait mode: a call waits for its token, but never past its deadline; a wait longer than
//!   the time left is refused at once with the 429.
//! * Keys: one bucket for all, per endpoint, or per value of a metadata key, with a bound on
//!   the number of buckets (see [`Key`]).
//! * [`RateLimitLayer::on_event`] sees every decision ([`LimitEvent`]), for metrics.

pub mod bucket;
pub mod future;
mod keys;
mod layer;
mod service;

pub use bucket::{Bucket, BucketError, BucketEvent};
pub use layer::{DEFAULT_MAX_KEYS, Key, LimitEvent, LimitObserver, Mode, RateLimitLayer};
pub use service::RateLimit;
