//! The metrics raftwal emits through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`, on by default): their names, and the small recording calls the engine makes.
//!
//! Nothing is exported by raftwal itself: an application installs a recorder (for example
//! `metrics-exporter-prometheus`, as `examples/kv` does with `--metrics-addr`) and the values
//! below appear there. Install it before opening stores: a `DiskStorage` resolves the handles
//! of its `save` metrics when it opens (so a save pays two clock reads and three handle
//! updates, no registry lookup); the rest is looked up where it is recorded. With the feature
//! off, every call here compiles to nothing.
//!
//! | name | type | what |
//! |---|---|---|
//! | `raftwal_fsync_duration_seconds{file}` | histogram | one fdatasync; `file` is `log`, `meta` or `journal` |
//! | `raftwal_save_duration_seconds` | histogram | one `DiskStorage::save` (flush included) |
//! | `raftwal_engine_write_duration_seconds` | histogram | one `Engine::write` (queue, commit, flush) |
//! | `raftwal_engine_commits_total` | counter | the engine's group commits (one journal record each) |
//! | `raftwal_engine_commit_writes` | histogram | `Engine::write` calls merged into one group commit |
//! | `raftwal_engine_groups` | gauge | groups of the open engines |
//! | `raftwal_appended_entries_total` | counter | entries appended (DiskStorage and Engine) |
//! | `raftwal_appended_bytes_total` | counter | entry payload bytes appended (data + context) |
//! | `raftwal_log_files` | gauge | log files held by the open `DiskStorage`s |
//! | `raftwal_snapshot_create_duration_seconds` | histogram | one `create_snapshot(_from)` |
//! | `raftwal_snapshot_install_duration_seconds` | histogram | one installed snapshot (`save` with a snapshot, `install_snapshot_from`) |
//! | `raftwal_recovery_duration_seconds{kind}` | histogram | opening a store: `kind` is `disk_storage` or `engine` |
//!
//! Owns: the names and the cost rule (nothing beyond a clock read on a hot path). Must never:
//! allocate, lock or fail while recording, or be the only place a value is kept (it is a view).

/// One fdatasync (histogram, seconds), labelled `file` = `log` | `meta` | `journal`.
pub const FSYNC_DURATION: &str = "raftwal_fsync_duration_seconds";
/// One `DiskStorage::save` (histogram, seconds).
pub const SAVE_DURATION: &str = "raftwal_save_duration_seconds";
/// One `Engine::write` (histogram, seconds).
pub const ENGINE_WRITE_DURATION: &str = "raftwal_engine_write_duration_seconds";
/// Group commits of the engine (counter).
pub const ENGINE_COMMITS: &str = "raftwal_engine_commits_total";
/// Writes merged into one group commit (histogram).
pub const ENGINE_COMMIT_WRITES: &str = "raftwal_engine_commit_writes";
/// Groups of the open engines (gauge).
pub const ENGINE_GROUPS: &str = "raftwal_engine_groups";
/// Entries appended (counter).
pub const APPENDED_ENTRIES: &str = "raftwal_appended_entries_total";
/// Entry payload bytes appended, data and context (counter).
pub const APPENDED_BYTES: &str = "raftwal_appended_bytes_total";
/// Log files of the open `DiskStorage`s (gauge).
pub const LOG_FILES: &str = "raftwal_log_files";
/// One snapshot created (histogram, seconds).
pub const SNAPSHOT_CREATE_DURATION: &str = "raftwal_snapshot_create_duration_seconds";
/// One snapshot installed (histogram, seconds).
pub const SNAPSHOT_INSTALL_DURATION: &str = "raftwal_snapshot_install_duration_seconds";
/// Opening a store, recovery included (histogram, seconds), labelled `kind` =
/// `disk_storage` | `engine`.
pub const RECOVERY_DURATION: &str = "raftwal_recovery_duration_seconds";

