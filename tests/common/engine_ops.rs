//! The operations, the model and the checks shared by the engine's crash tests
//! (tests/engine_sigkill.rs, tests/engine_power_loss.rs; included with `#[path]`): a seeded
//! generator of valid operations on an engine root ([`Model::gen_op`]: batches across groups,
//! saves, received snapshots, compaction, conf states, `truncate_entries_until`, `set_uint`,
//! `sync`, group creation and removal; entries Normal or conf changes, [`op_entry`]), the model of
//! what the root holds after them (docs/DESIGN.md §4 per group, written for these tests,
//! independent of the engine's code), how to run an operation on an `Engine` ([`run_op`]), and the
//! check of an opened root against the model ([`check_root`]): every group exactly as the model
//! says, a group that the operation in flight at a crash changes as before it or as after it, and
//! every payload its own group's (entry payloads encode group, index and term:
//! `entries::entry_in_group`; snapshot data group and index).
//!
//! Each includer uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;
use raft::prelude::*;
use raft::{GetEntriesContext, Storage};
use raftwal::{DiskStorage, Engine, Error, GroupStorage, MetaInfo, WriteBatch};

#[path = "entries.rs"]
mod entries;

use entries::entry_in_group;

/// The type of group `gid`'s entry at `index` of `term` ([`op_entry`]): a conf change for about
/// one entry in eight (`truncate_entries_until` keeps their data), Normal otherwise.
pub fn entry_kind(gid: u64, index: u64, term: u64) -> EntryType {
    match splitmix(gid << 40 ^ index ^ term << 20 ^ 0xC0_FC4A) % 16 {
        0 => EntryType::EntryConfChange,
        1 => EntryType::EntryConfChangeV2,
        _ => EntryType::EntryNormal,
    }
}

/// Group `gid`'s entry at `index` of `term` as the generated operations write it:
/// `entries::entry_in_group` (its payload names group, index and term) of the type
/// [`entry_kind`] gives.
pub fn op_entry(index: u64, term: u64, gid: u64) -> Entry {
    let mut e = entry_in_group(index, term, gid);
    e.set_entry_type(entry_kind(gid, index, term));
    e
}

/// How many groups the generator keeps, and their ids.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Group ids are drawn from `1..=max_id` (removed ids come back).
    pub max_id: u64,
    pub min_live: usize,
    pub max_live: usize,
    /// Percent of parts that append 100-400 entries (the others 1-16).
    pub big_percent: u64,
}

// ---------------------------------------------------------------------------------------------
// deterministic content
// ---------------------------------------------------------------------------------------------

pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix(self.0.wrapping_mul(0xA076_1D64_78BD_642F))
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The data of a snapshot of group `gid` at `index`.
pub fn snap_data(gid: u64, index: u64) -> Bytes {
    let mut v = format!("snapshot g{gid}/i{index}/").into_bytes();
    let h = splitmix(gid ^ index << 16);
    v.extend((0..(h % 3_000)).map(|k| (h >> (k % 8 * 8)) as u8));
    Bytes::from(v)
}

/// The conf states a group goes through: its own id among the voters.
pub fn voters(gid: u64, n: u64) -> Vec<u64> {
    let mut v = vec![gid * 100, gid * 100 + 1 + n % 5];
    v.sort_unstable();
    v
}

pub fn conf_state(v: &[u64]) -> ConfState {
    let mut cs = ConfState::default();
    cs.voters = v.to_vec();
    cs
}

pub fn hard_state(h: (u64, u64, u64)) -> HardState {
    let mut hs = HardState::default();
    hs.term = h.0;
    hs.vote = h.1;
    hs.commit = h.2;
    hs
}

// ---------------------------------------------------------------------------------------------
// the model (independent of the engine's code)
// ---------------------------------------------------------------------------------------------

