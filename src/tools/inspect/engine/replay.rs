//! A group's log replayed in memory from its meta page on, as `Engine::open` replays the
//! journal's records after the checkpoint into it: entries past the files, the meta changes,
//! installed snapshots, `truncate_entries_until`, and the entries themselves when one group is
//! read.
//!
//! Owns: how a part changes a group's state, which parts are skipped (already in the files, for
//! an earlier incarnation), and the checks open's replay makes as well (a part for an
//! incarnation newer than the directory's, entries that leave a gap); the rules both replays
//! apply to a part's content are `engine::replayed`'s. Must never: read a file (parts come
//! decoded from `root`), or let a part that contradicts one group's log stop the replay into
//! another.

use bytes::Bytes;
use raft::prelude::{Entry, EntryType};

use super::group::GroupDisk;
use super::report::GroupJournalInfo;
use super::root::Journaled;
use crate::engine::replayed;
use crate::engine::scan::Part;
use crate::error::Error;
use crate::proto::{HardStateRecord, MetaRecord};

/// A group's log replayed in memory from its meta page on, as `Engine::open` replays the
/// journal into it: entries past the files (an overwrite cuts what follows, as the engine's
/// tail does), the meta changes, installed snapshots, `truncate_entries_until`.
#[derive(Default)]
pub(super) struct Replay {
    incarnation: u64,
    /// The journal record the group's meta page reflects.
    durable_seq: u64,
    pub(super) meta: MetaRecord,
    /// The files' last index (0 once a snapshot install dropped them).
    files_last: u64,
    /// The entries past the files: `[tail_start, tail_start + tail_len)`.
    pub(super) tail_start: u64,
    pub(super) tail_len: u64,
    /// Those entries, when they are to be read (one group).
    pub(super) kept: Option<Vec<Entry>>,
    /// Normal entries below this index read back with empty data.
    pub(super) truncated_below: u64,
    pub(super) info: GroupJournalInfo,
    /// A part that contradicts the log (replay stops there for this group).
    pub(super) damage: Option<Error>,
}

impl Replay {
    pub(super) fn new(d: &GroupDisk, keep: bool) -> Replay {
        Replay {
            incarnation: d.eng.incarnation,
            durable_seq: d.eng.journal_seq,
            meta: d.meta.clone(),
            files_last: d.wal_last,
            kept: keep.then(Vec::new),
            ..Replay::default()
        }
    }

    fn snapshot_index(&self) -> u64 {
        self.meta.snapshot.as_ref().map_or(0, |s| s.index)
    }

    pub(super) fn first_index(&self) -> u64 {
        self.snapshot_index().saturating_add(1)
    }

    pub(super) fn last_index(&self) -> u64 {
        if self.tail_len > 0 {
            self.tail_start + self.tail_len - 1
        } else {
            self.files_last.max(self.snapshot_index())
        }
    }

    /// The last index read from the files.
    pub(super) fn files_upper(&self) -> u64 {
        if self.tail_len > 0 {
            self.files_last.min(self.tail_start - 1)
        } else {
            self.files_last
        }
    }

    /// Applies a part of record `rec` (its incarnation is one the root gave out).
    pub(super) fn apply(&mut self, rec: &Journaled, part: Part) {
        match replayed::is_for(&part, self.incarnation) {
            Err(reason) => {
                if self.damage.is_none() {
                    self.damage = Some(Error::corrupt(
                        &rec.path,
                        rec.offset,
                        format!("journal record {} holds a part for {reason}", rec.seq),
                    ));
                }
                return;
            }
            Ok(false) => {
                self.info.parts_for_earlier_incarnation += 1;
                return;
            }
            Ok(true) => {}
        }
        if rec.seq <= self.durable_seq {
            self.info.parts_in_files += 1;
            return;
        }
        if self.damage.is_some() {
            return;
        }
        let mut part = part;
        if let Err(reason) = self.check(&mut part) {
            self.damage = Some(Error::corrupt(
                &rec.path,
                rec.offset,
                format!(
                    "journal record {}: group {}'s part {reason}",
                    rec.seq, part.group_id
                ),
            ));
            return;
        }
        let info = &mut self.info;
        if info.last_seq != Some(rec.seq) {
            info.records += 1;
            info.first_seq.get_or_insert(rec.seq);
            info.last_seq = Some(rec.seq);
        }
        if let Some(s) = part.snapshot {
            info.snapshot_installed = Some(s.index);
            // The snapshot replaces the log: the files' entries and the tail go.
            self.meta.conf_state = s.conf_state.clone();
            self.meta.snapshot = Some(s);
            self.files_last = 0;
            self.tail_len = 0;
            if let Some(k) = &mut self.kept {
                k.clear();
            }
        }
        if let Some(e0) = part.entries.first() {
            let i = e0.index;
            let n = part.entries.len() as u64;
            self.info.entries += n;
            self.info.payload_bytes += part
                .entries
                .iter()
                .map(|e| (e.data.len() + e.context.len()) as u64)
                .sum::<u64>();
            if self.tail_len > 0 && i >= self.tail_start {
                self.tail_len = i - self.tail_start;
            } else {
                self.tail_start = i;
                self.tail_len = 0;
            }
            self.tail_len += n;
            if let Some(k) = &mut self.kept {
                k.truncate((i.saturating_sub(self.tail_start)) as usize);
                // Copies: the segment's buffer can go once it is scanned.
                k.extend(part.entries.iter().map(|e| Entry {
                    data: Bytes::copy_from_slice(&e.data),
                    context: Bytes::copy_from_slice(&e.context),
                    ..e.clone()
                }));
            }
        }
        if let Some(hs) = part.hard_state.filter(|hs| *hs != Default::default()) {
            self.meta.hard_state = Some(HardStateRecord::from(&hs));
        }
        if let Some(cs) = part.conf_state {
            self.meta.conf_state = Some(cs);
        }
        if let Some([raft_id, group_id, checkpoint]) = part.ints {
            self.meta.raft_id = raft_id;
            self.meta.group_id = group_id;
            self.meta.checkpoint_index = checkpoint;
        }
        if let Some(index) = part.truncate {
            self.truncated_below = self.truncated_below.max(index);
            self.info.truncated_below = Some(self.truncated_below);
            if let Some(k) = &mut self.kept {
                for e in k.iter_mut() {
                    if e.index < index && e.get_entry_type() == EntryType::EntryNormal {
                        e.data = Bytes::new();
                    }
                }
            }
        }
    }

    /// The files' slots `[from, to)` that open seals again with their data dropped once its
    /// replay has applied a `truncate_entries_until` (each checked first, `Wal::clear_data`):
    /// from the log's first index to the highest replayed truncation, the files' end or the
    /// tail's start, whichever comes first. Damage there fails open, so the root checks them
    /// too (`group::check_cleared`).
    pub(super) fn files_cleared(&self) -> Option<(u64, u64)> {
        let to = self
            .truncated_below
            .min(self.files_upper().saturating_add(1));
        (self.files_last > 0 && self.first_index() < to).then(|| (self.first_index(), to))
    }

    /// The rules open's replay applies ([`replayed`]: the part's own shape, the part settled
    /// against the meta page's snapshot, its commit within the log), and no gap after the log.
    fn check(&self, part: &mut Part) -> std::result::Result<(), String> {
        // In open's order (`engine::recovery::replay`): shape, settle, gap, commit.
        replayed::check_shape(part)?;
        let last = self.last_index();
        replayed::settle(part, self.snapshot_index());
        replayed::check_continues(part, last)?;
        replayed::check_commit(part, last)
    }
}
