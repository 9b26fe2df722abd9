//! Backup archives of a snapshot (`raftwal snapshot save|status|verify|restore`), in the spirit of
//! Consul's snapshot archive: a gzip'd tar holding exactly three members, in this order:
//!
//! * `meta.json` — format version, index, term, conf state, size of `state.bin`, creation time;
//! * `state.bin` — the snapshot data, verbatim;
//! * `SHA256SUMS` — `sha256sum` lines for `meta.json` and `state.bin`.
//!
//! Owns: the archive format; writing an archive from a [`SnapshotReader`] in bounded memory;
//! verifying one strictly (unknown, missing, misplaced or non-regular members, hash mismatches,
//! size lies, truncation anywhere, trailing bytes after the gzip stream, a second gzip member,
//! data or more than 64 KiB of zero padding after the tar end-of-archive marker, and a
//! `meta.json` a restore would refuse: an index past the log's largest, a conf state raft-rs
//! cannot start from or too large for a snapshot file's header); and restoring one into a fresh
//! WAL directory.
//! Must never: hold `state.bin` whole in memory, overwrite an existing archive or a non-empty
//! directory, write anything for an archive that fails verification, install data whose hash it
//! has not checked, or leave a half-restored directory behind.
//!
//! `state.bin`'s SHA-256 is not in `meta.json`: `meta.json` comes first and the archive is written
//! in one streaming pass, so the hash is known only once `state.bin` is written; `SHA256SUMS`, the
//! last member, covers both. [`ArchiveMeta::state_sha256`] is filled in from it.
//!
//! Progress callbacks are told how many bytes of `state.bin` were just processed (a delta, as in
//! [`crate::tools::inspect::Inspector::verify`]).
//!
//! `state.bin` is the snapshot's plaintext, also for a store encrypted at rest (saved with
//! [`save_dir_snapshot_with_key`]); [`restore_with_store_options`] can encrypt the restored
//! store under a key again.
//!
//! The code is in four files: `mod.rs` (this one) holds the format's constants, the types an
//! archive is described with and the helpers the others share; `write.rs` writes an archive;
//! `read.rs` reads and verifies one; `restore.rs` restores one into a fresh WAL directory.
//!
//! [`SnapshotReader`]: crate::SnapshotReader

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::tools::inspect::ConfStateInfo;

mod read;
mod restore;
mod write;

pub(crate) use read::longest_archive;
pub use read::{archive_status, verify_archive};
pub use restore::{restore, restore_with_store_options};
pub use write::{
    save_dir_snapshot, save_dir_snapshot_with_key, save_engine_group_snapshot, write_archive,
};
pub(crate) use write::{write_archive_to, Dest};

/// Version of the archive format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// First member: the snapshot's metadata as JSON.
pub const META_MEMBER: &str = "meta.json";
/// Second member: the snapshot data.
pub const STATE_MEMBER: &str = "state.bin";
/// Third member: SHA-256 sums of the other two.
pub const SUMS_MEMBER: &str = "SHA256SUMS";
const MEMBERS: [&str; 3] = [META_MEMBER, STATE_MEMBER, SUMS_MEMBER];

/// Tar block size.
const BLOCK: usize = 512;
/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Buffer size for streaming.
const CHUNK: usize = 256 << 10;
/// Largest `meta.json` accepted (it is read into memory).
const META_LIMIT: u64 = 1 << 20;
/// Largest `SHA256SUMS` accepted (it is read into memory).
const SUMS_LIMIT: u64 = 64 << 10;
/// gzip level: snapshot data is often already compact, and a backup should not take long.
const GZIP_LEVEL: u32 = 1;

/// A conf state as `meta.json` holds it: the inspector's, strict about unknown fields.
pub type ConfStateJson = ConfStateInfo;

/// What an archive describes: `meta.json`'s contents plus the SHA-256 of `state.bin` (from
/// `SHA256SUMS`, checked against the data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveMeta {
    /// Archive format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The snapshot's index.
    pub index: u64,
    /// The snapshot's term.
    pub term: u64,
    /// The snapshot's conf state.
    pub conf_state: ConfStateJson,
    /// Bytes of `state.bin`.
    pub size: u64,
    /// When the archive was written (seconds since the Unix epoch).
    pub created_unix_secs: u64,
    /// Hex SHA-256 of `state.bin`, as listed in `SHA256SUMS` (not stored in `meta.json`).
    pub state_sha256: String,
}

/// `meta.json` exactly as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaJson {
    format_version: u32,
    index: u64,
    term: u64,
    conf_state: ConfStateJson,
    size: u64,
    created_unix_secs: u64,
}

/// Just the version, read first so that a newer format is reported as such.
#[derive(Deserialize)]
struct VersionOnly {
    format_version: u32,
}

impl MetaJson {
    fn into_meta(self, state_sha256: String) -> ArchiveMeta {
        ArchiveMeta {
            format_version: self.format_version,
            index: self.index,
            term: self.term,
            conf_state: self.conf_state,
            size: self.size,
            created_unix_secs: self.created_unix_secs,
            state_sha256,
        }
    }
}

/// A verified archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArchiveStatus {
    /// What the archive describes.
    pub meta: ArchiveMeta,
    /// Hex SHA-256 of the whole archive file.
    pub archive_sha256: String,
    /// Size of the archive file.
    pub archive_bytes: u64,
}

/// What `restore` changes besides installing the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Stored as `MetaInfo::RaftId` (must not be 0).
    pub raft_id: Option<u64>,
    /// Replaces the snapshot's membership: these voters, no learners, no joint state.
    pub voters: Option<Vec<u64>>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidArchive {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The first error a streaming `Read` adapter met, kept as it was made, while `read` hands its
/// consumer (tar, a snapshot install) an `io::Error` copy: the typed error is what the caller
/// gets once the consumer gives up.
struct FirstError<E>(Option<E>);

impl<E: std::fmt::Display> FirstError<E> {
    /// Keeps `e` if it is the first, and returns a copy of it of `kind` for `read` to return.
    fn keep(&mut self, e: E, kind: std::io::ErrorKind) -> std::io::Error {
        let copy = std::io::Error::new(kind, e.to_string());
        self.0.get_or_insert(e);
        copy
    }

    /// The error kept, if any.
    fn take(&mut self) -> Option<E> {
        self.0.take()
    }
}
