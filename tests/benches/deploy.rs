//! Deploy to effect: the time from a deploy committing (`FunctionRegistry::deploy` returning,
//! what `weir functions deploy` runs) until every host of the region runs the new version,
//! polled every millisecond on each host's slot, and what the deploy call itself took.
//!
//! Two hosts of region "test" on the same PostgreSQL and Redis, each with its own state
//! directory (its own compiled-artifact cache, as hosts on separate machines have), and a
//! deploying registry with a state directory of its own. Deploys are staged: the hosts compile
//! a new version before it is assigned, so the deploy call holds the compile and the switch
//! after it is a swap. For each function (validator, then alerter): 20 deploys alternating two
//! versions (v2 = v1 plus a custom section; only the first is new to the hosts, the rest come
//! from each host's artifact cache), then versions no host has seen (`fresh`), staged, and the
//! baseline in the same run: fresh versions assigned without staging (`Storage::deploy_artifact`,
//! what deploys did before), which each host compiles after the NOTIFY.
//!
//! Then 20 rule-set applies (`FunctionRegistry::apply_rules`, what `weir rules apply` runs)
//! alternate two versions of an organisation's rules, until both hosts evaluate with the new one.
//!
//! Run with `cargo xtask bench` (or `cargo bench -p weir-tests --bench deploy` after
//! `cargo xtask components`). Everything shares this machine's cores: the deploying side, both
//! hosts, PostgreSQL and Redis.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weir::Config;
use weir::host::Host;
use weir_pipeline::registry::{FunctionName, FunctionRegistry};
use weir_storage::Storage;
use weir_tests::poll::eventually;
use weir_tests::stack::Stack;
use weir_tests::with_custom_section;

/// Deploys alternating v1 and v2, per function.
const SWAPS: usize = 20;
/// Deploys of a version no host has seen, per function and route.
const FRESH: usize = 3;
/// How often each host's slot is read.
const POLL: Duration = Duration::from_millis(1);
/// Longer than this and the bench gives up.
const GIVE_UP: Duration = Duration::from_secs(60);

/// One deploy, measured.
struct Swap {
    /// The `deploy` call itself: check, stage and wait for the hosts, then commit.
    deploy: Duration,
    /// Of which waiting for the hosts to prepare (zero unstaged).
    prepared: Duration,
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
    let deploy_state = tempfile::tempdir()?;
    let deploy_config = Config {
        state_dir: deploy_state.path().to_path_buf(),
        ..stack.config.clone()
    };
    let storage = Storage::connect(&stack.config.database_url, 2, Duration::from_secs(10)).await?;
    let bench = Bench {
        registry: &FunctionRegistry::connect(deploy_config.clone()).await?,
        storage: &storage,
        region: &region,
        hosts: [&stack.host, &second],
        caches: [stack.config.artifact_dir(), second_config.artifact_dir()],
        deploy_cache: deploy_config.artifact_dir(),
    };

    println!(
        "deploy to effect: region {region:?}, 2 hosts, polled every {} ms",
        POLL.as_millis()
    );
    for (name, file) in [
        (FunctionName::Validator, "validate.wasm"),
        (FunctionName::Alerter, "alert.wasm"),
    ] {
        let v1 = weir_tests::component_bytes(file);
        let v2 = with_custom_section(&v1, b"v2");
        anyhow::ensure!(
            running(&stack.host, name) == running(&second, name),
            "both hosts start on {file}"
        );
        let mut runs: Vec<(String, Swap)> = Vec::new();
        for i in 0..SWAPS {
            // The hosts run v1 from their files: the first deploy is v2.
            let (version, bytes) = if i % 2 == 0 { ("v2", &v2) } else { ("v1", &v1) };
            runs.push((
                version.into(),
                bench.swap(name, bytes, Route::Staged).await?,
            ));
        }
        for (route, label) in [(Route::Staged, "fresh"), (Route::Unstaged, "unstaged")] {
            for i in 0..FRESH {
                let bytes = with_custom_section(&v1, format!("{label}-{i}").as_bytes());
                runs.push((
                    format!("{label}-{i}"),
                    bench.swap(name, &bytes, route).await?,
                ));
            }
        }
        report(name, v1.len(), &runs);
    }

