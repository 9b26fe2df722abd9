//! One group of an engine: its log as raft sees it, its files, and how a commit's part, the
//! writer and the group's own durable points change them.
//!
//! A group is two halves under two locks, always taken in this order: `log` (the meta record
//! with every journaled change, and the tail of entries journaled but not yet in the files) and
//! `files` (the log files and the meta page). A commit changes `log` only, so it never waits for
//! file I/O; the writer moves the tail into the files holding `files` (and `log` only to take
//! from the tail and to note what the files now hold), one writer at a time (`writing`).
//!
//! Owns: the group's durable point (the journal position its meta page reflects, and the files
//! that page relies on) and the rule that keeps it safe: a file the durable meta page relies on
//! is removed only after a meta page that no longer relies on it is durable, so that replay from
//! the journal always finds the files it needs. Must never: flush on the commit path (but for an
//! installed snapshot or such a removal), or touch a file once the group is closed.//!
//! Files: this one (the group's halves, its locks, the read path: terms and entries), `apply`
//! (a commit's part applied, the writer's moves of the tail into the files, the durable
//! points), `lifecycle` (a group created, assembled at open, removed).

use std::path::PathBuf;

use parking_lot::{Mutex, RwLock};
use raft::prelude::{Entry, HardState};

use super::tail::Tail;
use crate::error::{Error, Result};
use crate::proto::{ConfStateRecord, EngineGroupRecord, MetaRecord, SnapshotRecord};
use crate::store::meta::MetaFile;
use crate::store::snap_build::Builds;
use crate::store::state::LogView;
use crate::store::terms::TermRuns;
use crate::store::wal::Wal;

mod apply;
mod lifecycle;

pub(crate) use apply::reflected_pos;
#[cfg(test)]
pub(crate) use lifecycle::tests as lifecycle_tests;
pub(crate) use lifecycle::{assemble, clear_leftover, create, delete_removed, remove};

/// One group of an engine.
pub(crate) struct Group {
    pub id: u64,
    pub dir: PathBuf,
    /// Tells this group apart from a removed one with the same id (journal parts carry it).
    pub incarnation: u64,
    /// The log as raft sees it. `None` once the group is closed (engine closed) or removed.
    pub log: RwLock<Option<GroupLog>>,
    /// The files. Taken after `log` when both are held.
    pub files: RwLock<Option<GroupFiles>>,
    /// Held shared by a commit from its checks of a part for this group until the part is
    /// applied, and exclusively by an application's snapshot while it takes effect
    /// (`make_durable`): a snapshot never lands between a commit's checks and its apply, where
    /// it would change the log the commit was checked against. Taken before every other lock
    /// of the group.
    pub checked: RwLock<()>,
    /// Held by whoever moves the tail into the files (taken before `log`).
    pub writing: Mutex<()>,
    /// Held while a snapshot file of this group is written.
    pub snap_writer: Mutex<()>,
    /// The snapshot (term, index) the group's snapshot files were last tidied for.
    pub tidied: Mutex<(u64, u64)>,
    /// The application's snapshot builder and its one build thread (stopped by close and
    /// removal, before the group's files go).
    pub builds: Builds,
}

/// A position in the journal as a group's meta page records it: every record up to `seq`, and
/// of record `seq + 1` the first `parts` parts for the group (a record may hold several parts
/// for one group, and a page may be stored between two of them: replay skips the parts a page
/// reflects and applies the rest; docs/FORMAT.md, `journal_parts`).
/// Positions order as `(seq, parts)` do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct JournalPos {
    pub seq: u64,
    pub parts: u32,
}

impl JournalPos {
    /// The position a group's meta page records.
    pub(crate) fn of_page(eng: &EngineGroupRecord) -> JournalPos {
        JournalPos {
            seq: eng.journal_seq,
            parts: eng.journal_parts,
        }
    }

