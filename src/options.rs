//! How a `DiskStorage` is opened: durability, recovery strictness, encryption.
//!
//! Owns: the option values and their defaults, and how an encryption key is shown in Debug
//! output (never its bytes: `Some(<redacted>)`, for `EngineOptions` too). Must never: hold state
//! that changes after open.

use std::fmt;

/// What open does when the tail of the log is damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// The tail of the last log file is cut at the first empty, damaged or out-of-order slot and
    /// open succeeds with every entry before it (what a crash mid-write leaves). Damage anywhere
    /// else (a sealed file, the meta page, a snapshot file) is still an error.
    #[default]
    TolerateTailCorruption,
    /// Any damage, the tail included, is an error.
    AbsoluteConsistency,
}

/// Options for [`crate::DiskStorage::open_with`]. Debug shows every field but the key's bytes.
#[derive(Clone)]
pub struct Options {
    /// `true` (default): every mutating call returns only after its writes are on disk.
    /// `false`: nothing is flushed until [`crate::DiskStorage::sync`] (or close/drop).
    pub sync_writes: bool,
    /// What open does with a damaged tail. Default: [`RecoveryMode::TolerateTailCorruption`].
    pub recovery_mode: RecoveryMode,
    /// Key for encryption at rest (AES-256-GCM). Default `None` (plaintext). A store is created
    /// with or without a key and must always be opened the same way (else `Error::Encryption`).
    pub encryption_key: Option<[u8; 32]>,
    /// `true` (default): with `sync_writes`, a log file that snapshot cleanup takes out of the log
    /// is kept as a spare (`spare.wal`, one at most) and reused by the next new file, whose
    /// flushed saves then write into blocks already written: no extent conversion, one device
    /// request fewer per save (docs/PERFORMANCE.md). A file that a handed-out entry still
    /// references is never reused. `false`: removed files are deleted. No effect without
    /// `sync_writes` (the page cache absorbs the conversions).
    pub recycle_log_files: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sync_writes: true,
            recovery_mode: RecoveryMode::TolerateTailCorruption,
            encryption_key: None,
            recycle_log_files: true,
        }
    }
}

/// Every field; the key only as present or not (a node's options in a log line or a panic
/// message must not carry it). Destructured, so that a new field fails to build until it is
/// shown here.
impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Options {
            sync_writes,
            recovery_mode,
            encryption_key,
            recycle_log_files,
        } = self;
        f.debug_struct("Options")
            .field("sync_writes", sync_writes)
            .field("recovery_mode", recovery_mode)
            .field("encryption_key", &RedactedKey(encryption_key))
            .field("recycle_log_files", recycle_log_files)
            .finish()
    }
}

/// An optional encryption key in Debug output: `Some(<redacted>)` or `None`.
pub(crate) struct RedactedKey<'a>(pub(crate) &'a Option<[u8; 32]>);

impl fmt::Debug for RedactedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Some(<redacted>)",
            None => "None",
        })
    }
}
