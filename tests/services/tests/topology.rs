//! Two regions of real Weir hosts behind real nginx, sharing a real PostgreSQL: they come up,
//! answer through nginx, survive the loss of a host, and go away and come back as a region.
//!
//! Needs the host binary (`cargo build --release -p weir`, or `WEIR_BIN`), the components
//! (`cargo xtask components`; `WEIR_FUNCTIONS_DIR`, else `target/functions`), and nginx with its
//! stream module (installed with `apt-get` when running as root).

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use weir_services::{Region, RegionSpec, Topology, TopologyOptions, weir_binary};

/// Directory of the compiled components: `WEIR_FUNCTIONS_DIR`, else the workspace's
/// `target/functions`.
fn functions_dir() -> PathBuf {
    match std::env::var_os("WEIR_FUNCTIONS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/functions"),
    }
}

/// Connects to `addr` and says whether the connection stays open (no data, no end) for a while:
/// nginx waits up to 10 s for a device's ClientHello, so a connection that reached it stays open.
fn stays_open(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    is_open(&mut stream)
}

/// Whether nothing (neither data nor an end) arrives on `stream` for half a second.
fn is_open(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0];
    // Data or an end of stream (`Ok`), or a reset, mean the connection is not left waiting.
    stream
        .read(&mut byte)
        .is_err_and(|err| matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

/// `GET /readyz` through the region's nginx answers 200, `times` times in a row (nginx takes the
/// hosts in turn).
fn assert_ready_through_nginx(region: &Region, times: usize) {
    for _ in 0..times {
        match region.api_get("/readyz") {
            Ok((200, _)) => {}
            answer => panic!(
                "region {}: GET /readyz through nginx answered {answer:?}; {}",
                region.name,
                region.nginx.log_tail(20)
            ),
        }
    }
}

/// Polls `condition` for up to `timeout`.
fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn regions_come_up_lose_a_host_go_away_and_come_back() {
    let binary = weir_binary().unwrap_or_else(|err| panic!("{err:#}"));
    let dir = tempfile::Builder::new()
        .prefix("weir-topology-")
        .tempdir()
        .unwrap();
    // PostgreSQL and nginx's workers run as other users when the test runs as root.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    let started = Instant::now();
    let mut topology = Topology::start(TopologyOptions {
        binary,
        functions_dir: functions_dir(),
        dir: dir.path().to_owned(),
        regions: vec![
            RegionSpec::new("eu", 2, Duration::ZERO),
            RegionSpec::new("us", 2, Duration::from_millis(20)),
        ],
        extra_env: Vec::new(),
    })
    .unwrap_or_else(|err| panic!("{err:#}"));
    eprintln!("topology started in {:?}", started.elapsed());

    // Both regions are up, apart, and reachable through their nginx.
    let endpoints = topology.device_endpoints();
    assert_eq!(
        endpoints
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        ["eu", "us"]
    );
    for region in &topology.regions {
        assert_eq!(region.hosts.len(), 2);
        assert!(region.hosts.iter().all(|host| host.is_running()));
        assert!(region.nginx.is_running());
        for addr in [region.device_endpoint(), region.api_endpoint()]
            .into_iter()
            .chain(region.hosts.iter().map(|host| host.device_addr()))
        {
            assert_eq!(
                addr.ip(),
                region.address(),
                "{} listens elsewhere",
                region.name
            );
        }
        assert_ready_through_nginx(region, 4);
        assert!(
            stays_open(region.device_endpoint()),
            "region {}: the device endpoint did not hold a connection",
            region.name
        );
    }
    assert_ne!(
        topology.region("eu").address(),
        topology.region("us").address()
    );

    // A host of eu dies: nginx passes API requests on to the other one.
    let eu = topology.region_mut("eu");
    eu.hosts[0].kill();
    assert_ready_through_nginx(eu, 6);
    assert!(stays_open(eu.device_endpoint()));

    // us goes away: open device connections are cut, new ones closed, the API is gone.
    let us = topology.region_mut("us");
    let mut open = TcpStream::connect(us.device_endpoint()).unwrap();
    let proxied = || us.proxy.connections() == 1;
    assert!(eventually(Duration::from_secs(5), proxied));
    assert!(is_open(&mut open));
    us.outage();
    // The proxy cuts it at once; is_open waits half a second for that.
    assert!(
        !is_open(&mut open),
        "an open device connection survived the outage"
    );
    assert!(!stays_open(us.device_endpoint()), "us still takes devices");
    assert!(us.api_get("/readyz").is_err(), "us's API still answers");
    assert!(us.hosts.iter().all(|host| !host.is_running()));
    assert!(!us.nginx.is_running());
    // The other region does not notice.
    assert_ready_through_nginx(topology.region("eu"), 2);

    // us comes back on the same addresses.
    let us = topology.region_mut("us");
    let (device, api) = (us.device_endpoint(), us.api_endpoint());
    let restoring = Instant::now();
    us.restore().unwrap_or_else(|err| panic!("{err:#}"));
    eprintln!("us restored in {:?}", restoring.elapsed());
    assert_eq!((us.device_endpoint(), us.api_endpoint()), (device, api));
    assert_ready_through_nginx(us, 4);
    assert!(stays_open(us.device_endpoint()));

    let stopping = Instant::now();
    drop(topology);
    eprintln!("topology stopped in {:?}", stopping.elapsed());
}
