//! Model-based test of `raftwal::DiskStorage` against an in-memory reference model that follows
//! SPEC §4 (semantics) and §6 (bad input).
//!
//! The model keeps: the snapshot (index, term, data, conf state), the live entries, the hard
//! state, the current conf state and the meta integers. Random operation sequences are generated
//! as small abstract [`Op`] descriptors (cheap to generate and to shrink); each one is resolved
//! against the model's current state into a concrete [`Action`] (exact indexes and entries), the
//! action is run on both the model and the engine, the outcomes (Ok / the `StorageError` kind) are
//! compared, and then everything observable is compared (see [`check_state`]).
//!
//! Entries are built deterministically from (index, term, seed) with tiny payloads, so batches of
//! many thousand entries are cheap and sequences cross the 30,000-entry file rotation.
//!
//! The proptest runner uses a fixed RNG seed, so every run checks the same cases.
//! A fixed regression sequence ([`regression_overwrite_across_boundary_and_snapshot_via_save`])
//! exercises an overwrite across a file boundary and a snapshot received via `save` mid-sequence.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use raft::prelude::*;
use raft::{GetEntriesContext, Storage, StorageError};
use raftwal::{DiskStorage, MetaInfo, Options};

// =============================================================================================
// Entry / snapshot builders
// =============================================================================================

/// Deterministic entry: tiny payload derived from (index, seed); some entries carry a context,
/// a few are conf changes (so `truncate_entries_until` has non-Normal entries to leave alone).
fn make_entry(index: u64, term: u64, seed: u8) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    let s = u64::from(seed);
    let len = ((index ^ s.wrapping_mul(0x9E37)) % 11) as usize;
    let data: Vec<u8> = (0..len)
        .map(|k| (index as u8).wrapping_add(k as u8).wrapping_mul(seed | 1))
        .collect();
    e.data = Bytes::from(data);
    if (index + s) % 4 == 0 {
        e.context = Bytes::from(vec![seed, index as u8, (index >> 8) as u8]);
    }
    if seed % 3 == 0 && index % 17 == 0 {
        e.set_entry_type(EntryType::EntryConfChange);
    } else if seed % 3 == 1 && index % 29 == 0 {
        e.set_entry_type(EntryType::EntryConfChangeV2);
    }
    e
}

fn make_entries(start: u64, count: usize, term: u64, seed: u8) -> Vec<Entry> {
    (0..count as u64)
        .map(|k| make_entry(start + k, term, seed))
        .collect()
}

fn snap_data(len: usize, seed: u64) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|k| (k as u64).wrapping_mul(31).wrapping_add(seed) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn make_snapshot(index: u64, term: u64, cs: ConfState, data: Bytes) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().set_conf_state(cs);
    s.data = data;
    s
}

fn conf_state(voters: &[u64], learners: &[u64], outgoing: &[u64], auto_leave: bool) -> ConfState {
    let mut cs = ConfState::default();
    cs.voters = voters.to_vec();
    cs.learners = learners.to_vec();
    cs.voters_outgoing = outgoing.to_vec();
    cs.auto_leave = auto_leave && !outgoing.is_empty();
    cs
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    let mut hs = HardState::default();
    hs.term = term;
    hs.vote = vote;
    hs.commit = commit;
    hs
}

fn ctx() -> GetEntriesContext {
    GetEntriesContext::empty(false)
}

// =============================================================================================
// Concrete actions and expected outcomes
// =============================================================================================

#[derive(Clone, Debug, PartialEq, Eq)]
enum ErrKind {
    /// Any error (the spec only says "an error").
    Any,
    Unavailable,
    SnapshotOutOfDate,
}

type Outcome = Result<(), ErrKind>;

#[derive(Clone, Debug)]
enum Action {
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
    SetConfState(ConfState),
    Truncate(u64),
    SetUint(MetaInfo, u64),
    /// sync + close (or drop when `drop` is set) and open again.
    Reopen {
        drop: bool,
    },
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
            Action::SetConfState(cs) => format!("set_conf_state(voters {:?})", cs.voters),
            Action::Truncate(i) => format!("truncate_entries_until({i})"),
            Action::SetUint(k, v) => format!("set_uint({k:?}, {v})"),
            Action::Reopen { drop } => format!("reopen(drop={drop})"),
        }
    }
}

// =============================================================================================
// Reference model (SPEC §4)
// =============================================================================================

#[derive(Clone, Debug, Default)]
struct Model {
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
    fn first(&self) -> u64 {
        self.snap_index + 1
    }

