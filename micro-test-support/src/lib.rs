//! Test helpers for micro-rs, each written once: a real etcd on a free loopback port
//! ([`EtcdServer`]), a poll loop ([`eventually`], [`Poll`]), example binaries started with
//! their `MICRO_*` environment ([`MicroProcess`]), the greeters as tests use them ([`greeter`]),
//! real observability peers ([`peers`]), a real NATS server ([`NatsServer`]), a missing peer
//! failing the test ([`mod@require`]), and a test-only server-streaming service ([`ticker`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut etcd = micro_test_support::EtcdServer::start().await?;
//! let endpoint = etcd.endpoint(); // "127.0.0.1:PORT"
//! etcd.stop().await?; // SIGKILL, data kept
//! etcd.start_again().await?; // same ports, same data
//! etcd.wipe_and_start().await?; // same ports, empty data
//! # Ok(()) }
//! ```

pub mod certs;
pub mod greeter;
pub mod nats;
pub mod peers;
pub mod process;
pub mod require;
pub mod wait;

pub use greeter::{
    Answer, Backend, client_on, concurrently, greeter_at, greeter2, key_exists, next_event,
    node_address, node_of, python_greeter_stubs, served_by, test_call,
};
pub use nats::{NatsServer, user_and_trace};
pub use process::{Frozen, MicroProcess, REGISTER_INTERVAL, REGISTER_TTL, signal, sigterm};
pub use require::require;
pub use wait::{Poll, eventually, poll};

use std::{
    fs::File,
    io::Write,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub mod ticker;

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::EnvFilter;

/// How long [`EtcdServer`] waits for etcd to serve after starting it.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A real etcd process on free `127.0.0.1` ports (client and peer), with its own temporary data
/// directory. The process is killed when this value is dropped.
pub struct EtcdServer {
    binary: PathBuf,
    client_port: u16,
    peer_port: u16,
    root: TempDir,
    data_dir: PathBuf,
    generation: u32,
    child: Option<Child>,
    tls: Option<EtcdTls>,
}

/// The certificates of an etcd started with [`EtcdServer::start_tls`]: its CA, its server
/// certificate, and a client certificate it accepts (`--client-cert-auth`).
#[derive(Debug)]
pub struct EtcdTls {
    /// The CA (its bundle is `pki.ca`); sign more certificates with it.
    pub pki: certs::Pki,
    /// etcd's server certificate (for `127.0.0.1`).
    pub server: certs::Pair,
    /// A client certificate etcd accepts.
    pub client: certs::Pair,
}

impl EtcdTls {
    /// The registry's TLS settings for a client of this etcd.
    pub fn registry(&self) -> micro::registry::EtcdTls {
        micro::registry::EtcdTls::new(&self.pki.ca).identity(&self.client.cert, &self.client.key)
    }
}

impl std::fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdServer")
            .field("endpoint", &self.endpoint())
            .field("peer_port", &self.peer_port)
            .field("data_dir", &self.data_dir)
            .field("running", &self.child.is_some())
            .finish()
    }
}

impl EtcdServer {
    /// Starts etcd (found on `PATH` or at `/usr/bin/etcd`) and waits until it serves. A port
    /// taken between [`free_port`] and etcd's bind (another test's process took it) is no
    /// failure of the test: etcd is started again on new ports, at most three times.
    pub async fn start() -> anyhow::Result<Self> {
        EtcdServer::start_with(None).await
    }

    /// Starts etcd serving TLS only, requiring a client certificate signed by its own test CA
    /// (`--cert-file --key-file --client-cert-auth --trusted-ca-file`); see [`EtcdServer::tls`].
    pub async fn start_tls() -> anyhow::Result<Self> {
        let pki = certs::Pki::named("etcd test CA")?;
        let server = pki.server("etcd")?;
        let client = pki.client("micro")?;
        EtcdServer::start_with(Some(EtcdTls {
            pki,
            server,
            client,
        }))
        .await
    }

