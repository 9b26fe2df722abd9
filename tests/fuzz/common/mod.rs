//! Logic shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the corpus replay test
//! (`tests/fuzz_corpus.rs`, which includes this module with `#[path]`). It uses only the main
//! crate's dependencies — input bytes are decoded by hand, not with `arbitrary` — so the replay
//! runs under plain `cargo test` on a stable toolchain.

pub mod open_dir;
pub mod open_engine;
pub mod ops_model;
pub mod util;
