//! `DiskStorage::term` against an independent model of the log's terms.
//!
//! The store answers `term()` from a table of its files' terms as runs (src/store/terms.rs),
//! kept by every save, overwrite, compaction and snapshot install, and built again after open
//! from a few entries read back with their checksums. These tests check every index after every
//! step and after reopening, and that a damaged entry never lends a wrong term to the indexes
//! around it (the table is built by a binary search: one bad read could mislead a whole run).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use raft::prelude::*;
use raft::Storage;
use raftwal::{DiskStorage, Options};

#[path = "common/entries.rs"]
mod entries;
#[path = "common/layout.rs"]
mod layout;

use entries::entry;

/// What the log holds, kept apart from the store: the snapshot and the terms of the indexes
/// after it (`terms[k]` is index `snap.0 + 1 + k`'s).
struct Model {
    snap: (u64, u64),
    terms: Vec<u64>,
    /// The hard state's commit: nothing at or below it is overwritten.
    commit: u64,
}

impl Model {
    fn first(&self) -> u64 {
        self.snap.0 + 1
    }

    fn last(&self) -> u64 {
        self.snap.0 + self.terms.len() as u64
    }

    fn term(&self, index: u64) -> u64 {
        if index == self.snap.0 {
            self.snap.1
        } else {
            self.terms[(index - self.first()) as usize]
        }
    }