/// Which file an fsync flushed (the `file` label).
#[derive(Clone, Copy)]
pub(crate) enum Synced {
    Log,
    Meta,
    Journal,
}

/// What a histogram of durations measures (one name each).
#[derive(Clone, Copy)]
pub(crate) enum Took {
    EngineWrite,
    SnapshotCreate,
    SnapshotInstall,
    RecoveryDiskStorage,
    RecoveryEngine,
}

#[cfg(feature = "metrics")]
mod on {
    use super::*;
    use std::time::Instant;

    /// A clock started for one measured operation.
    pub(crate) struct Timer(Instant);

    impl Timer {
        #[inline]
        pub(crate) fn start() -> Timer {
            Timer(Instant::now())
        }

        #[inline]
        fn secs(&self) -> f64 {
            self.0.elapsed().as_secs_f64()
        }

        /// Records the time since `start` as one fsync of `file`.
        #[inline]
        pub(crate) fn fsync(self, file: Synced) {
            let s = self.secs();
            match file {
                Synced::Log => ::metrics::histogram!(FSYNC_DURATION, "file" => "log").record(s),
                Synced::Meta => ::metrics::histogram!(FSYNC_DURATION, "file" => "meta").record(s),
                Synced::Journal => {
                    ::metrics::histogram!(FSYNC_DURATION, "file" => "journal").record(s)
                }
            }
        }

        /// Records the time since `start` as one `what`.
        #[inline]
        pub(crate) fn took(self, what: Took) {
            let s = self.secs();
            match what {
                Took::EngineWrite => ::metrics::histogram!(ENGINE_WRITE_DURATION).record(s),
                Took::SnapshotCreate => ::metrics::histogram!(SNAPSHOT_CREATE_DURATION).record(s),
                Took::SnapshotInstall => ::metrics::histogram!(SNAPSHOT_INSTALL_DURATION).record(s),
                Took::RecoveryDiskStorage => {
                    ::metrics::histogram!(RECOVERY_DURATION, "kind" => "disk_storage").record(s)
                }
                Took::RecoveryEngine => {
                    ::metrics::histogram!(RECOVERY_DURATION, "kind" => "engine").record(s)
                }
            }
        }
    }

    /// The handles `DiskStorage::save` records through, resolved once when the store opens.
    pub(crate) struct SaveMetrics {
        duration: ::metrics::Histogram,
        entries: ::metrics::Counter,
        bytes: ::metrics::Counter,
    }

    impl SaveMetrics {
        pub(crate) fn new() -> SaveMetrics {
            SaveMetrics {
                duration: ::metrics::histogram!(SAVE_DURATION),
                entries: ::metrics::counter!(APPENDED_ENTRIES),
                bytes: ::metrics::counter!(APPENDED_BYTES),
            }
        }

        /// `entries` appended.
        #[inline]
        pub(crate) fn appended(&self, entries: &[raft::prelude::Entry]) {
            if !entries.is_empty() {
                self.entries.increment(entries.len() as u64);
                self.bytes.increment(payload_bytes(entries));
            }
        }

        /// One save done, started at `timer`.
        #[inline]
        pub(crate) fn saved(&self, timer: Timer) {
            self.duration.record(timer.secs());
        }
    }

    /// `entries` entries of `bytes` payload bytes appended.
    #[inline]
    pub(crate) fn appended(entries: usize, bytes: u64) {
        if entries > 0 {
            ::metrics::counter!(APPENDED_ENTRIES).increment(entries as u64);
            ::metrics::counter!(APPENDED_BYTES).increment(bytes);
        }
    }

    /// One group commit that merged `writes` `Engine::write` calls.
    #[inline]
    pub(crate) fn engine_commit(writes: usize) {
        ::metrics::counter!(ENGINE_COMMITS).increment(1);
        ::metrics::histogram!(ENGINE_COMMIT_WRITES).record(writes as f64);
    }

