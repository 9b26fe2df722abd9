//! Fuzz target: open an engine root built from the input bytes (a valid template root with
//! input-driven damage to its files). See `tests/fuzz/common/open_engine.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The targets' logic lives beside the corpus replay in the main crate's tests (packaged with it).
#[allow(dead_code)]
#[path = "../../tests/fuzz/common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = common::open_engine::run(data) {
        panic!("open_engine: {e}");
    }
});
