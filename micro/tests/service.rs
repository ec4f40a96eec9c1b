//! The framework end to end on the embedded registry, over real TCP: the greeter chain,
//! go-micro paths, errors, deadlines, metadata, wrappers, health and reflection.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use examples_support::*;
use micro::registry::Memory;
use micro_test_support::{concurrently, greeter_at, test_call};
use proto::greeter::{
    FILE_DESCRIPTOR_SET, Request, Response,
    greeter_client::GreeterClient,
    greeter_server::{Greeter, GreeterServer},
};
use tonic::{Code, Status};

mod examples_support {
    //! A greeter that records what it saw, and helpers to start services.
    use super::*;

    /// What the recording greeter saw of each call.
    #[derive(Clone, Default)]
    pub(crate) struct Seen {
        pub(crate) deadlines: Arc<Mutex<Vec<Option<Duration>>>>,
        pub(crate) metadata: Arc<Mutex<Vec<Option<String>>>>,
    }

    #[derive(Clone)]
    pub(crate) struct Recording {
        pub(crate) seen: Seen,
        pub(crate) sleep: Duration,
    }

    #[tonic::async_trait]
    impl Greeter for Recording {
        async fn hello(
            &self,
            request: tonic::Request<Request>,
        ) -> Result<tonic::Response<Response>, Status> {
            let name = request.into_inner().name;
            if name == "fail" {
                return Err(micro::errors::Error::internal("greeter2", "it failed").to_status());
            }
            Ok(tonic::Response::new(Response {
                msg: format!("hello {name}"),
            }))
        }

        async fn test(
            &self,
            request: tonic::Request<Request>,
        ) -> Result<tonic::Response<Response>, Status> {
            let deadline = request
                .extensions()
                .get::<micro::CallInfo>()
                .and_then(|info| info.deadline)
                .map(|d| d.remaining());
            self.seen.deadlines.lock().unwrap().push(deadline);
            let user = request
                .metadata()
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            self.seen.metadata.lock().unwrap().push(user);
            let node = request
                .extensions()
                .get::<micro::CallInfo>()
                .and_then(|i| i.node.as_ref())
                .map(|n| n.id.to_string())
                .unwrap_or_default();
            tokio::time::sleep(self.sleep).await;
            Ok(tonic::Response::new(Response { msg: node }))
        }
    }

    pub(crate) async fn start_recording(
        registry: &Memory,
        sleep: Duration,
    ) -> (micro::Running, Seen) {
        let seen = Seen::default();
        let handler = Recording {
            seen: seen.clone(),
            sleep,
        };
        let running = micro::Service::new()
            .name("greeter2")
            .registry(registry.clone())
            .descriptors(FILE_DESCRIPTOR_SET)
            .unwrap()
            .handle(GreeterServer::new(handler))
            .start()
            .await
            .unwrap();
        (running, seen)
    }

    pub(crate) fn client(registry: &Memory) -> micro::Client {
        micro::Service::new().registry(registry.clone()).client()
    }
}