/// One group as docs/DESIGN.md §4 says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Raft id and checkpoint index (`MetaInfo::RaftId`, `MetaInfo::CheckpointIndex`) as the
    /// group's last journaled write (or its `sync`, or `create_snapshot`) made them durable.
    pub raft_id: u64,
    pub checkpoint: u64,
    /// The pair (raft id, checkpoint index) after each `set_uint` since then, oldest first: in
    /// memory, and durable at the latest with the group's next journaled write; a background
    /// checkpoint may store any of them before (docs/DESIGN.md §4: "`set_uint` changes the meta
    /// page in memory; it becomes durable with the next flushed write, `sync()`, `close()`").
    pub pending: Vec<(u64, u64)>,
    pub snap_index: u64,
    pub snap_term: u64,
    pub snap_voters: Vec<u64>,
    /// `terms[k]` is the term of entry `snap_index + 1 + k`.
    pub terms: Vec<u64>,
    /// (term, vote, commit); (0, 0, 0) never stored.
    pub hs: (u64, u64, u64),
    pub voters: Vec<u64>,
    /// `truncate_entries_until`: the Normal entries in `[snap_index + 1, cleared_to)` read back
    /// with empty data, every other entry with its own. Within `[snap_index + 1, last + 1]`: a
    /// truncation clears the entries the log holds when it runs (not those written after it,
    /// past where the log then ended, nor those an overwrite writes again).
    pub cleared_to: u64,
}

impl Group {
    pub fn new(raft_id: u64) -> Group {
        Group {
            raft_id,
            checkpoint: 0,
            pending: Vec::new(),
            snap_index: 0,
            snap_term: 0,
            snap_voters: Vec::new(),
            terms: Vec::new(),
            hs: (0, 0, 0),
            voters: Vec::new(),
            cleared_to: 1,
        }
    }

    /// Where the data cleared ends as a read can tell (the entries of group `gid`): one past
    /// the last Normal entry below [`Group::cleared_to`], `snap_index + 1` when there is none.
    pub fn cleared_seen(&self, gid: u64) -> u64 {
        let mut i = self.cleared_to.min(self.last() + 1);
        while i > self.snap_index + 1 {
            if entry_kind(gid, i - 1, self.term_at(i - 1)) == EntryType::EntryNormal {
                return i;
            }
            i -= 1;
        }
        self.snap_index + 1
    }

    /// Raft id and checkpoint index in memory (what `uint` returns).
    pub fn ints(&self) -> (u64, u64) {
        self.pending
            .last()
            .copied()
            .unwrap_or((self.raft_id, self.checkpoint))
    }

    /// The integers in memory made durable (a journaled write of the group, its `sync`).
    pub fn ints_durable(&mut self) {
        (self.raft_id, self.checkpoint) = self.ints();
        self.pending.clear();
    }

    /// Whether a read of raft id and checkpoint index after a crash may give `ints`.
    pub fn ints_may_be(&self, ints: (u64, u64)) -> bool {
        ints == (self.raft_id, self.checkpoint) || self.pending.contains(&ints)
    }
    pub fn last(&self) -> u64 {
        self.snap_index + self.terms.len() as u64
    }
    pub fn term_at(&self, i: u64) -> u64 {
        if i == self.snap_index {
            self.snap_term
        } else {
            self.terms[(i - self.snap_index - 1) as usize]
        }
    }
    pub fn last_term(&self) -> u64 {
        self.term_at(self.last())
    }
}

/// The groups of the root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub groups: BTreeMap<u64, Group>,
}

/// One part of a write: entries `first..first + terms.len()` with those terms, a hard state, and
/// optionally a received snapshot (index, term, conf state) applied first.
#[derive(Clone, Debug)]
pub struct Part {
    pub gid: u64,
    pub snapshot: Option<(u64, u64, Vec<u64>)>,
    pub first: u64,
    pub terms: Vec<u64>,
    pub hs: (u64, u64, u64),
}

#[derive(Clone, Debug)]
pub enum Op {
    Write(Vec<Part>),
    /// One part through the group's `GroupStorage::save`.
    Save(Part),
    CreateSnapshot {
        gid: u64,
        index: u64,
        cs: Option<Vec<u64>>,
    },
    SetConfState {
        gid: u64,
        voters: Vec<u64>,
    },
    Create {
        gid: u64,
        raft_id: u64,
    },
    Remove {
        gid: u64,
    },
    /// `GroupStorage::truncate_entries_until`: any index (0, at or below the snapshot, in the
    /// log, at or past its end).
    Truncate {
        gid: u64,
        index: u64,
    },
    /// `GroupStorage::set_uint` of raft id or checkpoint index (then `uint` and `checkpoint`
    /// must read it back).
    SetUint {
        gid: u64,
        key: MetaInfo,
        value: u64,
    },
    /// `GroupStorage::sync` of group `Some(gid)`, `Engine::sync` for `None`.
    Sync {
        gid: Option<u64>,
    },
}

