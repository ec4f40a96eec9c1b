# Builds the example services (greeter1, greeter2, demo). protoc comes from the
# protoc-bin-vendored crate (see tools/protoc), so the image needs only the Rust toolchain.
#
# Layers, so that a change to the workspace rebuilds only the workspace: cargo-chef records
# the manifests and lock file (recipe.json, which changes only when they do), the `cook` layer
# builds every dependency from that recipe alone, and only then the sources are copied in.
# Works with the classic builder (docker-compose 1.29) and BuildKit alike.
FROM rust:1-bookworm AS chef
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

FROM chef AS plan
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=plan /src/recipe.json recipe.json
# etcd-client's build script finds protoc through .cargo/config.toml -> tools/protoc.
COPY .cargo .cargo
COPY tools tools
RUN cargo chef cook --release --recipe-path recipe.json -p examples --bins
COPY . .
RUN cargo build --release -p examples --bins

FROM debian:bookworm-slim
# wget for the compose file's healthchecks (GET /ready on the metrics port); openssl for the
# mutual-TLS variant's certificates (docker-compose.mtls.yml runs deploy/mtls/make-certs.sh).
RUN apt-get update \
 && apt-get install -y --no-install-recommends wget openssl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/greeter1 /src/target/release/greeter2 /src/target/release/demo /usr/local/bin/
ENV RUST_LOG=info
