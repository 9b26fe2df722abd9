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
        /// What raftwal was doing (e.g. "fsync", "create directory").
        op: &'static str,
        /// The file or directory it was doing it to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Another `DiskStorage` (in this or another process) holds the directory's lock.
    #[error("{} is locked by another DiskStorage (in this or another process)", path.display())]
    Locked {
        /// The locked directory.
        path: PathBuf,
    },

    /// Bytes on disk that fail a checksum or a range check.
    #[error("corrupt {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage in the file.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },

    /// A file the log needs is not there (a missing middle file, a missing snapshot file).
    #[error("missing {}: {reason}", path.display())]
    MissingFile {
        /// The file that should be there.
        path: PathBuf,
        /// Why it is needed.
        reason: String,
    },

    /// The directory was written by a format this build does not understand.
    #[error("{} has format version {found}; this build reads up to {supported}", path.display())]
    UnsupportedVersion {
        /// The file holding the version.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },

    /// The requested index is at or below the snapshot: its entry is gone.
    #[error("index {index} is compacted (first index is {first_index})")]
    Compacted {
        /// The index asked for.
        index: u64,
        /// The log's first index.
        first_index: u64,
    },

    /// The requested index is above the last index.
    #[error("index {index} is unavailable (last index is {last_index})")]
    Unavailable {
        /// The index asked for.
        index: u64,
        /// The log's last index.
        last_index: u64,
    },

    /// A snapshot at or below the current one.
    #[error("snapshot at index {index} is out of date (current snapshot index is {current})")]
    SnapshotOutOfDate {
        /// The offered snapshot's index.
        index: u64,
        /// The current snapshot's index.
        current: u64,
    },

    /// No snapshot at or above the requested index exists yet.
    #[error("no snapshot at or above index {requested} (current snapshot index is {available})")]
    SnapshotTemporarilyUnavailable {
        /// The `request_index` raft asked for.
        requested: u64,
        /// The index of the snapshot there is.
        available: u64,
    },

    /// The encryption key does not fit the store: missing, wrong, or given for a plaintext store.
    #[error("{}: {reason}", path.display())]
    Encryption {
        /// The file whose encryption does not fit the key.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },

    /// The directory has no snapshot (its snapshot index is 0).
    #[error("{} has no snapshot", path.display())]
    NoSnapshot {
        /// The WAL directory.
        path: PathBuf,
    },

    /// A snapshot with index 0 where a real one is needed (to install, to restore).
    #[error("empty snapshot (index 0): {0}")]
    EmptySnapshot(String),

    /// A backup archive that fails verification: unknown or missing members, a hash mismatch,
    /// truncation, trailing bytes, an unreadable `meta.json`.
    #[error("invalid snapshot archive {}: {reason}", path.display())]
    InvalidArchive {
        /// The archive.
        path: PathBuf,
        /// The first problem found.
        reason: String,
    },

    /// Entries passed to `save` that do not fit the log: a gap, a hole, or below the first index.
    #[error("invalid append: {0}")]
    InvalidAppend(String),

    /// An argument out of the range the format can hold (e.g. an entry larger than 4 GiB), or
    /// a call the state it is made in does not allow (e.g. a snapshot whose entry changed while
    /// it was written). Always the caller's doing, never a bug or damage: see
    /// [`Error::Invariant`] for those.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A bug in raftwal: an internal invariant does not hold (e.g. a write the engine produced
    /// that its own files refuse, a group a commit checked that is gone when it is applied).
    /// Neither the caller's arguments nor damage on disk explain it; please report it, with the
    /// message. An engine that meets one while applying a commit stops
    /// ([`Error::Poisoned`]); opening it again replays the journal.
    #[error("internal error (a bug in raftwal, please report it): {0}")]
    Invariant(String),

    /// An I/O call on a stream the caller handed in (the writer of `archive::write_archive`, the
    /// connection of `endpoint::serve_archive`) failed: raftwal knows no file or address for
    /// it, the caller does. `op` says what raftwal was doing.
    #[error("{op}: {source}")]
    Stream {
        /// What raftwal was doing (e.g. "write the archive").
        op: &'static str,
        /// The stream's error.
        #[source]
        source: io::Error,
    },

    /// Talking to a node over the network failed: resolving or connecting to `addr`, a reset
    /// or closed connection, a timeout, or bytes that break the protocol (`op` says which step).
    #[error("{op} {addr}: {source}")]
    Network {
        /// The step that failed (e.g. "connect to").
        op: &'static str,
        /// The node's address, as given.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The node at `addr` answered with an error of its own (e.g. it has no snapshot yet).
    #[error("{addr} refused the snapshot pull: {reason}")]
    Remote {
        /// The node's address, as given.
        addr: String,
        /// The node's own message.
        reason: String,
    },

    /// A part of an engine write failed: the group it was for, and why.
    #[error("group {group_id}: {source}")]
    Group {
        /// The group the failed part was for.
        group_id: u64,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },

    /// No group with this id in the engine.
    #[error("no group {group_id} in the engine")]
    UnknownGroup {
        /// The id asked for.
        group_id: u64,
    },

    /// `create_group` of a group that exists.
    #[error("group {group_id} exists")]
    GroupExists {
        /// The id asked for.
        group_id: u64,
    },

    /// The application's [`crate::SnapshotBuilder`] failed (or panicked).
    #[error("the snapshot builder failed: {source}")]
    SnapshotBuild {
        /// What the builder returned (or what its panic said).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The engine (or the group) was closed or removed: the handle no longer touches any file.
    #[error("{what} is closed")]
    Closed {
        /// What was closed (the engine, or a group).
        what: String,
    },

    /// An engine write failed after its journal record was written (so the engine's memory may
    /// no longer match its files): every later call fails until the engine is opened again,
    /// which replays the journal.
    #[error("the engine stopped after a failed write ({reason}); open it again")]
    Poisoned {
        /// The failure that stopped it.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A broken internal invariant ([`Error::Invariant`]): `what` says which, with the values
    /// that show it.
    pub(crate) fn invariant(what: impl Into<String>) -> Error {
        Error::Invariant(what.into())
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
