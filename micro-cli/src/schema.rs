//! Message schemas at run time: from a node's gRPC reflection (v1, falling back to v1alpha),
//! or from .proto files compiled here by protox (no protoc).

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use http::uri::PathAndQuery;
use prost::Message;
use prost_reflect::{DescriptorPool, MethodDescriptor};
use prost_types::FileDescriptorProto;
use tonic::{Code, Status, client::Grpc};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, ServerReflectionResponse, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

use crate::error::CliError;

/// The reflection method of each version. Their messages are the same on the wire, so the v1
/// types serve both.
const V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

/// Most files one schema may pull in through reflection (a guard against a peer that keeps
/// naming new dependencies).
const MAX_FILES: usize = 512;

/// An endpoint as go-micro names it: `Greeter.Hello`, or with the package,
/// `greeter.Greeter.Hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `Greeter` or `greeter.Greeter`.
    pub(crate) service: String,
    /// `Hello`.
    pub(crate) method: String,
}

impl Endpoint {
    /// Parses `Service.Method`.
    pub(crate) fn parse(text: &str) -> Result<Endpoint, CliError> {
        match text.rsplit_once('.') {
            Some((service, method))
                if !service.is_empty()
                    && !method.is_empty()
                    && !service.ends_with('.')
                    && !service.starts_with('.') =>
            {
                Ok(Endpoint {
                    service: service.to_owned(),
                    method: method.to_owned(),
                })
            }
            _ => Err(CliError::Input(format!(
                "endpoint {text:?}: want Service.Method, e.g. Greeter.Hello"
            ))),
        }
    }

    /// Whether the proto service `full_name` (`greeter.Greeter`) is the one named.
    fn names(&self, full_name: &str) -> bool {
        full_name == self.service || full_name.rsplit('.').next() == Some(self.service.as_str())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.service, self.method)
    }
}

/// Finds the method `endpoint` names in `pool`.
pub(crate) fn find_method(
    pool: &DescriptorPool,
    endpoint: &Endpoint,
) -> Result<MethodDescriptor, CliError> {
    let services: Vec<_> = pool.services().collect();
    let matching: Vec<_> = services
        .iter()
        .filter(|s| endpoint.names(s.full_name()))
        .collect();
    let service = match matching.as_slice() {
        [one] => *one,
        [] => {
            let known: Vec<&str> = services.iter().map(|s| s.full_name()).collect();
            return Err(CliError::Input(format!(
                "unknown endpoint {endpoint}: no service {} in the schema (services: {})",
                endpoint.service,
                list(&known)
            )));
        }
        many => {
            let names: Vec<&str> = many.iter().map(|s| s.full_name()).collect();
            return Err(CliError::Input(format!(
                "endpoint {endpoint} is ambiguous: {}; name the package, e.g. {}.{}",
                names.join(", "),
                names[0],
                endpoint.method
            )));
        }
    };
    service
        .methods()
        .find(|m| m.name() == endpoint.method)
        .ok_or_else(|| {
            let methods: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
            let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
            CliError::Input(format!(
                "unknown endpoint {endpoint}: {} has no method {} (methods: {})",
                service.full_name(),
                endpoint.method,
                list(&methods)
            ))
        })
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Compiles `.proto` files with protox. Imports are looked up in `includes`, or, when none
/// are given, in each file's directory.
pub(crate) fn compile(files: &[PathBuf], includes: &[PathBuf]) -> Result<DescriptorPool, CliError> {
    let mut includes = includes.to_vec();
    if includes.is_empty() {
        for file in files {
            let dir = match file.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => Path::new(".").to_path_buf(),
            };
            if !includes.contains(&dir) {
                includes.push(dir);
            }
        }
    }
    let bad = |err: protox::Error| CliError::Input(format!("--proto: {err}"));
    let mut compiler = protox::Compiler::new(&includes).map_err(bad)?;
    compiler.include_imports(true);
    compiler.open_files(files).map_err(bad)?;
    Ok(compiler.descriptor_pool())
}

/// Reads the schema of the service `endpoint` names from a node's reflection, over `channel`
/// (the micro client: `options` set its timeout and node filter).
pub(crate) async fn reflect(
    channel: micro::Channel,
    options: &micro::CallOptions,
    endpoint: &Endpoint,
) -> Result<DescriptorPool, CliError> {
    let mut reflection = Reflection {
        grpc: Grpc::new(channel),
        path: V1,
        options: options.clone(),
    };
    let listed = match reflection.ask(MessageRequest::ListServices(String::new())).await {
        Err(status) if status.code() == Code::Unimplemented => {
            tracing::debug!("no reflection v1; trying v1alpha");
            reflection.path = V1ALPHA;
            match reflection.ask(MessageRequest::ListServices(String::new())).await {
                Err(status) if status.code() == Code::Unimplemented => {
                    return Err(CliError::Schema(format!(
                        "the node has no gRPC reflection (neither v1 nor v1alpha): give the service's .proto with --proto FILE ({})",
                        status.message()
                    )));
                }
                other => other,
            }
        }
        other => other,
    }
    .map_err(|status| CliError::from_status(&status))?;
    let MessageResponse::ListServicesResponse(listed) = listed else {
        return Err(CliError::Schema(
            "reflection answered ListServices with something else".into(),
        ));
    };
    let names: Vec<&str> = listed.service.iter().map(|s| s.name.as_str()).collect();
    let matching: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| endpoint.names(name))
        .collect();
    let service = match matching.as_slice() {
        [one] => *one,
        [] => {
            let user: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !n.starts_with("grpc."))
                .collect();
            return Err(CliError::Input(format!(
                "unknown endpoint {endpoint}: the node serves no service {} (services: {})",
                endpoint.service,
                list(&user)
            )));
        }
        many => {
            return Err(CliError::Input(format!(
                "endpoint {endpoint} is ambiguous: {}; name the package, e.g. {}.{}",
                many.join(", "),
                many[0],
                endpoint.method
            )));
        }
    };
    let files = reflection.files(service).await?;
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files)
        .map_err(|err| CliError::Schema(format!("reflection sent an unusable schema: {err}")))?;
    Ok(pool)
}

