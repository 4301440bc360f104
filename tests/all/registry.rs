//! The function registry and per-region deploys: a version deployed to a region reaches every
//! host of that region and no other; a rollback brings the previous one back; a broken
//! component is refused at deploy; and a deploy under load fails no batch.
//!
//! Deploys go through `FunctionRegistry::connect` + `deploy`/`rollback`, what `weir functions`
//! runs. The deploying side gets a state directory of its own, so the hosts compile a new
//! version themselves (as hosts on other machines would): while the deploy waits for them (it
//! is staged), before the assignment. How soon the hosts switch after it (the second)
//! is measured by `cargo bench -p weir-tests --bench deploy`; here they must within
//! [`SWITCH_WITHIN`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weir::Config;
use weir::host::Host;
use weir_pipeline::registry::{FunctionName, FunctionRegistry};
use weir_pki::ClientAlpn;
use weir_storage::{ArtifactKind, DeviceRef};
use weir_tests::poll::eventually;

use crate::ingest::harness::{Device, TestHost, batch, now_ms, point};
use crate::support::with_custom_section;

/// The most a host of the region may take, in these tests, to run a newly assigned version once
/// the deploy (or rollback) returned. Generous on purpose: on a loaded machine (two cores, many
/// tests at once) a swap is slow, not broken, and a host that missed the notification still
/// picks the assignment up at its periodic check ([`weir_pipeline::registry::CHECK_INTERVAL`]).
/// The tight figure, the second, is measured by `cargo bench -p weir-tests --bench
/// deploy` (deploy to effect); deploys are staged, so a host only swaps in a version it
/// compiled before the assignment.
pub(crate) const SWITCH_WITHIN: Duration = Duration::from_secs(10);

/// How often the tests here read which version a host runs (memory only: cheap).
pub(crate) const SWITCH_POLL: Duration = Duration::from_millis(5);

/// The registry as `weir functions` opens it, with a state directory of its own.
pub(crate) async fn registry(test: &TestHost, state: &tempfile::TempDir) -> FunctionRegistry {
    let config = Config {
        state_dir: state.path().to_path_buf(),
        ..test.stack().config.clone()
    };
    FunctionRegistry::connect(config)
        .await
        .expect("opening the registry")
}

/// The digest of the validator `host` runs.
pub(crate) fn validator_of(host: &Host) -> String {
    host.validator().current().digest().to_owned()
}

/// A host of region `region` on the same servers as `test`.
pub(crate) async fn host_of_region(test: &TestHost, region: &str) -> Host {
    let config = Config {
        region: region.into(),
        ..test.stack().config.clone()
    };
    Host::start(config).await.expect("starting a host")
}

/// Submits batches from `device` back to back until `stop`, each of the points `points` makes
/// for a timestamp, asserting every one is accepted whole; answers how many it submitted.
pub(crate) fn keep_submitting(
    mut device: Device,
    id: impl Into<String>,
    stop: Arc<AtomicBool>,
    points: impl Fn(i64) -> Vec<serde_json::Value> + Send + 'static,
) -> tokio::task::JoinHandle<usize> {
    let id = id.into();
    tokio::spawn(async move {
        let mut batches = 0;
        while !stop.load(Ordering::SeqCst) {
            let points = points(now_ms());
            let count = points.len();
            let response = device
                .submit(&batch(&format!("{id}-{batches}"), points))
                .await;
            let body = String::from_utf8_lossy(&response.body).into_owned();
            assert_eq!(response.status, 200, "batch {batches} of {id}: {body}");
            assert_eq!(
                response.json()["accepted"],
                count,
                "batch {batches} of {id}: {body}"
            );
            batches += 1;
        }
        batches
    })
}

