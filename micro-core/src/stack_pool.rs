//! Copies of a wrapper stack, reused from call to call.
//!
//! A tower service handles one call at a time (`poll_ready`, then `call`), so concurrent calls
//! each need their own copy of the stack. Copying a stack of boxed layers allocates once per
//! layer; a copy is free again as soon as its `call` has returned the response future, so the
//! pool hands it to the next call instead.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use futures::future::BoxFuture;
use http::{Request, Response};
use parking_lot::Mutex;
use tonic::body::Body;
use tower::Service;

use crate::{BoxError, BoxService};

/// The most idle copies kept; more are dropped when returned.
const MAX_IDLE: usize = 64;

/// Copies of one stack. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct StackPool(Arc<Inner>);

struct Inner {
    template: BoxService,
    idle: Mutex<Vec<BoxService>>,
}

impl StackPool {
    /// A pool of copies of `stack`.
    pub fn new(stack: BoxService) -> Self {
        StackPool(Arc::new(Inner {
            template: stack,
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// An idle copy, or a new one.
    pub fn take(&self) -> BoxService {
        let idle = self.0.idle.lock().pop();
        idle.unwrap_or_else(|| self.0.template.clone())
    }

    /// Returns a copy that has no call in progress (its last `call` has returned). A copy that
    /// was made ready but not called must be dropped instead: it may hold a reservation.
    pub fn give(&self, copy: BoxService) {
        let mut idle = self.0.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(copy);
        }
    }

    /// Runs one call on a copy: waits until it is ready, calls it, returns it to the pool, then
    /// awaits the response.
    pub fn call(&self, request: Request<Body>) -> PoolCall {
        PoolCall {
            pool: self.clone(),
            state: State::Readying {
                copy: self.take(),
                request,
            },
        }
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.0.idle.lock().len()
    }
}

/// The future of [`StackPool::call`]. Written out rather than `async` so that it holds the
/// request once: it is part of every call's future on both sides, and a future past glibc's
/// small-allocation cache (1 KiB) made every server call take malloc's slow path. Not tower's
/// `Oneshot`, which drops the service once called: this gives the copy back to the pool.
pub struct PoolCall {
    pool: StackPool,
    state: State,
}

#[expect(
    clippy::large_enum_variant,
    reason = "the states follow each other in one future; boxing the request would allocate per call"
)]
enum State {
    Readying {
        copy: BoxService,
        request: Request<Body>,
    },
    Responding(BoxFuture<'static, Result<Response<Body>, BoxError>>),
    Done,
}

impl Future for PoolCall {
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Readying { copy, .. } => {
                    if let Err(err) = ready!(copy.poll_ready(cx)) {
                        this.state = State::Done;
                        return Poll::Ready(Err(err));
                    }
                    let State::Readying { mut copy, request } =
                        std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("matched as Readying above")
                    };
                    let response = copy.call(request);
                    this.pool.give(copy);
                    this.state = State::Responding(response);
                }
                State::Responding(response) => {
                    let output = ready!(response.as_mut().poll(cx));
                    this.state = State::Done;
                    return Poll::Ready(output);
                }
                State::Done => panic!("PoolCall polled after it completed"),
            }
        }
    }
}

impl std::fmt::Debug for PoolCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Readying { .. } => "readying",
            State::Responding(_) => "responding",
            State::Done => "done",
        };
        f.debug_struct("PoolCall").field("state", &state).finish()
    }
}

impl std::fmt::Debug for StackPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackPool")
            .field("idle", &self.0.idle.lock().len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the copies made of it.
    struct Counted(Arc<AtomicUsize>);

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.0.fetch_add(1, Ordering::Relaxed);
            Counted(self.0.clone())
        }
    }

    impl Service<Request<Body>> for Counted {
        type Response = Response<Body>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Response<Body>, BoxError>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            std::future::ready(Ok(Response::new(Body::empty())))
        }
    }

    #[tokio::test]
    async fn sequential_calls_reuse_one_copy() {
        let copies = Arc::new(AtomicUsize::new(0));
        let pool = StackPool::new(BoxService::new(Counted(copies.clone())));
        for _ in 0..10 {
            pool.call(Request::new(Body::empty())).await.unwrap();
        }
        assert_eq!(copies.load(Ordering::Relaxed), 1);
        assert_eq!(pool.idle(), 1);
    }

    #[tokio::test]
    async fn concurrent_copies_are_kept_up_to_the_limit() {
        let copies = Arc::new(AtomicUsize::new(0));
        let pool = StackPool::new(BoxService::new(Counted(copies.clone())));
        let taken: Vec<_> = (0..MAX_IDLE + 5).map(|_| pool.take()).collect();
        assert_eq!(copies.load(Ordering::Relaxed), MAX_IDLE + 5);
        taken.into_iter().for_each(|copy| pool.give(copy));
        assert_eq!(pool.idle(), MAX_IDLE);
    }
}
