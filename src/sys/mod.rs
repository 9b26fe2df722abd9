//! What every tier stands on: file system calls (`fsutil`), little-endian fields (`le`), the memory maps and every `unsafe`
//! line of the crate (`map`), and sealing for encryption at rest (`crypto`).
//!
//! Owns: the system interfaces. Must never: know a file format (the tiers above own those).

pub(crate) mod crypto;
pub(crate) mod fsutil;
pub(crate) mod le;
pub(crate) mod map;
