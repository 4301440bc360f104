//! Reloading the validator of a running host (what SIGHUP does): a new version is swapped in
//! only after it loaded and passed its self-check; a broken one is refused and the running one
//! keeps serving.

use std::path::Path;

use super::harness::{TestHost, batch, now_ms, ok, point};
use crate::support::with_custom_section;

fn install(dir: &Path, bytes: &[u8]) {
    std::fs::write(dir.join(weir_pipeline::registry::VALIDATOR_FILE), bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_validator_reload_swaps_good_versions_and_refuses_broken_ones() {
    let functions = tempfile::tempdir().unwrap();
    let validator = weir_tests::component_bytes("validate.wasm");
    install(functions.path(), &validator);
    let dir = functions.path().to_path_buf();
    let test = TestHost::start_with(move |config| config.functions_dir = dir).await;
    let mut device = test.device("meter-1", "acme").await;
    let digest = || test.host().validator().current().digest().to_string();
    let first = digest();

    for (name, bytes) in [
        (
            "a validator that rejects everything",
            weir_tests::component_bytes("test/hostile-validator.wasm"),
        ),
        ("bytes that are no component", b"\0asm garbage".to_vec()),
    ] {
        install(functions.path(), &bytes);
        let refused = test.host().reload_validator().await;
        assert!(refused.is_err(), "{name} is refused");
        assert_eq!(digest(), first, "{name}: the running version stays");
    }
    let receipt = ok(&device
        .submit(&batch("before", vec![point("meter.power", 1.5, now_ms())]))
        .await);
    assert_eq!(receipt["accepted"], 1, "the old version keeps serving");

    install(functions.path(), &with_custom_section(&validator, b"v2"));
    test.host()
        .reload_validator()
        .await
        .expect("a good new version is swapped in");
    assert_ne!(digest(), first, "the new version serves");
    let receipt = ok(&device
        .submit(&batch("after", vec![point("meter.power", 2.5, now_ms())]))
        .await);
    assert_eq!(receipt["accepted"], 1);
}
