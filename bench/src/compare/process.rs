//! The bench's child processes: a scenario's server (or the span sink) and a load run.

use std::{
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, ChildStdin},
    task::JoinHandle,
};

use super::pin::command;
use crate::{Scenario, load};

/// How long a server process may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// A server process started with `bench serve` (or the span sink, `bench sink`).
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The address it printed.
    pub addr: String,
    /// Its pid.
    pub pid: u32,
    /// Every other line it printed on stdout, so far.
    output: Arc<Mutex<Vec<String>>>,
    drain: Option<JoinHandle<()>>,
}

impl ServerProcess {
    /// Spawns `bin serve <scenario> <args>` and waits for its `ready <addr>` line.
    pub async fn spawn(bin: &Path, scenario: Scenario, args: &[String]) -> anyhow::Result<Self> {
        Self::spawn_on(bin, scenario, args, None).await
    }

    /// [`ServerProcess::spawn`] on these CPUs (a `taskset -c` list).
    pub async fn spawn_on(
        bin: &Path,
        scenario: Scenario,
        args: &[String],
        cpus: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut all = vec!["serve".to_owned(), scenario.name().to_owned()];
        all.extend_from_slice(args);
        Self::spawn_command(bin, &all, cpus, scenario.name()).await
    }

    /// Spawns the span sink (`bin sink`) on these CPUs and waits for its `ready <addr>`.
    pub async fn spawn_sink(bin: &Path, cpus: Option<&str>) -> anyhow::Result<Self> {
        Self::spawn_command(bin, &["sink".to_owned()], cpus, "sink").await
    }

    async fn spawn_command(
        bin: &Path,
        args: &[String],
        cpus: Option<&str>,
        what: &str,
    ) -> anyhow::Result<Self> {
        let mut child = command(bin, cpus)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {} {}", bin.display(), args.join(" ")))?;
        let pid = child.id().context("server exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut before = Vec::new();
        let ready = async {
            loop {
                match lines.next_line().await? {
                    Some(line) => match line.strip_prefix("ready ") {
                        Some(addr) => return Ok(Some(addr.trim().to_owned())),
                        None => before.push(line),
                    },
                    None => return Ok::<_, std::io::Error>(None),
                }
            }
        };
        let addr = tokio::time::timeout(READY_TIMEOUT, ready)
            .await
            .with_context(|| format!("{what}: not ready after {READY_TIMEOUT:?}"))??
            .with_context(|| format!("{what}: exited before ready (printed {before:?})"))?;
        let output = Arc::new(Mutex::new(before));
        // Keep draining stdout so the server never blocks on a full pipe.
        let drain = tokio::spawn({
            let output = output.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut output) = output.lock() {
                        output.push(line);
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(ServerProcess {
            child,
            stdin,
            addr,
            pid,
            output,
            drain: Some(drain),
        })
    }

    /// The first line printed so far (before or after `ready`) that starts with `prefix`,
    /// without the prefix.
    pub fn line(&self, prefix: &str) -> Option<String> {
        find_line(&self.output.lock().ok()?, prefix)
    }

    /// Closes its stdin (it stops gracefully) and waits; kills it after 10 s.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop_with_output().await.map(|_| ())
    }

    /// [`ServerProcess::stop`], then every line it printed besides `ready` (what it printed
    /// at exit included).
    pub async fn stop_with_output(mut self) -> anyhow::Result<Vec<String>> {
        drop(self.stdin.take());
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("server {} exited with {status}", self.pid);
                }
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("server {} did not stop in 10 s: killed", self.pid);
            }
        }
        if let Some(drain) = self.drain.take() {
            // Its stdout is closed: the drain ends with the last line.
            let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        }
        let output = match self.output.lock() {
            Ok(output) => output.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Ok(output)
    }

    /// Kills it with SIGKILL, as a crash would.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
/// The first of `lines` starting with `prefix`, without it.
pub(super) fn find_line(lines: &[String], prefix: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|rest| rest.trim().to_owned())
}

/// Runs `bin load <target> ...` and reads its JSON report.
pub async fn run_load(
    bin: &Path,
    target: &[String],
    config: &load::Config,
    cpus: Option<&str>,
) -> anyhow::Result<load::Report> {
    let mut command = command(bin, cpus);
    command
        .arg("load")
        .args(target)
        .arg("--concurrency")
        .arg(config.concurrency.to_string())
        .arg("--warmup")
        .arg(humantime::format_duration(config.warmup).to_string())
        .arg("--duration")
        .arg(humantime::format_duration(config.duration).to_string())
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for pid in &config.server_pids {
        command.arg("--server-pid").arg(pid.to_string());
    }
    let limit = config.warmup + config.duration + Duration::from_secs(60);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .with_context(|| format!("load {target:?} did not finish in {limit:?}"))??;
    if !output.status.success() {
        bail!("load {target:?} exited with {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("load {target:?}: no report in {stdout:?}"))?;
    serde_json::from_str(line).with_context(|| format!("load report {line:?}"))
}