impl Op {
    pub fn summary(&self) -> String {
        match self {
            Op::Write(parts) => format!(
                "write of {} parts (groups {:?})",
                parts.len(),
                parts.iter().map(|p| p.gid).collect::<Vec<_>>()
            ),
            Op::Save(p) => format!("save to group {}", p.gid),
            Op::CreateSnapshot { gid, index, .. } => {
                format!("create_snapshot({index}) of group {gid}")
            }
            Op::SetConfState { gid, .. } => format!("set_conf_state of group {gid}"),
            Op::Create { gid, .. } => format!("create_group({gid})"),
            Op::Remove { gid } => format!("remove_group({gid})"),
            Op::Truncate { gid, index } => {
                format!("truncate_entries_until({index}) of group {gid}")
            }
            Op::SetUint { gid, key, value } => {
                format!("set_uint({key:?}, {value}) of group {gid}")
            }
            Op::Sync { gid: Some(gid) } => format!("sync of group {gid}"),
            Op::Sync { gid: None } => "sync of the engine".to_string(),
        }
    }

    /// The groups the operation changes.
    pub fn groups(&self) -> Vec<u64> {
        let mut g: Vec<u64> = match self {
            Op::Write(parts) => parts.iter().map(|p| p.gid).collect(),
            Op::Save(p) => vec![p.gid],
            Op::CreateSnapshot { gid, .. }
            | Op::SetConfState { gid, .. }
            | Op::Create { gid, .. }
            | Op::Remove { gid }
            | Op::Truncate { gid, .. }
            | Op::SetUint { gid, .. }
            | Op::Sync { gid: Some(gid) } => vec![*gid],
            // Engine::sync journals no group's integers (only `GroupStorage::sync` does).
            Op::Sync { gid: None } => Vec::new(),
        };
        g.sort_unstable();
        g.dedup();
        g
    }
}

