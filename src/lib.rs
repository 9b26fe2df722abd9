//! raftwal: an mmap-based write-ahead log storage engine for [raft-rs](https://docs.rs/raft).
//!
//! One directory holds one Raft group's log:
//!
//! * `wal.meta` — raft id, group id, checkpoint, hard state, conf state and the current snapshot's
//!   metadata, kept as two checksummed copies so a torn update never loses the previous state;
//! * `NNNNN.wal` — log files; the first MiB of each holds an array of 30,000 fixed 32-byte entry
//!   slots (term, index, payload location, type, CRC32C; 960,000 bytes), then the file header,
//!   then zeroes up to 1 MiB, where payloads start. A file holds 30,000 entries, then the log
//!   rotates;
//! * `snap/` — snapshot data files, CRC32C-checked.
//!
//! [`DiskStorage`] implements [`raft::Storage`]. See `docs/FORMAT.md` for every byte on disk.
//! raftwal re-exports the `raft` crate it is built with (`raftwal::raft`), so an application
//! that uses it gets the matching version.
//!
//! Cargo features, all on by default: `archive` (the `archive` and `endpoint` modules: backup
//! archives and pulling one from a node), `cli` (the `raftwal` operator binary) and
//! `default-logger` (raft-rs's own). With `default-features = false` this crate is the engine
//! alone, and raft-rs is built with only its `protobuf-codec` feature.
//!
//! [`raft::Storage`]: https://docs.rs/raft/0.7/raft/storage/trait.Storage.html
//!
//! ```
//! use raft::prelude::*;
//! use raft::Storage;
//! use raftwal::DiskStorage;
//!
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path();
//! // `path`: the group's directory, e.g. /var/lib/app/raft
//! let store = DiskStorage::open(path)?;
//! let mut e = Entry::default();
//! e.index = 1;
//! e.term = 1;
//! e.data = b"hello".to_vec().into();
//! let mut hs = HardState::default();
//! hs.term = 1;
//! store.save(&hs, &[e], &Snapshot::default())?;
//! assert_eq!(store.last_index().unwrap(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The Ready loop on `DiskStorage`
//!
//! `DiskStorage` is a cheap handle ([`Clone`]): give one to `RawNode::new` and keep another
//! (`raw.store()` works too) for the calls below. The steps, for a node coming from
//! `MemStorage`:
//!
//! 1. **Bootstrap.** A fresh directory is empty (`initial_state().initialized()` is false).
//!    Either store the first membership with [`DiskStorage::set_conf_state`], or, as raft-rs's
//!    `five_mem_node` does, `save` a snapshot at index 1 listing the first voter (then nodes
//!    added later start from a snapshot). A directory that holds a node needs nothing: reopen
//!    it, rebuild the state machine (the snapshot, then the log up to your applied index, kept
//!    with `set_uint(MetaInfo::CheckpointIndex, applied)`), and start raft with
//!    `Config { applied, .. }`.
//! 2. **Each Ready.** Send `take_messages()` at once. Persist with one call:
//!    `save(ready.hs().unwrap_or(&HardState::default()), ready.entries(), ready.snapshot())`
//!    (a snapshot first, then the entries, then the hard state). Install a snapshot's data in
//!    your state machine, apply `take_committed_entries()` (after a conf change:
//!    `set_conf_state` with what `apply_conf_change` returns), and only then send
//!    `take_persisted_messages()`.
//! 3. **The LightReady** from `advance`: its `commit_index()` is part of the hard state, so
//!    save `raw.raft.hard_state()` when it is `Some`; send its messages, apply its committed
//!    entries, then `advance_apply()`.
//! 4. **Async ready.** With `Options { sync_writes: false, .. }`, `save` only writes (raft can
//!    read the entries back at once, as `advance_append_async` requires). Take several Readies,
//!    calling `advance_append_async` after each; make them durable with one
//!    [`DiskStorage::sync`]; then send their persisted messages and call
//!    `on_persist_ready(last number)`. `examples/five_nodes.rs` runs both flows.
//! 5. **Snapshots.** Call [`DiskStorage::create_snapshot`] (or `create_snapshot_from`, which
//!    streams) at your applied index to compact the log: whenever it has grown enough, and,
//!    unless a snapshot builder is registered, after each conf change that adds a node. raft
//!    hands followers the stored snapshot; a node refuses one whose conf state does not list
//!    it. With [`DiskStorage::set_snapshot_builder`] the store asks your builder for a new one
//!    whenever the stored one is stale (see [`SnapshotBuilder`]).
//!
//! ```no_run
//! use raftwal::raft::{prelude::*, RawNode};
//! use raftwal::{DiskStorage, MetaInfo};
//!
//! fn on_ready(
//!     raw: &mut RawNode<DiskStorage>,
//!     send: &mut impl FnMut(Vec<Message>),
//!     apply: &mut impl FnMut(&mut RawNode<DiskStorage>, Vec<Entry>) -> u64, // applied index
//! ) -> Result<(), Box<dyn std::error::Error>> {
//!     if !raw.has_ready() {
//!         return Ok(());
//!     }
//!     let store = raw.store().clone();
//!     let mut rd = raw.ready();
//!     send(rd.take_messages());
//!     store.save(rd.hs().unwrap_or(&HardState::default()), rd.entries(), rd.snapshot())?;
//!     // (a snapshot in `rd` replaces the state machine here)
//!     let applied = apply(raw, rd.take_committed_entries());
//!     store.set_uint(MetaInfo::CheckpointIndex, applied);
//!     send(rd.take_persisted_messages());
//!     let mut light = raw.advance(rd);
//!     if light.commit_index().is_some() {
//!         store.save(&raw.raft.hard_state(), &[], &Snapshot::default())?;
//!     }
//!     send(light.take_messages());
//!     let applied = apply(raw, light.take_committed_entries());
//!     store.set_uint(MetaInfo::CheckpointIndex, applied);
//!     raw.advance_apply();
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

// The tiers, bottom up: `sys` (files, maps, sealing), `store` (one group's log: DiskStorage and
// its files), `engine` (many groups over one journal), `tools` (reading, verifying and backing
// up a store or an engine root beside a live node). The crate-wide types are at the top.
mod engine;
mod error;
pub mod metrics;
mod options;
mod proto;
mod store;
mod sys;
mod tools;

#[cfg(feature = "archive")]
pub use tools::archive;
#[cfg(feature = "archive")]
pub use tools::endpoint;
pub use tools::inspect;

pub use store::repair;

pub use engine::{Engine, EngineOptions, GroupStorage, WriteBatch};
pub use error::{Error, Result};
pub use options::{Options, RecoveryMode};
/// The raft-rs crate raftwal implements `raft::Storage` for (0.7): use it through here to get
/// the matching version.
pub use raft;
pub use store::meta::MetaInfo;
pub use store::snap::SnapshotReader;
pub use store::snap_build::{
    BuildError, BuiltSnapshot, SnapshotBuildStatus, SnapshotBuilder, SnapshotRequest,
};
pub use store::storage::DiskStorage;
