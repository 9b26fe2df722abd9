//! `DiskStorage`'s snapshots: created from data or a reader, installed (from a `save` or a
//! stream), read back, and built on demand by a `SnapshotBuilder`.
//!
//! Owns: the order that makes a snapshot safe — its file written and durable before the meta
//! page names it, the log cut behind it only after that page is durable, the files it replaces
//! removed last. Must never: name a snapshot in the meta page before its file is durable, or
//! install one whose data it has not read to the end and checked.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use raft::prelude::{ConfState, SnapshotMetadata};

use crate::error::{Error, Result};
use crate::metrics::{Timer, Took};
use crate::proto::{ConfStateRecord, SnapshotRecord};
use crate::store::log_file::MAX_INDEX;
use crate::store::snap::{self, SnapshotReader};
use crate::store::snap_build::{RequestFigures, SnapshotBuildStatus, SnapshotBuilder};
use crate::store::state::LogView;

use super::{DiskStorage, Inner};

impl DiskStorage {
    /// A snapshot received from the leader replaces the log: its data file is made durable, then
    /// the meta page naming it (with the snapshot's conf state), then the old files go.
    pub(super) fn install_snapshot(
        &self,
        inner: &mut Inner,
        md: &SnapshotMetadata,
        data: impl Read,
    ) -> Result<()> {
        let timer = Timer::start();
        let cs = ConfStateRecord::from(md.get_conf_state());
        let record = self.write_snapshot_file(md.index, md.term, &cs, data)?;
        // Log files up to now belong to the replaced log.
        let first_file_id = inner.wal.next_file_id();
        inner.meta.snapshot = Some(record);
        inner.meta.conf_state = Some(cs);
        inner.meta.first_file_id = first_file_id;
        inner.store_meta()?;
        inner.meta_file.flush()?;
        inner.wal.reset(first_file_id)?;
        inner.count_files();
        self.tidy_snapshot_files(inner)?;
        timer.took(Took::SnapshotInstall);
        Ok(())
    }

    /// Streams `data` into a durable snapshot file (none for empty data) and describes it.
    fn write_snapshot_file(
        &self,
        index: u64,
        term: u64,
        cs: &ConfStateRecord,
        data: impl Read,
    ) -> Result<SnapshotRecord> {
        let written = snap::write_from(
            &self.s.dir,
            index,
            term,
            cs,
            data,
            self.s.cipher.as_ref(),
            &snap::Unstoppable,
        )?;
        Ok(SnapshotRecord {
            index,
            term,
            conf_state: Some(cs.clone()),
            data_len: written.data_len,
            data_crc32c: written.data_crc32c,
            plain_len: written.plain_len,
        })
    }

    /// Removes snapshot files other than the current one (damaged ones are kept as `.broken`).
    fn tidy_snapshot_files(&self, inner: &Inner) -> Result<()> {
        let keep = inner
            .meta
            .snapshot
            .as_ref()
            .filter(|s| s.data_len > 0)
            .map(|s| snap::file_name(s.term, s.index));
        let broken = snap::tidy(&self.s.dir, keep.as_deref(), false)?;
        self.s.broken.lock().extend(broken);
        Ok(())
    }