/// Whether every host in `hosts` runs validator `digest`.
pub(crate) fn all_run(hosts: &[&Host], digest: &str) -> bool {
    hosts.iter().all(|host| validator_of(host) == digest)
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_deploy_reaches_every_host_of_the_region_and_no_other() {
    let test = TestHost::start().await;
    let region = test.stack().config.region.clone();
    let second = test.stack().another_host().await.unwrap();
    let other_region = host_of_region(&test, "b").await;
    let state = tempfile::tempdir().unwrap();
    let registry = registry(&test, &state).await;
    let v1 = validator_of(test.host());
    let v1_bytes = weir_tests::component_bytes("validate.wasm");
    let v2_bytes = with_custom_section(&v1_bytes, b"v2");
    // The region's baseline: the version its hosts run from their files.
    let baseline = registry
        .deploy(FunctionName::Validator, &v1_bytes, &region)
        .await
        .unwrap();
    assert_eq!(baseline.sha256, v1);

    let deployed = registry
        .deploy(FunctionName::Validator, &v2_bytes, &region)
        .await
        .expect("a working validator is deployed");
    eventually(
        &format!("both hosts of region {region} run v2 {}", deployed.sha256),
        SWITCH_WITHIN,
        SWITCH_POLL,
        async || all_run(&[test.host(), &second], &deployed.sha256),
    )
    .await;
    assert!(deployed.changed);
    assert_eq!(deployed.previous.as_deref(), Some(v1.as_str()));
    assert_ne!(deployed.sha256, v1);
    let again = registry
        .deploy(FunctionName::Validator, &v2_bytes, &region)
        .await
        .unwrap();
    assert!(
        !again.changed,
        "deploying the current version changes nothing"
    );

    let mut device = test.device("meter-1", "acme").await;
    let receipt = device
        .submit(&batch("on-v2", vec![point("meter.power", 1.5, now_ms())]))
        .await;
    assert_eq!(receipt.json()["accepted"], 1, "the new version serves");

    let rolled_back = registry
        .rollback(FunctionName::Validator, &region)
        .await
        .expect("v1 was assigned before v2");
    assert_eq!(rolled_back.sha256, v1);
    eventually(
        &format!("both hosts of region {region} roll back to v1 {v1}"),
        SWITCH_WITHIN,
        SWITCH_POLL,
        async || all_run(&[test.host(), &second], &v1),
    )
    .await;

    // Past the periodic check as well: region b never ran anything but its own version.
    tokio::time::sleep(weir_pipeline::registry::CHECK_INTERVAL + Duration::from_millis(500)).await;
    assert_eq!(validator_of(&other_region), v1, "region b is untouched");
    assert!(
        registry
            .rollback(FunctionName::Validator, "b")
            .await
            .is_err(),
        "region b has nothing to roll back to"
    );

    let history = registry.list(None).await.unwrap();
    let rows: Vec<_> = history
        .iter()
        .map(|r| {
            (
                r.region.as_str(),
                r.sha256.as_str(),
                r.action.as_str(),
                r.current,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (region.as_str(), v1.as_str(), "rollback", true),
            (region.as_str(), deployed.sha256.as_str(), "deploy", false),
            (region.as_str(), v1.as_str(), "deploy", false),
        ]
    );
    assert!(history.iter().all(|r| r.kind == ArtifactKind::Validator));
    assert_eq!(history[1].size, v2_bytes.len() as i64);

    // A host started later in the region runs the region's version, not its file.
    registry
        .deploy(FunctionName::Validator, &v2_bytes, &region)
        .await
        .unwrap();
    let late = test.stack().another_host().await.unwrap();
    assert_eq!(validator_of(&late), deployed.sha256);
    // And SIGHUP does not take the region's validator away.
    late.reload_validator().await.unwrap();
    assert_eq!(validator_of(&late), deployed.sha256);

    for host in [second, other_region, late] {
        host.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_refuses_broken_components_at_deploy_and_nothing_changes() {
    let test = TestHost::start().await;
    let region = test.stack().config.region.clone();
    let state = tempfile::tempdir().unwrap();
    let registry = registry(&test, &state).await;
    let running = validator_of(test.host());
    let query = test
        .host()
        .query()
        .map(|query| query.function.current().digest().to_owned());

    for (name, function, bytes) in [
        (
            "garbage bytes",
            FunctionName::Validator,
            b"\0asm garbage".to_vec(),
        ),
        (
            "a query component as the validator",
            FunctionName::Validator,
            weir_tests::component_bytes("query.wasm"),
        ),
        (
            "a validator failing the self-check",
            FunctionName::Validator,
            weir_tests::component_bytes("test/hostile-validator.wasm"),
        ),
        (
            "a validator as the query function",
            FunctionName::Query,
            weir_tests::component_bytes("validate.wasm"),
        ),
    ] {
        let refused = registry.deploy(function, &bytes, &region).await;
        let message = format!(
            "{:#}",
            refused.err().unwrap_or_else(|| panic!("{name} is refused"))
        );
        assert!(message.starts_with("refused: "), "{name}: {message}");
    }
    assert!(
        registry.list(None).await.unwrap().is_empty(),
        "nothing was stored"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(validator_of(test.host()), running);
    assert_eq!(
        test.host()
            .query()
            .map(|query| query.function.current().digest().to_owned()),
        query
    );
    assert!(
        registry
            .deploy(FunctionName::Validator, b"", "not a region")
            .await
            .is_err(),
        "regions are checked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_version_a_host_cannot_load_is_refused_there_and_counted() {
    let test = TestHost::start().await;
    let region = test.stack().config.region.clone();
    let running = validator_of(test.host());
    // Behind the deploy's back (as a registry written by another wasmtime might look).
    test.storage()
        .deploy_artifact(&region, "validator", ArtifactKind::Validator, b"not wasm")
        .await
        .unwrap();
    let metrics = &test.host().metrics();
    eventually(
        "the refused version is counted",
        Duration::from_secs(10),
        Duration::from_millis(20),
        async || {
            let text = metrics.encode();
            if text.contains("weir_function_registry_loads_total{code=\"refused\"} 1") {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await;
    tokio::time::sleep(weir_pipeline::registry::CHECK_INTERVAL + Duration::from_millis(500)).await;
    assert_eq!(
        validator_of(test.host()),
        running,
        "the running version stays"
    );
    assert!(
        metrics
            .encode()
            .contains("weir_function_registry_loads_total{code=\"refused\"} 1"),
        "a refused version is not retried until reassigned"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_deploy_and_rollback_under_load_fail_no_batch() {
    const POINTS: usize = 20;
    let test = TestHost::unthrottled().await;
    let region = test.stack().config.region.clone();
    let second = test.stack().another_host().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let registry = registry(&test, &state).await;
    let v1 = validator_of(test.host());
    let v1_bytes = weir_tests::component_bytes("validate.wasm");
    let v2_bytes = with_custom_section(&v1_bytes, b"load");
    registry
        .deploy(FunctionName::Validator, &v1_bytes, &region)
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let mut loads = Vec::new();
    for (index, host) in [test.host(), &second].into_iter().enumerate() {
        let id = format!("meter-{index}");
        let tls = test.enrol(&id, "acme", ClientAlpn::H2).await;
        let device = test.device_at(host, tls, DeviceRef::new("acme", &id)).await;
        loads.push(keep_submitting(device, id, stop.clone(), |ts| {
            (0..POINTS)
                .map(|i| point(&format!("meter.k{i}"), i as f64, ts))
                .collect()
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    let deployed = registry
        .deploy(FunctionName::Validator, &v2_bytes, &region)
        .await
        .unwrap();
    eventually(
        "both hosts run v2 under load",
        SWITCH_WITHIN,
        SWITCH_POLL,
        async || all_run(&[test.host(), &second], &deployed.sha256),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    registry
        .rollback(FunctionName::Validator, &region)
        .await
        .unwrap();
    eventually(
        "both hosts roll back to v1 under load",
        SWITCH_WITHIN,
        SWITCH_POLL,
        async || all_run(&[test.host(), &second], &v1),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);

    for load in loads {
        let batches = load.await.expect("every batch was acknowledged");
        assert!(
            batches > 5,
            "the device kept submitting ({batches} batches)"
        );
    }
    second.shutdown().await;
}
