//! Private PostgreSQL and Redis servers for Weir's tests and dev environment, and the system
//! packages they come from.
//!
//! A test starts a throw-away server with [`PostgresServer::start_temporary`] or
//! [`RedisServer::start_temporary`]: it gets a fresh data directory in a temporary directory and a
//! free port of its own, so any number run in parallel. Dropping the value stops the server and
//! deletes its directory. `cargo xtask run` uses `start_persistent` instead, which keeps the data
//! in a directory it names and on a fixed port between runs.
//!
//! Every server is watched by a small guard process: if the process that started it dies without
//! dropping it (killed by a CI timeout, or a server kept in a `static`), the guard stops the server
//! and, for a temporary one, deletes its directory. Tests may stop a server and start it again on
//! the same port and data ([`PostgresServer::stop`], [`PostgresServer::start_again`]) to exercise
//! outages.
//!
//! The crate is synchronous std code: servers are child processes, readiness is polled, signals
//! are sent with `kill(1)`. PostgreSQL refuses to run as root, so when this process is root its
//! servers run as the `postgres` system user. [`ensure_packages`] installs missing servers with
//! `apt-get` when running as root, and otherwise names the command to run.
//!
//! For tests of several hosts and regions, [`WeirHost`] runs `weir serve` as a child process the
//! same way (crash it, stop it, start it again on its ports), and [`DelayProxy`] puts a userspace
//! TCP proxy adding latency, or an outage, between devices and a region. [`Topology`] builds
//! regions from them, with one shared PostgreSQL and, per region, a Redis, hosts and an
//! [`NginxServer`] (Debian's nginx run from the repository's `deploy/nginx` files).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use weir_services::{PostgresServer, RedisServer};
//!
//! let postgres = PostgresServer::start_temporary()?;
//! let redis = RedisServer::start_temporary()?;
//! println!("{} {}", postgres.url(), redis.url());
//! // Both servers stop, and their directories disappear, when the values drop.
//! # Ok(())
//! # }
//! ```

mod delay_proxy;
mod nginx;
mod orphan_guard;
mod packages;
mod ports;
mod postgres;
mod redis;
mod server_process;
mod topology;
mod user;
mod weir_host;

pub use delay_proxy::DelayProxy;
pub use nginx::NginxServer;
pub use packages::{Package, ensure_packages, postgres_bin_dir, redis_server_binary};
pub use ports::free_port;
pub use postgres::PostgresServer;
pub use redis::RedisServer;
pub use topology::{Region, RegionSpec, Topology, TopologyOptions};
pub use weir_host::{WEIR_BIN_ENV, WeirHost, WeirHostOptions, weir_binary};
