//! Test helpers for micro-rs: starts a real etcd on a free loopback port.
