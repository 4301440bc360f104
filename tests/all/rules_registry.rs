//! Alert rule sets and the alerter in the function registry: a rule set applied to a region
//! (`weir rules apply`) is checked by the region's alerter and refused with its message, reaches
//! every host of the region (within [`SWITCH_WITHIN`]) and no other, and rolls back; a new
//! alerter swaps in live; and a new rule set and a new validator deployed together under load
//! fail no submit. How soon a region switches is measured by the deploy bench.
//!
//! The hosts here run without a rules directory: the alerter component alone turns alerting on,
//! and the registry gives them their rules. What a host runs is read from the host itself (the
//! rule set's version, SHA-256 of its text), and confirmed by the events the new rules raise
//! (each event carries its rule's version).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value as Json, json};
use weir::host::Host;
use weir_pipeline::registry::FunctionName;
use weir_pki::ClientAlpn;
use weir_storage::{DeviceRef, artifact_sha256};
use weir_tests::poll::eventually;

use crate::ingest::harness::{Device, TestHost, batch, now_ms, ok, point};
use crate::registry::{
    SWITCH_POLL, SWITCH_WITHIN, all_run, host_of_region, keep_submitting, registry, validator_of,
};
use crate::support::with_custom_section;

const ORG: &str = "acme";

/// How long the tests here wait for a baseline rule set before they call it lost (the switches
/// under test must happen within [`SWITCH_WITHIN`]).
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// acme's rules, version `version`: a warning above `threshold`.
fn hot_rules(version: u32, threshold: u32) -> String {
    format!(
        "[[rules]]\nid = \"meter-hot\"\nversion = {version}\nkeys = \"meter.*.temperature\"\n\
         severity = {{ warning = \"value > {threshold}\" }}\n"
    )
}

/// The version (SHA-256 of the text) of `org`'s rule set `host` evaluates with, if any.
fn rules_of(host: &Host, org: &str) -> Option<String> {
    let alerting = host.alerting().expect("alerting is on");
    alerting
        .rules()
        .current()
        .rule_set(org)
        .map(|set| set.version().to_owned())
}

/// The digest of the alerter `host` runs.
fn alerter_of(host: &Host) -> String {
    let alerting = host.alerting().expect("alerting is on");
    alerting.function.current().digest().to_owned()
}

/// Whether every host in `hosts` evaluates `org` with rule set `version`.
fn all_use_rules(hosts: &[&Host], org: &str, version: &str) -> bool {
    hosts
        .iter()
        .all(|host| rules_of(host, org).as_deref() == Some(version))
}

/// A new device `id` of acme connected to `host`.
async fn device_on(test: &TestHost, host: &Host, id: &str) -> Device {
    let tls = test.enrol(id, ORG, ClientAlpn::H2).await;
    test.device_at(host, tls, DeviceRef::new(ORG, id)).await
}

/// Submits one temperature reading, accepted.
async fn send(device: &mut Device, batch_id: &str, value: f64) {
    let body = batch(
        batch_id,
        vec![point("meter.1.temperature", value, now_ms())],
    );
    let receipt = ok(&device.submit(&body).await);
    assert_eq!(receipt["accepted"], json!(1), "{receipt}");
}

