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
    /// Key for encryption at rest. Default `None` (plaintext). Not yet supported: a key is refused
    /// at open rather than silently ignored.
    pub encryption_key: Option<[u8; 32]>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sync_writes: true,
            recovery_mode: RecoveryMode::TolerateTailCorruption,
            encryption_key: None,
        }
    }
}
