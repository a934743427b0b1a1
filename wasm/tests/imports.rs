//! The built component asks its host for WASI interfaces only: it runs under a
//! plain `wasmtime run` with no project-specific host functions.
//!
//! Reads the release component (build it first:
//! `cargo build --release --target wasm32-wasip2` in `wasm/`), or the file named
//! by `INFLUX_PROXY_WASM`. Runs natively (`cargo test` in `wasm/`).
#![cfg(not(target_os = "wasi"))]

use std::path::PathBuf;
use wasmparser::{Encoding, Parser, Payload};

fn component_path() -> PathBuf {
    match std::env::var_os("INFLUX_PROXY_WASM") {
        Some(path) => PathBuf::from(path),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/wasm32-wasip2/release/influx-proxy.wasm")
        }
    }
}

/// The names of the top-level imports of the component in `bytes`.
fn component_imports(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut imports = Vec::new();
    // Nesting level: 1 is the outer component; nested modules and components
    // import from inside it, not from the host.
    let mut depth = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| e.to_string())? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err("not a component (a core module?)".into());
                }
                depth += 1;
            }
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    imports.push(import.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(imports)
}

#[test]
fn component_imports_only_wasi_interfaces() {
    let path = component_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it first: cargo build --release --target wasm32-wasip2 (in wasm/)",
            path.display()
        )
    });
    let imports = component_imports(&bytes).unwrap();
    eprintln!("imports: {imports:?}");
    assert!(imports.iter().any(|name| name.starts_with("wasi:sockets/tcp@")), "{imports:?}");
    let foreign: Vec<_> = imports.iter().filter(|name| !name.starts_with("wasi:")).collect();
    assert!(foreign.is_empty(), "non-WASI imports: {foreign:?}");
    // wasi:http is not needed: the proxy speaks HTTP over wasi:sockets, so
    // `wasmtime run` needs no `-S http`.
    assert!(!imports.iter().any(|name| name.starts_with("wasi:http/")), "{imports:?}");
}

#[test]
fn a_core_module_is_refused() {
    // The smallest core module: magic and version 1.
    assert!(component_imports(b"\0asm\x01\0\0\0").is_err());
}
