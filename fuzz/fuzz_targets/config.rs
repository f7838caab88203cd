//! Config::resolve on arbitrary text: a configuration may be refused with errors (each with file
//! and line), but resolving never panics or hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portal_bridge::config::{Config, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.toml");
    std::fs::write(&file, text).unwrap();
    match Config::resolve(&file, &Overrides::default()) {
        Ok(_) => {}
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a refused configuration names at least one error");
            for error in &errors.0 {
                assert!(!error.message.is_empty());
                if let Some(line) = error.line.filter(|_| error.file == file) {
                    assert!(
                        line >= 1 && line <= text.lines().count().max(1) + 1,
                        "line {line} is outside the file: {error}"
                    );
                }
            }
        }
    }
});
