//! Which CPUs the servers and the load generator run on.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::process::Command;

/// Which CPUs the servers and the load generator run on (`taskset -c` lists).
///
/// Unpinned, the two processes share every core and throughput follows how their threads
/// happen to interleave; pinned, each side has its own cores, as a client and a server on two
/// machines would, and run-to-run spread is much smaller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// CPUs of every server process.
    pub servers: String,
    /// CPUs of every load process.
    pub load: String,
}

impl Pin {
    /// The servers on the first half of this machine's CPUs, the load generator on the rest.
    pub fn halves() -> anyhow::Result<Pin> {
        let cpus = std::thread::available_parallelism()
            .context("counting CPUs")?
            .get();
        anyhow::ensure!(
            cpus >= 2,
            "pinning needs at least 2 CPUs, this machine has {cpus}"
        );
        let taskset = std::process::Command::new("taskset")
            .arg("--version")
            .output()
            .context("running taskset (util-linux)")?;
        anyhow::ensure!(taskset.status.success(), "taskset --version failed");
        let list = |range: std::ops::Range<usize>| {
            range.map(|c| c.to_string()).collect::<Vec<_>>().join(",")
        };
        Ok(Pin {
            servers: list(0..cpus / 2),
            load: list(cpus / 2..cpus),
        })
    }
}
/// A command running `bin`, on `cpus` (through `taskset`, which execs it: same pid) if given.
pub(super) fn command(bin: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpus).arg(bin);
            command
        }
        None => Command::new(bin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_splits_the_cpus_in_two() {
        let Ok(pin) = Pin::halves() else {
            return; // one CPU: nothing to split
        };
        let cpus = std::thread::available_parallelism().unwrap().get();
        let mut all: Vec<usize> = [&pin.servers, &pin.load]
            .iter()
            .flat_map(|list| list.split(',').map(|c| c.parse::<usize>().unwrap()))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..cpus).collect::<Vec<_>>());
        assert!(!pin.servers.is_empty() && !pin.load.is_empty());
    }
}
