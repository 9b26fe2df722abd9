//! Fuzz target logic `ops_model`: a sequence of operations decoded from the input bytes is run on
//! a `DiskStorage` (`sync_writes: false`, or `true` when the input says so) and on an in-memory
//! reference model of docs/DESIGN.md §4 (§6 for
//! bad input); after every operation the outcome (Ok / error kind) and everything observable are
//! compared: first/last index, terms, entries (also with a size limit), initial state, snapshot,
//! the meta integers.
//!
//! This is the project's only reference model. The fuzz target, the corpus replay
//! (`tests/fuzz_corpus.rs`) and the proptest model test (`tests/model.rs`) all include it with
//! `#[path]`; the `pub(crate)` items (the operations, [`run_case`], [`Harness`], the builders,
//! [`Model`], [`check_state`]) are what `tests/model.rs` uses to generate operations with proptest
//! and to run fixed sequences.
//!
//! Input layout (every read past the end yields zeroes):
//! ```text
//! byte 0        bits 0-2 = 7: write 28,000..31,000 entries first (crosses the first 30,000-entry
//!               file boundary soon after), otherwise start empty; bit 3: `sync_writes: true`
//!               (every call flushes; the model is the same); bit 4: the store is encrypted
//!               (`encryption_key` set; the model is the same)
//! then ops      one opcode byte and its arguments each, until the input ends (at most 64 ops)
//! ```
//! Entry counts are small (0..16) except for a rare "big" count (2,000..31,000, at most two per
//! input and 70,000 entries in all), so inputs run fast and a few still rotate files.

use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;
use raft::prelude::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{Storage, StorageError};
use raftwal::{DiskStorage, GroupStorage, MetaInfo, Options, RecoveryMode};

use super::entries::ctx;
use super::util::{scratch_dir, splitmix, Reader};

/// Most ops decoded from one input.
const MAX_OPS: usize = 64;
/// Most entries written by one input (prefill included).
const MAX_ENTRIES: usize = 70_000;
/// Most "big" batches per input.
const MAX_BIG: usize = 2;
/// Above this many live entries, the per-op check samples ranges instead of reading everything.
const FULL_CHECK_MAX: usize = 1_500;

// =============================================================================================
// Entry / snapshot builders
// =============================================================================================

/// Deterministic entry: small payload derived from (index, seed); some carry a context, some are
/// conf changes (so `truncate_entries_until` has entries to leave alone); `big` payloads are
/// up to 2 KiB.
pub(crate) fn make_entry(index: u64, term: u64, seed: u8, big: bool) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    let s = u64::from(seed);
    let len = if big {
        (splitmix(index ^ s) % 2048) as usize
    } else {
        ((index ^ s.wrapping_mul(0x9E37)) % 11) as usize
    };
    let data: Vec<u8> = (0..len)
        .map(|k| (index as u8).wrapping_add(k as u8).wrapping_mul(seed | 1))
        .collect();
    e.data = Bytes::from(data);
    if (index + s).is_multiple_of(4) {
        e.context = Bytes::from(vec![seed, index as u8, (index >> 8) as u8]);
    }
    if seed.is_multiple_of(3) && index.is_multiple_of(17) {
        e.set_entry_type(EntryType::EntryConfChange);
    } else if seed % 3 == 1 && index.is_multiple_of(29) {
        e.set_entry_type(EntryType::EntryConfChangeV2);
    }
    e
}

/// `count` entries from `start`; seeds `15, 31, ...` (`seed % 16 == 15`) give payloads of up to
/// 2 KiB when the batch has at most 64 entries.
pub(crate) fn make_entries(start: u64, count: usize, term: u64, seed: u8) -> Vec<Entry> {
    let big = seed % 16 == 15 && count <= 64;
    (0..count as u64)
        .map(|k| make_entry(start + k, term, seed, big))
        .collect()
}

pub(crate) fn snap_data(len: usize, seed: u64) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|k| (k as u64).wrapping_mul(31).wrapping_add(seed) as u8)
            .collect::<Vec<u8>>(),
    )
}

pub(crate) fn make_snapshot(index: u64, term: u64, cs: ConfState, data: Bytes) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().set_conf_state(cs);
    s.data = data;
    s
}

/// `auto_leave` is kept only with outgoing voters (a joint configuration).
pub(crate) fn conf_state(
    voters: &[u64],
    learners: &[u64],
    outgoing: &[u64],
    auto_leave: bool,
) -> ConfState {
    let mut cs = ConfState::default();
    cs.voters = voters.to_vec();
    cs.learners = learners.to_vec();
    cs.voters_outgoing = outgoing.to_vec();
    cs.auto_leave = auto_leave && !outgoing.is_empty();
    cs
}

pub(crate) fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    let mut hs = HardState::default();
    hs.term = term;
    hs.vote = vote;
    hs.commit = commit;
    hs
}

fn ids(mask: u8, base: u64) -> Vec<u64> {
    (0..8u64)
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| base + b)
        .collect()
}

// =============================================================================================
// Concrete actions and expected outcomes
// =============================================================================================

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ErrKind {
    /// Any error (the spec only says "an error").
    Any,
    Unavailable,
    SnapshotOutOfDate,
}

pub(crate) type Outcome = Result<(), ErrKind>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReopenHow {
    /// sync + close, open again.
    Close,
    /// drop (which must do what close does), open again.
    Drop,
    /// close, open again with `RecoveryMode::AbsoluteConsistency` (a clean close leaves no damage).
    Strict,
}

/// A concrete operation (exact indexes and entries), run on both the engine and the model.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    Save {
        hs: HardState,
        entries: Vec<Entry>,
        snap: Snapshot,
    },
    CreateSnapshot {
        index: u64,
        cs: Option<ConfState>,
        data: Bytes,
    },
    InstallSnapshotFrom {
        md: SnapshotMetadata,
        data: Bytes,
    },
    SetConfState(ConfState),
    Truncate(u64),
    SetUint(MetaInfo, u64),
    Sync,
    Reopen(ReopenHow),
}

