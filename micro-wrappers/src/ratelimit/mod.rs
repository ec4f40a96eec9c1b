//! Rate limiting: juju/ratelimit's token bucket ([`Bucket`]), lock-free.
//!
//! The bucket is the algorithm alone; wiring it into clients and servers (wait mode bounded by
//! the call's deadline, or reject mode answering 429 "too many request") is a later layer.

pub mod bucket;

pub use bucket::{Bucket, BucketError, BucketEvent};
