//! The micro-rs server: hosts tonic services, registers them, wraps handlers, drains on shutdown.
