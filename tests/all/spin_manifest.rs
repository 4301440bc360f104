//! `spin.toml`, the Spin manifest that serves the query component under `spin up`, checked
//! without a Spin binary: it uses only manifest v2 fields, its component `source` is the file
//! `cargo xtask components` installs, its triggers name declared components and route every path
//! the component serves, its `{{ }}` templates and component variables name declared variables,
//! the component gets every variable it reads at run time, and every `allowed_outbound_hosts`
//! entry has a scheme.
//!
//! The allowed keys follow Spin's `crates/manifest/src/schema/v2.rs` and `common.rs`, where every
//! table is `deny_unknown_fields` (docs/SPIN.md). What the component imports is checked
//! elsewhere, by `query::the_query_component_imports_only_what_spin_provides`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// Top-level keys of a v2 manifest.
const MANIFEST_KEYS: &[&str] = &[
    "spin_manifest_version",
    "application",
    "variables",
    "trigger",
    "component",
];
/// `[application]`.
const APPLICATION_KEYS: &[&str] = &[
    "name",
    "version",
    "description",
    "authors",
    "targets",
    "trigger",
    "tool",
];
/// An entry of `[variables]`. Spin's main branch also has `description` (spin PR #3219, August
/// 2025), which older Spin releases reject, so this manifest does not use it.
const VARIABLE_KEYS: &[&str] = &["default", "required", "secret"];
/// A `[[trigger.http]]` entry: the generic trigger's `id`, `component`, `components` (reserved)
/// and the HTTP trigger's own `route` and `executor`.
const HTTP_TRIGGER_KEYS: &[&str] = &["id", "component", "components", "route", "executor"];
/// `[component.<id>]`. Spin's main branch also has `profile` (unreleased build profiles), left
/// out for the same reason as a variable's `description`.
const COMPONENT_KEYS: &[&str] = &[
    "source",
    "description",
    "variables",
    "environment",
    "files",
    "exclude_files",
    "allowed_outbound_hosts",
    "allowed_http_hosts",
    "key_value_stores",
    "sqlite_databases",
    "ai_models",
    "build",
    "tool",
    "dependencies_inherit_configuration",
    "dependencies",
];
/// `[component.<id>.build]`.
const BUILD_KEYS: &[&str] = &["command", "workdir", "watch"];

/// Where `cargo xtask components` installs the components, relative to the workspace root.
const FUNCTIONS_DIR: &str = "target/functions/";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn manifest() -> Table {
    read("spin.toml")
        .parse()
        .unwrap_or_else(|e| panic!("spin.toml is not TOML: {e}"))
}

fn table<'a>(value: &'a Value, field: &str) -> &'a Table {
    value
        .as_table()
        .unwrap_or_else(|| panic!("spin.toml: `{field}` must be a table"))
}

fn components(manifest: &Table) -> &Table {
    table(
        manifest
            .get("component")
            .expect("spin.toml: no [component.<id>] table"),
        "component",
    )
}

fn http_triggers(manifest: &Table) -> &[Value] {
    let triggers = table(
        manifest
            .get("trigger")
            .expect("spin.toml: no [[trigger.*]]"),
        "trigger",
    );
    triggers
        .get("http")
        .and_then(Value::as_array)
        .expect("spin.toml: no [[trigger.http]] array")
}

/// Fails naming `field.key` for every key of `table` outside `allowed`.
fn assert_only(table: &Table, allowed: &[&str], field: &str) {
    let unknown: Vec<String> = table
        .keys()
        .filter(|key| !allowed.contains(&key.as_str()))
        .map(|key| format!("{field}.{key}"))
        .collect();
    assert!(
        unknown.is_empty(),
        "spin.toml: not a manifest v2 field (Spin rejects unknown fields): {unknown:?}; \
         allowed in {field}: {allowed:?}"
    );
}

/// Every string inside `value`, with its field path.
fn strings<'a>(value: &'a Value, field: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(s) => out.push((field, s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{field}[{i}]"), out);
            }
        }
        Value::Table(table) => {
            for (key, item) in table {
                strings(item, format!("{field}.{key}"), out);
            }
        }
        _ => {}
    }
}