    /// The position just before part `part` (from 1) of record `seq`.
    pub(crate) fn before(seq: u64, part: u32) -> JournalPos {
        JournalPos {
            seq: seq.saturating_sub(1),
            parts: part.saturating_sub(1),
        }
    }

    /// Whether part `part` (from 1) of record `seq` for the group is reflected at this position.
    pub(crate) fn reflects(&self, seq: u64, part: u32) -> bool {
        seq <= self.seq || (seq == self.seq.saturating_add(1) && part <= self.parts)
    }

    /// The last record the position needs the journal to hold (the record after `seq` when it
    /// reflects some of its parts).
    pub(crate) fn last_needed(&self) -> u64 {
        self.seq.saturating_add(u64::from(self.parts > 0))
    }
}

/// A group's log as raft sees it.
pub(crate) struct GroupLog {
    /// The meta record with every journaled change (hard state, conf state, snapshot, ids).
    pub meta: MetaRecord,
    /// Entries journaled but not yet written to the files.
    pub tail: Tail,
    /// The files' last index and its term (0 when the files hold none): the log's last index,
    /// and the term a commit appending right after the files checks, need no lock on the files
    /// (which the writer holds while it writes).
    pub files_last: u64,
    pub files_last_term: u64,
    /// The files' terms from the first index on, once known (`term` answers from it under this
    /// lock alone); `None` after open until a lookup builds it (module `terms`).
    pub terms: Option<TermRuns>,
    /// Changed since the meta page was last written.
    pub dirty: bool,
    /// The last journal record applied to the group (or its meta page's position, if later):
    /// the group's state reflects every record up to it that names the group, and none after.
    pub applied_seq: u64,
    /// Of record `applied_seq`, the parts for the group applied (a record may hold several;
    /// 0 when its meta page's position is a whole record).
    pub applied_parts: u32,
    /// Raft id, group id or checkpoint changed (`set_uint`) since they were last journaled.
    pub ints_dirty: bool,
}

/// A group's files.
pub(crate) struct GroupFiles {
    pub wal: Wal,
    pub meta_file: MetaFile,
    /// The journal position the group's durable meta page reflects: every record up to
    /// `durable_seq`, and the first `durable_parts` parts for the group of the record after.
    pub durable_seq: u64,
    pub durable_parts: u32,
    /// Ids of the log files the durable meta page relies on (`first > last`: none).
    pub durable_files: (u64, u64),
    /// Ids of the log files that a meta record captured by a running checkpoint relies on,
    /// from its capture until the checkpoint stores it or passes it by (module `checkpoint`):
    /// a write that would remove one of them first makes a durable page that does not, as for
    /// `durable_files`, so the checkpoint never stores a page naming a removed file.
    pub captured_files: Option<(u64, u64)>,
}

/// What a commit's part does to a group, taken from a live batch or from a journal record.
pub(crate) struct Change<'a> {
    pub snapshot: Option<&'a SnapshotRecord>,
    /// Moved into the group's tail (not copied).
    pub entries: Vec<Entry>,
    pub hard_state: Option<&'a HardState>,
    pub conf_state: Option<ConfStateRecord>,
    pub ints: Option<[u64; 3]>,
    pub truncate: Option<u64>,
    /// Which of its record's parts for the group this is, from 1, in the record's order.
    pub part: u32,
}

impl GroupLog {
    /// Whether `idx` is a log index the files hold and the tail does not cover (the common
    /// case of `raft::Storage::term`).
    #[inline]
    fn files_hold(&self, idx: u64) -> bool {
        idx > self.snapshot_index() && idx <= self.files_last && self.tail.files_hold_all()
    }

    /// Notes in the term runs (if known) entries just written to the files.
    fn note_terms(&mut self, entries: &[Entry]) {
        let first = self.first_index();
        if let Some(runs) = self.terms.as_mut() {
            runs.written(entries);
            runs.compact(first);
        }
    }

    pub(crate) fn snapshot_index(&self) -> u64 {
        self.meta.snapshot.as_ref().map_or(0, |s| s.index)
    }

