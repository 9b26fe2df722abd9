//! Fuzz target: open a WAL directory built from the input bytes (a valid template directory
//! with input-driven damage and forgeries). See `tests/fuzz/common/open_dir.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The targets' logic lives beside the corpus replay in the main crate's tests (packaged with it).
#[allow(dead_code)]
#[path = "../../tests/fuzz/common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = common::open_dir::run(data) {
        panic!("open_dir: {e}");
    }
});
