//! Handler, client and call wrappers.

use micro_core::Wrapper;

use super::Service;

impl Service {
    /// Wraps every handler call; the first wrapper added is the outermost.
    pub fn wrap_handler(mut self, wrapper: impl Wrapper) -> Self {
        self.server.wrap(wrapper);
        self
    }

    /// Wraps every client call, retries included; the first wrapper added is the outermost.
    /// Add client wrappers before the first [`Service::client`] call.
    pub fn wrap_client(mut self, wrapper: impl Wrapper) -> Self {
        self.configure_client("wrap_client", |builder| builder.wrap_client(wrapper));
        self
    }

    /// Wraps each attempt of a client call on one node.
    pub fn wrap_call(mut self, wrapper: impl Wrapper) -> Self {
        self.configure_client("wrap_call", |builder| builder.wrap_call(wrapper));
        self
    }
}
