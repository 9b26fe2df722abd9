//! Fuzz target: open an engine root built from the input bytes (a valid template root with
//! input-driven damage to its files). See `common/open_engine.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = common::open_engine::run(data) {
        panic!("open_engine: {e}");
    }
});
