//! Model-based test of `raftwal::Engine` (docs/DESIGN.md §9 "Rules": every rule of §4 for each
//! group, a batch checked whole, groups created and removed; §6 for bad input).
//!
//! Each case runs a random sequence of steps on one engine root and, beside it, on an independent
//! in-memory model: one reference model of docs/DESIGN.md §4 per group (`Model` from
//! `tests/common/fuzz/ops_model.rs`, the model `tests/model.rs` and the `ops_model` fuzz
//! target check `DiskStorage` against, included here with `#[path]`), and the set of groups.
//! The steps:
//!
//! * `Engine::write` of a batch of 1-5 parts for several groups (the same group more than once
//!   too): appends and overwrites, received snapshots with entries after them, hard states, and
//!   invalid parts (gaps, appends below the first index, non-contiguous or decreasing terms, a
//!   commit index past the log, stale snapshots, a group that does not exist). Each part is
//!   resolved against its group's model as the parts before it in the batch leave it; the model
//!   says whether the batch is valid. An invalid batch must fail with `Error::Group` naming the
//!   group of its first invalid part, and change nothing in any group;
//! * one group's calls through its `GroupStorage`: `save`, `create_snapshot` (valid, below the
//!   first index, past the last), `set_conf_state`, `truncate_entries_until`, `set_uint`, `sync`;
//!   the outcome (Ok or the `StorageError` kind) must be the model's;
//! * `create_group` (a new id, an existing one: `GroupExists`; an id removed before: a new, empty
//!   group), `remove_group` (an existing id, an unknown one);
//! * close and reopen (`close`, drop, or `close` then open in `AbsoluteConsistency`).
//!
//! After every step: `group_ids()` is the model's set; every group's `first_index`, `last_index`,
//! every entry and term, `initial_state`, `snapshot`, `num_entries`, the meta integers are the
//! model's (`ops_model::check_state`, every entry read); handles of removed groups fail. Entry
//! and snapshot payloads start with their group's id, so an entry of one group that shows up in
//! another differs from the model. At the end of a case the engine is closed, every group
//! directory is opened with `DiskStorage::open` and compared with its model, then the engine root
//! is opened again in `AbsoluteConsistency` and compared once more.
//!
//! Journal segments and the checkpoint threshold are small, so cases rotate segments, recycle the
//! spare and run checkpoints in the background between steps; one case writes past a group's
//! 30,000-entry file boundary. Seeds are fixed: every run checks the same sequences.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use raft::prelude::*;
use raft::Storage;
use raftwal::WriteBatch;
use raftwal::{DiskStorage, Engine, EngineOptions, Error, GroupStorage, Options, RecoveryMode};

#[path = "common/env.rs"]
mod env;
#[path = "common/fuzz/mod.rs"]
mod fuzz;

use fuzz::ops_model::{
    check_state, hard_state, kind_of, make_entries, outcome_matches, resolve, Action, Bad, CsGen,
    HsGen, Model, Op, Pos, ReopenHow,
};
use fuzz::util::{scratch_dir, splitmix};

/// Cases in `cargo test`. A longer run by hand: `RAFTWAL_ENGINE_MODEL_CASES=4000` (and
/// `RAFTWAL_ENGINE_MODEL_FIRST=10000` to start elsewhere: each case's seed comes from its
/// number). 4,000 cases take about 200 s in a release build.
const CASES: u64 = 16;
const STEPS: usize = 120;
/// Group ids are drawn from `1..=MAX_ID`, so removed ids come back.
const MAX_ID: u64 = 8;

