//! [`Store`]: the `raft::Storage` of one group's `RawNode`: the group's [`GroupStorage`] plus
//! what was handed to the node's writer thread and is not durable yet.
//!
//! Why it exists: raft-rs 0.7's `advance_append_async` drops a Ready's entries and snapshot from
//! raft's unstable log at once (`commit_ready` -> `stable_entries` / `stable_snap`), and from
//! then on raft reads them through `Storage` (`term`, `entries`, `last_index`, `first_index`).
//! Its documentation says so: "it's still required that the updates can be read by raft from the
//! `Storage` trait before calling `advance_append_async`". A `GroupStorage` shows a write only
//! once `Engine::write` has returned, so the staged part of a Ready is kept here, as TiKV keeps
//! its entry cache: staged entries shadow the group's log from their first index on, and a
//! staged snapshot hides everything at or below its index, until the batch that carries them is
//! durable ([`Store::persisted`]).
//!
//! Owns: the staged overlay and the merge of reads over it. Must never: write to the engine (the
//! writer thread does that, with one `Engine::write` for all groups), or answer from the group's
//! log for an index a staged write covers (the writer may be rewriting it at that moment).

use std::collections::VecDeque;

use raft::prelude::{Entry, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use raftwal::GroupStorage;

/// A group's storage as raft sees it: durable log plus staged, not yet durable, writes.
pub struct Store {
    disk: GroupStorage,
    /// A staged snapshot: (index, term, batch sequence number).
    snap: Option<(u64, u64, u64)>,
    /// Staged entries, contiguous, each with the sequence number of the batch that writes it
    /// (non-decreasing from front to back: a later batch only truncates from the back).
    staged: VecDeque<(u64, Entry)>,
}

impl Store {
    pub fn new(disk: GroupStorage) -> Store {
        Store {
            disk,
            snap: None,
            staged: VecDeque::new(),
        }
    }

    /// The group's durable storage.
    pub fn disk(&self) -> &GroupStorage {
        &self.disk
    }

    /// Records what batch `seq` will write for this group: a snapshot (if not empty) and entries
    /// (overwriting any staged suffix they conflict with, as the write will).
    pub fn stage(&mut self, seq: u64, snap: &Snapshot, entries: &[Entry]) {
        let md = snap.get_metadata();
        if md.index > 0 {
            self.snap = Some((md.index, md.term, seq));
            self.staged.clear();
        }
        if let Some(first) = entries.first() {
            while self
                .staged
                .back()
                .is_some_and(|(_, e)| e.index >= first.index)
            {
                self.staged.pop_back();
            }
            self.staged.extend(entries.iter().map(|e| (seq, e.clone())));
        }
    }

    /// Batch `seq` (and every one before it) is durable and visible in the group's storage:
    /// what it staged is dropped.
    pub fn persisted(&mut self, seq: u64) {
        if self.snap.is_some_and(|(_, _, s)| s <= seq) {
            self.snap = None;
        }
        while self.staged.front().is_some_and(|(s, _)| *s <= seq) {
            self.staged.pop_front();
        }
    }

    fn staged_range(&self) -> Option<(u64, u64)> {
        Some((self.staged.front()?.1.index, self.staged.back()?.1.index))
    }
}

impl Storage for Store {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.disk.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        if let Some((index, _, _)) = self.snap {
            if low <= index {
                return Err(raft::Error::Store(StorageError::Compacted));
            }
        }
        let Some((first, last)) = self.staged_range() else {
            if self.snap.is_some() {
                return Err(raft::Error::Store(StorageError::Unavailable));
            }
            return self.disk.entries(low, high, max_size, context);
        };
        if high > last + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::new();
        if low < first {
            let upto = high.min(first);
            out = self.disk.entries(low, upto, max_size, context)?;
            if (out.len() as u64) < upto - low {
                return Ok(out); // cut short by max_size
            }
        }
        if high > first {
            let from = (low.max(first) - first) as usize;
            let to = (high - first) as usize;
            out.extend(self.staged.range(from..to).map(|(_, e)| e.clone()));
            raft::util::limit_size(&mut out, max_size);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if let Some((first, last)) = self.staged_range() {
            if idx >= first {
                return match self.staged.get((idx - first) as usize) {
                    Some((_, e)) if idx <= last => Ok(e.term),
                    _ => Err(raft::Error::Store(StorageError::Unavailable)),
                };
            }
        }
        if let Some((index, term, _)) = self.snap {
            return match idx.cmp(&index) {
                std::cmp::Ordering::Equal => Ok(term),
                std::cmp::Ordering::Less => Err(raft::Error::Store(StorageError::Compacted)),
                std::cmp::Ordering::Greater => Err(raft::Error::Store(StorageError::Unavailable)),
            };
        }
        self.disk.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        match self.snap {
            Some((index, _, _)) => Ok(index + 1),
            None => self.disk.first_index(),
        }
    }

    fn last_index(&self) -> raft::Result<u64> {
        if let Some((_, last)) = self.staged_range() {
            return Ok(last);
        }
        match self.snap {
            Some((index, _, _)) => Ok(index),
            None => self.disk.last_index(),
        }
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<raft::prelude::Snapshot> {
        self.disk.snapshot(request_index, to)
    }
}
