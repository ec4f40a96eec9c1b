//! Client options, with go-micro's defaults.

use std::{fmt, sync::Arc, time::Duration};

use tonic::{Code, Status};

use crate::selector::{Filter, Strategy};

/// Decides whether a failed attempt is tried again on another node.
pub type RetryPolicy = Arc<dyn Fn(&Status) -> bool + Send + Sync>;

/// Client options.
#[derive(Clone)]
pub struct Options {
    /// Attempts after the first (go-micro: 5).
    pub retries: u32,
    /// Time for the whole call, retries included (go-micro: 30 s).
    pub request_timeout: Duration,
    /// Time to open a connection to a node (go-micro: 5 s).
    pub dial_timeout: Duration,
    /// First pause between attempts; doubles each attempt (go-micro: 100 ms).
    pub backoff: Duration,
    /// Longest pause between attempts (go-micro: 2 min).
    pub max_backoff: Duration,
    /// Which failures are retried; by default only those where the call cannot have run.
    pub retry: RetryPolicy,
    /// Node choice.
    pub strategy: Strategy,
    /// Filters applied to every call.
    pub filters: Vec<Filter>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retries: 5,
            request_timeout: Duration::from_secs(30),
            dial_timeout: Duration::from_secs(5),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(120),
            retry: Arc::new(retry_on_unavailable),
            strategy: Strategy::Random,
            filters: Vec::new(),
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("retries", &self.retries)
            .field("request_timeout", &self.request_timeout)
            .field("dial_timeout", &self.dial_timeout)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .field("strategy", &self.strategy)
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// The pause before attempt `attempt` (1 = the first retry).
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// The default policy: retry `Unavailable` only: the node could not be reached, refused the
/// stream, or is shutting down, so the call did not run (a connection that breaks mid-call
/// also reads as `Unavailable`; replace this policy for non-idempotent services). Timeouts and server errors are not
/// retried, since a non-idempotent call may have run (go-micro v2 retried 500s; users filed
/// issues about duplicated side effects).
pub fn retry_on_unavailable(status: &Status) -> bool {
    status.code() == Code::Unavailable
}

/// Per-call settings, put in the request's extensions
/// (`request.extensions_mut().insert(CallOptions { .. })`) or passed to
/// [`Client::call_with`](crate::Client::call_with).
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Overrides the client's request timeout.
    pub timeout: Option<Duration>,
    /// Overrides the client's retries.
    pub retries: Option<u32>,
    /// Filters added to the client's for this call.
    pub filters: Vec<Filter>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_and_is_capped() {
        let options = Options::default();
        assert_eq!(options.backoff_for(1), Duration::from_millis(100));
        assert_eq!(options.backoff_for(2), Duration::from_millis(200));
        assert_eq!(options.backoff_for(4), Duration::from_millis(800));
        assert_eq!(options.backoff_for(40), Duration::from_secs(120));
    }

    #[test]
    fn only_unavailable_is_retried_by_default() {
        assert!(retry_on_unavailable(&Status::unavailable("down")));
        assert!(!retry_on_unavailable(&Status::deadline_exceeded("slow")));
        assert!(!retry_on_unavailable(&Status::internal("bug")));
    }
}
