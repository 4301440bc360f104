//! A real `weir serve` host's life cycle: it starts against private PostgreSQL and Redis servers
//! with a fresh PKI, becomes ready, dies of a SIGKILL, and starts again on the same ports.
//!
//! Needs the host binary (`cargo build --release -p weir`, or `WEIR_BIN`) and the components
//! (`cargo xtask components`; `WEIR_FUNCTIONS_DIR`, else `target/functions`). Without the binary
//! the test fails, saying how to build it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use weir_services::{
    DelayProxy, PostgresServer, RedisServer, WeirHost, WeirHostOptions, weir_binary,
};

/// Directory of the compiled components: `WEIR_FUNCTIONS_DIR`, else the workspace's
/// `target/functions`.
fn functions_dir() -> PathBuf {
    let dir = match std::env::var_os("WEIR_FUNCTIONS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/functions"),
    };
    assert!(
        dir.join("validate.wasm").exists(),
        "no validate.wasm in {}: build the components with `cargo xtask components`",
        dir.display()
    );
    dir
}

/// Runs the `weir` CLI with `args`, panicking with its output when it fails.
fn weir(binary: &Path, args: &[&str], dir: &Path) {
    let output = Command::new(binary)
        .args(args)
        .arg(dir)
        .output()
        .expect("weir runs");
    assert!(
        output.status.success(),
        "weir {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Publishes the ledger's first CRL (`weir pki refresh-crl`), which a host needs to start.
fn publish_first_crl(binary: &Path, pki: &Path, database_url: &str) {
    let output = Command::new(binary)
        .args(["pki", "refresh-crl"])
        .arg(pki)
        .env("WEIR_DATABASE_URL", database_url)
        .output()
        .expect("weir runs");
    assert!(
        output.status.success(),
        "weir pki refresh-crl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn refuses_connections(addr: std::net::SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

#[test]
fn a_killed_host_refuses_devices_and_starts_again_on_the_same_ports() {
    let binary = weir_binary().unwrap_or_else(|err| panic!("{err:#}"));
    let postgres = PostgresServer::start_temporary().unwrap();
    let redis = RedisServer::start_temporary().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("weir-host-")
        .tempdir()
        .unwrap();
    let pki = dir.path().join("pki");
    weir(&binary, &["pki", "init"], &pki);
    weir(
        &binary,
        &[
            "pki",
            "server",
            "--name",
            "127.0.0.1",
            "--name",
            "localhost",
        ],
        &pki,
    );
    publish_first_crl(&binary, &pki, &postgres.url());

    let options = WeirHostOptions::new(&binary, "local-1", dir.path())
        .env("WEIR_REGION", "local")
        .env("WEIR_DATABASE_URL", postgres.url())
        .env("WEIR_REDIS_URL", redis.url())
        .env("WEIR_PKI_DIR", pki.to_str().unwrap())
        .env("WEIR_FUNCTIONS_DIR", functions_dir().to_str().unwrap())
        .env("WEIR_STATE_DIR", dir.path().join("state").to_str().unwrap());
    let mut host = WeirHost::start(options).unwrap_or_else(|err| panic!("{err:#}"));
    let (device, api) = (host.device_addr(), host.api_addr());
    assert!(host.is_running());
    assert!(host.pid().is_some());
    host.wait_until_ready(Duration::from_secs(30))
        .unwrap_or_else(|err| panic!("{err:#}"));
    let (status, body) = host.api_get("/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(TcpStream::connect(device).is_ok());

    host.kill();
    assert!(!host.is_running());
    assert_eq!(host.pid(), None);
    assert!(refuses_connections(device), "the device port still accepts");
    assert!(refuses_connections(api), "the API port still accepts");

    host.start_again().unwrap_or_else(|err| panic!("{err:#}"));
    assert_eq!((host.device_addr(), host.api_addr()), (device, api));
    host.wait_until_ready(Duration::from_secs(30))
        .unwrap_or_else(|err| panic!("{err:#}"));
    assert!(TcpStream::connect(device).is_ok());
    assert!(
        host.log_tail(200)
            .matches("starting weir host local-1")
            .count()
            == 2,
        "{}",
        host.log_tail(200)
    );

    // An orderly stop also closes both listeners.
    host.stop();
    assert!(!host.is_running());
    assert!(refuses_connections(device));
}

#[test]
fn a_delay_proxy_in_front_of_a_host_slows_its_answers() {
    let binary = weir_binary().unwrap_or_else(|err| panic!("{err:#}"));
    let postgres = PostgresServer::start_temporary().unwrap();
    let redis = RedisServer::start_temporary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    weir(&binary, &["pki", "init"], &pki);
    weir(&binary, &["pki", "server", "--name", "127.0.0.1"], &pki);
    publish_first_crl(&binary, &pki, &postgres.url());
    let options = WeirHostOptions::new(&binary, "far-1", dir.path())
        .env("WEIR_DATABASE_URL", postgres.url())
        .env("WEIR_REDIS_URL", redis.url())
        .env("WEIR_PKI_DIR", pki.to_str().unwrap())
        .env("WEIR_FUNCTIONS_DIR", functions_dir().to_str().unwrap())
        .env("WEIR_STATE_DIR", dir.path().join("state").to_str().unwrap());
    let host = WeirHost::start(options).unwrap_or_else(|err| panic!("{err:#}"));

    let delay = Duration::from_millis(100);
    let proxy = DelayProxy::start("127.0.0.1:0".parse().unwrap(), host.api_addr(), delay).unwrap();
    let start = Instant::now();
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nHost: weir\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(start.elapsed() >= 2 * delay, "{:?}", start.elapsed());

    proxy.pause();
    thread::sleep(Duration::from_millis(50));
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    assert!(answer.is_empty(), "a paused region answered");
}
