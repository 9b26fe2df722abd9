//! The terms of a log's files as runs, so that `raft::Storage::term` on an index the files hold
//! is answered without a slot read: a random index's slot is a cache and TLB miss in a slot
//! area of megabytes, where a run table is a few cache lines (docs/PERFORMANCE.md, reads).
//! Kept by an engine group (under its log lock, without the files' lock) and by a
//! `DiskStorage`'s `wal`.
//!
//! A log's terms never decrease (`save` and `Engine::write` refuse a batch that would make them,
//! docs/FORMAT.md), so the files' terms are a few runs: `(first index, term)` pairs, each run
//! lasting until the next one starts, the last until the files' last index. The table is
//! extended by every write to the files (with the entries written), cut where an overwrite
//! starts, and emptied by an install. After open it is unknown until the first lookup that
//! needs it builds it from the files (a binary search per run: a few slot reads, never the
//! whole slot area).
//!
//! Owns: the run table. Must never: answer for an index past the files' last index, or keep a
//! run past a point where the files changed without it.

use raft::eraftpb::Entry;

/// The files' terms from some index on (indexes below the table's first run are not covered).
#[derive(Debug, Default, Clone)]
pub(crate) struct TermRuns {
    /// `(first index, term)`, first indexes and terms strictly increasing.
    runs: Vec<(u64, u64)>,
}

impl TermRuns {
    /// The term of `idx`, if a run covers it (the caller checks `idx` against the files' last
    /// index and the snapshot).
    #[inline]
    pub(crate) fn term(&self, idx: u64) -> Option<u64> {
        // Most lookups are of recent entries: the last run first.
        match self.runs.last() {
            Some(&(first, term)) if first <= idx => return Some(term),
            None => return None,
            _ => {}
        }
        let n = self.runs.partition_point(|&(first, _)| first <= idx);
        n.checked_sub(1).map(|k| self.runs[k].1)
    }

