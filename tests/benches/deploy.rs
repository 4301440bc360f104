//! Deploy to effect: the time from a validator deploy committing (`FunctionRegistry::deploy`
//! returning, what `weir functions deploy` runs) until every host of the region runs the new
//! version, polled every millisecond on each host's validator slot.
//!
//! Two hosts of region "test" on the same PostgreSQL and Redis, each with its own state
//! directory (its own compiled-artifact cache, as hosts on separate machines have), and a
//! deploying registry with a state directory of its own, so the hosts compile a new version
//! themselves. 20 deploys alternate two versions of the default validator (v2 = v1 plus a custom
//! section): only the first of them is new to the hosts, the rest load from each host's artifact
//! cache. Then a few deploys of versions no host has seen measure the first-time case again.
//!
//! Then 20 rule-set applies (`FunctionRegistry::apply_rules`, what `weir rules apply` runs)
//! alternate two versions of an organisation's rules, until both hosts evaluate with the new one.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p weir-tests --bench deploy` after
//! `cargo xtask components`). Everything shares this machine's cores: the deploying side, both
//! hosts, PostgreSQL and Redis.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use weir::Config;
use weir::host::Host;
use weir::registry::{FunctionName, FunctionRegistry};
use weir_tests::stack::Stack;
use weir_tests::with_custom_section;

/// Deploys alternating v1 and v2.
const SWAPS: usize = 20;
/// Deploys of a version no host has seen, after the swaps.
const FRESH: usize = 5;
/// How often each host's slot is read.
const POLL: Duration = Duration::from_millis(1);
/// Longer than this and the bench gives up.
const GIVE_UP: Duration = Duration::from_secs(30);

/// One deploy, measured.
struct Swap {
    /// The `deploy` call itself: compile (or artifact-cache hit) and self-check, then commit.
    deploy: Duration,
    /// Whether the deploying side had compiled this version before (its own artifact cache).
    deploy_cached: bool,
    /// From the commit until each host ran the new version.
    hosts: [Duration; 2],
    /// Whether each host's artifact cache held the version before the deploy.
    cached: [bool; 2],
}

