//! The micro-rs client: discovery-backed selector, channel pool, retries and wrapper stacks.
