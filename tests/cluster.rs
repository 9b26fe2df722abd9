//! A three-node raft-rs cluster on `DiskStorage`, driven deterministically in one thread.
//!
//! Each node is a `RawNode<DiskStorage>` in its own temporary directory. Messages travel through an
//! in-memory queue that is drained completely between ticks, so as long as the leader is alive no
//! follower ever reaches its election timeout: after the first election the leader never changes,
//! and every assertion has one deterministic outcome. No assertion depends on timing. Ready
//! handling, state machine and raft config are the cluster example's (`examples/cluster/ready.rs`,
//! `shared.rs`); this file adds the apply trace and the checks.
//!
//! Every node keeps a state machine (the applied data entries, in order, with their indexes) and an
//! apply trace (every committed entry handed to it, and every snapshot installed, across restarts).
//! The restarted node's state machine is *rebuilt from its reopened directory* (snapshot data plus
//! log entries up to the stored checkpoint) and must equal the one it had before it stopped; raft
//! then resumes from `Config { applied: checkpoint }`. A wrong checkpoint shows up as an index
//! applied twice or one skipped in the trace; a wrong log shows up as a rebuilt state that differs.
//!
//! * `follower_restart_catches_up_from_checkpoint`: 300 proposals, a follower stops (its RawNode
//!   and DiskStorage are dropped), 100 more, it restarts from its directory and catches up through
//!   ordinary appends, 50 more. All state machines, logs and hard states must agree, before and
//!   after reopening every directory.
//! * `lagging_follower_catches_up_by_snapshot`: while a follower is down the leader takes a local
//!   snapshot with `create_snapshot` (compacting its log past the follower's last entry), so the
//!   restarted follower can only catch up through a `MsgSnapshot`, which it persists with
//!   `save(hs, entries, snapshot)`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::prelude::*;
use raft::{GetEntriesContext, RawNode, StateRole, Storage};
use raftwal::{DiskStorage, MetaInfo, Options};

type Res<T> = Result<T, String>;

const IDS: [u64; 3] = [1, 2, 3];

fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

#[path = "../examples/cluster/ready.rs"]
mod ready;
#[path = "../examples/cluster/shared.rs"]
mod shared;

use shared::{config, report_delivery, StateMachine};

/// What happened to a node's state machine, across all its incarnations.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Event {
    /// A committed entry was applied.
    Entry(u64),
    /// A snapshot at this index replaced the state machine.
    Snapshot(u64),
    /// The node restarted; raft resumes after this checkpoint.
    Restart(u64),
}

/// Walks a trace and checks that every index was applied exactly once and in order, with jumps
/// only through snapshots. Returns the last applied index.
fn check_trace(trace: &[Event]) -> Res<u64> {
    let mut cur = 0u64;
    for (pos, ev) in trace.iter().enumerate() {
        match *ev {
            Event::Entry(i) if i == cur + 1 => cur = i,
            Event::Entry(i) if i <= cur => {
                return Err(format!(
                    "trace[{pos}]: index {i} applied again (already at {cur})"
                ))
            }
            Event::Entry(i) => {
                return Err(format!(
                    "trace[{pos}]: index {i} applied after {cur}: {} missed",
                    i - cur - 1
                ))
            }
            Event::Snapshot(i) if i > cur => cur = i,
            Event::Snapshot(i) => {
                return Err(format!(
                    "trace[{pos}]: snapshot {i} installed at applied {cur}"
                ))
            }
            Event::Restart(c) if c == cur => {}
            Event::Restart(c) => {
                return Err(format!(
                    "trace[{pos}]: restart at checkpoint {c}, but applied was {cur}"
                ))
            }
        }
    }
    Ok(cur)
}

// ---------------------------------------------------------------------------------------------
// A node and the cluster around it.
// ---------------------------------------------------------------------------------------------

struct Node {
    id: u64,
    dir: PathBuf,
    /// `None` while the node is stopped.
    raw: Option<RawNode<DiskStorage>>,
    sm: StateMachine,
    trace: Vec<Event>,
    /// (index, term) of every snapshot this node received and persisted through `save`.
    snapshots_received: Vec<(u64, u64)>,
}