    /// The number of log files changed by `delta`.
    #[inline]
    pub(crate) fn log_files(delta: i64) {
        if delta != 0 {
            ::metrics::gauge!(LOG_FILES).increment(delta as f64);
        }
    }

    /// The number of engine groups changed by `delta`.
    #[inline]
    pub(crate) fn engine_groups(delta: i64) {
        if delta != 0 {
            ::metrics::gauge!(ENGINE_GROUPS).increment(delta as f64);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod on {
    use super::*;

    /// Nothing: the feature is off.
    pub(crate) struct Timer;

    impl Timer {
        #[inline(always)]
        pub(crate) fn start() -> Timer {
            Timer
        }
        #[inline(always)]
        pub(crate) fn fsync(self, _file: Synced) {}
        #[inline(always)]
        pub(crate) fn took(self, _what: Took) {}
    }

    /// Nothing: the feature is off.
    pub(crate) struct SaveMetrics;

    impl SaveMetrics {
        #[inline(always)]
        pub(crate) fn new() -> SaveMetrics {
            SaveMetrics
        }
        #[inline(always)]
        pub(crate) fn appended(&self, _entries: &[raft::prelude::Entry]) {}
        #[inline(always)]
        pub(crate) fn saved(&self, _timer: Timer) {}
    }

    #[inline(always)]
    pub(crate) fn appended(_entries: usize, _bytes: u64) {}
    #[inline(always)]
    pub(crate) fn engine_commit(_writes: usize) {}
    #[inline(always)]
    pub(crate) fn log_files(_delta: i64) {}
    #[inline(always)]
    pub(crate) fn engine_groups(_delta: i64) {}
}

pub(crate) use on::{appended, engine_commit, engine_groups, log_files, SaveMetrics, Timer};

/// Gives the installed recorder each metric's unit and help text (the `# HELP` lines of a
/// Prometheus scrape). Call it once, after installing the recorder; without the feature it does
/// nothing.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        describe_histogram!(
            FSYNC_DURATION,
            Unit::Seconds,
            "One fdatasync of a log file, the meta page or the engine journal (label file)."
        );
        describe_histogram!(
            SAVE_DURATION,
            Unit::Seconds,
            "One DiskStorage::save, flush included."
        );
        describe_histogram!(
            ENGINE_WRITE_DURATION,
            Unit::Seconds,
            "One Engine::write: queue, group commit, journal flush."
        );
        describe_counter!(
            ENGINE_COMMITS,
            "Group commits of the engine (one journal record each)."
        );
        describe_histogram!(
            ENGINE_COMMIT_WRITES,
            Unit::Count,
            "Engine::write calls merged into one group commit."
        );
        describe_gauge!(ENGINE_GROUPS, "Groups of the open engines.");
        describe_counter!(APPENDED_ENTRIES, "Entries appended.");
        describe_counter!(
            APPENDED_BYTES,
            Unit::Bytes,
            "Entry payload bytes appended (data and context)."
        );
        describe_gauge!(LOG_FILES, "Log files of the open DiskStorages.");
        describe_histogram!(
            SNAPSHOT_CREATE_DURATION,
            Unit::Seconds,
            "One snapshot created (data file written, log compacted)."
        );
        describe_histogram!(
            SNAPSHOT_INSTALL_DURATION,
            Unit::Seconds,
            "One snapshot installed (received from a leader or restored)."
        );
        describe_histogram!(
            RECOVERY_DURATION,
            Unit::Seconds,
            "Opening a store, recovery included (label kind)."
        );
    }
}

/// Payload bytes of `entries` (data and context), for [`appended`].
#[inline]
pub(crate) fn payload_bytes(entries: &[raft::prelude::Entry]) -> u64 {
    if cfg!(feature = "metrics") {
        entries
            .iter()
            .map(|e| (e.data.len() + e.context.len()) as u64)
            .sum()
    } else {
        0
    }
}
