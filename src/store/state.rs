//! One group's log in memory: its meta record and its log files, the rules a save must keep,
//! and the reads `raft::Storage` asks for. Shared by `DiskStorage` (one directory) and the
//! engine's groups.
//!
//! Owns: what a save may be ([`check_save`], against the current state or a shadow of it),
//! the in-memory effect of a hard state, and the reads (entries, terms, the initial state,
//! the stored snapshot). Must never: decide when anything becomes durable or write the meta
//! page (that is `storage` for a `DiskStorage`, the engine for a group).

use std::io::Read;
use std::path::Path;

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::RaftState;

use crate::error::{Error, Result};
use crate::proto::{HardStateRecord, MetaRecord};
use crate::store::log_file::MAX_INDEX;
use crate::store::snap::SnapshotReader;
use crate::store::wal::Wal;
use crate::sys::crypto::Cipher;

/// One group's log: the meta record (as it is in memory) and the log files.
pub(crate) struct State {
    pub meta: MetaRecord,
    /// `meta` has changes not yet stored in the meta page.
    pub meta_dirty: bool,
    pub wal: Wal,
}

/// `raft::Storage::initial_state` of a log whose meta record is `meta` (a `DiskStorage`'s or an
/// engine group's).
///
/// The commit reported is at least the stored snapshot's index: every entry a snapshot holds
/// was committed, and an application may snapshot at its applied index before the hard state
/// committing it is stored (raft-rs's async ready applies committed entries while their Ready
/// is persisted; a Ready made before the snapshot may even be stored after it). A commit below
/// the snapshot would make a restarted raft panic ("hs.commit is out of range"), so the node
/// could never start again. What is stored is left as it was written (docs/FORMAT.md).
pub(crate) fn initial_state(meta: &MetaRecord) -> RaftState {
    let mut hs = meta
        .hard_state
        .as_ref()
        .map(HardState::from)
        .unwrap_or_default();
    let snapshot_index = meta.snapshot.as_ref().map_or(0, |s| s.index);
    hs.commit = hs.commit.max(snapshot_index);
    let cs = meta
        .conf_state
        .as_ref()
        .map(ConfState::from)
        .unwrap_or_default();
    RaftState::new(hs, cs)
}

/// What validating a save needs to know of a log.
pub(crate) trait LogView {
    fn snapshot_index(&self) -> u64;
    fn snapshot_term(&self) -> u64;
    fn last_index(&self) -> u64;
    /// The stored commit index.
    fn commit(&self) -> u64;
    /// The term of `index`, for `snapshot_index() < index <= last_index()`.
    fn term_in_log(&self, index: u64) -> Result<u64>;

    fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    /// The term of `index` for `snapshot_index() <= index <= last_index()`.
    fn term_at(&self, index: u64) -> Result<u64> {
        if index == self.snapshot_index() {
            Ok(self.snapshot_term())
        } else {
            self.term_in_log(index)
        }
    }
}

impl LogView for State {
    fn snapshot_index(&self) -> u64 {
        self.meta.snapshot.as_ref().map_or(0, |s| s.index)
    }

    fn snapshot_term(&self) -> u64 {
        self.meta.snapshot.as_ref().map_or(0, |s| s.term)
    }

    fn last_index(&self) -> u64 {
        self.wal.last().max(self.snapshot_index())
    }

    fn commit(&self) -> u64 {
        self.meta.hard_state.as_ref().map_or(0, |h| h.commit)
    }

    fn term_in_log(&self, index: u64) -> Result<u64> {
        self.wal.term(index)
    }
}

/// Checks that `save(hs, entries, snap)` fits the log `view` describes, changing nothing: a
/// newer snapshot; entries contiguous and increasing, starting at or after the first index (the
/// snapshot's next when one is installed) and leaving no gap, never overwriting committed
/// entries, with terms that never decrease from the entry (or snapshot) they follow; a commit
/// index that does not end past the log the save leaves.
pub(crate) fn check_save(
    view: &impl LogView,
    hs: &HardState,
    entries: &[Entry],
    snap: &Snapshot,
) -> Result<()> {
    let md = snap.get_metadata();
    let snap_index = md.index;
    let top = entries
        .last()
        .map_or(snap_index, |e| e.index.max(snap_index));
    if top > MAX_INDEX {
        return Err(Error::InvalidArgument(format!(
            "index {top} is past the largest index the log holds ({MAX_INDEX})"
        )));
    }
    let installing = snap_index > 0;
    if installing && snap_index <= view.snapshot_index() {
        return Err(Error::SnapshotOutOfDate {
            index: snap_index,
            current: view.snapshot_index(),
        });
    }
    let (first, last) = if installing {
        (snap_index + 1, snap_index)
    } else {
        (view.first_index(), view.last_index())
    };
    validate_entries(entries, first, last)?;
    if let Some(e0) = entries.first() {
        // The term of the entry (or snapshot) the batch follows: raft never writes a lower
        // one after it, and recovery reads a term drop as the end of the log.
        let before = if installing {
            md.term
        } else {
            view.term_at(e0.index - 1)?
        };
        validate_terms(entries, before)?;
    }
    // A durable commit index must never point past durable entries: refuse a save that
    // would leave it there (raft-rs never asks for one; open would refuse the result).
    let stored_commit = view.commit();
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
    Ok(())
}

