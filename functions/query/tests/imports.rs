//! The built component may import only what a Spin host provides, and must export exactly the
//! WASI 0.2 HTTP handler. Decodes `weir_query.wasm` natively with `wit-component` and prints
//! every import and export (run with `--nocapture` to see them).
//!
//! Build the component first: `cargo xtask components` (from the repository root) installs it as
//! `target/functions/query.wasm`; or point `WEIR_QUERY_COMPONENT` at a built file.

use std::path::PathBuf;

use wasmparser::{Parser, Payload};
use wit_component::DecodedWasm;
use wit_parser::{Resolve, WorldItem, WorldKey};

/// Interfaces of Spin's `platform` world for spin-sdk 5 (fermyon:spin@2.0.0 plus spin:up@3.x),
/// as (package with namespace, accepted version prefix).
const SPIN_PROVIDES: &[(&str, &str)] = &[
    ("wasi:cli", "0.2."),
    ("wasi:clocks", "0.2."),
    ("wasi:filesystem", "0.2."),
    ("wasi:io", "0.2."),
    ("wasi:random", "0.2."),
    ("wasi:sockets", "0.2."),
    ("wasi:http", "0.2."),
    ("fermyon:spin", "2.0.0"),
    ("spin:postgres", "3.0.0"),
    ("spin:postgres", "4.0.0"),
    ("spin:sqlite", "3.0.0"),
    ("wasi:keyvalue", "0.2.0-draft2"),
    ("wasi:config", "0.2.0-draft-2024-09-27"),
];

fn component_path() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_QUERY_COMPONENT") {
        return path.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/functions/query.wasm")
}

/// `ns:pkg/iface@version` for interfaces, `name` (function) for anything else.
fn names(resolve: &Resolve, items: &[(&WorldKey, &WorldItem)]) -> Vec<String> {
    items
        .iter()
        .map(|(key, item)| match item {
            WorldItem::Interface { id, .. } => resolve
                .id_of(*id)
                .unwrap_or_else(|| resolve.name_world_key(key)),
            WorldItem::Function(f) => format!("func {}", f.name),
            WorldItem::Type { .. } => format!("type {}", resolve.name_world_key(key)),
        })
        .collect()
}

/// The component's own (outermost) import and export names, exactly as encoded: what a host's
/// linker must satisfy. Nested modules and components are skipped by tracking depth.
fn encoded_names(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let (mut imports, mut exports, mut depth) = (Vec::new(), Vec::new(), 0);
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.expect("parse component") {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    imports.push(import.expect("import").name.full_name().into_owned());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    exports.push(export.expect("export").name.full_name().into_owned());
                }
            }
            _ => {}
        }
    }
    (imports, exports)
}

fn provided_by_spin(name: &str) -> bool {
    let Some((package, version)) = name.split_once('@') else {
        return false;
    };
    let package = package.split('/').next().unwrap_or(package);
    SPIN_PROVIDES
        .iter()
        .any(|(p, v)| *p == package && version.starts_with(v))
}

#[test]
fn component_imports_only_spin_interfaces_and_exports_the_wasi_http_handler() {
    let path = component_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): build the component first (see this file's header)",
            path.display()
        )
    });
    let DecodedWasm::Component(resolve, world) =
        wit_component::decode(&bytes).expect("decode component")
    else {
        panic!("{} is a WIT package, not a component", path.display());
    };
    let world = &resolve.worlds[world];
    let imports = names(&resolve, &world.imports.iter().collect::<Vec<_>>());
    let exports = names(&resolve, &world.exports.iter().collect::<Vec<_>>());

    println!("component: {} ({} bytes)", path.display(), bytes.len());
    let (encoded_imports, encoded_exports) = encoded_names(&bytes);
    assert_eq!(
        encoded_imports, imports,
        "decoded imports differ from the encoded names"
    );
    assert_eq!(
        encoded_exports, exports,
        "decoded exports differ from the encoded names"
    );
    for name in &imports {
        println!("import {name}");
    }
    for name in &exports {
        println!("export {name}");
    }

    let foreign: Vec<_> = imports.iter().filter(|n| !provided_by_spin(n)).collect();
    assert!(
        foreign.is_empty(),
        "imports that Spin does not provide: {foreign:?}"
    );
    assert_eq!(exports.len(), 1, "exactly one export expected: {exports:?}");
    assert!(
        exports[0].starts_with("wasi:http/incoming-handler@0.2."),
        "the export must be the WASI 0.2 HTTP handler, not {}",
        exports[0]
    );
}
