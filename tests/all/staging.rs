//! Staged deploys: a deploy waits until every live host of the region has prepared the version,
//! and no longer than its prepare timeout for a host that never answers; a host that cannot run
//! the version refuses the deploy, naming itself and its reason, and nothing is assigned; a host
//! that stopped is not waited for. (That the region then switches is asserted by the `registry`
//! and `rules_registry` tests; how soon, by `cargo bench -p weir-tests --bench deploy`.)

use std::time::{Duration, Instant};

use weir::Config;
use weir_pipeline::registry::{FunctionName, FunctionRegistry, LIVE_WITHIN};
use weir_runtime::signature::PrivateKey;
use weir_tests::poll::eventually;

use crate::ingest::harness::TestHost;
use crate::registry::{SWITCH_POLL, SWITCH_WITHIN, all_run, registry, validator_of};
use crate::signing::host_requiring_signatures;
use crate::support::with_custom_section;

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_cannot_run_a_version_refuses_the_deploy_and_nothing_is_assigned() {
    // The region's host requires signed components; the operator's machine was not told.
    let key = PrivateKey::generate().unwrap();
    let (test, _functions) = host_requiring_signatures(&key).await;
    let region = test.stack().config.region.clone();
    let state = tempfile::tempdir().unwrap();
    let mut operator = Config {
        state_dir: state.path().to_path_buf(),
        ..test.stack().config.clone()
    };
    operator.functions.signing_public_key = None;
    let registry = FunctionRegistry::connect(operator).await.unwrap();
    let running = validator_of(test.host());

    let unsigned = with_custom_section(&weir_tests::component_bytes("validate.wasm"), b"v2");
    let error = registry
        .deploy(FunctionName::Validator, &unsigned, &region)
        .await
        .expect_err("a version the region's host cannot run was deployed");
    let message = format!("{error:#}");
    assert!(
        message.starts_with("refused: host ") && message.contains("not signed"),
        "{message}"
    );
    assert!(
        registry
            .assigned_version(&region, FunctionName::Validator)
            .await
            .unwrap()
            .is_none(),
        "a refused deploy assigned nothing"
    );
    let staged = test
        .storage()
        .staged_artifacts(&region, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(
        staged.is_empty(),
        "the refused stage is withdrawn: {staged:?}"
    );
    assert_eq!(
        validator_of(test.host()),
        running,
        "the running version stays"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_host_delays_a_deploy_by_the_prepare_timeout_and_a_stopped_one_not_at_all() {
    const PREPARE_TIMEOUT: Duration = Duration::from_secs(5);
    let test = TestHost::start().await;
    let region = test.stack().config.region.clone();
    let second = test.stack().another_host().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let registry = registry(&test, &state)
        .await
        .with_prepare_timeout(PREPARE_TIMEOUT);
    let v1 = weir_tests::component_bytes("validate.wasm");
    registry
        .deploy(FunctionName::Validator, &v1, &region)
        .await
        .unwrap();
    // A host that enrolled, then hung: it never prepares anything.
    test.storage().host_seen("hung", &region).await.unwrap();

    let started = Instant::now();
    let mut last = None;
    let deployed = registry
        .deploy_reporting(
            FunctionName::Validator,
            &with_custom_section(&v1, b"v2"),
            &region,
            &mut |readiness| last = Some(readiness.clone()),
        )
        .await
        .expect("a deploy goes on after its prepare timeout");
    let waited = started.elapsed();
    let last = last.expect("the deploy reported its progress");
    assert!(waited >= PREPARE_TIMEOUT, "it waited {waited:?}");
    assert!(waited < LIVE_WITHIN, "it waited {waited:?}");
    assert_eq!(last.hosts.len(), 3, "{last:?}");
    assert_eq!(last.done(), 2, "both running hosts prepared it: {last:?}");
    assert_eq!(last.pending().collect::<Vec<_>>(), ["hung"]);
    eventually(
        "both hosts run the deployed version",
        SWITCH_WITHIN,
        SWITCH_POLL,
        async || all_run(&[test.host(), &second], &deployed.sha256),
    )
    .await;

    // A host that stops leaves the roll at once; the hung one, once silent for LIVE_WITHIN.
    second.shutdown().await;
    tokio::time::sleep(
        (LIVE_WITHIN + Duration::from_millis(300)).saturating_sub(started.elapsed()),
    )
    .await;
    let started = Instant::now();
    let mut last = None;
    let rolled_back = registry
        .rollback_reporting(FunctionName::Validator, &region, &mut |readiness| {
            last = Some(readiness.clone());
        })
        .await
        .unwrap();
    let last = last.expect("the rollback reported its progress");
    assert!(
        started.elapsed() < PREPARE_TIMEOUT,
        "the rollback waited {:?} for {last:?}",
        started.elapsed()
    );
    assert_eq!((last.done(), last.hosts.len()), (1, 1), "{last:?}");
    eventually(
        "the host rolls back",
        SWITCH_WITHIN,
        SWITCH_POLL,
        async || all_run(&[test.host()], &rolled_back.sha256),
    )
    .await;
}
