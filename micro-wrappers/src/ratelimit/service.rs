//! The rate-limit service.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use micro_core::{BoxError, CallInfo, Error};
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::{Buckets, Config, Key, LimitEvent, Mode};

/// A service whose calls take a token first; see [`RateLimitLayer`](super::RateLimitLayer).
pub struct RateLimit<S> {
    inner: S,
    config: Arc<Config>,
    buckets: Arc<Buckets>,
}

// === impl RateLimit ===

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, config: Config, buckets: Arc<Buckets>) -> Self {
        RateLimit {
            inner,
            config: Arc::new(config),
            buckets,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for RateLimit<S> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            config: self.config.clone(),
            buckets: self.buckets.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("mode", &self.config.mode)
            .field("key", &self.config.key)
            .finish_non_exhaustive()
    }
}

/// How long a call may wait for its token: the time left before its deadline (`CallInfo`'s,
/// else the `grpc-timeout` or go-micro `timeout` header it carries), unbounded without one.
fn time_left<B>(request: &Request<B>) -> Duration {
    if let Some(deadline) = CallInfo::of(request).and_then(|info| info.deadline) {
        return deadline.remaining();
    }
    micro_core::timeout::from_headers(request.headers()).unwrap_or(Duration::MAX)
}

impl<S, B, ReqBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = ResponseFuture<S, S::Future, ReqBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let config = &self.config;
        let max_wait = match config.mode {
            Mode::Reject => Duration::ZERO,
            Mode::Wait => time_left(&request),
        };
        let taken = match (&*self.buckets, &config.key) {
            (Buckets::One(bucket), _) => bucket.take_max_duration(1, max_wait),
            (Buckets::Keyed(keyed), Key::Endpoint) => {
                let endpoint = CallInfo::of(&request)
                    .map(|info| info.endpoint.clone())
                    .unwrap_or_else(|| micro_core::endpoint_of(request.uri().path()).into());
                keyed
                    .get(endpoint.as_bytes())
                    .take_max_duration(1, max_wait)
            }
            (Buckets::Keyed(keyed), Key::Service) => {
                let service = CallInfo::of(&request).map_or("", |info| &info.service);
                keyed.get(service.as_bytes()).take_max_duration(1, max_wait)
            }
            (Buckets::Keyed(keyed), Key::Metadata(name)) => {
                let value = request
                    .headers()
                    .get(name)
                    .map_or(&b""[..], |v| v.as_bytes());
                keyed.get(value).take_max_duration(1, max_wait)
            }
            (Buckets::Keyed(keyed), Key::All) => keyed.get(b"").take_max_duration(1, max_wait),
        };
        let event = match taken {
            Some(Duration::ZERO) => LimitEvent::Admitted,
            Some(wait) => LimitEvent::Waited(wait),
            None => LimitEvent::Refused,
        };
        if let Some(observer) = &config.observer {
            let endpoint = CallInfo::of(&request).map_or("", |info| &info.endpoint);
            observer(endpoint, event);
        }
        match event {
            LimitEvent::Admitted => ResponseFuture::called(self.inner.call(request)),
            LimitEvent::Waited(wait) => {
                // The readied service goes with the waiting call; this one gets a fresh copy.
                let fresh = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, fresh);
                ResponseFuture::waiting(wait, ready, request)
            }
            LimitEvent::Refused => {
                let error = Error::too_many_requests(&*config.id, "too many request");
                ResponseFuture::refused(error.to_status())
            }
        }
    }
}
