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

    /// Runs one call on a copy, returned to the pool once called. A copy that is ready now
    /// (the common case) is called here, so the future holds only the response's; one that
    /// would wait keeps the request, boxed, until it is ready.
    pub fn call(&self, request: Request<Body>) -> PoolCall {
        let mut copy = self.take();
        // Asked without a waker: one that is not ready is asked again, with the task's waker,
        // when the call is polled.
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let state = match copy.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {
                let response = copy.call(request);
                self.give(copy);
                State::Responding(response)
            }
            Poll::Ready(Err(refusal)) => State::Refused(refusal),
            Poll::Pending => State::Readying(Box::new(Readying {
                pool: self.clone(),
                copy,
                request,
            })),
        };
        PoolCall { state }
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.0.idle.lock().len()
    }
}

/// The future of [`StackPool::call`]: small, because it is part of every call's future on
/// both sides (a future past glibc's small-allocation cache, 1 KiB, made every server call
/// take malloc's slow path, and each byte of it is memory touched per call). Not tower's
/// `Oneshot`, which drops the service once called: this gives the copy back to the pool.
pub struct PoolCall {
    state: State,
}

enum State {
    /// The copy was not ready when called: it and the request, until it is.
    Readying(Box<Readying>),
    Responding(BoxFuture<'static, Result<Response<Body>, BoxError>>),
    /// A wrapper of the copy refused the call.
    Refused(BoxError),
    Done,
}

/// What a call whose copy was not ready keeps until it is: the copy goes back to `pool` once
/// called.
struct Readying {
    pool: StackPool,
    copy: BoxService,
    request: Request<Body>,
}

impl Future for PoolCall {
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Readying(readying) => {
                    if let Err(err) = ready!(readying.copy.poll_ready(cx)) {
                        this.state = State::Done;
                        return Poll::Ready(Err(err));
                    }
                    let State::Readying(readying) = std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("matched as Readying above")
                    };
                    let Readying {
                        pool,
                        mut copy,
                        request,
                    } = *readying;
                    let response = copy.call(request);
                    pool.give(copy);
                    this.state = State::Responding(response);
                }
                State::Responding(response) => {
                    let output = ready!(response.as_mut().poll(cx));
                    this.state = State::Done;
                    return Poll::Ready(output);
                }
                State::Refused(_) => {
                    let State::Refused(refusal) = std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("matched as Refused above")
                    };
                    return Poll::Ready(Err(refusal));
                }
                State::Done => panic!("PoolCall polled after it completed"),
            }
        }
    }
}

impl std::fmt::Debug for PoolCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Readying(_) => "readying",
            State::Responding(_) => "responding",
            State::Refused(_) => "refused",
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

    /// A stack that is not ready when called is called once it is, with the request it was
    /// given; a refusal is the call's answer.
    #[tokio::test]
    async fn a_busy_copy_is_called_once_ready_and_a_refusal_is_the_answer() {
        let copies = Arc::new(AtomicUsize::new(0));
        let limited = tower::ServiceBuilder::new()
            .concurrency_limit(1)
            .service(Counted(copies.clone()));
        let pool = StackPool::new(BoxService::new(limited));
        // A copy readied and held keeps the only permit: the next call must wait for it.
        let mut held = pool.take();
        std::future::poll_fn(|cx| held.poll_ready(cx))
            .await
            .unwrap();
        let mut call = pool.call(Request::new(Body::empty()));
        assert!(format!("{call:?}").contains("readying"));
        let waker = futures::task::noop_waker_ref();
        assert!(
            Pin::new(&mut call)
                .poll(&mut Context::from_waker(waker))
                .is_pending()
        );
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(5), call)
            .await
            .expect("the call went ahead once the permit was free")
            .unwrap();

        let refusing = tower::service_fn(|_: Request<Body>| async {
            Ok::<_, BoxError>(Response::new(Body::empty()))
        });
        let refusing = tower::ServiceBuilder::new()
            .layer(tower::layer::layer_fn(Refusing))
            .service(refusing);
        let pool = StackPool::new(BoxService::new(refusing));
        let err = pool.call(Request::new(Body::empty())).await.unwrap_err();
        assert_eq!(err.to_string(), "refused");
    }

    /// Refuses every call in `poll_ready`, as an open breaker does.
    #[derive(Clone)]
    struct Refusing<S>(S);

    impl<S: Service<Request<Body>>> Service<Request<Body>> for Refusing<S> {
        type Response = S::Response;
        type Error = BoxError;
        type Future = std::future::Ready<Result<S::Response, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err("refused".into()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            unreachable!("refused in poll_ready")
        }
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
