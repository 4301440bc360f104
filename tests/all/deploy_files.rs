//! `deploy/` against the code it deploys, without a cluster: every `WEIR_*` variable named
//! anywhere under it is one Weir reads; the image's `WEIR_*` paths are where its Containerfile
//! puts files, and the Deployment mounts its volumes there; the configuration file loads with
//! the image's variables; each overlay's `WEIR_REGION` is its region; the termination grace
//! period covers the preStop sleep and the host's drain; nginx streams the event endpoint the
//! host serves; and every metric the dashboard, the scrape configuration and the docs name is
//! one the host exports.
//!
//! How the manifests render and validate, and whether nginx accepts its configuration, is
//! `cargo xtask deploy` (xtask/src/deploy.rs), which needs kubectl, Python and nginx.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use weir::Config;

/// `weir_` identifiers under deploy/ that are not metrics: the read-only database role and
/// nginx's names for its upstreams and cache.
const NOT_METRICS: &[&str] = &["weir_query", "weir_devices", "weir_api", "weir_api_cache"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every text file under `dir`, recursively, with its contents.
fn text_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                files.push((path, text));
            }
        }
    }
    files.sort();
    files
}

/// The identifiers of `text` that start with `prefix` and go on with characters of `chars`, not
/// preceded by an identifier character (so `label_weir_x` is not `weir_x`).
fn identifiers<'a>(text: &'a str, prefix: &str, chars: fn(char) -> bool) -> Vec<&'a str> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices(prefix) {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[at + prefix.len()..];
        let len = rest.find(|c: char| !chars(c)).unwrap_or(rest.len());
        let name = text[at..at + prefix.len() + len].trim_end_matches('_');
        if name.len() > prefix.len() {
            found.push(name);
        }
    }
    found
}

/// Whether Weir reads the variable `name`: the command line's (`env = ...` of its arguments),
/// the log filter's, or the configuration's, which shows by a value of it changing the loaded
/// configuration or being refused (an unknown variable is ignored: neither happens).
fn weir_reads(name: &str, cli_vars: &BTreeSet<String>) -> bool {
    if cli_vars.contains(name) {
        return true;
    }
    // telemetry::init reads the log filter from WEIR_LOG.
    if name == "WEIR_LOG" {
        let telemetry =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime-host/src/telemetry.rs");
        return read(&telemetry).contains("\"WEIR_LOG\"");
    }
    ["3", "5"].iter().any(|value| {
        match Config::load_from(None, [(name.to_owned(), value.to_string())]) {
            Ok(config) => config != Config::default(),
            Err(_) => true,
        }
    })
}

/// Every `env = "..."` of `weir`'s command line, subcommands included.
fn cli_variables() -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    let mut pending = vec![weir::cli::Cli::command()];
    while let Some(command) = pending.pop() {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                vars.insert(env.to_string_lossy().into_owned());
            }
        }
        pending.extend(command.get_subcommands().cloned());
    }
    vars
}

#[test]
fn every_weir_variable_under_deploy_is_one_weir_reads() {
    let cli_vars = cli_variables();
    assert!(cli_vars.contains("WEIR_CONFIG"), "{cli_vars:?}");
    let is_name = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
    let mut named: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in text_files(&deploy_dir()) {
        for name in identifiers(&text, "WEIR_", is_name) {
            let file = path
                .strip_prefix(deploy_dir())
                .unwrap()
                .display()
                .to_string();
            named.entry(name.to_owned()).or_default().insert(file);
        }
    }
    for expected in [
        "WEIR_REGION",
        "WEIR_DATABASE_URL",
        "WEIR_FUNCTIONS_DIR",
        "WEIR_CONFIG",
    ] {
        assert!(
            named.contains_key(expected),
            "deploy/ never names {expected}"
        );
    }
    let unknown: Vec<String> = named
        .iter()
        .filter(|(name, _)| !weir_reads(name, &cli_vars))
        .map(|(name, files)| {
            format!(
                "{name} (in {})",
                Vec::from_iter(files.iter().cloned()).join(", ")
            )
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "variables Weir does not read: {unknown:?}"
    );
    // The probe itself tells a variable Weir ignores from one it reads.
    assert!(!weir_reads("WEIR_NO_SUCH_SETTING", &cli_vars));
    assert!(weir_reads("WEIR_RENEW_DAYS", &cli_vars));
}

/// The Containerfile's stages, each as its instructions with continuation lines joined.
fn containerfile_stages() -> Vec<Vec<String>> {
    let text = read(&deploy_dir().join("Containerfile"));
    let mut stages: Vec<Vec<String>> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') && current.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let instruction = std::mem::take(&mut current);
                if instruction.is_empty() {
                    continue;
                }
                if instruction.starts_with("FROM ") {
                    stages.push(Vec::new());
                }
                stages
                    .last_mut()
                    .expect("the Containerfile starts with FROM")
                    .push(instruction);
            }
        }
    }
    stages
}

