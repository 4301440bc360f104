//! Several regions of Weir on one machine: one PostgreSQL shared by every region (tier one), and
//! per region its own Redis, `weir serve` hosts, an nginx in front of them and a [`DelayProxy`]
//! in front of nginx's device listener, adding the region's distance.
//!
//! Region `i` binds its hosts, nginx and proxy to its own loopback address, `127.0.0.(10 + i)`
//! (all of 127.0.0.0/8 is local on Linux), so the regions are apart as they would be on separate
//! machines: nothing of one region listens on another's address. The PKI is made once with the
//! `weir pki` commands, its server certificate naming `localhost`, `127.0.0.1` and every region's
//! address; the issuing service (`weir ca serve`) holds the CA key and answers renewals, and the
//! hosts get only what an edge host holds: the CA certificate and the server's key pair.
//! Everything lives under the options' directory:
//!
//! ```text
//! DIR/pki/                     CA with its key, server certificate (devices' certificates too)
//! DIR/edge-tls/                ca.pem, server.pem, server-key.pem: every host's WEIR_PKI_DIR
//! DIR/ca.log                   the issuing service's log
//! DIR/postgres/                the shared cluster and postgres.log
//! DIR/REGION/redis/            the region's Redis and redis.log
//! DIR/REGION/REGION-N/         host N's log (REGION-N.log) and its state (state/)
//! DIR/REGION/nginx/            nginx's prefix: rendered configuration, cache, nginx.log
//! ```
//!
//! Independent steps start in parallel threads (the database servers and the PKI, then every
//! host, then every region's nginx and proxy). Nothing is printed unless something fails, and a
//! failure names the region and the host and ends with the tail of the log concerned.
//!
//! [`Region::outage`] takes a whole region away as devices see it (the proxy cuts their
//! connections and refuses new ones, nginx and the hosts are killed) and [`Region::restore`]
//! brings it back on the same addresses. Dropping the topology stops every region (proxy, nginx,
//! hosts, then Redis) in parallel, and PostgreSQL last.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::delay_proxy::DelayProxy;
use crate::nginx::NginxServer;
use crate::ports::free_port;
use crate::postgres::PostgresServer;
use crate::redis::RedisServer;
use crate::server_process::{ServerProcess, Signal};
use crate::weir_host::{WeirHost, WeirHostOptions};

/// The last octet of the first region's loopback address, `127.0.0.10`.
const FIRST_REGION_OCTET: u8 = 10;
/// How long a host may take to answer `GET /readyz` with 200 once it listens.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One region of a [`Topology`].
#[derive(Clone, Debug)]
pub struct RegionSpec {
    /// The region's name: `WEIR_REGION` of its hosts, the prefix of their names, its directory.
    pub name: String,
    /// How many `weir serve` hosts run behind the region's nginx (at least one).
    pub hosts: usize,
    /// The latency the region's [`DelayProxy`] adds to device traffic, each way.
    pub one_way_delay: Duration,
}

impl RegionSpec {
    /// A region named `name` with `hosts` hosts, `one_way_delay` away from its devices.
    pub fn new(name: impl Into<String>, hosts: usize, one_way_delay: Duration) -> Self {
        RegionSpec {
            name: name.into(),
            hosts,
            one_way_delay,
        }
    }
}

/// How to start a [`Topology`].
#[derive(Clone, Debug)]
pub struct TopologyOptions {
    /// The `weir` executable (see [`weir_binary`](crate::weir_binary)).
    pub binary: PathBuf,
    /// The compiled function components (`WEIR_FUNCTIONS_DIR` of every host).
    pub functions_dir: PathBuf,
    /// Where everything goes (see the module documentation); created if missing and made mode
    /// 0755, since PostgreSQL and nginx's workers run as other users when this process is root.
    /// Its parent directories must be enterable by others.
    pub dir: PathBuf,
    /// The regions, in order: region `i` listens on `127.0.0.(10 + i)`.
    pub regions: Vec<RegionSpec>,
    /// More `WEIR_*` settings for every host (not the listen addresses, which are chosen here).
    pub extra_env: Vec<(String, String)>,
}