/// One reflection conversation with a node.
struct Reflection {
    grpc: Grpc<micro::Channel>,
    path: &'static str,
    options: micro::CallOptions,
}

impl Reflection {
    /// One request, one answer, on a stream of its own.
    async fn ask(&mut self, request: MessageRequest) -> Result<MessageResponse, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|err| Status::unavailable(err.to_string()))?;
        let mut request = tonic::Request::new(tokio_stream::once(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        }));
        request.extensions_mut().insert(self.options.clone());
        let codec =
            tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
        let mut answers = self
            .grpc
            .streaming(request, PathAndQuery::from_static(self.path), codec)
            .await?
            .into_inner();
        let answer = answers
            .message()
            .await?
            .ok_or_else(|| Status::unknown("reflection ended the stream without an answer"))?;
        match answer.message_response {
            Some(MessageResponse::ErrorResponse(err)) => Err(Status::new(
                Code::from_i32(err.error_code),
                err.error_message,
            )),
            Some(answer) => Ok(answer),
            None => Err(Status::unknown("reflection sent an empty answer")),
        }
    }

    /// The file declaring `symbol` and every file it imports, transitively.
    async fn files(&mut self, symbol: &str) -> Result<Vec<FileDescriptorProto>, CliError> {
        let mut files: HashMap<String, FileDescriptorProto> = HashMap::new();
        let mut asked: HashSet<String> = HashSet::new();
        let mut queue = vec![MessageRequest::FileContainingSymbol(symbol.to_owned())];
        while let Some(request) = queue.pop() {
            let answer = self
                .ask(request)
                .await
                .map_err(|status| CliError::from_status(&status))?;
            let MessageResponse::FileDescriptorResponse(answer) = answer else {
                return Err(CliError::Schema(
                    "reflection answered a file request with something else".into(),
                ));
            };
            for bytes in answer.file_descriptor_proto {
                let file = FileDescriptorProto::decode(bytes.as_slice()).map_err(|err| {
                    CliError::Schema(format!(
                        "reflection sent a file that does not decode: {err}"
                    ))
                })?;
                files.insert(file.name().to_owned(), file);
            }
            if files.len() > MAX_FILES {
                return Err(CliError::Schema(format!(
                    "reflection schema of {symbol} has more than {MAX_FILES} files"
                )));
            }
            for file in files.values() {
                for dependency in &file.dependency {
                    if !files.contains_key(dependency) && asked.insert(dependency.clone()) {
                        queue.push(MessageRequest::FileByFilename(dependency.clone()));
                    }
                }
            }
        }
        Ok(files.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeter_pool() -> DescriptorPool {
        DescriptorPool::decode(proto::greeter::FILE_DESCRIPTOR_SET).unwrap()
    }

    #[test]
    fn endpoints_parse_as_go_micro_names_them() {
        let short = Endpoint::parse("Greeter.Hello").unwrap();
        assert_eq!(
            (short.service.as_str(), short.method.as_str()),
            ("Greeter", "Hello")
        );
        let full = Endpoint::parse("greeter.Greeter.Hello").unwrap();
        assert_eq!(full.service, "greeter.Greeter");
        for bad in ["Hello", "Greeter.", ".Hello", "", "a..b"] {
            assert!(
                matches!(Endpoint::parse(bad), Err(CliError::Input(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn methods_are_found_by_short_or_full_name() {
        let pool = greeter_pool();
        for name in ["Greeter.Hello", "greeter.Greeter.Hello"] {
            let method = find_method(&pool, &Endpoint::parse(name).unwrap()).unwrap();
            assert_eq!(method.full_name(), "greeter.Greeter.Hello");
            assert_eq!(method.input().full_name(), "greeter.Request");
        }
    }

    #[test]
    fn unknown_endpoints_say_what_exists() {
        let pool = greeter_pool();
        let err = find_method(&pool, &Endpoint::parse("Greeter.Hola").unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("no method Hola") && text.contains("Hello, Test"),
            "{text}"
        );
        let err = find_method(&pool, &Endpoint::parse("Nope.Hello").unwrap()).unwrap_err();
        assert!(err.to_string().contains("greeter.Greeter"), "{err}");
    }

    #[test]
    fn protox_compiles_the_greeter_proto() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto/greeter.proto");
        let pool = compile(&[file], &[]).unwrap();
        let method = find_method(&pool, &Endpoint::parse("Greeter.Test").unwrap()).unwrap();
        assert_eq!(method.output().full_name(), "greeter.Response");
    }

    #[test]
    fn broken_protos_are_input_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("broken.proto");
        std::fs::write(&file, "syntax = \"proto3\";\nmessage A { strin x = 1; }\n").unwrap();
        let err = compile(&[file], &[]).unwrap_err();
        assert!(matches!(err, CliError::Input(_)), "{err}");
        let missing = dir.path().join("missing.proto");
        assert!(matches!(compile(&[missing], &[]), Err(CliError::Input(_))));
    }
}
