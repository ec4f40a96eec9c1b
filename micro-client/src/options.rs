//! Client options, with go-micro's defaults.

use std::{fmt, sync::Arc, time::Duration};

use micro_core::{Origin, Outcome};
use tonic::Code;

use crate::{
    accrual::Ejection,
    selector::{Filter, Strategy},
};

/// Decides whether a failed attempt is tried again on another node, from how it ended.
pub type RetryPolicy = Arc<dyn Fn(&Outcome) -> bool + Send + Sync>;

/// A retry decision of the retry loop, told to [`Builder::on_retry`](crate::Builder::on_retry)
/// observers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryEvent {
    /// A failed attempt is tried again (on another node when there is one).
    Retried,
    /// The policy would retry, but the called service's retry budget is spent: the failure
    /// is the answer.
    BudgetRefused,
}

/// Told of each [`RetryEvent`], with the called service's name (the hook for metrics).
pub type RetryObserver = micro_core::Observer<RetryEvent>;

/// Client options.
#[derive(Clone)]
pub struct Options {
    /// Attempts after the first (go-micro: 5); 0 turns retries off.
    pub retries: u32,
    /// Time for the whole call, retries included (go-micro: 30 s).
    pub request_timeout: Duration,
    /// Time to open a connection to a node (go-micro: 5 s).
    pub dial_timeout: Duration,
    /// The unit of go-micro's backoff: the pause before retry `n` is `n^e` (truncated) times
    /// this, so 0, 100 ms, 600 ms, 1.9 s, 4.3 s, ... with go-micro's 100 ms; zero for no pause.
    pub backoff: Duration,
    /// Longest pause between attempts (go-micro: 2 min).
    pub max_backoff: Duration,
    /// Which failures are retried; by default only attempts that never reached a server.
    pub retry: RetryPolicy,
    /// Endpoints (`Greeter.Test`) safe to run twice: also retried on Unavailable,
    /// ResourceExhausted and Aborted answers and on broken connections. `*` marks every one.
    pub idempotent: Vec<String>,
    /// Bounds retries per called service, so a failing service gets no retry storm; `None`
    /// retries as the policy says.
    pub retry_budget: Option<RetryBudget>,
    /// How long a call waits for a node when every candidate is busy (e.g. its concurrency
    /// limit is full), never past the deadline (default 1 s).
    pub ready_timeout: Duration,
    /// Node choice.
    pub strategy: Strategy,
    /// Filters applied to every call.
    pub filters: Vec<Filter>,
    /// Failure accrual: a node whose attempts fail at the transport is taken out of rotation
    /// for a while (on by default, see [`Ejection`]); `None` turns it off.
    pub ejection: Option<Ejection>,
    /// HTTP/2 pings on each node's connection while calls are open: sent after this long
    /// without a frame from the node (default 10 s), so that a connection to a node cut off
    /// from the network fails by itself; `None` sends none.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed (default 5 s).
    pub keepalive_timeout: Duration,
    /// For idempotent endpoints, how long one attempt may take before it is abandoned and
    /// the call tried again on another node, within the call's deadline (default: none).
    /// [`CallOptions::attempt_timeout`] overrides it per call.
    pub attempt_timeout: Option<Duration>,
    /// TLS to nodes: by default nodes whose metadata says `secure: "true"` (or by go-micro's
    /// rule on port 443 or with an `https://` address) are dialled with TLS and verified
    /// against the system's roots; set a CA bundle, a client certificate and a server name
    /// here (micro-rs addition).
    pub tls: micro_core::tls::ClientTls,
    /// Per-service TLS settings: calls to the named service use these instead of `tls`.
    pub tls_services: Vec<(String, micro_core::tls::ClientTls)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retries: 5,
            request_timeout: Duration::from_secs(30),
            dial_timeout: Duration::from_secs(5),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(120),
            retry: Arc::new(retry_not_sent),
            idempotent: Vec::new(),
            retry_budget: Some(RetryBudget::default()),
            ready_timeout: Duration::from_secs(1),
            strategy: Strategy::Random,
            filters: Vec::new(),
            ejection: Some(Ejection::default()),
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(5),
            attempt_timeout: None,
            tls: micro_core::tls::ClientTls::default(),
            tls_services: Vec::new(),
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
            .field("idempotent", &self.idempotent)
            .field("retry_budget", &self.retry_budget)
            .field("ready_timeout", &self.ready_timeout)
            .field("strategy", &self.strategy)
            .field("filters", &self.filters)
            .field("ejection", &self.ejection)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("tls", &self.tls)
            .field("tls_services", &self.tls_services)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// The pause before attempt `attempt` (0 = the first, 1 = the first retry), as go-micro:
    /// `attempt^e` truncated to an integer, times [`Options::backoff`], capped.
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        let power = f64::from(attempt).powf(std::f64::consts::E).trunc();
        // Past the cap the power no longer matters; keep the multiplication finite.
        let power = power.min(f64::from(u32::MAX)) as u32;
        self.backoff.saturating_mul(power).min(self.max_backoff)
    }

    /// Whether `endpoint` was marked idempotent.
    pub fn is_idempotent(&self, endpoint: &str) -> bool {
        self.idempotent.iter().any(|e| e == "*" || e == endpoint)
    }
}

