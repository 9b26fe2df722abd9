//! A group changed: a commit's part applied to its log (entries to the tail, the rest to the
//! meta record; an installed snapshot or a truncation to the files at once), the writer moving
//! the tail into the files, and the group's durable points (`make_durable`, the journal
//! position its state reflects).
//!
//! Owns: the order of those changes under the group's two locks, and the rule that a file the
//! durable meta page relies on goes only after a page that no longer does is durable. Must
//! never: flush on the commit path (but for an installed snapshot or such a removal), or take
//! the `files` lock before the `log` lock.

use std::sync::Arc;

use raft::prelude::HardState;

use crate::engine::Shared;
use crate::error::Result;
use crate::proto::{EngineGroupRecord, HardStateRecord, SnapshotRecord};
use crate::store::terms::TermRuns;

use super::{Both, Change, Group, GroupFiles, GroupLog, JournalPos};

impl Group {
    /// Applies `change` (part of journal record `seq`), which was checked against the log (or
    /// is being replayed): entries go to the tail, everything else to the log's meta record, but
    /// an installed snapshot and `truncate_entries_until`, which change the files at once.
    pub(crate) fn apply(
        self: &Arc<Self>,
        shared: &Shared,
        mut change: Change<'_>,
        seq: u64,
    ) -> Result<()> {
        if change.snapshot.is_some() || change.truncate.is_some() {
            let r = self.with_both(|b| self.apply_both(shared, b, &mut change, seq));
            // The change may have opened a descriptor: into the budget with it. Unpaced: this
            // commit holds the lead, and no flush comes until it is done.
            self.settle_fds(shared, false);
            return r;
        }
        let mut lg = self.log.write();
        let log = lg.as_mut().ok_or_else(|| self.closed())?;
        let before = log.tail.bytes();
        self.apply_log(shared, log, &mut change, seq);
        shared.account_tail(before, log.tail.bytes());
        Ok(())
    }

