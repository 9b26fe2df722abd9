//! SIGKILL durability of an engine root (SPEC §9 "Faults", §6): "after SIGKILL ... every part of
//! every durable commit is there, in its own group and no other; `create_group` and
//! `remove_group` are atomic under a crash (the group is whole or absent); a second `Engine` on
//! the same root, in this process or another, gets an error."
//!
//! `engine_sigkill_rounds` re-executes this test binary as a child process running only
//! `engine_sigkill_child` (selected with `--exact`, switched on by an environment variable;
//! without it the child test returns at once), as tests/sigkill.rs does for `DiskStorage`.
//!
//! The child opens the root (`sync_writes: true`; journal segments of 256 KiB and checkpoints every
//! MiB, so rounds rotate segments, recycle the spare and checkpoint in the background while they
//! are killed) and runs a deterministic sequence of operations drawn by [`gen_op`] from its seed
//! and the model of the root the parent hands it (`model.txt`, written by the parent): batches of
//! `Engine::write` with 1-6 parts across the groups (appends, overwrites of an uncommitted suffix
//! with a higher term, hard states), one group's `GroupStorage::save`, received snapshots,
//! `create_snapshot` (compaction), `set_conf_state`, `create_group`, `remove_group`. Before each
//! operation it prints `BEGIN n`, after it returned `ACK n` (one write per line). Entry payloads
//! encode group, index and term; snapshot data encodes group and index; conf states the group.
//!
//! The parent kills the child with SIGKILL at a seeded instant (after a number of
//! acknowledgements, a few lines more, a short delay; or right after a `BEGIN`, with the operation
//! in flight), drains the lines still in the pipe, and replays the same generator on its own
//! model (this file's [`Model`], independent of the engine's code) to know what operations
//! `1..=acked` did and what the one in flight (`BEGIN` without `ACK`) would do. It then opens the
//! root (in some rounds only after killing one to three more children during their `Engine::open`,
//! that is during recovery) and checks every group:
//!
//! * the set of groups is the model's after the acknowledged operations; a group being created
//!   in flight is absent or present and empty, one being removed is present (whole) or absent;
//! * every group not touched by the operation in flight is exactly the model's: first and last
//!   index, every entry (index, term, payload) and term, hard state, conf state, snapshot (index,
//!   term, conf state, data); a group touched by it is exactly as before it or exactly as after;
//! * every payload read is the one of its own group, index and term: an entry or snapshot of one
//!   group found in another is named as such.
//!
//! The parent's model then takes the state found, and the next round's child starts from it. Some
//! rounds the parent checks a copy of the killed root, so the next child itself recovers the root
//! a kill left. While a child holds the root, `Engine::open` in the parent must fail (`Locked`),
//! and the child checks the same within its own process. At the end the root is opened, checked
//! and closed cleanly, and every group directory must open with `DiskStorage::open` holding its
//! group's whole state.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::prelude::*;
use raft::{GetEntriesContext, Storage};
use raftwal::{DiskStorage, Engine, EngineOptions, Error, Options, RecoveryMode, WriteBatch};

const ENV_ROOT: &str = "RAFTWAL_ENGINE_SIGKILL_ROOT";
const ENV_SEED: &str = "RAFTWAL_ENGINE_SIGKILL_SEED";
const ENV_MODE: &str = "RAFTWAL_ENGINE_SIGKILL_MODE";
const CHILD_TEST: &str = "engine_sigkill_child";

const ROUNDS: u64 = 30;
/// Group ids are drawn from `1..=MAX_ID`; the child keeps between `MIN_LIVE` and `MAX_LIVE`.
const MAX_ID: u64 = 48;
const MIN_LIVE: usize = 8;
const MAX_LIVE: usize = 32;

