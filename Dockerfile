# Builds the example services (greeter1, greeter2, demo). protoc comes from the
# protoc-bin-vendored crate (see tools/protoc), so the image needs only the Rust toolchain.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p examples --bins

FROM debian:bookworm-slim
COPY --from=build /src/target/release/greeter1 /src/target/release/greeter2 /src/target/release/demo /usr/local/bin/
ENV RUST_LOG=info
