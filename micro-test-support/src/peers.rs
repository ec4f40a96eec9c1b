//! Real observability peers for tests, each on free `127.0.0.1` ports and killed on drop:
//! Prometheus (Debian's `prometheus`), Zipkin (`io.zipkin:zipkin-server`'s executable jar on
//! Java 17, in-memory storage) and Jaeger v2 (built once per machine with `go install`, cached
//! in `/var/cache/micro-rs/jaeger`); plus OTLP receivers (gRPC and HTTP) that decode with the
//! official `opentelemetry-proto` types, one that accepts connections and never answers, and a
//! small HTTP GET.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use prost::Message;
use tempfile::TempDir;

pub use crate::{free_port, wait::poll};

/// `GET url`: the status and the body. Plain HTTP on loopback only.
pub async fn http_get(url: &str) -> anyhow::Result<(u16, String)> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let response = client.get(&url).send()?;
        let status = response.status().as_u16();
        Ok((status, response.text()?))
    })
    .await
    .context("joining the HTTP GET")?
}

/// A child process killed (and reaped) on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(command: &mut Command, log: &Path) -> anyhow::Result<Process> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    Ok(Process(child))
}

async fn wait_http(url: &str, limit: Duration, log: &Path) -> anyhow::Result<()> {
    let ok = poll(limit, || async {
        matches!(http_get(url).await, Ok((200, _))).then_some(())
    })
    .await;
    if ok.is_none() {
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let tail: String = tail.lines().rev().take(30).collect::<Vec<_>>().join("\n");
        bail!("{url} did not answer within {limit:?}; log (last lines, newest first):\n{tail}");
    }
    Ok(())
}

/// A real Prometheus scraping `targets` (`host:port`, `/metrics`) every second.
pub struct Prometheus {
    port: u16,
    _dir: TempDir,
    _process: Process,
}

impl Prometheus {
    /// Starts `prometheus` (on `PATH` or `/usr/bin/prometheus`) and waits until it is ready.
    pub async fn start(targets: &[String]) -> anyhow::Result<Self> {
        let binary = which("prometheus", "/usr/bin/prometheus")?;
        let dir = tempfile::Builder::new()
            .prefix("micro-prometheus-")
            .tempdir()?;
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: micro\n    static_configs:\n      - targets: [{list}]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let port = free_port()?;
        let log = dir.path().join("prometheus.log");
        let process = spawn(
            Command::new(binary)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                )),
            &log,
        )?;
        wait_http(
            &format!("http://127.0.0.1:{port}/-/ready"),
            Duration::from_secs(60),
            &log,
        )
        .await?;
        Ok(Prometheus {
            port,
            _dir: dir,
            _process: process,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs an instant query; the JSON answer.
    pub async fn query(&self, promql: &str) -> anyhow::Result<serde_json::Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) =
            http_get(&format!("{}/api/v1/query?query={encoded}", self.url())).await?;
        if status != 200 {
            bail!("query {promql:?}: HTTP {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }
}

/// The Zipkin server jar: `MICRO_ZIPKIN_JAR`, the cache scripts/test fills, or Maven's local
/// repository.
pub fn zipkin_jar() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("MICRO_ZIPKIN_JAR") {
        return Some(PathBuf::from(path));
    }
    let cached = PathBuf::from("/var/cache/micro-rs/zipkin/zipkin-server-exec.jar");
    if cached.exists() {
        return Some(cached);
    }
    let home = std::env::var("HOME").ok()?;
    let root = PathBuf::from(home).join(".m2/repository/io/zipkin/zipkin-server");
    let mut jars: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .flat_map(|version| {
            std::fs::read_dir(version.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with("-exec.jar"))
        .collect();
    jars.sort();
    jars.pop()
}

/// A real Zipkin server with in-memory storage.
pub struct Zipkin {
    port: u16,
    _dir: TempDir,
    _process: Process,
}

impl Zipkin {
    /// Starts the jar on Java and waits until it is healthy (it takes tens of seconds).
    pub async fn start() -> anyhow::Result<Self> {
        let Some(jar) = zipkin_jar() else {
            bail!(
                "no Zipkin server jar: run scripts/test (it fetches io.zipkin:zipkin-server with Maven) or set MICRO_ZIPKIN_JAR"
            );
        };
        let java = which("java", "/usr/bin/java")?;
        let dir = tempfile::Builder::new().prefix("micro-zipkin-").tempdir()?;
        let port = free_port()?;
        let log = dir.path().join("zipkin.log");
        let process = spawn(
            Command::new(java)
                .env("STORAGE_TYPE", "mem")
                .arg("-Xmx256m")
                .arg("-jar")
                .arg(&jar)
                .arg(format!("--armeria.ports[0].port={port}"))
                .arg("--armeria.ports[0].ip=127.0.0.1")
                .arg("--armeria.ports[0].protocols[0]=http"),
            &log,
        )?;
        wait_http(
            &format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(180),
            &log,
        )
        .await?;
        Ok(Zipkin {
            port,
            _dir: dir,
            _process: process,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where spans are posted: `http://127.0.0.1:PORT/api/v2/spans`.
    pub fn spans_endpoint(&self) -> String {
        format!("{}/api/v2/spans", self.url())
    }
}

/// The Jaeger v2 binary: `MICRO_JAEGER_BIN`, or the per-machine cache.
pub fn jaeger_binary() -> Option<PathBuf> {
    let path = std::env::var("MICRO_JAEGER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/cache/micro-rs/jaeger/jaeger"));
    path.exists().then_some(path)
}

/// A real Jaeger v2 all-in-one: OTLP receivers, in-memory storage, the query API.
pub struct Jaeger {
    otlp_grpc: u16,
    otlp_http: u16,
    query: u16,
    _dir: TempDir,
    _process: Process,
}

impl Jaeger {
    /// Starts the binary found by [`jaeger_binary`] with every port on 127.0.0.1.
    pub async fn start(binary: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("micro-jaeger-").tempdir()?;
        let [otlp_grpc, otlp_http, query, query_grpc, health] = [
            free_port()?,
            free_port()?,
            free_port()?,
            free_port()?,
            free_port()?,
        ];
        let config = format!(
            r#"service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc}
      http:
        endpoint: 127.0.0.1:{otlp_http}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"#
        );
        let config_path = dir.path().join("jaeger.yaml");
        std::fs::write(&config_path, config)?;
        let log = dir.path().join("jaeger.log");
        let process = spawn(
            Command::new(binary).arg(format!("--config={}", config_path.display())),
            &log,
        )?;
        wait_http(
            &format!("http://127.0.0.1:{query}/api/services"),
            Duration::from_secs(60),
            &log,
        )
        .await?;
        Ok(Jaeger {
            otlp_grpc,
            otlp_http,
            query,
            _dir: dir,
            _process: process,
        })
    }

    /// OTLP over gRPC: `http://127.0.0.1:PORT`.
    pub fn otlp_grpc(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_grpc)
    }

    /// OTLP over HTTP: `http://127.0.0.1:PORT` (the exporter appends `/v1/traces`).
    pub fn otlp_http(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_http)
    }

    /// The query API and UI: `http://127.0.0.1:PORT`.
    pub fn query_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.query)
    }
}

fn which(name: &str, fallback: &str) -> anyhow::Result<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let fallback = PathBuf::from(fallback);
    if fallback.is_file() {
        return Ok(fallback);
    }
    bail!(
        "{name} not found on PATH nor at {}: run scripts/test, which installs it",
        fallback.display()
    )
}

