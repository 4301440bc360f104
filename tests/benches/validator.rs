//! Validator throughput: the default validator as a WASM component (a fresh sandboxed instance
//! per batch, as the host runs it) against the same library called natively, in one run.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p weir-tests --bench validator` after
//! `cargo xtask components`). Prints points/s for both and the ratio.

use std::time::{Duration, Instant};

use weir_runtime::validator::{
    DataType, KeyMetadata, Point, Policy, UnknownKeyPolicy, Value, Verdict,
};
use weir_runtime::{FunctionEngine, Limits, ValidatorFunction};
use weir_tests::{component_path, native};

const BATCH: usize = 100;
const RUN_FOR: Duration = Duration::from_secs(3);
const NOW: i64 = 1_767_225_600_000;

fn batch() -> (Vec<Point>, Vec<KeyMetadata>) {
    let kinds = [
        (
            "meter.energy.total",
            DataType::Uint64,
            Value::Int(1_234_567),
        ),
        ("meter.power", DataType::Float64, Value::Float(1534.25)),
        ("meter.voltage.l1", DataType::Float32, Value::Float(231.7)),
        ("meter.temperature", DataType::Int16, Value::Int(215)),
        (
            "meter.state",
            DataType::Enumeration,
            Value::Text("on".into()),
        ),
    ];
    let metadata = kinds
        .iter()
        .map(|(key, data_type, _)| KeyMetadata {
            key: key.to_string(),
            data_type: *data_type,
            min: None,
            max: None,
            value_map: if *data_type == DataType::Enumeration {
                vec![(0, "off".into()), (1, "on".into())]
            } else {
                Vec::new()
            },
        })
        .collect();
    let points = (0..BATCH)
        .map(|i| {
            let (key, _, value) = &kinds[i % kinds.len()];
            Point {
                key: key.to_string(),
                value: value.clone(),
                ts: NOW - (BATCH - i) as i64 * 1000,
            }
        })
        .collect();
    (points, metadata)
}

fn policy() -> Policy {
    Policy {
        now: NOW,
        max_future_skew_ms: 300_000,
        max_age_ms: 3650 * 24 * 3600 * 1000,
        unknown_keys: UnknownKeyPolicy::AcceptUntyped,
        max_text_length: 1024,
    }
}

/// Runs `step` (one batch) repeatedly for [`RUN_FOR`]; returns points per second.
fn measure(mut step: impl FnMut()) -> f64 {
    for _ in 0..50 {
        step();
    }
    let started = Instant::now();
    let mut batches = 0u64;
    while started.elapsed() < RUN_FOR {
        step();
        batches += 1;
    }
    (batches * BATCH as u64) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = FunctionEngine::new(Limits::default(), None).unwrap();
    let validator =
        ValidatorFunction::load_file(&engine, &component_path("validate.wasm")).unwrap();
    let (points, metadata) = batch();

    let native_points: Vec<_> = points.iter().map(native::point).collect();
    let native_metadata: Vec<_> = metadata.iter().map(native::metadata).collect();
    let native_policy = native::policy(&policy());
    let native_rate = measure(|| {
        let verdicts =
            weir_validate::validate_batch(&native_points, &native_metadata, &native_policy);
        assert_eq!(verdicts.len(), BATCH);
        std::hint::black_box(verdicts);
    });

    let component_rate = measure(|| {
        let verdicts = runtime
            .block_on(validator.validate(&points, &metadata, policy()))
            .unwrap();
        assert!(verdicts.iter().all(|v| matches!(v, Verdict::Accepted(_))));
        std::hint::black_box(verdicts);
    });

    println!("validator throughput, batches of {BATCH} points, one core, {RUN_FOR:?} each");
    println!("  native library        {:>12.0} points/s", native_rate);
    println!(
        "  WASM component        {:>12.0} points/s  ({:.1} µs per batch, fresh instance each)",
        component_rate,
        BATCH as f64 / component_rate * 1e6
    );
    println!(
        "  component / native    {:>12.3}",
        component_rate / native_rate
    );
}
