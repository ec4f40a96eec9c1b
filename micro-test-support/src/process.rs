//! Processes a test starts: a micro-rs example binary (or go-micro's greeter) with its
//! `MICRO_*` environment on a test etcd, signals, and a frozen process that is let go on drop.

use std::{ffi::OsStr, process::Stdio};

use tokio::process::{Child, Command};

use crate::EtcdServer;

/// The registration TTL (seconds) a [`MicroProcess`] is given unless told otherwise.
pub const REGISTER_TTL: u64 = 2;
/// The re-registration interval (seconds) a [`MicroProcess`] is given unless told otherwise.
pub const REGISTER_INTERVAL: u64 = 1;

/// A binary to start on a test etcd with go-micro's environment: `MICRO_REGISTRY=etcd`, the
/// etcd's address, a [`REGISTER_TTL`] / [`REGISTER_INTERVAL`] registration, the server on
/// `127.0.0.1:0`, `RUST_LOG=warn`; stdin and stdout closed, killed when its [`Child`] drops.
/// Later settings override earlier ones.
#[derive(Debug)]
pub struct MicroProcess {
    command: Command,
}

impl MicroProcess {
    /// `binary` (e.g. `env!("CARGO_BIN_EXE_greeter2")`) registering in `etcd`.
    pub fn on(binary: impl AsRef<OsStr>, etcd: &EtcdServer) -> Self {
        let mut command = Command::new(binary);
        command
            .env("MICRO_REGISTRY", "etcd")
            .env("MICRO_REGISTRY_ADDRESS", etcd.endpoint())
            .env("MICRO_REGISTER_TTL", REGISTER_TTL.to_string())
            .env("MICRO_REGISTER_INTERVAL", REGISTER_INTERVAL.to_string())
            .env("MICRO_SERVER_ADDRESS", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        MicroProcess { command }
    }

    /// Registers with this TTL and renews at this interval (seconds).
    pub fn register(self, ttl: u64, interval: u64) -> Self {
        self.env("MICRO_REGISTER_TTL", ttl.to_string())
            .env("MICRO_REGISTER_INTERVAL", interval.to_string())
    }

    /// The node id (`MICRO_SERVER_ID`).
    pub fn id(self, id: &str) -> Self {
        self.env("MICRO_SERVER_ID", id)
    }

    /// The gRPC address (`MICRO_SERVER_ADDRESS`; default `127.0.0.1:0`).
    pub fn address(self, address: &str) -> Self {
        self.env("MICRO_SERVER_ADDRESS", address)
    }

    /// One more variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// More variables, in order.
    pub fn envs<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.command.envs(vars);
        self
    }

    /// Closes stderr too (go-micro logs every registration there).
    pub fn quiet(mut self) -> Self {
        self.command.stderr(Stdio::null());
        self
    }

    /// Starts it. A binary that cannot be started fails the test, naming it.
    #[track_caller]
    pub fn spawn(mut self) -> Child {
        match self.command.spawn() {
            Ok(child) => child,
            Err(e) => panic!("starting {:?}: {e}", self.command.as_std().get_program()),
        }
    }
}

/// Sends `signal` (`TERM`, `STOP`, `CONT`, `KILL`) to process `pid` with the shell's `kill`
/// (no procps needed); whether it was delivered.
pub fn signal(pid: u32, signal: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{signal} {pid}"))
        .status()
        .is_ok_and(|s| s.success())
}

/// SIGTERM to a running child (a graceful stop); fails the test when it cannot be sent.
#[track_caller]
pub fn sigterm(child: &Child) {
    let pid = child.id().expect("the process is running");
    assert!(signal(pid, "TERM"), "SIGTERM {pid}");
}

/// A process frozen with SIGSTOP: continued and killed when dropped, panics included.
#[derive(Debug)]
pub struct Frozen(u32);

impl Frozen {
    /// Freezes `child`; fails the test when it cannot.
    #[track_caller]
    pub fn freeze(child: &Child) -> Frozen {
        let pid = child.id().expect("the process is running");
        assert!(signal(pid, "STOP"), "SIGSTOP {pid}");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "CONT");
        signal(self.0, "KILL");
    }
}