/// Spans an OTLP receiver got, decoded with the official protobuf types.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl Received {
    /// Every request received so far.
    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Every span received so far, with the `service.name` of its resource.
    pub fn spans(&self) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
        let mut out = Vec::new();
        for request in self.requests() {
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                s,
                            ),
                        ) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        out.push((service.clone(), span));
                    }
                }
            }
        }
        out
    }

    fn push(&self, request: ExportTraceServiceRequest) {
        if let Ok(mut all) = self.0.lock() {
            all.push(request);
        }
    }
}

#[derive(Clone)]
struct Collector(Received);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC receiver on a free loopback port; stops when dropped.
pub struct OtlpGrpcReceiver {
    listening: Listening,
    received: Received,
}

impl OtlpGrpcReceiver {
    /// Starts it.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let received = Received::default();
        let service = TraceServiceServer::new(Collector(received.clone()));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Ok(OtlpGrpcReceiver {
            listening: Listening { address, task },
            received,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.listening.endpoint()
    }

    /// What it received.
    pub fn received(&self) -> &Received {
        &self.received
    }
}

/// An OTLP/HTTP (protobuf) receiver on a free loopback port: `POST /v1/traces`.
pub struct OtlpHttpReceiver {
    listening: Listening,
    received: Received,
}

impl OtlpHttpReceiver {
    /// Starts it.
    pub async fn start() -> anyhow::Result<Self> {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let received = Received::default();
        let sink = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let sink = sink.clone();
                            async move {
                                let path_ok = request.uri().path() == "/v1/traces";
                                let body = match request.into_body().collect().await {
                                    Ok(body) => body.to_bytes(),
                                    Err(_) => bytes::Bytes::new(),
                                };
                                let status = match ExportTraceServiceRequest::decode(body) {
                                    Ok(decoded) if path_ok => {
                                        sink.push(decoded);
                                        200
                                    }
                                    _ => 400,
                                };
                                let reply = ExportTraceServiceResponse {
                                    partial_success: None,
                                }
                                .encode_to_vec();
                                let mut response = http::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from(reply),
                                ));
                                *response.status_mut() = http::StatusCode::from_u16(status)
                                    .unwrap_or(http::StatusCode::BAD_REQUEST);
                                response.headers_mut().insert(
                                    "content-type",
                                    http::HeaderValue::from_static("application/x-protobuf"),
                                );
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(OtlpHttpReceiver {
            listening: Listening { address, task },
            received,
        })
    }

    /// `http://127.0.0.1:PORT` (the exporter appends `/v1/traces`).
    pub fn endpoint(&self) -> String {
        self.listening.endpoint()
    }

    /// What it received.
    pub fn received(&self) -> &Received {
        &self.received
    }
}

/// A port that accepts connections and never answers (a hung receiver).
pub struct Silent(Listening);

impl Silent {
    /// Starts it.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Ok(Silent(Listening { address, task }))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.0.endpoint()
    }
}

/// A server task on a loopback port, stopped when dropped.
struct Listening {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Listening {
    fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}
