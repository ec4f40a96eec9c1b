//! micro-rs: go-micro's ergonomics for Rust microservices on tokio and tonic.
