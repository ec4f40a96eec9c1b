//! etcd-client compiles etcd's protos in its build script and needs protoc. This build
//! dependency puts the vendored protoc (crate `protoc-bin-vendored`) in every build graph that
//! contains etcd-client, so cargo has it on disk before that script runs;
//! `.cargo/config.toml` points `PROTOC` at `tools/protoc`, which runs it.

fn main() {
    if let Err(err) = protoc_bin_vendored::protoc_bin_path() {
        println!("cargo::warning=no vendored protoc for this platform ({err}); set PROTOC");
    }
}