impl Swap {
    fn both(&self) -> Duration {
        self.hosts[0].max(self.hosts[1])
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let stack = Stack::start(|_| {}).await?;
    let region = stack.config.region.clone();
    // Like `stack.another_host()`, but with a state directory (artifact cache) of its own.
    let second_config = Config {
        state_dir: stack.dir.path().join("state-2"),
        ..stack.config.clone()
    };
    let second = Host::start(second_config.clone()).await?;
    let hosts = [&stack.host, &second];
    let caches = [stack.config.artifact_dir(), second_config.artifact_dir()];

    let deploy_state = tempfile::tempdir()?;
    let deploy_config = Config {
        state_dir: deploy_state.path().to_path_buf(),
        ..stack.config.clone()
    };
    let deploy_cache = deploy_config.artifact_dir();
    let registry = FunctionRegistry::connect(deploy_config).await?;

    let v1 = weir_tests::component_bytes("validate.wasm");
    let v2 = with_custom_section(&v1, b"v2");
    let running = validator_of(&stack.host);
    anyhow::ensure!(
        validator_of(&second) == running,
        "both hosts start on validate.wasm"
    );

    let mut swaps = Vec::new();
    for i in 0..SWAPS {
        // The hosts run v1 from their files: the first deploy is v2.
        let bytes = if i % 2 == 0 { &v2 } else { &v1 };
        swaps.push(swap(&registry, &region, bytes, hosts, &caches, &deploy_cache).await?);
    }
    let mut fresh = Vec::new();
    for i in 0..FRESH {
        let bytes = with_custom_section(&v1, format!("fresh-{i}").as_bytes());
        fresh.push(swap(&registry, &region, &bytes, hosts, &caches, &deploy_cache).await?);
    }

    println!(
        "deploy to effect: validator ({} KiB), region {region:?}, 2 hosts, polled every {} ms",
        v1.len() / 1024,
        POLL.as_millis()
    );
    println!(
        "  {:>4} {:>8} {:>10} {:>10} {:>10} {:>10}  cache (deployer / host 1 / host 2)",
        "#", "version", "deploy ms", "host 1 ms", "host 2 ms", "both ms"
    );
    let versions = (0..SWAPS)
        .map(|i| if i % 2 == 0 { "v2" } else { "v1" }.to_owned())
        .chain((0..FRESH).map(|i| format!("fresh-{i}")));
    for (n, (swap, version)) in swaps.iter().chain(&fresh).zip(versions).enumerate() {
        let case = |cached: bool| if cached { "hit" } else { "compile" };
        println!(
            "  {:>4} {version:>8} {:>10.1} {:>10.1} {:>10.1} {:>10.1}  {} / {} / {}",
            n + 1,
            ms(swap.deploy),
            ms(swap.hosts[0]),
            ms(swap.hosts[1]),
            ms(swap.both()),
            case(swap.deploy_cached),
            case(swap.cached[0]),
            case(swap.cached[1]),
        );
    }

    println!();
    println!(
        "  {:<52} {:>3} {:>9} {:>9} {:>9}",
        "from the deploy committing", "n", "p50 ms", "p99 ms", "max ms"
    );
    let groups: [(&str, Vec<&Swap>); 4] = [
        (
            &format!("all {SWAPS} alternating swaps"),
            swaps.iter().collect(),
        ),
        (
            "  of which new to both hosts (compiled)",
            swaps
                .iter()
                .filter(|s| !s.cached[0] && !s.cached[1])
                .collect(),
        ),
        (
            "  of which in both hosts' caches",
            swaps
                .iter()
                .filter(|s| s.cached[0] && s.cached[1])
                .collect(),
        ),
        (
            &format!("{FRESH} fresh versions (compiled)"),
            fresh.iter().collect(),
        ),
    ];
    for (name, group) in &groups {
        if group.is_empty() {
            continue;
        }
        row(&format!("{name}: host 1"), group.iter().map(|s| s.hosts[0]));
        row(&format!("{name}: host 2"), group.iter().map(|s| s.hosts[1]));
        row(&format!("{name}: both"), group.iter().map(|s| s.both()));
    }
    println!();
    println!(
        "  {:<52} {:>3} {:>9} {:>9} {:>9}",
        "the deploy call (check + commit)", "n", "p50 ms", "p99 ms", "max ms"
    );
    let all: Vec<&Swap> = swaps.iter().chain(&fresh).collect();
    row(
        "compiled by the deploying side",
        all.iter().filter(|s| !s.deploy_cached).map(|s| s.deploy),
    );
    row(
        "from its artifact cache",
        all.iter().filter(|s| s.deploy_cached).map(|s| s.deploy),
    );

    // Rule sets: 20 applies alternating two versions of acme's rules, until both hosts evaluate
    // with the applied one (no compile: the running alerter checks the text).
    let mut rule_swaps = Vec::new();
    for i in 0..SWAPS {
        let text = rule_set(if i % 2 == 0 { 2 } else { 1 });
        let started = Instant::now();
        let applied = registry.apply_rules("acme", &text, &region).await?;
        let committed = Instant::now();
        let version = applied.assignment.sha256;
        let mut switched: [Option<Duration>; 2] = [None, None];
        while switched.iter().any(Option::is_none) {
            for (host, at) in hosts.iter().zip(switched.iter_mut()) {
                if at.is_none() && rules_of(host, "acme").as_deref() == Some(version.as_str()) {
                    *at = Some(committed.elapsed());
                }
            }
            anyhow::ensure!(
                committed.elapsed() < GIVE_UP,
                "the hosts did not switch to rule set {version} within {GIVE_UP:?}"
            );
            tokio::time::sleep(POLL).await;
        }
        rule_swaps.push((
            committed - started,
            switched.map(|at| at.expect("both switched")),
        ));
    }
    println!();
    println!(
        "  {:<52} {:>3} {:>9} {:>9} {:>9}",
        "rule sets, from `rules apply` committing", "n", "p50 ms", "p99 ms", "max ms"
    );
    row(
        &format!("all {SWAPS} alternating rule sets: host 1"),
        rule_swaps.iter().map(|(_, hosts)| hosts[0]),
    );
    row(
        &format!("all {SWAPS} alternating rule sets: host 2"),
        rule_swaps.iter().map(|(_, hosts)| hosts[1]),
    );
    row(
        &format!("all {SWAPS} alternating rule sets: both"),
        rule_swaps.iter().map(|(_, hosts)| hosts[0].max(hosts[1])),
    );
    row(
        "the apply call (check + commit)",
        rule_swaps.iter().map(|(apply, _)| *apply),
    );

    second.shutdown().await;
    Ok(())
}

/// Version `version` of acme's rule set.
fn rule_set(version: u32) -> String {
    format!(
        "[[rules]]\nid = \"meter-hot\"\nversion = {version}\nkeys = \"meter.*.temperature\"\n\
         severity = {{ warning = \"value > {}\" }}\n",
        70 + version
    )
}

/// The version (SHA-256 of the text) of `org`'s rule set `host` evaluates with, if any.
fn rules_of(host: &Host, org: &str) -> Option<String> {
    let alerting = host.ingest().alerting.as_ref()?;
    alerting
        .rules()
        .current()
        .rule_set(org)
        .map(|set| set.version().to_owned())
}

/// Deploys `bytes` and waits until both hosts run it.
async fn swap(
    registry: &FunctionRegistry,
    region: &str,
    bytes: &[u8],
    hosts: [&Host; 2],
    caches: &[std::path::PathBuf; 2],
    deploy_cache: &Path,
) -> anyhow::Result<Swap> {
    let before = [cached_files(&caches[0]), cached_files(&caches[1])];
    let deploy_before = cached_files(deploy_cache);
    let started = Instant::now();
    let deployed = registry
        .deploy(FunctionName::Validator, bytes, region)
        .await?;
    let committed = Instant::now();
    anyhow::ensure!(deployed.changed, "every deploy changes the version");
    let digest = deployed.sha256;
    let mut switched: [Option<Duration>; 2] = [None, None];
    while switched.iter().any(Option::is_none) {
        for (host, at) in hosts.iter().zip(switched.iter_mut()) {
            if at.is_none() && validator_of(host) == digest {
                *at = Some(committed.elapsed());
            }
        }
        anyhow::ensure!(
            committed.elapsed() < GIVE_UP,
            "the hosts did not switch to {digest} within {GIVE_UP:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let holds = |files: &HashSet<String>| files.iter().any(|file| file.starts_with(&digest));
    Ok(Swap {
        deploy: committed - started,
        deploy_cached: holds(&deploy_before),
        hosts: switched.map(|at| at.expect("both switched")),
        cached: [holds(&before[0]), holds(&before[1])],
    })
}

/// The digest of the validator `host` runs.
fn validator_of(host: &Host) -> String {
    host.ingest().validator.current().digest().to_owned()
}

/// The files of an artifact cache (`<sha256>-<engine>.cwasm`).
fn cached_files(dir: &Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect()
}

fn row(name: &str, times: impl Iterator<Item = Duration>) {
    let mut times: Vec<Duration> = times.collect();
    if times.is_empty() {
        return;
    }
    times.sort();
    println!(
        "  {name:<52} {:>3} {:>9.1} {:>9.1} {:>9.1}",
        times.len(),
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().expect("not empty")),
    );
}

fn percentile(times: &[Duration], q: f64) -> Duration {
    times[((times.len() - 1) as f64 * q).round() as usize]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
