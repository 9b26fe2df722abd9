//! The README's Ready loop on `DiskStorage` ("From MemStorage: the Ready loop on `DiskStorage`"),
//! written as the guide words it: each Ready saved with one `save`, a snapshot's data installed,
//! committed entries applied with the applied index kept as the checkpoint
//! (`set_uint(MetaInfo::CheckpointIndex, applied)`), the light ready's commit saved; and a
//! restart as step 1 says: the state machine rebuilt from the snapshot and the log, raft started
//! with `Config { applied, .. }`.
//!
//! Three nodes in one thread, messages delivered by hand, no ticks but the leader's heartbeats:
//! every step is deterministic.

use std::collections::VecDeque;

use raft::prelude::*;
use raft::{Config, RawNode, Storage};
use raftwal::{DiskStorage, MetaInfo};

/// A node's state machine: the data of every normal entry applied, in order.
#[derive(Clone, Debug, Default, PartialEq)]
struct Sm {
    applied: u64,
    data: Vec<Vec<u8>>,
}

impl Sm {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.applied.to_le_bytes().to_vec();
        for d in &self.data {
            out.extend_from_slice(&(d.len() as u32).to_le_bytes());
            out.extend_from_slice(d);
        }
        out
    }

    fn decode(b: &[u8]) -> Sm {
        let applied = u64::from_le_bytes(b[..8].try_into().unwrap());
        let mut data = Vec::new();
        let mut rest = &b[8..];
        while !rest.is_empty() {
            let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            data.push(rest[4..4 + n].to_vec());
            rest = &rest[4 + n..];
        }
        Sm { applied, data }
    }

    fn apply(&mut self, e: &Entry) {
        assert_eq!(e.index, self.applied + 1, "entries applied in order");
        self.applied = e.index;
        if !e.data.is_empty() {
            self.data.push(e.data.to_vec());
        }
    }
}

struct Node {
    raw: RawNode<DiskStorage>,
    store: DiskStorage,
    sm: Sm,
}

