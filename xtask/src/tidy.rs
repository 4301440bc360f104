//! `cargo xtask tidy`: the house rules no compiler checks, checked in seconds, in the spirit of
//! rust-analyzer's `xtask/src/tidy.rs`.
//!
//! Each rule is one function returning the [`Problem`]s it finds; [`tidy`] runs them all and
//! prints every problem, so one run lists everything to fix. The rules:
//!
//! - `module-doc`: every `.rs` file of the repository opens with a `//!` paragraph.
//! - `module-name`: no `util`, `utils` or `helpers` module (docs/STYLE.md: names say what a
//!   thing is).
//! - `architecture-map`: docs/ARCHITECTURE.md names every package.
//! - `guest-deps`: a guest crate (under `functions/` or `tests/fixtures/`) depends on no package
//!   of this repository but `weir-contract` and `weir-guest` (the guests' own shared crate, which
//!   no host crate may use: [`LAYERS`] does not list it).
//! - `contract-deps`: `weir-contract` depends on nothing at all.
//! - `layering`: a host crate depends only on the packages [`LAYERS`] allows it.
//! - `forbidden-deps`: no package depends on what [`FORBIDDEN`] keeps from it.
//!
//! Dependencies are the ones manifests declare (`cargo metadata --no-deps`: direct, optional and
//! target-specific ones included, no lock resolution, no network); dev-dependencies are exempt.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::Workspace;
use crate::cargo::{cargo, output};
use crate::components::COMPONENTS;

/// Which packages of this repository each host crate may depend on (normal and build
/// dependencies). Adding a crate means adding a row; a row for a crate that does not exist yet
/// is fine. Keep docs/ARCHITECTURE.md telling the same story.
#[rustfmt::skip]
pub const LAYERS: &[(&str, &[&str])] = &[
    // package         may depend on
    ("weir-contract", &[]),
    ("weir-metrics",  &[]),
    ("weir-storage",  &["weir-contract"]),
    ("weir-pki",      &["weir-contract"]),
    ("weir-runtime",  &["weir-contract", "weir-metrics"]),
    ("weir-config",   &["weir-contract", "weir-runtime", "weir-pki"]),
    // weir-validate: the validator library, for the native type rules.
    ("weir-pipeline", &["weir-contract", "weir-metrics", "weir-runtime", "weir-config",
                        "weir-storage", "weir-validate"]),
    // weir-pki: the one place that builds TLS configs (the webhooks' client with public roots).
    ("weir-webhooks", &["weir-contract", "weir-metrics", "weir-config", "weir-storage",
                        "weir-pki"]),
    ("weir-surfaces", &["weir-contract", "weir-metrics", "weir-runtime", "weir-config",
                        "weir-storage", "weir-pki", "weir-pipeline"]),
];

/// Packages outside [`LAYERS`] that may depend on any package of the repository: the binary that
/// wires every crate together, and the test and tooling crates. (Guest crates are outside it
/// too; [`guest_dependencies`] holds them.)
pub const UNLAYERED: &[&str] = &["weir", "weir-tests", "weir-services", "xtask"];

/// Dependencies a package must not declare directly, and why.
pub const FORBIDDEN: &[(&str, &[&str], &str)] = &[
    (
        "weir-pipeline",
        &["hyper", "hyper-util", "http-body-util", "hyper-rustls"],
        "the pipeline returns typed results; HTTP belongs to weir-surfaces and weir-webhooks",
    ),
    (
        "weir-runtime",
        &["weir-surfaces", "weir-pipeline"],
        "the function runtime sits below the pipeline and the surfaces",
    ),
    (
        "weir-storage",
        &["wasmtime"],
        "storage knows nothing of the function runtime",
    ),
    (
        "weir-pki",
        &["wasmtime"],
        "the PKI knows nothing of the function runtime",
    ),
];

/// The one package guests may share with the host: what both sides agree on that WIT cannot
/// carry.
pub const CONTRACT: &str = "weir-contract";

/// The guests' shared crate: reading types and the WIT bindings every component reuses.
pub const GUEST_SHARED: &str = "weir-guest";

/// Where guest crates (WASM components and their libraries) live.
const GUEST_DIRS: &[&str] = &["functions/", "tests/fixtures/"];

/// Module names that say nothing about what the module is.
const VAGUE_MODULE_NAMES: &[&str] = &["util", "utils", "helpers"];