/// Where a reopened node resumes: its stored checkpoint, but never below its snapshot (a
/// snapshot from the leader is applied whatever the checkpoint says, and the checkpoint moved
/// to it reaches the disk only with the next flushed write).
fn resume_index(store: &DiskStorage) -> Res<u64> {
    let checkpoint = store.checkpoint().map_err(err("checkpoint"))?;
    Ok(checkpoint.max(store.uint(MetaInfo::SnapshotIndex)))
}

/// Rebuilds a state machine from a directory: the snapshot's data, then every log entry up to the
/// stored checkpoint.
fn rebuild(store: &DiskStorage) -> Res<StateMachine> {
    let checkpoint = resume_index(store)?;
    let snap_index = store.uint(MetaInfo::SnapshotIndex);
    let mut sm = if snap_index > 0 {
        let snap = store.snapshot(0, 0).map_err(err("snapshot() on reopen"))?;
        let sm = StateMachine::decode(&snap.data)?;
        if sm.applied != snap.get_metadata().index {
            return Err(format!(
                "snapshot data says applied {}, metadata index {}",
                sm.applied,
                snap.get_metadata().index
            ));
        }
        sm
    } else {
        StateMachine::default()
    };
    if checkpoint > sm.applied {
        let ents = store
            .entries(
                sm.applied + 1,
                checkpoint + 1,
                None,
                GetEntriesContext::empty(false),
            )
            .map_err(err("entries() for replay"))?;
        for e in ents {
            if e.index != sm.applied + 1 {
                return Err(format!("replay: entry {} after {}", e.index, sm.applied));
            }
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                sm.data.push((e.index, e.data.clone()));
            }
            sm.applied = e.index;
        }
    }
    if sm.applied != checkpoint {
        return Err(format!(
            "rebuilt to {} but checkpoint is {checkpoint}",
            sm.applied
        ));
    }
    Ok(sm)
}

fn open_raw(id: u64, dir: &Path, opts: Options) -> Res<(RawNode<DiskStorage>, StateMachine)> {
    let store = DiskStorage::open_with(dir, opts).map_err(err("DiskStorage::open_with"))?;
    let rs = store.initial_state().map_err(err("initial_state"))?;
    if !rs.initialized() {
        // Fresh directory: every node starts with the same membership (as raft-rs's
        // MemStorage::new_with_conf_state does) and an empty log.
        store
            .set_conf_state(&ConfState::from((IDS.to_vec(), vec![])))
            .map_err(err("set_conf_state"))?;
    }
    let sm = rebuild(&store)?;
    let checkpoint = resume_index(&store)?;
    let raw =
        RawNode::new(&config(id, checkpoint), store, &logger()).map_err(err("RawNode::new"))?;
    Ok((raw, sm))
}

/// What a Ready changes in a node besides its store: the state machine, the apply trace, and
/// the snapshots received.
struct Applier<'a> {
    sm: &'a mut StateMachine,
    trace: &'a mut Vec<Event>,
    snapshots_received: &'a mut Vec<(u64, u64)>,
}

impl ready::Apply for Applier<'_> {
    type Error = String;

    fn install(&mut self, snap: &Snapshot) -> Res<()> {
        let (index, term) = (snap.get_metadata().index, snap.get_metadata().term);
        let restored = StateMachine::decode(&snap.data)?;
        if restored.applied != index {
            return Err(format!(
                "snapshot {index} carries a state machine at {}",
                restored.applied
            ));
        }
        *self.sm = restored;
        self.trace.push(Event::Snapshot(index));
        self.snapshots_received.push((index, term));
        Ok(())
    }

    /// Records every entry in the trace, which `check_trace` judges; applies data entries.
    fn apply(&mut self, _: &RawNode<DiskStorage>, e: Entry, _: Option<&ConfState>) -> Res<()> {
        self.trace.push(Event::Entry(e.index));
        if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
            self.sm.data.push((e.index, e.data));
        }
        self.sm.applied = e.index;
        Ok(())
    }
}

impl Node {
    /// Handles one Ready (`ready::handle_ready`). Returns whether there was one.
    fn handle_ready(&mut self, out: &mut VecDeque<Message>) -> Res<bool> {
        let Node {
            raw,
            sm,
            trace,
            snapshots_received,
            ..
        } = self;
        let Some(raw) = raw.as_mut() else {
            return Ok(false);
        };
        let mut app = Applier {
            sm,
            trace,
            snapshots_received,
        };
        Ok(ready::handle_ready(raw, &mut app, out)?.is_some())
    }

    fn raw(&self) -> &RawNode<DiskStorage> {
        self.raw
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is stopped", self.id))
    }