    /// The certificates of a TLS etcd.
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    async fn start_with(mut tls: Option<EtcdTls>) -> anyhow::Result<Self> {
        let binary = find_etcd()?;
        let mut attempt = 1;
        loop {
            let client_port = free_port()?;
            let mut peer_port = free_port()?;
            while peer_port == client_port {
                peer_port = free_port()?;
            }
            let root = tempfile::Builder::new()
                .prefix("micro-etcd-")
                .tempdir()
                .context("creating etcd temp dir")?;
            let data_dir = root.path().join("data-0");
            let mut server = EtcdServer {
                binary: binary.clone(),
                client_port,
                peer_port,
                root,
                data_dir,
                generation: 0,
                child: None,
                tls: tls.take(),
            };
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    tracing::warn!(
                        attempt,
                        "a test etcd's port was taken, starting it on others"
                    );
                    attempt += 1;
                    tls = server.tls.take();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Connects a raw etcd client to this server (for tests that read or write keys directly).
    pub async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.registry().options()?);
        }
        etcd_client::Client::connect([self.endpoint()], Some(options))
            .await
            .context("connecting to test etcd")
    }

    /// Kills etcd with SIGKILL (as a crash would) and keeps its data directory.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("killing etcd")?;
            tokio::task::spawn_blocking(move || child.wait())
                .await
                .context("joining etcd wait")?
                .context("waiting for etcd to exit")?;
        }
        Ok(())
    }

    /// Starts etcd again on the same ports with the same data directory (stops it first if it
    /// is running).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn_and_wait().await
    }

    /// Stops etcd, and starts it again on the same ports with a new, empty data directory: every
    /// key and lease is gone.
    pub async fn wipe_and_start(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let old = std::mem::replace(
            &mut self.data_dir,
            self.root
                .path()
                .join(format!("data-{}", self.generation + 1)),
        );
        self.generation += 1;
        let _ = std::fs::remove_dir_all(&old);
        self.spawn_and_wait().await
    }

    fn log_path(&self) -> PathBuf {
        self.root
            .path()
            .join(format!("etcd-{}.log", self.generation))
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log_path = self.log_path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut command = Command::new(&self.binary);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server.cert)
                .arg("--key-file")
                .arg(&tls.server.key)
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&tls.pki.ca);
        }
        let child = command
            .arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("default={peer_url}"))
            .arg("--initial-cluster-state")
            .arg("new")
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
                "etcd did not start: {e:#}\n--- etcd log ({}) ---\n{log}",
                log_path.display()
            );
        }
        tracing::debug!(endpoint = %self.endpoint(), "test etcd serving");
        Ok(())
    }

    async fn wait_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        let mut last_error = anyhow!("not tried");
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("polling etcd")?
            {
                self.child = None;
                bail!("etcd exited with {status}");
            }
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => match self.probe().await {
                    Ok(()) => return Ok(()),
                    Err(e) => last_error = e,
                },
                Err(e) => last_error = e.into(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last_error.context(format!("not serving after {START_TIMEOUT:?}")))
    }

    async fn probe(&self) -> anyhow::Result<()> {
        let mut client = self.client().await?;
        client.status().await.context("etcd status")?;
        client
            .get("/micro-test-support/probe", None)
            .await
            .context("etcd get")?;
        Ok(())
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn find_etcd() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| is_executable(candidate))
    });
    on_path
        .or_else(|| {
            let fallback = PathBuf::from("/usr/bin/etcd");
            is_executable(&fallback).then_some(fallback)
        })
        .ok_or_else(|| anyhow!("etcd not found: apt-get install etcd-server"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A free loopback port (bound, then released): for a peer that must be told its port.
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Installs a test log subscriber once per process (filter from `RUST_LOG`, default `info`).
/// Safe to call from every test.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Log lines captured by [`capture_logs`] on the current thread.
#[derive(Debug)]
pub struct CapturedLogs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: DefaultGuard,
}

impl CapturedLogs {
    /// Everything logged so far, as text.
    pub fn contents(&self) -> String {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

#[derive(Clone)]
struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log event (all levels, no colours) emitted on the current thread while the
/// returned value lives. Use with a current-thread runtime (`#[tokio::test]`'s default) so the
/// code under test runs on this thread.
pub fn capture_logs() -> CapturedLogs {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = BufferWriter(buffer.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("trace"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    CapturedLogs {
        buffer,
        _guard: guard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_stops_restarts_and_wipes() {
        let mut etcd = EtcdServer::start().await.unwrap();
        let mut client = etcd.client().await.unwrap();
        client.put("/k", "v", None).await.unwrap();

        etcd.stop().await.unwrap();
        assert!(client.get("/k", None).await.is_err());

        etcd.start_again().await.unwrap();
        let mut client = etcd.client().await.unwrap();
        let got = client.get("/k", None).await.unwrap();
        assert_eq!(got.kvs().len(), 1, "same data dir keeps keys");

        etcd.wipe_and_start().await.unwrap();
        let mut client = etcd.client().await.unwrap();
        let got = client.get("/k", None).await.unwrap();
        assert!(got.kvs().is_empty(), "wiped data dir has no keys");
    }

    #[test]
    fn captures_logs() {
        let logs = capture_logs();
        tracing::warn!(key = "k", "something odd");
        assert!(logs.contents().contains("something odd"));
    }
}
