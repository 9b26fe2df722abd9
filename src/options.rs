//! How a `DiskStorage` is opened: durability, recovery strictness, encryption.
//!
//! Owns: the option values and their defaults. Must never: hold state that changes after open.

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

/// Options for [`crate::DiskStorage::open_with`].
#[derive(Clone, Debug)]
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