impl Action {
    fn summary(&self) -> String {
        match self {
            Action::Save { hs, entries, snap } => {
                let mut s = String::from("save(");
                if *hs != HardState::default() {
                    let _ = write!(s, "hs=(t{} v{} c{}) ", hs.term, hs.vote, hs.commit);
                }
                if !entries.is_empty() {
                    let idx: Vec<u64> = if entries.len() <= 6 {
                        entries.iter().map(|e| e.index).collect()
                    } else {
                        vec![entries[0].index, entries[entries.len() - 1].index]
                    };
                    let _ = write!(
                        s,
                        "{} entries idx {:?} terms {}..{} ",
                        entries.len(),
                        idx,
                        entries[0].term,
                        entries[entries.len() - 1].term
                    );
                }
                let m = snap.get_metadata();
                if m.index > 0 || !snap.data.is_empty() {
                    let _ = write!(
                        s,
                        "snap=(i{} t{} {}B cs{:?}) ",
                        m.index,
                        m.term,
                        snap.data.len(),
                        m.get_conf_state().voters
                    );
                }
                s.push(')');
                s
            }
            Action::CreateSnapshot { index, cs, data } => format!(
                "create_snapshot({index}, {:?}, {}B)",
                cs.as_ref().map(|c| c.voters.clone()),
                data.len()
            ),
            Action::InstallSnapshotFrom { md, data } => format!(
                "install_snapshot_from(i{} t{} cs{:?}, {}B)",
                md.index,
                md.term,
                md.get_conf_state().voters,
                data.len()
            ),
            Action::SetConfState(cs) => format!("set_conf_state(voters {:?})", cs.voters),
            Action::Truncate(i) => format!("truncate_entries_until({i})"),
            Action::SetUint(k, v) => format!("set_uint({k:?}, {v})"),
            Action::Sync => "sync()".to_string(),
            Action::Reopen(how) => format!("reopen({how:?})"),
        }
    }
}

// =============================================================================================
// Reference model (docs/DESIGN.md §4)
// =============================================================================================

#[derive(Clone, Debug, Default)]
pub(crate) struct Model {
    snap_index: u64,
    snap_term: u64,
    snap_data: Bytes,
    snap_cs: ConfState,
    /// `entries[k].index == snap_index + 1 + k`.
    entries: Vec<Entry>,
    /// Parallel to `entries`: the entry's data was cleared by `truncate_entries_until` (its
    /// context may read back either unchanged or empty: the spec only talks about `data`).
    truncated: Vec<bool>,
    hs: HardState,
    cs: ConfState,
    raft_id: u64,
    group_id: u64,
    checkpoint: u64,
}

impl Model {
    /// A fresh group of an engine: `create_group(group_id, raft_id)` sets both integers.
    pub(crate) fn for_group(raft_id: u64, group_id: u64) -> Model {
        Model {
            raft_id,
            group_id,
            ..Model::default()
        }
    }

    pub(crate) fn first(&self) -> u64 {
        self.snap_index + 1
    }

    pub(crate) fn last(&self) -> u64 {
        self.snap_index + self.entries.len() as u64
    }

    /// Term of `i` for `snap_index <= i <= last`.
    fn term_at(&self, i: u64) -> u64 {
        if i == self.snap_index {
            self.snap_term
        } else {
            self.entries[(i - self.first()) as usize].term
        }
    }

    fn last_term(&self) -> u64 {
        self.term_at(self.last())
    }

    fn install(&mut self, md: &SnapshotMetadata, data: &Bytes) {
        self.snap_index = md.index;
        self.snap_term = md.term;
        self.snap_data = data.clone();
        self.snap_cs = md.get_conf_state().clone();
        self.cs = md.get_conf_state().clone();
        self.entries.clear();
        self.truncated.clear();
    }

    pub(crate) fn apply(&mut self, a: &Action) -> Outcome {
        match a {
            Action::Save { hs, entries, snap } => self.save(hs, entries, snap),
            Action::CreateSnapshot { index, cs, data } => {
                let i = *index;
                if i < self.first() {
                    return Err(ErrKind::SnapshotOutOfDate);
                }
                if i > self.last() {
                    return Err(ErrKind::Unavailable);
                }
                let term = self.term_at(i);
                let drop_n = (i - self.snap_index) as usize;
                self.entries.drain(..drop_n);
                self.truncated.drain(..drop_n);
                self.snap_index = i;
                self.snap_term = term;
                self.snap_data = data.clone();
                self.snap_cs = cs.clone().unwrap_or_else(|| self.cs.clone());
                Ok(())
            }
            Action::InstallSnapshotFrom { md, data } => {
                if md.index == 0 {
                    return Err(ErrKind::Any);
                }
                if md.index <= self.snap_index {
                    return Err(ErrKind::SnapshotOutOfDate);
                }
                if self.hs.commit > md.index {
                    return Err(ErrKind::Any);
                }
                self.install(md, data);
                Ok(())
            }
            Action::SetConfState(cs) => {
                self.cs = cs.clone();
                Ok(())
            }
            Action::Truncate(i) => {
                let first = self.first();
                for (k, e) in self.entries.iter_mut().enumerate() {
                    if first + k as u64 >= *i {
                        break;
                    }
                    if e.get_entry_type() == EntryType::EntryNormal {
                        e.data = Bytes::new();
                        self.truncated[k] = true;
                    }
                }
                Ok(())
            }
            Action::SetUint(k, v) => {
                match k {
                    MetaInfo::RaftId => self.raft_id = *v,
                    MetaInfo::GroupId => self.group_id = *v,
                    MetaInfo::CheckpointIndex => self.checkpoint = *v,
                    // set by snapshots only: setting them is ignored
                    MetaInfo::SnapshotIndex | MetaInfo::SnapshotTerm => {}
                }
                Ok(())
            }
            Action::Sync | Action::Reopen(_) => Ok(()),
        }
    }

