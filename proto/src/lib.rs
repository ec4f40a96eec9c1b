//! Protobuf definitions used by micro-rs and its examples (greeter).
