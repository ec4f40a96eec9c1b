//! Compiles the protos with a vendored protoc, so no system protoc is needed, and writes the
//! descriptor set that servers use for their endpoint list and for reflection.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // `prost::Name` on every message: events list their message type (`greeter.Response`).
    config.enable_type_names();
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("greeter_descriptor.bin"))
        .compile_with_config(config, &["proto/greeter.proto"], &["proto"])?;
    Ok(())
}
