//! Breakers, rate limiting, tracing and metrics for micro-rs, as tower layers.
