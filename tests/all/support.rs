//! Shared fixtures of the integration tests: engines, loaded functions, points.

use std::time::Duration;

use weir_runtime::validator::{KeyMetadata, Point, Policy, UnknownKeyPolicy, Value};
use weir_runtime::{FunctionEngine, Limits, ValidatorFunction};
pub use weir_tests::{component_bytes, component_path};

/// The default validator's component.
pub const VALIDATOR: &str = "validate.wasm";
/// The test-only validator that loops, hogs memory, traps or marks its answers on request.
pub const HOSTILE: &str = "test/hostile-validator.wasm";
/// The message of every rejection the hostile validator gives when it behaves.
pub const HOSTILE_MARK: &str = "judged by hostile-validator";

/// Unix milliseconds used as "now" by the tests: 2026-01-01T00:00:00Z.
pub const NOW: i64 = 1_767_225_600_000;

/// An engine with the given deadline and memory cap, without an artifact cache.
pub fn engine(deadline: Duration, memory_mb: usize) -> FunctionEngine {
    FunctionEngine::new(
        Limits {
            deadline,
            memory_bytes: memory_mb << 20,
            max_instances: 16,
        },
        None,
    )
    .expect("building the function engine")
}

/// Loads a component from the functions directory.
pub fn load(engine: &FunctionEngine, relative: &str) -> ValidatorFunction {
    ValidatorFunction::load_file(engine, &component_path(relative))
        .unwrap_or_else(|e| panic!("loading {relative}: {e}"))
}

/// A point at [`NOW`].
pub fn point(key: &str, value: Value) -> Point {
    Point {
        key: key.to_string(),
        value,
        ts: NOW,
    }
}

/// The policy the tests validate under: 5 minutes of skew, 10 years of age.
pub fn policy(unknown_keys: UnknownKeyPolicy) -> Policy {
    Policy {
        now: NOW,
        max_future_skew_ms: 5 * 60 * 1000,
        max_age_ms: 3650 * 24 * 3600 * 1000,
        unknown_keys,
        max_text_length: 16,
    }
}

/// Metadata without range or value map.
pub fn meta(key: &str, data_type: weir_runtime::validator::DataType) -> KeyMetadata {
    KeyMetadata {
        key: key.to_string(),
        data_type,
        min: None,
        max: None,
        value_map: Vec::new(),
    }
}

pub use weir_tests::with_custom_section;
