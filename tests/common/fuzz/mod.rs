//! Logic shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the tests that run it without
//! libFuzzer (`tests/fuzz_corpus.rs`, `tests/model.rs`, `tests/engine_model.rs`,
//! `tests/engine_damage.rs`), all of which include this module with
//! `#[path = ".../tests/common/fuzz/mod.rs"] mod fuzz;`: the `open_dir`, `open_engine` and
//! `ops_model` targets' logic, the project's one reference model (`ops_model.rs`) and their
//! helpers (`util.rs`). It uses only the main crate's dependencies — input bytes are decoded by
//! hand, not with `arbitrary` — so the replay runs under plain `cargo test` on a stable toolchain.
//!
//! The on-disk layout and the read context come from `tests/common/layout.rs` and
//! `tests/common/entries.rs`, included here as `fuzz::layout` and `fuzz::entries` so that the
//! cargo-fuzz crate, which includes only this module, has them too. Each includer uses part of
//! the code.
#![allow(dead_code)]

#[path = "../entries.rs"]
pub mod entries;
#[path = "../layout.rs"]
pub mod layout;
pub mod open_dir;
pub mod open_engine;
pub mod ops_model;
pub mod util;