#[test]
fn the_image_puts_files_where_its_weir_variables_point() {
    let stages = containerfile_stages();
    let (build, runtime) = (&stages[0], &stages[stages.len() - 1]);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut copies: Vec<(Vec<String>, String)> = Vec::new();
    let mut made_dirs: BTreeSet<String> = BTreeSet::new();
    for instruction in runtime {
        let words: Vec<&str> = instruction.split_whitespace().collect();
        match words[0] {
            "ENV" => {
                for pair in &words[1..] {
                    let (name, value) = pair.split_once('=').expect("ENV NAME=value");
                    env.insert(name.to_owned(), value.to_owned());
                }
            }
            "COPY" => {
                let args: Vec<String> = words[1..]
                    .iter()
                    .filter(|word| !word.starts_with("--"))
                    .map(|word| word.to_string())
                    .collect();
                let (destination, sources) = args.split_last().expect("COPY SRC... DEST");
                copies.push((
                    sources.to_vec(),
                    destination.trim_end_matches('/').to_owned(),
                ));
            }
            "RUN" => {
                for part in instruction.split("&&") {
                    if let Some(dirs) = part.trim().strip_prefix("mkdir -p ") {
                        made_dirs.extend(dirs.split_whitespace().map(str::to_owned));
                    }
                }
            }
            _ => {}
        }
    }
    let copied_to = |path: &str| copies.iter().find(|(_, destination)| destination == path);

    // Every path the image gives Weir exists in it: copied there, or made.
    for (name, value) in env.iter().filter(|(name, _)| name.starts_with("WEIR_")) {
        assert!(value.starts_with('/'), "{name}={value} is not absolute");
        assert!(
            copied_to(value).is_some() || made_dirs.contains(value),
            "{name}={value}: nothing is copied there and no RUN makes it"
        );
    }

    // The functions directory holds what the default configuration loads, built by
    // `cargo xtask components` into target/functions.
    let functions_dir = &env["WEIR_FUNCTIONS_DIR"];
    let (sources, _) = copied_to(functions_dir).unwrap();
    let [staged] = sources.as_slice() else {
        panic!("{functions_dir} is copied from one directory of the build stage: {sources:?}")
    };
    let staged = staged.trim_end_matches('/');
    let defaults = Config::default();
    let components = [
        PathBuf::from(weir_pipeline::registry::VALIDATOR_FILE),
        defaults.query.component.clone(),
        defaults.alerting.component.clone(),
    ];
    for component in &components {
        let built = format!("target/functions/{}", component.display());
        assert!(
            build
                .iter()
                .any(|step| step.contains(&built) && step.contains(staged)),
            "the build stage does not copy {built} to {staged}, the source of {functions_dir}"
        );
    }
    let build = build.join("\n");
    assert!(build.contains("cargo xtask components"));
    assert!(build.contains("cargo build --release") && build.contains("-p weir"));

    // The configuration file the image names is deploy/base/weir.toml, and it loads with the
    // image's variables into the image's directories.
    let config_path = &env["WEIR_CONFIG"];
    let (sources, _) = copied_to(config_path).expect("WEIR_CONFIG is copied into the image");
    assert_eq!(sources, &["deploy/base/weir.toml".to_owned()]);
    let file = deploy_dir().join("base/weir.toml");
    let vars = env
        .iter()
        .filter(|(name, _)| *name != "WEIR_CONFIG")
        .map(|(name, value)| (name.clone(), value.clone()));
    let config = Config::load_from(Some(&file), vars)
        .unwrap_or_else(|e| panic!("deploy/base/weir.toml does not load: {e:#}"));
    assert_eq!(config.functions_dir, Path::new(functions_dir));
    assert_eq!(config.state_dir, Path::new(&env["WEIR_STATE_DIR"]));

    // The Deployment mounts its volumes at those paths: the ConfigMap over WEIR_CONFIG's
    // directory, the state directory, and the PKI Secret where weir.toml's TLS files are.
    let deployment = read(&deploy_dir().join("base/weir.yaml"));
    let mounts: BTreeSet<&str> = deployment
        .lines()
        .filter_map(|line| line.trim().strip_prefix("mountPath: "))
        .collect();
    assert!(deployment.contains(&format!("value: {config_path}\n")));
    let config_dir = Path::new(config_path).parent().unwrap().to_str().unwrap();
    assert!(
        mounts.contains(config_dir),
        "{config_dir} is not mounted: {mounts:?}"
    );
    assert!(
        mounts.contains(env["WEIR_STATE_DIR"].as_str()),
        "{mounts:?}"
    );
    let kustomization = read(&deploy_dir().join("base/kustomization.yaml"));
    let tls = &config.tls;
    for file in [&tls.cert, &tls.key, &tls.device_ca] {
        let file = file
            .as_deref()
            .expect("weir.toml names every device TLS file");
        let dir = file.parent().unwrap().to_str().unwrap();
        assert!(
            mounts.contains(dir),
            "{} is not in a mounted volume",
            file.display()
        );
        let key = file.file_name().unwrap().to_str().unwrap();
        assert!(
            kustomization.contains(&format!("- secrets/{key}\n")),
            "the Secret weir-pki has no {key}"
        );
    }
}