    pub(crate) fn save(&mut self, hs: &HardState, entries: &[Entry], snap: &Snapshot) -> Outcome {
        // Work on a copy: any error leaves the model exactly as it was.
        let mut m = self.clone();
        let meta = snap.get_metadata();
        if meta.index > 0 {
            if meta.index <= m.snap_index {
                return Err(ErrKind::SnapshotOutOfDate);
            }
            m.install(meta, &snap.data);
        }
        if !entries.is_empty() {
            if entries.windows(2).any(|w| w[1].index != w[0].index + 1) {
                return Err(ErrKind::Any);
            }
            let start = entries[0].index;
            if start < m.first() || start > m.last() + 1 {
                return Err(ErrKind::Any);
            }
            // Committed entries are never overwritten (raft-rs never asks): an overwrite that
            // starts at or below the stored commit index is refused, whatever the new hard state.
            if start <= m.last() && start <= self.hs.commit {
                return Err(ErrKind::Any);
            }
            // Terms never decrease, from the term of the entry (or snapshot) the batch follows.
            let mut prev = m.term_at(start - 1);
            for e in entries {
                if e.term < prev {
                    return Err(ErrKind::Any);
                }
                prev = e.term;
            }
            let keep = (start - m.first()) as usize;
            m.entries.truncate(keep);
            m.truncated.truncate(keep);
            m.entries.extend_from_slice(entries);
            m.truncated.resize(m.entries.len(), false);
        }
        if *hs != HardState::default() {
            m.hs = hs.clone();
        }
        // A durable commit index never points past the log: such a save is refused.
        if m.hs.commit > m.last() {
            return Err(ErrKind::Any);
        }
        *self = m;
        Ok(())
    }
}

// =============================================================================================
// Comparing the engine with the model
// =============================================================================================

/// What [`check_state`] reads: `raft::Storage` and the inherent counters of `DiskStorage`, which
/// a `GroupStorage` of an `Engine` has with the same meaning (tests/engine_model.rs compares each
/// group of an engine with its own model).
pub(crate) trait Store: Storage {
    fn num_entries(&self) -> usize;
    fn uint(&self, key: MetaInfo) -> u64;
    fn checkpoint(&self) -> Result<u64, raftwal::Error>;
}

impl Store for DiskStorage {
    fn num_entries(&self) -> usize {
        DiskStorage::num_entries(self)
    }
    fn uint(&self, key: MetaInfo) -> u64 {
        DiskStorage::uint(self, key)
    }
    fn checkpoint(&self) -> Result<u64, raftwal::Error> {
        DiskStorage::checkpoint(self)
    }
}

impl Store for GroupStorage {
    fn num_entries(&self) -> usize {
        GroupStorage::num_entries(self)
    }
    fn uint(&self, key: MetaInfo) -> u64 {
        GroupStorage::uint(self, key)
    }
    fn checkpoint(&self) -> Result<u64, raftwal::Error> {
        GroupStorage::checkpoint(self)
    }
}

/// The `StorageError` kind of an error, `Other(...)` for anything else.
pub(crate) fn kind_of(e: &raft::Error) -> String {
    match e {
        raft::Error::Store(StorageError::Compacted) => "Compacted".into(),
        raft::Error::Store(StorageError::Unavailable) => "Unavailable".into(),
        raft::Error::Store(StorageError::SnapshotOutOfDate) => "SnapshotOutOfDate".into(),
        raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable) => {
            "SnapshotTemporarilyUnavailable".into()
        }
        other => format!("Other({other})"),
    }
}

