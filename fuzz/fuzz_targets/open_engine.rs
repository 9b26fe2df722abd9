//! Fuzz target: open an engine root built from the input bytes (a valid template root with
//! input-driven damage to its files). See `tests/common/fuzz/open_engine.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The targets' logic lives in the main crate's tests (packaged with it), which replay the corpus.
#[path = "../../tests/common/fuzz/mod.rs"]
mod fuzz;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = fuzz::open_engine::run(data) {
        panic!("open_engine: {e}");
    }
});
