//! `micro call <service> <Endpoint> '<json>'`: JSON in, the message from the schema, the
//! call through the micro-rs client, JSON out.

use std::io::Read;

use http::uri::PathAndQuery;
use prost_reflect::{DynamicMessage, MethodDescriptor, SerializeOptions};
use tonic::{
    client::Grpc,
    metadata::{AsciiMetadataKey, AsciiMetadataValue},
};

use crate::{
    cli::{CallArgs, Global, Output},
    codec::DynamicCodec,
    error::CliError,
    output::{print, print_json},
    schema::{self, Endpoint},
    target::{self, Source},
};

pub(crate) async fn run(global: &Global, args: CallArgs) -> Result<(), CliError> {
    let endpoint = Endpoint::parse(&args.endpoint)?;
    let input = read_request(&args.request)?;
    let metadata = parse_metadata(&args.metadata)?;

    let mut call_options = micro::CallOptions::default();
    let registry = match &args.address {
        Some(address) => target::one_node(&args.service, address).await?,
        None => {
            let source = Source::from_flags(global)?;
            let versions = source.service(&args.service).await?;
            if let Some(node) = &args.node {
                target::check_node(&args.service, &versions, node)?;
                call_options
                    .filters
                    .push(micro::client::Filter::Node(node.clone()));
            }
            source.registry
        }
    };
    let mut options = micro::client::Options::default();
    if let Some(timeout) = args.timeout {
        options.request_timeout = timeout;
    }
    if let Some(retries) = args.retries {
        options.retries = retries;
    }
    let client = target::client(registry, options, global)?;

    let pool = if args.proto.is_empty() {
        schema::reflect(
            client.channel(args.service.as_str()),
            &call_options,
            &endpoint,
        )
        .await?
    } else {
        schema::compile(&args.proto, &args.import_path)?
    };
    let method = schema::find_method(&pool, &endpoint)?;
    if method.is_client_streaming() || method.is_server_streaming() {
        return Err(CliError::Input(format!(
            "{endpoint} is a streaming endpoint; micro call calls unary endpoints only"
        )));
    }
    let request = DynamicMessage::deserialize(method.input(), input).map_err(|err| {
        CliError::Input(format!(
            "request does not fit {}: {err}",
            method.input().full_name()
        ))
    })?;

    let path = call_path(&args, &method)?;
    let mut grpc = Grpc::new(client.channel(args.service.as_str()));
    grpc.ready()
        .await
        .map_err(|err| CliError::from_status(&tonic::Status::unavailable(err.to_string())))?;
    let mut request = tonic::Request::new(request);
    request.extensions_mut().insert(call_options);
    for (key, value) in metadata {
        request.metadata_mut().insert(key, value);
    }
    let response = grpc
        .unary(request, path, DynamicCodec::new(method.output()))
        .await
        .map_err(|status| CliError::from_status(&status))?
        .into_inner();

    let options = SerializeOptions::new().skip_default_fields(false);
    let json = response
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|err| CliError::Schema(format!("the response does not convert to JSON: {err}")))?;
    match global.output {
        Output::Json => print_json(&json)?,
        Output::Table => {
            let mut text = serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?;
            text.push('\n');
            print(&text)?;
        }
    }
    Ok(())
}

/// The request text as JSON; `-` reads stdin.
pub(crate) fn read_request(text: &str) -> Result<serde_json::Value, CliError> {
    let owned;
    let text = if text == "-" {
        let mut buffer = String::new();
        std::io::stdin()
            .read_to_string(&mut buffer)
            .map_err(|err| CliError::Input(format!("reading the request from stdin: {err}")))?;
        owned = buffer;
        owned.as_str()
    } else {
        text
    };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|err| CliError::Input(format!("malformed JSON request: {err}")))?;
    if !value.is_object() {
        return Err(CliError::Input(format!(
            "the request must be a JSON object, e.g. '{{\"name\": \"John\"}}', not {value}"
        )));
    }
    Ok(value)
}

/// `-m key=value` pairs as gRPC metadata.
fn parse_metadata(
    pairs: &[String],
) -> Result<Vec<(AsciiMetadataKey, AsciiMetadataValue)>, CliError> {
    pairs
        .iter()
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| CliError::Input(format!("metadata {pair:?}: want key=value")))?;
            let key = AsciiMetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes())
                .map_err(|err| CliError::Input(format!("metadata key {key:?}: {err}")))?;
            let value = AsciiMetadataValue::try_from(value)
                .map_err(|err| CliError::Input(format!("metadata value {value:?}: {err}")))?;
            Ok((key, value))
        })
        .collect()
}

/// go-micro's path `/<service>.<Greeter>/<Hello>` for a service from the registry; the
/// proto path `/<package.Greeter>/<Hello>`, which any gRPC server accepts, for `--address`.
fn call_path(args: &CallArgs, method: &MethodDescriptor) -> Result<PathAndQuery, CliError> {
    let service = method.parent_service();
    let path = if args.address.is_some() {
        format!("/{}/{}", service.full_name(), method.name())
    } else {
        format!("/{}.{}/{}", args.service, service.name(), method.name())
    };
    PathAndQuery::try_from(path.as_str())
        .map_err(|err| CliError::Input(format!("service {:?}: {err}", args.service)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_must_be_json_objects() {
        assert!(read_request(r#"{"name": "x"}"#).is_ok());
        for bad in [r#"{"name": "x""#, "name=x", "", "[1]", "5"] {
            assert!(
                matches!(read_request(bad), Err(CliError::Input(_))),
                "{bad}"
            );
        }
        let err = read_request(r#"{"name": "#).unwrap_err().to_string();
        assert!(err.starts_with("malformed JSON request"), "{err}");
    }

    #[test]
    fn metadata_pairs_parse_and_garbage_is_refused() {
        let parsed = parse_metadata(&["User=alice".into(), "trace=a=b".into()]).unwrap();
        assert_eq!(parsed[0].0.as_str(), "user");
        assert_eq!(parsed[1].1.to_str().unwrap(), "a=b");
        for bad in ["novalue", "bad key=x", "k=\u{7}"] {
            assert!(parse_metadata(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn wrong_field_types_are_clear() {
        let pool =
            prost_reflect::DescriptorPool::decode(proto::greeter::FILE_DESCRIPTOR_SET).unwrap();
        let input = pool.get_message_by_name("greeter.Request").unwrap();
        let err = DynamicMessage::deserialize(input.clone(), serde_json::json!({"name": 5}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("string"), "{err}");
        let err = DynamicMessage::deserialize(input, serde_json::json!({"nom": "x"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nom"), "{err}");
    }
}