impl Model {
    pub fn apply_part(&mut self, p: &Part) {
        let g = self
            .groups
            .get_mut(&p.gid)
            .expect("a part for a live group");
        if let Some((i, t, v)) = &p.snapshot {
            g.snap_index = *i;
            g.snap_term = *t;
            g.snap_voters = v.clone();
            g.voters = v.clone();
            g.terms.clear();
            g.cleared_to = i + 1;
        }
        if !p.terms.is_empty() {
            g.terms.truncate((p.first - g.snap_index - 1) as usize);
            g.terms.extend_from_slice(&p.terms);
            // The entries written from `first` on carry their data.
            g.cleared_to = g.cleared_to.min(p.first);
        }
        if p.hs != (0, 0, 0) {
            g.hs = p.hs;
        }
        // Every part journals the group's integers set since its last journaled write.
        g.ints_durable();
    }

    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Write(parts) => parts.iter().for_each(|p| self.apply_part(p)),
            Op::Save(p) => self.apply_part(p),
            Op::CreateSnapshot { gid, index, cs } => {
                let g = self.groups.get_mut(gid).expect("live");
                let term = g.term_at(*index);
                g.terms.drain(..(index - g.snap_index) as usize);
                g.snap_index = *index;
                g.snap_term = term;
                g.snap_voters = cs.clone().unwrap_or_else(|| g.voters.clone());
                g.cleared_to = g.cleared_to.max(index + 1);
                // The meta page is stored durably with the snapshot, the integers in it.
                g.ints_durable();
            }
            Op::SetConfState { gid, voters } => {
                let g = self.groups.get_mut(gid).expect("live");
                g.voters = voters.clone();
                g.ints_durable();
            }
            Op::Create { gid, raft_id } => {
                self.groups.insert(*gid, Group::new(*raft_id));
            }
            Op::Remove { gid } => {
                self.groups.remove(gid);
            }
            Op::Truncate { gid, index } => {
                let g = self.groups.get_mut(gid).expect("live");
                // The entries the log holds now: not those written later past its end.
                g.cleared_to = g.cleared_to.max((*index).min(g.last() + 1));
                g.ints_durable();
            }
            Op::SetUint { gid, key, value } => {
                let g = self.groups.get_mut(gid).expect("live");
                let (mut raft_id, mut checkpoint) = g.ints();
                match key {
                    MetaInfo::RaftId => raft_id = *value,
                    MetaInfo::CheckpointIndex => checkpoint = *value,
                    // Ignored by the engine (not generated).
                    MetaInfo::GroupId | MetaInfo::SnapshotIndex | MetaInfo::SnapshotTerm => {}
                }
                if (raft_id, checkpoint) != g.ints() {
                    g.pending.push((raft_id, checkpoint));
                }
            }
            Op::Sync { gid: Some(gid) } => {
                self.groups.get_mut(gid).expect("live").ints_durable();
            }
            Op::Sync { gid: None } => {}
        }
    }

    /// A valid part for group `gid` as `self` (the batch so far applied) has it.
    pub fn gen_part(&self, r: &mut Rng, gid: u64, limits: &Limits) -> Part {
        let g = &self.groups[&gid];
        let (mut term, vote, commit) = g.hs;
        term = term.max(g.last_term()).max(1);
        let vote = if vote == 0 { 1 + r.below(3) } else { vote };
        let kind = r.below(100);
        let (snapshot, first, terms) = if kind < 4 {
            // a received snapshot (past the commit index), entries after it
            let i = g.last().max(commit) + r.range(1, 30);
            let t = term + r.below(2);
            term = t;
            let n = r.below(10);
            let v = voters(gid, i);
            (Some((i, t, v)), i + 1, vec![t; n as usize])
        } else if kind < 14 && g.last() > commit.max(g.snap_index) {
            // an overwrite of an uncommitted suffix, in a higher term
            let from = r.range(commit.max(g.snap_index) + 1, g.last());
            term += 1;
            let n = r.range(1, 12);
            (None, from, vec![term; n as usize])
        } else if kind < 22 {
            (None, g.last() + 1, Vec::new())
        } else {
            let n = if r.chance(limits.big_percent) {
                r.range(100, 400)
            } else {
                r.range(1, 16)
            };
            (None, g.last() + 1, vec![term; n as usize])
        };
        let last = if terms.is_empty() {
            snapshot.as_ref().map_or(g.last(), |s| s.0)
        } else {
            first + terms.len() as u64 - 1
        };
        let floor = snapshot.as_ref().map_or(commit, |s| s.0.max(commit));
        let new_commit = if r.chance(70) {
            r.range(floor.min(last), last)
        } else {
            floor.min(last)
        };
        Part {
            gid,
            snapshot,
            first,
            terms,
            hs: (term, vote, new_commit.max(commit.min(last))),
        }
    }

    /// The next operation: valid against `self`, drawn from `r`.
    pub fn gen_op(&self, r: &mut Rng, limits: &Limits) -> Op {
        let live: Vec<u64> = self.groups.keys().copied().collect();
        let free: Vec<u64> = (1..=limits.max_id)
            .filter(|g| !self.groups.contains_key(g))
            .collect();
        let pick = |r: &mut Rng, v: &[u64]| v[r.below(v.len() as u64) as usize];
        if live.len() < limits.min_live || (live.len() < limits.max_live && r.chance(3)) {
            let gid = pick(r, &free);
            return Op::Create {
                gid,
                raft_id: gid * 10 + 1,
            };
        }
        let x = r.below(100);
        if x < 3 && live.len() > limits.min_live {
            return Op::Remove {
                gid: pick(r, &live),
            };
        }
        if x < 8 {
            let gid = pick(r, &live);
            let g = &self.groups[&gid];
            let commit = g.hs.2;
            if commit > g.snap_index {
                let index = r.range(g.snap_index + 1, commit);
                let cs = r.chance(30).then(|| voters(gid, index + 7));
                return Op::CreateSnapshot { gid, index, cs };
            }
        }
        if x < 11 {
            let gid = pick(r, &live);
            return Op::SetConfState {
                gid,
                voters: voters(gid, r.next()),
            };
        }
        if x < 14 {
            let gid = pick(r, &live);
            let g = &self.groups[&gid];
            let (s, l) = (g.snap_index, g.last());
            let index = match r.below(12) {
                0 => 0,
                1 => r.range(0, s),
                2 => l,
                3 => l + 1,
                4 => l + r.range(2, 300),
                5 => u64::MAX,
                _ => r.range(s + 1, l + 1),
            };
            return Op::Truncate { gid, index };
        }
        if x < 16 {
            let gid = pick(r, &live);
            let g = &self.groups[&gid];
            let (key, value) = if r.chance(70) {
                (
                    MetaInfo::CheckpointIndex,
                    r.range(g.snap_index, g.snap_index.max(g.hs.2) + 3),
                )
            } else {
                (MetaInfo::RaftId, gid * 10 + r.range(1, 9))
            };
            return Op::SetUint { gid, key, value };
        }
        if x < 17 {
            let gid = r.chance(70).then(|| pick(r, &live));
            return Op::Sync { gid };
        }
        if x < 31 {
            let gid = pick(r, &live);
            return Op::Save(self.gen_part(r, gid, limits));
        }
        let mut shadow = self.clone();
        let mut parts = Vec::new();
        for _ in 0..r.range(1, 6) {
            let gid = pick(r, &live);
            let p = shadow.gen_part(r, gid, limits);
            shadow.apply_part(&p);
            parts.push(p);
        }
        Op::Write(parts)
    }

    // A line per group: `gid raft snap_i snap_t snap_voters hs_t hs_v hs_c voters last runs
    // cleared_to checkpoint pending`, voters as `a.b`, runs of terms as `first:term,...`, pending
    // integers as `raft:checkpoint,...`; `-` for an empty list.
    pub fn save(&self, path: &Path) {
        let mut out = String::new();
        let list = |v: &[u64]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(".")
            }
        };
        for (gid, g) in &self.groups {
            let mut runs = Vec::new();
            for (k, t) in g.terms.iter().enumerate() {
                if k == 0 || g.terms[k - 1] != *t {
                    runs.push(format!("{}:{t}", g.snap_index + 1 + k as u64));
                }
            }
            let pending = g
                .pending
                .iter()
                .map(|(r, c)| format!("{r}:{c}"))
                .collect::<Vec<_>>();
            let _ = writeln!(
                out,
                "{gid} {} {} {} {} {} {} {} {} {} {} {} {} {}",
                g.raft_id,
                g.snap_index,
                g.snap_term,
                list(&g.snap_voters),
                g.hs.0,
                g.hs.1,
                g.hs.2,
                list(&g.voters),
                g.last(),
                if runs.is_empty() {
                    "-".to_string()
                } else {
                    runs.join(",")
                },
                g.cleared_to,
                g.checkpoint,
                if pending.is_empty() {
                    "-".to_string()
                } else {
                    pending.join(",")
                }
            );
        }
        std::fs::write(path, out).expect("write the model");
    }

    pub fn load(path: &Path) -> Model {
        let text = std::fs::read_to_string(path).expect("read the model");
        let mut m = Model::default();
        let list = |s: &str| -> Vec<u64> {
            if s == "-" {
                Vec::new()
            } else {
                s.split('.').map(|x| x.parse().unwrap()).collect()
            }
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let n = |k: usize| -> u64 { f[k].parse().unwrap() };
            let (gid, snap_index, last) = (n(0), n(2), n(9));
            let mut terms = Vec::new();
            if f[10] != "-" {
                let runs: Vec<(u64, u64)> = f[10]
                    .split(',')
                    .map(|r| {
                        let (a, b) = r.split_once(':').unwrap();
                        (a.parse().unwrap(), b.parse().unwrap())
                    })
                    .collect();
                for (k, (from, t)) in runs.iter().enumerate() {
                    let to = runs.get(k + 1).map_or(last, |r| r.0 - 1);
                    terms.extend((*from..=to).map(|_| *t));
                }
            }
            let pending = if f[13] == "-" {
                Vec::new()
            } else {
                f[13]
                    .split(',')
                    .map(|p| {
                        let (a, b) = p.split_once(':').unwrap();
                        (a.parse().unwrap(), b.parse().unwrap())
                    })
                    .collect()
            };
            m.groups.insert(
                gid,
                Group {
                    raft_id: n(1),
                    checkpoint: n(12),
                    pending,
                    snap_index,
                    snap_term: n(3),
                    snap_voters: list(f[4]),
                    hs: (n(5), n(6), n(7)),
                    voters: list(f[8]),
                    terms,
                    cleared_to: n(11),
                },
            );
        }
        m
    }
}

