//! The go-micro peer (`compare --foreign go-micro`): the go-micro greeter from `interop/`
//! (go-micro v5.30, etcd registry, gRPC server and client) as a `Hello` server answering by
//! itself, and as a greeter1 -> greeter2 chain, registered in the comparison's etcd and
//! loaded through discovery like micro-rs's rows.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use micro::registry::{Etcd, Registry};
use tokio::process::{Child, Command};

/// How long a go-micro process may take to register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// The go-micro version the Go module in `interop/` builds against.
pub const VERSION: &str = "go-micro.dev/v5 v5.30.0";

/// Service names of the go-micro peers.
pub const GREETER: &str = "go-greeter";
/// The chain's entry.
pub const GREETER1: &str = "go-greeter1";
/// The chain's second hop.
pub const GREETER2: &str = "go-greeter2";

/// Where the go-micro binaries are: `$MICRO_INTEROP_BIN`, else `target/interop` (where
/// `scripts/test` builds them).
pub fn default_bin_dir() -> PathBuf {
    std::env::var_os("MICRO_INTEROP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/interop"))
}

/// One go-micro greeter process.
#[derive(Debug)]
pub struct GoProcess {
    child: Child,
    /// Its pid.
    pub pid: u32,
    /// The service it registered.
    pub service: &'static str,
}

impl GoProcess {
    /// Stops it with SIGTERM (go-micro deregisters and drains), killing it after 10 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
            bail!("go-micro {} did not stop in 10 s: killed", self.service);
        }
        Ok(())
    }
}

/// The three go-micro processes of the comparison.
#[derive(Debug)]
pub struct Peers {
    /// `Hello` answering by itself.
    pub greeter: GoProcess,
    /// The chain's entry: `Hello` calls go-greeter2's `Test` through go-micro's client.
    pub greeter1: GoProcess,
    /// The chain's second hop: `Test` without sleep.
    pub greeter2: GoProcess,
}

impl Peers {
    /// Starts the peers from `dir` against `etcd`, on `cpus` (a `taskset -c` list) if given,
    /// and waits until each is registered.
    pub async fn start(dir: &Path, etcd: &str, cpus: Option<&str>) -> anyhow::Result<Peers> {
        let binary = dir.join("greeter");
        if !binary.is_file() {
            bail!(
                "no go-micro greeter at {}: build it with `cd interop && go build -o \
                 ../target/interop/ ./cmd/...` (Go 1.24+), or set MICRO_INTEROP_BIN",
                binary.display()
            );
        }
        let registry = Etcd::new([etcd.to_owned()]);
        let greeter = spawn(
            &binary,
            etcd,
            GREETER,
            cpus,
            &[("INTEROP_HELLO_SELF", "true")],
        )?;
        let greeter2 = spawn(
            &binary,
            etcd,
            GREETER2,
            cpus,
            &[("INTEROP_TEST_SLEEP", "0")],
        )?;
        let greeter1 = spawn(&binary, etcd, GREETER1, cpus, &[("INTEROP_CALL", GREETER2)])?;
        for process in [&greeter, &greeter1, &greeter2] {
            registered(&registry, process.service).await?;
        }
        Ok(Peers {
            greeter,
            greeter1,
            greeter2,
        })
    }

    /// Stops all three.
    pub async fn stop(self) -> anyhow::Result<()> {
        let results = [
            self.greeter.stop().await,
            self.greeter1.stop().await,
            self.greeter2.stop().await,
        ];
        results.into_iter().collect()
    }
}

fn spawn(
    binary: &Path,
    etcd: &str,
    service: &'static str,
    cpus: Option<&str>,
    extra: &[(&str, &str)],
) -> anyhow::Result<GoProcess> {
    let mut command = match cpus {
        Some(cpus) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpus).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command
        .env("MICRO_REGISTRY", "etcd")
        .env("MICRO_REGISTRY_ADDRESS", etcd)
        .env("MICRO_SERVER_NAME", service)
        .env(
            "MICRO_SERVER_ADDRESS",
            // go-micro is always given `127.0.0.1:PORT`, or it advertises a non-loopback
            // interface address.
            format!("127.0.0.1:{}", micro_test_support::free_port()?),
        )
        .env("MICRO_BROKER_ADDRESS", "127.0.0.1:0")
        .env("MICRO_REGISTER_TTL", "10")
        .env("MICRO_REGISTER_INTERVAL", "5")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (key, value) in extra {
        command.env(key, value);
    }
    let child = command
        .spawn()
        .with_context(|| format!("spawning {}", binary.display()))?;
    let pid = child.id().context("go-micro greeter exited at once")?;
    Ok(GoProcess {
        child,
        pid,
        service,
    })
}

async fn registered(registry: &Etcd, service: &str) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < REGISTER_TIMEOUT {
        if registry
            .get_service(service)
            .await
            .is_ok_and(|services| services.iter().any(|s| !s.nodes.is_empty()))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("go-micro {service} did not register within {REGISTER_TIMEOUT:?}")
}