    pub(crate) fn snapshot_term(&self) -> u64 {
        self.meta.snapshot.as_ref().map_or(0, |s| s.term)
    }

    pub(crate) fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.tail
            .last()
            .unwrap_or_else(|| self.files_last.max(self.snapshot_index()))
    }

    pub(crate) fn commit(&self) -> u64 {
        self.meta.hard_state.as_ref().map_or(0, |h| h.commit)
    }
}

impl GroupFiles {
    /// The files' last index and its term (0 when the files hold none or it cannot be read,
    /// which sends a term lookup to the files).
    fn end(&self) -> (u64, u64) {
        let last = self.wal.last();
        let term = if last > 0 {
            self.wal.term(last).unwrap_or(0)
        } else {
            0
        };
        (last, term)
    }

    /// The engine fields of the meta page for the files as they are now, reflecting the journal
    /// up to `at` ([`JournalPos`]).
    fn engine_record(&self, at: JournalPos, incarnation: u64) -> EngineGroupRecord {
        EngineGroupRecord {
            journal_seq: at.seq,
            journal_parts: at.parts,
            last_index: self.wal.last(),
            tail_payload_end: self.wal.tail_payload_end(),
            incarnation,
            last_file_id: self.wal.file_ids().1,
        }
    }

    /// `meta` with the engine fields of the files as they are now.
    pub(crate) fn meta_record(
        &self,
        meta: &MetaRecord,
        at: JournalPos,
        incarnation: u64,
    ) -> MetaRecord {
        let mut m = meta.clone();
        m.engine = Some(self.engine_record(at, incarnation));
        m
    }

    /// Stores `record` in the meta page (not flushed) as the group's durable state to be.
    pub(crate) fn store(&mut self, record: &MetaRecord) -> Result<()> {
        self.meta_file.store(record)?;
        if let Some(e) = &record.engine {
            self.durable_seq = e.journal_seq;
            self.durable_parts = e.journal_parts;
            self.durable_files = (self.wal.file_ids().0, e.last_file_id);
        }
        Ok(())
    }

    /// [`GroupFiles::store`], flushed.
    fn store_durable(&mut self, record: &MetaRecord) -> Result<()> {
        self.store(record)?;
        self.meta_file.flush()
    }

    /// The durable meta page, or one a checkpoint captured and has yet to store, relies on a
    /// file with an id above `id` (that a change removing every file after `id` would take
    /// away).
    fn relies_on_files_after(&self, id: u64) -> bool {
        let after = |(first, last): (u64, u64)| first <= last && last > id;
        after(self.durable_files) || self.captured_files.is_some_and(after)
    }
}

/// The two halves of an open group, both locked.
pub(crate) struct Both<'a> {
    pub log: &'a mut GroupLog,
    pub files: &'a mut GroupFiles,
}

impl Group {
    /// Drops the group's state (its maps): every handle finds it closed. Returns the payload
    /// bytes its tail held (for the engine's count of tail bytes).
    pub(crate) fn close(&self) -> u64 {
        let _w = self.writing.lock();
        let held = self.log.write().take().map_or(0, |log| log.tail.bytes());
        self.files.write().take();
        held
    }

    /// The payload bytes of the group's tail, if it holds any operation (an open group).
    pub(crate) fn tail_held(&self) -> Option<u64> {
        let lg = self.log.read();
        let log = lg.as_ref()?;
        (!log.tail.is_empty()).then(|| log.tail.bytes())
    }

    fn closed(&self) -> Error {
        Error::Closed {
            what: format!("group {}", self.id),
        }
    }