/// The map that must name every package.
const ARCHITECTURE: &str = "docs/ARCHITECTURE.md";

/// One broken rule: where, which rule, and what to do about it.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file, or the manifest of the package, to change.
    pub place: String,
    /// The rule's name, as listed in this module's documentation.
    pub rule: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} [{}]", self.place, self.message, self.rule)
    }
}

/// A package of this repository, as its manifest declares it.
#[derive(Debug)]
pub struct Package {
    pub name: String,
    /// The manifest, relative to the repository root, with `/` separators.
    pub manifest: String,
    pub dependencies: Vec<Dependency>,
}

/// A dependency a manifest declares.
#[derive(Debug)]
pub struct Dependency {
    /// The package's name (not a `package = ...` rename).
    pub name: String,
    /// A dev-dependency: exempt from the layering rules.
    pub dev: bool,
    /// A path dependency inside the repository: one of our own packages.
    pub ours: bool,
}

impl Package {
    /// Whether this is a guest crate: its manifest is under `functions/` or `tests/fixtures/`.
    fn is_guest(&self) -> bool {
        GUEST_DIRS.iter().any(|dir| self.manifest.starts_with(dir))
    }

    /// The normal and build dependencies.
    fn runtime_dependencies(&self) -> impl Iterator<Item = &Dependency> {
        self.dependencies.iter().filter(|dep| !dep.dev)
    }

    /// The normal and build dependencies on packages of this repository.
    fn our_dependencies(&self) -> impl Iterator<Item = &Dependency> {
        self.runtime_dependencies().filter(|dep| dep.ours)
    }

    fn problem(&self, rule: &'static str, message: String) -> Problem {
        Problem {
            place: self.manifest.clone(),
            rule,
            message,
        }
    }
}

/// Checks every rule and fails listing every problem found.
pub fn tidy(workspace: &Workspace) -> Result<()> {
    let root = workspace.root();
    let files = rust_files(workspace)?;
    let mut packages = read_packages(workspace, None)?;
    for manifest in COMPONENTS.iter().filter_map(|c| c.manifest) {
        packages.extend(read_packages(workspace, Some(manifest))?);
    }
    let architecture = fs::read_to_string(root.join(ARCHITECTURE))
        .with_context(|| format!("cannot read {ARCHITECTURE}"))?;

    let mut sources = Vec::new();
    for file in files {
        match fs::read(root.join(&file)) {
            Ok(bytes) => sources.push((file, String::from_utf8_lossy(&bytes).into_owned())),
            // Listed by git but deleted in the work tree: on its way out, nothing to check.
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("cannot read {file}")),
        }
    }
    let files: Vec<&str> = sources.iter().map(|(file, _)| file.as_str()).collect();

    let mut problems = module_docs(&sources);
    problems.extend(vague_module_names(&files));
    problems.extend(architecture_map(&packages, &architecture));
    problems.extend(guest_dependencies(&packages));
    problems.extend(contract_dependencies(&packages));
    problems.extend(layering(&packages, LAYERS, UNLAYERED));
    problems.extend(forbidden_dependencies(&packages, FORBIDDEN));

    if problems.is_empty() {
        eprintln!(
            "==> tidy: {} files and {} packages follow the rules",
            sources.len(),
            packages.len()
        );
        return Ok(());
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    bail!(
        "tidy found {} problem(s), listed above as `place: what to do [rule]`; the rules are \
         described at the top of xtask/src/tidy.rs",
        problems.len()
    )
}

