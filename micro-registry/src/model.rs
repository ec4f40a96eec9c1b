//! go-micro's registry model, serialised exactly as go-micro's JSON, fields in the order of
//! go-micro's structs (Node `metadata, id, address`; Endpoint `request, response, metadata,
//! name`), so the value micro-rs stores is the one go-micro would store for the same service.
//!
//! Go writes nil maps and slices as `null` and may omit fields; every collection here decodes
//! `null` and absence as empty, so values written by Go services decode unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Metadata map. A `BTreeMap` so that keys serialise sorted, as Go's `encoding/json` does.
pub type Metadata = BTreeMap<String, String>;

/// A service: a name and version with its endpoints and the nodes that serve it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Service name, e.g. `greeter2`.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Version; go-micro uses `latest` when none is set.
    #[serde(default, deserialize_with = "null_default")]
    pub version: String,
    /// Service metadata.
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Metadata,
    /// Endpoints (`Greeter.Hello`, ...).
    #[serde(default, deserialize_with = "null_default")]
    pub endpoints: Vec<Endpoint>,
    /// Nodes. In etcd each key holds a service with exactly one node.
    #[serde(default, deserialize_with = "null_default")]
    pub nodes: Vec<Node>,
}

/// One running instance of a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Node {
    /// Node metadata (`protocol`, `server`, `registry`, ...).
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Metadata,
    /// Unique id, `<service>-<uuid>` by convention.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// `host:port` the node serves on.
    #[serde(default, deserialize_with = "null_default")]
    pub address: String,
}

/// An endpoint, `Service.Method`, with the shapes of its request and response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Request message shape; Go writes `null` when unknown.
    #[serde(default)]
    pub request: Option<Value>,
    /// Response message shape.
    #[serde(default)]
    pub response: Option<Value>,
    /// `{}`; `{"stream":"true"}` for streaming endpoints.
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Metadata,
    /// `Greeter.Hello`.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
}

/// The shape of a message or field: name, type and nested fields (depth limited to 3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// Field or message name.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Type name; repeated fields are `[]T`.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: String,
    /// Nested fields.
    #[serde(default, deserialize_with = "null_default")]
    pub values: Vec<Value>,
}

/// Decodes `null` as the type's default, as Go's nil maps and slices mean "empty".
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(name: &str, kind: &str, values: Vec<Value>) -> Value {
        Value {
            name: name.into(),
            kind: kind.into(),
            values,
        }
    }

    fn greeter() -> Service {
        Service {
            name: "greeter".into(),
            version: "latest".into(),
            metadata: Metadata::new(),
            endpoints: vec![Endpoint {
                name: "Greeter.Hello".into(),
                request: Some(value(
                    "Request",
                    "Request",
                    vec![value("name", "string", vec![])],
                )),
                response: Some(value(
                    "Response",
                    "Response",
                    vec![value("msg", "string", vec![])],
                )),
                metadata: Metadata::new(),
            }],
            nodes: vec![Node {
                id: "greeter-6f1c0a9e-7d1b-4c8e-9f0a-1b2c3d4e5f60".into(),
                address: "10.0.0.1:50051".into(),
                metadata: [
                    ("transport", "grpc"),
                    ("broker", "http"),
                    ("server", "grpc"),
                    ("registry", "etcd"),
                    ("protocol", "grpc"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            }],
        }
    }

    /// The JSON go-micro writes for this service, byte for byte, except that Go writes a nil
    /// map or slice as `null` where we write `{}` / `[]` (both sides decode either).
    const GREETER_JSON: &str = concat!(
        r#"{"name":"greeter","version":"latest","metadata":{},"#,
        r#""endpoints":[{"#,
        r#""request":{"name":"Request","type":"Request","values":[{"name":"name","type":"string","values":[]}]},"#,
        r#""response":{"name":"Response","type":"Response","values":[{"name":"msg","type":"string","values":[]}]},"#,
        r#""metadata":{},"name":"Greeter.Hello"}],"#,
        r#""nodes":[{"#,
        r#""metadata":{"broker":"http","protocol":"grpc","registry":"etcd","server":"grpc","transport":"grpc"},"#,
        r#""id":"greeter-6f1c0a9e-7d1b-4c8e-9f0a-1b2c3d4e5f60","address":"10.0.0.1:50051"}]}"#
    );

    #[test]
    fn serialises_as_go_micro() {
        assert_eq!(serde_json::to_string(&greeter()).unwrap(), GREETER_JSON);
        let back: Service = serde_json::from_str(GREETER_JSON).unwrap();
        assert_eq!(back, greeter());
    }

    #[test]
    fn decodes_what_go_writes_with_nulls() {
        // As a go-micro v4 service writes it: nil service metadata, leaf `values` null.
        let go = concat!(
            r#"{"name":"greeter","version":"latest","metadata":null,"#,
            r#""endpoints":[{"name":"Greeter.Hello","#,
            r#""request":{"name":"Request","type":"Request","values":[{"name":"name","type":"string","values":null}]},"#,
            r#""response":{"name":"Response","type":"Response","values":[{"name":"msg","type":"string","values":null}]},"#,
            r#""metadata":{}}],"#,
            r#""nodes":[{"id":"greeter-6f1c0a9e-7d1b-4c8e-9f0a-1b2c3d4e5f60","address":"10.0.0.1:50051","#,
            r#""metadata":{"broker":"http","protocol":"grpc","registry":"etcd","server":"grpc","transport":"grpc"}}]}"#
        );
        let decoded: Service = serde_json::from_str(go).unwrap();
        assert_eq!(decoded, greeter());
    }

    #[test]
    fn decodes_nulls_missing_fields_and_any_order() {
        let go = r#"{"nodes":[{"metadata":null,"address":"1.2.3.4:5","id":"n1"}],
            "endpoints":null,"metadata":null,"name":"x"}"#;
        let decoded: Service = serde_json::from_str(go).unwrap();
        assert_eq!(decoded.name, "x");
        assert_eq!(decoded.version, "");
        assert!(decoded.endpoints.is_empty() && decoded.metadata.is_empty());
        assert_eq!(decoded.nodes[0].id, "n1");
        assert!(decoded.nodes[0].metadata.is_empty());

        let endpoint: Endpoint =
            serde_json::from_str(r#"{"request":null,"name":"A.B","metadata":null}"#).unwrap();
        assert_eq!(endpoint.request, None);
        assert_eq!(endpoint.response, None);

        let value: Value = serde_json::from_str(r#"{"values":null,"type":"[]string"}"#).unwrap();
        assert_eq!(value.kind, "[]string");

        let empty: Service = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Service::default());
        let nulls: Service =
            serde_json::from_str(r#"{"name":null,"version":null,"nodes":null}"#).unwrap();
        assert_eq!(nulls, Service::default());
    }

    #[test]
    fn stream_endpoint_metadata() {
        let endpoint: Endpoint = serde_json::from_str(
            r#"{"name":"Greeter.Stream","request":null,"response":null,"metadata":{"stream":"true"}}"#,
        )
        .unwrap();
        assert_eq!(
            endpoint.metadata.get("stream").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            serde_json::to_string(&endpoint).unwrap(),
            r#"{"request":null,"response":null,"metadata":{"stream":"true"},"name":"Greeter.Stream"}"#
        );
    }
}