/// The variable names of the `{{ name }}` templates in `text`.
fn template_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .unwrap_or_else(|| panic!("unclosed `{{{{` in {text:?}"));
        names.push(after[..end].trim().to_owned());
        rest = &after[end + 2..];
    }
    names
}

/// The string literals that follow `marker` in `source` (`marker` ends with the opening quote).
fn literals_after(source: &str, marker: &str) -> Vec<String> {
    source
        .match_indices(marker)
        .map(|(at, _)| {
            let rest = &source[at + marker.len()..];
            rest[..rest.find('"').expect("closing quote")].to_owned()
        })
        .collect()
}

/// Every variable the query component reads: `variables::get("...")` in its sources.
fn variables_the_component_reads() -> BTreeSet<String> {
    let dir = workspace_root().join("functions/query/src");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "rs") {
            let source = std::fs::read_to_string(&path).unwrap();
            names.extend(literals_after(&source, "variables::get(\""));
        }
    }
    assert!(
        !names.is_empty(),
        "found no `variables::get(\"...\")` in {}: has the component's source moved?",
        dir.display()
    );
    names
}

/// Whether a Spin HTTP route (`/exact` or `/prefix/...`) takes `path`.
fn spin_route_takes(route: &str, path: &str) -> bool {
    match route.strip_suffix("/...") {
        Some(prefix) => path == prefix || path.starts_with(&format!("{prefix}/")),
        None => route == path,
    }
}

#[test]
fn spin_toml_uses_only_manifest_v2_fields() {
    let manifest = manifest();
    assert_only(&manifest, MANIFEST_KEYS, "(top level)");
    assert_eq!(
        manifest.get("spin_manifest_version"),
        Some(&Value::Integer(2)),
        "spin.toml: spin_manifest_version must be 2"
    );

    let application = table(
        manifest
            .get("application")
            .expect("spin.toml: no [application]"),
        "application",
    );
    assert_only(application, APPLICATION_KEYS, "application");
    assert!(
        application.get("name").is_some_and(Value::is_str),
        "spin.toml: application.name is required"
    );

    if let Some(variables) = manifest.get("variables") {
        for (name, variable) in table(variables, "variables") {
            let field = format!("variables.{name}");
            let variable = table(variable, &field);
            assert_only(variable, VARIABLE_KEYS, &field);
            let required = variable.get("required").and_then(Value::as_bool) == Some(true);
            assert!(
                required != variable.contains_key("default"),
                "spin.toml: {field} must be either `required = true` or have a `default`"
            );
        }
    }

    for kind in table(
        manifest.get("trigger").expect("no [[trigger.*]]"),
        "trigger",
    )
    .keys()
    {
        assert_eq!(
            kind, "http",
            "spin.toml: trigger.{kind}: only HTTP triggers"
        );
    }
    for (i, trigger) in http_triggers(&manifest).iter().enumerate() {
        let field = format!("trigger.http[{i}]");
        let trigger = table(trigger, &field);
        assert_only(trigger, HTTP_TRIGGER_KEYS, &field);
        assert!(
            trigger.get("route").is_some_and(Value::is_str),
            "spin.toml: {field}.route is required"
        );
    }

    for (id, component) in components(&manifest) {
        let field = format!("component.{id}");
        let component = table(component, &field);
        assert_only(component, COMPONENT_KEYS, &field);
        assert!(
            !component.contains_key("allowed_http_hosts"),
            "spin.toml: {field}.allowed_http_hosts is deprecated: use allowed_outbound_hosts"
        );
        if let Some(build) = component.get("build") {
            let field = format!("{field}.build");
            let build = table(build, &field);
            assert_only(build, BUILD_KEYS, &field);
            assert!(
                build.contains_key("command"),
                "spin.toml: {field}.command is required"
            );
        }
    }
}

