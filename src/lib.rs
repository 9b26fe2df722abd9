//! raftwal: an mmap-based write-ahead log storage engine for [raft-rs](https://docs.rs/raft).
//!
//! One directory holds one Raft group's log:
//!
//! * `wal.meta` — raft id, group id, checkpoint, hard state, conf state and the current snapshot's
//!   metadata, kept as two checksummed copies so a torn update never loses the previous state;
//! * `NNNNN.wal` — log files; the first MiB of each is an array of 30,000 fixed 32-byte entry slots
//!   (term, index, payload location, type, CRC32C), payloads follow. A file holds 30,000 entries,
//!   then the log rotates;
//! * `snap/` — snapshot data files, CRC32C-checked.
//!
//! [`DiskStorage`] implements [`raft::Storage`]. See `docs/FORMAT.md` for every byte on disk.
//!
//! ```no_run
//! use raft::prelude::*;
//! use raft::Storage;
//! use raftwal::DiskStorage;
//!
//! let store = DiskStorage::open("/tmp/raft-1")?;
//! let mut e = Entry::default();
//! e.index = 1;
//! e.term = 1;
//! e.data = b"hello".to_vec().into();
//! let mut hs = HardState::default();
//! hs.term = 1;
//! store.save(&hs, &[e], &Snapshot::default())?;
//! assert_eq!(store.last_index().unwrap(), 1);
//! # Ok::<(), raftwal::Error>(())
//! ```

pub mod archive;
mod crypto;
pub mod endpoint;
mod engine;
mod error;
mod fsutil;
pub mod inspect;
mod log_file;
mod map;
mod meta;
pub mod metrics;
mod options;
mod proto;
mod recovery;
pub mod repair;
mod snap;
mod state;
mod storage;
mod wal;

pub use engine::{Engine, EngineOptions, GroupStorage, WriteBatch};
pub use error::{Error, Result};
pub use meta::MetaInfo;
pub use options::{Options, RecoveryMode};
pub use snap::SnapshotReader;
pub use storage::DiskStorage;
