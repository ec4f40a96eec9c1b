//! One module per command.

pub(crate) mod call;
pub(crate) mod describe;
pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod services;
pub(crate) mod watch;
