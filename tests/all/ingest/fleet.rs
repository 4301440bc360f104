//! Several hosts of one region share PostgreSQL and Redis: what a device changes through one
//! host, every other host applies.

use std::time::Duration;

use hyper::Method;
use serde_json::json;
use weir_pki::ClientAlpn;
use weir_storage::DeviceRef;
use weir_tests::poll::eventually;

use super::harness::{TestHost, batch, now_ms, ok, point, rejections};

#[tokio::test(flavor = "multi_thread")]
async fn ingest_metadata_changed_through_one_host_is_applied_by_another() {
    let test = TestHost::start().await;
    let other_host = test
        .stack()
        .another_host()
        .await
        .expect("a second host starts");
    let tls = test.enrol("tank-7", "acme", ClientAlpn::H2).await;
    let id = DeviceRef::new("acme", "tank-7");
    let mut via_first = test.device_at(test.host(), tls.clone(), id.clone()).await;
    let mut via_other = test.device_at(&other_host, tls, id).await;

    // Untyped at first: the other host accepts a value no u16 can hold, and caches that the
    // key has no metadata.
    let receipt = ok(&via_other
        .submit(&batch("b0", vec![point("tank.level", 70_000, now_ms())]))
        .await);
    assert_eq!(receipt["accepted"], 1);

    ok(&via_first
        .send_json(
            Method::PUT,
            "/v1/metadata",
            &json!([{"key": "tank.level", "type": "u16", "unit": "count"}]),
        )
        .await);

    let mut attempt = 0;
    eventually(
        "the other host applies the new type",
        Duration::from_secs(5),
        Duration::from_millis(100),
        async || {
            attempt += 1;
            let receipt = ok(&via_other
                .submit(&batch(
                    &format!("b{attempt}"),
                    vec![point("tank.level", 70_001 + attempt, now_ms())],
                ))
                .await);
            rejections(&receipt)
                .iter()
                .any(|(_, _, code)| code == "out_of_range")
        },
    )
    .await;
    other_host.shutdown().await;
}