    /// The part of [`Group::apply`] every change makes to the log: its entries to the tail
    /// (the group noted as unwritten when its tail was empty), its meta changes, the applied
    /// position.
    fn apply_log(&self, shared: &Shared, log: &mut GroupLog, change: &mut Change<'_>, seq: u64) {
        if !change.entries.is_empty() {
            if log.tail.is_empty() {
                shared.unwritten.lock().push(self.id);
            }
            let before = log.tail.bytes();
            log.tail
                .push(seq, change.part, std::mem::take(&mut change.entries));
            let figure = crate::engine::checkpoint::group_write_bytes(self.id);
            if before < figure && log.tail.bytes() >= figure {
                shared
                    .tails_due
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
        apply_meta(log, change);
        if (seq, change.part) > (log.applied_seq, log.applied_parts) {
            (log.applied_seq, log.applied_parts) = (seq, change.part);
        }
    }

    /// [`Group::apply`] of a change that touches the files.
    fn apply_both(
        &self,
        shared: &Shared,
        b: Both<'_>,
        change: &mut Change<'_>,
        seq: u64,
    ) -> Result<()> {
        let Both { log, files } = b;
        let before = log.tail.bytes();
        let r = (|| {
            if let Some(rec) = change.snapshot {
                self.install(
                    shared,
                    log,
                    files,
                    rec,
                    JournalPos::before(seq, change.part),
                )?;
            }
            self.apply_log(shared, log, change, seq);
            if let Some(index) = change.truncate {
                // The files change in place: the record first (without `sync_writes` it may not
                // be durable yet, and a power loss must not keep the change without it).
                shared.journal.lock().sync()?;
                log.tail.clear_data_below(index);
                let (first, to) = files_cleared(log, index);
                files.wal.clear_data(first, to)?;
            }
            Ok(())
        })();
        shared.account_tail(before, log.tail.bytes());
        r
    }

    /// Replay's part of a `truncate_entries_until` applied at once: the tail's entries below
    /// `index` (those the records before it pushed; the entries of later records keep their
    /// data). The files' part waits for the end of replay ([`Group::clear_files_below`]).
    pub(crate) fn clear_tail_below(&self, shared: &Shared, index: u64) -> Result<()> {
        let mut lg = self.log.write();
        let log = lg.as_mut().ok_or_else(|| self.closed())?;
        let before = log.tail.bytes();
        log.tail.clear_data_below(index);
        shared.account_tail(before, log.tail.bytes());
        Ok(())
    }

    /// The files' part of the truncations open replayed (`index`, the highest): their Normal
    /// entries below it and below the tail's start read back empty, each slot checked first.
    /// Done once replay ends, because the files are as the writes after those records left
    /// them: an overwrite written into them since cut the slots past it, which the page (not
    /// stored since) still counts, and which the tail now replaces. Open checks every group's
    /// range before it changes anything (`recovery::check_replay`), so that an open that fails
    /// on a damaged slot has changed no group's files.
    pub(crate) fn clear_files_below(&self, index: u64) -> Result<()> {
        self.with_both(|b| {
            let (first, to) = files_cleared(b.log, index);
            b.files.wal.clear_data(first, to)
        })
    }

    /// Installs a snapshot (its file written and durable): the meta page naming it (and the
    /// journal replayed from the install's part on, `at`: the parts before it in its record
    /// are reflected, their entries replaced by it) is made durable first, then every log file
    /// goes (as `DiskStorage` does).
    fn install(
        &self,
        shared: &Shared,
        log: &mut GroupLog,
        files: &mut GroupFiles,
        rec: &SnapshotRecord,
        at: JournalPos,
    ) -> Result<()> {
        // The entries before it are replaced: the tail goes with the files.
        let _ = log.tail.take();
        let first_file_id = files.wal.next_file_id();
        log.meta.snapshot = Some(rec.clone());
        log.meta.conf_state = rec.conf_state.clone();
        log.meta.first_file_id = first_file_id;
        shared.journal.lock().sync()?;
        let mut record = log.meta.clone();
        record.engine = Some(EngineGroupRecord {
            journal_seq: at.seq,
            journal_parts: at.parts,
            last_index: rec.index,
            tail_payload_end: 0,
            incarnation: self.incarnation,
            last_file_id: 0,
        });
        files.store_durable(&record)?;
        files.wal.reset(first_file_id)?;
        files.durable_files = (1, 0);
        (log.files_last, log.files_last_term) = files.end();
        log.terms = Some(TermRuns::default());
        log.dirty = true;
        Ok(())
    }

    /// Moves the tail's oldest operations (those that append to the first, up to about
    /// `max_bytes`) into the files, unflushed; `false` when there was none. The commit path is
    /// held back only while the operations are taken and while what the files hold is noted, not
    /// during the write.
    pub(crate) fn write_tail_op(&self, shared: &Shared, max_bytes: u64) -> Result<bool> {
        let _w = self.writing.lock();
        let mut lg = self.log.write();
        let log = lg.as_mut().ok_or_else(|| self.closed())?;
        let first = log.tail.first_pos();
        let before = log.tail.bytes();
        let Some(op) = log.tail.pop(max_bytes) else {
            return Ok(false);
        };
        shared.account_tail(before, log.tail.bytes());
        let (op_seq, op_part) = first.unwrap_or((op.seq, op.part));
        let start = op.entries.first().map_or(0, |e| e.index);
        let mut fg = self.files.write();
        let files = fg.as_mut().ok_or_else(|| self.closed())?;
        let destructive = files
            .wal
            .file_id_of(start)
            .filter(|&id| files.relies_on_files_after(id));
        if let Some(id) = destructive {
            // An overwrite that removes files the durable meta page relies on: first a durable
            // meta page that does not (the log as ending just before the overwrite, the journal
            // replayed from the overwrite's part on: the parts before it in its record are in
            // the files, up to where it cuts them). Done with both halves held (rare).
            shared.journal.lock().sync()?;
            files.wal.flush()?;
            let mut record = log.meta.clone();
            let at = JournalPos::before(op_seq, op_part);
            record.engine = Some(EngineGroupRecord {
                journal_seq: at.seq,
                journal_parts: at.parts,
                last_index: start - 1,
                tail_payload_end: files.wal.payload_end_of(id),
                incarnation: self.incarnation,
                last_file_id: id,
            });
            files.store_durable(&record)?;
            files.wal.append(&op.entries, false)?;
            (log.files_last, log.files_last_term) = files.end();
            log.note_terms(&op.entries);
            log.tail.written(log.files_last);
            return Ok(true);
        }
        drop(lg);
        if start <= files.wal.last() {
            // An overwrite changes what the files hold in place: its record first (without
            // `sync_writes` it may not be durable yet, and a power loss must not keep the new
            // slots without it).
            shared.journal.lock().sync()?;
        }
        // The write, with only the files held: commits go on meanwhile (the entries are still
        // in the tail's view, which reads use until the files are noted below).
        files.wal.append(&op.entries, false)?;
        let (last, last_term) = files.end();
        drop(fg);
        let mut lg = self.log.write();
        let log = lg.as_mut().ok_or_else(|| self.closed())?;
        (log.files_last, log.files_last_term) = (last, last_term);
        log.note_terms(&op.entries);
        log.tail.written(last);
        Ok(true)
    }

    /// Moves the whole tail into the files (unflushed); `paced`: the write-back it starts as
    /// the writer's is ([`Group::settle_fds`]).
    pub(crate) fn write_tail(self: &Arc<Self>, shared: &Shared, paced: bool) -> Result<()> {
        while self.write_tail_op(shared, u64::MAX)? {}
        self.settle_fds(shared, paced);
        Ok(())
    }

    /// After writes: starts the write-back of what they wrote, keeps the last file's descriptor
    /// (in the engine's budget of open files, module `fds`) and closes the others. `paced` (the
    /// writer's thread): the write-back starts in the gap after a journal flush, a record's
    /// worth per flush ([`super::super::flushes::Flushes::pace`]); else (a commit, an
    /// application's call, open) just after the flush in flight, if one is.
    pub(crate) fn settle_fds(self: &Arc<Self>, shared: &Shared, paced: bool) {
        // Waited for with no lock held: the group's readers and commits go on meanwhile.
        let due = self
            .files
            .read()
            .as_ref()
            .map_or(0, |f| f.wal.writeback_due());
        if due > 0 && paced {
            shared.flushes.pace(due);
        } else if due > 0 {
            shared.flushes.wait_out();
        }
        let holds = self
            .files
            .write()
            .as_mut()
            .is_some_and(|f| f.wal.settle_fds());
        if holds {
            shared.open_files.written(self);
        }
    }

    /// Closes the descriptors the writer opened.
    pub(crate) fn release_fds(&self) {
        if let Some(f) = self.files.write().as_mut() {
            f.wal.release_fds();
        }
    }

    /// Makes the group's current state durable on its own, with `change` applied to it (a
    /// snapshot taken by the application), without holding back commits to other groups: the
    /// tail is written, then, with the group held and its tail empty (else the tail is written
    /// again, a few times, before the caller is asked to hold the pipeline), `change` runs, the
    /// files are flushed and the meta page is written and flushed, reflecting the group's last
    /// applied journal record. The journal is flushed first: the group must never be durable
    /// ahead of it. `Ok(false)`: commits kept adding to the tail, nothing was done.
    pub(crate) fn make_durable(
        self: &Arc<Self>,
        shared: &Shared,
        change: impl FnOnce(&mut GroupLog, &GroupFiles) -> Result<()>,
    ) -> Result<bool> {
        let mut change = Some(change);
        for _ in 0..DURABLE_TRIES {
            self.write_tail(shared, false)?;
            // No commit between its checks and its apply: `change` sees the log every commit
            // was checked against, and none checked before it is applied after it.
            let _checked = self.checked.write();
            let done = self.with_both(|Both { log, files }| {
                if !log.tail.is_empty() {
                    return Ok(false);
                }
                if let Some(change) = change.take() {
                    change(log, files)?;
                }
                shared.journal.lock().sync()?;
                files.wal.flush()?;
                let at = reflected_pos(shared, log);
                let record = files.meta_record(&log.meta, at, self.incarnation);
                files.store_durable(&record)?;
                log.dirty = false;
                Ok(true)
            })?;
            if done {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The journal position a group's state reflects while its log is held (with an empty tail,
/// its files hold that state): every record up to the engine's applied position is applied to
/// it (a commit publishes its position after all its parts), and of the record being applied
/// now, the one after, the parts for the group applied so far (a commit holds one group for
/// one part at a time, and a record may hold several parts for a group): replay applies the
/// rest of that record's parts, and only those (applied again, an earlier part could conflict
/// with what a later one left: entries past an install or an overwrite below them).
pub(crate) fn reflected_pos(shared: &Shared, log: &GroupLog) -> JournalPos {
    let engine = shared
        .applied_seq
        .load(std::sync::atomic::Ordering::Acquire);
    if log.applied_seq > engine {
        JournalPos {
            seq: log.applied_seq - 1,
            parts: log.applied_parts,
        }
    } else {
        JournalPos {
            seq: engine,
            parts: 0,
        }
    }
}

/// Times [`Group::make_durable`] writes the tail and tries before it gives up (commits kept
/// adding to the group).
const DURABLE_TRIES: usize = 3;

/// The files' indexes a truncation below `index` clears: from the log's first index, and below
/// the tail's start when the tail holds entries (the files' entries from there on are the
/// tail's to replace; after a written overwrite their slots may be cleared already).
fn files_cleared(log: &GroupLog, index: u64) -> (u64, u64) {
    let to = match log.tail.last() {
        Some(_) => index.min(log.tail.start()),
        None => index,
    };
    (log.first_index(), to)
}

/// The meta changes of `change` (hard state, conf state, ids).
fn apply_meta(log: &mut GroupLog, change: &Change<'_>) {
    if let Some(hs) = change.hard_state.filter(|hs| **hs != HardState::default()) {
        log.meta.hard_state = Some(HardStateRecord::from(hs));
    }
    if let Some(cs) = &change.conf_state {
        log.meta.conf_state = Some(cs.clone());
    }
    if let Some(ints) = change.ints {
        let m = &mut log.meta;
        // A live commit journaled the integers `set_uint` had left in the log; a `set_uint`
        // between its journal record and this apply changed them since: they stay, still to be
        // journaled (putting the journaled ones back would undo it, and lose it for good).
        // Replay (no `set_uint` runs) always takes them.
        let current = [m.raft_id, m.group_id, m.checkpoint_index];
        if !log.ints_dirty || current == ints {
            [m.raft_id, m.group_id, m.checkpoint_index] = ints;
            log.ints_dirty = false;
        }
    }
    log.dirty = true;
}