// ---------------------------------------------------------------------------------------------
// running and checking
// ---------------------------------------------------------------------------------------------

pub fn part_parts(p: &Part) -> (HardState, Vec<Entry>, Snapshot) {
    let entries: Vec<Entry> = p
        .terms
        .iter()
        .enumerate()
        .map(|(k, t)| op_entry(p.first + k as u64, *t, p.gid))
        .collect();
    let mut snap = Snapshot::default();
    if let Some((i, t, v)) = &p.snapshot {
        snap.mut_metadata().index = *i;
        snap.mut_metadata().term = *t;
        snap.mut_metadata().set_conf_state(conf_state(v));
        snap.data = snap_data(p.gid, *i);
    }
    (hard_state(p.hs), entries, snap)
}

pub fn run_op(e: &Engine, op: &Op) -> Result<(), Error> {
    let group = |gid: &u64| {
        e.group(*gid).unwrap_or_else(|| {
            panic!(
                "child: group {gid} is missing (groups {:?}; the engine's sync() says {:?})",
                e.group_ids(),
                e.sync()
            )
        })
    };
    match op {
        Op::Write(parts) => {
            let mut b = WriteBatch::new();
            for p in parts {
                let (hs, entries, snap) = part_parts(p);
                b.save(p.gid, &hs, &entries, &snap);
            }
            e.write(&mut b)
        }
        Op::Save(p) => {
            let (hs, entries, snap) = part_parts(p);
            group(&p.gid).save(&hs, &entries, &snap)
        }
        Op::CreateSnapshot { gid, index, cs } => {
            let cs = cs.as_ref().map(|v| conf_state(v));
            group(gid).create_snapshot(*index, cs.as_ref(), snap_data(*gid, *index))
        }
        Op::SetConfState { gid, voters } => group(gid).set_conf_state(&conf_state(voters)),
        Op::Create { gid, raft_id } => e.create_group(*gid, *raft_id).map(drop),
        Op::Remove { gid } => e.remove_group(*gid),
        Op::Truncate { gid, index } => group(gid).truncate_entries_until(*index),
        Op::SetUint { gid, key, value } => {
            let g = group(gid);
            g.set_uint(*key, *value);
            assert_eq!(g.uint(*key), *value, "group {gid}: uint after set_uint");
            if *key == MetaInfo::CheckpointIndex {
                assert_eq!(
                    g.checkpoint()?,
                    *value,
                    "group {gid}: checkpoint after set_uint"
                );
            }
            Ok(())
        }
        Op::Sync { gid: Some(gid) } => group(gid).sync(),
        Op::Sync { gid: None } => e.sync(),
    }
}

