//! The rules a journal record's part meets when it is replayed: by `Engine::open` into a
//! group, and by the tools' replay (`raftwal inspect|verify` on an engine root) into their
//! picture of one, so that both take and refuse the same parts.
//!
//! Owns: whose a part is ([`check_given_out`], [`is_for`]), what it holds on its own when a
//! commit wrote it ([`check_shape`]), how it meets a group's meta page written after part of
//! its record was applied ([`settle`]), that it continues the log ([`check_continues`]) and
//! where its commit index may point ([`check_commit`]). Must never: read or change a file, or
//! decide what a refusal names (each replay knows its record's segment and offset).
//!
//! A record's checksum says its bytes are the ones written; these rules say the bytes are ones
//! a commit writes. A part that breaks one was written wrong (or forged with a valid checksum);
//! applying it would leave a log raft cannot use (a hole, a log that ends before it starts, a
//! commit past its end).

use super::batch::Decoded;
use crate::store::log_file::MAX_INDEX;

/// What every part a commit journals satisfies on its own (the checks of `Engine::write`,
/// docs/DESIGN.md §4): entries contiguous and increasing from index 1 or later, within the
/// index space, with terms that never decrease; an installed snapshot within the index space,
/// its entries right after it, their terms not below its term. The reason, if not.
pub(crate) fn check_shape(part: &Decoded) -> Result<(), String> {
    if let Some(s) = part.snapshot.as_ref().filter(|s| s.index > MAX_INDEX) {
        return Err(format!("a snapshot at index {}, past {MAX_INDEX}", s.index));
    }
    let (Some(e0), Some(last)) = (part.entries.first(), part.entries.last()) else {
        return Ok(());
    };
    if e0.index == 0 || e0.index > MAX_INDEX || last.index > MAX_INDEX {
        return Err(format!(
            "entries {} to {}, outside 1..={MAX_INDEX}",
            e0.index, last.index
        ));
    }
    for w in part.entries.windows(2) {
        if w[1].index != w[0].index + 1 || w[1].term < w[0].term {
            return Err(format!(
                "entry {} (term {}) after entry {} (term {}): entries are contiguous and their terms never decrease",
                w[1].index, w[1].term, w[0].index, w[0].term
            ));
        }
    }
    if let Some(s) = &part.snapshot {
        if e0.index != s.index + 1 || e0.term < s.term {
            return Err(format!(
                "entries from {} (term {}) with a snapshot installed at {} (term {})",
                e0.index, e0.term, s.index, s.term
            ));
        }
    }
    Ok(())
}

/// A part names an incarnation the root gave out: from 1 (the first group's), below
/// `engine.meta`'s next one, which is durable before a group takes it.
pub(crate) fn check_given_out(part: &Decoded, next_incarnation: u64) -> Result<(), String> {
    let next = next_incarnation.max(1);
    if part.incarnation == 0 || part.incarnation >= next {
        return Err(format!(
            "incarnation {}, which the root never gave out (its next incarnation is {next_incarnation})",
            part.incarnation
        ));
    }
    Ok(())
}

/// Whether `part` is for the group whose directory holds `group_incarnation`: `false` for an
/// earlier incarnation (a group of that id removed since; skipped); a newer one is damage (the
/// directory is made after its incarnation is given out, its records after that).
pub(crate) fn is_for(part: &Decoded, group_incarnation: u64) -> Result<bool, String> {
    if part.incarnation > group_incarnation {
        return Err(format!(
            "incarnation {} of group {}, but the group's directory holds incarnation {group_incarnation}, an older one",
            part.incarnation, part.group_id
        ));
    }
    Ok(part.incarnation == group_incarnation)
}

/// A settled part's entries continue the log that ends at `last_index`: no gap (an install
/// starts a log of its own).
pub(crate) fn check_continues(part: &Decoded, last_index: u64) -> Result<(), String> {
    match part.entries.first().filter(|_| part.snapshot.is_none()) {
        Some(e0) if e0.index > last_index.saturating_add(1) => Err(format!(
            "entries from index {}, but the group's log ends at {last_index}: a gap",
            e0.index
        )),
        _ => Ok(()),
    }
}

/// `part` as a group whose meta page puts its snapshot at `snapshot_index` takes it. A meta
/// page may be written while a record is applied part by part (its journal position then is
/// the record before, and replay applies the whole record again), after a `create_snapshot`
/// that came in between: an install older than the page's snapshot is in the past (its file
/// may be gone), and entries at or below the page's snapshot are compacted. Both are dropped.
pub(crate) fn settle(part: &mut Decoded, snapshot_index: u64) {
    if part
        .snapshot
        .as_ref()
        .is_some_and(|s| s.index < snapshot_index)
    {
        part.snapshot = None;
    }
    if part.snapshot.is_none() {
        part.entries.retain(|e| e.index > snapshot_index);
    }
}

/// A settled part's commit index lies within the log it leaves behind (`last_index`: the
/// group's before the part). DESIGN.md §4's write order: a durable commit never points past
/// durable entries, and raft panics on a commit past its log.
pub(crate) fn check_commit(part: &Decoded, last_index: u64) -> Result<(), String> {
    let Some(hs) = part.hard_state.as_ref().filter(|hs| hs.commit > 0) else {
        return Ok(());
    };
    let last = match (part.entries.last(), &part.snapshot) {
        (Some(e), _) => e.index,
        (None, Some(s)) => s.index,
        (None, None) => last_index,
    };
    if hs.commit > last {
        return Err(format!(
            "a commit index {} past the log's last index {last}",
            hs.commit
        ));
    }
    Ok(())
}