#[test]
fn every_component_source_is_a_file_the_build_installs() {
    let xtask = read("xtask/src/components.rs");
    let installed = literals_after(&xtask, "destination: \"");
    assert!(
        installed.contains(&"query.wasm".to_owned()),
        "xtask/src/components.rs no longer installs query.wasm: {installed:?}"
    );
    for (id, component) in components(&manifest()) {
        let field = format!("component.{id}.source");
        let source = component
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("spin.toml: {field} must be a local file path"));
        let built = source
            .strip_prefix(FUNCTIONS_DIR)
            .is_some_and(|file| installed.iter().any(|d| d == file));
        assert!(
            built,
            "spin.toml: {field} = {source:?} is not a file `cargo xtask components` installs \
             (one of {FUNCTIONS_DIR}{{{}}})",
            installed.join(", ")
        );
        let path = workspace_root().join(source);
        assert!(
            path.is_file(),
            "spin.toml: {field} = {source:?}: {} does not exist; build the components with \
             `cargo xtask components`",
            path.display()
        );
    }
}

#[test]
fn every_trigger_names_a_declared_component_and_every_route_is_served() {
    let manifest = manifest();
    let components = components(&manifest);
    let mut routes = Vec::new();
    for (i, trigger) in http_triggers(&manifest).iter().enumerate() {
        let field = format!("trigger.http[{i}]");
        let component = trigger
            .get("component")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("spin.toml: {field}.component must name a component"));
        assert!(
            components.contains_key(component),
            "spin.toml: {field}.component = {component:?} is not a declared [component.*] \
             (declared: {:?})",
            components.keys().collect::<Vec<_>>()
        );
        let route = trigger["route"].as_str().unwrap();
        if component == "query" {
            routes.push(route.to_owned());
        }
    }

    // The component's route table (the contract's endpoints), with captures as sample segments.
    for endpoint in weir_contract::routes::Endpoint::ALL {
        let template = endpoint.template();
        let path: String = template
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        assert!(
            routes.iter().any(|route| spin_route_takes(route, &path)),
            "spin.toml: no trigger.http route sends `{template}` to component `query` \
             (routes: {routes:?})"
        );
    }
}

#[test]
fn every_variable_used_is_declared_and_every_variable_read_is_provided() {
    let manifest = manifest();
    let declared: BTreeSet<&str> = manifest
        .get("variables")
        .map(|v| table(v, "variables").keys().map(String::as_str).collect())
        .unwrap_or_default();

    for (id, component) in components(&manifest) {
        let field = format!("component.{id}");
        let mut texts = Vec::new();
        strings(component, field.clone(), &mut texts);
        for (at, text) in texts {
            for name in template_names(text) {
                assert!(
                    declared.contains(name.as_str()),
                    "spin.toml: {at} uses `{{{{ {name} }}}}`, which [variables] does not declare"
                );
            }
        }

        let provided: BTreeSet<String> = component
            .get("variables")
            .map(|v| {
                table(v, &format!("{field}.variables"))
                    .keys()
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for name in &provided {
            assert!(
                declared.contains(name.as_str()),
                "spin.toml: {field}.variables.{name} has no [variables] entry of that name"
            );
        }
        if id == "query" {
            for name in variables_the_component_reads() {
                assert!(
                    provided.contains(&name),
                    "spin.toml: {field}.variables.{name} is missing: the component reads \
                     `variables::get(\"{name}\")`"
                );
            }
        }
    }
}

#[test]
fn every_outbound_host_names_a_scheme() {
    for (id, component) in components(&manifest()) {
        let field = format!("component.{id}.allowed_outbound_hosts");
        let Some(hosts) = component.get("allowed_outbound_hosts") else {
            continue;
        };
        let hosts = hosts
            .as_array()
            .unwrap_or_else(|| panic!("spin.toml: {field} must be an array"));
        for (i, host) in hosts.iter().enumerate() {
            let host = host
                .as_str()
                .unwrap_or_else(|| panic!("spin.toml: {field}[{i}] must be a string"));
            let scheme = host.split_once("://").map(|(scheme, _)| scheme);
            assert!(
                scheme.is_some_and(|s| {
                    s == "*" || (!s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
                }),
                "spin.toml: {field}[{i}] = {host:?} has no scheme (`scheme://host[:port]`)"
            );
        }
    }
}