/// The meta integers of a group's storage (`GroupStorage` and `DiskStorage` alike).
pub trait Uints {
    fn get_uint(&self, key: MetaInfo) -> u64;
    fn get_checkpoint(&self) -> Result<u64, Error>;
}

impl Uints for GroupStorage {
    fn get_uint(&self, key: MetaInfo) -> u64 {
        self.uint(key)
    }
    fn get_checkpoint(&self) -> Result<u64, Error> {
        self.checkpoint()
    }
}

impl Uints for DiskStorage {
    fn get_uint(&self, key: MetaInfo) -> u64 {
        self.uint(key)
    }
    fn get_checkpoint(&self) -> Result<u64, Error> {
        self.checkpoint()
    }
}

/// A group of an open root as read back: every entry's type and payload checked against its
/// group, index and term (the data of Normal entries a truncation cleared a prefix of the log,
/// empty), the meta integers; then compared with the candidates (the model's states it may be
/// in). Returns the candidate it matched, its integers as read (durable now).
pub fn check_group<S: Storage + Uints>(s: &S, gid: u64, want: &[&Group]) -> Result<Group, String> {
    let first = s.first_index().map_err(|e| format!("first_index: {e}"))?;
    let last = s.last_index().map_err(|e| format!("last_index: {e}"))?;
    let snap_index = first - 1;
    let mut terms = Vec::new();
    // Normal entries read back with their data cleared (`truncate_entries_until`): those of a
    // prefix of the log. `cleared_to`: one past the last of them.
    let mut cleared_to = first;
    let mut kept_normal = None;
    let mut lo = first;
    while lo <= last {
        let hi = (lo + 2_000).min(last + 1);
        let got = s
            .entries(lo, hi, None, GetEntriesContext::empty(false))
            .map_err(|e| format!("entries({lo}, {hi}): {e}"))?;
        if got.len() as u64 != hi - lo {
            return Err(format!("entries({lo}, {hi}) gave {} entries", got.len()));
        }
        for (k, e) in got.iter().enumerate() {
            let i = lo + k as u64;
            let want = op_entry(i, e.term, gid);
            let normal = want.get_entry_type() == EntryType::EntryNormal;
            if e.get_entry_type() != want.get_entry_type() {
                return Err(format!(
                    "entry {i} (term {}) is a {:?}, group {gid}'s entry {i} of its term a {:?}",
                    e.term,
                    e.get_entry_type(),
                    want.get_entry_type()
                ));
            }
            // (Every entry written carries data.)
            let cleared = e.data.is_empty() && e.index == i;
            if cleared && !normal {
                return Err(format!(
                    "entry {i} (term {}), a {:?}, reads back with its data dropped",
                    e.term,
                    e.get_entry_type()
                ));
            }
            if cleared {
                if let Some(j) = kept_normal {
                    return Err(format!(
                        "entry {i} (term {}) reads back with its data dropped, but Normal entry \
                         {j} before it with its data: no truncation clears that",
                        e.term
                    ));
                }
                cleared_to = i + 1;
            } else if normal && kept_normal.is_none() {
                kept_normal = Some(i);
            }
            if e.index != i || (e.data != want.data && !cleared) || e.context != want.context {
                let tag = String::from_utf8_lossy(&e.data[..e.data.len().min(24)]).to_string();
                return Err(format!(
                    "entry {i} (term {}) is not group {gid}'s entry {i} of its term: index {}, \
                     payload starts {tag:?}",
                    e.term, e.index
                ));
            }
            if s.term(i).ok() != Some(e.term) {
                return Err(format!("term({i}) disagrees with entry {i}"));
            }
            terms.push(e.term);
        }
        lo = hi;
    }
    let st = s
        .initial_state()
        .map_err(|e| format!("initial_state: {e}"))?;
    let hs = (st.hard_state.term, st.hard_state.vote, st.hard_state.commit);
    let (mut snap_term, mut snap_voters) = (0, Vec::new());
    if snap_index > 0 {
        let sn = s
            .snapshot(0, 0)
            .map_err(|e| format!("snapshot(0, 0): {e}"))?;
        let md = sn.get_metadata();
        if md.index != snap_index || sn.data != snap_data(gid, snap_index) {
            return Err(format!(
                "snapshot at {} ({} bytes) is not group {gid}'s snapshot at {snap_index}: data \
                 starts {:?}",
                md.index,
                sn.data.len(),
                String::from_utf8_lossy(&sn.data[..sn.data.len().min(24)])
            ));
        }
        snap_term = md.term;
        snap_voters = md.get_conf_state().voters.clone();
        if s.term(snap_index).ok() != Some(snap_term) {
            return Err(format!("term({snap_index}) is not the snapshot's term"));
        }
    }
    let ints = (
        s.get_uint(MetaInfo::RaftId),
        s.get_uint(MetaInfo::CheckpointIndex),
    );
    let checkpoint = s
        .get_checkpoint()
        .map_err(|e| format!("checkpoint(): {e}"))?;
    if checkpoint != ints.1 {
        return Err(format!(
            "checkpoint() is {checkpoint}, uint(CheckpointIndex) {}",
            ints.1
        ));
    }
    let meta = (
        s.get_uint(MetaInfo::GroupId),
        s.get_uint(MetaInfo::SnapshotIndex),
        s.get_uint(MetaInfo::SnapshotTerm),
    );
    if meta != (gid, snap_index, snap_term) {
        return Err(format!(
            "uint(GroupId, SnapshotIndex, SnapshotTerm) is {meta:?}, not {:?}",
            (gid, snap_index, snap_term)
        ));
    }
    let seen = Group {
        raft_id: ints.0,
        checkpoint: ints.1,
        pending: Vec::new(),
        snap_index,
        snap_term,
        snap_voters,
        terms,
        hs,
        voters: st.conf_state.voters.clone(),
        cleared_to,
    };
    for w in want {
        if !w.ints_may_be(ints) {
            continue;
        }
        let mut found = (*w).clone();
        (found.raft_id, found.checkpoint) = ints;
        found.pending.clear();
        let mut w = found.clone();
        w.cleared_to = w.cleared_seen(gid);
        // The commit reported is at least the snapshot's index (its entries are committed).
        w.hs.2 = w.hs.2.max(w.snap_index);
        if w == seen {
            return Ok(found);
        }
    }
    Err(format!(
        "group {gid} holds none of the states it may be in:\n got  {}\n want {}",
        show(&seen),
        want.iter()
            .map(|w| {
                let mut w = (*w).clone();
                w.cleared_to = w.cleared_seen(gid);
                show(&w)
            })
            .collect::<Vec<_>>()
            .join("\n   or ")
    ))
}

