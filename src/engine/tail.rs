//! A group's tail: entries a commit has journaled (so they are durable) but not yet written to
//! the group's log files. The commit path only appends here; the engine's writer copies the
//! tail into the files in the background (fewer, larger writes, off the commit path), and
//! before anything that needs the files to hold every entry (a checkpoint, a snapshot,
//! `truncate_entries_until`, an installed snapshot).
//!
//! Owns: the journaled-but-unwritten entries of one group, in two forms: the operations in
//! journal order (what the writer applies to the files, with their record's sequence number)
//! and the log they leave (what reads and checks see past the files). Must never: hold an
//! entry that was not journaled, or drop one that is not yet in the files.

use std::collections::VecDeque;
use std::ops::Range;

use raft::prelude::{Entry, EntryType};

/// One journaled append (or overwrite, from its first index on): part `part` (from 1) of
/// record `seq`'s parts for the group.
pub(crate) struct Op {
    pub seq: u64,
    pub part: u32,
    pub entries: Vec<Entry>,
}

/// The entries of a group that are journaled but not in its files.
#[derive(Default)]
pub(crate) struct Tail {
    ops: VecDeque<Op>,
    /// The log the operations leave past the files: `entries[k]` has index `start + k`. Below
    /// `start`, the files hold the log.
    start: u64,
    entries: VecDeque<Entry>,
    bytes: u64,
}

impl Tail {
    /// No operation is left to write. One the writer has taken may still be on its way into
    /// the files: what reads see is [`Tail::files_hold_all`].
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The files hold the whole log: no entry past them in the view. An operation the writer
    /// has taken stays in the view until [`Tail::written`] notes it in the files, so this is
    /// false while it is being written (when [`Tail::is_empty`] is already true).
    pub(crate) fn files_hold_all(&self) -> bool {
        self.entries.is_empty()
    }

    /// Payload bytes held (data and contexts of the operations).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The first index the tail holds (meaningful when it is not empty).
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// The last index the tail holds, if it holds any.
    pub(crate) fn last(&self) -> Option<u64> {
        (!self.entries.is_empty()).then(|| self.start + self.entries.len() as u64 - 1)
    }

    /// Adds the `entries` of part `part` of journal record `seq` (contiguous, checked against
    /// the log): the operation keeps them, the view a copy of each (a few reference counts, not
    /// the bytes).
    pub(crate) fn push(&mut self, seq: u64, part: u32, mut entries: Vec<Entry>) {
        // Reads see what the files (and a replay) will hand back: an entry's index, term, type,
        // data and context, none of the other fields a caller's `Entry` may carry
        // (`sync_log`, unknown fields), which would also change its `compute_size()` and so
        // where `entries()` cuts at a `max_size`.
        for e in &mut entries {
            e.sync_log = false;
            e.unknown_fields = Default::default();
        }
        let Some(e0) = entries.first() else { return };
        let i = e0.index;
        if !self.entries.is_empty() && i >= self.start {
            self.entries.truncate((i - self.start) as usize);
        } else {
            self.start = i;
            self.entries.clear();
        }
        self.entries.extend(entries.iter().cloned());
        self.bytes += entries
            .iter()
            .map(|e| (e.data.len() + e.context.len()) as u64)
            .sum::<u64>();
        self.ops.push_back(Op { seq, part, entries });
    }

    /// Takes the operations, oldest first, and empties the tail.
    pub(crate) fn take(&mut self) -> VecDeque<Op> {
        self.entries.clear();
        self.bytes = 0;
        std::mem::take(&mut self.ops)
    }

