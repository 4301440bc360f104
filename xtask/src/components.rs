//! `cargo xtask components`: build the WASM function components and put them where Weir loads
//! them, `target/functions` (`WEIR_FUNCTIONS_DIR`).
//!
//! [`COMPONENTS`] is the one list of components: adding a function crate means adding a row.
//! Workspace crates build in one cargo run; a crate outside the workspace (the query component,
//! whose spin-sdk brings its own wit-bindgen) builds on its own with the same profile and the
//! same target directory. Files are replaced atomically (write beside, then rename), so a running Weir that watches the
//! directory never loads a half-written component.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::Workspace;
use crate::cargo::{cargo, run};

/// The Rust target components are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The cargo profile of component builds (release, stripped, LTO; see the root Cargo.toml).
pub const PROFILE: &str = "components";

/// A component crate and where its build output goes.
pub struct Component {
    /// The cargo package.
    pub package: &'static str,
    /// For a crate outside the workspace, its manifest (relative to the root); `None` for a
    /// workspace member.
    pub manifest: Option<&'static str>,
    /// The file cargo writes to `target/wasm32-wasip2/components/`.
    pub wasm: &'static str,
    /// Its path under `target/functions/`; test-only components go under `test/`.
    pub destination: &'static str,
}

/// Every component Weir builds.
pub const COMPONENTS: &[Component] = &[
    Component {
        package: "weir-validate",
        manifest: None,
        wasm: "weir_validate.wasm",
        destination: "validate.wasm",
    },
    Component {
        package: "weir-alert",
        manifest: None,
        wasm: "weir_alert.wasm",
        destination: "alert.wasm",
    },
    Component {
        package: "weir-hostile-alerter",
        manifest: None,
        wasm: "weir_hostile_alerter.wasm",
        destination: "test/hostile-alerter.wasm",
    },
    Component {
        package: "weir-hostile-validator",
        manifest: None,
        wasm: "weir_hostile_validator.wasm",
        destination: "test/hostile-validator.wasm",
    },
    Component {
        package: "weir-marking-validator",
        manifest: None,
        wasm: "weir_marking_validator.wasm",
        destination: "test/marking-validator.wasm",
    },
    Component {
        package: "weir-query",
        manifest: Some("functions/query/Cargo.toml"),
        wasm: "weir_query.wasm",
        destination: "query.wasm",
    },
];

/// Builds every component with the components profile and installs it into the functions
/// directory.
pub fn components(workspace: &Workspace) -> Result<()> {
    let mut build = cargo(workspace);
    build.args(["build", "--profile", PROFILE, "--target", WASM_TARGET]);
    for component in COMPONENTS.iter().filter(|c| c.manifest.is_none()) {
        build.args(["-p", component.package]);
    }
    run(&mut build)?;
    for component in COMPONENTS {
        if let Some(manifest) = component.manifest {
            run(cargo(workspace)
                .args(["build", "--profile", PROFILE, "--target", WASM_TARGET])
                .args(["--manifest-path", manifest])
                .env("CARGO_TARGET_DIR", workspace.target_dir()))?;
        }
    }

    let built = workspace.target_dir().join(WASM_TARGET).join(PROFILE);
    let functions = workspace.functions_dir();
    for component in COMPONENTS {
        let source = built.join(component.wasm);
        let destination = functions.join(component.destination);
        let size = install(&source, &destination)
            .with_context(|| format!("cannot install the {} component", component.package))?;
        let shown = destination
            .strip_prefix(workspace.root())
            .unwrap_or(&destination);
        eprintln!("==> {} ({})", shown.display(), human_size(size));
    }
    Ok(())
}

/// Copies `source` to `destination` atomically, returning the size in bytes.
fn install(source: &Path, destination: &Path) -> Result<u64> {
    let parent = destination
        .parent()
        .context("destination has no parent directory")?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let partial = destination.with_extension("wasm.partial");
    let size = fs::copy(source, &partial)
        .with_context(|| format!("cannot copy {} (was it built?)", source.display()))?;
    fs::rename(&partial, destination)
        .with_context(|| format!("cannot move {} into place", partial.display()))?;
    Ok(size)
}

fn human_size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_names_a_package_and_a_distinct_destination() {
        let root = Workspace::locate().root().to_owned();
        for component in COMPONENTS {
            let lock = match component.manifest {
                None => root.join("Cargo.lock"),
                Some(manifest) => root.join(manifest).with_file_name("Cargo.lock"),
            };
            let entry = format!("name = \"{}\"", component.package);
            assert!(
                fs::read_to_string(&lock).unwrap().contains(&entry),
                "{} is not in {}",
                component.package,
                lock.display()
            );
        }
        let mut destinations: Vec<_> = COMPONENTS.iter().map(|c| c.destination).collect();
        destinations.sort_unstable();
        destinations.dedup();
        assert_eq!(destinations.len(), COMPONENTS.len());
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(150 * 1024), "150.0 KiB");
        assert_eq!(human_size(3 * 1_048_576 / 2), "1.5 MiB");
    }

    #[test]
    fn install_replaces_the_destination_and_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("built.wasm");
        let destination = dir.path().join("functions/test/x.wasm");
        fs::write(&source, b"new").unwrap();
        assert_eq!(install(&source, &destination).unwrap(), 3);
        assert_eq!(fs::read(&destination).unwrap(), b"new");
        assert!(!destination.with_extension("wasm.partial").exists());
    }
}