pub fn show(g: &Group) -> String {
    format!(
        "snapshot {}@t{} cs {:?}, log [{}, {}] last term {}, hs {:?}, cs {:?}, data cleared \
         below {}, raft id and checkpoint {:?}{}",
        g.snap_index,
        g.snap_term,
        g.snap_voters,
        g.snap_index + 1,
        g.last(),
        g.terms.last().copied().unwrap_or(0),
        g.hs,
        g.voters,
        g.cleared_to,
        (g.raft_id, g.checkpoint),
        if g.pending.is_empty() {
            String::new()
        } else {
            format!(" (or, set since, {:?})", g.pending)
        }
    )
}

/// Checks the opened root `e` against `before` (the model after the acknowledged operations)
/// and, for the groups that `inflight` changes, the model after it: the set of groups, then
/// every group ([`check_group`]). Returns the model of what was found.
pub fn check_root(
    e: &Engine,
    before: &Model,
    inflight: Option<(&Op, &Model)>,
) -> Result<Model, String> {
    let touched = inflight.map(|(op, _)| op.groups()).unwrap_or_default();
    let mut found = Model::default();
    let ids = e.group_ids();
    let mut all: Vec<u64> = before.groups.keys().copied().collect();
    if let Some((_, after)) = inflight {
        all.extend(after.groups.keys());
    }
    all.sort_unstable();
    all.dedup();
    if let Some(gid) = ids.iter().find(|g| !all.contains(g)) {
        return Err(format!("group {gid} is there, but no operation created it"));
    }
    for gid in all {
        let b = before.groups.get(&gid);
        let a = inflight.and_then(|(_, after)| after.groups.get(&gid));
        let may_differ = touched.contains(&gid);
        let mut cands: Vec<&Group> = Vec::new();
        cands.extend(b);
        if may_differ {
            cands.extend(a);
        }
        if !ids.contains(&gid) {
            if b.is_some() && !(may_differ && a.is_none()) {
                return Err(format!(
                    "group {gid} is missing ({})",
                    if may_differ {
                        "the operation in flight does not remove it"
                    } else {
                        "untouched by the operation in flight"
                    }
                ));
            }
            continue;
        }
        if cands.is_empty() {
            return Err(format!("group {gid} is there, but it was removed"));
        }
        let g = e
            .group(gid)
            .ok_or_else(|| format!("group {gid} is listed but group({gid}) is None"))?;
        let got = check_group(&g, gid, &cands).map_err(|err| format!("group {gid}: {err}"))?;
        found.groups.insert(gid, got);
    }
    Ok(found)
}