    /// The first of `entries` (consecutive) whose term is not the one the table gives its
    /// index, among those the table covers: one search for the first entry's run, then a walk
    /// along the runs.
    pub(crate) fn first_disagreeing<'a>(&self, entries: &'a [Entry]) -> Option<&'a Entry> {
        let first = entries.first()?;
        let mut k = self
            .runs
            .partition_point(|&(start, _)| start <= first.index)
            .checked_sub(1);
        for e in entries {
            while self
                .runs
                .get(k.map_or(0, |k| k + 1))
                .is_some_and(|&(s, _)| s <= e.index)
            {
                k = Some(k.map_or(0, |k| k + 1));
            }
            if k.is_some_and(|k| self.runs[k].1 != e.term) {
                return Some(e);
            }
        }
        None
    }

    /// Notes `entries` (consecutive, terms non-decreasing) written to the files from their first
    /// index on, replacing whatever the table said from there.
    pub(crate) fn written(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        self.cut(first.index);
        for e in entries {
            match self.runs.last() {
                Some(&(_, term)) if term == e.term => {}
                _ => self.runs.push((e.index, e.term)),
            }
        }
    }

    /// Forgets what the table says from `index` on.
    fn cut(&mut self, index: u64) {
        let keep = self.runs.partition_point(|&(first, _)| first < index);
        self.runs.truncate(keep);
    }

    /// Drops the runs wholly below `first` (compacted away), keeping the one that covers it.
    pub(crate) fn compact(&mut self, first: u64) {
        let covering = self.runs.partition_point(|&(start, _)| start <= first);
        if covering > 1 {
            self.runs.drain(..covering - 1);
        }
    }

    /// Builds the table for the files' indexes `[first, last]` from `term_at` (the files' term of
    /// an index, `None` where a slot does not hold it): a binary search for the start of each
    /// run. `None` if a slot could not be read (the caller then reads the files as before).
    ///
    /// Each run first asks for the last index's term: a log most often ends in the run being
    /// searched (a log of one term, and every log's last run), which that one read settles.
    /// It is the slot open read already (the last entry's term), where each probe of a binary
    /// search is a slot page of its own: about log2 of the log's slot pages read one after
    /// another from the device after a restart (docs/PERFORMANCE.md, "The first lookup of a
    /// long log").
    pub(crate) fn build(
        first: u64,
        last: u64,
        term_at: impl Fn(u64) -> Option<u64>,
    ) -> Option<TermRuns> {
        let mut runs = Vec::new();
        let mut start = first;
        // The last index's term, read once, after the first run's start.
        let mut last_term = None;
        while start <= last {
            let term = term_at(start)?;
            runs.push((start, term));
            let end = match last_term {
                Some(t) => t,
                None => *last_term.insert(term_at(last)?),
            };
            if end == term {
                break;
            }
            // The first index after `start` whose term is above `term` (`last`'s is).
            let (mut lo, mut hi) = (start, last);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if term_at(mid)? == term {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            start = hi;
        }
        Some(TermRuns { runs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(first: u64, terms: &[u64]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                let mut e = Entry::default();
                e.index = first + k as u64;
                e.term = t;
                e
            })
            .collect()
    }

    /// Checks the table against the log `terms` (index `first + k` has `terms[k]`).
    fn check(runs: &TermRuns, first: u64, terms: &[u64]) {
        for (k, &t) in terms.iter().enumerate() {
            assert_eq!(
                runs.term(first + k as u64),
                Some(t),
                "index {}",
                first + k as u64
            );
        }
    }

    #[test]
    fn appends_overwrites_and_compaction_keep_every_term() {
        let mut log: Vec<u64> = Vec::new(); // log[i - 1] is index i's term
        let mut runs = TermRuns::default();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut first = 1;
        for _ in 0..2_000 {
            // An append or an overwrite from a random point at or after `first`.
            let from = if log.is_empty() || rnd(3) > 0 {
                log.len() as u64 + 1
            } else {
                first + rnd(log.len() as u64 + 1 - first)
            };
            let mut term = if from > 1 { log[from as usize - 2] } else { 1 };
            let n = 1 + rnd(20);
            let mut terms = Vec::new();
            for _ in 0..n {
                if rnd(8) == 0 {
                    term += 1 + rnd(2);
                }
                terms.push(term);
            }
            log.truncate(from as usize - 1);
            log.extend(&terms);
            runs.written(&entries(from, &terms));
            if rnd(10) == 0 {
                first = (first + rnd(10)).min(log.len() as u64);
                runs.compact(first);
            }
            check(&runs, first, &log[first as usize - 1..]);
            let built = TermRuns::build(first, log.len() as u64, |i| {
                log.get(i as usize - 1).copied()
            })
            .expect("build");
            check(&built, first, &log[first as usize - 1..]);
            assert!(built.runs.len() <= runs.runs.len());
        }
    }

    /// The build reads the last index's term first for each run: a log of one term is built
    /// from two reads (its first and last indexes), not a binary search's log2 of them; a
    /// log of a few runs reads about a search per run boundary, and each build agrees with
    /// the log.
    #[test]
    fn a_log_of_one_term_is_built_from_its_ends() {
        use std::cell::RefCell;
        let read = RefCell::new(Vec::new());
        let built = TermRuns::build(7, 30_006, |i| {
            read.borrow_mut().push(i);
            Some(3)
        })
        .unwrap();
        assert_eq!(built.runs, vec![(7, 3)]);
        assert_eq!(read.into_inner(), vec![7, 30_006]);

        // Three runs over 30,000 indexes: 1..=100 term 1, 101..=29,000 term 2, then term 5.
        let term = |i: u64| match i {
            ..=100 => 1,
            101..=29_000 => 2,
            _ => 5,
        };
        let reads = RefCell::new(0u32);
        let built = TermRuns::build(1, 30_000, |i| {
            *reads.borrow_mut() += 1;
            Some(term(i))
        })
        .unwrap();
        assert_eq!(built.runs, vec![(1, 1), (101, 2), (29_001, 5)]);
        // Two binary searches over at most 30,000 indexes (15 probes each), and the ends.
        assert!(reads.into_inner() <= 2 * 15 + 6);
    }

    #[test]
    fn an_unreadable_slot_fails_the_build() {
        assert!(TermRuns::build(1, 100, |i| (i != 1).then_some(1)).is_none());
        assert!(TermRuns::build(1, 100, |i| (i != 100).then_some(1)).is_none());
        assert!(TermRuns::build(5, 4, |_| None).is_some_and(|r| r.term(5).is_none()));
    }

    /// `first_disagreeing` against a lookup per entry: the first entry whose term is not its
    /// run's, across run boundaries, and nothing for entries before the first run.
    #[test]
    fn the_first_entry_off_its_run_is_found() {
        let mut runs = TermRuns::default();
        runs.written(&entries(5, &[1, 1, 2, 2, 2, 4, 4]));
        assert!(runs
            .first_disagreeing(&entries(5, &[1, 1, 2, 2, 2, 4, 4]))
            .is_none());
        assert!(runs.first_disagreeing(&entries(7, &[2, 2, 2, 4])).is_none());
        assert!(runs
            .first_disagreeing(&entries(1, &[9, 9, 9, 9, 1]))
            .is_none());
        for (at, bad) in [(5u64, 2u64), (6, 0), (7, 1), (9, 3), (11, 5)] {
            let mut terms = vec![1, 1, 2, 2, 2, 4, 4];
            terms[(at - 5) as usize] = bad;
            let got = runs.first_disagreeing(&entries(5, &terms)).map(|e| e.index);
            assert_eq!(got, Some(at), "term {bad} at {at}");
            let tail = &entries(5, &terms)[(at - 5) as usize..];
            assert_eq!(runs.first_disagreeing(tail).map(|e| e.index), Some(at));
        }
    }
}
