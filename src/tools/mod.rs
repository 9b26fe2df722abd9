//! The operator's tools' library side: reading a store or an engine root without its lock
//! beside a live node (`inspect`), backup archives (`archive`) and pulling one from a running
//! node (`endpoint`). The `raftwal` binary (src/bin/raftwal) is their command line.
//!
//! Owns: read-only access and the archive format. Must never: take a store's lock, map a file,
//! or write into a store or root (but `archive`'s restore, into a fresh directory).

#[cfg(feature = "archive")]
pub mod archive;
#[cfg(feature = "archive")]
pub mod endpoint;
pub mod inspect;
pub(crate) mod json_path;
