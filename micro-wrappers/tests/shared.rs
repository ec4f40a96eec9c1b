//! Every algorithm can be shared between tasks and threads.
#![allow(missing_docs)]

use micro_wrappers::BoxError;
use micro_wrappers::breaker::adaptive::AdaptiveBreaker;
use micro_wrappers::breaker::gobreaker::Done;
use micro_wrappers::breaker::hystrix::Ticket;
use micro_wrappers::breaker::{CircuitBreaker, HystrixCircuit};
use micro_wrappers::clock::{ManualClock, SystemClock};
use micro_wrappers::ratelimit::Bucket;

fn send_sync<T: Send + Sync>() {}

#[test]
fn algorithms_are_send_and_sync() {
    send_sync::<CircuitBreaker<BoxError>>();
    send_sync::<CircuitBreaker<std::io::Error, ManualClock>>();
    send_sync::<HystrixCircuit>();
    send_sync::<HystrixCircuit<ManualClock>>();
    send_sync::<AdaptiveBreaker>();
    send_sync::<AdaptiveBreaker<ManualClock>>();
    send_sync::<Bucket>();
    send_sync::<Bucket<ManualClock>>();
    send_sync::<SystemClock>();
    send_sync::<ManualClock>();
    send_sync::<Done>();
    send_sync::<Done<ManualClock>>();
    send_sync::<Ticket>();
    send_sync::<micro_wrappers::breaker::adaptive::AdaptiveDone>();
}
