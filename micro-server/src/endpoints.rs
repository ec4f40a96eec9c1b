//! The node's endpoint list for the registry, read from protobuf descriptors.
//!
//! go-micro lists each handler method as `Service.Method` with the shape of its request and
//! response (field names and types, three levels deep); Go clients and `micro` tooling read it.

use std::collections::HashMap;

use micro_registry::{Endpoint, Metadata, Value};
use prost::Message;
use prost_types::{
    DescriptorProto, FileDescriptorSet, field_descriptor_proto::Label, field_descriptor_proto::Type,
};

/// How deep message shapes are described, as in go-micro.
const MAX_DEPTH: usize = 3;

/// Protobuf descriptors of the hosted services.
#[derive(Clone, Debug, Default)]
pub(crate) struct Descriptors {
    files: Vec<prost_types::FileDescriptorProto>,
    /// Fully qualified message name (`greeter.Request`) -> (file index, path to the message).
    messages: HashMap<String, DescriptorProto>,
}

impl Descriptors {
    /// Adds an encoded `FileDescriptorSet`.
    pub(crate) fn add_encoded(&mut self, encoded: &[u8]) -> Result<(), prost::DecodeError> {
        let set = FileDescriptorSet::decode(encoded)?;
        for file in set.file {
            let package = file.package().to_owned();
            for message in &file.message_type {
                self.add_message(&package, message);
            }
            self.files.push(file);
        }
        Ok(())
    }

    fn add_message(&mut self, scope: &str, message: &DescriptorProto) {
        let name = qualify(scope, message.name());
        for nested in &message.nested_type {
            self.add_message(&name, nested);
        }
        self.messages.insert(name, message.clone());
    }

    /// Endpoints of a service by its full proto name (`greeter.Greeter`); `None` when no
    /// descriptor describes it.
    pub(crate) fn endpoints(&self, full_name: &str) -> Option<Vec<Endpoint>> {
        let service = self.files.iter().find_map(|file| {
            file.service
                .iter()
                .find(|service| qualify(file.package(), service.name()) == full_name)
        })?;
        let endpoints = service
            .method
            .iter()
            .map(|method| {
                let mut metadata = Metadata::new();
                if method.client_streaming() || method.server_streaming() {
                    metadata.insert("stream".into(), "true".into());
                }
                Endpoint {
                    name: format!("{}.{}", service.name(), method.name()),
                    request: Some(self.value_of(
                        method.input_type(),
                        short(method.input_type()),
                        0,
                    )),
                    response: Some(self.value_of(
                        method.output_type(),
                        short(method.output_type()),
                        0,
                    )),
                    metadata,
                }
            })
            .collect();
        Some(endpoints)
    }

    /// The shape of the message `full_name` (`greeter.Response`), if a descriptor has it.
    pub(crate) fn message_value(&self, full_name: &str) -> Option<Value> {
        let full_name = full_name.trim_start_matches('.');
        self.messages
            .contains_key(full_name)
            .then(|| self.value_of(full_name, short(full_name), 0))
    }

    /// The shape of the message `type_name` (`.greeter.Request`) as a go-micro Value.
    fn value_of(&self, type_name: &str, field_name: &str, depth: usize) -> Value {
        let mut value = Value {
            name: field_name.to_owned(),
            kind: short(type_name).to_owned(),
            values: vec![],
        };
        if depth >= MAX_DEPTH {
            return value;
        }
        if let Some(message) = self.messages.get(type_name.trim_start_matches('.')) {
            value.values = message
                .field
                .iter()
                .map(|field| {
                    let repeated = field.label() == Label::Repeated;
                    let mut inner = match field.r#type() {
                        Type::Message | Type::Group => {
                            self.value_of(field.type_name(), field.name(), depth + 1)
                        }
                        other => Value {
                            name: field.name().to_owned(),
                            kind: scalar_name(other, field.type_name()).to_owned(),
                            values: vec![],
                        },
                    };
                    if repeated {
                        inner.kind = format!("[]{}", inner.kind);
                    }
                    inner
                })
                .collect();
        }
        value
    }
}

fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

fn short(type_name: &str) -> &str {
    type_name.rsplit('.').next().unwrap_or(type_name)
}

/// Go's name for a protobuf scalar, as go-micro's reflection of generated structs shows it.
fn scalar_name(kind: Type, type_name: &str) -> &str {
    match kind {
        Type::Double => "float64",
        Type::Float => "float32",
        Type::Int64 | Type::Sint64 | Type::Sfixed64 => "int64",
        Type::Uint64 | Type::Fixed64 => "uint64",
        Type::Int32 | Type::Sint32 | Type::Sfixed32 => "int32",
        Type::Uint32 | Type::Fixed32 => "uint32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "uint8",
        Type::Enum => short(type_name),
        Type::Message | Type::Group => short(type_name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeter_endpoints_match_go_micro_shape() {
        let mut descriptors = Descriptors::default();
        descriptors
            .add_encoded(proto::greeter::FILE_DESCRIPTOR_SET)
            .unwrap();
        let endpoints = descriptors.endpoints("greeter.Greeter").unwrap();
        let names: Vec<_> = endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["Greeter.Hello", "Greeter.Test"]);
        let json = serde_json::to_string(&endpoints[0]).unwrap();
        assert_eq!(
            json,
            r#"{"request":{"name":"Request","type":"Request","values":[{"name":"name","type":"string","values":[]}]},"response":{"name":"Response","type":"Response","values":[{"name":"msg","type":"string","values":[]}]},"metadata":{},"name":"Greeter.Hello"}"#
        );
        assert!(descriptors.endpoints("other.Greeter").is_none());
    }

    #[test]
    fn garbage_descriptor_is_an_error() {
        assert!(Descriptors::default().add_encoded(b"\xff\xff\xff").is_err());
    }
}
