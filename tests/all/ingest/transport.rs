//! The device listener speaks HTTP/2 to devices that offer it, and HTTP/1.1 to the ones that
//! only know that.

use hyper::Version;
use serde_json::json;
use weir_pki::ClientAlpn;

use super::harness::{TestHost, batch, now_ms, ok, point};

const ORG: &str = "acme";

#[tokio::test(flavor = "multi_thread")]
async fn ingest_speaks_http2_and_http11_by_alpn() {
    let host = TestHost::start().await;
    let now = now_ms();
    let cases = [
        ("meter-h2", ClientAlpn::H2, Version::HTTP_2),
        ("meter-h1", ClientAlpn::Http11, Version::HTTP_11),
    ];
    for (id, alpn, version) in cases {
        let mut meter = host.device_with_alpn(id, ORG, alpn).await;
        assert_eq!(
            meter.client().is_http2(),
            version == Version::HTTP_2,
            "{id}"
        );

        let answer = meter
            .submit(&batch("b1", vec![point("meter.power", 1.0, now)]))
            .await;

        assert_eq!(answer.version, version, "{id}");
        assert_eq!(ok(&answer)["accepted"], json!(1), "{id}");
        assert_eq!(host.count(meter.id()).await, 1, "{id}");
    }
}