    /// Runs `f` on both halves, locked (`writing`, then `log`, then `files`).
    pub(crate) fn with_both<T>(&self, f: impl FnOnce(Both<'_>) -> Result<T>) -> Result<T> {
        let _w = self.writing.lock();
        let mut lg = self.log.write();
        let log = lg.as_mut().ok_or_else(|| self.closed())?;
        let mut fg = self.files.write();
        let files = fg.as_mut().ok_or_else(|| self.closed())?;
        f(Both { log, files })
    }

    /// Runs `f` on the log (read lock).
    pub(crate) fn with_log<T>(&self, f: impl FnOnce(&GroupLog) -> Result<T>) -> Result<T> {
        let lg = self.log.read();
        f(lg.as_ref().ok_or_else(|| self.closed())?)
    }

    /// Runs `f` on the files (read lock), for reads below the tail.
    fn with_files<T>(&self, f: impl FnOnce(&GroupFiles) -> Result<T>) -> Result<T> {
        let fg = self.files.read();
        f(fg.as_ref().ok_or_else(|| self.closed())?)
    }

    /// The term of `index`, for `snapshot < index <= last` (the tail first, then the files).
    pub(crate) fn term_in_log(&self, log: &GroupLog, index: u64) -> Result<u64> {
        match log.tail.term(index) {
            Some(t) => Ok(t),
            // The entry a commit appending after the files checks: no wait for the writer.
            None if index == log.files_last && log.files_last_term != 0 => Ok(log.files_last_term),
            None if log.tail.files_hold_all() || index < log.tail.start() => {
                self.with_files(|f| f.wal.term(index))
            }
            None => Err(Error::Unavailable {
                index,
                last_index: log.last_index(),
            }),
        }
    }

    /// The term of `index` (`snapshot <= index <= last`) with both halves already held.
    pub(crate) fn term_held(log: &GroupLog, files: &GroupFiles, index: u64) -> Result<u64> {
        if index == log.snapshot_index() {
            return Ok(log.snapshot_term());
        }
        match log.tail.term(index) {
            Some(t) => Ok(t),
            None => files.wal.term(index),
        }
    }

    /// `raft::Storage::term`'s common case: an index the files hold, with no tail, or `None`.
    #[inline]
    pub(crate) fn term_in_files(&self, idx: u64) -> Option<u64> {
        {
            let lg = self.log.read();
            let log = lg.as_ref().filter(|log| log.files_hold(idx))?;
            if let Some(runs) = &log.terms {
                // The table, not the slot: a forged slot off its run's term is damage that
                // `entries()` reports (`check_term_order`); the models check the table.
                return runs.term(idx);
            }
        }
        self.build_terms();
        let lg = self.log.read();
        let log = lg.as_ref().filter(|log| log.files_hold(idx))?;
        match &log.terms {
            Some(runs) => runs.term(idx),
            None => self.files.read().as_ref()?.wal.term_of_held(idx),
        }
    }

    /// Asks for the slot page of the log's first index ahead of the first `term()`, without
    /// waiting for it: that lookup builds the term runs ([`Group::build_terms`]) by a binary
    /// search from the first index, whose first probe would otherwise read that page from the
    /// device then, group after group on the caller's thread (docs/PERFORMANCE.md, "Reopen from
    /// a cold cache, counted in device reads"). Only that probe's page: the search's next read
    /// is the last index's slot, which open read, and a log of one term needs no other; a log
    /// whose term changes still reads a binary search's probes per change (about log2 of its
    /// slot pages) on the caller's thread. Nothing when the runs will not be built from the
    /// files (a tail replay left in memory answers the last entries) or the files do not hold
    /// the first index. A short log's first slot page came with open's read of its last slot
    /// (`LogFile::past_end`): the page is then in the page cache, and asking reads nothing.
    pub(crate) fn prefetch_first_slot(&self) {
        let first = self.log.read().as_ref().and_then(|log| {
            (log.terms.is_none() && log.tail.files_hold_all()).then(|| log.first_index())
        });
        let Some(first) = first else {
            return;
        };
        if let Some(files) = self.files.read().as_ref() {
            files.wal.prefetch_slot_of(first);
        }
    }

    /// Builds the files' term runs (module `terms`) if they are not known and the files hold
    /// the whole log (no tail).
    #[cold]
    fn build_terms(&self) {
        let mut lg = self.log.write();
        let Some(log) = lg.as_mut() else { return };
        if log.terms.is_some() || !log.tail.files_hold_all() {
            return;
        }
        let fg = self.files.read();
        let Some(files) = fg.as_ref() else { return };
        log.terms = TermRuns::build(log.first_index(), log.files_last, |i| {
            files.wal.term_of_held(i)
        });
    }

    /// `raft::Storage::term`.
    #[inline]
    pub(crate) fn term(&self, log: &GroupLog, idx: u64) -> Result<u64> {
        let snap = log.snapshot_index();
        if idx == snap {
            return Ok(log.snapshot_term());
        }
        if idx > snap {
            if let Some(t) = log.tail.term(idx) {
                return Ok(t);
            }
        }
        if idx < log.first_index() {
            return Err(Error::Compacted {
                index: idx,
                first_index: log.first_index(),
            });
        }
        if idx > log.last_index() {
            return Err(Error::Unavailable {
                index: idx,
                last_index: log.last_index(),
            });
        }
        self.term_in_log(log, idx)
    }

    /// Checks entries read from the files against the run table `term()` answers from, so that
    /// the two never disagree on a forged slot (`Wal::check_term_order`). Before a lookup has
    /// built the table (`build_terms` needs the log's write lock, held by no reader), it is built
    /// here for this read alone: a binary search per run, as `term()` will do. With a tail, no
    /// table is kept and `term()` reads each slot itself, as this read did.
    fn check_term_order(log: &GroupLog, files: &GroupFiles, read: &[Entry]) -> Result<()> {
        if read.is_empty() {
            return Ok(());
        }
        let built;
        let runs = match &log.terms {
            Some(runs) => runs,
            None if log.tail.files_hold_all() => {
                built = TermRuns::build(log.first_index(), log.files_last, |i| {
                    files.wal.term_of_held(i)
                });
                match &built {
                    Some(runs) => runs,
                    None => return Ok(()), // a slot could not be read: `term()` reads slots too
                }
            }
            None => return Ok(()),
        };
        files.wal.check_term_order(runs, read)
    }

    /// `raft::Storage::entries`: from the files below the tail, then from the tail.
    pub(crate) fn entries(
        &self,
        log: &GroupLog,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>> {
        if low < log.first_index() {
            return Err(Error::Compacted {
                index: low,
                first_index: log.first_index(),
            });
        }
        if high > log.last_index() + 1 {
            return Err(Error::Unavailable {
                index: high - 1,
                last_index: log.last_index(),
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
        let split = if log.tail.files_hold_all() {
            high
        } else {
            log.tail.start().clamp(low, high)
        };
        let mut out = if low < split {
            let files = self.with_files(|f| {
                let read = f.wal.entries(low, split, max_size)?;
                Self::check_term_order(log, f, &read)?;
                Ok(read)
            })?;
            if (files.len() as u64) < split - low {
                // The size limit cut the read short inside the files.
                return Ok(files);
            }
            files
        } else {
            Vec::with_capacity((high - low) as usize)
        };
        if split < high {
            log.tail.read(split, high, &mut out);
            if max_size.is_some_and(|m| m != u64::MAX) {
                raft::util::limit_size(&mut out, max_size);
            }
        }
        Ok(out)
    }
}

/// A group's log as the checks of a commit see it (no lock on the files but for terms below
/// the tail).
pub(crate) struct LogOf<'a> {
    pub group: &'a Group,
    pub log: &'a GroupLog,
}

impl LogView for LogOf<'_> {
    fn snapshot_index(&self) -> u64 {
        self.log.snapshot_index()
    }
    fn snapshot_term(&self) -> u64 {
        self.log.snapshot_term()
    }
    fn last_index(&self) -> u64 {
        self.log.last_index()
    }
    fn commit(&self) -> u64 {
        self.log.commit()
    }
    fn term_in_log(&self, index: u64) -> Result<u64> {
        self.group.term_in_log(self.log, index)
    }
}