/// The repository's `.rs` files, relative to the root: the ones git tracks and the untracked
/// ones it does not ignore (new crates may not be committed yet), never under a `target/`.
fn rust_files(workspace: &Workspace) -> Result<Vec<String>> {
    let listed = output(
        Command::new("git")
            .args([
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ])
            .args(["--", "*.rs"])
            .current_dir(workspace.root()),
    )
    .context("tidy lists the files with git: run it in a git checkout")?;
    let mut files: Vec<String> = listed
        .split('\0')
        .filter(|file| !file.is_empty())
        .filter(|file| {
            !Path::new(file)
                .components()
                .any(|c| c.as_os_str() == "target")
        })
        .map(str::to_owned)
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// The packages of the workspace at `manifest`: the root workspace when `None`, else a crate
/// outside it (the query component).
fn read_packages(workspace: &Workspace, manifest: Option<&str>) -> Result<Vec<Package>> {
    let mut command = cargo(workspace);
    command.args(["metadata", "--format-version", "1", "--no-deps"]);
    if let Some(manifest) = manifest {
        command.args(["--manifest-path", manifest]);
    }
    let json = output(&mut command)?;
    let root = workspace
        .root()
        .canonicalize()
        .context("cannot resolve the workspace root")?;
    parse_metadata(&json, &root)
}

/// The packages in `cargo metadata --format-version 1` output, paths relative to `root`.
pub fn parse_metadata(json: &str, root: &Path) -> Result<Vec<Package>> {
    #[derive(Deserialize)]
    struct Metadata {
        packages: Vec<RawPackage>,
    }
    #[derive(Deserialize)]
    struct RawPackage {
        name: String,
        manifest_path: String,
        dependencies: Vec<RawDependency>,
    }
    #[derive(Deserialize)]
    struct RawDependency {
        name: String,
        kind: Option<String>,
        path: Option<String>,
    }

    let metadata: Metadata =
        serde_json::from_str(json).context("cannot parse the output of cargo metadata")?;
    let packages = metadata.packages.into_iter().map(|package| {
        let manifest = Path::new(&package.manifest_path);
        let manifest = manifest.strip_prefix(root).unwrap_or(manifest);
        let dependencies = package.dependencies.into_iter().map(|dep| Dependency {
            name: dep.name,
            dev: dep.kind.as_deref() == Some("dev"),
            ours: dep
                .path
                .is_some_and(|path| Path::new(&path).starts_with(root)),
        });
        Package {
            name: package.name,
            manifest: slash_path(manifest),
            dependencies: dependencies.collect(),
        }
    });
    Ok(packages.collect())
}

fn slash_path(path: &Path) -> String {
    let parts: Vec<_> = path.iter().map(|part| part.to_string_lossy()).collect();
    parts.join("/")
}

/// `module-doc`: every file opens with a `//!` module doc comment saying what it is for (its
/// first non-empty line). Generated files under `tests/fixtures/**/src/` are exempt.
pub fn module_docs(sources: &[(String, String)]) -> Vec<Problem> {
    sources
        .iter()
        .filter(|(file, text)| !(is_fixture_source(file) && is_generated(text)))
        .filter(|(_, text)| !opens_with_module_doc(text))
        .map(|(file, _)| Problem {
            place: file.clone(),
            rule: "module-doc",
            message: "does not open with a `//!` comment: start the file with a paragraph \
                      saying what it is for and how it fits"
                .to_owned(),
        })
        .collect()
}

/// Whether the first non-empty line of `text` is a `//!` comment.
pub fn opens_with_module_doc(text: &str) -> bool {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .is_some_and(|line| line.starts_with("//!"))
}

/// Whether `file` is a source of a test fixture: `tests/fixtures/**/src/**`.
fn is_fixture_source(file: &str) -> bool {
    file.strip_prefix("tests/fixtures/")
        .is_some_and(|rest| rest.split('/').skip(1).any(|part| part == "src"))
}

/// Whether `text` is generated: `@generated` in its first five lines (rustfmt's convention).
pub fn is_generated(text: &str) -> bool {
    text.lines().take(5).any(|line| line.contains("@generated"))
}

/// `module-name`: no module named `util`, `utils` or `helpers`, as a file or a directory.
pub fn vague_module_names(files: &[&str]) -> Vec<Problem> {
    files
        .iter()
        .filter_map(|&file| {
            let path = Path::new(file);
            let stem = path.file_stem()?.to_str()?;
            let dirs = path.parent()?.components().filter_map(|c| match c {
                Component::Normal(dir) => dir.to_str(),
                _ => None,
            });
            let vague = std::iter::once(stem)
                .chain(dirs)
                .find(|name| VAGUE_MODULE_NAMES.contains(name))?;
            Some(Problem {
                place: file.to_owned(),
                rule: "module-name",
                message: format!(
                    "a `{vague}` module says nothing about what it holds: name it for what it \
                     is, or move each item next to its users"
                ),
            })
        })
        .collect()
}

/// `architecture-map`: docs/ARCHITECTURE.md names every package (its package name as a word).
pub fn architecture_map(packages: &[Package], architecture: &str) -> Vec<Problem> {
    packages
        .iter()
        .filter(|package| !mentions(architecture, &package.name))
        .map(|package| {
            package.problem(
                "architecture-map",
                format!(
                    "{ARCHITECTURE} does not name `{}`: add it to the code map, saying what \
                     it does and what it must not depend on",
                    package.name
                ),
            )
        })
        .collect()
}

/// Whether `text` contains `name` as a whole word, where package names are words: `weir` is
/// not found in `weir-storage`, nor `weir-storage` in `weir-storage-tests`.
pub fn mentions(text: &str, name: &str) -> bool {
    let is_name_char = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    text.match_indices(name).any(|(start, _)| {
        let before = text[..start].chars().next_back();
        let after = text[start + name.len()..].chars().next();
        !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
    })
}

/// `guest-deps`: a guest crate depends on no package of this repository but `weir-contract` and
/// `weir-guest`, so what runs in the sandbox can never pull in the host.
pub fn guest_dependencies(packages: &[Package]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for package in packages.iter().filter(|package| package.is_guest()) {
        for dep in package
            .our_dependencies()
            .filter(|dep| dep.name != CONTRACT && dep.name != GUEST_SHARED)
        {
            problems.push(package.problem(
                "guest-deps",
                format!(
                    "guest crate {} depends on {}: guests may share only {CONTRACT} with the \
                     host (and {GUEST_SHARED} among themselves); move what both need into \
                     {CONTRACT}",
                    package.name, dep.name
                ),
            ));
        }
    }
    problems
}

/// `contract-deps`: `weir-contract` has no (normal or build) dependencies at all, so every
/// crate, host or guest, native or wasm, can afford it.
pub fn contract_dependencies(packages: &[Package]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for package in packages.iter().filter(|package| package.name == CONTRACT) {
        for dep in package.runtime_dependencies() {
            problems.push(package.problem(
                "contract-deps",
                format!(
                    "{CONTRACT} depends on {}: it must have no dependencies, so that every \
                     host and guest crate can use it; write what it needs by hand",
                    dep.name
                ),
            ));
        }
    }
    problems
}

/// `layering`: a host crate depends only on the packages of this repository its row of `layers`
/// allows. A host crate without a row fails, unless `unlayered` names it; guest crates are left
/// to [`guest_dependencies`]. Rows for packages that do not exist are ignored.
pub fn layering(
    packages: &[Package],
    layers: &[(&str, &[&str])],
    unlayered: &[&str],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for package in packages {
        let row = layers.iter().find(|(name, _)| *name == package.name);
        let Some((_, allowed)) = row else {
            if !package.is_guest() && !unlayered.contains(&package.name.as_str()) {
                problems.push(package.problem(
                    "layering",
                    format!(
                        "{} is not in the layering table: add it to the layering table in \
                         xtask/src/tidy.rs (`LAYERS`) with the packages it may depend on",
                        package.name
                    ),
                ));
            }
            continue;
        };
        for dep in package.our_dependencies() {
            if !allowed.contains(&dep.name.as_str()) {
                problems.push(package.problem(
                    "layering",
                    format!(
                        "{} must not depend on {} (it may depend on: {}): remove the \
                         dependency, or if the layers really changed, change `LAYERS` in \
                         xtask/src/tidy.rs and {ARCHITECTURE} together",
                        package.name,
                        dep.name,
                        allowed_list(allowed)
                    ),
                ));
            }
        }
    }
    problems
}

fn allowed_list(allowed: &[&str]) -> String {
    if allowed.is_empty() {
        "nothing of this repository".to_owned()
    } else {
        allowed.join(", ")
    }
}

/// `forbidden-deps`: no package declares a (normal or build) dependency its row of `forbidden`
/// names.
pub fn forbidden_dependencies(
    packages: &[Package],
    forbidden: &[(&str, &[&str], &str)],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (name, denied, why) in forbidden {
        let denied: HashSet<&str> = denied.iter().copied().collect();
        for package in packages.iter().filter(|package| package.name == *name) {
            for dep in package.runtime_dependencies() {
                if denied.contains(dep.name.as_str()) {
                    problems.push(package.problem(
                        "forbidden-deps",
                        format!(
                            "{name} must not depend on {}: {why}; remove the dependency",
                            dep.name
                        ),
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo metadata --format-version 1 --no-deps`, cut down to what tidy reads, for a
    /// workspace at /repo.
    const METADATA: &str = r#"{
      "packages": [
        { "name": "weir-storage", "manifest_path": "/repo/crates/storage/Cargo.toml",
          "dependencies": [
            { "name": "weir-contract", "kind": null, "path": "/repo/functions/contract" },
            { "name": "tokio-postgres", "kind": null },
            { "name": "weir-services", "kind": "dev", "path": "/repo/tests/services" }
          ] },
        { "name": "weir-webhooks", "manifest_path": "/repo/crates/webhooks/Cargo.toml",
          "dependencies": [
            { "name": "weir-pki", "kind": null, "path": "/repo/crates/pki" },
            { "name": "weir-storage", "kind": "build", "path": "/repo/crates/storage" },
            { "name": "hyper", "kind": null }
          ] },
        { "name": "weir-pki", "manifest_path": "/repo/crates/pki/Cargo.toml",
          "dependencies": [ { "name": "wasmtime", "kind": null } ] },
        { "name": "weir-newcomer", "manifest_path": "/repo/crates/newcomer/Cargo.toml",
          "dependencies": [] },
        { "name": "weir", "manifest_path": "/repo/runtime-host/Cargo.toml",
          "dependencies": [
            { "name": "weir-webhooks", "kind": null, "path": "/repo/crates/webhooks" }
          ] },
        { "name": "weir-alert", "manifest_path": "/repo/functions/alert/Cargo.toml",
          "dependencies": [
            { "name": "weir-contract", "kind": null, "path": "/repo/functions/contract" },
            { "name": "weir-validate", "kind": null, "path": "/repo/functions/validate" },
            { "name": "weir-tests", "kind": "dev", "path": "/repo/tests" },
            { "name": "cel", "kind": null }
          ] },
        { "name": "weir-contract", "manifest_path": "/repo/functions/contract/Cargo.toml",
          "dependencies": [
            { "name": "serde", "kind": null },
            { "name": "proptest", "kind": "dev" }
          ] }
      ]
    }"#;

    const TEST_LAYERS: &[(&str, &[&str])] = &[
        ("weir-contract", &[]),
        ("weir-storage", &["weir-contract"]),
        ("weir-pki", &[]),
        ("weir-webhooks", &["weir-contract", "weir-pki"]),
        ("weir-not-yet-created", &["weir-contract"]),
    ];

    fn packages() -> Vec<Package> {
        parse_metadata(METADATA, Path::new("/repo")).unwrap()
    }

    fn messages(problems: &[Problem]) -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn metadata_gives_manifests_relative_to_the_root_and_tells_our_packages_apart() {
        let packages = packages();
        let storage = &packages[0];
        assert_eq!(storage.manifest, "crates/storage/Cargo.toml");
        let deps: Vec<_> = storage
            .dependencies
            .iter()
            .map(|dep| (dep.name.as_str(), dep.dev, dep.ours))
            .collect();
        assert_eq!(
            deps,
            [
                ("weir-contract", false, true),
                ("tokio-postgres", false, false),
                ("weir-services", true, true),
            ]
        );
        assert!(packages[5].is_guest());
        assert!(!storage.is_guest());
    }

    #[test]
    fn a_file_must_open_with_a_module_doc_comment() {
        assert!(opens_with_module_doc("//! What this is.\n\nuse std::fs;\n"));
        assert!(opens_with_module_doc("\n  \n//! After blank lines.\n"));
        assert!(opens_with_module_doc(
            "\u{feff}//! After a byte-order mark.\n"
        ));
        assert!(!opens_with_module_doc(
            "// A plain comment.\n//! Too late.\n"
        ));
        assert!(!opens_with_module_doc("/// An item doc.\nfn f() {}\n"));
        assert!(!opens_with_module_doc("#![allow(unused)]\n//! Too late.\n"));
        assert!(!opens_with_module_doc("use std::fs;\n"));
        assert!(!opens_with_module_doc(""));
    }

    #[test]
    fn only_generated_fixture_sources_are_exempt_from_module_docs() {
        let generated = "// @generated by wit-bindgen\nfn f() {}\n";
        let sources = [
            ("tests/fixtures/hostile/src/bindings.rs", generated),
            ("tests/fixtures/hostile/src/lib.rs", "fn f() {}\n"),
            ("functions/alert/src/bindings.rs", generated),
            ("xtask/src/main.rs", "//! Fine.\n"),
        ]
        .map(|(file, text)| (file.to_owned(), text.to_owned()));
        let places: Vec<_> = module_docs(&sources)
            .into_iter()
            .map(|problem| problem.place)
            .collect();
        assert_eq!(
            places,
            [
                "tests/fixtures/hostile/src/lib.rs",
                "functions/alert/src/bindings.rs"
            ]
        );
    }

    #[test]
    fn util_utils_and_helpers_modules_are_refused() {
        let files = [
            "runtime-host/src/utils.rs",
            "runtime-host/src/helpers/mod.rs",
            "functions/query/src/util.rs",
            "runtime-host/src/utility.rs",
            "runtime-host/src/http/util_free.rs",
        ];
        let places: Vec<_> = vague_module_names(&files)
            .into_iter()
            .map(|problem| problem.place)
            .collect();
        assert_eq!(places, &files[..3]);
    }

    #[test]
    fn package_names_are_found_only_as_whole_words() {
        let text = "`weir-storage-tests` and weir_pki, then (`weir-webhooks`).\nweir";
        assert!(mentions(text, "weir-webhooks"));
        assert!(mentions(text, "weir"));
        assert!(!mentions(text, "weir-storage"));
        assert!(!mentions(text, "weir-pki"));
        assert!(!mentions("Weir runs", "weir"));
    }

    #[test]
    fn the_architecture_map_must_name_every_package() {
        let map = "`weir` uses `weir-storage`, `weir-webhooks`, `weir-pki`, `weir-alert` and \
                   weir-contract.";
        assert_eq!(
            messages(&architecture_map(&packages(), map)),
            [
                "crates/newcomer/Cargo.toml: docs/ARCHITECTURE.md does not name `weir-newcomer`: \
              add it to the code map, saying what it does and what it must not depend on \
              [architecture-map]"
            ]
        );
    }

    #[test]
    fn guests_may_share_only_the_contract_with_the_host() {
        assert_eq!(
            messages(&guest_dependencies(&packages())),
            [
                "functions/alert/Cargo.toml: guest crate weir-alert depends on weir-validate: \
              guests may share only weir-contract with the host (and weir-guest among \
              themselves); move what both need into weir-contract [guest-deps]"
            ]
        );
    }

    #[test]
    fn the_contract_depends_on_nothing_but_may_have_dev_dependencies() {
        let problems = contract_dependencies(&packages());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].rule, "contract-deps");
        assert!(
            problems[0]
                .message
                .starts_with("weir-contract depends on serde:")
        );
    }

    #[test]
    fn host_crates_depend_only_on_what_their_row_allows() {
        let problems = layering(&packages(), TEST_LAYERS, &["weir"]);
        let found: Vec<_> = problems
            .iter()
            .map(|problem| (problem.place.as_str(), problem.rule))
            .collect();
        assert_eq!(
            found,
            [
                // A build dependency counts.
                ("crates/webhooks/Cargo.toml", "layering"),
                // Not in the table, not exempt.
                ("crates/newcomer/Cargo.toml", "layering"),
            ]
        );
        assert!(
            problems[0]
                .message
                .starts_with("weir-webhooks must not depend on weir-storage (it may depend on: weir-contract, weir-pki)")
        );
        assert!(
            problems[1]
                .message
                .contains("add it to the layering table in xtask/src/tidy.rs")
        );
    }

    #[test]
    fn forbidden_dependencies_are_named_with_the_reason() {
        assert_eq!(
            messages(&forbidden_dependencies(&packages(), FORBIDDEN)),
            [
                "crates/pki/Cargo.toml: weir-pki must not depend on wasmtime: the PKI knows \
              nothing of the function runtime; remove the dependency [forbidden-deps]"
            ]
        );
    }

    #[test]
    fn the_layering_table_names_each_package_once_and_none_depends_on_itself() {
        let mut names = HashSet::new();
        for (name, allowed) in LAYERS {
            assert!(names.insert(name), "{name} has two rows");
            assert!(!allowed.contains(name), "{name} may depend on itself");
            assert!(
                !UNLAYERED.contains(name),
                "{name} is both layered and unlayered"
            );
        }
    }
}
