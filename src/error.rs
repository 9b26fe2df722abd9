//! The one error type of raftwal.
//!
//! Owns: every way an operation can fail, each with the context an operator needs (file, offset,
//! index). Must never: lose the underlying `io::Error`, or describe damage without naming where it is.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in raftwal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed; `op` says what raftwal was doing.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Another `DiskStorage` (in this or another process) holds the directory's lock.
    #[error("{} is locked by another DiskStorage (in this or another process)", path.display())]
    Locked { path: PathBuf },

    /// Bytes on disk that fail a checksum or a range check.
    #[error("corrupt {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// A file the log needs is not there (a missing middle file, a missing snapshot file).
    #[error("missing {}: {reason}", path.display())]
    MissingFile { path: PathBuf, reason: String },

    /// The directory was written by a format this build does not understand.
    #[error("{} has format version {found}; this build reads up to {supported}", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// The requested index is at or below the snapshot: its entry is gone.
    #[error("index {index} is compacted (first index is {first_index})")]
    Compacted { index: u64, first_index: u64 },

    /// The requested index is above the last index.
    #[error("index {index} is unavailable (last index is {last_index})")]
    Unavailable { index: u64, last_index: u64 },

    /// A snapshot at or below the current one.
    #[error("snapshot at index {index} is out of date (current snapshot index is {current})")]
    SnapshotOutOfDate { index: u64, current: u64 },

    /// No snapshot at or above the requested index exists yet.
    #[error("no snapshot at or above index {requested} (current snapshot index is {available})")]
    SnapshotTemporarilyUnavailable { requested: u64, available: u64 },

    /// The encryption key does not fit the store: missing, wrong, or given for a plaintext store.
    #[error("{}: {reason}", path.display())]
    Encryption { path: PathBuf, reason: String },

    /// The directory has no snapshot (its snapshot index is 0).
    #[error("{} has no snapshot", path.display())]
    NoSnapshot { path: PathBuf },

    /// A snapshot with index 0 where a real one is needed (to install, to restore).
    #[error("empty snapshot (index 0): {0}")]
    EmptySnapshot(String),

    /// A backup archive that fails verification: unknown or missing members, a hash mismatch,
    /// truncation, trailing bytes, an unreadable `meta.json`.
    #[error("invalid snapshot archive {}: {reason}", path.display())]
    InvalidArchive { path: PathBuf, reason: String },

    /// Entries passed to `save` that do not fit the log: a gap, a hole, or below the first index.
    #[error("invalid append: {0}")]
    InvalidAppend(String),

    /// An argument out of the range the format can hold (e.g. an entry larger than 4 GiB).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Talking to a node over the network failed: resolving or connecting to `addr`, a reset
    /// or closed connection, a timeout, or bytes that break the protocol (`op` says which step).
    #[error("{op} {addr}: {source}")]
    Network {
        op: &'static str,
        addr: String,
        #[source]
        source: io::Error,
    },

    /// The node at `addr` answered with an error of its own (e.g. it has no snapshot yet).
    #[error("{addr} refused the snapshot pull: {reason}")]
    Remote { addr: String, reason: String },

    /// A part of an engine write failed: the group it was for, and why.
    #[error("group {group_id}: {source}")]
    Group {
        group_id: u64,
        #[source]
        source: Box<Error>,
    },

    /// No group with this id in the engine.
    #[error("no group {group_id} in the engine")]
    UnknownGroup { group_id: u64 },

    /// `create_group` of a group that exists.
    #[error("group {group_id} exists")]
    GroupExists { group_id: u64 },

    /// The application's [`crate::SnapshotBuilder`] failed (or panicked).
    #[error("the snapshot builder failed: {source}")]
    SnapshotBuild {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The engine (or the group) was closed or removed: the handle no longer touches any file.
    #[error("{what} is closed")]
    Closed { what: String },

    /// An engine write failed after its journal record was written (so the engine's memory may
    /// no longer match its files): every later call fails until the engine is opened again,
    /// which replays the journal.
    #[error("the engine stopped after a failed write ({reason}); open it again")]
    Poisoned { reason: String },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Error {
        Error::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

impl From<Error> for raft::Error {
    fn from(e: Error) -> raft::Error {
        use raft::StorageError;
        let e = match e {
            Error::Group { source, .. } => *source,
            other => other,
        };
        let se = match e {
            Error::Compacted { .. } => StorageError::Compacted,
            Error::Unavailable { .. } => StorageError::Unavailable,
            Error::SnapshotOutOfDate { .. } => StorageError::SnapshotOutOfDate,
            Error::SnapshotTemporarilyUnavailable { .. } => {
                StorageError::SnapshotTemporarilyUnavailable
            }
            other => StorageError::Other(Box::new(other)),
        };
        raft::Error::Store(se)
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