pub(crate) fn outcome_matches(want: &Outcome, got: &Result<(), raft::Error>) -> bool {
    matches!(
        (want, got),
        (Ok(()), Ok(()))
            | (Err(ErrKind::Any), Err(_))
            | (
                Err(ErrKind::Unavailable),
                Err(raft::Error::Store(StorageError::Unavailable))
            )
            | (
                Err(ErrKind::SnapshotOutOfDate),
                Err(raft::Error::Store(StorageError::SnapshotOutOfDate))
            )
    )
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

fn is_store_err<T>(r: &raft::Result<T>, want: &str) -> bool {
    match r {
        Err(e) => kind_of(e) == want,
        Ok(_) => false,
    }
}

fn describe<T: std::fmt::Debug>(r: &raft::Result<T>) -> String {
    match r {
        Ok(v) => {
            let s = format!("Ok({v:?})");
            if s.len() > 300 {
                format!("{}...", &s[..300])
            } else {
                s
            }
        }
        Err(e) => format!("Err({})", kind_of(e)),
    }
}

fn entry_matches(got: &Entry, want: &Entry, truncated: bool) -> bool {
    got.index == want.index
        && got.term == want.term
        && got.get_entry_type() == want.get_entry_type()
        && got.data == want.data
        && (got.context == want.context || (truncated && got.context.is_empty()))
}

/// Reads `[lo, hi)` and compares it with the model.
fn check_range<S: Store>(s: &S, m: &Model, lo: u64, hi: u64) -> Result<Vec<Entry>, String> {
    let first = m.first();
    let got = match s.entries(lo, hi, None, ctx()) {
        Ok(v) => v,
        Err(e) => return Err(format!("entries({lo}, {hi}): Err({})", kind_of(&e))),
    };
    ensure!(
        got.len() as u64 == hi - lo,
        "entries({lo}, {hi}): got {} entries, want {}",
        got.len(),
        hi - lo
    );
    for (k, g) in got.iter().enumerate() {
        let at = (lo - first) as usize + k;
        let w = &m.entries[at];
        ensure!(
            entry_matches(g, w, m.truncated[at]),
            "entries({lo}, {hi}): entry #{k} differs:\n got  {g:?}\n want {w:?} (truncated: {})",
            m.truncated[at]
        );
    }
    Ok(got)
}

/// Compares everything observable. With `full`, every entry and term is read; otherwise (large
/// logs) the head, the tail and a pseudo-random window.
pub(crate) fn check_state<S: Store>(s: &S, m: &Model, salt: u64, full: bool) -> Result<(), String> {
    let first = m.first();
    let last = m.last();
    let n = m.entries.len() as u64;

    let fi = s.first_index();
    ensure!(
        fi.as_ref().ok() == Some(&first),
        "first_index: got {}, want {first}",
        describe(&fi)
    );
    let li = s.last_index();
    ensure!(
        li.as_ref().ok() == Some(&last),
        "last_index: got {}, want {last}",
        describe(&li)
    );

    // the ranges to read: everything, or head / tail / a window
    let full = full || n as usize <= FULL_CHECK_MAX;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    if full {
        if n > 0 {
            ranges.push((first, last + 1));
        }
    } else {
        ranges.push((first, first + 300));
        ranges.push((last + 1 - 300, last + 1));
        let lo = first + splitmix(salt) % (n - 300);
        ranges.push((lo, lo + 300));
    }

    // terms: the snapshot index, the ranges, a stride through the rest; below / above
    let t = s.term(m.snap_index);
    ensure!(
        t.as_ref().ok() == Some(&m.snap_term),
        "term({}) (the snapshot index): got {}, want Ok({})",
        m.snap_index,
        describe(&t),
        m.snap_term
    );
    let (stride, windows) = if full {
        (1, &[][..])
    } else {
        (97, &ranges[..])
    };
    let strided = (first..=last).step_by(stride);
    let in_windows = windows.iter().flat_map(|&(lo, hi)| lo..hi);
    for i in strided.chain(in_windows) {
        let t = s.term(i);
        let want = m.term_at(i);
        ensure!(
            t.as_ref().ok() == Some(&want),
            "term({i}): got {}, want Ok({want})",
            describe(&t)
        );
    }
    if m.snap_index > 0 {
        let t = s.term(m.snap_index - 1);
        ensure!(
            is_store_err(&t, "Compacted"),
            "term({}) below the snapshot: got {}, want Compacted",
            m.snap_index - 1,
            describe(&t)
        );
    }
    if m.snap_index > 1 {
        let t = s.term(0);
        ensure!(
            is_store_err(&t, "Compacted"),
            "term(0) below the snapshot at {}: got {}, want Compacted",
            m.snap_index,
            describe(&t)
        );
    }
    let t = s.term(last + 1);
    ensure!(
        is_store_err(&t, "Unavailable"),
        "term({}) past last_index: got {}, want Unavailable",
        last + 1,
        describe(&t)
    );

    // entries
    let mut first_range: Vec<Entry> = Vec::new();
    for (k, &(lo, hi)) in ranges.iter().enumerate() {
        let got = check_range(s, m, lo, hi)?;
        if k == 0 {
            first_range = got;
        }
    }
    // At the snapshot index (0 on a store that never had one: raft-rs's dummy entry).
    let r = s.entries(m.snap_index, last + 1, None, ctx());
    ensure!(
        is_store_err(&r, "Compacted"),
        "entries({}, {}) starting at the snapshot index: got {}, want Compacted",
        m.snap_index,
        last + 1,
        describe(&r.map(|v| v.len()))
    );
    let r = s.entries(first, last + 2, None, ctx());
    ensure!(
        is_store_err(&r, "Unavailable"),
        "entries({first}, {}) past last_index+1: got {}, want Unavailable",
        last + 2,
        describe(&r.map(|v| v.len()))
    );
    let r = s.entries(last + 1, last + 1, None, ctx());
    ensure!(
        matches!(&r, Ok(v) if v.is_empty()),
        "entries({0}, {0}): got {1}, want Ok([])",
        last + 1,
        describe(&r.map(|v| v.len()))
    );
    // a sub-range of the first range with a size limit: the longest prefix that fits, >= 1
    if !first_range.is_empty() {
        let (lo0, _) = ranges[0];
        let len = first_range.len() as u64;
        let h = splitmix(salt ^ last.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let lo = lo0 + h % len;
        let hi = lo + 1 + splitmix(h) % (lo0 + len - lo);
        let max_size = match splitmix(h ^ 7) % 4 {
            0 => 0,
            1 => splitmix(h ^ 11) % 64,
            2 => splitmix(h ^ 13) % 4096,
            _ => u64::MAX,
        };
        let got = s.entries(lo, hi, Some(max_size), ctx());
        let mut want: Vec<Entry> = first_range[(lo - lo0) as usize..(hi - lo0) as usize].to_vec();
        raft::util::limit_size(&mut want, Some(max_size));
        ensure!(
            got.as_ref().ok() == Some(&want),
            "entries({lo}, {hi}, max_size {max_size}): got {}, want {} entries",
            describe(&got.map(|v| v.len())),
            want.len()
        );
    }

    // initial state
    // The commit reported is at least the snapshot's index (its entries are committed).
    let mut want_hs = m.hs.clone();
    want_hs.commit = want_hs.commit.max(m.snap_index);
    match s.initial_state() {
        Ok(st) => {
            ensure!(
                st.hard_state == want_hs,
                "initial_state().hard_state: got {:?}, want {:?}",
                st.hard_state,
                want_hs
            );
            ensure!(
                st.conf_state == m.cs,
                "initial_state().conf_state: got {:?}, want {:?}",
                st.conf_state,
                m.cs
            );
        }
        Err(e) => return Err(format!("initial_state(): Err({})", kind_of(&e))),
    }

    // snapshot
    if m.snap_index > 0 {
        for req in [0, m.snap_index] {
            match s.snapshot(req, 0) {
                Ok(sn) => {
                    let md = sn.get_metadata();
                    ensure!(
                        md.index == m.snap_index && md.term == m.snap_term,
                        "snapshot({req}): got index {} term {}, want index {} term {}",
                        md.index,
                        md.term,
                        m.snap_index,
                        m.snap_term
                    );
                    ensure!(
                        *md.get_conf_state() == m.snap_cs,
                        "snapshot({req}).conf_state: got {:?}, want {:?}",
                        md.get_conf_state(),
                        m.snap_cs
                    );
                    ensure!(
                        sn.data == m.snap_data,
                        "snapshot({req}).data: got {} bytes, want {} bytes (equal: false)",
                        sn.data.len(),
                        m.snap_data.len()
                    );
                }
                Err(e) => return Err(format!("snapshot({req}, 0): Err({})", kind_of(&e))),
            }
        }
    }
    if m.snap_index == 0 {
        // raft-rs asks for `snapshot(0, _)`; without a snapshot it must not get an empty one.
        let sn = s.snapshot(0, 0);
        ensure!(
            is_store_err(&sn, "SnapshotTemporarilyUnavailable"),
            "snapshot(0, 0) without a snapshot: got {}, want SnapshotTemporarilyUnavailable",
            describe(&sn.map(|x| x.get_metadata().index))
        );
    }
    let sn = s.snapshot(m.snap_index + 1, 0);
    ensure!(
        is_store_err(&sn, "SnapshotTemporarilyUnavailable"),
        "snapshot({}, 0) above the stored snapshot: got {}, want SnapshotTemporarilyUnavailable",
        m.snap_index + 1,
        describe(&sn.map(|x| x.get_metadata().index))
    );

    // counters and meta integers
    ensure!(
        s.num_entries() as u64 == n,
        "num_entries(): got {}, want {n}",
        s.num_entries()
    );
    for (key, want) in [
        (MetaInfo::SnapshotIndex, m.snap_index),
        (MetaInfo::SnapshotTerm, m.snap_term),
        (MetaInfo::RaftId, m.raft_id),
        (MetaInfo::GroupId, m.group_id),
        (MetaInfo::CheckpointIndex, m.checkpoint),
    ] {
        let got = s.uint(key);
        ensure!(got == want, "uint({key:?}): got {got}, want {want}");
    }
    let cp = s.checkpoint();
    ensure!(
        matches!(cp, Ok(v) if v == m.checkpoint),
        "checkpoint(): got {cp:?}, want Ok({})",
        m.checkpoint
    );
    Ok(())
}

// =============================================================================================
// Harness: runs concrete actions on engine + model
// =============================================================================================

pub(crate) fn opts(mode: RecoveryMode, key: Option<[u8; 32]>, sync: bool) -> Options {
    Options {
        sync_writes: sync,
        recovery_mode: mode,
        encryption_key: key,
        ..Options::default()
    }
}

/// A `DiskStorage` in a scratch directory and the model, kept in step by [`Harness::run`].
pub(crate) struct Harness {
    dir: tempfile::TempDir,
    key: Option<[u8; 32]>,
    sync: bool,
    store: Option<DiskStorage>,
    model: Model,
    history: Vec<String>,
    step: u64,
    stats: Stats,
}

impl Harness {
    /// A fresh store (encrypted with `key`, if any; flushing every call with `sync`) and an
    /// empty model.
    pub(crate) fn new(key: Option<[u8; 32]>, sync: bool) -> Result<Harness, String> {
        let dir = scratch_dir("raftwal-fuzz-ops");
        let store = DiskStorage::open_with(
            dir.path(),
            opts(RecoveryMode::TolerateTailCorruption, key, sync),
        )
        .map_err(|e| format!("open a fresh directory: {e}"))?;
        Ok(Harness {
            dir,
            key,
            sync,
            store: Some(store),
            model: Model::default(),
            history: Vec::new(),
            step: 0,
            stats: Stats::default(),
        })
    }

    fn store(&self) -> Result<&DiskStorage, String> {
        self.store
            .as_ref()
            .ok_or_else(|| "no store (a reopen failed)".to_string())
    }

    fn fail(&self, msg: String) -> String {
        let n = self.history.len();
        let from = n.saturating_sub(30);
        let mut out = format!("{msg}\nafter actions (last {} of {n}):\n", n - from);
        for (k, h) in self.history.iter().enumerate().skip(from) {
            let _ = writeln!(out, "  #{k}: {h}");
        }
        out
    }

    fn reopen(&mut self, how: ReopenHow, path: &Path) -> Result<(), String> {
        let s = self.store.take().ok_or("no store to reopen")?;
        let mode = match how {
            ReopenHow::Drop => {
                drop(s);
                RecoveryMode::TolerateTailCorruption
            }
            ReopenHow::Close => {
                s.close().map_err(|e| format!("close(): {e}"))?;
                RecoveryMode::TolerateTailCorruption
            }
            ReopenHow::Strict => {
                s.close().map_err(|e| format!("close(): {e}"))?;
                RecoveryMode::AbsoluteConsistency
            }
        };
        let s = DiskStorage::open_with(path, opts(mode, self.key, self.sync))
            .map_err(|e| format!("reopen: {e}"))?;
        self.store = Some(s);
        Ok(())
    }

    /// Runs one action on both sides, compares the outcome, then the whole state (every entry
    /// and term with `full`, else sampled above `FULL_CHECK_MAX` live entries). `Err` describes
    /// the divergence, with the last actions.
    pub(crate) fn run(&mut self, a: &Action, full: bool) -> Result<(), String> {
        self.history.push(a.summary());
        self.step += 1;
        let want = self.model.apply(a);
        let got: Result<(), raft::Error> = match a {
            Action::Save { hs, entries, snap } => self.store()?.save(hs, entries, snap),
            Action::CreateSnapshot { index, cs, data } => {
                self.store()?
                    .create_snapshot(*index, cs.as_ref(), data.clone())
            }
            Action::InstallSnapshotFrom { md, data } => {
                self.store()?.install_snapshot_from(md, &data[..])
            }
            Action::SetConfState(cs) => self.store()?.set_conf_state(cs),
            Action::Truncate(i) => self.store()?.truncate_entries_until(*i),
            Action::SetUint(k, v) => {
                self.store()?.set_uint(*k, *v);
                Ok(())
            }
            Action::Sync => self.store()?.sync(),
            Action::Reopen(how) => {
                let path = self.dir.path().to_path_buf();
                if let Err(e) = self.reopen(*how, &path) {
                    return Err(self.fail(e));
                }
                Ok(())
            }
        }
        .map_err(raft::Error::from);
        if !outcome_matches(&want, &got) {
            return Err(self.fail(format!(
                "outcome of the last action: engine returned {}, model expects {want:?}",
                match &got {
                    Ok(()) => "Ok(())".to_string(),
                    Err(e) => format!("Err({}: {e})", kind_of(e)),
                }
            )));
        }
        let salt = self.step;
        check_state(self.store()?, &self.model, salt, full).map_err(|e| self.fail(e))?;
        self.stats.actions += 1;
        self.stats.max_last = self.stats.max_last.max(self.model.last());
        self.stats.max_files = self.stats.max_files.max(self.store()?.num_log_files());
        Ok(())
    }

    /// What is on disk is what the model says: closes, reopens with
    /// `RecoveryMode::AbsoluteConsistency` and compares everything (with `full`, or for logs of
    /// at most 5,000 entries; sampled otherwise, to keep the debug-mode replay fast), then
    /// closes. Returns the statistics of the actions run before.
    pub(crate) fn finish(mut self, full: bool) -> Result<Stats, String> {
        let stats = self.stats;
        let full = full || self.model.entries.len() <= 5_000;
        self.run(&Action::Reopen(ReopenHow::Strict), full)?;
        let s = self.store.take().ok_or("no store at the end")?;
        s.close()
            .map_err(|e| self.fail(format!("final close(): {e}")))?;
        Ok(stats)
    }
}

// =============================================================================================
// Decoding operations from the input and resolving them against the model
// =============================================================================================

/// Where an append starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pos {
    /// `last_index() + 1`.
    End,
    /// `last_index() + 1 - k`, not below the commit index: overwrite a short suffix.
    FromEnd(u32),
    /// Anywhere in `[max(first, commit + 1), last + 1]`.
    Anywhere(u32),
    /// Anywhere in `[first, last + 1]`, committed entries included (raft-rs never does this;
    /// the engine must refuse it when it would overwrite a committed entry or leave the commit
    /// index past the log, and change nothing).
    AnywhereRaw(u32),
}

/// A hard state, resolved against the log the save leaves behind: the term at least the last
/// entry's (+ `term_bump`), `vote % 4`, a commit index within the log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HsGen {
    pub(crate) term_bump: u8,
    pub(crate) vote: u8,
    pub(crate) commit: u32,
}

