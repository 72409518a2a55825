//! Unit tests of the plugin host that need no built plugin; the fixtures are exercised by the
//! integration tests.

use super::PluginError;
use super::engine::PluginEngine;
use super::load::LoadedPlugin;
use crate::config::PluginsConfig;

fn engine(dir: &std::path::Path) -> PluginEngine {
    let config = PluginsConfig {
        cache_dir: dir.join("cache"),
        ..PluginsConfig::default()
    };
    PluginEngine::new(&config).expect("engine builds with default limits")
}

#[test]
fn random_bytes_are_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noise.wasm");
    std::fs::write(&path, [0x13, 0x37, 0xbe, 0xef, 1, 2, 3, 4, 5, 6]).unwrap();
    let error = LoadedPlugin::load(&engine(dir.path()), &path).unwrap_err();
    assert!(
        matches!(error, PluginError::NotComponent { .. }),
        "unexpected error: {error}"
    );
    assert!(error.to_string().contains("13 37 be ef"), "{error}");
}

#[test]
fn core_module_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let error = LoadedPlugin::load(&engine(dir.path()), &path).unwrap_err();
    assert!(
        error.to_string().contains("core WebAssembly module"),
        "{error}"
    );
}

#[test]
fn truncated_component_fails_to_compile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.wasm");
    std::fs::write(&path, b"\0asm\x0d\0\x01\0\x01\xff").unwrap();
    let error = LoadedPlugin::load(&engine(dir.path()), &path).unwrap_err();
    assert!(
        matches!(error, PluginError::Compile { .. }),
        "unexpected error: {error}"
    );
}
