//! Support for Weir's integration tests and benchmarks: where the compiled components are, the
//! throw-away PostgreSQL and Redis servers (from `weir-services`), and the one way to wait for
//! something that happens in the background ([`poll::eventually`]).

pub mod native;
pub mod poll;
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

/// A component with one more custom section: a new version (new digest), same behaviour.
pub fn with_custom_section(component: &[u8], payload: &[u8]) -> Vec<u8> {
    let name = b"weir-test-version";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(payload);
    let mut bytes = component.to_vec();
    bytes.push(0); // custom section id
    bytes.push(u8::try_from(section.len()).expect("a short section"));
    bytes.extend(section);
    bytes
}
