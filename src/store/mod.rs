//! The single-group store: one Raft log in one directory, as Dgraph's raftwal lays it out
//! (`wal.meta`, `NNNNN.wal` files of 30,000 fixed slots and their payloads, snapshot files).
//!
//! `storage` is the facade raft-rs talks to (`DiskStorage`); `state` the log as raft sees it
//! and the checks of a save (shared with the engine's groups); `wal` the run of log files;
//! `log_file` one file; `terms` the files' terms as runs; `meta` the meta page; `header` the
//! checks every file header makes; `recovery` what open makes of a directory;
//! `repair` the offline repair; `snap` and `snap_build` the snapshot files and the builder.
//!
//! Owns: a group's files and their rules (docs/FORMAT.md, from its start to "Engine roots"). Must never:
//! know about the engine's journal or other groups (the engine drives a group's `wal` and `meta`
//! itself, through the same types).

pub(crate) mod header;
pub(crate) mod log_file;
pub(crate) mod meta;
pub(crate) mod recovery;
pub mod repair;
pub(crate) mod snap;
pub(crate) mod snap_build;
pub(crate) mod state;
pub(crate) mod storage;
pub(crate) mod terms;
pub(crate) mod wal;
