//! The three algorithms behind one small interface: ask, then report a verdict.

use std::sync::Arc;
use std::time::Duration;

use micro_core::Outcome;

use super::classify::Verdict;
use crate::breaker::adaptive::{AdaptiveBreaker, AdaptiveDone, AdaptiveSettings};
use crate::breaker::gobreaker::{BreakerError, Done};
use crate::breaker::hystrix::{self, HystrixCircuit, HystrixConfig, Rejected, Ticket};
use crate::breaker::{CircuitBreaker, Event, Observer, Settings, State};
use crate::clock::Clock;

/// The clock the wrappers' breakers read.
pub(crate) type SharedClock = Arc<dyn Clock>;

/// A state-change callback, `(name, from, to)`.
pub(crate) type OnStateChange = Arc<dyn Fn(&str, State, State) + Send + Sync>;

/// Hystrix's settings in a wrapper.
#[derive(Clone, Debug)]
pub(crate) struct HystrixSettings {
    pub(crate) config: HystrixConfig,
    /// The command timeout the wrapper enforces; `None`: the call's own deadline.
    pub(crate) timeout: Option<Duration>,
}

/// Which algorithm a wrapper runs, with the settings every breaker of it starts from.
#[derive(Clone)]
pub(crate) enum Algorithm {
    Gobreaker(Settings<Outcome>),
    Hystrix(HystrixSettings),
    Adaptive(AdaptiveSettings),
}

impl Algorithm {
    /// A new breaker named `name`, reporting its events to `observer` (after any observer its
    /// settings had).
    pub(crate) fn build(&self, name: String, clock: SharedClock, observer: Observer) -> Circuit {
        match self {
            Algorithm::Gobreaker(settings) => {
                let mut settings = settings.named(name);
                let (_, prior) = settings.take_hooks();
                settings.set_on_event(chain(observer, prior));
                Circuit::Gobreaker(CircuitBreaker::with_clock(settings, clock))
            }
            Algorithm::Hystrix(settings) => {
                let circuit = HystrixCircuit::with_clock(name, settings.config, clock);
                Circuit::Hystrix(
                    circuit.on_event(move |name, event| observer(name, event)),
                    settings.timeout,
                )
            }
            Algorithm::Adaptive(settings) => {
                let mut settings = settings.named(name);
                let prior = settings.replace_on_event(observer.clone());
                settings.replace_on_event(chain(observer, prior));
                match AdaptiveBreaker::with_clock(settings, clock) {
                    Ok(breaker) => Circuit::Adaptive(breaker),
                    // Validated when the layer was built; unreachable, but never a panic.
                    Err(err) => {
                        tracing::error!(%err, "adaptive breaker settings rejected");
                        Circuit::Disabled
                    }
                }
            }
        }
    }
}

fn chain(first: Observer, then: Option<Observer>) -> Observer {
    match then {
        None => first,
        Some(then) => Arc::new(move |name, event| {
            first(name, event);
            then(name, event);
        }),
    }
}

/// One breaker of a wrapper.
pub(crate) enum Circuit {
    Gobreaker(CircuitBreaker<Outcome, SharedClock>),
    Hystrix(HystrixCircuit<SharedClock>, Option<Duration>),
    Adaptive(AdaptiveBreaker<SharedClock>),
    /// Never refuses (settings that could not build a breaker; logged).
    Disabled,
}

/// The permission one call holds, released with its verdict (or dropped: cancelled).
pub enum Guard {
    /// gobreaker's.
    Gobreaker(Done<SharedClock>),
    /// Hystrix's concurrency ticket.
    Hystrix(Ticket<SharedClock>),
    /// The adaptive breaker's.
    Adaptive(AdaptiveDone<SharedClock>),
    /// Nothing to report.
    None,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Guard::Gobreaker(_) => "gobreaker",
            Guard::Hystrix(_) => "hystrix",
            Guard::Adaptive(_) => "adaptive",
            Guard::None => "none",
        };
        f.debug_tuple("Guard").field(&kind).finish()
    }
}

impl Guard {
    /// Reports how the call ended.
    #[inline]
    pub(crate) fn finish(self, verdict: Verdict) {
        match (self, verdict) {
            // Dropping a guard is the cancellation.
            (_, Verdict::Ignore) | (Guard::None, _) => {}
            (Guard::Gobreaker(done), verdict) => done.done(verdict == Verdict::Success),
            (Guard::Hystrix(ticket), verdict) => ticket.report(match verdict {
                Verdict::Success => hystrix::Outcome::Success,
                Verdict::Timeout => hystrix::Outcome::Timeout,
                _ => hystrix::Outcome::Failure,
            }),
            (Guard::Adaptive(done), verdict) => done.done(verdict == Verdict::Success),
        }
    }
}

impl Circuit {
    /// Asks to run one call; on refusal, the algorithm's message (go-micro's detail).
    #[inline]
    pub(crate) fn acquire(&self) -> Result<Guard, &'static str> {
        match self {
            Circuit::Gobreaker(cb) => cb.allow().map(Guard::Gobreaker).map_err(|e| match e {
                BreakerError::Open => "circuit breaker is open",
                BreakerError::TooManyRequests => "too many requests",
            }),
            Circuit::Hystrix(circuit, _) => {
                circuit
                    .allow()
                    .map(Guard::Hystrix)
                    .map_err(|rejected| match rejected {
                        Rejected::CircuitOpen => "hystrix: circuit open",
                        Rejected::MaxConcurrency => "hystrix: max concurrency",
                    })
            }
            Circuit::Adaptive(breaker) => breaker
                .allow()
                .map(Guard::Adaptive)
                .map_err(|_| "circuit breaker is open"),
            Circuit::Disabled => Ok(Guard::None),
        }
    }

    /// The command timeout this breaker enforces (Hystrix only).
    #[inline]
    pub(crate) fn timeout(&self) -> Option<Duration> {
        match self {
            Circuit::Hystrix(_, timeout) => *timeout,
            _ => None,
        }
    }

    /// The breaker's state (Hystrix: open or closed; adaptive: always closed).
    pub(crate) fn state(&self) -> State {
        match self {
            Circuit::Gobreaker(cb) => cb.state(),
            Circuit::Hystrix(circuit, _) => circuit.state(),
            Circuit::Adaptive(_) | Circuit::Disabled => State::Closed,
        }
    }

    /// The adaptive breaker's drop ratio (0 for the others).
    pub(crate) fn drop_ratio(&self) -> f64 {
        match self {
            Circuit::Adaptive(breaker) => breaker.drop_ratio(),
            _ => 0.0,
        }
    }
}

/// The observer every breaker of a wrapper reports to: a WARN log on each state change, then
/// the user's `on_state_change` and `on_event`.
pub(crate) fn observer(
    on_state_change: Option<OnStateChange>,
    on_event: Option<Observer>,
) -> Observer {
    Arc::new(move |name: &str, event: Event| {
        if let Event::StateChange { from, to } = event {
            tracing::warn!(breaker = name, %from, %to, "circuit breaker {name}: {from} -> {to}");
            if let Some(f) = &on_state_change {
                f(name, from, to);
            }
        }
        if let Some(f) = &on_event {
            f(name, event);
        }
    })
}
