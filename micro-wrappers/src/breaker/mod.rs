//! Circuit breakers as plain state machines: [`gobreaker`] (sony/gobreaker's counts and
//! generations), [`hystrix`] (afex/hystrix-go's rolling error percentage, sleep window and
//! concurrency limit) and [`adaptive`] (the Google SRE book's client-side throttling, as go-zero).
//!
//! Each breaker is `Send + Sync` and meant to be shared (by reference or `Arc`) by many tasks.
//! Time comes from a [`Clock`](crate::clock::Clock), so tests drive it with a
//! [`ManualClock`](crate::clock::ManualClock). State changes and rejections are reported to an
//! optional [`Observer`], so metrics can be attached without touching the algorithms.

use std::fmt;

pub mod adaptive;
pub mod gobreaker;
pub mod hystrix;
mod window;
pub mod wrapper;

pub use adaptive::AdaptiveBreaker;
pub use gobreaker::{BreakerError, CircuitBreaker, Counts, Settings};
pub use hystrix::{HystrixCircuit, HystrixConfig, HystrixError};
pub use wrapper::{BreakerLayer, Fallback, Scope};

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Requests pass; outcomes are counted.
    Closed,
    /// Trial requests pass to find out whether the backend has recovered.
    HalfOpen,
    /// Requests fail fast without reaching the backend.
    Open,
}

impl State {
    /// The lower-case name used by gobreaker: `"closed"`, `"half-open"` or `"open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half-open",
            State::Open => "open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a breaker refused a request without running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The circuit is open (gobreaker "circuit breaker is open", Hystrix "circuit open").
    Open,
    /// Half-open and `max_requests` trial requests are already under way (gobreaker).
    TooManyRequests,
    /// No free concurrency ticket (Hystrix "max concurrency").
    MaxConcurrency,
    /// Dropped locally by adaptive throttling.
    Throttled,
}

/// Something a breaker did that metrics may want to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The breaker moved from one state to another.
    StateChange {
        /// The state before.
        from: State,
        /// The state after.
        to: State,
    },
    /// A request was refused without being run.
    Rejected(Rejection),
}

/// A callback told of every [`Event`] of a breaker, with the breaker's name.
///
/// It runs on the caller's thread after the breaker's lock is released, so it may call back
/// into the breaker; events of concurrent callers may arrive in either order.
pub type Observer = micro_core::Observer<Event>;
