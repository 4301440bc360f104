//! Support for Weir's integration tests and benchmarks: where the compiled components are, and
//! the throw-away PostgreSQL and Redis servers (from `weir-services`).

pub mod native;
pub mod stack;

use std::path::PathBuf;

pub use weir_services::{PostgresServer, RedisServer};

/// Directory of the compiled components: `WEIR_FUNCTIONS_DIR`, else `target/functions`.
pub fn functions_dir() -> PathBuf {
    match std::env::var_os("WEIR_FUNCTIONS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/functions"),
    }
}

/// Path of a compiled component, relative to [`functions_dir`]; panics with the command that
/// builds it when it is missing.
pub fn component_path(relative: &str) -> PathBuf {
    let path = functions_dir().join(relative);
    assert!(
        path.exists(),
        "component {} is missing: build the components with `cargo xtask components` \
         (or run the whole suite with `cargo xtask test`)",
        path.display()
    );
    path
}

/// The bytes of a compiled component (see [`component_path`]).
pub fn component_bytes(relative: &str) -> Vec<u8> {
    let path = component_path(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