fn engine_opts() -> EngineOptions {
    EngineOptions {
        journal_segment_bytes: 256 << 10,
        checkpoint_bytes: 1 << 20,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// deterministic content
// ---------------------------------------------------------------------------------------------

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

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
}

/// The payload of entry `index` of term `term` in group `gid`: a readable tag, then filler
/// derived from the three (mostly short; every 37th is 6 KiB).
fn payload(gid: u64, index: u64, term: u64) -> Bytes {
    let mut v = format!("g{gid}/i{index}/t{term}/").into_bytes();
    let h = splitmix(gid << 40 ^ index ^ term << 20);
    let extra = if h % 37 == 0 {
        6_000
    } else {
        (h % 64) as usize
    };
    v.extend((0..extra).map(|k| (h >> (k % 8 * 8)) as u8 ^ k as u8));
    Bytes::from(v)
}

fn entry(gid: u64, index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.data = payload(gid, index, term);
    if index % 5 == 0 {
        e.context = Bytes::from(format!("c{gid}/{index}"));
    }
    e
}

/// The data of a snapshot of group `gid` at `index`.
fn snap_data(gid: u64, index: u64) -> Bytes {
    let mut v = format!("snapshot g{gid}/i{index}/").into_bytes();
    let h = splitmix(gid ^ index << 16);
    v.extend((0..(h % 3_000)).map(|k| (h >> (k % 8 * 8)) as u8));
    Bytes::from(v)
}

/// The conf states a group goes through: its own id among the voters.
fn voters(gid: u64, n: u64) -> Vec<u64> {
    let mut v = vec![gid * 100, gid * 100 + 1 + n % 5];
    v.sort_unstable();
    v
}

fn conf_state(v: &[u64]) -> ConfState {
    let mut cs = ConfState::default();
    cs.voters = v.to_vec();
    cs
}

fn hard_state(h: (u64, u64, u64)) -> HardState {
    let mut hs = HardState::default();
    hs.term = h.0;
    hs.vote = h.1;
    hs.commit = h.2;
    hs
}

// ---------------------------------------------------------------------------------------------
// the model (independent of the engine's code)
// ---------------------------------------------------------------------------------------------

/// One group as SPEC §4 says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Group {
    raft_id: u64,
    snap_index: u64,
    snap_term: u64,
    snap_voters: Vec<u64>,
    /// `terms[k]` is the term of entry `snap_index + 1 + k`.
    terms: Vec<u64>,
    /// (term, vote, commit); (0, 0, 0) never stored.
    hs: (u64, u64, u64),
    voters: Vec<u64>,
}

impl Group {
    fn new(raft_id: u64) -> Group {
        Group {
            raft_id,
            snap_index: 0,
            snap_term: 0,
            snap_voters: Vec::new(),
            terms: Vec::new(),
            hs: (0, 0, 0),
            voters: Vec::new(),
        }
    }
    fn last(&self) -> u64 {
        self.snap_index + self.terms.len() as u64
    }
    fn term_at(&self, i: u64) -> u64 {
        if i == self.snap_index {
            self.snap_term
        } else {
            self.terms[(i - self.snap_index - 1) as usize]
        }
    }
    fn last_term(&self) -> u64 {
        self.term_at(self.last())
    }
}

/// The groups of the root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    groups: BTreeMap<u64, Group>,
}

/// One part of a write: entries `first..first + terms.len()` with those terms, a hard state, and
/// optionally a received snapshot (index, term, conf state) applied first.
#[derive(Clone, Debug)]
struct Part {
    gid: u64,
    snapshot: Option<(u64, u64, Vec<u64>)>,
    first: u64,
    terms: Vec<u64>,
    hs: (u64, u64, u64),
}

#[derive(Clone, Debug)]
enum Op {
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
}

impl Op {
    fn summary(&self) -> String {
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
        }
    }

    /// The groups the operation changes.
    fn groups(&self) -> Vec<u64> {
        let mut g: Vec<u64> = match self {
            Op::Write(parts) => parts.iter().map(|p| p.gid).collect(),
            Op::Save(p) => vec![p.gid],
            Op::CreateSnapshot { gid, .. }
            | Op::SetConfState { gid, .. }
            | Op::Create { gid, .. }
            | Op::Remove { gid } => vec![*gid],
        };
        g.sort_unstable();
        g.dedup();
        g
    }
}

