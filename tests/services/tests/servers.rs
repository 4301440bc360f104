//! The servers' life cycle, end to end: they start, answer, stop, start again on the same port,
//! run side by side, and leave nothing behind, even when their owner dies without dropping them.
//!
//! Talks to PostgreSQL with Debian's `psql` and to Redis over raw TCP, so the crate stays free of
//! client libraries.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use weir_services::{PostgresServer, RedisServer, free_port};

/// Runs `sql` in database `weir` with `psql`, returning its unaligned output or its error.
fn psql(port: u16, sql: &str) -> Result<String, String> {
    let output = Command::new("/usr/bin/psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", "weir", "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql])
        .output()
        .expect("psql runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Sends one inline Redis command and returns the first line of the reply.
fn redis(port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut reply = Vec::new();
    let mut byte = [0];
    while !reply.ends_with(b"\r\n") {
        stream.read_exact(&mut byte)?;
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

fn refuses_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// A directory that the `postgres` user may enter too (whatever the umask made of a temp dir).
fn shared_temp_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn servers_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<PostgresServer>();
    shareable::<RedisServer>();
}

#[test]
fn postgres_answers_refuses_while_stopped_and_answers_again_on_the_same_port() {
    let mut postgres = PostgresServer::start_temporary().unwrap();
    let port = postgres.port();
    assert_eq!(
        postgres.url(),
        format!("postgres://postgres@127.0.0.1:{port}/weir")
    );
    assert_eq!(
        postgres.url_for("other"),
        format!("postgres://postgres@127.0.0.1:{port}/other")
    );
    assert!(postgres.is_running());
    assert_eq!(psql(port, "select 1").unwrap(), "1");
    psql(
        port,
        "create table kept (n int); insert into kept values (42)",
    )
    .unwrap();

    postgres.stop();
    assert!(!postgres.is_running());
    assert!(refuses_connections(port));
    assert!(psql(port, "select 1").is_err());

    postgres.start_again().unwrap();
    assert!(postgres.is_running());
    assert_eq!(postgres.port(), port);
    assert_eq!(psql(port, "select n from kept").unwrap(), "42");
}

#[test]
fn postgres_servers_run_side_by_side_on_different_ports() {
    let starts: Vec<_> = (0..3)
        .map(|_| thread::spawn(PostgresServer::start_temporary))
        .collect();
    let servers: Vec<PostgresServer> = starts
        .into_iter()
        .map(|start| start.join().unwrap().unwrap())
        .collect();
    let mut ports: Vec<u16> = servers.iter().map(PostgresServer::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), servers.len());
    for server in &servers {
        assert_eq!(
            psql(server.port(), "select current_database()").unwrap(),
            "weir"
        );
    }
}

#[test]
fn postgres_creates_more_databases_on_request() {
    let postgres = PostgresServer::start_temporary().unwrap();
    postgres.create_database("tenant_a").unwrap();
    postgres.create_database("tenant_a").unwrap();
    let list = psql(
        postgres.port(),
        "select datname from pg_database order by 1",
    )
    .unwrap();
    assert!(list.lines().any(|name| name == "tenant_a"), "{list}");
}

#[test]
fn postgres_leaves_nothing_behind_after_drop() {
    let postgres = PostgresServer::start_temporary().unwrap();
    let port = postgres.port();
    let root = postgres.data_dir().parent().unwrap().to_owned();
    assert!(postgres.data_dir().join("PG_VERSION").exists());
    drop(postgres);
    assert!(!root.exists(), "{} still exists", root.display());
    assert!(refuses_connections(port));
}

#[test]
fn persistent_postgres_keeps_its_data_between_runs() {
    let parent = shared_temp_dir();
    let dir = parent.path().join("postgres");
    let port = free_port().unwrap();

    let postgres = PostgresServer::start_persistent(&dir, port).unwrap();
    assert_eq!(postgres.port(), port);
    psql(
        port,
        "create table kept (n int); insert into kept values (7)",
    )
    .unwrap();
    drop(postgres);
    assert!(refuses_connections(port));
    assert!(dir.join("data/PG_VERSION").exists());

    let _postgres = PostgresServer::start_persistent(&dir, port).unwrap();
    assert_eq!(psql(port, "select n from kept").unwrap(), "7");
}

#[test]
fn persistent_postgres_refuses_a_port_in_use() {
    let parent = shared_temp_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = PostgresServer::start_persistent(&parent.path().join("pg"), port).unwrap_err();
    assert!(err.to_string().contains("is in use"), "{err:#}");
}

#[test]
fn persistent_postgres_explains_a_directory_its_user_cannot_reach() {
    let uid = Command::new("id").arg("-u").output().unwrap().stdout;
    if String::from_utf8_lossy(&uid).trim() != "0" {
        return; // Only root hands the cluster to the `postgres` user.
    }
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = PostgresServer::start_persistent(&private.path().join("pg"), free_port().unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("must be able to reach"), "{err:#}");
}

#[test]
fn redis_answers_refuses_while_stopped_and_answers_again_on_the_same_port() {
    let mut redis_server = RedisServer::start_temporary().unwrap();
    let port = redis_server.port();
    assert_eq!(redis_server.url(), format!("redis://127.0.0.1:{port}/"));
    assert_eq!(redis(port, "PING").unwrap(), "+PONG");

    redis_server.stop();
    assert!(!redis_server.is_running());
    assert!(redis(port, "PING").is_err());

    redis_server.start_again().unwrap();
    assert_eq!(redis_server.port(), port);
    assert_eq!(redis(port, "PING").unwrap(), "+PONG");
}

#[test]
fn redis_leaves_nothing_behind_after_drop() {
    let redis_server = RedisServer::start_temporary().unwrap();
    let port = redis_server.port();
    let dir = redis_server.dir().to_owned();
    assert!(dir.exists());
    drop(redis_server);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(refuses_connections(port));
}

#[test]
fn persistent_redis_keeps_its_data_between_runs() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("redis");
    let port = free_port().unwrap();

    let redis_server = RedisServer::start_persistent(&dir, port).unwrap();
    assert_eq!(redis(port, "SET weir:kept yes").unwrap(), "+OK");
    drop(redis_server);
    assert!(dir.join("dump.rdb").exists());

    let _redis_server = RedisServer::start_persistent(&dir, port).unwrap();
    assert_eq!(redis(port, "GET weir:kept").unwrap(), "$3");
}

/// Set in the child process of `servers_of_a_dead_process_are_stopped_and_removed`.
const ORPHAN_HELPER: &str = "WEIR_SERVICES_ORPHAN_HELPER";

#[test]
fn servers_of_a_dead_process_are_stopped_and_removed() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "start_servers_and_exit_without_dropping_them"])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env(ORPHAN_HELPER, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.split_once("orphans: ").map(|(_, servers)| servers))
        .unwrap_or_else(|| panic!("helper printed no servers: {output:?}"));
    let fields: Vec<&str> = line.split(' ').collect();
    let (pg_port, pg_root) = (fields[0].parse::<u16>().unwrap(), PathBuf::from(fields[1]));
    let (redis_port, redis_dir) = (fields[2].parse::<u16>().unwrap(), PathBuf::from(fields[3]));

    let timeout = Duration::from_secs(45);
    wait_for("the orphaned PostgreSQL stops", timeout, || {
        refuses_connections(pg_port)
    });
    wait_for("the orphaned Redis stops", timeout, || {
        refuses_connections(redis_port)
    });
    wait_for("the orphaned directories are removed", timeout, || {
        !Path::new(&pg_root).exists() && !redis_dir.exists()
    });
}

#[test]
#[ignore = "run by servers_of_a_dead_process_are_stopped_and_removed in a child process"]
fn start_servers_and_exit_without_dropping_them() {
    if std::env::var_os(ORPHAN_HELPER).is_none() {
        return;
    }
    let postgres = PostgresServer::start_temporary().unwrap();
    let redis_server = RedisServer::start_temporary().unwrap();
    println!(
        "orphans: {} {} {} {}",
        postgres.port(),
        postgres.data_dir().parent().unwrap().display(),
        redis_server.port(),
        redis_server.dir().display()
    );
    std::process::exit(0);
}