#[tokio::test]
async fn greeter_chain_answers_a_plain_grpc_client() {
    let registry = Memory::new();
    let greeter2 = micro::Service::new()
        .name("greeter2")
        .registry(registry.clone())
        .handle(GreeterServer::new(examples::Greeter2 {
            test_sleep: Duration::from_millis(100),
        }))
        .start()
        .await
        .unwrap();
    let mut service = micro::Service::new()
        .name("greeter1")
        .registry(registry.clone());
    let to_greeter2 = GreeterClient::new(service.client().channel("greeter2"));
    let greeter1 = service
        .handle(GreeterServer::new(examples::Greeter1 {
            greeter2: to_greeter2,
        }))
        .start()
        .await
        .unwrap();

    let mut plain = greeter_at(greeter1.local_addr()).await;
    let reply = plain
        .hello(Request { name: "you".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.msg,
        format!("greeter1 <- test you from {}", greeter2.node().id)
    );

    greeter1.stop().await.unwrap();
    greeter2.stop().await.unwrap();
}

#[tokio::test]
async fn registration_lists_go_micro_node_and_endpoints_and_graceful_stop_removes_it() {
    let registry = Memory::new();
    let (running, _) = start_recording(&registry, Duration::ZERO).await;
    let services = micro::registry::Registry::get_service(&registry, "greeter2")
        .await
        .unwrap();
    assert_eq!(services.len(), 1);
    let service = &services[0];
    assert_eq!(service.version, "latest");
    let endpoints: Vec<_> = service.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(endpoints, ["Greeter.Hello", "Greeter.Test"]);
    let node = &service.nodes[0];
    assert!(node.id.starts_with("greeter2-"), "{}", node.id);
    assert_eq!(node.address, running.local_addr().to_string());
    for key in ["broker", "protocol", "registry", "server", "transport"] {
        assert!(node.metadata.contains_key(key), "missing {key}");
    }
    assert_eq!(node.metadata["protocol"], "grpc");
    running.stop().await.unwrap();
    let after = micro::registry::Registry::get_service(&registry, "greeter2").await;
    assert!(
        matches!(after, Err(micro::registry::Error::NotFound)),
        "{after:?}"
    );
}

#[tokio::test]
async fn dynamic_call_uses_go_micro_path_and_errors_are_clear() {
    let registry = Memory::new();
    let (running, _) = start_recording(&registry, Duration::ZERO).await;
    let client = client(&registry);

    // `greeter2` + `Greeter.Hello` -> `/greeter2.Greeter/Hello`, which the server maps.
    let reply: Response = client
        .call("greeter2", "Greeter.Hello", Request { name: "x".into() })
        .await
        .unwrap();
    assert_eq!(reply.msg, "hello x");

    // A handler's go-micro error arrives intact.
    let status = client
        .call::<_, Response>(
            "greeter2",
            "Greeter.Hello",
            Request {
                name: "fail".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    let err = micro::errors::Error::from_status(&status);
    assert_eq!(
        (err.id.as_str(), err.code, err.detail.as_str()),
        ("greeter2", 500, "it failed")
    );

    // Unknown service, unknown method, unknown gRPC service.
    let status = client
        .call::<_, Response>("nobody", "Greeter.Hello", Request::default())
        .await
        .unwrap_err();
    let err = micro::errors::Error::from_status(&status);
    assert_eq!((err.id.as_str(), err.code), ("go.micro.client", 500));
    assert_eq!(err.detail, "service nobody: not found");
    let status = client
        .call::<_, Response>("greeter2", "Greeter.Nope", Request::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    let status = client
        .call::<_, Response>("greeter2", "/x.Other/Hello", Request::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(
        micro::errors::Error::from_status(&status).id,
        "go.micro.server"
    );
    let status = client
        .call::<_, Response>("greeter2", "no-dot", Request::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    running.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_message_is_refused_not_fatal() {
    let registry = Memory::new();
    let (running, _) = start_recording(&registry, Duration::ZERO).await;
    let client = client(&registry);
    let huge = Request {
        name: "x".repeat(5 * 1024 * 1024),
    };
    let status = client
        .call::<_, Response>("greeter2", "Greeter.Hello", huge)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    // The server still serves.
    let ok: Response = client
        .call("greeter2", "Greeter.Hello", Request { name: "y".into() })
        .await
        .unwrap();
    assert_eq!(ok.msg, "hello y");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn deadline_exceeded_and_the_server_sees_the_deadline() {
    let registry = Memory::new();
    let (running, seen) = start_recording(&registry, Duration::from_millis(100)).await;
    let client = client(&registry);
    let options = micro::CallOptions {
        timeout: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let status = client
        .call_with::<_, Response>("greeter2", "Greeter.Test", Request::default(), options)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let err = micro::errors::Error::from_status(&status);
    assert_eq!(
        (err.id.as_str(), err.code),
        ("go.micro.client", 408),
        "{err}"
    );
    let deadlines = seen.deadlines.lock().unwrap().clone();
    assert_eq!(deadlines.len(), 1);
    let left = deadlines[0].expect("greeter2 saw no deadline");
    assert!(
        left <= Duration::from_millis(50) && left > Duration::ZERO,
        "{left:?}"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn garbage_timeout_headers_do_not_fail_the_call() {
    let registry = Memory::new();
    let (running, seen) = start_recording(&registry, Duration::ZERO).await;
    let mut plain = greeter_at(running.local_addr()).await;
    for value in ["soon", "-5", "99999999999999999999999"] {
        let mut request = tonic::Request::new(Request::default());
        request
            .metadata_mut()
            .insert("timeout", value.parse().unwrap());
        plain.test(request).await.unwrap();
    }
    // go-micro's `timeout` header (ns) becomes the deadline.
    let mut request = tonic::Request::new(Request::default());
    request
        .metadata_mut()
        .insert("timeout", "2000000000".parse().unwrap());
    plain.test(request).await.unwrap();
    let deadlines = seen.deadlines.lock().unwrap().clone();
    assert_eq!(&deadlines[..3], &[None, None, None]);
    assert!(
        deadlines[3].is_some_and(|d| d <= Duration::from_secs(2) && d > Duration::from_secs(1))
    );
    running.stop().await.unwrap();
}

/// greeter1 that forwards to greeter2's Test; used to check what crosses the hop.
#[derive(Clone)]
struct Forward(GreeterClient<micro::Channel>);

#[tonic::async_trait]
impl Greeter for Forward {
    async fn hello(&self, _: tonic::Request<Request>) -> Result<tonic::Response<Response>, Status> {
        self.0.clone().test(Request::default()).await
    }
    async fn test(&self, _: tonic::Request<Request>) -> Result<tonic::Response<Response>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

#[tokio::test]
async fn metadata_and_deadline_cross_the_hop() {
    let registry = Memory::new();
    let (greeter2, seen) = start_recording(&registry, Duration::ZERO).await;
    let mut service = micro::Service::new()
        .name("greeter1")
        .registry(registry.clone());
    let forward = Forward(GreeterClient::new(service.client().channel("greeter2")));
    let greeter1 = service
        .handle(GreeterServer::new(forward))
        .start()
        .await
        .unwrap();

    let mut plain = greeter_at(greeter1.local_addr()).await;
    let mut request = tonic::Request::new(Request::default());
    request
        .metadata_mut()
        .insert("x-user", "alice".parse().unwrap());
    request.set_timeout(Duration::from_secs(3));
    plain.hello(request).await.unwrap();

    assert_eq!(
        seen.metadata.lock().unwrap().clone(),
        [Some("alice".to_owned())]
    );
    let left = seen.deadlines.lock().unwrap()[0].expect("no deadline at greeter2");
    assert!(
        left <= Duration::from_secs(3),
        "inherited deadline not applied: {left:?}"
    );
    greeter1.stop().await.unwrap();
    greeter2.stop().await.unwrap();
}

/// Counts requests and records the order in which layers saw them.
#[derive(Clone)]
struct Tag {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl<S> tower::Layer<S> for Tag {
    type Service = TagService<S>;
    fn layer(&self, inner: S) -> TagService<S> {
        TagService {
            tag: self.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
struct TagService<S> {
    tag: Tag,
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TagService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> S::Future {
        let info = micro::CallInfo::of(&request).cloned().unwrap_or_default();
        let node = info
            .node
            .map(|n| n.id.to_string())
            .unwrap_or_else(|| "-".into());
        // Every wrapper sees the call's deadline: 5 s at the client, a little less at the server.
        let deadline = match info.deadline.map(|d| d.remaining()) {
            Some(left) if left > Duration::from_secs(4) && left <= Duration::from_secs(5) => "5s",
            Some(left) => panic!("unexpected deadline {left:?}"),
            None => "none",
        };
        self.tag.log.lock().unwrap().push(format!(
            "{} {} {} {} {deadline}",
            self.tag.name, info.service, info.endpoint, node
        ));
        self.inner.call(request)
    }
}

#[tokio::test]
async fn wrappers_nest_first_added_outermost_and_see_call_info() {
    let registry = Memory::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let tag = |name| Tag {
        name,
        log: log.clone(),
    };
    let seen = Seen::default();
    let handler = Recording {
        seen,
        sleep: Duration::ZERO,
    };
    let server = micro::Service::new()
        .name("greeter2")
        .registry(registry.clone())
        .wrap_handler(tag("h1"))
        .wrap_handler(tag("h2"))
        .wrap_handler(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
        .handle(GreeterServer::new(handler))
        .start()
        .await
        .unwrap();
    let node = server.node().id.to_string();
    let client = micro::Service::new()
        .registry(registry.clone())
        .wrap_client(tag("c1"))
        .wrap_client(tag("c2"))
        .wrap_call(tag("a1"))
        .wrap_client(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
        .client();
    let options = micro::CallOptions {
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let _: Response = client
        .call_with("greeter2", "Greeter.Test", Request::default(), options)
        .await
        .unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "c1 greeter2 Greeter.Test - 5s".to_owned(),
            "c2 greeter2 Greeter.Test - 5s".to_owned(),
            format!("a1 greeter2 Greeter.Test {node} 5s"),
            format!("h1 greeter2 Greeter.Test {node} 5s"),
            format!("h2 greeter2 Greeter.Test {node} 5s"),
        ]
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn round_robin_alternates_and_retries_go_to_the_live_node() {
    let registry = Memory::new();
    let (a, _) = start_recording(&registry, Duration::ZERO).await;
    let (b, _) = start_recording(&registry, Duration::ZERO).await;
    let client = micro::Service::new()
        .registry(registry.clone())
        .client_options(round_robin())
        .client();
    let mut picks = Vec::new();
    for _ in 0..6 {
        let reply: Response = client
            .call("greeter2", "Greeter.Test", Request::default())
            .await
            .unwrap();
        picks.push(reply.msg);
    }
    for pair in picks.windows(2) {
        assert_ne!(pair[0], pair[1], "not alternating: {picks:?}");
    }
    let ids = [a.node().id.to_string(), b.node().id.to_string()];
    assert!(picks.iter().all(|p| ids.contains(p)));

    // A node that vanished without deregistering (its key still listed): calls retry on the
    // other node and all succeed.
    list_dead_greeter2(&registry).await;
    let served = Arc::new(AtomicUsize::new(0));
    for _ in 0..9 {
        let reply: Response = client
            .call("greeter2", "Greeter.Test", Request::default())
            .await
            .unwrap();
        assert!(ids.contains(&reply.msg));
        served.fetch_add(1, Ordering::Relaxed);
    }
    assert_eq!(served.load(Ordering::Relaxed), 9);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn health_is_serving_while_registered_and_reflection_lists_the_service() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let registry = Memory::new();
    let (running, _) = start_recording(&registry, Duration::ZERO).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", running.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "greeter.Greeter"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.status, 1, "{service:?} not SERVING");
    }

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}")
    };
    assert!(
        list.service.iter().any(|s| s.name == "greeter.Greeter"),
        "{list:?}"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn stop_deregisters_first_then_drains_in_flight_calls() {
    let registry = Memory::new();
    let (running, _) = start_recording(&registry, Duration::from_millis(300)).await;
    let address = running.local_addr();
    let client = client(&registry);
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call::<_, Response>("greeter2", "Greeter.Test", Request::default())
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    running.stop().await.unwrap();
    // The call that was running when shutdown began completed.
    let reply = in_flight.await.unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    // Deregistered, and no longer accepting connections.
    let listed = micro::registry::Registry::get_service(&registry, "greeter2").await;
    assert!(
        matches!(listed, Err(micro::registry::Error::NotFound)),
        "{listed:?}"
    );
    assert!(tokio::net::TcpStream::connect(address).await.is_err());
}

#[tokio::test]
async fn lifecycle_hooks_run_in_go_micro_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let hook = |name: &'static str| {
        let log = log.clone();
        move || {
            log.lock().unwrap().push(name);
            Ok(())
        }
    };
    let running = micro::Service::new()
        .name("hooks")
        .registry(Memory::new())
        .before_start(hook("before start"))
        .after_start(hook("after start"))
        .before_stop(hook("before stop"))
        .after_stop(hook("after stop"))
        .start()
        .await
        .unwrap();
    running.stop().await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["before start", "after start", "before stop", "after stop"]
    );

    let failing = micro::Service::new()
        .registry(Memory::new())
        .before_start(|| Err("no config".into()))
        .start()
        .await;
    let err = failing
        .err()
        .expect("a failing hook stops the start")
        .to_string();
    assert_eq!(err, "before start hook failed: no config");
}

#[tokio::test]
async fn init_reads_go_micro_flags_and_rejects_bad_ones() {
    let service = micro::Service::new()
        .name("code-name")
        .try_init_from([
            "svc",
            "--server_name",
            "flag-name",
            "--register_ttl",
            "5",
            "--server_metadata",
            "zone=a",
        ])
        .unwrap();
    let options = service.server_options();
    assert_eq!(options.name, "flag-name");
    assert_eq!(options.register_ttl, Duration::from_secs(5));
    assert_eq!(options.metadata["zone"], "a");
    let bad = micro::Service::new().try_init_from(["svc", "--registry", "consul"]);
    assert!(bad.err().unwrap().to_string().contains("consul"));
    let bad = micro::Service::new().try_init_from(["svc", "--server_metadata", "novalue"]);
    assert!(bad.err().unwrap().to_string().contains("key=value"));
}

/// Starts one greeter2 node and lists a second that does not answer; returns the live one.
async fn live_and_dead_greeter2(registry: &Memory) -> micro::Running {
    let (live, _) = start_recording(registry, Duration::ZERO).await;
    list_dead_greeter2(registry).await;
    live
}

/// Lists a greeter2 node that does not answer (nothing listens on port 1), as a node that
/// vanished without deregistering, and gives clients' caches time to see it.
async fn list_dead_greeter2(registry: &Memory) {
    let dead = micro::registry::Service {
        name: "greeter2".into(),
        version: "latest".into(),
        nodes: vec![micro::registry::Node {
            id: "greeter2-dead".into(),
            address: "127.0.0.1:1".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    micro::registry::Registry::register(registry, &dead, Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Client options that alternate between nodes.
fn round_robin() -> micro::client::Options {
    micro::client::Options {
        strategy: micro::client::Strategy::RoundRobin,
        ..Default::default()
    }
}

#[tokio::test]
async fn zero_retries_send_one_attempt_and_report_the_dead_node() {
    let registry = Memory::new();
    let live = live_and_dead_greeter2(&registry).await;
    // Retries alone: ejection would take the dead node out after its first refusal.
    let options = micro::client::Options {
        ejection: None,
        ..round_robin()
    };
    let client = micro::Service::new()
        .registry(registry.clone())
        .client_options(options)
        .client();
    let once = micro::CallOptions {
        retries: Some(0),
        ..Default::default()
    };
    let mut failures = Vec::new();
    for _ in 0..4 {
        let result: Result<Response, Status> = client
            .call_with("greeter2", "Greeter.Test", Request::default(), once.clone())
            .await;
        if let Err(status) = result {
            failures.push(status);
        }
    }
    // Round robin over one live and one dead node, no second attempt: every other call fails.
    assert_eq!(failures.len(), 2, "{failures:?}");
    for status in &failures {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let err = micro::errors::Error::parse(status.message());
        assert_eq!(
            (err.id.as_str(), err.code),
            ("go.micro.client", 503),
            "{err:?}"
        );
        assert!(err.detail.contains("greeter2"), "{err:?}");
    }
    live.stop().await.unwrap();
}

/// Marks a request in a client wrapper, for the call wrappers to find.
#[derive(Clone, Debug)]
struct Marked;

#[tokio::test]
async fn extensions_a_client_wrapper_adds_reach_the_call_wrappers_of_every_attempt() {
    let registry = Memory::new();
    let live = live_and_dead_greeter2(&registry).await;
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let client = micro::Service::new()
        .registry(registry.clone())
        .client_options(round_robin())
        .wrap_client(tower::util::MapRequestLayer::new(
            |mut request: http::Request<tonic::body::Body>| {
                request.extensions_mut().insert(Marked);
                request
            },
        ))
        .wrap_call(tower::util::MapRequestLayer::new(
            move |request: http::Request<tonic::body::Body>| {
                let node = micro::CallInfo::of(&request)
                    .and_then(|info| info.node.clone())
                    .map(|node| node.id.to_string());
                let marked = request.extensions().get::<Marked>().is_some();
                seen.lock().unwrap().push((node, marked));
                request
            },
        ))
        .client();
    for _ in 0..2 {
        let _: Response = client
            .call("greeter2", "Greeter.Test", Request::default())
            .await
            .unwrap();
    }
    let attempts = attempts.lock().unwrap().clone();
    // One of the two calls went to the dead node first and was retried on the live one.
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(attempts.iter().all(|(_, marked)| *marked), "{attempts:?}");
    assert!(
        attempts
            .iter()
            .any(|(node, _)| node.as_deref() == Some("greeter2-dead")),
        "{attempts:?}"
    );
    live.stop().await.unwrap();
}

#[tokio::test]
async fn a_concurrency_limit_wrapper_holds_across_the_reused_stack_copies() {
    let registry = Memory::new();
    let (server, _) = start_recording(&registry, Duration::from_millis(50)).await;
    let client = micro::Service::new()
        .registry(registry.clone())
        .wrap_client(tower::limit::ConcurrencyLimitLayer::new(1))
        .client();
    let started = std::time::Instant::now();
    let calls = concurrently(4, 4, |_| {
        let client = client.clone();
        async move { test_call(&client, "").await }
    });
    for call in calls.await {
        call.unwrap();
    }
    // One call at a time, each sleeping 50 ms at the server.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "not serialised: {took:?}"
    );
    server.stop().await.unwrap();
}
