//! Fuzz target: random operation sequences on `DiskStorage`, checked against an in-memory
//! reference model after every operation. See `tests/common/fuzz/ops_model.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The targets' logic lives in the main crate's tests (packaged with it), which replay the corpus.
#[path = "../../tests/common/fuzz/mod.rs"]
mod fuzz;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = fuzz::ops_model::run(data) {
        panic!("ops_model: {e}");
    }
});
