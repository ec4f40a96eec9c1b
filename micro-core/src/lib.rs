//! Shared vocabulary of micro-rs: go-micro's error model, call metadata and CallInfo.