    fn store(&self) -> &DiskStorage {
        self.raw().store()
    }
}

struct Cluster {
    nodes: Vec<Node>,
    queue: VecDeque<Message>,
    /// Messages dropped because their target was down.
    dropped: usize,
}

impl Cluster {
    fn new(dirs: &[PathBuf]) -> Res<Cluster> {
        let mut nodes = Vec::new();
        for (&id, dir) in IDS.iter().zip(dirs) {
            let (raw, sm) = open_raw(id, dir, Options::default())?;
            nodes.push(Node {
                id,
                dir: dir.clone(),
                raw: Some(raw),
                sm,
                trace: Vec::new(),
                snapshots_received: Vec::new(),
            });
        }
        Ok(Cluster {
            nodes,
            queue: VecDeque::new(),
            dropped: 0,
        })
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.raw.is_some())
    }

    /// Handles every Ready and delivers every message until nothing is left to do.
    fn settle(&mut self) -> Res<()> {
        for _ in 0..100_000 {
            let mut busy = false;
            for n in &mut self.nodes {
                busy |= n.handle_ready(&mut self.queue)?;
            }
            let msgs: Vec<Message> = self.queue.drain(..).collect();
            busy |= !msgs.is_empty();
            for m in msgs {
                let (from, to, is_snap) =
                    (m.from, m.to, m.get_msg_type() == MessageType::MsgSnapshot);
                let delivered = match self.node_mut(to).raw.as_mut() {
                    Some(raw) => {
                        raw.step(m)
                            .map_err(|e| format!("node {to} step from {from}: {e}"))?;
                        true
                    }
                    None => false,
                };
                if !delivered {
                    self.dropped += 1;
                }
                if let Some(sender) = self.node_mut(from).raw.as_mut() {
                    report_delivery(sender, to, delivered, is_snap);
                }
            }
            if !busy {
                return Ok(());
            }
        }
        Err("cluster did not settle in 100,000 rounds".into())
    }

    /// One tick on every live node, then settle.
    fn tick(&mut self) -> Res<()> {
        for n in &mut self.nodes {
            if let Some(raw) = n.raw.as_mut() {
                raw.tick();
            }
        }
        self.settle()
    }

    fn leader(&self) -> Option<u64> {
        let leaders: Vec<&Node> = self
            .live()
            .filter(|n| n.raw().raft.state == StateRole::Leader)
            .collect();
        leaders
            .into_iter()
            .max_by_key(|n| n.raw().raft.term)
            .map(|n| n.id)
    }

    fn elect(&mut self) -> Res<u64> {
        for _ in 0..1_000 {
            self.tick()?;
            if let Some(l) = self.leader() {
                // Let the new leader's empty entry commit everywhere.
                self.settle()?;
                return Ok(l);
            }
        }
        Err("no leader after 1,000 ticks".into())
    }

    /// Ticks until `done` holds, at most `max_ticks` times.
    fn run_until(&mut self, max_ticks: usize, done: impl Fn(&Cluster) -> bool) -> Res<()> {
        for _ in 0..max_ticks {
            if done(self) {
                return Ok(());
            }
            self.tick()?;
        }
        if done(self) {
            Ok(())
        } else {
            Err(format!("condition not reached after {max_ticks} ticks"))
        }
    }

    /// Proposes `items` through `leader` in batches, settling (and ticking once) after each.
    fn propose_all(&mut self, leader: u64, items: &[String], batch: usize) -> Res<()> {
        for chunk in items.chunks(batch) {
            let raw = self
                .node_mut(leader)
                .raw
                .as_mut()
                .ok_or("leader is stopped")?;
            if raw.raft.state != StateRole::Leader {
                return Err(format!("node {leader} is no longer leader"));
            }
            for item in chunk {
                raw.propose(vec![], item.clone().into_bytes())
                    .map_err(err("propose"))?;
            }
            self.settle()?;
            self.tick()?;
        }
        let last = self.node(leader).raw().raft.raft_log.last_index();
        self.run_until(100, |c| c.node(leader).sm.applied >= last)
    }

    fn stop(&mut self, id: u64) {
        let n = self.node_mut(id);
        // Dropping the RawNode drops its DiskStorage: flushed, lock released.
        drop(n.raw.take());
        self.queue.retain(|m| m.to != id && m.from != id);
    }

    /// Reopens a stopped node from its directory. Returns its checkpoint. The state machine is
    /// rebuilt from the directory and must equal the one the node had when it stopped.
    fn restart(&mut self, id: u64, opts: Options) -> Res<u64> {
        let n = self.node_mut(id);
        if n.raw.is_some() {
            return Err(format!("node {id} is running"));
        }
        let (raw, rebuilt) = open_raw(id, &n.dir, opts)?;
        let checkpoint = resume_index(raw.store())?;
        if rebuilt != n.sm {
            return Err(format!(
                "node {id}: state rebuilt from its directory (applied {}, {} data entries) differs from \
                 the state it had when it stopped (applied {}, {} data entries)",
                rebuilt.applied,
                rebuilt.data.len(),
                n.sm.applied,
                n.sm.data.len()
            ));
        }
        n.sm = rebuilt;
        n.trace.push(Event::Restart(checkpoint));
        n.raw = Some(raw);
        Ok(checkpoint)
    }
}

