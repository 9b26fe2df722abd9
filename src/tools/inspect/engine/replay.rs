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
use crate::engine::replayed::{self, LogShape};
use crate::engine::scan::{JournalPos, Part};
use crate::error::Error;
use crate::proto::{HardStateRecord, MetaRecord};

/// A group's log replayed in memory from its meta page on, as `Engine::open` replays the
/// journal into it: entries past the files (an overwrite cuts what follows, as the engine's
/// tail does), the meta changes, installed snapshots, `truncate_entries_until`.
#[derive(Default)]
pub(super) struct Replay {
    incarnation: u64,
    /// The journal position the group's meta page reflects.
    page: JournalPos,
    /// The record whose parts for the group are being numbered, and the parts seen of it.
    numbering: (u64, u32),
    pub(super) meta: MetaRecord,
    /// The log in numbers, as open's replay follows it (its snapshot index is `meta`'s).
    pub(super) shape: LogShape,
    /// The entries past the files (`shape`'s tail), when they are to be read (one group).
    pub(super) kept: Option<Vec<Entry>>,
    pub(super) info: GroupJournalInfo,
    /// A part that contradicts the log (replay stops there for this group).
    pub(super) damage: Option<Error>,
}

impl Replay {
    pub(super) fn new(d: &GroupDisk, keep: bool) -> Replay {
        Replay {
            incarnation: d.eng.incarnation,
            page: JournalPos::of_page(&d.eng),
            shape: LogShape::new(d.meta.snapshot.as_ref().map_or(0, |s| s.index), d.wal_last),
            meta: d.meta.clone(),
            kept: keep.then(Vec::new),
            ..Replay::default()
        }
    }

    pub(super) fn first_index(&self) -> u64 {
        self.shape.first_index()
    }

    pub(super) fn last_index(&self) -> u64 {
        self.shape.last_index()
    }

    /// The last index read from the files.
    pub(super) fn files_upper(&self) -> u64 {
        self.shape.files_upper()
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
        // Numbered as open numbers a record's parts for a group (`engine::recovery::replay`).
        if self.numbering.0 != rec.seq {
            self.numbering = (rec.seq, 0);
        }
        self.numbering.1 += 1;
        if self.page.reflects(rec.seq, self.numbering.1) {
            self.info.parts_in_files += 1;
            return;
        }
        if self.damage.is_some() {
            return;
        }
        let mut part = part;
        if let Err(reason) = self.shape.check(&mut part) {
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
        // Where the log's ends and tail go, as open's replay has them.
        let before = self.shape.clone();
        self.shape.take(&part);
        let installs = part.snapshot.is_some();
        if let Some(s) = part.snapshot {
            info.snapshot_installed = Some(s.index);
            // The snapshot replaces the log: the files' entries and the tail go.
            self.meta.conf_state = s.conf_state.clone();
            self.meta.snapshot = Some(s);
            if let Some(k) = &mut self.kept {
                k.clear();
            }
        }
        if let Some(e0) = part.entries.first() {
            self.info.entries += part.entries.len() as u64;
            self.info.payload_bytes += part
                .entries
                .iter()
                .map(|e| (e.data.len() + e.context.len()) as u64)
                .sum::<u64>();
            if let Some(k) = &mut self.kept {
                // What the tail kept before this part, up to where the part starts (the whole
                // tail restarts at it when it starts below the tail, or an install cleared it).
                let keep = if !installs && before.tail_len > 0 {
                    e0.index.saturating_sub(before.tail_start)
                } else {
                    0
                };
                k.truncate(keep as usize);
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
            self.info.truncated_below = Some(self.shape.truncated_below);
            if let Some(k) = &mut self.kept {
                for e in k.iter_mut() {
                    if e.index < index && e.get_entry_type() == EntryType::EntryNormal {
                        e.data = Bytes::new();
                    }
                }
            }
        }
    }

    /// The files' slots that open seals again after replaying a truncation
    /// ([`LogShape::files_cleared`]). Damage there fails open, so the root checks them too
    /// (`group::check_cleared`).
    pub(super) fn files_cleared(&self) -> Option<(u64, u64)> {
        self.shape.files_cleared()
    }
}
