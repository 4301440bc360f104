//! An edge host as deployed: `weir serve` given only the CA certificate and its server key pair,
//! the CA key held by a separate `weir ca serve` process. A device renews through the edge host
//! (the issuing service signs), and neither the host's files, environment nor memory hold the
//! CA's private key — while the issuing service's memory does, which shows the search works.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use hyper::{Method, StatusCode};
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use weir::device_client::DeviceClient;
use weir_pki::ClientAlpn;
use weir_services::{RegionSpec, Topology, TopologyOptions, weir_binary};
use weir_storage::Storage;
use weir_tests::functions_dir;

/// Mappings larger than this are address-space reservations (the function engine's pools),
/// not data anyone wrote a key into.
const LARGEST_SCANNED_MAPPING: u64 = 1 << 30;

/// The 32-byte private scalar of the P-256 key in the PKCS#8 PEM `key_pem`.
fn private_scalar(key_pem: &str) -> Vec<u8> {
    let der = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let der = der.secret_der();
    // ECPrivateKey: version 1 (02 01 01), then the key as an OCTET STRING of 32 bytes (04 20).
    let at = der
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
        .expect("an EC private key");
    der[at + 5..at + 37].to_vec()
}

/// Whether the memory of process `pid` holds `needle` anywhere readable.
fn memory_holds(pid: u32, needle: &[u8]) -> bool {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut memory = fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut buffer = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or("");
        if !perms.starts_with('r') || path.starts_with("[v") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        if end - start > LARGEST_SCANNED_MAPPING {
            continue;
        }
        buffer.resize((end - start) as usize, 0);
        if memory.seek(SeekFrom::Start(start)).is_err() || memory.read_exact(&mut buffer).is_err() {
            continue;
        }
        if buffer.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

/// Whether any file under `dir` contains `needle`.
fn files_hold(dir: &Path, needle: &[u8]) -> bool {
    fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            return files_hold(&path, needle);
        }
        let bytes = fs::read(&path).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_host_renews_through_the_issuing_service_and_holds_no_ca_key() {
    let dir = tempfile::Builder::new()
        .prefix("weir-edge-pki-")
        .tempdir()
        .unwrap();
    let topology = tokio::task::block_in_place(|| {
        Topology::start(TopologyOptions {
            binary: weir_binary()?,
            functions_dir: functions_dir(),
            dir: dir.path().to_owned(),
            regions: vec![RegionSpec::new("edge", 1, Duration::ZERO)],
            extra_env: Vec::new(),
        })
    })
    .unwrap_or_else(|err| panic!("{err:#}"));
    let host = &topology.region("edge").hosts[0];
    let host_pid = host.pid().expect("the host runs");

    // What the host runs with: WEIR_PKI_DIR is the edge directory, without the CA key.
    let environ = fs::read(format!("/proc/{host_pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let pki_var = format!("WEIR_PKI_DIR={}", topology.edge_tls_dir.display());
    assert!(environ.split('\0').any(|var| var == pki_var), "{environ}");
    let mut files: Vec<_> = fs::read_dir(&topology.edge_tls_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["ca.pem", "server-key.pem", "server.pem"]);

    // A device renews through the edge host: the issuing service signs.
    let storage = Storage::connect(&topology.postgres.url(), 2, Duration::from_secs(10))
        .await
        .unwrap();
    let device = weir::ca::enrol_device(&storage, &topology.pki_dir, "acme", "meter-edge", 7)
        .await
        .unwrap();
    let tls = weir_pki::device_client_config(
        &topology.pki_dir.join("ca.pem"),
        &device.cert,
        &device.key,
        ClientAlpn::H2,
    )
    .unwrap();
    let mut client = DeviceClient::connect(&host.device_addr().to_string(), "localhost", tls)
        .await
        .unwrap();
    let (csr, _key) = crate::pki_fleet::fresh_csr();
    let renewed = client
        .send_json(Method::POST, "/v1/renew", &json!({ "csr": csr }))
        .await
        .unwrap();
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.json());
    let serial = renewed.json()["serial"].as_str().unwrap().to_owned();
    let current = storage
        .device_certificates("acme", "meter-edge")
        .await
        .unwrap();
    assert_eq!(
        current.last().map(|c| c.serial.as_str()),
        Some(serial.as_str())
    );

    // The CA key: nowhere in the host's files or memory; in the issuing service's memory.
    let ca_key_pem = fs::read_to_string(topology.pki_dir.join("ca-key.pem")).unwrap();
    let scalar = private_scalar(&ca_key_pem);
    assert!(!files_hold(&topology.edge_tls_dir, &scalar));
    assert!(!files_hold(&topology.edge_tls_dir, ca_key_pem.as_bytes()));
    assert!(
        !memory_holds(host_pid, &scalar),
        "the edge host's memory holds the CA key"
    );
    let issuer_pid = topology.issuer_pid().expect("the issuing service runs");
    assert!(
        memory_holds(issuer_pid, &scalar),
        "the search finds the key where it is (the issuing service)"
    );
}