/// Checks the opened root `e` when each group may be in any of the states that `window` (the
/// models after consecutive operations) gives it, from `floor[gid]` on for a group that has a
/// floor (an operation on it that is durable when it returns, such as its creation or removal,
/// returned there): the set of groups (a group absent in none of its states must be there, a
/// group present in none must not), then every group ([`check_group`]) against its states.
/// Returns the model of what was found.
pub fn check_root_window(
    e: &Engine,
    window: &[Model],
    floor: &BTreeMap<u64, usize>,
) -> Result<Model, String> {
    let ids = e.group_ids();
    let mut all: Vec<u64> = window
        .iter()
        .flat_map(|m| m.groups.keys().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    if let Some(gid) = ids.iter().find(|g| !all.contains(g)) {
        return Err(format!("group {gid} is there, but no operation created it"));
    }
    let mut found = Model::default();
    for gid in all {
        let from = floor.get(&gid).copied().unwrap_or(0).min(window.len() - 1);
        let states: Vec<Option<&Group>> =
            window[from..].iter().map(|m| m.groups.get(&gid)).collect();
        if !ids.contains(&gid) {
            if states.iter().any(Option::is_none) {
                continue;
            }
            return Err(format!(
                "group {gid} is missing, but it exists in every state it may be in ({} of them)",
                states.len()
            ));
        }
        let mut cands: Vec<&Group> = Vec::new();
        for g in states.into_iter().flatten() {
            if !cands.contains(&g) {
                cands.push(g);
            }
        }
        if cands.is_empty() {
            return Err(format!("group {gid} is there, but it was removed"));
        }
        let g = e
            .group(gid)
            .ok_or_else(|| format!("group {gid} is listed but group({gid}) is None"))?;
        let got = check_group(&g, gid, &cands).map_err(|err| format!("group {gid}: {err}"))?;
        found.groups.insert(gid, got);
    }
    Ok(found)
}
