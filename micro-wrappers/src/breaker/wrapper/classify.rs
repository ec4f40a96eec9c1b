//! What a breaker counts as a failure, read from the shared classifier's [`Outcome`].

use std::fmt;
use std::sync::Arc;

use micro_core::Outcome;
use tonic::Code;

/// A user's override: whether an outcome counts as a success (gobreaker's `IsSuccessful`).
pub(crate) type IsSuccessful = Arc<dyn Fn(&Outcome) -> bool + Send + Sync>;

/// How a breaker judges a call's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The dependency answered well (or with the caller's own error, a 4xx).
    Success,
    /// The dependency is sick.
    Failure,
    /// The call ran out of time (a failure; Hystrix counts it as a timeout).
    Timeout,
    /// The caller cancelled: counts as neither.
    Ignore,
}

/// Whether `outcome` is a failure by micro-rs's default rule.
///
/// With go-micro's JSON in the status, a failure is a code >= 500 or 408 (go-micro's plugin
/// counts only >= 500; a timeout is the commonest sign of a sick dependency, so micro-rs counts
/// it too). Without it, the gRPC code decides: `Unknown`, `DeadlineExceeded`, `Internal`,
/// `Unavailable`, `DataLoss`, and `Unimplemented` if `unimplemented_is_failure`. The caller's
/// own errors (a Go server's 429 arrives as `Unknown` with 429 in its JSON) are not failures.
///
/// ```
/// use micro_core::{Error, Origin, Outcome};
/// use micro_wrappers::breaker::wrapper::is_failure;
/// let go_429 = tonic::Status::unknown(Error::new("go.micro.server", 429, "slow down").to_string());
/// assert!(!is_failure(&Outcome::from_status(&go_429, Origin::Answered), false));
/// let plain = tonic::Status::unavailable("connection refused");
/// assert!(is_failure(&Outcome::from_status(&plain, Origin::NotSent), false));
/// ```
pub fn is_failure(outcome: &Outcome, unimplemented_is_failure: bool) -> bool {
    if outcome.is_success() || outcome.is_cancelled() {
        return false;
    }
    if outcome.json {
        let code = outcome.http_code();
        return code >= 500 || code == 408;
    }
    match outcome.code {
        Code::Unknown
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::Unimplemented => unimplemented_is_failure,
        _ => false,
    }
}

/// The breaker's judge: the default rule, or the user's `is_successful`.
#[derive(Clone, Default)]
pub(crate) struct Classifier {
    pub(crate) unimplemented_is_failure: bool,
    pub(crate) is_successful: Option<IsSuccessful>,
}

impl Classifier {
    /// The verdict on `outcome`; a cancelled call is always [`Verdict::Ignore`].
    #[inline]
    pub(crate) fn verdict(&self, outcome: &Outcome) -> Verdict {
        if outcome.is_cancelled() {
            return Verdict::Ignore;
        }
        let success = match &self.is_successful {
            Some(f) => f(outcome),
            None => !is_failure(outcome, self.unimplemented_is_failure),
        };
        if success {
            Verdict::Success
        } else if outcome.code == Code::DeadlineExceeded || outcome.http_code() == 408 {
            Verdict::Timeout
        } else {
            Verdict::Failure
        }
    }
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("unimplemented_is_failure", &self.unimplemented_is_failure)
            .field("is_successful", &self.is_successful.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use micro_core::{Error, Origin};
    use tonic::Status;

    use super::*;

    fn verdict(status: &Status) -> Verdict {
        Classifier::default().verdict(&Outcome::from_status(status, Origin::Answered))
    }

    #[test]
    fn the_table() {
        let json = |code| Error::new("go.micro.server", code, "x").to_status();
        assert_eq!(verdict(&Status::ok("")), Verdict::Success);
        assert_eq!(verdict(&json(400)), Verdict::Success);
        assert_eq!(verdict(&json(404)), Verdict::Success);
        assert_eq!(verdict(&json(429)), Verdict::Success);
        assert_eq!(verdict(&json(408)), Verdict::Timeout);
        assert_eq!(verdict(&json(500)), Verdict::Failure);
        assert_eq!(verdict(&json(502)), Verdict::Failure);
        assert_eq!(verdict(&json(503)), Verdict::Failure);
        let go_429 = Status::unknown(Error::new("go.micro.server", 429, "slow").to_string());
        assert_eq!(verdict(&go_429), Verdict::Success);
        assert_eq!(verdict(&Status::unknown("boom")), Verdict::Failure);
        assert_eq!(verdict(&Status::internal("boom")), Verdict::Failure);
        assert_eq!(verdict(&Status::unavailable("down")), Verdict::Failure);
        assert_eq!(verdict(&Status::data_loss("cut")), Verdict::Failure);
        assert_eq!(
            verdict(&Status::deadline_exceeded("late")),
            Verdict::Timeout
        );
        assert_eq!(verdict(&Status::not_found("no")), Verdict::Success);
        assert_eq!(verdict(&Status::invalid_argument("no")), Verdict::Success);
        assert_eq!(verdict(&Status::resource_exhausted("no")), Verdict::Success);
        assert_eq!(verdict(&Status::unimplemented("no")), Verdict::Success);
        let strict = Classifier {
            unimplemented_is_failure: true,
            ..Classifier::default()
        };
        let unimplemented = Outcome::from_status(&Status::unimplemented("no"), Origin::Answered);
        assert_eq!(strict.verdict(&unimplemented), Verdict::Failure);
        assert_eq!(
            Classifier::default().verdict(&Outcome::cancelled()),
            Verdict::Ignore
        );
    }

    #[test]
    fn is_successful_overrides() {
        let lenient = Classifier {
            is_successful: Some(Arc::new(|_| true)),
            ..Classifier::default()
        };
        let boom = Outcome::from_status(&Status::internal("boom"), Origin::Answered);
        assert_eq!(lenient.verdict(&boom), Verdict::Success);
        assert_eq!(lenient.verdict(&Outcome::cancelled()), Verdict::Ignore);
    }
}
