//! A test whose peer is missing fails, naming the peer and how to get it: it never returns
//! early reporting `ok` without having checked anything. A peer that truly cannot be had on a
//! machine is an `#[ignore = "reason"]` on the test instead, shown as ignored.

use std::path::{Path, PathBuf};

/// `found`, or a panic that names `peer` and says how to get it (`how`).
#[track_caller]
pub fn require<T>(peer: &str, found: Option<T>, how: &str) -> T {
    match found {
        Some(found) => found,
        None => panic!(
            "{peer} is missing, so this test cannot check anything and fails (it never passes \
             without its peer). To get it: {how}"
        ),
    }
}

/// The directory of the go-micro interop binaries (`greeter`, `gocall`, `goregistry`):
/// `MICRO_INTEROP_BIN` (scripts/test sets it after building them), else the workspace's
/// `target/interop`. Missing: the test fails saying how to build them.
#[track_caller]
pub fn go_binaries() -> PathBuf {
    let dir = std::env::var_os("MICRO_INTEROP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/interop"));
    let found = ["greeter", "gocall", "goregistry"]
        .iter()
        .all(|name| dir.join(name).is_file());
    require(
        &format!("the go-micro interop binaries in {}", dir.display()),
        found.then_some(dir),
        "run scripts/test (it builds them with Go and sets MICRO_INTEROP_BIN), or \
         `(cd interop && go build -o ../target/interop/ ./cmd/...)` and \
         MICRO_INTEROP_BIN=$PWD/target/interop",
    )
}

/// The built Jaeger v2 binary ([`crate::peers::jaeger_binary`]). Missing: the test fails
/// saying how to build it.
#[track_caller]
pub fn jaeger() -> PathBuf {
    require(
        "Jaeger v2 (/var/cache/micro-rs/jaeger/jaeger or MICRO_JAEGER_BIN)",
        crate::peers::jaeger_binary(),
        "run scripts/test, which builds it once per machine from the Go module \
         github.com/jaegertracing/jaeger into /var/cache/micro-rs/jaeger",
    )
}

/// The workspace root (this crate's parent directory).
fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_peer_fails_naming_it_and_how_to_get_it() {
        assert_eq!(require("x", Some(1), "-"), 1);
        let panic = std::panic::catch_unwind(|| require::<()>("Zork", None, "apt-get zork"))
            .expect_err("a missing peer fails");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.contains("Zork is missing") && message.contains("apt-get zork"),
            "{message}"
        );
    }
}
