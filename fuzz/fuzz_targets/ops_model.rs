//! Fuzz target: random operation sequences on `DiskStorage`, checked against an in-memory
//! reference model after every operation. See `common/ops_model.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = common::ops_model::run(data) {
        panic!("ops_model: {e}");
    }
});