    /// Takes the oldest operation and the ones after it that only append to it, up to about
    /// `max_bytes` of payloads, merged into one (to write them into the files with one write);
    /// the log view keeps their entries until [`Tail::written`] says the files hold them.
    pub(crate) fn pop(&mut self, max_bytes: u64) -> Option<Op> {
        let mut op = self.ops.pop_front()?;
        let size = |es: &[Entry]| {
            es.iter()
                .map(|e| (e.data.len() + e.context.len()) as u64)
                .sum::<u64>()
        };
        let mut taken = size(&op.entries);
        while taken < max_bytes {
            let next_index = op.entries.last().map_or(0, |e| e.index + 1);
            let Some(next) = self.ops.front() else { break };
            if next.entries.first().map(|e| e.index) != Some(next_index) {
                break;
            }
            let Some(next) = self.ops.pop_front() else {
                break;
            };
            taken += size(&next.entries);
            (op.seq, op.part) = (next.seq, next.part);
            op.entries.extend(next.entries);
        }
        self.bytes -= taken;
        Some(op)
    }

    /// The files now hold the log up to `files_last`, with every operation taken so far
    /// applied: the view drops the entries the files hold that no operation left changes.
    pub(crate) fn written(&mut self, files_last: u64) {
        if self.ops.is_empty() {
            self.entries.clear();
            return;
        }
        let keep_from = self
            .ops
            .iter()
            .filter_map(|o| o.entries.first().map(|e| e.index))
            .min()
            .unwrap_or(u64::MAX)
            .min(files_last + 1)
            .max(self.start);
        let drop = ((keep_from - self.start) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.start += drop as u64;
    }

    /// The record and part of the oldest operation.
    pub(crate) fn first_pos(&self) -> Option<(u64, u32)> {
        self.ops.front().map(|o| (o.seq, o.part))
    }

    /// The term of `index`, if the tail holds it.
    #[inline]
    pub(crate) fn term(&self, index: u64) -> Option<u64> {
        let k = index.checked_sub(self.start)?;
        self.entries.get(k as usize).map(|e| e.term)
    }

    /// Entries `[lo, hi)`, all of which the tail holds, appended to `out`.
    pub(crate) fn read(&self, lo: u64, hi: u64, out: &mut Vec<Entry>) {
        let r: Range<usize> = (lo - self.start) as usize..(hi - self.start) as usize;
        out.extend(self.entries.range(r).cloned());
    }

    /// Drops the data of Normal entries below `index` that the tail holds
    /// (`truncate_entries_until`), in both forms.
    pub(crate) fn clear_data_below(&mut self, index: u64) {
        let clear = |e: &mut Entry| {
            if e.index < index && e.get_entry_type() == EntryType::EntryNormal {
                e.data = Default::default();
            }
        };
        self.entries.iter_mut().for_each(clear);
        // The count is of what the operations hold.
        let mut dropped = 0;
        for op in &mut self.ops {
            for e in &mut op.entries {
                let had = e.data.len() as u64;
                clear(e);
                dropped += had - e.data.len() as u64;
            }
        }
        self.bytes -= dropped;
    }
}

#[cfg(test)]
mod tests {
    use super::Tail;
    use raft::prelude::Entry;

    fn entries(lo: u64, hi: u64) -> Vec<Entry> {
        (lo..=hi)
            .map(|i| {
                let mut e = Entry::default();
                (e.index, e.term) = (i, 1);
                e.data = vec![1u8; 100].into();
                e.context = vec![2u8; 10].into();
                e
            })
            .collect()
    }

    /// The tail's count of payload bytes follows what its operations hold: a
    /// `truncate_entries_until` that drops data in the tail lowers it, and a tail whose
    /// operations were all taken holds none. The count once kept the dropped data for ever
    /// (the engine's count of tail bytes with it: checkpoints and writer passes for bytes no
    /// tail held; found by a review).
    #[test]
    fn dropped_data_leaves_the_count_of_tail_bytes() {
        let mut t = Tail::default();
        t.push(1, 1, entries(1, 3));
        t.push(2, 1, entries(4, 5));
        assert_eq!(t.bytes(), 5 * 110);
        t.clear_data_below(3);
        assert_eq!(
            t.bytes(),
            5 * 110 - 2 * 100,
            "entries 1 and 2 keep their contexts"
        );
        while t.pop(u64::MAX).is_some() {}
        assert_eq!(t.bytes(), 0, "every operation taken");
    }
}
