//! Signed components: a host configured with the operator's Ed25519 public key loads only
//! components signed with its private half — from its functions directory at start and from the
//! registry at deploy — and refuses unsigned or foreign-signed ones, saying why.

use weir_pipeline::registry::FunctionName;
use weir_runtime::signature::PrivateKey;
use weir_tests::poll::eventually;

use crate::ingest::harness::{TestHost, batch, now_ms, ok, point};
use crate::registry::{SWITCH_POLL, SWITCH_WITHIN, all_run, registry, validator_of};
use crate::support::with_custom_section;

/// A functions directory holding the default validator signed with `key`.
fn signed_functions_dir(key: &PrivateKey) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let signed = key
        .sign(&weir_tests::component_bytes("validate.wasm"))
        .unwrap();
    std::fs::write(dir.path().join("validate.wasm"), signed).unwrap();
    dir
}

/// A host that loads only components signed with `key`, running the default validator signed
/// with it (from the returned directory, which must outlive the host).
pub(crate) async fn host_requiring_signatures(key: &PrivateKey) -> (TestHost, tempfile::TempDir) {
    let functions = signed_functions_dir(key);
    let (dir, public) = (functions.path().to_owned(), key.public_key().to_hex());
    let test = TestHost::start_with(move |config| {
        config.functions_dir = dir;
        config.functions.signing_public_key = Some(public);
    })
    .await;
    (test, functions)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_with_a_signing_key_refuses_to_start_on_unsigned_components() {
    let key = PrivateKey::generate().unwrap();
    let public = key.public_key().to_hex();
    let started = weir_tests::stack::Stack::start(move |config| {
        config.functions.signing_public_key = Some(public);
    })
    .await;
    let error = match started {
        Ok(_) => panic!("a host started on an unsigned validator"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("not signed"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_components_signed_with_the_configured_key_deploy() {
    let key = PrivateKey::generate().unwrap();
    let stranger = PrivateKey::generate().unwrap();
    let (test, _functions) = host_requiring_signatures(&key).await;
    let region = test.stack().config.region.clone();
    let state = tempfile::tempdir().unwrap();
    let registry = registry(&test, &state).await;
    let running = validator_of(test.host());

    let v2 = with_custom_section(&weir_tests::component_bytes("validate.wasm"), b"v2");
    for (bytes, why) in [
        (v2.clone(), "not signed"),
        (stranger.sign(&v2).unwrap(), "does not match"),
    ] {
        let error = registry
            .deploy(FunctionName::Validator, &bytes, &region)
            .await
            .expect_err("a badly signed validator was deployed");
        assert!(format!("{error:#}").contains(why), "{error:#}");
    }
    assert!(
        registry
            .assigned_version(&region, FunctionName::Validator)
            .await
            .unwrap()
            .is_none(),
        "a refused deploy assigned nothing"
    );
    assert_eq!(validator_of(test.host()), running);

    let signed = key.sign(&v2).unwrap();
    let assignment = registry
        .deploy(FunctionName::Validator, &signed, &region)
        .await
        .unwrap();
    eventually(
        "the host runs the signed version",
        SWITCH_WITHIN,
        SWITCH_POLL,
        async || all_run(&[test.host()], &assignment.sha256),
    )
    .await;
    let mut meter = test.device("m1", "acme").await;
    let receipt = ok(&meter
        .submit(&batch("b1", vec![point("meter.power", 1.5, now_ms())]))
        .await);
    assert_eq!(receipt["accepted"], 1, "{receipt}");
}