    fn last(&self) -> u64 {
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

    fn apply(&mut self, a: &Action) -> Outcome {
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
                    _ => unreachable!("the model only sets RaftId, GroupId, CheckpointIndex"),
                }
                Ok(())
            }
            Action::Reopen { .. } => Ok(()),
        }
    }

    fn save(&mut self, hs: &HardState, entries: &[Entry], snap: &Snapshot) -> Outcome {
        // Work on a copy: any error leaves the model exactly as it was.
        let mut m = self.clone();
        let meta = snap.get_metadata();
        if meta.index > 0 {
            if meta.index <= m.snap_index {
                return Err(ErrKind::SnapshotOutOfDate);
            }
            m.snap_index = meta.index;
            m.snap_term = meta.term;
            m.snap_data = snap.data.clone();
            m.snap_cs = meta.get_conf_state().clone();
            m.cs = meta.get_conf_state().clone();
            m.entries.clear();
            m.truncated.clear();
        }
        if !entries.is_empty() {
            if entries.windows(2).any(|w| w[1].index != w[0].index + 1) {
                return Err(ErrKind::Any);
            }
            let start = entries[0].index;
            if start < m.first() || start > m.last() + 1 {
                return Err(ErrKind::Any);
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
        *self = m;
        Ok(())
    }
}

// =============================================================================================
// Comparing the engine with the model
// =============================================================================================

fn kind_of(e: &raft::Error) -> String {
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

fn outcome_matches(want: &Outcome, got: &Result<(), raft::Error>) -> bool {
    match (want, got) {
        (Ok(()), Ok(())) => true,
        (Err(ErrKind::Any), Err(_)) => true,
        (Err(k), Err(e)) => matches!(
            (k, e),
            (
                ErrKind::Unavailable,
                raft::Error::Store(StorageError::Unavailable)
            ) | (
                ErrKind::SnapshotOutOfDate,
                raft::Error::Store(StorageError::SnapshotOutOfDate)
            )
        ),
        _ => false,
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

fn is_store_err<T: std::fmt::Debug>(r: &raft::Result<T>, want: &str) -> bool {
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

/// Compare everything observable. `salt` drives the choice of the extra sub-range read.
fn check_state(s: &DiskStorage, m: &Model, salt: u64) -> Result<(), String> {
    let first = m.first();
    let last = m.last();

    // first / last index
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

    // term: every live index plus the snapshot index; below / above the range
    for i in m.snap_index..=last {
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
    let t = s.term(last + 1);
    ensure!(
        is_store_err(&t, "Unavailable"),
        "term({}) past last_index: got {}, want Unavailable",
        last + 1,
        describe(&t)
    );

    // entries over the whole live range
    let all = match s.entries(first, last + 1, None, ctx()) {
        Ok(v) => v,
        Err(e) => {
            return Err(format!(
                "entries({first}, {}): Err({})",
                last + 1,
                kind_of(&e)
            ))
        }
    };
    ensure!(
        all.len() == m.entries.len(),
        "entries({first}, {}): got {} entries, want {}",
        last + 1,
        all.len(),
        m.entries.len()
    );
    for (k, (g, w)) in all.iter().zip(m.entries.iter()).enumerate() {
        ensure!(
            entry_matches(g, w, m.truncated[k]),
            "entries({first}, {}): entry #{k} differs:\n got  {g:?}\n want {w:?} (truncated: {})",
            last + 1,
            m.truncated[k]
        );
    }
    // bounds of entries()
    if m.snap_index > 0 {
        let r = s.entries(m.snap_index, last + 1, None, ctx());
        ensure!(
            is_store_err(&r, "Compacted"),
            "entries({}, {}) starting at the snapshot index: got {}, want Compacted",
            m.snap_index,
            last + 1,
            describe(&r)
        );
    }
    let r = s.entries(first, last + 2, None, ctx());
    ensure!(
        is_store_err(&r, "Unavailable"),
        "entries({first}, {}) past last_index+1: got {}, want Unavailable",
        last + 2,
        describe(&r)
    );
    let r = s.entries(last + 1, last + 1, None, ctx());
    ensure!(
        matches!(&r, Ok(v) if v.is_empty()),
        "entries({0}, {0}): got {1}, want Ok([])",
        last + 1,
        describe(&r)
    );
    // a pseudo-random sub-range with a size limit: the longest prefix that fits, at least one
    if !m.entries.is_empty() {
        let n = m.entries.len() as u64;
        let h = splitmix(salt ^ last.wrapping_mul(0x2545F4914F6CDD1D));
        let lo = first + h % n;
        let hi = lo + 1 + splitmix(h) % (last + 1 - lo);
        let max_size = match splitmix(h ^ 7) % 4 {
            0 => 0,
            1 => splitmix(h ^ 11) % 64,
            2 => splitmix(h ^ 13) % 4096,
            _ => u64::MAX,
        };
        let got = s.entries(lo, hi, Some(max_size), ctx());
        let mut want: Vec<Entry> = all[(lo - first) as usize..(hi - first) as usize].to_vec();
        raft::util::limit_size(&mut want, Some(max_size));
        ensure!(
            got.as_ref().ok() == Some(&want),
            "entries({lo}, {hi}, max_size {max_size}): got {}, want {} entries",
            match &got {
                Ok(v) => format!("{} entries", v.len()),
                Err(e) => format!("Err({})", kind_of(e)),
            },
            want.len()
        );
    }

    // initial state
    let st = s.initial_state();
    match &st {
        Ok(st) => {
            ensure!(
                st.hard_state == m.hs,
                "initial_state().hard_state: got {:?}, want {:?}",
                st.hard_state,
                m.hs
            );
            ensure!(
                st.conf_state == m.cs,
                "initial_state().conf_state: got {:?}, want {:?}",
                st.conf_state,
                m.cs
            );
        }
        Err(e) => return Err(format!("initial_state(): Err({})", kind_of(e))),
    }

    // snapshot
    if m.snap_index > 0 {
        for req in [0, m.snap_index] {
            let sn = s.snapshot(req, 0);
            match &sn {
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
                Err(e) => return Err(format!("snapshot({req}, 0): Err({})", kind_of(e))),
            }
        }
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
        s.num_entries() == m.entries.len(),
        "num_entries(): got {}, want {}",
        s.num_entries(),
        m.entries.len()
    );
    ensure!(
        s.uint(MetaInfo::SnapshotIndex) == m.snap_index,
        "uint(SnapshotIndex): got {}, want {}",
        s.uint(MetaInfo::SnapshotIndex),
        m.snap_index
    );
    ensure!(
        s.uint(MetaInfo::SnapshotTerm) == m.snap_term,
        "uint(SnapshotTerm): got {}, want {}",
        s.uint(MetaInfo::SnapshotTerm),
        m.snap_term
    );
    ensure!(
        s.uint(MetaInfo::RaftId) == m.raft_id,
        "uint(RaftId): got {}, want {}",
        s.uint(MetaInfo::RaftId),
        m.raft_id
    );
    ensure!(
        s.uint(MetaInfo::GroupId) == m.group_id,
        "uint(GroupId): got {}, want {}",
        s.uint(MetaInfo::GroupId),
        m.group_id
    );
    ensure!(
        s.uint(MetaInfo::CheckpointIndex) == m.checkpoint,
        "uint(CheckpointIndex): got {}, want {}",
        s.uint(MetaInfo::CheckpointIndex),
        m.checkpoint
    );
    let cp = s.checkpoint();
    ensure!(
        matches!(cp, Ok(v) if v == m.checkpoint),
        "checkpoint(): got {cp:?}, want Ok({})",
        m.checkpoint
    );
    Ok(())
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E3779B97F4A7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

// =============================================================================================
// Harness: runs concrete actions on engine + model
// =============================================================================================

static STATS_CASES: AtomicUsize = AtomicUsize::new(0);
static STATS_ACTIONS: AtomicUsize = AtomicUsize::new(0);
static STATS_MULTI_FILE: AtomicUsize = AtomicUsize::new(0);
static STATS_MAX_LAST: AtomicUsize = AtomicUsize::new(0);

fn opts() -> Options {
    Options {
        sync_writes: false,
        ..Default::default()
    }
}

struct Harness {
    dir: tempfile::TempDir,
    store: Option<DiskStorage>,
    model: Model,
    history: Vec<String>,
    step: u64,
    /// Coverage: the most log files seen at once, the highest last index.
    max_files: usize,
    max_last: u64,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DiskStorage::open_with(dir.path(), opts()).expect("open a fresh directory");
        Harness {
            dir,
            store: Some(store),
            model: Model::default(),
            history: Vec::new(),
            step: 0,
            max_files: 0,
            max_last: 0,
        }
    }

    fn store(&self) -> &DiskStorage {
        self.store.as_ref().unwrap()
    }

    fn fail(&self, msg: String) -> String {
        let n = self.history.len();
        let from = n.saturating_sub(25);
        let mut out = format!("{msg}\nafter actions (last {} of {n}):\n", n - from);
        for (k, h) in self.history.iter().enumerate().skip(from) {
            let _ = writeln!(out, "  #{k}: {h}");
        }
        out
    }

    fn reopen(&mut self, drop_it: bool, path: &Path) -> Result<(), String> {
        let s = self.store.take().unwrap();
        if drop_it {
            drop(s);
        } else {
            s.sync().map_err(|e| format!("sync() before close: {e}"))?;
            s.close().map_err(|e| format!("close(): {e}"))?;
        }
        let s = DiskStorage::open_with(path, opts()).map_err(|e| format!("reopen: {e}"))?;
        self.store = Some(s);
        Ok(())
    }

    /// Run one action on both sides and compare the outcome, then the whole state.
    fn run(&mut self, a: &Action) -> Result<(), String> {
        self.history.push(a.summary());
        self.step += 1;
        let want = self.model.apply(a);
        // converted with the crate's own `From<Error> for raft::Error` (SPEC §4, Errors)
        let got: Result<(), raft::Error> = match a {
            Action::Save { hs, entries, snap } => self.store().save(hs, entries, snap),
            Action::CreateSnapshot { index, cs, data } => {
                self.store()
                    .create_snapshot(*index, cs.as_ref(), data.clone())
            }
            Action::SetConfState(cs) => self.store().set_conf_state(cs),
            Action::Truncate(i) => self.store().truncate_entries_until(*i),
            Action::SetUint(k, v) => {
                self.store().set_uint(*k, *v);
                Ok(())
            }
            Action::Reopen { drop } => {
                let path = self.dir.path().to_path_buf();
                if let Err(e) = self.reopen(*drop, &path) {
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
                    Err(e) => format!("Err({})", kind_of(e)),
                }
            )));
        }
        let salt = self.step;
        check_state(self.store(), &self.model, salt).map_err(|e| self.fail(e))?;
        self.max_files = self.max_files.max(self.store().num_log_files());
        self.max_last = self.max_last.max(self.model.last());
        Ok(())
    }

    /// Close cleanly, reopen and check once more (what is on disk is what the model says).
    /// Returns coverage numbers: (actions run, most log files seen at once, highest last index).
    fn finish(mut self) -> Result<(usize, usize, u64), String> {
        self.run(&Action::Reopen { drop: false })?;
        let s = self.store.take().unwrap();
        s.close().map_err(|e| format!("final close(): {e}"))?;
        Ok((self.history.len(), self.max_files, self.max_last))
    }
}

// =============================================================================================
// Abstract operations (generated, shrinkable) and their resolution against the model
// =============================================================================================

/// Where an append starts.
#[derive(Clone, Debug)]
enum Pos {
    /// `last_index() + 1`.
    End,
    /// `last_index() + 1 - k` (clamped to `first_index()`): overwrite a short suffix.
    FromEnd(u32),
    /// Anywhere in `[first_index(), last_index() + 1]`.
    Anywhere(u32),
}

#[derive(Clone, Debug)]
struct HsGen {
    term_bump: u8,
    vote: u8,
    commit: u32,
}

#[derive(Clone, Debug)]
struct CsGen {
    voters: u8,
    learners: u8,
    outgoing: u8,
    auto_leave: bool,
}

#[derive(Clone, Debug)]
enum Bad {
    /// Starts past `last_index() + 1`.
    Gap(u8),
    /// Starts below `first_index()`.
    Below(u32),
    /// Valid start, but index `j` of the batch skips, repeats or goes back.
    NonContiguous { at: Pos, j: u16, how: u8 },
    /// A newer snapshot, with entries that leave a gap after it.
    SnapshotThenGap(u32),
}

#[derive(Clone, Debug)]
enum Op {
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
    /// A snapshot received through `save`, possibly with hard state and following entries.
    SaveSnapshot {
        pos: u32,
        term_bump: u8,
        data_len: usize,
        cs: CsGen,
        then: usize,
        hs: Option<HsGen>,
    },
    /// A snapshot at or below the current one (or an empty one with index 0 on a fresh store).
    StaleSnapshot {
        pos: u32,
        data_len: usize,
    },
    /// `save(default, [], default)` or with just a hard state.
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
    SetConfState(CsGen),
    Truncate {
        pos: u32,
    },
    SetUint {
        key: u8,
        value: u64,
    },
    Reopen {
        drop: bool,
    },
}

fn ids(mask: u8, base: u64) -> Vec<u64> {
    (0..8u64)
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| base + b)
        .collect()
}

impl CsGen {
    fn resolve(&self) -> ConfState {
        conf_state(
            &ids(self.voters, 1),
            &ids(self.learners, 11),
            &ids(self.outgoing, 1),
            self.auto_leave,
        )
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

/// Start of an append. Never at or below the stored commit index: raft-rs never overwrites
/// committed entries, and a commit index past the log is refused at open.
fn resolve_pos(p: &Pos, m: &Model) -> u64 {
    let first = m.first().max(m.hs.commit + 1);
    let next = m.last() + 1;
    match p {
        Pos::End => next,
        Pos::FromEnd(k) => next - u64::from(*k).min(next - first),
        Pos::Anywhere(x) => first + u64::from(*x) % (next - first + 1),
    }
}

/// Turn an abstract op into a concrete action against the current model state.
fn resolve(op: &Op, m: &Model) -> Action {
    match op {
        Op::Append {
            at,
            count,
            term_bump,
            seed,
            hs,
        } => {
            let start = resolve_pos(at, m);
            let term = (m.term_at(start - 1) + u64::from(*term_bump)).max(1);
            let entries = make_entries(start, *count, term, *seed);
            let mut after = m.clone();
            let _ = after.save(&HardState::default(), &entries, &Snapshot::default());
            Action::Save {
                hs: resolve_hs(hs, &after),
                entries,
                snap: Snapshot::default(),
            }
        }
        Op::Invalid { bad, count, hs } => {
            let first = m.first();
            let last = m.last();
            let term = m.last_term().max(1);
            let mut snap = Snapshot::default();
            let entries = match bad {
                Bad::Gap(k) => make_entries(last + 2 + u64::from(*k % 5), *count, term, 7),
                Bad::Below(k) => {
                    // first >= 1, so start <= first - 1
                    let start = (first - 1).saturating_sub(u64::from(*k));
                    let n = (*count).max(1);
                    make_entries(start, n, term, 9)
                }
                Bad::NonContiguous { at, j, how } => {
                    let start = resolve_pos(at, m);
                    let n = (*count).max(2);
                    let mut es = make_entries(start, n, term, 5);
                    let j = 1 + (*j as usize) % (n - 1);
                    let prev = es[j - 1].index;
                    let idx = match how % 3 {
                        0 => prev + 2, // skip
                        1 => prev,     // repeat
                        _ => prev.saturating_sub(1),
                    };
                    // shift the rest so only one break exists
                    for (k, e) in es.iter_mut().enumerate().skip(j) {
                        *e = make_entry(idx + (k - j) as u64, term, 5);
                    }
                    es
                }
                Bad::SnapshotThenGap(pos) => {
                    // a newer snapshot whose entries do not start at S+1: the whole save fails
                    // and the snapshot is not applied either ("change nothing")
                    let s_idx = m.snap_index.max(m.hs.commit) + 1 + u64::from(*pos % 50);
                    snap = make_snapshot(
                        s_idx,
                        term,
                        conf_state(&[5], &[], &[], false),
                        snap_data(20, s_idx),
                    );
                    make_entries(s_idx + 2, (*count).max(1), term, 3)
                }
            };
            Action::Save {
                hs: resolve_hs(hs, m),
                entries,
                snap,
            }
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
            let s_idx = lowest + u64::from(*pos) % span;
            let base = if s_idx <= m.last() {
                m.term_at(s_idx)
            } else {
                m.last_term()
            };
            let s_term = (base.max(m.snap_term) + u64::from(*term_bump)).max(1);
            let snap = make_snapshot(
                s_idx,
                s_term,
                cs.resolve(),
                snap_data(*data_len, s_idx ^ u64::from(*pos)),
            );
            let entries = make_entries(s_idx + 1, *then, s_term, (*pos % 251) as u8);
            let mut after = m.clone();
            let _ = after.save(&HardState::default(), &entries, &snap);
            Action::Save {
                hs: resolve_hs(hs, &after),
                entries,
                snap,
            }
        }
        Op::StaleSnapshot { pos, data_len } => {
            let (idx, term) = if m.snap_index == 0 {
                (0, 3) // an empty snapshot (index 0) is ignored, whatever else it carries
            } else {
                let i = 1 + u64::from(*pos) % m.snap_index;
                (i, m.snap_term)
            };
            let snap = make_snapshot(
                idx,
                term,
                conf_state(&[9], &[], &[], false),
                snap_data(*data_len, 99),
            );
            Action::Save {
                hs: HardState::default(),
                entries: vec![],
                snap,
            }
        }
        Op::HardStateOnly(hs) => Action::Save {
            hs: resolve_hs(hs, m),
            entries: vec![],
            snap: Snapshot::default(),
        },
        Op::CreateSnapshot { pos, cs, data_len } => {
            let n = m.last() + 1 - m.first();
            let index = if n == 0 {
                m.first() // nothing live: Unavailable
            } else {
                m.first() + u64::from(*pos) % n
            };
            Action::CreateSnapshot {
                index,
                cs: cs.as_ref().map(|c| c.resolve()),
                data: snap_data(*data_len, index),
            }
        }
        Op::BadCreateSnapshot { above, dist } => {
            let d = u64::from(*dist % 3);
            let index = if *above {
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
        Op::SetConfState(cs) => Action::SetConfState(cs.resolve()),
        Op::Truncate { pos } => {
            let n = m.last() + 2 - m.first();
            Action::Truncate(m.first() + u64::from(*pos) % n)
        }
        Op::SetUint { key, value } => {
            let k = match key % 3 {
                0 => MetaInfo::RaftId,
                1 => MetaInfo::GroupId,
                _ => MetaInfo::CheckpointIndex,
            };
            Action::SetUint(k, *value)
        }
        Op::Reopen { drop } => Action::Reopen { drop: *drop },
    }
}

// ---------------------------------------------------------------------------------------------
// strategies
// ---------------------------------------------------------------------------------------------

fn pos_strategy() -> impl Strategy<Value = Pos> {
    prop_oneof![
        3 => Just(Pos::End),
        2 => (0u32..80).prop_map(Pos::FromEnd),
        2 => any::<u32>().prop_map(Pos::Anywhere),
    ]
}

fn count_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        5 => 1usize..=8,
        3 => 9usize..=400,
        3 => 2_000usize..=15_000,
    ]
}

fn hs_strategy() -> impl Strategy<Value = Option<HsGen>> {
    proptest::option::weighted(
        0.6,
        (0u8..3, any::<u8>(), any::<u32>()).prop_map(|(term_bump, vote, commit)| HsGen {
            term_bump,
            vote,
            commit,
        }),
    )
}

fn cs_strategy() -> impl Strategy<Value = CsGen> {
    (
        any::<u8>(),
        any::<u8>(),
        prop_oneof![3 => Just(0u8), 1 => any::<u8>()],
        any::<bool>(),
    )
        .prop_map(|(voters, learners, outgoing, auto_leave)| CsGen {
            voters,
            learners,
            outgoing,
            auto_leave,
        })
}

fn snap_len_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..64,
        2 => 1_000usize..5_000,
        1 => 60_000usize..70_000,
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (pos_strategy(), count_strategy(), 0u8..3, any::<u8>(), hs_strategy()).prop_map(
            |(at, count, term_bump, seed, hs)| Op::Append { at, count, term_bump, seed, hs }
        ),
        3 => (
            prop_oneof![
                (0u8..5).prop_map(Bad::Gap),
                (0u32..5).prop_map(Bad::Below),
                (pos_strategy(), any::<u16>(), 0u8..3)
                    .prop_map(|(at, j, how)| Bad::NonContiguous { at, j, how }),
                any::<u32>().prop_map(Bad::SnapshotThenGap),
            ],
            1usize..20,
            hs_strategy()
        )
            .prop_map(|(bad, count, hs)| Op::Invalid { bad, count, hs }),
        2 => (
            any::<u32>(),
            0u8..3,
            snap_len_strategy(),
            cs_strategy(),
            prop_oneof![3 => 0usize..20, 1 => 2_000usize..8_000],
            hs_strategy()
        )
            .prop_map(|(pos, term_bump, data_len, cs, then, hs)| Op::SaveSnapshot {
                pos,
                term_bump,
                data_len,
                cs,
                then,
                hs
            }),
        1 => (any::<u32>(), 0usize..64)
            .prop_map(|(pos, data_len)| Op::StaleSnapshot { pos, data_len }),
        1 => hs_strategy().prop_map(Op::HardStateOnly),
        3 => (any::<u32>(), proptest::option::of(cs_strategy()), snap_len_strategy())
            .prop_map(|(pos, cs, data_len)| Op::CreateSnapshot { pos, cs, data_len }),
        1 => (any::<bool>(), any::<u8>())
            .prop_map(|(above, dist)| Op::BadCreateSnapshot { above, dist }),
        1 => cs_strategy().prop_map(Op::SetConfState),
        2 => any::<u32>().prop_map(|pos| Op::Truncate { pos }),
        1 => (0u8..3, any::<u64>()).prop_map(|(key, value)| Op::SetUint { key, value }),
        3 => any::<bool>().prop_map(|drop| Op::Reopen { drop }),
    ]
}

/// A case: an optional prefill that brings the log close to the first 30,000-entry boundary
/// (so the random appends that follow cross it), then up to 24 random ops.
fn case_strategy() -> impl Strategy<Value = (Option<usize>, Vec<Op>)> {
    (
        proptest::option::weighted(0.7, 28_000usize..=31_000),
        proptest::collection::vec(op_strategy(), 1..=24),
    )
}

fn run_case(prefill: Option<usize>, ops: &[Op]) -> Result<(), String> {
    let mut h = Harness::new();
    if let Some(n) = prefill {
        let entries = make_entries(1, n, 1, 42);
        h.run(&Action::Save {
            hs: hard_state(1, 1, n as u64 / 2),
            entries,
            snap: Snapshot::default(),
        })?;
    }
    for op in ops {
        let a = resolve(op, &h.model);
        h.run(&a)?;
    }
    let (actions, max_files, max_last) = h.finish()?;
    STATS_CASES.fetch_add(1, Ordering::Relaxed);
    STATS_ACTIONS.fetch_add(actions, Ordering::Relaxed);
    if max_files >= 2 {
        STATS_MULTI_FILE.fetch_add(1, Ordering::Relaxed);
    }
    STATS_MAX_LAST.fetch_max(max_last as usize, Ordering::Relaxed);
    Ok(())
}

#[test]
fn model_random_sequences() {
    let cases: u32 = std::env::var("RAFTWAL_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let config = Config {
        cases,
        // no regression files in the source tree; the seed is fixed instead
        failure_persistence: None,
        max_shrink_iters: 2_000,
        max_shrink_time: 240_000,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let result = runner.run(&case_strategy(), |(prefill, ops)| {
        run_case(prefill, &ops).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let multi = STATS_MULTI_FILE.load(Ordering::Relaxed);
    eprintln!(
        "model: {} cases passed, {} actions, {multi} cases had >= 2 log files (rotation), \
         highest last index {}",
        STATS_CASES.load(Ordering::Relaxed),
        STATS_ACTIONS.load(Ordering::Relaxed),
        STATS_MAX_LAST.load(Ordering::Relaxed)
    );
    // the generator is meant to cross the 30,000-entry rotation in a good share of the cases
    assert!(
        multi >= 3,
        "too few cases crossed a log file rotation: {multi}"
    );
}

// =============================================================================================
// Fixed regression sequence
// =============================================================================================

fn append(start: u64, count: usize, term: u64, seed: u8, hs: Option<HardState>) -> Action {
    Action::Save {
        hs: hs.unwrap_or_default(),
        entries: make_entries(start, count, term, seed),
        snap: Snapshot::default(),
    }
}

#[test]
fn regression_overwrite_across_boundary_and_snapshot_via_save() {
    let mut h = Harness::new();
    let steps: Vec<Action> = vec![
        // fill the first file almost completely, then cross the 30,000 boundary
        append(1, 29_995, 1, 1, Some(hard_state(1, 1, 100))),
        append(29_996, 10, 1, 2, None), // 29_996..=30_005, rotates
        Action::Reopen { drop: false },
        // overwrite starting in the first file, discarding entries in both files
        append(29_990, 30, 2, 3, Some(hard_state(2, 1, 29_989))), // ..=30_019
        Action::Reopen { drop: false },
        // overwrite inside the second file only, then from the first file again so that the
        // second file keeps a single entry
        append(30_001, 5, 3, 4, None), // ..=30_005
        append(29_999, 3, 4, 5, None), // ..=30_001
        Action::Reopen { drop: true },
        // invalid appends change nothing
        append(30_003, 2, 4, 6, Some(hard_state(9, 9, 9))), // gap
        Action::Save {
            hs: HardState::default(),
            entries: vec![make_entry(30_002, 4, 7), make_entry(30_004, 4, 7)],
            snap: Snapshot::default(),
        }, // not contiguous
        Action::Truncate(29_999),
        Action::CreateSnapshot {
            index: 15_000,
            cs: None,
            data: snap_data(100, 1),
        },
        Action::SetConfState(conf_state(&[1, 2], &[3], &[], false)),
        append(14_000, 5, 4, 8, None), // below first_index
        Action::CreateSnapshot {
            index: 14_000,
            cs: None,
            data: snap_data(10, 2),
        }, // out of date
        Action::Reopen { drop: false },
        // a snapshot received through save, ahead of the log, with entries and hard state
        Action::Save {
            hs: hard_state(5, 2, 45_050),
            entries: make_entries(45_001, 100, 5, 9),
            snap: make_snapshot(
                45_000,
                5,
                conf_state(&[1, 2, 3], &[4], &[], false),
                snap_data(5_000, 3),
            ),
        },
        Action::Reopen { drop: false },
        // grow across another boundary (whatever file layout the engine chose after the
        // snapshot, 29,950 more entries fill at least one file)
        append(45_101, 29_950, 5, 10, Some(hard_state(5, 2, 45_049))), // ..=75_050
        append(45_050, 100, 6, 11, None), // overwrite back to 45_149, discarding >1 file
        Action::Reopen { drop: false },
        append(45_150, 20_000, 6, 12, None), // ..=65_149
        Action::CreateSnapshot {
            index: 60_000,
            cs: Some(conf_state(&[1, 2, 3, 4], &[], &[], false)),
            data: snap_data(70_000, 4),
        },
        Action::Reopen { drop: false },
        // a newer snapshot whose entries leave a gap: the save fails as a whole
        Action::Save {
            hs: hard_state(6, 3, 61_000),
            entries: make_entries(61_002, 10, 6, 15),
            snap: make_snapshot(
                61_000,
                6,
                conf_state(&[8], &[], &[], false),
                snap_data(9, 7),
            ),
        },
        // stale snapshot through save
        Action::Save {
            hs: HardState::default(),
            entries: vec![],
            snap: make_snapshot(
                59_000,
                6,
                conf_state(&[7], &[], &[], false),
                snap_data(1, 5),
            ),
        },
        append(65_151, 3, 6, 13, None), // gap
        append(59_999, 3, 6, 13, None), // below first_index
        // a snapshot received through save inside the log
        Action::Save {
            hs: HardState::default(),
            entries: vec![],
            snap: make_snapshot(
                62_000,
                6,
                conf_state(&[1], &[], &[], false),
                snap_data(7, 6),
            ),
        },
        append(62_001, 40_000, 7, 14, Some(hard_state(7, 1, 100_000))),
        Action::Reopen { drop: true },
    ];
    for a in &steps {
        if let Err(e) = h.run(a) {
            panic!("{e}");
        }
    }
    match h.finish() {
        Ok((_, max_files, _)) => assert!(max_files >= 2, "the sequence never rotated"),
        Err(e) => panic!("{e}"),
    }
}

/// `From<raftwal::Error> for raft::Error` maps the four storage errors (SPEC §4, Errors);
/// the model test above relies on the same mapping when it compares error kinds.
#[test]
fn error_mapping_is_spec() {
    let dir = tempfile::tempdir().unwrap();
    let s = DiskStorage::open_with(dir.path(), opts()).unwrap();
    s.save(
        &hard_state(1, 1, 3),
        &make_entries(1, 5, 1, 0),
        &Snapshot::default(),
    )
    .unwrap();
    s.create_snapshot(3, None, Bytes::from_static(b"x"))
        .unwrap();
    let e: raft::Error = s.create_snapshot(2, None, Bytes::new()).unwrap_err().into();
    assert_eq!(kind_of(&e), "SnapshotOutOfDate");
    let e: raft::Error = s.create_snapshot(9, None, Bytes::new()).unwrap_err().into();
    assert_eq!(kind_of(&e), "Unavailable");
    let e: raft::Error = s
        .save(
            &HardState::default(),
            &make_entries(9, 1, 1, 0),
            &Snapshot::default(),
        )
        .unwrap_err()
        .into();
    assert!(
        kind_of(&e).starts_with("Other("),
        "gap maps to Other, got {e:?}"
    );
    let e: raft::Error = s
        .save(
            &HardState::default(),
            &[],
            &make_snapshot(2, 1, ConfState::default(), Bytes::new()),
        )
        .unwrap_err()
        .into();
    assert_eq!(kind_of(&e), "SnapshotOutOfDate");
    s.close().unwrap();
}

/// SPEC §4 "A durable commit index must never point past durable entries" and §6 "a clear error
/// and nothing lost": a `save` whose hard state commit would point past the log (a commit above
/// the last entry, an overwrite below the commit, a received snapshot below the commit) must
/// either be refused (and change nothing) or leave a directory that still opens. It must not be
/// accepted and then make the next `open` fail. (raft-rs never issues such a save; the random
/// sequences above avoid it, this test pins down what the engine does with it.)
#[test]
fn commit_past_log_never_makes_the_directory_unopenable() {
    let cases: Vec<(&str, Action)> = vec![
        (
            "hard state commit 100 with last index 10",
            Action::Save {
                hs: hard_state(2, 1, 100),
                entries: vec![],
                snap: Snapshot::default(),
            },
        ),
        (
            "overwrite at 5 below commit 10",
            Action::Save {
                hs: HardState::default(),
                entries: make_entries(5, 1, 2, 1),
                snap: Snapshot::default(),
            },
        ),
        (
            "received snapshot at 5 below commit 10",
            Action::Save {
                hs: HardState::default(),
                entries: vec![],
                snap: make_snapshot(5, 1, conf_state(&[1], &[], &[], false), snap_data(4, 1)),
            },
        ),
    ];
    let mut failures = Vec::new();
    for (name, action) in cases {
        let dir = tempfile::tempdir().unwrap();
        let s = DiskStorage::open_with(dir.path(), opts()).unwrap();
        s.save(
            &hard_state(1, 1, 10),
            &make_entries(1, 10, 1, 0),
            &Snapshot::default(),
        )
        .unwrap();
        let Action::Save { hs, entries, snap } = &action else {
            unreachable!()
        };
        let res = s.save(hs, entries, snap);
        let refused = res.is_err();
        s.close().unwrap();
        match DiskStorage::open_with(dir.path(), opts()) {
            Ok(s) => {
                if refused {
                    // refused: nothing changed
                    let mut m = Model::default();
                    m.save(
                        &hard_state(1, 1, 10),
                        &make_entries(1, 10, 1, 0),
                        &Snapshot::default(),
                    )
                    .unwrap();
                    if let Err(e) = check_state(&s, &m, 1) {
                        failures.push(format!("{name}: refused, but the store changed: {e}"));
                    }
                }
                s.close().unwrap();
            }
            Err(e) => failures.push(format!(
                "{name}: save returned {:?}, then open failed: {e}",
                res.map_err(|e| e.to_string())
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
