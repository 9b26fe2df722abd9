//! `DiskStorage`: the facade raft-rs talks to, and the order of writes that makes it safe.
//!
//! Owns: the public API, the directory lock, validation of every request before anything is
//! written, and the durable write order of `save`: payloads, then slots, then (when syncing) a
//! flush of the log, and only then the hard state and snapshot in the meta page — so a durable
//! commit index never points past durable entries. Files are removed only after the meta page
//! that makes them obsolete is durable. Must never: write anything for a request it rejects,
//! hold the lock after drop, or panic on any input.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage};

use crate::crypto::Cipher;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::log_file::MAX_INDEX;
use crate::meta::{MetaFile, MetaInfo};
use crate::options::Options;
use crate::proto::{ConfStateRecord, HardStateRecord, MetaRecord, SnapshotRecord};
use crate::recovery;
use crate::snap::{self, SnapshotReader};
use crate::wal::Wal;

/// A Raft log, hard state and snapshot stored in one directory. Implements [`raft::Storage`].
///
/// All methods take `&self` (but [`DiskStorage::close`]); readers run in parallel, writers one at
/// a time. Dropping it flushes and releases the directory lock, as `close` does.
pub struct DiskStorage {
    dir: PathBuf,
    opts: Options,
    inner: RwLock<Inner>,
    /// Snapshot files found damaged and renamed `.broken`.
    broken: Mutex<Vec<PathBuf>>,
    /// The store's key, when it is encrypted.
    cipher: Option<Cipher>,
    /// Held by everything that writes a snapshot file or tidies the snapshot directory
    /// (`create_snapshot_from`, which writes outside `inner`'s lock, and the installs through
    /// `save` and `install_snapshot_from`): two writers at the same term and index would share
    /// a temporary file, a tidy could remove one in progress, and a loser's cleanup could
    /// remove the file the winner's meta page names. Always taken before `inner`, never while
    /// holding it.
    snap_writer: Mutex<()>,
    /// Holds the directory's exclusive lock; released when dropped (after `inner`).
    _lock: File,
}

struct Inner {
    meta_file: MetaFile,
    meta: MetaRecord,
    /// `meta` has changes not yet stored in the meta page.
    meta_dirty: bool,
    wal: Wal,
}

impl Inner {
    fn snapshot_index(&self) -> u64 {
        self.meta.snapshot.as_ref().map_or(0, |s| s.index)
    }

    fn snapshot_term(&self) -> u64 {
        self.meta.snapshot.as_ref().map_or(0, |s| s.term)
    }

    fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last_index(&self) -> u64 {
        self.wal.last().max(self.snapshot_index())
    }

    /// Stores the meta state in the meta page (through the map).
    fn store_meta(&mut self) -> Result<()> {
        self.meta_file.store(&self.meta)?;
        self.meta_dirty = false;
        Ok(())
    }

    /// Log first, meta page second.
    fn sync(&mut self) -> Result<()> {
        self.wal.flush()?;
        if self.meta_dirty {
            self.store_meta()?;
        }
        self.meta_file.flush()
    }
}

impl DiskStorage {
    /// Opens the WAL in `dir` with default [`Options`], creating it (and `dir`) if needed.
    pub fn open<P: AsRef<Path>>(dir: P) -> Result<DiskStorage, Error> {
        Self::open_with(dir, Options::default())
    }