/// What replay makes of a group's log, in numbers only: where it starts, what its files hold,
/// the entries replay puts past them (the tail), and the highest truncation replayed. Open
/// checks every record against it before it changes anything (`engine::recovery`), and the
/// tools replay into it (`raftwal inspect|verify`), so both follow a part the way a group's
/// `apply` does.
#[derive(Debug, Default, Clone)]
pub(crate) struct LogShape {
    pub snapshot_index: u64,
    /// The files' last index (0 once a snapshot install dropped them).
    pub files_last: u64,
    /// The entries past the files: `[tail_start, tail_start + tail_len)`.
    pub tail_start: u64,
    pub tail_len: u64,
    /// Normal entries below this index read back with empty data.
    pub truncated_below: u64,
}

impl LogShape {
    /// A group's log as its meta page leaves it: its snapshot, its files' last index.
    pub(crate) fn new(snapshot_index: u64, files_last: u64) -> LogShape {
        LogShape {
            snapshot_index,
            files_last,
            ..LogShape::default()
        }
    }

    pub(crate) fn first_index(&self) -> u64 {
        self.snapshot_index.saturating_add(1)
    }

    /// As the group's log gives it: the tail's last entry, else the files' or the snapshot's.
    pub(crate) fn last_index(&self) -> u64 {
        if self.tail_len > 0 {
            self.tail_start + self.tail_len - 1
        } else {
            self.files_last.max(self.snapshot_index)
        }
    }

    /// The last index read from the files (below the tail).
    pub(crate) fn files_upper(&self) -> u64 {
        if self.tail_len > 0 {
            self.files_last.min(self.tail_start - 1)
        } else {
            self.files_last
        }
    }

    /// The files' slots `[from, to)` open seals again with their data dropped once replay has
    /// applied a `truncate_entries_until` (each checked first, `Wal::clear_data`): from the
    /// log's first index to the highest replayed truncation, the files' end or the tail's
    /// start, whichever comes first.
    pub(crate) fn files_cleared(&self) -> Option<(u64, u64)> {
        let to = self
            .truncated_below
            .min(self.files_upper().saturating_add(1));
        (self.files_last > 0 && self.first_index() < to).then(|| (self.first_index(), to))
    }

    /// The rules open's replay applies to a part for this group, in its order: the part's own
    /// shape, the part settled against the snapshot, no gap after the log, its commit within
    /// the log. The reason, if one fails.
    pub(crate) fn check(&self, part: &mut Decoded) -> Result<(), String> {
        check_shape(part)?;
        let last = self.last_index();
        settle(part, self.snapshot_index);
        check_continues(part, last)?;
        check_commit(part, last)
    }

    /// Follows a checked part: an install replaces the log (the files' entries and the tail
    /// go), entries go to the tail (an overwrite cuts what follows, as the group's tail does),
    /// a truncation raises the mark.
    pub(crate) fn take(&mut self, part: &Decoded) {
        if let Some(s) = &part.snapshot {
            self.snapshot_index = s.index;
            self.files_last = 0;
            self.tail_len = 0;
        }
        if let Some(e0) = part.entries.first() {
            let i = e0.index;
            if self.tail_len > 0 && i >= self.tail_start {
                self.tail_len = i - self.tail_start;
            } else {
                self.tail_start = i;
                self.tail_len = 0;
            }
            self.tail_len += part.entries.len() as u64;
        }
        if let Some(index) = part.truncate {
            self.truncated_below = self.truncated_below.max(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::Entry;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e
    }

    fn part(entries: &[(u64, u64)]) -> Decoded {
        Decoded {
            entries: entries.iter().map(|&(i, t)| entry(i, t)).collect(),
            ..Decoded::default()
        }
    }

    /// What a commit never journals is refused, whatever the numbers (no overflow: a first
    /// index at `u64::MAX` once overflowed the contiguity check); what it does is taken.
    #[test]
    fn a_parts_shape_is_checked_without_overflow() {
        assert!(check_shape(&part(&[(5, 1), (6, 1), (7, 2)])).is_ok());
        for bad in [
            &[(u64::MAX, 1), (5, 1)][..],
            &[(MAX_INDEX + 1, 1)],
            &[(0, 1)],
            &[(5, 1), (7, 1)],
            &[(5, 2), (6, 1)],
            &[(5, 1), (5, 1)],
        ] {
            assert!(check_shape(&part(bad)).is_err(), "{bad:?} taken");
        }
    }

    /// Settled against a snapshot at 10: entries at or below it go, an older install goes.
    #[test]
    fn a_part_settles_against_the_pages_snapshot() {
        let mut p = part(&[(8, 1), (9, 1), (10, 1), (11, 1), (12, 2)]);
        settle(&mut p, 10);
        let left: Vec<u64> = p.entries.iter().map(|e| e.index).collect();
        assert_eq!(left, vec![11, 12]);
        let mut p = part(&[(6, 1), (7, 1)]);
        p.snapshot = Some(crate::proto::SnapshotRecord {
            index: 5,
            term: 1,
            ..Default::default()
        });
        settle(&mut p, 10);
        assert!(p.snapshot.is_none() && p.entries.is_empty());
    }
}