/// Weir in several regions on this machine, owned by this value: everything stops when it drops.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use std::time::Duration;
/// use weir_services::{RegionSpec, Topology, TopologyOptions, weir_binary};
///
/// let mut topology = Topology::start(TopologyOptions {
///     binary: weir_binary()?,
///     functions_dir: "target/functions".into(),
///     dir: "/tmp/weir-regions".into(),
///     regions: vec![
///         RegionSpec::new("eu", 2, Duration::ZERO),
///         RegionSpec::new("us", 2, Duration::from_millis(40)),
///     ],
///     extra_env: Vec::new(),
/// })?;
/// for (region, endpoint) in topology.device_endpoints() {
///     println!("{region}: devices dial {endpoint}");
/// }
/// topology.region_mut("eu").outage();
/// topology.region_mut("eu").restore()?;
/// # Ok(())
/// # }
/// ```
pub struct Topology {
    /// The one PostgreSQL every region's hosts write to.
    pub postgres: PostgresServer,
    /// The CA directory, key included (what `weir simulate --pki` and `weir pki` take).
    pub pki_dir: PathBuf,
    /// What every host's `WEIR_PKI_DIR` holds: `ca.pem`, `server.pem`, `server-key.pem`; no key
    /// of the CA.
    pub edge_tls_dir: PathBuf,
    /// The regions, in the order of the options.
    pub regions: Vec<Region>,
    /// The issuing service, `weir ca serve` on the CA directory.
    issuer: Option<ServerProcess>,
    dir: PathBuf,
}

/// One region: its Redis, its hosts, the nginx in front of them and the proxy in front of nginx's
/// device listener. Stopped (proxy, nginx, hosts, Redis) when it drops.
pub struct Region {
    /// The region's name.
    pub name: String,
    /// The region's own Redis (latest values, alert state, pub/sub).
    pub redis: RedisServer,
    /// The `weir serve` hosts, named `<region>-1`, `<region>-2`, ...
    pub hosts: Vec<WeirHost>,
    /// nginx in front of the hosts: device TLS passthrough and the API.
    pub nginx: NginxServer,
    /// The proxy in front of nginx's device listener: what devices dial.
    pub proxy: DelayProxy,
    address: IpAddr,
}