/// Checks that `entries` are contiguous and increasing, start at or after `first` and leave no
/// gap after `last`, and fit the format.
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

impl State {
    /// Records a non-default hard state in memory (`meta_dirty` when it changes).
    pub(crate) fn set_hard_state(&mut self, hs: &HardState) {
        if *hs == HardState::default() {
            return;
        }
        let record = HardStateRecord::from(hs);
        if self.meta.hard_state.as_ref() != Some(&record) {
            self.meta.hard_state = Some(record);
            self.meta_dirty = true;
        }
    }

    /// `[index]` must be in the log: `Compacted` below it, `Unavailable` above.
    pub(crate) fn check_range(&self, index: u64) -> Result<()> {
        if index < self.first_index() {
            return Err(Error::Compacted {
                index,
                first_index: self.first_index(),
            });
        }
        if index > self.last_index() {
            return Err(Error::Unavailable {
                index,
                last_index: self.last_index(),
            });
        }
        Ok(())
    }

    /// `raft::Storage::initial_state`.
    pub(crate) fn initial_state(&self) -> RaftState {
        initial_state(&self.meta)
    }

    /// `raft::Storage::entries`.
    pub(crate) fn entries(&self, low: u64, high: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(Error::Compacted {
                index: low,
                first_index: self.first_index(),
            });
        }
        if high > self.last_index() + 1 {
            return Err(Error::Unavailable {
                index: high - 1,
                last_index: self.last_index(),
            });
        }
        if low >= high {
            if low > high {
                return Err(Error::InvalidArgument(format!(
                    "entries({low}, {high}): low > high"
                )));
            }
            return Ok(Vec::new());
        }
        let out = self.wal.entries(low, high, max_size)?;
        self.wal.check_terms(&out, self.first_index())?;
        Ok(out)
    }

    /// `raft::Storage::term`.
    #[inline]
    pub(crate) fn term(&self, idx: u64) -> Result<u64> {
        /// Every case but a held index past the snapshot, out of line: the common case then has
        /// a small frame and no error value built on its path (docs/PERFORMANCE.md, reads).
        #[inline(never)]
        fn other(state: &State, idx: u64) -> Result<u64> {
            if idx == state.snapshot_index() {
                return Ok(state.snapshot_term());
            }
            state.check_range(idx)?;
            state.wal.term(idx)
        }
        let snap = self.snapshot_index();
        if idx > snap {
            if let Some(term) = self.wal.term_of_live(idx, snap + 1) {
                return Ok(term);
            }
        }
        other(self, idx)
    }

    /// `raft::Storage::snapshot`: the stored snapshot (read from `dir`'s snapshot file) if it is
    /// at or above `request_index`, else `SnapshotTemporarilyUnavailable`.
    pub(crate) fn snapshot(
        &self,
        dir: &Path,
        cipher: Option<&Cipher>,
        request_index: u64,
    ) -> Result<Snapshot> {
        let Some(s) = self.meta.snapshot.as_ref().filter(|s| s.index > 0) else {
            return Err(Error::SnapshotTemporarilyUnavailable {
                requested: request_index,
                available: 0,
            });
        };
        if s.index < request_index {
            return Err(Error::SnapshotTemporarilyUnavailable {
                requested: request_index,
                available: s.index,
            });
        }
        let mut reader = SnapshotReader::open(dir, s, cipher)?;
        let mut data = Vec::with_capacity(s.data_len.min(1 << 30) as usize);
        reader
            .read_to_end(&mut data)
            .map_err(|e| reader.error_from(e))?;
        let mut snap = Snapshot::default();
        snap.set_metadata(reader.metadata().clone());
        snap.data = data.into();
        Ok(snap)
    }

    /// Number of entries in the log.
    pub(crate) fn num_entries(&self) -> usize {
        (self.last_index() + 1 - self.first_index()) as usize
    }
}
