//! Protobuf definitions used by micro-rs and its examples.
//!
//! `greeter` is the seed's service: `Greeter.Hello` and `Greeter.Test`.

/// The greeter package (`package greeter;`): messages, client and server.
#[allow(missing_docs, unreachable_pub)]
pub mod greeter {
    tonic::include_proto!("greeter");

    /// Encoded `FileDescriptorSet` of greeter.proto: give it to a micro server so it can list
    /// endpoints in the registry and serve reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/greeter_descriptor.bin"));
}