impl Topology {
    /// Starts PostgreSQL, the PKI and every region, and returns once every host answers
    /// `GET /readyz` with 200 and every nginx is ready. On failure, whatever had started is
    /// stopped again and the error names the region and host, with the tail of their log.
    pub fn start(options: TopologyOptions) -> Result<Topology> {
        check_options(&options)?;
        fs::create_dir_all(&options.dir)
            .with_context(|| format!("cannot create {}", options.dir.display()))?;
        let dir = options.dir.canonicalize()?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot chmod {}", dir.display()))?;
        let addresses: Vec<IpAddr> = (0..options.regions.len())
            .map(region_address)
            .collect::<Result<_>>()?;

        // Tier one, the PKI and every region's Redis, side by side.
        let pki_dir = dir.join("pki");
        let (postgres, pki, redis) = thread::scope(|scope| {
            let postgres = scope.spawn(|| {
                PostgresServer::start_persistent(&dir.join("postgres"), free_port()?)
                    .context("cannot start PostgreSQL")
            });
            let pki = scope.spawn(|| make_pki(&options.binary, &pki_dir, &addresses));
            let redis: Vec<_> = options
                .regions
                .iter()
                .map(|spec| {
                    let redis_dir = dir.join(&spec.name).join("redis");
                    scope.spawn(move || {
                        RedisServer::start_persistent(&redis_dir, free_port()?)
                            .with_context(|| format!("region {}: cannot start Redis", spec.name))
                    })
                })
                .collect();
            (
                joined(postgres),
                joined(pki),
                redis.into_iter().map(joined).collect::<Vec<_>>(),
            )
        });
        let postgres = postgres?;
        pki?;
        let redis = redis.into_iter().collect::<Result<Vec<_>>>()?;
        let edge_tls_dir = dir.join("edge-tls");
        edge_tls_files(&pki_dir, &edge_tls_dir)?;
        let issuer = start_issuer(&options.binary, &pki_dir, &postgres.url(), &dir)?;

        // Every host of every region at once: each compiles the components into its state.
        let env = CommonEnv {
            database_url: postgres.url(),
            pki_dir: path_text(&edge_tls_dir)?,
            functions_dir: path_text(&options.functions_dir)?,
            extra: &options.extra_env,
        };
        let hosts = thread::scope(|scope| {
            let started: Vec<Vec<_>> = options
                .regions
                .iter()
                .zip(&redis)
                .zip(&addresses)
                .map(|((spec, redis), &address)| {
                    (1..=spec.hosts)
                        .map(|n| {
                            let host_options = host_options(
                                &options.binary,
                                &dir,
                                spec,
                                n,
                                address,
                                &redis.url(),
                                &env,
                            );
                            scope.spawn(move || start_host(host_options?))
                        })
                        .collect()
                })
                .collect();
            started
                .into_iter()
                .map(|region| region.into_iter().map(joined).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        });
        // Keep every host that started, so that a failure stops them all on the way out.
        let mut region_hosts = Vec::new();
        let mut failures = Vec::new();
        for hosts in hosts {
            let mut started = Vec::new();
            for host in hosts {
                match host {
                    Ok(host) => started.push(host),
                    Err(err) => failures.push(err),
                }
            }
            region_hosts.push(started);
        }
        if let Some(first) = failures.into_iter().next() {
            drop(region_hosts);
            return Err(first);
        }

        // Each region's nginx and proxy.
        let edges = thread::scope(|scope| {
            let started: Vec<_> = options
                .regions
                .iter()
                .zip(&region_hosts)
                .zip(&addresses)
                .map(|((spec, hosts), &address)| {
                    let prefix = dir.join(&spec.name).join("nginx");
                    scope.spawn(move || start_edge(spec, &prefix, address, hosts))
                })
                .collect();
            started.into_iter().map(joined).collect::<Vec<_>>()
        });
        let mut regions = Vec::new();
        let mut failure = None;
        for ((((spec, redis), hosts), edge), address) in options
            .regions
            .iter()
            .zip(redis)
            .zip(region_hosts)
            .zip(edges)
            .zip(addresses)
        {
            match edge {
                Ok((nginx, proxy)) => regions.push(Region {
                    name: spec.name.clone(),
                    redis,
                    hosts,
                    nginx,
                    proxy,
                    address,
                }),
                Err(err) => {
                    failure.get_or_insert(err);
                    // This region's hosts stop before its Redis.
                    drop(hosts);
                    drop(redis);
                }
            }
        }
        let topology = Topology {
            postgres,
            pki_dir,
            edge_tls_dir,
            regions,
            issuer: Some(issuer),
            dir,
        };
        match failure {
            Some(err) => Err(err),
            None => Ok(topology),
        }
    }

    /// The process id of the issuing service (`weir ca serve`), while it runs.
    pub fn issuer_pid(&self) -> Option<u32> {
        self.issuer.as_ref().map(ServerProcess::pid)
    }

    /// The region named `name`. Panics, naming the regions there are, if there is none.
    pub fn region(&self, name: &str) -> &Region {
        let index = self.index_of(name);
        &self.regions[index]
    }

    /// The region named `name`, to take it away or restore it. Panics if there is none.
    pub fn region_mut(&mut self, name: &str) -> &mut Region {
        let index = self.index_of(name);
        &mut self.regions[index]
    }

    /// Every region's name and device endpoint (its proxy), in order: what a simulator dials,
    /// as `--endpoint NAME=ADDR`.
    pub fn device_endpoints(&self) -> Vec<(String, SocketAddr)> {
        self.regions
            .iter()
            .map(|region| (region.name.clone(), region.device_endpoint()))
            .collect()
    }

    /// The directory everything lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index_of(&self, name: &str) -> usize {
        self.regions
            .iter()
            .position(|region| region.name == name)
            .unwrap_or_else(|| {
                let names: Vec<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
                panic!("no region {name:?} in this topology (regions: {names:?})")
            })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // The hosts write to PostgreSQL while they stop: every region goes first.
        thread::scope(|scope| {
            for region in &mut self.regions {
                scope.spawn(move || region.shut_down());
            }
        });
        if let Some(issuer) = self.issuer.take() {
            issuer.stop(Signal::Terminate, Duration::from_secs(10));
        }
        self.postgres.stop();
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("dir", &self.dir)
            .field("postgres", &self.postgres)
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

impl Region {
    /// The address devices of this region dial: the [`DelayProxy`] in front of nginx's device
    /// listener.
    pub fn device_endpoint(&self) -> SocketAddr {
        self.proxy.addr()
    }

    /// The region's API: nginx's HTTP listener, proxying the hosts' API listeners.
    pub fn api_endpoint(&self) -> SocketAddr {
        self.nginx.api_addr()
    }

    /// The loopback address the region's hosts, nginx and proxy listen on.
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// `GET path` on the region's API (through nginx): the status code and the body.
    pub fn api_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        self.nginx.api_get(path)
    }

    /// The whole region goes away at once: the proxy cuts the devices' connections and closes
    /// new ones as soon as they are accepted, nginx (master and workers) and every host are
    /// killed with SIGKILL. Nothing drains.
    pub fn outage(&mut self) {
        self.proxy.pause();
        self.nginx.kill();
        for host in &mut self.hosts {
            host.kill();
        }
    }

    /// Brings the region back after [`outage`](Self::outage) (or crashes of its parts): the
    /// hosts that are not running start again on their ports, then nginx, then the proxy lets
    /// devices in again. Returns once every host answers `GET /readyz` with 200 and nginx is
    /// ready.
    pub fn restore(&mut self) -> Result<()> {
        let name = &self.name;
        thread::scope(|scope| {
            let restarted: Vec<_> = self
                .hosts
                .iter_mut()
                .map(|host| {
                    scope.spawn(move || {
                        host.start_again()?;
                        host.wait_until_ready(READY_TIMEOUT)
                    })
                })
                .collect();
            restarted
                .into_iter()
                .map(joined)
                .collect::<Result<Vec<()>>>()
        })
        .with_context(|| format!("region {name}: cannot restore its hosts"))?;
        self.nginx
            .start_again()
            .with_context(|| format!("region {name}: cannot restart nginx"))?;
        self.proxy.resume();
        Ok(())
    }

    /// Stops everything in order: devices first, then nginx, the hosts (in parallel: each
    /// drains its requests), and Redis last.
    fn shut_down(&mut self) {
        self.proxy.pause();
        self.nginx.stop();
        thread::scope(|scope| {
            for host in &mut self.hosts {
                scope.spawn(move || host.stop());
            }
        });
        self.redis.stop();
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("redis", &self.redis)
            .field("hosts", &self.hosts)
            .field("nginx", &self.nginx)
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// The settings every host shares.
struct CommonEnv<'a> {
    database_url: String,
    pki_dir: String,
    functions_dir: String,
    extra: &'a [(String, String)],
}

fn check_options(options: &TopologyOptions) -> Result<()> {
    if options.regions.is_empty() {
        bail!("a topology needs at least one region");
    }
    let mut names = HashSet::new();
    for spec in &options.regions {
        let plain = !spec.name.is_empty()
            && spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain {
            bail!(
                "region name {:?} must be letters, digits, `-` and `_` (it names directories)",
                spec.name
            );
        }
        if spec.name == "pki" || spec.name == "postgres" {
            bail!(
                "region name {:?} is taken by the topology's own directory",
                spec.name
            );
        }
        if !names.insert(spec.name.as_str()) {
            bail!("region {:?} appears twice", spec.name);
        }
        if spec.hosts == 0 {
            bail!("region {} needs at least one host", spec.name);
        }
    }
    if !options.binary.is_file() {
        bail!(
            "the weir binary {} does not exist: run `cargo build --release -p weir`",
            options.binary.display()
        );
    }
    if !options.functions_dir.join("validate.wasm").is_file() {
        bail!(
            "no validate.wasm in {}: build the components with `cargo xtask components`",
            options.functions_dir.display()
        );
    }
    Ok(())
}

/// Region `index`'s loopback address, `127.0.0.(10 + index)`.
fn region_address(index: usize) -> Result<IpAddr> {
    let octet = u8::try_from(index)
        .ok()
        .and_then(|index| FIRST_REGION_OCTET.checked_add(index))
        .filter(|&octet| octet < 255)
        .ok_or_else(|| anyhow!("too many regions: region {index} has no loopback address"))?;
    Ok(IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet)))
}