/// A conf state: bit masks of voters 1..=8, learners 11..=18, outgoing voters 1..=8.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CsGen {
    pub(crate) voters: u8,
    pub(crate) learners: u8,
    pub(crate) outgoing: u8,
    pub(crate) auto_leave: bool,
}

/// An invalid `save` (§6): the engine must refuse it and change nothing.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bad {
    /// Starts past `last_index() + 1`.
    Gap(u8),
    /// Starts below `first_index()`.
    Below(u32),
    /// Valid start, but index `j` of the batch skips, repeats or goes back.
    NonContiguous { at: Pos, j: u16, how: u8 },
    /// A newer snapshot, with entries that leave a gap after it.
    SnapshotThenGap(u32),
    /// A hard state whose commit index is past the log the save leaves.
    CommitPast(u8),
    /// A received snapshot below the stored commit index.
    SnapshotBelowCommit(u8),
    /// Valid indexes, but a term drops: below the term of the entry the batch follows
    /// (`j == 0`), or inside the batch at position `j`.
    TermDrop { at: Pos, j: u16 },
}

/// An abstract operation (decoded from fuzz input, or generated by `tests/model.rs`), resolved
/// against the model's current state into an [`Action`] by [`resolve`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Append {
        at: Pos,
        count: usize,
        term_bump: u8,
        seed: u8,
        hs: Option<HsGen>,
    },
    Invalid {
        bad: Bad,
        count: usize,
        hs: Option<HsGen>,
    },
    SaveSnapshot {
        pos: u32,
        term_bump: u8,
        data_len: usize,
        cs: CsGen,
        then: usize,
        hs: Option<HsGen>,
    },
    StaleSnapshot {
        pos: u32,
        data_len: usize,
    },
    HardStateOnly(Option<HsGen>),
    CreateSnapshot {
        pos: u32,
        cs: Option<CsGen>,
        data_len: usize,
    },
    BadCreateSnapshot {
        above: bool,
        dist: u8,
    },
    InstallSnapshotFrom {
        pos: u32,
        below: bool,
        data_len: usize,
        cs: CsGen,
    },
    SetConfState(CsGen),
    Truncate {
        pos: u32,
    },
    SetUint {
        key: u8,
        value: u64,
    },
    Sync,
    Reopen(ReopenHow),
}