// ---------------------------------------------------------------------------------------------
// Assertions shared by both tests.
// ---------------------------------------------------------------------------------------------

fn tempdirs() -> (Vec<tempfile::TempDir>, Vec<PathBuf>) {
    let tmp: Vec<tempfile::TempDir> = IDS.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let dirs = tmp.iter().map(|t| t.path().to_path_buf()).collect();
    (tmp, dirs)
}

fn items(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("{prefix}-key-{i:04}=value-{i}"))
        .collect()
}

type LogRow = (u64, u64, i32, Bytes, Bytes);

/// Voters of a conf state, sorted (raft-rs builds them from a hash set).
fn voters(cs: &ConfState) -> Vec<u64> {
    let mut v = cs.voters.clone();
    v.sort_unstable();
    v
}

fn log_of(store: &DiskStorage) -> Vec<LogRow> {
    let first = store.first_index().unwrap();
    let last = store.last_index().unwrap();
    store
        .entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap_or_else(|e| panic!("entries({first}, {}): {e}", last + 1))
        .into_iter()
        .map(|e| {
            (
                e.index,
                e.term,
                e.get_entry_type() as i32,
                e.data.clone(),
                e.context.clone(),
            )
        })
        .collect()
}

/// Every live node applied exactly `expected`, in order, once each; logs agree from `common_from`.
fn assert_converged(c: &Cluster, expected: &[String]) {
    let leader = c.leader().expect("a leader");
    let lsm = &c.node(leader).sm;
    let got: Vec<&[u8]> = lsm.data.iter().map(|(_, d)| d.as_ref()).collect();
    let want: Vec<&[u8]> = expected.iter().map(|s| s.as_bytes()).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "leader {leader} applied {} data entries, proposed {}",
        got.len(),
        want.len()
    );
    assert!(
        got == want,
        "leader {leader}: applied data differs from the proposals, in content or order"
    );
    let last = c.node(leader).store().last_index().unwrap();
    let lhs = c.node(leader).store().initial_state().unwrap().hard_state;
    for n in c.live() {
        assert_eq!(
            n.sm.applied, lsm.applied,
            "node {}: applied index vs leader {leader}",
            n.id
        );
        assert!(
            n.sm == *lsm,
            "node {}: state machine differs from leader {leader}'s",
            n.id
        );
        assert_eq!(
            check_trace(&n.trace),
            Ok(n.sm.applied),
            "node {}: apply trace",
            n.id
        );
        let s = n.store();
        let rs = s.initial_state().unwrap();
        assert_eq!(
            s.last_index().unwrap(),
            last,
            "node {}: last_index vs leader {leader}",
            n.id
        );
        assert_eq!(
            rs.hard_state.commit, lhs.commit,
            "node {}: stored commit vs leader {leader}",
            n.id
        );
        assert_eq!(
            rs.hard_state.term, lhs.term,
            "node {}: stored term vs leader {leader}",
            n.id
        );
        assert_eq!(
            rs.hard_state.commit, last,
            "node {}: stored commit vs last_index",
            n.id
        );
        assert_eq!(
            voters(&rs.conf_state),
            IDS.to_vec(),
            "node {}: stored voters",
            n.id
        );
        assert_eq!(
            s.checkpoint().unwrap(),
            n.sm.applied,
            "node {}: checkpoint vs applied",
            n.id
        );
        assert_eq!(
            s.uint(MetaInfo::CheckpointIndex),
            n.sm.applied,
            "node {}: uint(CheckpointIndex)",
            n.id
        );
    }
    // Logs agree over the range every node still holds.
    let first = c
        .live()
        .map(|n| n.store().first_index().unwrap())
        .max()
        .unwrap();
    let tail = |n: &Node| -> Vec<LogRow> {
        log_of(n.store())
            .into_iter()
            .filter(|r| r.0 >= first)
            .collect()
    };
    let lt = tail(c.node(leader));
    assert_eq!(
        lt.len() as u64,
        last + 1 - first,
        "leader {leader}: log length from {first}"
    );
    for n in c.live() {
        assert!(
            tail(n) == lt,
            "node {}: log entries [{first}, {last}] differ from leader {leader}'s",
            n.id
        );
    }
}

