//! go-micro's registry model, serialised exactly as go-micro's JSON.
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
    /// Unique id, `<service>-<uuid>` by convention.
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// `host:port` the node serves on.
    #[serde(default, deserialize_with = "null_default")]
    pub address: String,
    /// Node metadata (`protocol`, `server`, `registry`, ...).
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Metadata,
}

/// An endpoint, `Service.Method`, with the shapes of its request and response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `Greeter.Hello`.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Request message shape; Go writes `null` when unknown.
    #[serde(default)]
    pub request: Option<Value>,
    /// Response message shape.
    #[serde(default)]
    pub response: Option<Value>,
    /// `{}`; `{"stream":"true"}` for streaming endpoints.
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Metadata,
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