/// `weir pki init DIR` and `weir pki server` for localhost, 127.0.0.1 and every region address.
fn make_pki(binary: &Path, pki_dir: &Path, addresses: &[IpAddr]) -> Result<()> {
    weir_cli(
        binary,
        Command::new(binary).args(["pki", "init"]).arg(pki_dir),
    )?;
    let mut server = Command::new(binary);
    server.args(["pki", "server"]).arg(pki_dir);
    for name in ["localhost".to_owned(), "127.0.0.1".to_owned()]
        .into_iter()
        .chain(addresses.iter().map(IpAddr::to_string))
    {
        server.args(["--name", &name]);
    }
    weir_cli(binary, &mut server)
}

/// Copies what an edge host holds out of the CA directory: the CA certificate and the server's
/// key pair, never the CA's key.
fn edge_tls_files(pki_dir: &Path, edge_dir: &Path) -> Result<()> {
    fs::create_dir_all(edge_dir)
        .with_context(|| format!("cannot create {}", edge_dir.display()))?;
    for file in ["ca.pem", "server.pem", "server-key.pem"] {
        fs::copy(pki_dir.join(file), edge_dir.join(file))
            .with_context(|| format!("cannot copy {file} to {}", edge_dir.display()))?;
    }
    Ok(())
}