impl Model {
    fn apply_part(&mut self, p: &Part) {
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
        }
        if !p.terms.is_empty() {
            g.terms.truncate((p.first - g.snap_index - 1) as usize);
            g.terms.extend_from_slice(&p.terms);
        }
        if p.hs != (0, 0, 0) {
            g.hs = p.hs;
        }
    }

    fn apply(&mut self, op: &Op) {
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
            }
            Op::SetConfState { gid, voters } => {
                self.groups.get_mut(gid).expect("live").voters = voters.clone();
            }
            Op::Create { gid, raft_id } => {
                self.groups.insert(*gid, Group::new(*raft_id));
            }
            Op::Remove { gid } => {
                self.groups.remove(gid);
            }
        }
    }

    /// A valid part for group `gid` as `self` (the batch so far applied) has it.
    fn gen_part(&self, r: &mut Rng, gid: u64) -> Part {
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
            let n = if r.chance(10) {
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
    fn gen_op(&self, r: &mut Rng) -> Op {
        let live: Vec<u64> = self.groups.keys().copied().collect();
        let free: Vec<u64> = (1..=MAX_ID)
            .filter(|g| !self.groups.contains_key(g))
            .collect();
        let pick = |r: &mut Rng, v: &[u64]| v[r.below(v.len() as u64) as usize];
        if live.len() < MIN_LIVE || (live.len() < MAX_LIVE && r.chance(3)) {
            let gid = pick(r, &free);
            return Op::Create {
                gid,
                raft_id: gid * 10 + 1,
            };
        }
        let x = r.below(100);
        if x < 3 && live.len() > MIN_LIVE {
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
        if x < 25 {
            let gid = pick(r, &live);
            return Op::Save(self.gen_part(r, gid));
        }
        let mut shadow = self.clone();
        let mut parts = Vec::new();
        for _ in 0..r.range(1, 6) {
            let gid = pick(r, &live);
            let p = shadow.gen_part(r, gid);
            shadow.apply_part(&p);
            parts.push(p);
        }
        Op::Write(parts)
    }

    // A line per group: `gid raft snap_i snap_t snap_voters hs_t hs_v hs_c voters last runs`,
    // voters as `a.b`, runs of terms as `first:term,...`.
    fn save(&self, path: &Path) {
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
            let _ = writeln!(
                out,
                "{gid} {} {} {} {} {} {} {} {} {} {}",
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
                }
            );
        }
        std::fs::write(path, out).expect("write the model");
    }

    fn load(path: &Path) -> Model {
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
            m.groups.insert(
                gid,
                Group {
                    raft_id: n(1),
                    snap_index,
                    snap_term: n(3),
                    snap_voters: list(f[4]),
                    hs: (n(5), n(6), n(7)),
                    voters: list(f[8]),
                    terms,
                },
            );
        }
        m
    }
}

// ---------------------------------------------------------------------------------------------
// the child
// ---------------------------------------------------------------------------------------------

fn line(s: &str) {
    let out = std::io::stdout();
    let mut o = out.lock();
    // one write per line: a line in the pipe is a complete acknowledgement
    o.write_all(format!("{s}\n").as_bytes()).unwrap();
    o.flush().unwrap();
}

fn part_parts(p: &Part) -> (HardState, Vec<Entry>, Snapshot) {
    let entries: Vec<Entry> = p
        .terms
        .iter()
        .enumerate()
        .map(|(k, t)| entry(p.gid, p.first + k as u64, *t))
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

fn run_op(e: &Engine, op: &Op) -> Result<(), Error> {
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
    }
}

/// The child: opens the root and runs the operations of its seed from the parent's model (mode
/// `write`), or only opens the root (mode `open`, killed during recovery). A no-op without the
/// environment variable.
#[test]
fn engine_sigkill_child() {
    let Ok(root) = std::env::var(ENV_ROOT) else {
        return;
    };
    let root = PathBuf::from(root);
    let seed: u64 = std::env::var(ENV_SEED).unwrap().parse().unwrap();
    let mode = std::env::var(ENV_MODE).unwrap();
    line("OPENING");
    let e = Engine::open_with(&root, engine_opts()).expect("child: open");
    line("OPENED");
    if mode == "open" {
        std::thread::sleep(Duration::from_secs(30));
        return;
    }
    assert!(
        matches!(Engine::open(&root), Err(Error::Locked { .. })),
        "child: a second Engine on the root in the same process must be refused"
    );
    let mut model = Model::load(&model_path(&root));
    let mut r = Rng(splitmix(seed));
    let started = Instant::now();
    for n in 1..=100_000u64 {
        if started.elapsed() > Duration::from_secs(40) {
            break;
        }
        let op = model.gen_op(&mut r);
        line(&format!("BEGIN {n}"));
        run_op(&e, &op).unwrap_or_else(|err| panic!("child: operation {n} {op:?}: {err}"));
        line(&format!("ACK {n}"));
        model.apply(&op);
    }
    line("DONE");
}