/// Decodes input into (prefill, ops), within the entry budget.
struct Decoder<'a> {
    r: Reader<'a>,
    entries_left: usize,
    big_left: usize,
}

impl Decoder<'_> {
    fn count(&mut self) -> usize {
        let c = self.r.u8();
        let want = match c {
            0..=199 => usize::from(c % 16),
            200..=249 => 16 + usize::from(self.r.u8()),
            _ => {
                let n = 2_000 + usize::from(self.r.u16()) % 29_001;
                if self.big_left > 0 {
                    self.big_left -= 1;
                    n
                } else {
                    n % 16
                }
            }
        };
        let n = want.min(self.entries_left);
        self.entries_left -= n;
        n
    }

    fn pos(&mut self) -> Pos {
        match self.r.u8() % 8 {
            0..=2 => Pos::End,
            3 | 4 => Pos::FromEnd(u32::from(self.r.u8() % 80)),
            5 | 6 => Pos::Anywhere(self.r.u32()),
            _ => Pos::AnywhereRaw(self.r.u32()),
        }
    }

    fn hs(&mut self) -> Option<HsGen> {
        if self.r.u8() % 5 < 2 {
            return None;
        }
        Some(HsGen {
            term_bump: self.r.u8() % 3,
            vote: self.r.u8(),
            commit: self.r.u32(),
        })
    }

    fn cs(&mut self) -> CsGen {
        let voters = self.r.u8();
        let learners = self.r.u8();
        let o = self.r.u8();
        CsGen {
            voters,
            learners,
            outgoing: if o.is_multiple_of(4) { self.r.u8() } else { 0 },
            auto_leave: o & 0x80 != 0,
        }
    }

    fn snap_len(&mut self) -> usize {
        let b = self.r.u8();
        match b % 8 {
            0..=5 => usize::from(b >> 2),
            6 => 1_000 + usize::from(self.r.u16() % 4_000),
            _ => 60_000 + usize::from(self.r.u16() % 10_000),
        }
    }

    fn op(&mut self) -> Op {
        match self.r.u8() % 24 {
            0..=6 => Op::Append {
                at: self.pos(),
                count: self.count(),
                term_bump: self.r.u8() % 3,
                seed: self.r.u8(),
                hs: self.hs(),
            },
            7 | 8 => {
                let bad = match self.r.u8() % 7 {
                    0 => Bad::Gap(self.r.u8() % 5),
                    1 => Bad::Below(self.r.u32() % 5),
                    2 => Bad::NonContiguous {
                        at: self.pos(),
                        j: self.r.u16(),
                        how: self.r.u8() % 3,
                    },
                    3 => Bad::SnapshotThenGap(self.r.u32()),
                    4 => Bad::CommitPast(self.r.u8()),
                    5 => Bad::SnapshotBelowCommit(self.r.u8()),
                    _ => Bad::TermDrop {
                        at: self.pos(),
                        j: self.r.u16(),
                    },
                };
                Op::Invalid {
                    bad,
                    count: 1 + usize::from(self.r.u8() % 20),
                    hs: self.hs(),
                }
            }
            9 | 10 => {
                let pos = self.r.u32();
                let term_bump = self.r.u8() % 3;
                let data_len = self.snap_len();
                let cs = self.cs();
                let then = self.count();
                Op::SaveSnapshot {
                    pos,
                    term_bump,
                    data_len,
                    cs,
                    then,
                    hs: self.hs(),
                }
            }
            11 => Op::StaleSnapshot {
                pos: self.r.u32(),
                data_len: usize::from(self.r.u8() % 64),
            },
            12 => Op::HardStateOnly(self.hs()),
            13..=15 => {
                let pos = self.r.u32();
                let cs = if self.r.bool() { Some(self.cs()) } else { None };
                Op::CreateSnapshot {
                    pos,
                    cs,
                    data_len: self.snap_len(),
                }
            }
            16 => Op::BadCreateSnapshot {
                above: self.r.bool(),
                dist: self.r.u8(),
            },
            17 => Op::InstallSnapshotFrom {
                pos: self.r.u32(),
                below: self.r.u8().is_multiple_of(4),
                data_len: self.snap_len(),
                cs: self.cs(),
            },
            18 => Op::SetConfState(self.cs()),
            19 => Op::Truncate { pos: self.r.u32() },
            20 => Op::SetUint {
                key: self.r.u8() % 5,
                value: self.r.u64(),
            },
            21 => Op::Sync,
            _ => Op::Reopen(match self.r.u8() % 3 {
                0 => ReopenHow::Close,
                1 => ReopenHow::Drop,
                _ => ReopenHow::Strict,
            }),
        }
    }
}