// ---------------------------------------------------------------------------------------------
// deterministic generation
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix(self.0.wrapping_mul(0xA076_1D64_78BD_642F))
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// An index into `weights`, drawn with those weights.
    fn pick(&mut self, weights: &[u64]) -> usize {
        let mut x = self.below(weights.iter().sum());
        for (k, w) in weights.iter().enumerate() {
            if x < *w {
                return k;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

fn gen_pos(r: &mut Rng) -> Pos {
    match r.pick(&[3, 2, 2, 1]) {
        0 => Pos::End,
        1 => Pos::FromEnd(r.below(40) as u32),
        2 => Pos::Anywhere(r.next() as u32),
        _ => Pos::AnywhereRaw(r.next() as u32),
    }
}

fn gen_count(r: &mut Rng) -> usize {
    match r.pick(&[6, 3, 1]) {
        0 => r.range(1, 8) as usize,
        1 => r.range(9, 60) as usize,
        _ => r.range(200, 700) as usize,
    }
}

fn gen_hs(r: &mut Rng) -> Option<HsGen> {
    r.chance(60).then(|| HsGen {
        term_bump: r.below(3) as u8,
        vote: r.next() as u8,
        commit: r.next() as u32,
    })
}

fn gen_cs(r: &mut Rng) -> CsGen {
    CsGen {
        voters: r.next() as u8,
        learners: r.next() as u8,
        outgoing: if r.chance(25) { r.next() as u8 } else { 0 },
        auto_leave: r.chance(50),
    }
}

fn gen_bad(r: &mut Rng) -> Bad {
    match r.below(7) {
        0 => Bad::Gap(r.below(5) as u8),
        1 => Bad::Below(r.below(5) as u32),
        2 => Bad::NonContiguous {
            at: gen_pos(r),
            j: r.next() as u16,
            how: r.below(3) as u8,
        },
        3 => Bad::SnapshotThenGap(r.next() as u32),
        4 => Bad::CommitPast(r.next() as u8),
        5 => Bad::SnapshotBelowCommit(r.next() as u8),
        _ => Bad::TermDrop {
            at: gen_pos(r),
            j: r.next() as u16,
        },
    }
}

fn gen_snap_len(r: &mut Rng) -> usize {
    match r.pick(&[6, 2, 1]) {
        0 => r.below(64) as usize,
        1 => r.range(1_000, 5_000) as usize,
        _ => r.range(20_000, 40_000) as usize,
    }
}

/// A part of a batch (what `WriteBatch::save` carries), valid or not.
fn gen_part(r: &mut Rng) -> Op {
    match r.pick(&[14, 2, 2, 1, 2]) {
        0 => Op::Append {
            at: gen_pos(r),
            count: gen_count(r),
            term_bump: r.below(3) as u8,
            seed: r.next() as u8,
            hs: gen_hs(r),
        },
        1 => Op::Invalid {
            bad: gen_bad(r),
            count: r.range(1, 20) as usize,
            hs: gen_hs(r),
        },
        2 => Op::SaveSnapshot {
            pos: r.next() as u32,
            term_bump: r.below(3) as u8,
            data_len: gen_snap_len(r),
            cs: gen_cs(r),
            then: if r.chance(75) {
                r.below(20) as usize
            } else {
                r.range(100, 400) as usize
            },
            hs: gen_hs(r),
        },
        3 => Op::StaleSnapshot {
            pos: r.next() as u32,
            data_len: r.below(64) as usize,
        },
        _ => Op::HardStateOnly(gen_hs(r)),
    }
}

/// A call through one group's handle.
fn gen_group_call(r: &mut Rng) -> Op {
    match r.pick(&[4, 3, 1, 1, 2, 1, 1]) {
        0 => gen_part(r),
        1 => Op::CreateSnapshot {
            pos: r.next() as u32,
            cs: r.chance(50).then(|| gen_cs(r)),
            data_len: gen_snap_len(r),
        },
        2 => Op::BadCreateSnapshot {
            above: r.chance(50),
            dist: r.next() as u8,
        },
        3 => Op::SetConfState(gen_cs(r)),
        4 => Op::Truncate {
            pos: r.next() as u32,
        },
        // Raft id, checkpoint index, and the two a snapshot sets (ignored). Not the group id:
        // an engine group's id is the engine's (tests/engine.rs has its own test of that).
        5 => Op::SetUint {
            key: [0, 2, 3, 4][r.below(4) as usize],
            value: r.next() % 1_000,
        },
        _ => Op::Sync,
    }
}

/// Payloads of group `gid` start with its id: an entry or snapshot of one group read back from
/// another differs from the model.
fn tag(a: Action, gid: u64) -> Action {
    let tagged = |b: &Bytes| {
        let mut v = gid.to_le_bytes().to_vec();
        v.extend_from_slice(b);
        Bytes::from(v)
    };
    match a {
        Action::Save {
            hs,
            mut entries,
            mut snap,
        } => {
            for e in &mut entries {
                e.data = tagged(&e.data);
            }
            if snap.get_metadata().index > 0 {
                snap.data = tagged(&snap.data);
            }
            Action::Save { hs, entries, snap }
        }
        Action::CreateSnapshot { index, cs, data } => Action::CreateSnapshot {
            index,
            cs,
            data: tagged(&data),
        },
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// the harness: an engine root and its model
// ---------------------------------------------------------------------------------------------

fn engine_opts(mode: RecoveryMode, sync: bool, key: Option<[u8; 32]>) -> EngineOptions {
    EngineOptions {
        sync_writes: sync,
        recovery_mode: mode,
        encryption_key: key,
        journal_segment_bytes: 64 << 10,
        checkpoint_bytes: 256 << 10,
        ..Default::default()
    }
}

struct Harness {
    dir: tempfile::TempDir,
    sync: bool,
    key: Option<[u8; 32]>,
    engine: Option<Engine>,
    models: BTreeMap<u64, Model>,
    handles: BTreeMap<u64, GroupStorage>,
    /// Handles of removed groups (and of the groups of a closed engine): every call fails.
    dead: Vec<GroupStorage>,
    history: Vec<String>,
    step: u64,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    steps: usize,
    batches_ok: usize,
    batches_refused: usize,
    parts: usize,
    calls: usize,
    created: usize,
    removed: usize,
    reopens: usize,
    max_groups: usize,
    max_last: u64,
}

impl Harness {
    fn new(sync: bool, key: Option<[u8; 32]>) -> Harness {
        let dir = scratch_dir("raftwal-engine-model");
        let engine = Engine::open_with(
            dir.path(),
            engine_opts(RecoveryMode::TolerateTailCorruption, sync, key),
        )
        .expect("open a fresh engine root");
        Harness {
            dir,
            sync,
            key,
            engine: Some(engine),
            models: BTreeMap::new(),
            handles: BTreeMap::new(),
            dead: Vec::new(),
            history: Vec::new(),
            step: 0,
            stats: Stats::default(),
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("an open engine")
    }

    fn fail(&self, msg: String) -> String {
        let n = self.history.len();
        let from = n.saturating_sub(25);
        let mut out = format!("{msg}\nafter steps (last {} of {n}):\n", n - from);
        for (k, h) in self.history.iter().enumerate().skip(from) {
            out += &format!("  #{k}: {h}\n");
        }
        out
    }

    /// A batch of 1-5 parts over the live groups (and now and then a group that does not exist).
    fn batch(&mut self, r: &mut Rng) -> Result<(), String> {
        let live: Vec<u64> = self.models.keys().copied().collect();
        let n = r.range(1, 5);
        let mut shadows: BTreeMap<u64, Model> = BTreeMap::new();
        let mut first_bad: Option<u64> = None;
        let mut batch = WriteBatch::new();
        let mut summary = Vec::new();
        for _ in 0..n {
            let gid = if live.is_empty() || r.chance(2) {
                MAX_ID + 1 + r.below(3)
            } else {
                live[r.below(live.len() as u64) as usize]
            };
            let op = gen_part(r);
            let (action, ok) = match self.models.get(&gid) {
                Some(m) => {
                    let shadow = shadows.entry(gid).or_insert_with(|| m.clone());
                    let a = tag(resolve(&op, shadow), gid);
                    let ok = shadow.apply(&a).is_ok();
                    (a, ok)
                }
                None => {
                    let a = tag(resolve(&op, &Model::default()), gid);
                    (a, false)
                }
            };
            if !ok && first_bad.is_none() {
                first_bad = Some(gid);
            }
            summary.push(format!(
                "g{gid} {}{}",
                action_summary(&action),
                if ok { "" } else { " [invalid]" }
            ));
            let Action::Save { hs, entries, snap } = &action else {
                unreachable!("a part is a save")
            };
            batch.save(gid, hs, entries, snap);
        }
        self.history.push(format!("write [{}]", summary.join("; ")));
        self.stats.parts += n as usize;
        let got = self.engine().write(&mut batch);
        if !batch.is_empty() {
            return Err(self.fail("write left parts in the batch".into()));
        }
        match (first_bad, got) {
            (None, Ok(())) => {
                self.stats.batches_ok += 1;
                for (gid, m) in shadows {
                    self.models.insert(gid, m);
                }
                Ok(())
            }
            (Some(g), Err(Error::Group { group_id, .. })) if group_id == g => {
                self.stats.batches_refused += 1;
                Ok(())
            }
            (want, got) => Err(self.fail(format!(
                "write: got {got:?}, the model expects {}",
                match want {
                    None => "Ok".to_string(),
                    Some(g) => format!("Error::Group naming group {g}"),
                }
            ))),
        }
    }

    /// One call through a group's handle.
    fn group_call(&mut self, r: &mut Rng) -> Result<(), String> {
        let live: Vec<u64> = self.models.keys().copied().collect();
        if live.is_empty() {
            return Ok(());
        }
        let gid = live[r.below(live.len() as u64) as usize];
        let op = gen_group_call(r);
        let model = self.models.get_mut(&gid).expect("a live group");
        let a = tag(resolve(&op, model), gid);
        self.history.push(format!("g{gid}: {}", action_summary(&a)));
        let want = model.apply(&a);
        let g = self.handles.get(&gid).expect("a handle per live group");
        let got: Result<(), raft::Error> = match &a {
            Action::Save { hs, entries, snap } => g.save(hs, entries, snap),
            Action::CreateSnapshot { index, cs, data } => {
                g.create_snapshot(*index, cs.as_ref(), data.clone())
            }
            Action::SetConfState(cs) => g.set_conf_state(cs),
            Action::Truncate(i) => g.truncate_entries_until(*i),
            Action::SetUint(k, v) => {
                g.set_uint(*k, *v);
                Ok(())
            }
            Action::Sync => g.sync(),
            other => unreachable!("not generated: {other:?}"),
        }
        .map_err(raft::Error::from);
        self.stats.calls += 1;
        if !outcome_matches(&want, &got) {
            return Err(self.fail(format!(
                "group {gid}: the engine returned {}, the model expects {want:?}",
                match &got {
                    Ok(()) => "Ok(())".to_string(),
                    Err(e) => format!("Err({}: {e})", kind_of(e)),
                }
            )));
        }
        Ok(())
    }

    fn create(&mut self, r: &mut Rng) -> Result<(), String> {
        let gid = r.range(1, MAX_ID);
        let raft_id = r.range(1, 9);
        self.history
            .push(format!("create_group({gid}, raft id {raft_id})"));
        let got = self.engine().create_group(gid, raft_id);
        match (self.models.contains_key(&gid), got) {
            (true, Err(Error::GroupExists { group_id })) if group_id == gid => Ok(()),
            (false, Ok(g)) => {
                if g.group_id() != gid {
                    return Err(
                        self.fail(format!("create_group({gid}) gave group {}", g.group_id()))
                    );
                }
                self.models.insert(gid, Model::for_group(raft_id, gid));
                self.handles.insert(gid, g);
                self.stats.created += 1;
                Ok(())
            }
            (exists, got) => Err(self.fail(format!(
                "create_group({gid}): got {:?} (the group exists: {exists})",
                got.map(|g| g.group_id())
            ))),
        }
    }

    fn remove(&mut self, r: &mut Rng) -> Result<(), String> {
        let gid = r.range(1, MAX_ID + 1);
        self.history.push(format!("remove_group({gid})"));
        let got = self.engine().remove_group(gid);
        match (self.models.contains_key(&gid), got) {
            (true, Ok(())) => {
                self.models.remove(&gid);
                if let Some(h) = self.handles.remove(&gid) {
                    self.dead.push(h);
                }
                self.stats.removed += 1;
                Ok(())
            }
            (false, Err(Error::UnknownGroup { group_id })) if group_id == gid => Ok(()),
            (exists, got) => Err(self.fail(format!(
                "remove_group({gid}): got {got:?} (the group exists: {exists})"
            ))),
        }
    }

    fn reopen(&mut self, how: ReopenHow) -> Result<(), String> {
        self.history.push(format!("reopen({how:?})"));
        let e = self.engine.take().ok_or("no engine")?;
        let mode = match how {
            ReopenHow::Drop => {
                drop(e);
                RecoveryMode::TolerateTailCorruption
            }
            ReopenHow::Close => {
                e.close().map_err(|e| self.fail(format!("close: {e}")))?;
                RecoveryMode::TolerateTailCorruption
            }
            ReopenHow::Strict => {
                e.close().map_err(|e| self.fail(format!("close: {e}")))?;
                RecoveryMode::AbsoluteConsistency
            }
        };
        // The handles of the closed engine fail from now on.
        self.dead
            .extend(std::mem::take(&mut self.handles).into_values());
        let e = Engine::open_with(self.dir.path(), engine_opts(mode, self.sync, self.key))
            .map_err(|e| self.fail(format!("reopen: {e}")))?;
        for &gid in self.models.keys() {
            let g = e
                .group(gid)
                .ok_or_else(|| self.fail(format!("reopen: group {gid} is missing")))?;
            self.handles.insert(gid, g);
        }
        self.engine = Some(e);
        self.stats.reopens += 1;
        Ok(())
    }

    /// Everything observable against the models.
    fn check(&mut self) -> Result<(), String> {
        self.step += 1;
        let ids = self.engine().group_ids();
        let want: Vec<u64> = self.models.keys().copied().collect();
        if ids != want {
            return Err(self.fail(format!("group_ids(): got {ids:?}, want {want:?}")));
        }
        for (gid, m) in &self.models {
            let g = &self.handles[gid];
            if self.engine().group(*gid).map(|h| h.group_id()) != Some(*gid) {
                return Err(self.fail(format!("engine.group({gid}) is not group {gid}")));
            }
            check_state(g, m, self.step ^ gid, m.last() + 1 - m.first() <= 3_000)
                .map_err(|e| self.fail(format!("group {gid}: {e}")))?;
            self.stats.max_last = self.stats.max_last.max(m.last());
        }
        // A write through a dead handle fails too, whatever group now has its id (a removed
        // group's handle once wrote into the group created after it with the same id).
        let mut cs = ConfState::default();
        cs.voters = vec![99];
        for h in &self.dead {
            if h.last_index().is_ok()
                || h.initial_state().is_ok()
                || h.sync().is_ok()
                || h.set_conf_state(&cs).is_ok()
            {
                return Err(self.fail(format!(
                    "a handle of group {} of a closed engine or a removed group still works",
                    h.group_id()
                )));
            }
        }
        self.stats.max_groups = self.stats.max_groups.max(self.models.len());
        self.stats.steps += 1;
        Ok(())
    }

    /// Closes the engine; every group directory opens with `DiskStorage::open` and holds its
    /// group's state; then the engine root opens again, strictly, with the same state.
    fn finish(mut self) -> Result<Stats, String> {
        let e = self.engine.take().ok_or("no engine")?;
        e.close()
            .map_err(|e| self.fail(format!("final close: {e}")))?;
        self.dead
            .extend(std::mem::take(&mut self.handles).into_values());
        for (gid, m) in &self.models {
            let dir = self.dir.path().join("groups").join(gid.to_string());
            let opts = Options {
                encryption_key: self.key,
                recovery_mode: RecoveryMode::AbsoluteConsistency,
                ..Default::default()
            };
            let s = DiskStorage::open_with(&dir, opts).map_err(|e| {
                self.fail(format!(
                    "DiskStorage::open of group {gid}'s directory after a clean close: {e}"
                ))
            })?;
            check_state(&s, m, *gid, true)
                .map_err(|e| self.fail(format!("group {gid} opened as a DiskStorage: {e}")))?;
            s.close()
                .map_err(|e| self.fail(format!("DiskStorage::close: {e}")))?;
        }
        let e = Engine::open_with(
            self.dir.path(),
            engine_opts(RecoveryMode::AbsoluteConsistency, self.sync, self.key),
        )
        .map_err(|e| {
            self.fail(format!(
                "reopen of the engine after its groups were opened as DiskStorage: {e}"
            ))
        })?;
        for &gid in self.models.keys() {
            let g = e
                .group(gid)
                .ok_or_else(|| self.fail(format!("group {gid} missing")))?;
            self.handles.insert(gid, g);
        }
        self.engine = Some(e);
        self.check()?;
        let e = self.engine.take().ok_or("no engine")?;
        e.close().map_err(|e| self.fail(format!("close: {e}")))?;
        Ok(self.stats)
    }
}

fn action_summary(a: &Action) -> String {
    match a {
        Action::Save { hs, entries, snap } => {
            let mut s = String::from("save(");
            if *hs != HardState::default() {
                s += &format!("hs t{} v{} c{} ", hs.term, hs.vote, hs.commit);
            }
            if let (Some(f), Some(l)) = (entries.first(), entries.last()) {
                s += &format!(
                    "entries {}..={} terms {}..{} ",
                    f.index, l.index, f.term, l.term
                );
            }
            let md = snap.get_metadata();
            if md.index > 0 {
                s += &format!("snap i{} t{} {} B", md.index, md.term, snap.data.len());
            }
            s.trim_end().to_string() + ")"
        }
        Action::CreateSnapshot { index, cs, data } => format!(
            "create_snapshot({index}, cs {:?}, {} B)",
            cs.as_ref().map(|c| c.voters.clone()),
            data.len()
        ),
        Action::SetConfState(cs) => format!("set_conf_state({:?})", cs.voters),
        Action::Truncate(i) => format!("truncate_entries_until({i})"),
        Action::SetUint(k, v) => format!("set_uint({k:?}, {v})"),
        Action::Sync => "sync()".into(),
        other => format!("{other:?}"),
    }
}

/// One case: seed `case`; plaintext or encrypted, synced or not, by the seed. Case 0 first
/// writes 29,990 entries to group 1 so that its appends cross the 30,000-entry file boundary.
fn run_case(case: u64) -> Result<Stats, String> {
    let mut r = Rng(splitmix(0xE461_7E00 + case));
    let sync = case.is_multiple_of(3);
    let key = (case % 4 == 3).then_some([0x5a; 32]);
    let mut h = Harness::new(sync, key);
    for _ in 0..r.range(2, 5) {
        h.create(&mut r)?;
    }
    h.check()?;
    if case == 0 {
        if let std::collections::btree_map::Entry::Vacant(v) = h.models.entry(1) {
            v.insert(Model::for_group(1, 1));
            let g = h
                .engine
                .as_ref()
                .ok_or("no engine")?
                .create_group(1, 1)
                .map_err(|e| e.to_string())?;
            h.handles.insert(1, g);
        }
        let a = tag(
            Action::Save {
                hs: hard_state(1, 1, 100),
                entries: make_entries(1, 29_990, 1, 42),
                snap: Snapshot::default(),
            },
            1,
        );
        h.models
            .get_mut(&1)
            .expect("group 1")
            .apply(&a)
            .map_err(|e| format!("{e:?}"))?;
        let Action::Save { hs, entries, snap } = &a else {
            unreachable!()
        };
        let mut b = WriteBatch::new();
        b.save(1, hs, entries, snap);
        h.history.push("write [g1 entries 1..=29990]".into());
        h.engine()
            .write(&mut b)
            .map_err(|e| h.fail(format!("prefill: {e}")))?;
        h.check()?;
    }
    for _ in 0..STEPS {
        match r.pick(&[10, 8, 2, 1, 1]) {
            0 => h.batch(&mut r)?,
            1 => h.group_call(&mut r)?,
            2 => h.create(&mut r)?,
            3 => h.remove(&mut r)?,
            _ => {
                let how =
                    [ReopenHow::Close, ReopenHow::Drop, ReopenHow::Strict][r.below(3) as usize];
                h.reopen(how)?
            }
        }
        h.check()?;
    }
    h.finish()
}

#[test]
fn engine_model_random_sequences() {
    let started = Instant::now();
    let mut total = Stats::default();
    let cases = env::env_range(
        "RAFTWAL_ENGINE_MODEL_FIRST",
        "RAFTWAL_ENGINE_MODEL_CASES",
        CASES,
    );
    let count = cases.end - cases.start;
    for case in cases {
        let t = Instant::now();
        let s = run_case(case).unwrap_or_else(|e| panic!("case {case}: {e}"));
        eprintln!(
            "case {case}: {} steps, {} batches ok / {} refused ({} parts), {} group calls, \
             {} created, {} removed, {} reopens, up to {} groups, highest index {}, {:.1?}",
            s.steps,
            s.batches_ok,
            s.batches_refused,
            s.parts,
            s.calls,
            s.created,
            s.removed,
            s.reopens,
            s.max_groups,
            s.max_last,
            t.elapsed()
        );
        total.steps += s.steps;
        total.batches_ok += s.batches_ok;
        total.batches_refused += s.batches_refused;
        total.calls += s.calls;
        total.created += s.created;
        total.removed += s.removed;
        total.reopens += s.reopens;
    }
    eprintln!(
        "{count} cases: {} steps, {} batches written, {} refused, {} group calls, {} groups \
         created, {} removed, {} reopens, {:.1?}",
        total.steps,
        total.batches_ok,
        total.batches_refused,
        total.calls,
        total.created,
        total.removed,
        total.reopens,
        started.elapsed()
    );
    assert!(total.batches_refused > 0 && total.batches_ok > 0 && total.removed > 0);
}