/// tower's `TpsBudget` settings: each call deposits, each retry withdraws; retries stay within
/// `percent` of the calls seen over `ttl`, plus `min_per_sec` per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    /// How long a deposit counts (default 10 s).
    pub ttl: Duration,
    /// Retries allowed per second whatever the calls (default 10).
    pub min_per_sec: u32,
    /// Retries as a share of calls (default 0.2).
    pub percent: f32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            percent: 0.2,
        }
    }
}

/// The default policy: retry only attempts that never reached a server (connection refused
/// or failed, stream refused, a GOAWAY before it was processed), so the call did not run.
/// Timeouts, server errors, wrappers' refusals and connections that broke mid-call are not
/// retried, since a non-idempotent call may have run (go-micro v2 retried 500s; users filed
/// issues about duplicated side effects).
pub fn retry_not_sent(outcome: &Outcome) -> bool {
    outcome.origin == Origin::NotSent
}

/// The policy of idempotent endpoints: what [`retry_not_sent`] retries, plus Unavailable,
/// ResourceExhausted and Aborted answers and broken connections.
pub fn retry_idempotent(outcome: &Outcome) -> bool {
    match outcome.origin {
        Origin::NotSent | Origin::Broken => true,
        Origin::Answered => matches!(
            outcome.code,
            Code::Unavailable | Code::ResourceExhausted | Code::Aborted
        ),
        Origin::Local | Origin::Cancelled => false,
    }
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
    /// Marks this call idempotent (see [`Options::idempotent`]).
    pub idempotent: Option<bool>,
    /// Overrides the client's [`Options::attempt_timeout`] (idempotent calls only).
    pub attempt_timeout: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use tonic::Status;

    use super::*;

    #[test]
    fn backoff_is_go_micros() {
        let options = Options::default();
        let ms = |n| options.backoff_for(n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(5)],
            [0, 100, 600, 1900, 4300, 7900]
        );
        assert_eq!(options.backoff_for(13), Duration::from_millis(106_600));
        assert_eq!(options.backoff_for(14), Duration::from_secs(120));
        assert_eq!(options.backoff_for(u32::MAX), Duration::from_secs(120));
        let none = Options {
            backoff: Duration::ZERO,
            ..Options::default()
        };
        assert_eq!(none.backoff_for(3), Duration::ZERO);
    }

    #[test]
    fn only_attempts_that_never_ran_are_retried_by_default() {
        let outcome = |status: Status, origin| Outcome::from_status(&status, origin);
        let refused = outcome(Status::unavailable("refused"), Origin::NotSent);
        let answered = outcome(Status::unavailable("draining"), Origin::Answered);
        let broken = outcome(Status::unavailable("reset"), Origin::Broken);
        let local = outcome(Status::deadline_exceeded("slow"), Origin::Local);
        let exhausted = outcome(Status::resource_exhausted("429"), Origin::Answered);
        assert!(retry_not_sent(&refused));
        assert!(!retry_not_sent(&answered) && !retry_not_sent(&broken));
        assert!(!retry_not_sent(&local));
        assert!(retry_idempotent(&answered) && retry_idempotent(&broken));
        assert!(retry_idempotent(&exhausted) && !retry_idempotent(&local));
        let internal = outcome(Status::internal("bug"), Origin::Answered);
        assert!(!retry_idempotent(&internal));
        let options = Options {
            idempotent: vec!["Greeter.Test".into()],
            ..Options::default()
        };
        assert!(options.is_idempotent("Greeter.Test") && !options.is_idempotent("Greeter.Hello"));
    }
}