    fn last_term(&self) -> u64 {
        self.terms.last().copied().unwrap_or(self.snap.1)
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `n` entries from `from`, starting at term `term` and sometimes rising; returns them.
fn run_of(rng: &mut Rng, from: u64, n: u64, mut term: u64) -> Vec<Entry> {
    (from..from + n)
        .map(|i| {
            if rng.below(64) == 0 {
                term += 1 + rng.below(2);
            }
            entry(i, term)
        })
        .collect()
}

/// Every index the store holds (and the snapshot's) against the model, and the bounds.
fn check(store: &DiskStorage, m: &Model, step: &str) {
    assert_eq!(
        store.first_index().unwrap(),
        m.first(),
        "{step}: first index"
    );
    assert_eq!(store.last_index().unwrap(), m.last(), "{step}: last index");
    for i in m.snap.0..=m.last() {
        assert_eq!(store.term(i).unwrap(), m.term(i), "{step}: term of {i}");
    }
    assert!(store.term(m.last() + 1).is_err(), "{step}: past the end");
}

#[test]
fn term_follows_saves_overwrites_compaction_installs_and_reopen() {
    follow_the_model(Options::default());
}

#[test]
fn term_follows_the_model_in_an_encrypted_store() {
    follow_the_model(Options {
        encryption_key: Some([7; 32]),
        ..Options::default()
    });
}

fn follow_the_model(opts: Options) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = DiskStorage::open_with(dir.path(), opts.clone()).unwrap();
    let mut m = Model {
        snap: (0, 0),
        terms: Vec::new(),
        commit: 0,
    };
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    // Enough entries to cross several 30,000-entry files.
    for step in 0..400 {
        let what = rng.below(20);
        let label;
        if what < 12 || m.terms.is_empty() {
            // An append at the end.
            let n = 1 + rng.below(600);
            let es = run_of(&mut rng, m.last() + 1, n, m.last_term().max(1));
            store
                .save(&HardState::default(), &es, &Snapshot::default())
                .unwrap();
            m.terms.extend(es.iter().map(|e| e.term));
            label = format!("step {step}: append of {n}");
        } else if what < 16 {
            // An overwrite from an index above the commit, at a higher term (a new leader's).
            let lo = m.first().max(m.commit + 1);
            if lo > m.last() {
                continue;
            }
            let from = lo + rng.below(m.last() - lo + 1);
            let n = 1 + rng.below(300);
            let es = run_of(&mut rng, from, n, m.last_term() + 1);
            store
                .save(&HardState::default(), &es, &Snapshot::default())
                .unwrap();
            m.terms.truncate((from - m.first()) as usize);
            m.terms.extend(es.iter().map(|e| e.term));
            label = format!("step {step}: overwrite of {n} from {from}");
        } else if what < 17 {
            // Data dropped below a held index: terms stay.
            let at = m.first() + rng.below(m.terms.len() as u64);
            store.truncate_entries_until(at).unwrap();
            label = format!("step {step}: data dropped below {at}");
        } else if what < 18 {
            // Compaction: a snapshot at a held index drops the files wholly below it.
            let at = m.first() + rng.below(m.terms.len() as u64);
            let t = m.term(at);
            store.create_snapshot(at, None, b"state".to_vec()).unwrap();
            m.terms.drain(..(at + 1 - m.first()) as usize);
            m.snap = (at, t);
            m.commit = m.commit.max(at);
            label = format!("step {step}: snapshot at {at}");
        } else if what < 19 {
            // A snapshot from the leader past the end: the log restarts after it.
            let at = m.last() + 1 + rng.below(40_000);
            let t = m.last_term() + 1;
            let mut snap = Snapshot::default();
            snap.mut_metadata().index = at;
            snap.mut_metadata().term = t;
            snap.mut_metadata().mut_conf_state().voters = vec![1];
            let mut hs = HardState::default();
            hs.term = t;
            hs.commit = at;
            store.save(&hs, &[], &snap).unwrap();
            m.snap = (at, t);
            m.terms.clear();
            m.commit = at;
            label = format!("step {step}: install at {at}");
        } else {
            drop(store);
            store = DiskStorage::open_with(dir.path(), opts.clone()).unwrap();
            label = format!("step {step}: reopen");
        }
        check(&store, &m, &label);
    }
    drop(store);
    let store = DiskStorage::open_with(dir.path(), opts).unwrap();
    check(&store, &m, "the last reopen");
}

/// A store in a new directory holding entries `1..=n`, index `i` at term `term(i)`, closed.
fn written(n: u64, term: impl Fn(u64) -> u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStorage::open(dir.path()).unwrap();
    let es: Vec<Entry> = (1..=n).map(|i| entry(i, term(i))).collect();
    store
        .save(&HardState::default(), &es, &Snapshot::default())
        .unwrap();
    dir
}

/// Overwrites index `index`'s term in the first log file (base 1) with `term`: a plausible
/// value (another run's term), the damage a binary search cannot tell from the truth.
fn damage_term(dir: &Path, index: u64, term: u64) {
    let path = dir.join(layout::log_name(1));
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    let at = layout::slot_of(1, index) + layout::SLOT_TERM_AT;
    f.write_all_at(&term.to_le_bytes(), at).unwrap();
}

#[test]
fn a_damaged_entry_never_lends_a_wrong_term_to_the_others() {
    // Two files: open reads the last one entry by entry (damage there cuts the log) but checks
    // the first, sealed one by its header and its first and last slots only, so damage inside
    // it is met first by the table's build or by a read.
    const N: u64 = layout::SLOTS_PER_FILE + 1_000;
    // Terms rise every 3,000 entries: 11 runs.
    let term = |i: u64| 1 + (i - 1) / 3_000;
    // The indexes the build's binary search reads first (the start, then the middles of the
    // first run's search: 15,501, 7,751, ...), run starts and ends, and some in between.
    let targets = [
        1, 2, 3_000, 3_001, 3_906, 7_751, 15_501, 15_502, 22_000, 29_999, 30_000,
    ];
    let mut answered = 0;
    for target in targets {
        let dir = written(N, term);
        // The first run's term in a later run, a later run's in the first.
        let wrong = if term(target) == 1 { 6 } else { 1 };
        damage_term(dir.path(), target, wrong);
        let store = match DiskStorage::open(dir.path()) {
            Ok(s) => s,
            // Finding the damage at open is allowed too; then there is nothing to answer.
            Err(e) => {
                assert!(
                    matches!(e, raftwal::Error::Corrupt { .. }),
                    "index {target}: {e}"
                );
                continue;
            }
        };
        let last = store.last_index().unwrap();
        assert!(last >= target, "index {target}: the log was cut to {last}");
        for i in (1..=last).filter(|&i| i != target) {
            assert_eq!(
                store.term(i).unwrap(),
                term(i),
                "index {i}, with index {target}'s slot damaged"
            );
        }
        answered += 1;
    }
    // Open may refuse the sealed file's first and last slots, never the ones inside it.
    assert!(answered >= targets.len() - 2, "{answered} targets answered");
}

#[test]
fn damage_below_the_snapshot_never_reaches_the_live_terms() {
    // One file (open reads it entry by entry from the snapshot on; the compacted slots before
    // are not part of the log, never read, never damage), a snapshot inside it.
    let term = |i: u64| 1 + (i - 1) / 1_000;
    let dir = written(10_000, term);
    {
        let store = DiskStorage::open(dir.path()).unwrap();
        store
            .create_snapshot(2_000, None, b"state".to_vec())
            .unwrap();
        assert_eq!(store.num_log_files(), 1);
    }
    // Compacted index 1 gets the term of index 5,001, a later run's: a table built from the
    // files' first slot would take it for the first run's and stretch that run over 2,001-5,000.
    damage_term(dir.path(), 1, term(5_001));
    let store = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(store.first_index().unwrap(), 2_001);
    for i in 2_000..=10_000 {
        assert_eq!(store.term(i).unwrap(), term(i), "index {i}");
    }
}

#[test]
fn after_reopen_term_is_answered_from_the_run_table() {
    // The table is built at the first lookup from a few verified entries. A slot the build never
    // reads (index 1,000: the search for the first run's end reads 1, then 15,501, 7,751,
    // 3,876, 1,938, ...) then does not change the answer, where a lookup reading each index's
    // slot would return the slot's term. What this checks is that the table is built and used.
    const N: u64 = layout::SLOTS_PER_FILE + 1_000;
    let term = |i: u64| 1 + (i - 1) / 3_000;
    let dir = written(N, term);
    damage_term(dir.path(), 1_000, 5);
    let store = DiskStorage::open(dir.path()).unwrap();
    for i in 1..=N {
        assert_eq!(store.term(i).unwrap(), term(i), "index {i}");
    }
}