fn config(id: u64, applied: u64) -> Config {
    Config {
        id,
        election_tick: 10,
        heartbeat_tick: 1,
        applied,
        ..Default::default()
    }
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// Step 1 for a directory that already holds a node: the state machine rebuilt from the
/// snapshot, then the log up to the applied index; raft started from that index.
fn restart(dir: &std::path::Path, id: u64) -> Node {
    let store = DiskStorage::open(dir).expect("reopen");
    let snapshot_index = store.uint(MetaInfo::SnapshotIndex);
    let mut sm = Sm::default();
    if snapshot_index > 0 {
        sm = Sm::decode(&store.snapshot(0, 0).expect("stored snapshot").data);
    }
    // The index raft starts from: the checkpoint, but never below the snapshot (a snapshot
    // installed from a leader is applied whatever the checkpoint says).
    let applied = store.uint(MetaInfo::CheckpointIndex).max(snapshot_index);
    if applied > sm.applied {
        let ctx = raft::GetEntriesContext::empty(false);
        for e in store
            .entries(sm.applied + 1, applied + 1, None, ctx)
            .expect("replay")
        {
            sm.apply(&e);
        }
    }
    let raw = RawNode::new(&config(id, applied), store.clone(), &logger()).expect("raft starts");
    Node { raw, store, sm }
}

/// Applies committed entries; the applied index becomes the checkpoint.
fn apply(n: &mut Node, entries: Vec<Entry>) {
    let Some(last) = entries.last().map(|e| e.index) else {
        return;
    };
    for e in &entries {
        n.sm.apply(e);
    }
    n.store.set_uint(MetaInfo::CheckpointIndex, last);
}

/// Steps 2 and 3 of the guide for one Ready.
fn on_ready(n: &mut Node, out: &mut VecDeque<Message>) {
    if !n.raw.has_ready() {
        return;
    }
    let mut rd = n.raw.ready();
    out.extend(rd.take_messages());
    n.store
        .save(
            rd.hs().unwrap_or(&HardState::default()),
            rd.entries(),
            rd.snapshot(),
        )
        .expect("save");
    if !rd.snapshot().is_empty() {
        n.sm = Sm::decode(&rd.snapshot().data);
    }
    apply(n, rd.take_committed_entries());
    out.extend(rd.take_persisted_messages());
    let mut light = n.raw.advance(rd);
    if light.commit_index().is_some() {
        let hs = n.raw.raft.hard_state();
        n.store
            .save(&hs, &[], &Snapshot::default())
            .expect("save commit");
    }
    out.extend(light.take_messages());
    apply(n, light.take_committed_entries());
    n.raw.advance_apply();
}

/// Runs Readies and delivers messages until there is nothing left; messages to or from a node
/// in `cut` are dropped.
fn settle(nodes: &mut [Option<Node>], cut: &[u64]) {
    let mut queue = VecDeque::new();
    for _ in 0..10_000 {
        for n in nodes.iter_mut().flatten() {
            on_ready(n, &mut queue);
        }
        if queue.is_empty() {
            return;
        }
        while let Some(m) = queue.pop_front() {
            if cut.contains(&m.to) || cut.contains(&m.from) {
                continue;
            }
            let (from, to, snap) = (m.from, m.to, m.get_msg_type() == MessageType::MsgSnapshot);
            if let Some(n) = nodes[(to - 1) as usize].as_mut() {
                let _ = n.raw.step(m);
                if snap {
                    if let Some(l) = nodes[(from - 1) as usize].as_mut() {
                        l.raw.report_snapshot(to, raft::SnapshotStatus::Finish);
                    }
                }
            }
        }
    }
    panic!("the cluster did not settle");
}

fn propose(nodes: &mut [Option<Node>], cut: &[u64], data: &[u8]) {
    let l = nodes[0].as_mut().expect("node 1 runs");
    l.raw.propose(vec![], data.to_vec()).expect("propose");
    settle(nodes, cut);
}

/// A follower that caught up by installing its leader's snapshot restarts before it applies
/// anything after it: raft must start from an applied index at or above that snapshot (below
/// it, raft-rs panics: "applied(3) is out of range [prev_applied(9), ...]"), whatever
/// checkpoint the node's last apply left on disk. The loop here does not move the checkpoint
/// when it installs the snapshot; one that does leaves the same disk when it is killed before
/// its next flushed write (`set_uint` is durable only with it).
#[test]
fn a_follower_restarts_after_installing_a_snapshot() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let store = DiskStorage::open(d.path()).expect("open");
        store
            .set_conf_state(&ConfState::from((vec![1, 2, 3], vec![])))
            .expect("bootstrap");
        let raw = RawNode::new(&config(i as u64 + 1, 0), store.clone(), &logger()).unwrap();
        nodes.push(Some(Node {
            raw,
            store,
            sm: Sm::default(),
        }));
    }
    nodes[0].as_mut().unwrap().raw.campaign().unwrap();
    settle(&mut nodes, &[]);
    assert_eq!(
        nodes[0].as_ref().unwrap().raw.raft.state,
        raft::StateRole::Leader
    );
    for i in 0..2u8 {
        propose(&mut nodes, &[], &[i]);
    }
    let before = nodes[2].as_ref().unwrap().sm.applied;
    assert!(before > 0, "node 3 applied entries before it was cut off");

    // Node 3 cut off; the others go on and the leader compacts its log (step 5).
    for i in 2..8u8 {
        propose(&mut nodes, &[3], &[i]);
    }
    {
        let l = nodes[0].as_ref().unwrap();
        let applied = l.sm.applied;
        l.store
            .create_snapshot(applied, None, l.sm.encode())
            .expect("leader snapshot");
    }
    // Back: the leader's heartbeat finds node 3 behind its log's start and sends the snapshot.
    nodes[0].as_mut().unwrap().raw.ping();
    settle(&mut nodes, &[]);
    let leader_sm = nodes[0].as_ref().unwrap().sm.clone();
    assert_eq!(nodes[2].as_ref().unwrap().sm, leader_sm, "node 3 caught up");
    let snapshot_index = nodes[2]
        .as_ref()
        .unwrap()
        .store
        .uint(MetaInfo::SnapshotIndex);
    assert!(snapshot_index > before, "node 3 caught up by snapshot");

    // Node 3 stops and restarts from its directory (step 1).
    let n3 = nodes[2].take().unwrap();
    drop(n3.raw);
    n3.store.close().expect("close");
    let n3 = restart(dirs[2].path(), 3);
    assert!(n3.raw.raft.raft_log.applied >= snapshot_index);
    nodes[2] = Some(n3);
    nodes[0].as_mut().unwrap().raw.ping();
    settle(&mut nodes, &[]);
    propose(&mut nodes, &[], b"after restart");
    let leader_sm = nodes[0].as_ref().unwrap().sm.clone();
    assert_eq!(nodes[2].as_ref().unwrap().sm, leader_sm, "node 3 runs on");
}
