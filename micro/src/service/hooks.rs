//! Lifecycle hooks, as go-micro's `BeforeStart`, `AfterStart`, `BeforeStop`, `AfterStop`.

use micro_core::BoxError;

use super::{Service, ServiceError};

/// A lifecycle hook, as go-micro's `BeforeStart`, `AfterStart`, `BeforeStop`, `AfterStop`.
pub(super) type Hook = Box<dyn FnMut() -> Result<(), BoxError> + Send>;

impl Service {
    /// Runs `hook` before the server starts.
    pub fn before_start(
        mut self,
        hook: impl FnMut() -> Result<(), BoxError> + Send + 'static,
    ) -> Self {
        self.before_start.push(Box::new(hook));
        self
    }

    /// Runs `hook` once the server is serving and registered. If it fails, the server is
    /// stopped as by [`Running::stop`](super::Running::stop) (NOT_SERVING, deregistered, drained; the stop hooks
    /// do not run) and [`Service::start`] returns the error.
    pub fn after_start(
        mut self,
        hook: impl FnMut() -> Result<(), BoxError> + Send + 'static,
    ) -> Self {
        self.after_start.push(Box::new(hook));
        self
    }

    /// Runs `hook` when shutdown begins, before deregistering.
    pub fn before_stop(
        mut self,
        hook: impl FnMut() -> Result<(), BoxError> + Send + 'static,
    ) -> Self {
        self.before_stop.push(Box::new(hook));
        self
    }

    /// Runs `hook` after in-flight calls drained.
    pub fn after_stop(
        mut self,
        hook: impl FnMut() -> Result<(), BoxError> + Send + 'static,
    ) -> Self {
        self.after_stop.push(Box::new(hook));
        self
    }
}

pub(super) fn run_hooks(stage: &'static str, hooks: &mut [Hook]) -> Result<(), ServiceError> {
    hooks
        .iter_mut()
        .try_for_each(|hook| hook().map_err(|source| ServiceError::Hook { stage, source }))
}