/// The `(rule_id, rule_version, state)` of the events of `device`, through `/v1/events`.
async fn events_of(test: &TestHost, token: &str, device: &str) -> Vec<(String, u64, String)> {
    let authorization = format!("Bearer {token}");
    let (status, body) = test
        .api_request(
            Method::GET,
            &format!("/v1/events?device={device}"),
            &[("authorization", &authorization)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body: Json = serde_json::from_str(&body).unwrap();
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["rule_id"].as_str().unwrap().to_owned(),
                e["rule_version"].as_u64().unwrap(),
                e["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The rule version that raises on `host` for 60° (a fresh device each time): `None` when
/// nothing raises.
async fn raising_version(test: &TestHost, token: &str, host: &Host, id: &str) -> Option<u64> {
    let mut device = device_on(test, host, id).await;
    send(&mut device, &format!("{id}-1"), 60.0).await;
    let events = events_of(test, token, id).await;
    assert!(events.len() <= 1, "{events:?}");
    events.first().map(|(rule, version, _)| {
        assert_eq!(rule, "meter-hot");
        *version
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_apply_refuses_a_bad_rule_set_with_the_alerters_message_and_stores_nothing() {
    let test = TestHost::start().await;
    let region = test.stack().config.region.clone();
    let state = tempfile::tempdir().unwrap();
    let registry = registry(&test, &state).await;

    for (what, text, expected) in [
        (
            "bad CEL",
            hot_rules(1, 80).replace("value > 80", "value >> 80"),
            "rule \"meter-hot\" v1: severity.warning: invalid CEL expression `value >> 80`",
        ),
        (
            "an unknown field",
            hot_rules(1, 80).replace("severity", "severtiy"),
            "unknown field `severtiy`",
        ),
    ] {
        let refused = registry.apply_rules(ORG, &text, &region).await;
        let message = format!(
            "{:#}",
            refused.err().unwrap_or_else(|| panic!("{what} is refused"))
        );
        assert!(
            message.starts_with("refused: the rules of acme: ") && message.contains(expected),
            "{what}: {message}"
        );
    }
    let refused = registry
        .deploy(
            FunctionName::Alerter,
            &weir_tests::component_bytes("validate.wasm"),
            &region,
        )
        .await;
    let message = format!("{:#}", refused.expect_err("a validator is no alerter"));
    assert!(message.starts_with("refused: "), "{message}");
    assert!(
        registry
            .apply_rules("", &hot_rules(1, 80), &region)
            .await
            .is_err(),
        "organisations are checked"
    );

    assert!(
        registry.list(None).await.unwrap().is_empty(),
        "nothing was stored"
    );
    assert!(registry.list_rules(None).await.unwrap().is_empty());
    assert!(
        test.storage()
            .current_artifacts(&region)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rules_of(test.host(), ORG), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_applied_to_a_region_reach_its_hosts_and_no_other_and_roll_back() {
    let test = TestHost::start().await;
    let region = test.stack().config.region.clone();
    let second = test.stack().another_host().await.unwrap();
    let other_region = host_of_region(&test, "b").await;
    let region_a = [test.host(), &second];
    let state = tempfile::tempdir().unwrap();
    let registry = registry(&test, &state).await;
    let token = test.api_token(ORG).await;
    for host in [test.host(), &second, &other_region] {
        assert_eq!(
            rules_of(host, ORG),
            None,
            "no rules directory, no rules yet"
        );
    }

    let v1 = registry
        .apply_rules(ORG, &hot_rules(1, 80), &region)
        .await
        .expect("good rules are applied");
    assert_eq!(v1.rules, [("meter-hot".to_owned(), 1)]);
    assert_eq!(
        v1.assignment.sha256,
        artifact_sha256(hot_rules(1, 80).as_bytes())
    );
    eventually(
        &format!("both hosts of region {region} use rules v1"),
        SWITCH_WITHIN,
        SWITCH_POLL,
        async || all_use_rules(&region_a, ORG, &v1.assignment.sha256),
    )
    .await;

    let v2 = registry
        .apply_rules(ORG, &hot_rules(2, 50), &region)
        .await
        .unwrap();
    assert!(v2.assignment.changed);
    assert_eq!(v2.assignment.previous.as_ref(), Some(&v1.assignment.sha256));
    eventually(
        &format!("both hosts of region {region} use rules v2"),
        SWITCH_WITHIN,
        SWITCH_POLL,
        async || all_use_rules(&region_a, ORG, &v2.assignment.sha256),
    )
    .await;
    assert!(
        !registry
            .apply_rules(ORG, &hot_rules(2, 50), &region)
            .await
            .unwrap()
            .assignment
            .changed,
        "applying the current rules changes nothing"
    );
    // Both hosts of the region raise under the new rule; region b has no rules at all.
    assert_eq!(
        raising_version(&test, &token, test.host(), "a1-v2").await,
        Some(2)
    );
    assert_eq!(
        raising_version(&test, &token, &second, "a2-v2").await,
        Some(2)
    );
    assert_eq!(
        raising_version(&test, &token, &other_region, "b-v2").await,
        None
    );

    let rolled_back = registry.rollback_rules(ORG, &region).await.unwrap();
    assert_eq!(rolled_back.sha256, v1.assignment.sha256);
    eventually(
        &format!("both hosts of region {region} roll back to rules v1"),
        SWITCH_WITHIN,
        SWITCH_POLL,
        async || all_use_rules(&region_a, ORG, &v1.assignment.sha256),
    )
    .await;
    // v1 again: 60° raises nothing, 90° raises rule version 1.
    assert_eq!(
        raising_version(&test, &token, &second, "a2-back").await,
        None
    );
    let mut device = device_on(&test, test.host(), "a1-back").await;
    send(&mut device, "a1-back-90", 90.0).await;
    assert_eq!(
        events_of(&test, &token, "a1-back").await,
        [("meter-hot".to_owned(), 1, "raised".to_owned())]
    );

    // Past the periodic check as well: region b never got a rule set.
    tokio::time::sleep(weir_pipeline::registry::CHECK_INTERVAL + Duration::from_millis(500)).await;
    assert_eq!(rules_of(&other_region, ORG), None, "region b is untouched");
    assert!(
        registry.rollback_rules(ORG, "b").await.is_err(),
        "region b has nothing to roll back to"
    );

    let history = registry.list_rules(None).await.unwrap();
    let rows: Vec<_> = history
        .iter()
        .map(|set| {
            (
                set.record.region.as_str(),
                set.org.as_str(),
                set.record.sha256.as_str(),
                set.record.action.as_str(),
                set.record.current,
                set.rules.clone().unwrap(),
            )
        })
        .collect();
    let (sha1, sha2) = (v1.assignment.sha256.as_str(), v2.assignment.sha256.as_str());
    let rules = |version| vec![("meter-hot".to_owned(), version)];
    assert_eq!(
        rows,
        [
            (region.as_str(), ORG, sha1, "rollback", true, rules(1)),
            (region.as_str(), ORG, sha2, "deploy", false, rules(2)),
            (region.as_str(), ORG, sha1, "deploy", false, rules(1)),
        ]
    );
    assert_eq!(history[0].record.name, "rules:acme");

    // A host started later in the region evaluates with the region's rules.
    let late = test.stack().another_host().await.unwrap();
    assert_eq!(rules_of(&late, ORG).as_deref(), Some(sha1));

    for host in [second, other_region, late] {
        host.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alerter_deployed_to_a_region_swaps_live_on_its_hosts_and_keeps_their_rules() {
    let test = TestHost::start().await;
    let region = test.stack().config.region.clone();
    let second = test.stack().another_host().await.unwrap();
    let other_region = host_of_region(&test, "b").await;
    let state = tempfile::tempdir().unwrap();
    let registry = registry(&test, &state).await;
    let token = test.api_token(ORG).await;
    let rules = registry
        .apply_rules(ORG, &hot_rules(1, 50), &region)
        .await
        .unwrap();
    eventually(
        "both hosts use the baseline rules",
        GIVE_UP_AFTER,
        SWITCH_POLL,
        async || all_use_rules(&[test.host(), &second], ORG, &rules.assignment.sha256),
    )
    .await;
    let v1 = alerter_of(test.host());
    let v2_bytes = with_custom_section(&weir_tests::component_bytes("alert.wasm"), b"v2");

    let mut reports = Vec::new();
    let deployed = registry
        .deploy_reporting(
            FunctionName::Alerter,
            &v2_bytes,
            &region,
            &mut |readiness| reports.push((readiness.done(), readiness.hosts.len())),
        )
        .await
        .expect("a working alerter accepting the region's rules is deployed");
    assert_ne!(deployed.sha256, v1);
    assert_eq!(
        reports.last(),
        Some(&(2, 2)),
        "the deploy waited for both hosts of region {region} (not region b's) to prepare: {reports:?}"
    );
    eventually(
        &format!("both hosts of region {region} run the new alerter"),
        SWITCH_WITHIN,
        SWITCH_POLL,
        async || {
            [test.host(), &second]
                .iter()
                .all(|host| alerter_of(host) == deployed.sha256)
        },
    )
    .await;
    // The rules stay in force under the new alerter.
    assert_eq!(
        rules_of(&second, ORG),
        Some(rules.assignment.sha256.clone())
    );
    assert_eq!(raising_version(&test, &token, &second, "a2").await, Some(1));

    registry
        .rollback(FunctionName::Alerter, &region)
        .await
        .expect_err("the region ran no registry alerter before");
    tokio::time::sleep(weir_pipeline::registry::CHECK_INTERVAL + Duration::from_millis(500)).await;
    assert_eq!(alerter_of(&other_region), v1, "region b is untouched");
    for host in [second, other_region] {
        host.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_and_validator_hot_swap_under_load_fail_no_submit_and_roll_back() {
    const POINTS: usize = 20;
    let test = TestHost::unthrottled().await;
    let region = test.stack().config.region.clone();
    let second = test.stack().another_host().await.unwrap();
    let other_region = host_of_region(&test, "b").await;
    let region_a = [test.host(), &second];
    let state = tempfile::tempdir().unwrap();
    let registry = registry(&test, &state).await;
    let token = test.api_token(ORG).await;

    // Region A's baseline: the validator of the files, rules v1.
    let validator_v1 = validator_of(test.host());
    let validator_v1_bytes = weir_tests::component_bytes("validate.wasm");
    let validator_v2_bytes = with_custom_section(&validator_v1_bytes, b"rules-load");
    registry
        .deploy(FunctionName::Validator, &validator_v1_bytes, &region)
        .await
        .unwrap();
    let rules_v1 = registry
        .apply_rules(ORG, &hot_rules(1, 80), &region)
        .await
        .unwrap()
        .assignment
        .sha256;
    eventually(
        "region A uses the baseline rules",
        GIVE_UP_AFTER,
        SWITCH_POLL,
        async || all_use_rules(&region_a, ORG, &rules_v1),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut loads = Vec::new();
    for (id, host) in [
        ("load-a1", test.host()),
        ("load-a2", &second),
        ("load-b", &other_region),
    ] {
        let device = device_on(&test, host, id).await;
        // 60°: nothing under rules v1, a warning under v2.
        loads.push(keep_submitting(device, id, stop.clone(), |ts| {
            (0..POINTS)
                .map(|i| point(&format!("meter.{i}.temperature"), 60.0, ts))
                .collect()
        }));
    }

    tokio::time::sleep(Duration::from_millis(300)).await;
    // Both at once; each switch is timed from its own commit.
    let rules_v2_text = hot_rules(2, 50);
    let (rules_v2, validator_v2) = tokio::join!(
        async {
            let applied = registry.apply_rules(ORG, &rules_v2_text, &region).await;
            let sha256 = applied.unwrap().assignment.sha256;
            eventually(
                "under load, region A uses rules v2",
                SWITCH_WITHIN,
                SWITCH_POLL,
                async || all_use_rules(&region_a, ORG, &sha256),
            )
            .await;
            sha256
        },
        async {
            let deployed = registry
                .deploy(FunctionName::Validator, &validator_v2_bytes, &region)
                .await;
            let sha256 = deployed.unwrap().sha256;
            eventually(
                "under load, region A runs the new validator",
                SWITCH_WITHIN,
                SWITCH_POLL,
                async || all_run(&region_a, &sha256),
            )
            .await;
            sha256
        },
    );
    assert_ne!(rules_v2, rules_v1);
    assert_ne!(validator_v2, validator_v1);
    // The new rule raises on region A's devices while they keep submitting.
    for id in ["load-a1", "load-a2"] {
        eventually(
            &format!("{id} raises under rules v2"),
            Duration::from_secs(5),
            Duration::from_millis(100),
            async || {
                let events = events_of(&test, &token, id).await;
                !events.is_empty()
                    && events
                        .iter()
                        .all(|(_, version, state)| *version == 2 && state == "raised")
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    tokio::join!(
        async {
            let rolled_back = registry.rollback_rules(ORG, &region).await;
            assert_eq!(rolled_back.unwrap().sha256, rules_v1);
            eventually(
                "under load, region A rolls back to rules v1",
                SWITCH_WITHIN,
                SWITCH_POLL,
                async || all_use_rules(&region_a, ORG, &rules_v1),
            )
            .await;
        },
        async {
            let rolled_back = registry.rollback(FunctionName::Validator, &region).await;
            assert_eq!(rolled_back.unwrap().sha256, validator_v1);
            eventually(
                "under load, region A rolls back to the first validator",
                SWITCH_WITHIN,
                SWITCH_POLL,
                async || all_run(&region_a, &validator_v1),
            )
            .await;
        },
    );
    // Rules v1 again: 60° is below its threshold, and the next batches clear the alerts.
    for id in ["load-a1", "load-a2"] {
        eventually(
            &format!("{id} clears under rules v1"),
            Duration::from_secs(5),
            Duration::from_millis(100),
            async || {
                let events = events_of(&test, &token, id).await;
                !events.is_empty()
                    && events
                        .iter()
                        .all(|(_, version, state)| *version == 1 && state == "cleared")
            },
        )
        .await;
    }
    stop.store(true, Ordering::SeqCst);

    for load in loads {
        let batches = load.await.expect("every batch was acknowledged");
        assert!(
            batches > 5,
            "the device kept submitting ({batches} batches)"
        );
    }
    // Region b never had rules, and kept its own validator throughout.
    assert!(events_of(&test, &token, "load-b").await.is_empty());
    assert_eq!(rules_of(&other_region, ORG), None);
    assert_eq!(validator_of(&other_region), validator_v1);
    // Rolled back: rules v1 again (60° raises nothing on a fresh device).
    assert_eq!(raising_version(&test, &token, &second, "after").await, None);

    second.shutdown().await;
    other_region.shutdown().await;
}