#[test]
fn each_overlay_runs_its_own_region() {
    let overlays = deploy_dir().join("overlays");
    let mut regions = Vec::new();
    for entry in std::fs::read_dir(&overlays).unwrap() {
        let dir = entry.unwrap().path();
        let region = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let kustomization = read(&dir.join("kustomization.yaml"));
        assert!(
            kustomization.contains(&format!("namespace: weir-{region}\n")),
            "{region}: namespace"
        );
        let patch = read(&dir.join("region.yaml"));
        assert!(
            patch.contains(&format!(
                "- name: WEIR_REGION\n              value: {region}\n"
            )),
            "{region}: WEIR_REGION"
        );
        regions.push(region);
    }
    regions.sort();
    assert!(regions.contains(&"eu".to_owned()), "{regions:?}");
}

#[test]
fn the_grace_period_covers_the_prestop_sleep_and_the_drain() {
    let deployment = read(&deploy_dir().join("base/weir.yaml"));
    let number_after = |key: &str| -> u64 {
        let at = deployment.find(key).unwrap_or_else(|| panic!("no {key}")) + key.len();
        let digits: String = deployment[at..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a number"))
    };
    let grace = number_after("terminationGracePeriodSeconds:");
    let sleep = number_after("command: [\"sleep\", \"");
    let drain = weir_surfaces::http::server::DRAIN_TIMEOUT.as_secs();
    assert!(
        grace > sleep + drain,
        "terminationGracePeriodSeconds {grace} <= preStop sleep {sleep} + drain {drain}"
    );
}

#[test]
fn nginx_streams_the_event_endpoint_unbuffered() {
    let conf = read(&deploy_dir().join("nginx/nginx.conf.template"));
    let path = weir_surfaces::api::event_stream::PATH;
    let at = conf
        .find(&format!("location = {path} {{"))
        .unwrap_or_else(|| panic!("nginx has no location for {path}"));
    let block = &conf[at..at + conf[at..].find('}').unwrap()];
    assert!(block.contains("proxy_buffering off;"), "{block}");
    assert!(block.contains("proxy_cache off;"), "{block}");
}

/// The series names the host exports: counters with `_total`, histograms with `_bucket`,
/// `_sum` and `_count` (and their family name), gauges as they are. A labelled family shows only once it has a series,
/// so each gets one first (a new family of weir-metrics belongs in this list).
fn exported_metrics() -> BTreeSet<String> {
    use weir_metrics::{CodeLabel, OutcomeLabel};
    let metrics = weir_metrics::Metrics::new();
    let code = CodeLabel { code: "x".into() };
    for family in [
        &metrics.batches,
        &metrics.points_rejected,
        &metrics.function_errors,
        &metrics.answer_cache,
        &metrics.function_registry_loads,
        &metrics.alert_failures,
    ] {
        family.get_or_create(&code).inc();
    }
    metrics
        .webhook_deliveries
        .get_or_create(&OutcomeLabel {
            outcome: "x".into(),
        })
        .inc();
    let text = metrics.encode();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                // The family's own name too: docs name histograms so.
                for suffix in ["", "_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[test]
fn every_metric_named_under_deploy_exists() {
    let exported = exported_metrics();
    assert!(exported.contains("weir_batches_total"), "{exported:?}");
    let is_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut unknown = Vec::new();
    let mut named = BTreeSet::new();
    let monitoring = text_files(&deploy_dir().join("monitoring"));
    let readme = (
        deploy_dir().join("README.md"),
        read(&deploy_dir().join("README.md")),
    );
    for (path, text) in monitoring.iter().chain([&readme]) {
        for name in identifiers(text, "weir_", is_name) {
            if NOT_METRICS.contains(&name) {
                continue;
            }
            named.insert(name.to_owned());
            if !exported.contains(name) {
                unknown.push(format!("{name} ({})", path.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not metrics of weir-metrics: {unknown:?}"
    );

    // The dashboard has its panels, each reading the host's metrics.
    let dashboard = read(&deploy_dir().join("monitoring/grafana-dashboard.json"));
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|panel| {
            let title = panel["title"].as_str().unwrap();
            let exprs: Vec<&str> = panel["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|target| target["expr"].as_str().unwrap())
                .collect();
            assert!(
                exprs
                    .iter()
                    .all(|expr| !identifiers(expr, "weir_", is_name).is_empty()),
                "panel {title}: {exprs:?}"
            );
            title
        })
        .collect();
    for panel in [
        "Ingest rate",
        "Rejections by code",
        "Batch latency",
        "Function failures",
        "Deploys",
        "Webhook backlog",
    ] {
        assert!(titles.contains(&panel), "no panel {panel}: {titles:?}");
    }
    for metric in [
        "weir_points_rejected_total",
        "weir_submit_seconds_bucket",
        "weir_function_errors_total",
        "weir_function_registry_loads_total",
        "weir_webhook_pending_deliveries",
    ] {
        assert!(named.contains(metric), "deploy/ never reads {metric}");
    }
}