    // Rule sets: 20 applies alternating two versions of acme's rules, until both hosts evaluate
    // with the applied one (no compile: the running alerter checks the text).
    let hosts = bench.hosts;
    let registry = bench.registry;
    let mut rule_swaps = Vec::new();
    for i in 0..SWAPS {
        let text = rule_set(if i % 2 == 0 { 2 } else { 1 });
        let started = Instant::now();
        let applied = registry.apply_rules("acme", &text, &region).await?;
        let committed = Instant::now();
        let version = applied.assignment.sha256;
        let mut switched: [Option<Duration>; 2] = [None, None];
        let at = eventually(
            &format!("both hosts evaluate with rule set {version}"),
            GIVE_UP,
            POLL,
            async || {
                for (host, at) in hosts.iter().zip(switched.iter_mut()) {
                    if at.is_none() && rules_of(host, "acme").as_deref() == Some(version.as_str()) {
                        *at = Some(committed.elapsed());
                    }
                }
                both(switched)
            },
        )
        .await;
        rule_swaps.push((committed - started, at));
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

/// Prints every swap of `name` and the percentiles of each group.
fn report(name: FunctionName, size: usize, runs: &[(String, Swap)]) {
    println!();
    println!("{name} ({} KiB)", size / 1024);
    println!(
        "  {:>4} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  cache (deployer / host 1 / host 2)",
        "#", "version", "deploy ms", "prepare ms", "host 1 ms", "host 2 ms", "both ms"
    );
    let case = |cached: bool| if cached { "hit" } else { "compile" };
    for (n, (version, swap)) in runs.iter().enumerate() {
        println!(
            "  {:>4} {version:>10} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}  {} / {} / {}",
            n + 1,
            ms(swap.deploy),
            ms(swap.prepared),
            ms(swap.hosts[0]),
            ms(swap.hosts[1]),
            ms(swap.both()),
            case(swap.deploy_cached),
            case(swap.cached[0]),
            case(swap.cached[1]),
        );
    }
    let group = |prefix: &str| -> Vec<&Swap> {
        runs.iter()
            .filter(|(version, _)| version.starts_with(prefix))
            .map(|(_, swap)| swap)
            .collect()
    };
    let swaps: Vec<&Swap> = runs.iter().take(SWAPS).map(|(_, swap)| swap).collect();
    let groups: [(String, Vec<&Swap>); 3] = [
        (format!("{SWAPS} alternating swaps (staged)"), swaps),
        (format!("{FRESH} fresh versions (staged)"), group("fresh")),
        (
            format!("{FRESH} fresh versions unstaged (baseline)"),
            group("unstaged"),
        ),
    ];
    println!();
    println!(
        "  {:<52} {:>3} {:>9} {:>9} {:>9}",
        "", "n", "p50 ms", "p99 ms", "max ms"
    );
    for (label, swaps) in &groups {
        row(
            &format!("{label}: both hosts switched after commit"),
            swaps.iter().map(|s| s.both()),
        );
        row(
            &format!("{label}: the deploy call"),
            swaps.iter().map(|s| s.deploy),
        );
        row(
            &format!("{label}:   of which hosts preparing"),
            swaps.iter().map(|s| s.prepared),
        );
    }
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
    let alerting = host.alerting()?;
    alerting
        .rules()
        .current()
        .rule_set(org)
        .map(|set| set.version().to_owned())
}

/// How a version reaches the region.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `FunctionRegistry::deploy`: staged, prepared by every host, then assigned.
    Staged,
    /// The assignment alone (`Storage::deploy_artifact`, what deploys did before staging): each
    /// host compiles the version after the NOTIFY. The baseline.
    Unstaged,
}

/// Everything a swap needs: where to deploy and what to watch.
struct Bench<'a> {
    registry: &'a FunctionRegistry,
    storage: &'a Storage,
    region: &'a str,
    hosts: [&'a Host; 2],
    caches: [PathBuf; 2],
    deploy_cache: PathBuf,
}

impl Bench<'_> {
    /// Deploys `bytes` as `name` by `route` and waits until both hosts run it.
    async fn swap(&self, name: FunctionName, bytes: &[u8], route: Route) -> anyhow::Result<Swap> {
        let before = [cached_files(&self.caches[0]), cached_files(&self.caches[1])];
        let deploy_before = cached_files(&self.deploy_cache);
        let started = Instant::now();
        let mut prepared = Duration::ZERO;
        let deployed = match route {
            Route::Staged => {
                self.registry
                    .deploy_reporting(name, bytes, self.region, &mut |readiness| {
                        prepared = readiness.elapsed;
                    })
                    .await?
            }
            Route::Unstaged => {
                self.storage
                    .deploy_artifact(self.region, name.as_str(), name.kind(), bytes)
                    .await?
            }
        };
        let committed = Instant::now();
        anyhow::ensure!(deployed.changed, "every deploy changes the version");
        let digest = deployed.sha256;
        let mut switched: [Option<Duration>; 2] = [None, None];
        let hosts = eventually(
            &format!("both hosts run {name} {digest}"),
            GIVE_UP,
            POLL,
            async || {
                for (host, at) in self.hosts.iter().zip(switched.iter_mut()) {
                    if at.is_none() && running(host, name) == digest {
                        *at = Some(committed.elapsed());
                    }
                }
                both(switched)
            },
        )
        .await;
        let holds = |files: &HashSet<String>| files.iter().any(|file| file.starts_with(&digest));
        Ok(Swap {
            deploy: committed - started,
            prepared,
            deploy_cached: holds(&deploy_before),
            hosts,
            cached: [holds(&before[0]), holds(&before[1])],
        })
    }
}

/// Both hosts' switch times, once both have switched.
fn both(switched: [Option<Duration>; 2]) -> Option<[Duration; 2]> {
    match switched {
        [Some(first), Some(second)] => Some([first, second]),
        _ => None,
    }
}

/// The digest of what `host` runs under `name`.
fn running(host: &Host, name: FunctionName) -> String {
    match name {
        FunctionName::Alerter => host
            .alerting()
            .map(|alerting| alerting.function.current().digest().to_owned())
            .unwrap_or_default(),
        _ => host.validator().current().digest().to_owned(),
    }
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
