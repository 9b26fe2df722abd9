//! Fuzz target: open a WAL directory built from the input bytes (a valid template directory
//! with input-driven damage and forgeries). See `tests/common/fuzz/open_dir.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The targets' logic lives in the main crate's tests (packaged with it), which replay the corpus.
#[path = "../../tests/common/fuzz/mod.rs"]
mod fuzz;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = fuzz::open_dir::run(data) {
        panic!("open_dir: {e}");
    }
});