// ---------------------------------------------------------------------------------------------
// the parent
// ---------------------------------------------------------------------------------------------

/// Where the parent hands its model to the child: beside the root, not in it.
fn model_path(root: &Path) -> PathBuf {
    root.with_extension("model.txt")
}

struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn spawn(root: &Path, seed: u64, mode: &str) -> Spawned {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads", "1"])
        .env(ENV_ROOT, root)
        .env(ENV_SEED, seed.to_string())
        .env(ENV_MODE, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut l = String::new();
            match r.read_line(&mut l) {
                Ok(0) | Err(_) => break,
                // a line cut short by the kill is not an acknowledgement
                Ok(_) if l.ends_with('\n') => {
                    // The protocol's lines; anything else is libtest's own output (which puts
                    // "test engine_sigkill_child ... " before the first of them).
                    let l = l.trim_end();
                    let ours = ["OPENING", "OPENED", "BEGIN ", "ACK ", "DONE"];
                    if let Some(k) = ours.iter().filter_map(|p| l.find(p)).min() {
                        if tx.send(l[k..].to_string()).is_err() {
                            break;
                        }
                    }
                }
                Ok(_) => {}
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    Spawned {
        child,
        lines: rx,
        stderr,
    }
}

/// SIGKILLs the child and checks that it died of it.
fn kill(mut s: Spawned, what: &str) -> Vec<String> {
    s.child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    let status = s.child.wait().expect("wait");
    let rest: Vec<String> = s.lines.iter().collect();
    let err = s.stderr.join().unwrap_or_default();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{what}: the child did not die of SIGKILL: {status:?}\n--- child stderr ---\n{err}"
    );
    rest
}

fn next_line(s: &mut Spawned, what: &str) -> String {
    match s.lines.recv_timeout(Duration::from_secs(60)) {
        Ok(l) => l,
        Err(_) => {
            let _ = s.child.kill();
            let status = s.child.wait();
            let err = std::mem::replace(&mut s.stderr, std::thread::spawn(String::new))
                .join()
                .unwrap_or_default();
            panic!("{what}: the child stopped talking ({status:?})\n--- child stderr ---\n{err}")
        }
    }
}

/// What a killed writer acknowledged: the last `ACK` and the last `BEGIN`.
#[derive(Default)]
struct Acks {
    acked: u64,
    begun: u64,
}

impl Acks {
    fn take(&mut self, l: &str, what: &str) {
        if let Some(n) = l.strip_prefix("ACK ") {
            self.acked = n.parse().unwrap();
        } else if let Some(n) = l.strip_prefix("BEGIN ") {
            self.begun = n.parse().unwrap();
        } else {
            assert!(
                l != "DONE",
                "{what}: the writer finished before it was killed"
            );
        }
    }
}

/// A group of an open root as read back: every payload checked against its group, index and
/// term; then compared with the candidates (the model's states it may be in).
fn check_group<S: Storage>(s: &S, gid: u64, want: &[&Group]) -> Result<usize, String> {
    let first = s.first_index().map_err(|e| format!("first_index: {e}"))?;
    let last = s.last_index().map_err(|e| format!("last_index: {e}"))?;
    let snap_index = first - 1;
    let mut terms = Vec::new();
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
            let want = entry(gid, i, e.term);
            if e.index != i || e.data != want.data || e.context != want.context {
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
    let seen = Group {
        raft_id: 0,
        snap_index,
        snap_term,
        snap_voters,
        terms,
        hs,
        voters: st.conf_state.voters.clone(),
    };
    for (k, w) in want.iter().enumerate() {
        let mut w = (*w).clone();
        w.raft_id = 0;
        if w == seen {
            return Ok(k);
        }
    }
    Err(format!(
        "group {gid} holds none of the states it may be in:\n got  {}\n want {}",
        show(&seen),
        want.iter()
            .map(|w| show(w))
            .collect::<Vec<_>>()
            .join("\n   or ")
    ))
}

fn show(g: &Group) -> String {
    format!(
        "snapshot {}@t{} cs {:?}, log [{}, {}] last term {}, hs {:?}, cs {:?}",
        g.snap_index,
        g.snap_term,
        g.snap_voters,
        g.snap_index + 1,
        g.last(),
        g.terms.last().copied().unwrap_or(0),
        g.hs,
        g.voters
    )
}

/// Opens `root` and checks it against `before` (the acknowledged operations) and, for the groups
/// `inflight` changes, `after`. Returns the model of what was found.
fn verify(root: &Path, what: &str, before: &Model, inflight: Option<(&Op, &Model)>) -> Model {
    let e = Engine::open_with(root, engine_opts())
        .unwrap_or_else(|e| panic!("{what}: open after SIGKILL: {e}"));
    let touched = inflight.map(|(op, _)| op.groups()).unwrap_or_default();
    let mut found = Model::default();
    let ids = e.group_ids();
    let mut all: Vec<u64> = before.groups.keys().copied().collect();
    if let Some((_, after)) = inflight {
        all.extend(after.groups.keys());
    }
    all.sort_unstable();
    all.dedup();
    for &gid in ids.iter().filter(|g| !all.contains(g)) {
        panic!("{what}: group {gid} is there, but no operation created it");
    }
    for gid in all {
        let b = before.groups.get(&gid);
        let a = inflight.and_then(|(_, after)| after.groups.get(&gid));
        let may_differ = touched.contains(&gid);
        let present = ids.contains(&gid);
        let mut cands: Vec<&Group> = Vec::new();
        cands.extend(b);
        if may_differ {
            cands.extend(a);
        }
        if !present {
            assert!(
                b.is_none() || (may_differ && a.is_none()),
                "{what}: group {gid} is missing ({})",
                if may_differ {
                    "the operation in flight does not remove it"
                } else {
                    "untouched by the operation in flight"
                }
            );
            continue;
        }
        assert!(
            !cands.is_empty(),
            "{what}: group {gid} is there, but it was removed"
        );
        let g = e.group(gid).expect("a listed group");
        let k =
            check_group(&g, gid, &cands).unwrap_or_else(|err| panic!("{what}: group {gid}: {err}"));
        found.groups.insert(gid, cands[k].clone());
    }
    e.close().unwrap_or_else(|e| panic!("{what}: close: {e}"));
    found
}

/// Copies a root (its regular files and directories; the lock file too).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for ent in std::fs::read_dir(from).unwrap() {
        let ent = ent.unwrap();
        let (src, dst) = (ent.path(), to.join(ent.file_name()));
        if ent.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn test_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("raftwal-engine-sigkill")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

#[test]
fn engine_sigkill_rounds() {
    let started = Instant::now();
    let tmp = test_dir();
    let root = tmp.path().join("root");
    let mut model = Model::default();
    let (mut in_flight_kills, mut recovery_kills, mut copies, mut ops) = (0, 0, 0, 0u64);
    // Operations in flight found done, and found not done.
    let (mut done, mut undone) = (0, 0);
    for round in 0..ROUNDS {
        let what = format!("round {round}");
        let mut r = Rng(splitmix(0x5EED_0000 + round));
        let seed = splitmix(round ^ 0xC0FFEE);
        model.save(&model_path(&root));
        let mut child = spawn(&root, seed, "write");
        assert_eq!(next_line(&mut child, &what), "OPENING");
        assert_eq!(next_line(&mut child, &what), "OPENED");
        // Kill after `threshold` acknowledgements and `extra` more lines (then a short delay),
        // or at the first BEGIN after the threshold, with its operation in flight.
        let threshold = r.range(20, 1_200);
        let extra = r.below(4);
        let at_begin = r.chance(40);
        let delay = Duration::from_micros(r.below(2_000));
        let mut acks = Acks::default();
        let mut after_threshold = None;
        loop {
            let l = next_line(&mut child, &what);
            acks.take(&l, &what);
            if acks.acked >= threshold {
                let n = after_threshold.get_or_insert(0);
                *n += 1;
                if (at_begin && l.starts_with("BEGIN ")) || (!at_begin && *n > extra) {
                    break;
                }
            }
        }
        if !at_begin {
            std::thread::sleep(delay);
        }
        assert!(
            matches!(
                Engine::open_with(&root, engine_opts()),
                Err(Error::Locked { .. })
            ),
            "{what}: a second Engine on the root of a running child must be refused"
        );
        for l in kill(child, &what) {
            acks.take(&l, &what);
        }
        // The generator replayed: the acknowledged operations, and the one in flight.
        let mut g = Rng(splitmix(seed));
        let mut before = model.clone();
        for _ in 0..acks.acked {
            let op = before.gen_op(&mut g);
            before.apply(&op);
        }
        ops += acks.acked;
        let inflight = (acks.begun > acks.acked).then(|| {
            let op = before.gen_op(&mut g);
            let mut after = before.clone();
            after.apply(&op);
            (op, after)
        });
        in_flight_kills += usize::from(inflight.is_some());
        // Kills during recovery: the next open must recover from those too.
        let kills = if r.chance(35) { r.range(1, 3) } else { 0 };
        for k in 0..kills {
            let mut c = spawn(&root, 0, "open");
            assert_eq!(next_line(&mut c, &what), "OPENING");
            std::thread::sleep(Duration::from_micros(r.below(8_000)));
            let rest = kill(c, &format!("{what}, recovery kill {k}"));
            recovery_kills += usize::from(!rest.iter().any(|l| l == "OPENED"));
        }
        // Some rounds check a copy, and the next child recovers the killed root itself.
        let check_copy = r.chance(40);
        let checked = if check_copy {
            copies += 1;
            let copy = tmp.path().join(format!("copy{round}"));
            copy_tree(&root, &copy);
            std::fs::remove_file(copy.join("LOCK")).ok();
            copy
        } else {
            root.clone()
        };
        let found = verify(
            &checked,
            &what,
            &before,
            inflight.as_ref().map(|(op, after)| (op, after)),
        );
        if check_copy {
            std::fs::remove_dir_all(&checked).unwrap();
        }
        eprintln!(
            "{what}: killed after {} acknowledged operations{}, {} groups, {} recovery kills, \
             checked {}, {:.1?}",
            acks.acked,
            match &inflight {
                Some((op, _)) => format!(" with a {} in flight", op.summary()),
                None => String::new(),
            },
            found.groups.len(),
            kills,
            if check_copy { "a copy" } else { "the root" },
            started.elapsed()
        );
        if let Some((_, after)) = &inflight {
            if found == *after {
                done += 1;
            } else if found == before {
                undone += 1;
            }
        }
        model = found;
    }
    // A clean close: every group directory is a DiskStorage directory with its group's state.
    let e = Engine::open_with(&root, engine_opts()).expect("final open");
    assert_eq!(
        e.group_ids(),
        model.groups.keys().copied().collect::<Vec<_>>()
    );
    for (gid, g) in &model.groups {
        check_group(&e.group(*gid).unwrap(), *gid, &[g])
            .unwrap_or_else(|err| panic!("final: group {gid}: {err}"));
    }
    e.close().expect("final close");
    for (gid, g) in &model.groups {
        let dir = root.join("groups").join(gid.to_string());
        let s = DiskStorage::open_with(
            &dir,
            Options {
                recovery_mode: RecoveryMode::AbsoluteConsistency,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("DiskStorage::open of group {gid} after a clean close: {e}"));
        check_group(&s, *gid, &[g])
            .unwrap_or_else(|err| panic!("group {gid} as a DiskStorage: {err}"));
        assert_eq!(
            s.uint(raftwal::MetaInfo::RaftId),
            g.raft_id,
            "group {gid}'s raft id"
        );
        assert_eq!(
            s.uint(raftwal::MetaInfo::GroupId),
            *gid,
            "group {gid}'s group id"
        );
        s.close().unwrap();
    }
    eprintln!(
        "{ROUNDS} rounds, {ops} operations acknowledged, {in_flight_kills} kills with an operation \
         in flight ({done} found done, {undone} not done), {recovery_kills} kills during \
         recovery, {copies} copies checked, {} groups at the end, {:.1?}",
        model.groups.len(),
        started.elapsed()
    );
    assert!(
        in_flight_kills > 0,
        "no kill landed with an operation in flight"
    );
}