    /// Takes a snapshot at `index` (which must be in the log) holding `data`: entries up to
    /// `index` become compacted and log files whose entries all lie below it are removed. The
    /// snapshot records `cs`, or the current conf state when `None`; the current conf state is
    /// left alone.
    ///
    /// ```
    /// use raft::prelude::{ConfState, Entry, HardState, Snapshot};
    /// use raft::Storage;
    /// use raftwal::DiskStorage;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = DiskStorage::open(dir.path())?;
    /// let entries: Vec<Entry> = (1..=10)
    ///     .map(|index| {
    ///         let mut e = Entry::default();
    ///         (e.index, e.term) = (index, 1);
    ///         e
    ///     })
    ///     .collect();
    /// store.save(&HardState::default(), &entries, &Snapshot::default())?;
    /// store.set_conf_state(&ConfState::from((vec![1, 2, 3], vec![])))?;
    ///
    /// // The state machine has applied entry 8: its state replaces entries 1..=8.
    /// store.create_snapshot(8, None, b"state at 8".to_vec())?;
    /// assert_eq!((store.first_index()?, store.last_index()?), (9, 10));
    /// let snap = store.snapshot(0, 0)?;
    /// assert_eq!(snap.get_metadata().index, 8);
    /// assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
    /// assert_eq!(&snap.data[..], b"state at 8");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_snapshot(
        &self,
        index: u64,
        cs: Option<&ConfState>,
        data: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let data: Bytes = data.into();
        self.create_snapshot_from(index, cs, &data[..])
    }

    /// [`DiskStorage::create_snapshot`] with the data streamed from `data`, in bounded memory:
    /// a multi-gigabyte state machine is never held whole. Raft keeps running meanwhile (the
    /// data is written without holding the storage's lock); if the log moved under the snapshot
    /// in the meantime (a newer snapshot, or the entry at `index` overwritten), nothing changes
    /// and the result is an error.
    pub fn create_snapshot_from<R: Read>(
        &self,
        index: u64,
        cs: Option<&ConfState>,
        data: R,
    ) -> Result<(), Error> {
        let timer = Timer::start();
        self.refuse_log_change("create a snapshot")?;
        let _writer = self.s.snap_writer.lock();
        let (term, cs) = {
            let inner = self.s.inner.read();
            Self::check_snapshot_index(&inner, index)?;
            let cs = match cs {
                Some(cs) => ConfStateRecord::from(cs),
                None => inner.meta.conf_state.clone().unwrap_or_default(),
            };
            (inner.wal.term(index)?, cs)
        };
        let record = self.write_snapshot_file(index, term, &cs, data)?;
        let mut inner = self.s.inner.write();
        let still = Self::check_snapshot_index(&inner, index)
            .and_then(|_| inner.wal.term(index))
            .and_then(|t| {
                if t == term {
                    Ok(())
                } else {
                    Err(Error::InvalidArgument(format!(
                        "entry {index} changed term ({term} -> {t}) while its snapshot was written"
                    )))
                }
            });
        if let Err(e) = still {
            let named = inner
                .meta
                .snapshot
                .as_ref()
                .is_some_and(|s| (s.term, s.index) == (term, index));
            if record.data_len > 0 && !named {
                let _ = std::fs::remove_file(snap::path(&self.s.dir, term, index));
            }
            return Err(e);
        }
        // The log below the snapshot must not go before the meta page that covers it is durable,
        // whatever the sync policy.
        inner.wal.flush()?;
        inner.meta.snapshot = Some(record);
        inner.store_meta()?;
        inner.meta_file.flush()?;
        inner.wal.remove_files_below(index)?;
        inner.count_files();
        self.tidy_snapshot_files(&inner)?;
        timer.took(Took::SnapshotCreate);
        Ok(())
    }

    fn check_snapshot_index(inner: &Inner, index: u64) -> Result<()> {
        if index < inner.first_index() {
            return Err(Error::SnapshotOutOfDate {
                index,
                current: inner.snapshot_index(),
            });
        }
        if index > inner.last_index() {
            return Err(Error::Unavailable {
                index,
                last_index: inner.last_index(),
            });
        }
        Ok(())
    }

    /// Installs a snapshot whose data is streamed from `data`, as if received from a leader
    /// through [`DiskStorage::save`]: it replaces the log, and its conf state becomes the
    /// current one. For snapshots too large to hold in memory (restores, state transfer).
    pub fn install_snapshot_from<R: Read>(
        &self,
        metadata: &SnapshotMetadata,
        data: R,
    ) -> Result<(), Error> {
        self.refuse_log_change("install a snapshot")?;
        let _writer = self.s.snap_writer.lock();
        let mut inner = self.s.inner.write();
        if metadata.index > MAX_INDEX {
            return Err(Error::InvalidArgument(format!(
                "snapshot index {} is past the largest index the log holds ({MAX_INDEX})",
                metadata.index
            )));
        }
        if metadata.index == 0 {
            return Err(Error::EmptySnapshot(
                "a snapshot to install needs an index above 0".to_string(),
            ));
        }
        if metadata.index <= inner.snapshot_index() {
            return Err(Error::SnapshotOutOfDate {
                index: metadata.index,
                current: inner.snapshot_index(),
            });
        }
        let commit = inner.meta.hard_state.as_ref().map_or(0, |h| h.commit);
        if commit > metadata.index {
            return Err(Error::InvalidAppend(format!(
                "the commit index {commit} is past the snapshot's index {}: committed entries cannot be replaced",
                metadata.index
            )));
        }
        self.install_snapshot(&mut inner, metadata, data)
    }

    /// The current snapshot: its metadata and its data as a stream, verified as it is read.
    /// `Error::NoSnapshot` when there is none.
    pub fn snapshot_reader(&self) -> Result<SnapshotReader, Error> {
        let inner = self.s.inner.read();
        let Some(s) = inner.meta.snapshot.as_ref().filter(|s| s.index > 0) else {
            return Err(Error::NoSnapshot {
                path: self.s.dir.clone(),
            });
        };
        SnapshotReader::open(&self.s.dir, s, self.s.cipher.as_ref())
    }

    /// Snapshot files that open found damaged (or that a later cleanup did) and renamed
    /// `<name>.broken` instead of removing them.
    pub fn broken_snapshot_files(&self) -> Vec<PathBuf> {
        self.s.broken.lock().clone()
    }

    /// Registers the application's snapshot builder (replacing any earlier one).
    ///
    /// From then on [`Storage::snapshot`] never hands raft a snapshot that no longer serves it:
    /// when the stored snapshot is older than raft's `request_index`, or records another conf
    /// state than the current one (it predates a conf change, so a node added since would refuse
    /// it), it asks `builder` for one on a thread of its own, one build at a time, and returns
    /// `SnapshotTemporarilyUnavailable` (raft tries again later) until the new snapshot is stored
    /// with [`DiskStorage::create_snapshot_from`], which compacts the log as usual. A failed
    /// build is recorded ([`DiskStorage::snapshot_build_status`]) and the next call that needs a
    /// snapshot starts another.
    ///
    /// Closing or dropping the last handle cancels a build ([`crate::SnapshotRequest::cancelled`]),
    /// stops a snapshot being written at its next chunk (nothing of it is kept), and waits for
    /// the build thread. `builder` must not own a handle to this store (the store would never
    /// close) nor wait for the thread that drops the last handle.
    ///
    /// On the directory of an engine group (whose log only the engine changes) a builder never
    /// runs: `snapshot()` answers with the stored snapshot, as without one.
    ///
    /// [`Storage::snapshot`]: https://docs.rs/raft/0.7/raft/storage/trait.Storage.html#tymethod.snapshot
    pub fn set_snapshot_builder(&self, builder: impl SnapshotBuilder) {
        self.s.builds.set_builder(Arc::new(builder));
    }

    /// How the snapshot builds went: one running, stored, failed, and the last error.
    pub fn snapshot_build_status(&self) -> SnapshotBuildStatus {
        self.s.builds.status()
    }

    /// Starts a build for `request_index` (at most one at a time): the builder's snapshot is
    /// written through a handle that does not keep the store open.
    pub(super) fn start_build(&self, request_index: u64) -> Result<()> {
        let figures = {
            let inner = self.s.inner.read();
            RequestFigures {
                request_index,
                stored_index: inner.snapshot_index(),
                conf_state: inner
                    .meta
                    .conf_state
                    .as_ref()
                    .map(ConfState::from)
                    .unwrap_or_default(),
                checkpoint: inner.meta.checkpoint_index,
            }
        };
        let store = DiskStorage {
            s: Arc::clone(&self.s),
            counted: false,
        };
        self.s.builds.start(figures, move |built| {
            store.create_snapshot_from(built.index, built.conf_state.as_ref(), built.data)
        })
    }
}