/// Publishes the first CRL (`weir pki refresh-crl`), so that hosts can start, then starts the
/// issuing service (`weir ca serve`) with its log in `DIR/ca.log`.
fn start_issuer(
    binary: &Path,
    pki_dir: &Path,
    database_url: &str,
    dir: &Path,
) -> Result<ServerProcess> {
    weir_cli(
        binary,
        Command::new(binary)
            .args(["pki", "refresh-crl"])
            .arg(pki_dir)
            .env("WEIR_DATABASE_URL", database_url),
    )?;
    let mut command = Command::new(binary);
    command
        .args(["ca", "serve"])
        .arg(pki_dir)
        .env("WEIR_DATABASE_URL", database_url);
    clear_inherited_weir_env(&mut command);
    ServerProcess::spawn(&mut command, &dir.join("ca.log")).context("cannot start `weir ca serve`")
}

/// Removes the `WEIR_*` variables this process has from `command`'s environment, keeping those
/// `command` sets itself.
fn clear_inherited_weir_env(command: &mut Command) {
    let set: HashSet<_> = command
        .get_envs()
        .map(|(name, _)| name.to_owned())
        .collect();
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|name| name.starts_with("WEIR_")) && !set.contains(&name) {
            command.env_remove(name);
        }
    }
}

/// Runs a `weir` CLI command quietly; its output is in the error when it fails.
fn weir_cli(binary: &Path, command: &mut Command) -> Result<()> {
    let args: Vec<String> = command
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    clear_inherited_weir_env(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "`{} {}` failed ({}): {}{}",
            binary.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The options of host `n` of a region.
fn host_options(
    binary: &Path,
    dir: &Path,
    spec: &RegionSpec,
    n: usize,
    address: IpAddr,
    redis_url: &str,
    env: &CommonEnv<'_>,
) -> Result<WeirHostOptions> {
    let name = format!("{}-{n}", spec.name);
    let host_dir = dir.join(&spec.name).join(&name);
    let mut options = WeirHostOptions::new(binary, name, &host_dir)
        .env("WEIR_REGION", &spec.name)
        .env("WEIR_DATABASE_URL", &env.database_url)
        .env("WEIR_REDIS_URL", redis_url)
        .env("WEIR_PKI_DIR", &env.pki_dir)
        .env("WEIR_FUNCTIONS_DIR", &env.functions_dir)
        .env("WEIR_STATE_DIR", path_text(&host_dir.join("state"))?);
    options.env.extend(env.extra.iter().cloned());
    options.device_listen = Some(SocketAddr::new(address, 0));
    options.api_listen = Some(SocketAddr::new(address, 0));
    Ok(options)
}

/// Starts a host and waits until it is ready (PostgreSQL and Redis reachable). Its errors name
/// it and carry its log's tail.
fn start_host(options: WeirHostOptions) -> Result<WeirHost> {
    let name = options.name.clone();
    let region = options
        .env
        .iter()
        .find(|(key, _)| key == "WEIR_REGION")
        .map_or("?", |(_, value)| value.as_str())
        .to_owned();
    let host = WeirHost::start(options)
        .with_context(|| format!("region {region}: host {name} did not start"))?;
    host.wait_until_ready(READY_TIMEOUT)
        .with_context(|| format!("region {region}: host {name} is not ready"))?;
    Ok(host)
}

/// Starts the region's nginx in front of `hosts` and the proxy in front of nginx.
fn start_edge(
    spec: &RegionSpec,
    prefix: &Path,
    address: IpAddr,
    hosts: &[WeirHost],
) -> Result<(NginxServer, DelayProxy)> {
    let devices: Vec<SocketAddr> = hosts.iter().map(WeirHost::device_addr).collect();
    let api: Vec<SocketAddr> = hosts.iter().map(WeirHost::api_addr).collect();
    let any_port = SocketAddr::new(address, 0);
    let nginx = NginxServer::start(prefix, any_port, any_port, &devices, &api)
        .with_context(|| format!("region {}: nginx did not start", spec.name))?;
    let proxy = DelayProxy::start(any_port, nginx.device_addr(), spec.one_way_delay)
        .with_context(|| format!("region {}: cannot start its delay proxy", spec.name))?;
    Ok((nginx, proxy))
}

/// A scoped thread's result; a panic in it becomes an error.
fn joined<T>(handle: thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(anyhow!("a start-up thread panicked")))
}

fn path_text(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_get_loopback_addresses_of_their_own() {
        assert_eq!(region_address(0).unwrap().to_string(), "127.0.0.10");
        assert_eq!(region_address(3).unwrap().to_string(), "127.0.0.13");
        assert!(region_address(245).is_err());
    }

    #[test]
    fn region_names_must_be_plain_and_distinct() {
        let options = |names: &[&str]| TopologyOptions {
            binary: "/bin/sh".into(),
            functions_dir: "/nonexistent".into(),
            dir: "/tmp".into(),
            regions: names
                .iter()
                .map(|name| RegionSpec::new(*name, 1, Duration::ZERO))
                .collect(),
            extra_env: Vec::new(),
        };
        for bad in [&["eu", "eu"][..], &["e/u"], &[""], &["pki"], &[]] {
            assert!(check_options(&options(bad)).is_err(), "{bad:?}");
        }
        let err = check_options(&options(&["eu", "us"])).unwrap_err();
        assert!(err.to_string().contains("validate.wasm"), "{err:#}");
    }
}
