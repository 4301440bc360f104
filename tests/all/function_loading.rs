//! Loading components: what does not match the world is refused and the old version keeps
//! serving; compiled artifacts are cached on disk and reused.

use std::time::Duration;

use weir_runtime::validator::{UnknownKeyPolicy, Value, Verdict};
use weir_runtime::{FunctionEngine, FunctionSlot, Limits, LoadError, ValidatorFunction};

use crate::support::{self, component_bytes, point};

async fn still_serves_v1(slot: &FunctionSlot<ValidatorFunction>) {
    let verdicts = slot
        .current()
        .validate(
            &[point("still.serving", Value::Float(1.0))],
            &[],
            support::policy(UnknownKeyPolicy::AcceptUntyped),
        )
        .await
        .expect("the old version keeps serving");
    assert!(matches!(verdicts[0], Verdict::Accepted(_)));
}

#[tokio::test(flavor = "multi_thread")]
async fn component_without_the_validator_export_is_refused_and_the_old_one_stays() {
    let engine = support::engine(Duration::from_secs(2), 32);
    let slot = FunctionSlot::new(support::load(&engine, support::VALIDATOR));
    let before = slot.current().digest().to_string();
    let error = slot
        .replace_with(|| ValidatorFunction::load(&engine, "empty", b"(component)"))
        .err()
        .expect("an empty component is refused");
    assert!(
        matches!(error, LoadError::WorldMismatch { .. }),
        "refused for its world: {error}"
    );
    assert_eq!(error.code(), "function_world_mismatch");
    assert!(
        error.to_string().contains("weir:functions/validate"),
        "{error}"
    );
    assert_eq!(slot.current().digest(), before);
    still_serves_v1(&slot).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn component_importing_what_the_host_lacks_is_refused() {
    let engine = support::engine(Duration::from_secs(2), 32);
    let slot = FunctionSlot::new(support::load(&engine, support::VALIDATOR));
    let wants_unknown_import = r#"(component
        (import "acme:secrets/vault" (instance (export "get" (func (param "k" string) (result string)))))
    )"#;
    let error = slot
        .replace_with(|| {
            ValidatorFunction::load(&engine, "greedy", wants_unknown_import.as_bytes())
        })
        .err()
        .expect("a component with unknown imports is refused");
    assert!(matches!(error, LoadError::WorldMismatch { .. }), "{error}");
    assert!(error.to_string().contains("acme:secrets/vault"), "{error}");
    still_serves_v1(&slot).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_that_are_no_component_are_refused() {
    let engine = support::engine(Duration::from_secs(2), 32);
    let slot = FunctionSlot::new(support::load(&engine, support::VALIDATOR));
    for (name, bytes) in [
        ("garbage", b"not wasm at all".to_vec()),
        ("core-module", b"(module)".to_vec()),
        (
            "truncated",
            component_bytes(support::VALIDATOR)[..1000].to_vec(),
        ),
    ] {
        let error = slot
            .replace_with(|| ValidatorFunction::load(&engine, name, &bytes))
            .err()
            .unwrap_or_else(|| panic!("{name} is refused"));
        assert!(
            matches!(error, LoadError::Invalid { .. }),
            "{name}: {error}"
        );
    }
    still_serves_v1(&slot).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_artifacts_are_cached_and_a_corrupt_one_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = component_bytes(support::VALIDATOR);
    let fresh_engine = || FunctionEngine::new(Limits::default(), Some(dir.path())).unwrap();

    let first = ValidatorFunction::load(&fresh_engine(), "validate", &bytes).unwrap();
    assert!(!first.was_cached(), "the first load compiles");
    let artifacts: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(artifacts.len(), 1, "one artifact written: {artifacts:?}");

    let engine = fresh_engine();
    let second = ValidatorFunction::load(&engine, "validate", &bytes).unwrap();
    assert!(second.was_cached(), "a new engine reuses the artifact");
    assert_eq!(second.digest(), first.digest());
    let verdicts = second
        .validate(
            &[point("cached.k", Value::Int(5))],
            &[],
            support::policy(UnknownKeyPolicy::AcceptUntyped),
        )
        .await
        .unwrap();
    assert!(matches!(verdicts[0], Verdict::Accepted(_)));

    std::fs::write(&artifacts[0], b"corrupted").unwrap();
    let third = ValidatorFunction::load(&fresh_engine(), "validate", &bytes).unwrap();
    assert!(!third.was_cached(), "a corrupt artifact is compiled again");
    assert!(
        std::fs::read(&artifacts[0]).unwrap().len() > 1000,
        "and rewritten"
    );
}
