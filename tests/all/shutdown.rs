//! Stopping a host (SIGTERM under Kubernetes, `Host::shutdown`) drains it: it stops accepting,
//! closes idle keep-alive connections, tells HTTP/2 clients to go away, and answers the uploads
//! in flight before it ends, so a rolling restart leaves no device with an unanswered batch.

use std::time::Duration;

use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use weir_pki::ClientAlpn;
use weir_storage::DeviceRef;
use weir_surfaces::http::server::DRAIN_TIMEOUT;
use weir_tests::stack::SERVER_NAME;

use crate::ingest::harness::{TestHost, batch, now_ms, point};

/// Everything `stream` sends until it closes (a TLS peer that closes without close_notify ends
/// the read with an error: what came before it counts).
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    while let Ok(read @ 1..) = stream.read(&mut buffer).await {
        received.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_host_answers_the_upload_in_flight_and_closes_idle_connections() {
    let test = TestHost::start().await;
    let host = test.stack().another_host().await.unwrap();

    // An idle HTTP/1.1 keep-alive connection to the API listener.
    let mut idle = TcpStream::connect(host.api_addr()).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: weir\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0; 4096];
    let read = idle.read(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer[..read]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // A device uploading a batch over HTTP/1.1, slowly: the head and half the body are sent.
    let device = DeviceRef::new("acme", "m1");
    let tls = test.enrol("m1", "acme", ClientAlpn::Http11).await;
    let tcp = TcpStream::connect(host.device_addr()).await.unwrap();
    let mut upload = TlsConnector::from(tls)
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .unwrap();
    let body = batch(
        "in-flight",
        vec![point("meter.1.energy", json!(5), now_ms())],
    )
    .to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let head = format!(
        "POST /v1/submit HTTP/1.1\r\nhost: {SERVER_NAME}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    upload.write_all(first.as_bytes()).await.unwrap();
    upload.flush().await.unwrap();
    // Time for the host to read the head and start on the request.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let stopping = tokio::spawn(host.shutdown());
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut answer))
        .await
        .expect("the idle connection is closed at once")
        .unwrap_or(0);
    assert_eq!(read, 0, "{}", String::from_utf8_lossy(&answer[..read]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !stopping.is_finished(),
        "the host waits for the upload in flight"
    );

    upload.write_all(rest.as_bytes()).await.unwrap();
    upload.flush().await.unwrap();
    let response = tokio::time::timeout(DRAIN_TIMEOUT, read_until_closed(&mut upload))
        .await
        .expect("answered, then closed");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""accepted":1"#), "{response}");
    tokio::time::timeout(DRAIN_TIMEOUT, stopping)
        .await
        .expect("the host stops once it answered")
        .unwrap();
    assert_eq!(test.count(&device).await, 1, "the batch answered is stored");
}
