//! Fuzz target: random operation sequences on `DiskStorage`, checked against an in-memory
//! reference model after every operation. See `tests/fuzz/common/ops_model.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The targets' logic lives beside the corpus replay in the main crate's tests (packaged with it).
#[allow(dead_code)]
#[path = "../../tests/fuzz/common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = common::ops_model::run(data) {
        panic!("ops_model: {e}");
    }
});
