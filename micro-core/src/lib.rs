//! Shared vocabulary of micro-rs.
//!
//! What the client, the server and every wrapper agree on: go-micro's error model
//! ([`Error`], carried in a gRPC status), the [`CallInfo`] each wrapper reads from a request,
//! the [`CallContext`] of an incoming call (its deadline and metadata), which calls made
//! while handling it inherit, and the [`Outcome`] classifier that says how a call ended.

mod call;
mod context;
mod error;
mod observer;
pub mod outcome;
mod stack_pool;
pub mod timeout;
pub mod tls;
mod wrapper;

pub use call::{CallInfo, EndpointCache, NodeInfo, endpoint_of, split_grpc_path};
pub use context::{CallContext, Deadline, TraceParent, is_propagated};
pub use error::{Error, grpc_to_http, http_to_grpc};
pub use observer::{Observer, add_observer};
pub use outcome::{Origin, Outcome};
pub use stack_pool::{PoolCall, StackPool};
pub use wrapper::{BoxService, Wrapper, stack};

/// The error type passed between tower layers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