    /// Opens the WAL in `dir`, creating it (and `dir`) if needed, recovering it otherwise.
    pub fn open_with<P: AsRef<Path>>(dir: P, opts: Options) -> Result<DiskStorage, Error> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = fsutil::lock_dir(&dir)?;
        let cipher = opts.encryption_key.as_ref().map(Cipher::new);
        let mut r = recovery::recover(&dir, opts.recovery_mode, cipher.as_ref())?;
        r.wal
            .set_recycle(opts.sync_writes && opts.recycle_log_files);
        Ok(DiskStorage {
            dir,
            opts,
            inner: RwLock::new(Inner {
                meta_file: r.meta_file,
                meta: r.meta,
                meta_dirty: false,
                wal: r.wal,
            }),
            broken: Mutex::new(r.broken_snapshot_files),
            cipher,
            snap_writer: Mutex::new(()),
            _lock: lock,
        })
    }

    /// Persists what a raft-rs `Ready` asks for: a newer snapshot first (it replaces the log),
    /// then the entries (overwriting any conflicting suffix), then a non-default hard state.
    /// Invalid requests (stale snapshot, gap, entries below the first index or not contiguous,
    /// terms that decrease or start below the term of the entry or snapshot they follow) are an
    /// error and change nothing: what `save` accepts, a reopen keeps.
    ///
    /// One rule goes beyond `MemStorage::append`: entries may not overwrite entries at or below
    /// the stored commit index, and a save may not leave the commit index past the last entry
    /// (`InvalidAppend`, nothing changed). raft-rs never asks for either (committed entries never
    /// change); a crash in the middle of such an overwrite would leave a durable commit index
    /// pointing past durable entries, which open refuses.
    pub fn save(&self, hs: &HardState, entries: &[Entry], snap: &Snapshot) -> Result<(), Error> {
        let snap_index = snap.get_metadata().index;
        // A snapshot file is written only while holding `snap_writer` (taken before `inner`).
        let _writer = (snap_index > 0).then(|| self.snap_writer.lock());
        let mut inner = self.inner.write();
        let top = entries
            .last()
            .map_or(snap_index, |e| e.index.max(snap_index));
        if top > MAX_INDEX {
            return Err(Error::InvalidArgument(format!(
                "index {top} is past the largest index the log holds ({MAX_INDEX})"
            )));
        }
        let installing = snap_index > 0;
        if installing && snap_index <= inner.snapshot_index() {
            return Err(Error::SnapshotOutOfDate {
                index: snap_index,
                current: inner.snapshot_index(),
            });
        }
        let (first, last) = if installing {
            (snap_index + 1, snap_index)
        } else {
            (inner.first_index(), inner.last_index())
        };
        validate_entries(entries, first, last)?;
        if let Some(e0) = entries.first() {
            // The term of the entry (or snapshot) the batch follows: raft never writes a lower
            // one after it, and recovery reads a term drop as the end of the log.
            let before = if installing {
                snap.get_metadata().term
            } else if e0.index - 1 == inner.snapshot_index() {
                inner.snapshot_term()
            } else {
                inner.wal.term(e0.index - 1)?
            };
            validate_terms(entries, before)?;
        }
        // A durable commit index must never point past durable entries: refuse a save that
        // would leave it there (raft-rs never asks for one; open would refuse the result).
        let stored_commit = inner.meta.hard_state.as_ref().map_or(0, |h| h.commit);
        let commit = if *hs != HardState::default() {
            hs.commit
        } else {
            stored_commit
        };
        let new_last = entries.last().map_or(last, |e| e.index);
        if let Some(e0) = entries.first().filter(|e| !installing && e.index <= last) {
            if e0.index <= stored_commit {
                return Err(Error::InvalidAppend(format!(
                    "entries from index {} would overwrite committed entries (commit index {stored_commit})",
                    e0.index
                )));
            }
        }
        if commit > new_last {
            return Err(Error::InvalidAppend(format!(
                "the commit index {commit} would be past the last index {new_last}: committed entries cannot be cut or skipped"
            )));
        }

        let sync = self.opts.sync_writes;
        if installing {
            self.install_snapshot(&mut inner, snap.get_metadata(), &snap.data[..])?;
        }
        if !entries.is_empty() {
            inner.wal.append(entries, sync)?;
        }
        if *hs != HardState::default() {
            let record = HardStateRecord::from(hs);
            if inner.meta.hard_state.as_ref() != Some(&record) {
                inner.meta.hard_state = Some(record);
                // Stored in the meta page only by `sync`, after the log is flushed: written
                // earlier, the kernel could write the page back before the entries it commits.
                inner.meta_dirty = true;
            }
        }
        if sync {
            inner.sync()?;
        }
        Ok(())
    }

    /// A snapshot received from the leader replaces the log: its data file is made durable, then
    /// the meta page naming it (with the snapshot's conf state), then the old files go.
    fn install_snapshot(
        &self,
        inner: &mut Inner,
        md: &SnapshotMetadata,
        data: impl Read,
    ) -> Result<()> {
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
        self.tidy_snapshot_files(inner)
    }

    /// Streams `data` into a durable snapshot file (none for empty data) and describes it.
    fn write_snapshot_file(
        &self,
        index: u64,
        term: u64,
        cs: &ConfStateRecord,
        data: impl Read,
    ) -> Result<SnapshotRecord> {
        let written = snap::write_from(&self.dir, index, term, cs, data, self.cipher.as_ref())?;
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
        let broken = snap::tidy(&self.dir, keep.as_deref(), false)?;
        self.broken.lock().extend(broken);
        Ok(())
    }

    /// Replaces the current conf state (the one `initial_state()` returns).
    pub fn set_conf_state(&self, cs: &ConfState) -> Result<(), Error> {
        let mut inner = self.inner.write();
        inner.meta.conf_state = Some(ConfStateRecord::from(cs));
        inner.meta_dirty = true;
        if self.opts.sync_writes {
            inner.sync()?;
        }
        Ok(())
    }

    /// Takes a snapshot at `index` (which must be in the log) holding `data`: entries up to
    /// `index` become compacted and log files whose entries all lie below it are removed. The
    /// snapshot records `cs`, or the current conf state when `None`; the current conf state is
    /// left alone.
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
        let _writer = self.snap_writer.lock();
        let (term, cs) = {
            let inner = self.inner.read();
            Self::check_snapshot_index(&inner, index)?;
            let cs = match cs {
                Some(cs) => ConfStateRecord::from(cs),
                None => inner.meta.conf_state.clone().unwrap_or_default(),
            };
            (inner.wal.term(index)?, cs)
        };
        let record = self.write_snapshot_file(index, term, &cs, data)?;
        let mut inner = self.inner.write();
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
                let _ = std::fs::remove_file(snap::path(&self.dir, term, index));
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
        self.tidy_snapshot_files(&inner)
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
        let _writer = self.snap_writer.lock();
        let mut inner = self.inner.write();
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
        let inner = self.inner.read();
        let Some(s) = inner.meta.snapshot.as_ref().filter(|s| s.index > 0) else {
            return Err(Error::NoSnapshot {
                path: self.dir.clone(),
            });
        };
        SnapshotReader::open(&self.dir, s, self.cipher.as_ref())
    }

    /// Snapshot files that open found damaged (or that a later cleanup did) and renamed
    /// `<name>.broken` instead of removing them.
    pub fn broken_snapshot_files(&self) -> Vec<PathBuf> {
        self.broken.lock().clone()
    }

    /// The checkpoint index the application stored with `set_uint(MetaInfo::CheckpointIndex, _)`.
    pub fn checkpoint(&self) -> Result<u64, Error> {
        Ok(self.inner.read().meta.checkpoint_index)
    }

    /// Sets raft id, group id or checkpoint index in memory; durable with the next flushed write,
    /// `sync()`, `close()` or drop. Snapshot index and term are set by snapshots only: setting
    /// them here is ignored.
    pub fn set_uint(&self, key: MetaInfo, value: u64) {
        let mut inner = self.inner.write();
        let slot = match key {
            MetaInfo::RaftId => &mut inner.meta.raft_id,
            MetaInfo::GroupId => &mut inner.meta.group_id,
            MetaInfo::CheckpointIndex => &mut inner.meta.checkpoint_index,
            MetaInfo::SnapshotIndex | MetaInfo::SnapshotTerm => return,
        };
        if *slot != value {
            *slot = value;
            inner.meta_dirty = true;
        }
    }

    /// Reads one of the meta page's integers.
    pub fn uint(&self, key: MetaInfo) -> u64 {
        let inner = self.inner.read();
        match key {
            MetaInfo::RaftId => inner.meta.raft_id,
            MetaInfo::GroupId => inner.meta.group_id,
            MetaInfo::CheckpointIndex => inner.meta.checkpoint_index,
            MetaInfo::SnapshotIndex => inner.snapshot_index(),
            MetaInfo::SnapshotTerm => inner.snapshot_term(),
        }
    }

    /// Drops the data of Normal entries below `index`: they keep index, term and type and read
    /// back with empty data. Other entry types are untouched.
    pub fn truncate_entries_until(&self, index: u64) -> Result<(), Error> {
        let mut inner = self.inner.write();
        // Entries at or below the snapshot are not part of the log: never read, never touched.
        let first = inner.first_index();
        inner.wal.clear_data(first, index)?;
        if self.opts.sync_writes {
            inner.sync()?;
        }
        Ok(())
    }

    /// Number of entries in the log (`last_index() + 1 - first_index()`).
    pub fn num_entries(&self) -> usize {
        let inner = self.inner.read();
        (inner.last_index() + 1 - inner.first_index()) as usize
    }

    /// Number of `.wal` files in the directory.
    pub fn num_log_files(&self) -> usize {
        self.inner.read().wal.num_files()
    }

    /// Makes everything written so far durable: the log, then the meta page.
    pub fn sync(&self) -> Result<(), Error> {
        self.inner.write().sync()
    }

    /// Syncs and releases the directory lock.
    pub fn close(self) -> Result<(), Error> {
        self.sync()
        // Drop releases the lock; its own sync finds nothing left to do.
    }

    /// The directory this storage lives in.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn check_range(inner: &Inner, index: u64) -> Result<()> {
        if index < inner.first_index() {
            return Err(Error::Compacted {
                index,
                first_index: inner.first_index(),
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
}

impl Drop for DiskStorage {
    fn drop(&mut self) {
        // Errors cannot be returned from drop; `close()` is the way to see them.
        let _ = self.inner.get_mut().sync();
    }
}

/// Checks that `entries` are contiguous and increasing, start at or after `first` and leave no
/// gap after `last`.
fn validate_entries(entries: &[Entry], first: u64, last: u64) -> Result<()> {
    let Some(e0) = entries.first() else {
        return Ok(());
    };
    if e0.index < first {
        return Err(Error::InvalidAppend(format!(
            "first entry has index {} below the first index {first}",
            e0.index
        )));
    }
    if e0.index > last + 1 {
        return Err(Error::InvalidAppend(format!(
            "first entry has index {} but the log ends at {last}: it would leave a gap",
            e0.index
        )));
    }
    for (i, w) in entries.windows(2).enumerate() {
        if w[1].index != w[0].index + 1 {
            return Err(Error::InvalidAppend(format!(
                "entry {} has index {} after index {}: entries must be contiguous",
                i + 1,
                w[1].index,
                w[0].index
            )));
        }
    }
    for e in entries {
        if e.data.len() > u32::MAX as usize || e.context.len() > (u32::MAX - 4) as usize {
            return Err(Error::InvalidArgument(format!(
                "entry {} is larger than the 4 GiB an entry may hold",
                e.index
            )));
        }
    }
    Ok(())
}

/// Checks that the terms of `entries` never decrease, starting from `before`, the term of the
/// entry (or snapshot) they follow.
fn validate_terms(entries: &[Entry], before: u64) -> Result<()> {
    let mut prev = before;
    for e in entries {
        if e.term < prev {
            return Err(Error::InvalidAppend(format!(
                "entry {} has term {} after term {prev}: terms must not decrease",
                e.index, e.term
            )));
        }
        prev = e.term;
    }
    Ok(())
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let inner = self.inner.read();
        let hs = inner
            .meta
            .hard_state
            .as_ref()
            .map(HardState::from)
            .unwrap_or_default();
        let cs = inner
            .meta
            .conf_state
            .as_ref()
            .map(ConfState::from)
            .unwrap_or_default();
        Ok(RaftState::new(hs, cs))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let inner = self.inner.read();
        if low < inner.first_index() {
            return Err(Error::Compacted {
                index: low,
                first_index: inner.first_index(),
            }
            .into());
        }
        if high > inner.last_index() + 1 {
            return Err(Error::Unavailable {
                index: high - 1,
                last_index: inner.last_index(),
            }
            .into());
        }
        if low >= high {
            if low > high {
                return Err(
                    Error::InvalidArgument(format!("entries({low}, {high}): low > high")).into(),
                );
            }
            return Ok(Vec::new());
        }
        Ok(inner.wal.entries(low, high, max_size.into())?)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        /// Every case but a held index past the snapshot, out of line: the common case then has
        /// a small frame and no error value built on its path (docs/PERFORMANCE.md, reads).
        #[inline(never)]
        fn other(inner: &Inner, idx: u64) -> raft::Result<u64> {
            if idx == inner.snapshot_index() {
                return Ok(inner.snapshot_term());
            }
            DiskStorage::check_range(inner, idx)?;
            Ok(inner.wal.term(idx)?)
        }
        let inner = self.inner.read();
        if idx > inner.snapshot_index() {
            if let Some(term) = inner.wal.term_of_held(idx) {
                return Ok(term);
            }
        }
        other(&inner, idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.inner.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.inner.read().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let inner = self.inner.read();
        let Some(s) = inner.meta.snapshot.as_ref().filter(|s| s.index > 0) else {
            return Err(Error::SnapshotTemporarilyUnavailable {
                requested: request_index,
                available: 0,
            }
            .into());
        };
        if s.index < request_index {
            return Err(Error::SnapshotTemporarilyUnavailable {
                requested: request_index,
                available: s.index,
            }
            .into());
        }
        let mut reader = SnapshotReader::open(&self.dir, s, self.cipher.as_ref())?;
        let mut data = Vec::with_capacity(s.data_len.min(1 << 30) as usize);
        reader
            .read_to_end(&mut data)
            .map_err(|e| reader.error_from(e))?;
        let mut snap = Snapshot::default();
        snap.set_metadata(reader.metadata().clone());
        snap.data = data.into();
        Ok(snap)
    }
}