impl CsGen {
    /// A joint configuration also gets `learners_next` (voters leaving for learners).
    fn resolve(&self) -> ConfState {
        let mut cs = conf_state(
            &ids(self.voters, 1),
            &ids(self.learners, 11),
            &ids(self.outgoing, 1),
            self.auto_leave,
        );
        if !cs.voters_outgoing.is_empty() {
            cs.learners_next = ids(self.learners, 21);
        }
        cs
    }
}

impl HsGen {
    /// A hard state consistent with the log the save leaves behind (`m` = model afterwards).
    fn resolve(&self, m: &Model) -> HardState {
        let term = m.hs.term.max(m.last_term()) + u64::from(self.term_bump);
        let span = m.last() - m.snap_index + 1;
        let commit = m.snap_index + u64::from(self.commit) % span;
        hard_state(term, u64::from(self.vote % 4), commit)
    }
}

fn resolve_hs(hs: &Option<HsGen>, after: &Model) -> HardState {
    hs.as_ref().map(|h| h.resolve(after)).unwrap_or_default()
}

/// Start of an append.
fn resolve_pos(p: &Pos, m: &Model) -> u64 {
    let first = m.first().max(m.hs.commit + 1);
    let next = m.last() + 1;
    match p {
        Pos::End => next,
        Pos::FromEnd(k) => next - u64::from(*k).min(next - first),
        Pos::Anywhere(x) => first + u64::from(*x) % (next - first + 1),
        Pos::AnywhereRaw(x) => m.first() + u64::from(*x) % (next - m.first() + 1),
    }
}

/// Turns a decoded op into a concrete action against the current model state.
pub(crate) fn resolve(op: &Op, m: &Model) -> Action {
    match *op {
        Op::Append {
            at,
            count,
            term_bump,
            seed,
            hs,
        } => {
            let start = resolve_pos(&at, m);
            let term = (m.term_at(start - 1) + u64::from(term_bump)).max(1);
            let entries = make_entries(start, count, term, seed);
            let mut after = m.clone();
            let _ = after.save(&HardState::default(), &entries, &Snapshot::default());
            Action::Save {
                hs: resolve_hs(&hs, &after),
                entries,
                snap: Snapshot::default(),
            }
        }
        Op::Invalid { bad, count, hs } => {
            let first = m.first();
            let last = m.last();
            let term = m.last_term().max(1);
            let mut snap = Snapshot::default();
            let mut hs = resolve_hs(&hs, m);
            let entries = match bad {
                Bad::Gap(k) => make_entries(last + 2 + u64::from(k % 5), count, term, 7),
                Bad::Below(k) => {
                    let start = (first - 1).saturating_sub(u64::from(k));
                    make_entries(start, count.max(1), term, 9)
                }
                Bad::NonContiguous { at, j, how } => {
                    let start = resolve_pos(&at, m);
                    let n = count.max(2);
                    let mut es = make_entries(start, n, term, 5);
                    let j = 1 + (j as usize) % (n - 1);
                    let prev = es[j - 1].index;
                    let idx = match how % 3 {
                        0 => prev + 2,
                        1 => prev,
                        _ => prev.saturating_sub(1),
                    };
                    for (k, e) in es.iter_mut().enumerate().skip(j) {
                        *e = make_entry(idx + (k - j) as u64, term, 5, false);
                    }
                    es
                }
                Bad::SnapshotThenGap(pos) => {
                    let s_idx = m.snap_index.max(m.hs.commit) + 1 + u64::from(pos % 50);
                    let cs = conf_state(&[5], &[], &[], false);
                    snap = make_snapshot(s_idx, term, cs, snap_data(20, s_idx));
                    make_entries(s_idx + 2, count, term, 3)
                }
                Bad::CommitPast(k) => {
                    hs = hard_state(m.hs.term.max(term), 1, last + 1 + u64::from(k));
                    Vec::new()
                }
                Bad::SnapshotBelowCommit(k) => {
                    // only invalid when the commit index is above the snapshot: otherwise it
                    // is an ordinary (valid or stale) snapshot, which the model also handles
                    let s_idx = m.hs.commit.saturating_sub(1 + u64::from(k % 8)).max(1);
                    let cs = conf_state(&[6], &[], &[], false);
                    snap = make_snapshot(s_idx, term, cs, snap_data(8, s_idx));
                    hs = HardState::default();
                    Vec::new()
                }
                Bad::TermDrop { at, j } => {
                    // Terms 2 above the entry before the start, then one entry (j > 0) or the
                    // whole batch (j == 0, when that term is above 1) one below where they must be.
                    let start = resolve_pos(&at, m);
                    let before = m.term_at(start - 1);
                    let n = count.max(2);
                    let j = (j as usize) % n;
                    let mut es = make_entries(start, n, before + 2, 4);
                    if j == 0 {
                        let low = before.saturating_sub(1).max(1);
                        es = make_entries(start, n, low, 4);
                    } else {
                        for e in es.iter_mut().skip(j) {
                            e.term = before + 1;
                        }
                    }
                    es
                }
            };
            Action::Save { hs, entries, snap }
        }
        Op::SaveSnapshot {
            pos,
            term_bump,
            data_len,
            cs,
            then,
            hs,
        } => {
            // a received snapshot is always past the follower's commit index
            let lowest = m.snap_index.max(m.hs.commit) + 1;
            let span = m.last() + 40 - lowest;
            let s_idx = lowest + u64::from(pos) % span;
            let base = if s_idx <= m.last() {
                m.term_at(s_idx)
            } else {
                m.last_term()
            };
            let s_term = (base.max(m.snap_term) + u64::from(term_bump)).max(1);
            let snap = make_snapshot(
                s_idx,
                s_term,
                cs.resolve(),
                snap_data(data_len, s_idx ^ u64::from(pos)),
            );
            let entries = make_entries(s_idx + 1, then, s_term, (pos % 251) as u8);
            let mut after = m.clone();
            let _ = after.save(&HardState::default(), &entries, &snap);
            Action::Save {
                hs: resolve_hs(&hs, &after),
                entries,
                snap,
            }
        }
        Op::StaleSnapshot { pos, data_len } => {
            let (idx, term) = if m.snap_index == 0 {
                (0, 3) // an empty snapshot (index 0) is ignored, whatever else it carries
            } else {
                (1 + u64::from(pos) % m.snap_index, m.snap_term)
            };
            let cs = conf_state(&[9], &[], &[], false);
            Action::Save {
                hs: HardState::default(),
                entries: vec![],
                snap: make_snapshot(idx, term, cs, snap_data(data_len, 99)),
            }
        }
        Op::HardStateOnly(hs) => Action::Save {
            hs: resolve_hs(&hs, m),
            entries: vec![],
            snap: Snapshot::default(),
        },
        Op::CreateSnapshot { pos, cs, data_len } => {
            let n = m.last() + 1 - m.first();
            let index = if n == 0 {
                m.first() // nothing live: Unavailable
            } else {
                m.first() + u64::from(pos) % n
            };
            Action::CreateSnapshot {
                index,
                cs: cs.as_ref().map(CsGen::resolve),
                data: snap_data(data_len, index),
            }
        }
        Op::BadCreateSnapshot { above, dist } => {
            let d = u64::from(dist % 3);
            let index = if above {
                m.last() + 1 + d
            } else {
                (m.first() - 1).saturating_sub(d)
            };
            Action::CreateSnapshot {
                index,
                cs: None,
                data: snap_data(10, index),
            }
        }
        Op::InstallSnapshotFrom {
            pos,
            below,
            data_len,
            cs,
        } => {
            let index = if below {
                // at or below the current snapshot (or index 0): refused
                u64::from(pos) % (m.snap_index + 1)
            } else {
                let lowest = m.snap_index.max(m.hs.commit) + 1;
                lowest + u64::from(pos) % (m.last() + 40 - lowest)
            };
            let mut md = SnapshotMetadata::default();
            md.index = index;
            md.term = m.last_term().max(m.snap_term).max(1) + u64::from(pos % 2);
            md.set_conf_state(cs.resolve());
            Action::InstallSnapshotFrom {
                md,
                data: snap_data(data_len, index ^ 0x55),
            }
        }
        Op::SetConfState(cs) => Action::SetConfState(cs.resolve()),
        Op::Truncate { pos } => {
            // mostly within [first, last + 1]; sometimes anywhere from 0 to far past the end
            let n = m.last() + 2 - m.first();
            let i = if pos % 8 == 7 {
                u64::from(pos >> 3) % (m.last() + 100)
            } else {
                m.first() + u64::from(pos) % n
            };
            Action::Truncate(i)
        }
        Op::SetUint { key, value } => {
            let k = match key % 5 {
                0 => MetaInfo::RaftId,
                1 => MetaInfo::GroupId,
                2 => MetaInfo::CheckpointIndex,
                3 => MetaInfo::SnapshotIndex,
                _ => MetaInfo::SnapshotTerm,
            };
            Action::SetUint(k, value)
        }
        Op::Sync => Action::Sync,
        Op::Reopen(how) => Action::Reopen(how),
    }
}