/// In `trace`, the event right after `after` is the application of entry `next`.
fn assert_next_applied(trace: &[Event], after: Event, next: u64, what: &str) {
    let at = trace.iter().position(|e| *e == after).unwrap();
    assert_eq!(trace.get(at + 1), Some(&Event::Entry(next)), "{what}");
}

/// Proposes `tail` through `leader` in batches of `batch` and runs until every live node applied
/// it; then a few more ticks so heartbeats carry the final commit index to every follower. The
/// leader must not have changed, and every node must hold `expected` followed by `tail`.
fn finish_with(
    c: &mut Cluster,
    leader: u64,
    expected: &mut Vec<String>,
    tail: Vec<String>,
    batch: usize,
) {
    c.propose_all(leader, &tail, batch).unwrap();
    expected.extend(tail);
    c.run_until(50, |c| {
        c.live().all(|n| n.sm.applied == c.node(leader).sm.applied)
    })
    .unwrap();
    for _ in 0..6 {
        c.tick().unwrap();
    }
    assert_eq!(
        c.leader(),
        Some(leader),
        "leadership changed during the test"
    );
    assert_converged(c, expected);
}

/// Stops every node, reopens every directory and checks that nothing was lost.
fn assert_reopen_keeps_everything(c: &mut Cluster) {
    let before: Vec<(u64, HardState, u64, u64, Vec<LogRow>, StateMachine)> = c
        .nodes
        .iter()
        .map(|n| {
            let s = n.store();
            (
                s.first_index().unwrap(),
                s.initial_state().unwrap().hard_state,
                s.checkpoint().unwrap(),
                s.uint(MetaInfo::SnapshotIndex),
                log_of(s),
                n.sm.clone(),
            )
        })
        .collect();
    for id in IDS {
        c.stop(id);
    }
    for (id, b) in IDS.into_iter().zip(before) {
        let n = c.node(id);
        let s = DiskStorage::open(&n.dir).unwrap_or_else(|e| panic!("node {id}: reopen: {e}"));
        assert_eq!(
            s.first_index().unwrap(),
            b.0,
            "node {id}: first_index after reopen"
        );
        assert_eq!(
            s.initial_state().unwrap().hard_state,
            b.1,
            "node {id}: hard state after reopen"
        );
        assert_eq!(
            s.checkpoint().unwrap(),
            b.2,
            "node {id}: checkpoint after reopen"
        );
        assert_eq!(
            s.uint(MetaInfo::SnapshotIndex),
            b.3,
            "node {id}: snapshot index after reopen"
        );
        assert!(log_of(&s) == b.4, "node {id}: log differs after reopen");
        assert_eq!(
            rebuild(&s),
            Ok(b.5),
            "node {id}: state rebuilt after reopen"
        );
        s.close()
            .unwrap_or_else(|e| panic!("node {id}: close: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn follower_restart_catches_up_from_checkpoint() {
    let (_tmp, dirs) = tempdirs();
    let mut c = Cluster::new(&dirs).unwrap();
    let leader = c.elect().unwrap();

    // A conf change that re-adds an existing voter: exercises apply_conf_change + set_conf_state.
    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::AddNode);
    cc.node_id = 3;
    c.node_mut(leader)
        .raw
        .as_mut()
        .unwrap()
        .propose_conf_change(vec![], cc)
        .unwrap();
    c.settle().unwrap();
    let cc_index = c.node(leader).raw().raft.raft_log.last_index();
    c.run_until(50, |c| c.live().all(|n| n.sm.applied >= cc_index))
        .unwrap();

    let mut expected = items("a", 0..300);
    c.propose_all(leader, &expected, 20).unwrap();
    c.run_until(50, |c| {
        c.live().all(|n| n.sm.applied == c.node(leader).sm.applied)
    })
    .unwrap();
    assert_converged(&c, &expected);

    // Stop a follower.
    let follower = IDS.into_iter().find(|&id| id != leader).unwrap();
    let applied_at_stop = c.node(follower).sm.applied;
    let last_at_stop = c.node(follower).store().last_index().unwrap();
    c.stop(follower);
    assert!(
        DiskStorage::open(&dirs[(follower - 1) as usize])
            .and_then(|s| s.close())
            .is_ok(),
        "directory of stopped node {follower} could not be reopened (lock not released on drop?)"
    );

    let more = items("b", 0..100);
    c.propose_all(leader, &more, 20).unwrap();
    expected.extend(more);
    assert!(
        c.dropped > 0,
        "messages to the stopped follower should have been dropped"
    );
    assert_eq!(c.node(follower).sm.applied, applied_at_stop);

    // Restart it from its directory, with durable writes.
    let checkpoint = c
        .restart(
            follower,
            Options {
                sync_writes: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        checkpoint, applied_at_stop,
        "node {follower}: checkpoint after restart vs applied at stop"
    );
    assert_eq!(
        c.node(follower).store().last_index().unwrap(),
        last_at_stop,
        "node {follower}: last_index after restart vs at stop"
    );
    c.run_until(100, |c| {
        c.node(follower).sm.applied == c.node(leader).sm.applied
    })
    .unwrap();
    assert!(
        c.node(follower).snapshots_received.is_empty(),
        "catch-up should not need a snapshot"
    );

    // Raft resumed exactly after the checkpoint.
    assert_next_applied(
        &c.node(follower).trace,
        Event::Restart(checkpoint),
        checkpoint + 1,
        "first entry applied after restart",
    );

    finish_with(&mut c, leader, &mut expected, items("c", 0..50), 25);
    for n in &c.nodes {
        assert_eq!(
            n.store().first_index().unwrap(),
            1,
            "node {}: no compaction expected",
            n.id
        );
    }
    assert_reopen_keeps_everything(&mut c);
}

#[test]
fn lagging_follower_catches_up_by_snapshot() {
    let (_tmp, dirs) = tempdirs();
    let mut c = Cluster::new(&dirs).unwrap();
    let leader = c.elect().unwrap();

    let mut expected = items("a", 0..200);
    c.propose_all(leader, &expected, 20).unwrap();
    c.run_until(50, |c| {
        c.live().all(|n| n.sm.applied == c.node(leader).sm.applied)
    })
    .unwrap();

    let follower = IDS.into_iter().find(|&id| id != leader).unwrap();
    let follower_last = c.node(follower).store().last_index().unwrap();
    c.stop(follower);

    let more = items("b", 0..150);
    c.propose_all(leader, &more, 25).unwrap();
    expected.extend(more);

    // The leader snapshots its state machine and compacts its log past the follower's last entry.
    let lsm = c.node(leader).sm.clone();
    let snap_index = lsm.applied;
    let snap_data = lsm.encode();
    let ls = c.node(leader).store();
    let snap_term = ls.term(snap_index).unwrap();
    ls.create_snapshot(snap_index, None, snap_data.clone())
        .unwrap();
    assert!(
        snap_index > follower_last + 1,
        "snapshot {snap_index} must pass follower's last {follower_last}"
    );
    assert_eq!(
        ls.first_index().unwrap(),
        snap_index + 1,
        "leader first_index after create_snapshot"
    );
    assert_eq!(
        ls.term(snap_index).unwrap(),
        snap_term,
        "leader term(snapshot index)"
    );
    assert_eq!(
        ls.term(follower_last + 1),
        Err(raft::Error::Store(raft::StorageError::Compacted)),
        "leader term() of the follower's next entry"
    );
    let s = ls.snapshot(0, follower).unwrap();
    assert_eq!(s.get_metadata().index, snap_index);
    assert_eq!(voters(s.get_metadata().get_conf_state()), IDS.to_vec());
    assert!(
        s.data == snap_data,
        "leader snapshot() data differs from what create_snapshot stored"
    );

    let after = items("c", 0..30);
    c.propose_all(leader, &after, 10).unwrap();
    expected.extend(after);

    let checkpoint = c
        .restart(
            follower,
            Options {
                sync_writes: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(checkpoint <= follower_last);
    c.run_until(100, |c| {
        c.node(follower).sm.applied == c.node(leader).sm.applied
    })
    .unwrap();

    let f = c.node(follower);
    assert_eq!(
        f.snapshots_received,
        vec![(snap_index, snap_term)],
        "node {follower}: snapshots received"
    );
    let fs = f.store();
    assert_eq!(
        fs.first_index().unwrap(),
        snap_index + 1,
        "node {follower}: first_index after snapshot"
    );
    assert_eq!(
        fs.uint(MetaInfo::SnapshotIndex),
        snap_index,
        "node {follower}: uint(SnapshotIndex)"
    );
    assert_eq!(
        fs.uint(MetaInfo::SnapshotTerm),
        snap_term,
        "node {follower}: uint(SnapshotTerm)"
    );
    assert_eq!(
        fs.term(snap_index).unwrap(),
        snap_term,
        "node {follower}: term(snapshot index)"
    );
    assert_eq!(
        fs.entries(
            snap_index,
            snap_index + 1,
            None,
            GetEntriesContext::empty(false)
        ),
        Err(raft::Error::Store(raft::StorageError::Compacted)),
        "node {follower}: entries at the snapshot index"
    );
    let fsnap = fs.snapshot(0, 0).unwrap();
    assert_eq!(fsnap.get_metadata().index, snap_index);
    assert_eq!(fsnap.get_metadata().term, snap_term);
    assert!(
        fsnap.data == snap_data,
        "node {follower}: stored snapshot data differs from the leader's"
    );
    assert_eq!(
        voters(&fs.initial_state().unwrap().conf_state),
        IDS.to_vec()
    );
    // After the snapshot, raft applied exactly the entries that followed it.
    assert_next_applied(
        &f.trace,
        Event::Snapshot(snap_index),
        snap_index + 1,
        "first entry applied after the snapshot",
    );

    finish_with(&mut c, leader, &mut expected, items("d", 0..40), 20);
    assert_reopen_keeps_everything(&mut c);
}

/// A node killed after it saved a leader's snapshot and before its next flushed write: the
/// snapshot is durable, the checkpoint `ready.rs` moved to it is not (`set_uint` reaches the
/// disk with the next flushed write), so the directory holds a snapshot past the checkpoint.
/// Built here with the store's own calls, in the order `ready.rs` makes them. The node must
/// start again, from the snapshot: raft-rs started below its snapshot panics ("applied(3) is out
/// of range [prev_applied(10), ...]").
#[test]
fn a_node_killed_right_after_installing_a_snapshot_restarts_from_it() {
    let (_tmp, dirs) = tempdirs();
    let dir = &dirs[2];
    {
        let s = DiskStorage::open(dir).unwrap();
        s.set_conf_state(&ConfState::from((IDS.to_vec(), vec![])))
            .unwrap();
        let ents: Vec<Entry> = (1..=3)
            .map(|i| {
                let mut e = Entry::default();
                (e.index, e.term) = (i, 1);
                e.data = Bytes::from(format!("e{i}"));
                e
            })
            .collect();
        let mut hs = HardState::default();
        (hs.term, hs.commit) = (1, 3);
        s.save(&hs, &ents, &Snapshot::default()).unwrap();
        s.set_uint(MetaInfo::CheckpointIndex, 3); // applied 1..=3
        s.sync().unwrap();
        // The leader's snapshot at 10, saved by the follower's Ready (the kill comes before the
        // checkpoint set after it is flushed).
        let sm = StateMachine {
            applied: 10,
            data: (1..=10)
                .map(|i| (i, Bytes::from(format!("e{i}"))))
                .collect(),
        };
        let mut snap = Snapshot::default();
        snap.data = sm.encode();
        let md = snap.mut_metadata();
        (md.index, md.term) = (10, 2);
        md.set_conf_state(ConfState::from((IDS.to_vec(), vec![])));
        (hs.term, hs.commit) = (2, 10);
        s.save(&hs, &[], &snap).unwrap();
        s.close().unwrap();
    }
    let (raw, sm) = open_raw(3, dir, Options::default()).unwrap();
    assert_eq!(sm.applied, 10, "rebuilt from the snapshot");
    assert_eq!(
        raw.raft.raft_log.applied, 10,
        "raft resumes after the snapshot"
    );
}
