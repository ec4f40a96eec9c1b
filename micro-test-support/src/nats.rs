//! A real NATS server (Debian's `nats-server`) on a free `127.0.0.1` port, for the broker
//! tests; modelled on [`crate::EtcdServer`].

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;
use tokio::io::AsyncReadExt as _;

use crate::free_port;

/// How long [`NatsServer`] waits for NATS to serve after starting it.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A real `nats-server` process on a free `127.0.0.1` port (core NATS, no JetStream), with its
/// log in a temporary directory. Killed when dropped.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    root: TempDir,
    generation: u32,
    child: Option<Child>,
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("address", &self.address())
            .field("running", &self.child.is_some())
            .finish()
    }
}

impl NatsServer {
    /// Starts `nats-server` (on `PATH` or `/usr/sbin/nats-server`) and waits until it serves.
    /// A port taken between [`free_port`] and the bind starts it again on another, at most
    /// three times.
    pub async fn start() -> anyhow::Result<Self> {
        let binary = find_nats()
            .ok_or_else(|| anyhow!("nats-server not found: apt-get install nats-server"))?;
        let mut attempt = 1;
        loop {
            let root = tempfile::Builder::new()
                .prefix("micro-nats-")
                .tempdir()
                .context("creating nats temp dir")?;
            let mut server = NatsServer {
                binary: binary.clone(),
                port: free_port()?,
                root,
                generation: 0,
                child: None,
            };
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    tracing::warn!(attempt, "a test nats port was taken, starting on another");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `127.0.0.1:PORT`, as `--broker_address` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.address())
    }

    /// Kills NATS with SIGKILL, as a crash would.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("killing nats-server")?;
            tokio::task::spawn_blocking(move || child.wait())
                .await
                .context("joining nats wait")?
                .context("waiting for nats-server to exit")?;
        }
        Ok(())
    }

    /// Starts NATS again on the same port (stops it first if it runs).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.generation += 1;
        self.spawn_and_wait().await
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let log_path = self
            .root
            .path()
            .join(format!("nats-{}.log", self.generation));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cloning log file")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        if let Err(e) = self.wait_serving().await {
            let _ = self.stop().await;
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "nats-server did not start: {e:#}\n--- log ({}) ---\n{log}",
                log_path.display()
            );
        }
        Ok(())
    }

    async fn wait_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut last_error = anyhow!("not tried");
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("polling nats-server")?
            {
                self.child = None;
                bail!("nats-server exited with {status}");
            }
            match tokio::net::TcpStream::connect(addr).await {
                // A serving NATS greets every connection with INFO.
                Ok(mut stream) => {
                    let mut greeting = [0u8; 4];
                    match tokio::time::timeout(
                        Duration::from_secs(1),
                        stream.read_exact(&mut greeting),
                    )
                    .await
                    {
                        Ok(Ok(_)) if &greeting == b"INFO" => return Ok(()),
                        Ok(Ok(_)) => last_error = anyhow!("no INFO greeting"),
                        Ok(Err(e)) => last_error = e.into(),
                        Err(_) => last_error = anyhow!("no greeting within 1 s"),
                    }
                }
                Err(e) => last_error = e.into(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last_error.context(format!("not serving after {START_TIMEOUT:?}")))
    }
}

fn find_nats() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nats-server"))
                .find(|candidate| crate::is_executable(candidate))
        })
        .or_else(|| {
            let fallback = PathBuf::from("/usr/sbin/nats-server");
            crate::is_executable(&fallback).then_some(fallback)
        })
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a subscriber's handler sees of the message's call context: its `x-user` metadata and
/// its trace position, `(trace id, span id)` (`None`s outside a call).
pub fn user_and_trace() -> (Option<String>, Option<(u128, u64)>) {
    micro::CallContext::with_current(|context| {
        let user = context
            .metadata
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let trace = context.trace().map(|t| (t.trace_id, t.span_id));
        (user, trace)
    })
    .unwrap_or_default()
}