/// What one run did (for the test summaries): actions run (before the final check), the highest
/// last index and the most log files seen at once after an action.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub actions: usize,
    pub max_last: u64,
    pub max_files: usize,
}

/// One run: an optional prefill (one `save` of entries `1..=n`, term 1, seed 42, commit `n / 2`),
/// then the ops, on a store encrypted with `key` if set.
#[derive(Clone, Debug, Default)]
pub(crate) struct Case {
    pub(crate) prefill: Option<usize>,
    pub(crate) key: Option<[u8; 32]>,
    pub(crate) sync: bool,
    pub(crate) ops: Vec<Op>,
}

/// Decodes a fuzz input (layout in the module docs).
fn decode(data: &[u8]) -> Case {
    let mut d = Decoder {
        r: Reader::new(data),
        entries_left: MAX_ENTRIES,
        big_left: MAX_BIG,
    };
    let p = d.r.u8();
    let key = (p & 0x10 != 0).then_some([0x5a; 32]);
    let sync = p & 0x08 != 0;
    let mut prefill = None;
    if p % 8 == 7 {
        let n = 28_000 + usize::from(d.r.u16()) % 3_001;
        d.entries_left -= n;
        prefill = Some(n);
    }
    // the prefill counts as one of the `MAX_OPS` actions
    let max_ops = MAX_OPS - usize::from(prefill.is_some());
    let mut ops = Vec::new();
    while !d.r.is_empty() && ops.len() < max_ops {
        ops.push(d.op());
    }
    Case {
        prefill,
        key,
        sync,
        ops,
    }
}

/// Runs a case: each op is resolved against the model's state at that point, run on both sides
/// and followed by a comparison ([`Harness::run`]), then [`Harness::finish`]. `full`: compare
/// every entry and term after every action (the fuzz inputs run with `false`: large logs are
/// sampled).
pub(crate) fn run_case(case: &Case, full: bool) -> Result<Stats, String> {
    let mut h = Harness::new(case.key, case.sync)?;
    if let Some(n) = case.prefill {
        let entries = make_entries(1, n, 1, 42);
        h.run(
            &Action::Save {
                hs: hard_state(1, 1, n as u64 / 2),
                entries,
                snap: Snapshot::default(),
            },
            full,
        )?;
    }
    for op in &case.ops {
        let a = resolve(op, &h.model);
        h.run(&a, full)?;
    }
    h.finish(full)
}

/// Runs one fuzz input. `Err` describes a divergence between the engine and the model (a panic
/// in the engine propagates as a panic).
pub fn run(data: &[u8]) -> Result<Stats, String> {
    run_case(&decode(data), false)
}
