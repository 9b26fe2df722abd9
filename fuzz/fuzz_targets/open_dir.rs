//! Fuzz target: open a WAL directory built from the input bytes (a valid template directory
//! with input-driven damage and forgeries). See `common/open_dir.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = common::open_dir::run(data) {
        panic!("open_dir: {e}");
    }
});
