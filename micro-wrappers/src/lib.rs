//! Breakers, rate limiting, tracing and metrics for micro-rs, as tower layers.
//!
//! This crate holds the resilience *algorithms* as plain, clock-driven state machines, apart
//! from any plumbing, so they can be proven exactly and measured alone:
//!
//! * [`breaker::gobreaker`]: sony/gobreaker's counts, generations and lazy states;
//! * [`breaker::hystrix`]: afex/hystrix-go's rolling error percentage, sleep-window probe,
//!   concurrency limit, timeout and fallback;
//! * [`breaker::adaptive`]: the Google SRE book's client-side throttling, as go-zero;
//! * [`ratelimit::bucket`]: juju/ratelimit's token bucket, as one lock-free compare-and-swap.
//!
//! Each of these reads time from a [`clock::Clock`]: [`clock::SystemClock`] in production,
//! [`clock::ManualClock`] in tests, so no rule needs a real sleep to be tested. The
//! observation wrappers ([`metrics`], [`trace`]) take no `Clock`: they read their own time (a
//! call's duration, a span's timestamps).

pub mod breaker;
pub mod clock;
pub mod metrics;
pub mod observe;
pub mod ratelimit;
pub mod trace;

pub use breaker::{AdaptiveBreaker, BreakerLayer, CircuitBreaker, HystrixCircuit};
pub use clock::{Clock, ManualClock, SystemClock};
pub use ratelimit::{Bucket, RateLimitLayer};

/// A boxed error, the default error type of the guarded requests (micro-core's, re-exported).
pub use micro_core::BoxError;
