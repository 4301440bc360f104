use super::harness::*;
use hyper::Method;
use serde_json::json;
use std::time::Instant;
use weir_pki::ClientAlpn;

#[tokio::test(flavor = "multi_thread")]
async fn ingest_probe_edges() {
    let mut host = TestHost::start_with(|c| c.ingest.max_body_bytes = 4096).await;
    let now = now_ms();
    for alpn in [ClientAlpn::H2, ClientAlpn::Http11] {
        let mut d = host
            .device_with_alpn(&format!("big-{alpn:?}"), "acme", alpn)
            .await;
        let big = vec![b' '; 2 << 20];
        let r = d
            .client_mut()
            .request(Method::POST, "/v1/submit", big, &[])
            .await;
        println!("{alpn:?} big body: {:?}", r.map(|r| (r.status, r.json())));
        let r = d
            .client_mut()
            .submit(&batch("after-big", vec![point("k.a", 1, now)]))
            .await;
        println!(
            "{alpn:?} after big body on same conn: {:?}",
            r.map(|r| (r.status, r.json()))
        );
    }
    let mut d = host.device("edge", "acme").await;
    let r = d
        .submit(&batch("allbad", vec![point("a..b", 1, now)]))
        .await;
    println!("all rejected: {} {}", r.status, r.json());
    let r = d
        .submit(&batch("allbad", vec![point("a..b", 1, now)]))
        .await;
    println!("all rejected again: {} {}", r.status, r.json());
    let r = d.submit(&batch("empty", vec![])).await;
    println!("empty: {} {}", r.status, r.json());
    let r = d.submit(&json!({"batch": "dupe-in-batch", "points": [point("k.x", 1, now), point("k.x", 2, now)]})).await;
    println!("dupe in batch: {} {}", r.status, r.json());
    let r = d
        .submit(&json!({"batch": "u64", "points": [point("k.big", u64::MAX, now)]}))
        .await;
    println!("u64: {} {}", r.status, r.json());
    let r = d
        .request(
            Method::POST,
            "/v1/submit",
            b"{}".to_vec(),
            &[("content-encoding", "GZIP")],
        )
        .await;
    println!("GZIP: {} {}", r.status, r.json());
    let r = d.request(Method::GET, "/v1/nothing", vec![], &[]).await;
    println!("404: {} {}", r.status, r.json());
    let r = d.request(Method::DELETE, "/v1/submit", vec![], &[]).await;
    println!("405: {} {}", r.status, r.json());
    let r = d
        .request(
            Method::POST,
            "/v1/renew",
            b"{\"csr\":\"garbage\"}".to_vec(),
            &[],
        )
        .await;
    println!("renew garbage: {} {}", r.status, r.json());

    host.stop_redis();
    let t = Instant::now();
    let r = d
        .submit(&batch("redis-down-1", vec![point("k.a", 2, now + 1)]))
        .await;
    println!("redis down submit: {} in {:?}", r.status, t.elapsed());
    let t = Instant::now();
    let r = d
        .submit(&batch("redis-down-2", vec![point("k.a", 3, now + 2)]))
        .await;
    println!("redis down submit 2: {} in {:?}", r.status, t.elapsed());
    host.start_redis_again();
    host.stop_postgres();
    let t = Instant::now();
    let (s, b) = host.api_get("/readyz").await;
    println!("pg down readyz: {s} {b} in {:?}", t.elapsed());
    let t = Instant::now();
    let r = d
        .submit(&batch("pg-down", vec![point("k.a", 4, now + 3)]))
        .await;
    println!(
        "pg down submit: {} {} in {:?}",
        r.status,
        r.json(),
        t.elapsed()
    );
    let r = d.send_json(Method::GET, "/v1/metadata", &json!(null)).await;
    println!("pg down metadata get: {} {}", r.status, r.json());
    let fresh = host.enrol("fresh", "acme", ClientAlpn::H2);
    let mut f = host.connect(fresh).await.unwrap();
    let t = Instant::now();
    let r = f
        .submit(&batch("pg-down", vec![point("k.a", 4, now + 3)]))
        .await
        .unwrap();
    println!(
        "pg down fresh device submit: {} {} in {:?}",
        r.status,
        r.json(),
        t.elapsed()
    );
    host.start_postgres_again();
    let t = Instant::now();
    let r = d
        .submit(&batch("pg-back", vec![point("k.a", 5, now + 4)]))
        .await;
    println!(
        "pg back submit: {} {} in {:?}",
        r.status,
        r.json(),
        t.elapsed()
    );
    let (_, metrics) = host.api_get("/metrics").await;
    println!(
        "{}",
        metrics
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
