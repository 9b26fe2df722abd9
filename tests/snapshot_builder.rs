//! Snapshots built when raft needs them (`DiskStorage::set_snapshot_builder`), and handles
//! (`DiskStorage: Clone`) shared with the thread that builds them.
//!
//! * The hang of issue 14, in a five-node cluster grown from one node by conf changes (as
//!   raft-rs's `five_mem_node` does): node 1 starts from a bootstrap snapshot listing voter 1
//!   only, and each added node needs a snapshot to start. Without a builder, raft is handed that
//!   bootstrap snapshot, which the new node refuses ("not in the ConfState"), and it never joins;
//!   with a builder, or with the documented recipe (a snapshot after each conf change), every
//!   node joins and applies every proposal.
//! * The builder as a user could break it, through `raft::Storage::snapshot` directly: a
//!   failing or panicking builder (the error is recorded, the next call retries), a builder
//!   slower than raft's retries (one build at a time), the store closed while a build runs
//!   (in the builder, and while its data is written), a request beyond the applied index, a
//!   builder that answers an index the log does not hold.
//! * Clones: one store, one lock, released when the last handle is dropped or closed.
//! * The same builder on an engine group (`GroupStorage`): a stale snapshot rebuilt (after a
//!   failure), and the engine's close cancelling a build.
//!
//! No assertion depends on timing: the cluster is driven by ticks in one thread, and the tests
//! wait for a build to end (polling its status) before they look at its outcome. Its nodes handle
//! their Readies with the cluster example's code (`examples/cluster/ready.rs`).

use std::collections::VecDeque;
use std::io::{Cursor, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use raft::prelude::*;
use raft::{RawNode, StateRole, Storage, StorageError};
use raftwal::{BuiltSnapshot, DiskStorage, Error, MetaInfo, SnapshotRequest};

#[path = "common/entries.rs"]
mod entries;

use entries::text_entry;

type Res<T> = Result<T, String>;

#[path = "../examples/cluster/ready.rs"]
mod ready;

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn snapshot_at(index: u64, term: u64, voters: Vec<u64>) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().mut_conf_state().voters = voters;
    s
}

fn voters(v: &[u64]) -> ConfState {
    ConfState::from((v.to_vec(), vec![]))
}

fn temporarily_unavailable<T: std::fmt::Debug>(r: raft::Result<T>) -> bool {
    matches!(
        r,
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable
        ))
    )
}

/// Waits until no build runs (a safety bound only: a build that never ends is a failure).
fn wait_idle(s: &DiskStorage) {
    let start = Instant::now();
    while s.snapshot_build_status().running {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "a snapshot build never ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---- A five-node cluster grown by conf changes ------------------------------------------------

/// The replicated state: applied index, the conf state at that index, and every put.
#[derive(Clone, Debug, Default, PartialEq)]
struct Sm {
    applied: u64,
    conf: ConfState,
    puts: Vec<Vec<u8>>,
}

impl Sm {
    fn encode(&self) -> Vec<u8> {
        let mut out = self.applied.to_le_bytes().to_vec();
        for p in &self.puts {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    fn decode(b: &[u8], conf: ConfState) -> Res<Sm> {
        let take = |b: &mut &[u8], n: usize| -> Res<Vec<u8>> {
            if b.len() < n {
                return Err("snapshot data truncated".into());
            }
            let (h, t) = b.split_at(n);
            *b = t;
            Ok(h.to_vec())
        };
        let mut b = b;
        let mut a = [0u8; 8];
        a.copy_from_slice(&take(&mut b, 8)?);
        let mut sm = Sm {
            applied: u64::from_le_bytes(a),
            conf,
            puts: vec![],
        };
        while !b.is_empty() {
            let mut l = [0u8; 4];
            l.copy_from_slice(&take(&mut b, 4)?);
            sm.puts.push(take(&mut b, u32::from_le_bytes(l) as usize)?);
        }
        Ok(sm)
    }
}

/// How the application keeps the snapshot raft hands out current.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// Nothing: the stored snapshot is the bootstrap one.
    Nothing,
    /// A registered builder.
    Builder,
    /// The recipe `snapshot()`'s rustdoc gives: `create_snapshot` after each conf change.
    Recipe,
}

struct Node {
    store: DiskStorage,
    raw: RawNode<DiskStorage>,
    sm: Arc<Mutex<Sm>>,
}

fn config(id: u64) -> Config {
    Config {
        id,
        election_tick: 10,
        heartbeat_tick: 3,
        ..Default::default()
    }
}

fn start_node(dir: &Path, id: u64, mode: Mode) -> Res<Node> {
    let store = DiskStorage::open(dir).map_err(|e| e.to_string())?;
    if id == 1 {
        // As five_mem_node: a snapshot at index 1 listing node 1, so that every other node
        // starts from a snapshot.
        store
            .save(&HardState::default(), &[], &snapshot_at(1, 1, vec![1]))
            .map_err(|e| e.to_string())?;
    }
    let sm = Arc::new(Mutex::new(Sm {
        applied: if id == 1 { 1 } else { 0 },
        conf: if id == 1 {
            voters(&[1])
        } else {
            ConfState::default()
        },
        puts: vec![],
    }));
    if mode == Mode::Builder {
        let sm = Arc::clone(&sm);
        store.set_snapshot_builder(move |_: &SnapshotRequest| {
            let sm = sm.lock().map_err(|_| "state machine lock poisoned")?;
            Ok(BuiltSnapshot {
                index: sm.applied,
                conf_state: Some(sm.conf.clone()),
                data: Box::new(Cursor::new(sm.encode())),
            })
        });
    }
    let raw = RawNode::new(&config(id), store.clone(), &logger()).map_err(|e| e.to_string())?;
    Ok(Node { store, raw, sm })
}

/// A node's state machine under the shared Ready handling; in `Mode::Recipe`, a snapshot after
/// each conf change.
struct Applier<'a> {
    sm: &'a Mutex<Sm>,
    mode: Mode,
}

impl ready::Apply for Applier<'_> {
    type Error = String;

    fn install(&mut self, snap: &Snapshot) -> Res<()> {
        let md = snap.get_metadata();
        *self.sm.lock().map_err(|_| "poisoned")? =
            Sm::decode(&snap.data, md.get_conf_state().clone())?;
        Ok(())
    }

    fn apply(&mut self, raw: &RawNode<DiskStorage>, e: Entry, conf: Option<&ConfState>) -> Res<()> {
        let mut sm = self.sm.lock().map_err(|_| "poisoned")?;
        if let Some(cs) = conf {
            sm.conf = cs.clone();
            sm.applied = e.index;
            if self.mode == Mode::Recipe {
                raw.store()
                    .create_snapshot(e.index, None, sm.encode())
                    .map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
            sm.puts.push(e.data.to_vec());
        }
        sm.applied = e.index;
        Ok(())
    }
}

impl Node {
    /// One Ready, the sync way (`sync_writes` on): `ready::handle_ready`, the cluster example's.
    fn handle_ready(&mut self, out: &mut VecDeque<Message>, mode: Mode) -> Res<bool> {
        let mut app = Applier { sm: &self.sm, mode };
        Ok(ready::handle_ready(&mut self.raw, &mut app, out)?.is_some())
    }
}

struct Cluster {
    nodes: Vec<Node>,
    queue: VecDeque<Message>,
    mode: Mode,
}

impl Cluster {
    fn new(dir: &Path, mode: Mode) -> Res<Cluster> {
        let nodes = (1..=5)
            .map(|id| start_node(&dir.join(id.to_string()), id, mode))
            .collect::<Res<Vec<_>>>()?;
        Ok(Cluster {
            nodes,
            queue: VecDeque::new(),
            mode,
        })
    }

    fn settle(&mut self) -> Res<()> {
        loop {
            let mut busy = false;
            for n in &mut self.nodes {
                busy |= n.handle_ready(&mut self.queue, self.mode)?;
            }
            if !busy && self.queue.is_empty() {
                return Ok(());
            }
            while let Some(m) = self.queue.pop_front() {
                let (from, to) = (m.from, m.to);
                let snap = m.get_msg_type() == MessageType::MsgSnapshot;
                self.nodes[(to - 1) as usize]
                    .raw
                    .step(m)
                    .map_err(|e| format!("node {to}: {e}"))?;
                if snap {
                    self.nodes[(from - 1) as usize]
                        .raw
                        .report_snapshot(to, SnapshotStatus::Finish);
                }
            }
        }
    }

    /// A tick, everything it causes, and any snapshot build it started.
    fn tick(&mut self) -> Res<()> {
        for n in &mut self.nodes {
            n.raw.tick();
        }
        self.settle()?;
        for n in &self.nodes {
            wait_idle(&n.store);
        }
        self.settle()
    }

    fn leader(&mut self) -> &mut Node {
        &mut self.nodes[0]
    }

    /// Node `id` counts itself a voter and has applied everything the leader committed.
    fn joined(&self, id: u64) -> bool {
        let n = &self.nodes[(id - 1) as usize];
        let committed = self.nodes[0].raw.raft.raft_log.committed;
        n.raw.raft.prs().conf().voters().contains(id)
            && n.sm.lock().map(|s| s.applied >= committed).unwrap_or(false)
    }

    /// Grows the cluster to five voters and makes ten puts; fails if a node never joins.
    fn run(&mut self) -> Res<()> {
        self.leader().raw.campaign().map_err(|e| e.to_string())?;
        self.settle()?;
        if self.leader().raw.raft.state != StateRole::Leader {
            return Err("node 1 did not become leader".into());
        }
        for id in 2..=5u64 {
            let mut cc = ConfChange::default();
            cc.node_id = id;
            cc.set_change_type(ConfChangeType::AddNode);
            self.leader()
                .raw
                .propose_conf_change(vec![], cc)
                .map_err(|e| e.to_string())?;
            self.settle()?;
            let mut ticks = 0;
            while !self.joined(id) {
                if ticks == 200 {
                    let n = &self.nodes[(id - 1) as usize];
                    return Err(format!(
                        "node {id} never joined: after {ticks} ticks its conf state is {:?}, its commit index {} (the stored snapshot is at index {} with voters {:?})",
                        n.raw.raft.prs().conf().to_conf_state().voters,
                        n.raw.raft.raft_log.committed,
                        self.nodes[0].store.uint(MetaInfo::SnapshotIndex),
                        self.nodes[0]
                            .store
                            .snapshot_reader()
                            .map(|r| r.metadata().get_conf_state().voters.clone())
                            .unwrap_or_default(),
                    ));
                }
                self.tick()?;
                ticks += 1;
            }
        }
        for i in 0..10 {
            self.leader()
                .raw
                .propose(vec![], format!("put {i}").into_bytes())
                .map_err(|e| e.to_string())?;
        }
        self.settle()?;
        for _ in 0..5 {
            self.tick()?;
        }
        let want = self.nodes[0].sm.lock().map_err(|_| "poisoned")?.clone();
        if want.puts.len() != 10 || want.conf.voters.len() != 5 {
            return Err(format!("the leader's state is off: {want:?}"));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let sm = n.sm.lock().map_err(|_| "poisoned")?.clone();
            if sm.puts != want.puts {
                return Err(format!("node {} has puts {:?}", i + 1, sm.puts));
            }
        }
        Ok(())
    }
}

#[test]
fn new_nodes_join_when_a_builder_refreshes_the_bootstrap_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(dir.path(), Mode::Builder).unwrap();
    c.run().unwrap();
    // The leader's snapshot was rebuilt after the conf changes: it lists the new voters.
    let md = c.nodes[0]
        .store
        .snapshot_reader()
        .unwrap()
        .metadata()
        .clone();
    assert!(md.index > 1, "{md:?}");
    assert!(c.nodes[0].store.snapshot_build_status().stored >= 1);
}

#[test]
fn without_a_builder_new_nodes_refuse_the_bootstrap_snapshot_and_never_join() {
    // Today's behaviour, kept without a builder: the cause of the hang the issue reports.
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(dir.path(), Mode::Nothing).unwrap();
    let err = c.run().unwrap_err();
    assert!(err.contains("node 2 never joined"), "{err}");
    assert!(err.contains("with voters [1]"), "{err}");
}

#[test]
fn without_a_builder_a_snapshot_after_each_conf_change_lets_new_nodes_join() {
    // The recipe the rustdoc of `snapshot()` and the README give.
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(dir.path(), Mode::Recipe).unwrap();
    c.run().unwrap();
}

// ---- The builder through raft::Storage::snapshot ----------------------------------------------

/// A store holding entries 1..=10 (term 1) and a snapshot at 3 listing voter 1.
fn store_with_log(dir: &Path) -> DiskStorage {
    let s = DiskStorage::open(dir).unwrap();
    let ents: Vec<Entry> = (1..=10).map(|i| text_entry(i, 1)).collect();
    s.save(&HardState::default(), &ents, &Snapshot::default())
        .unwrap();
    s.set_conf_state(&voters(&[1])).unwrap();
    s.create_snapshot(3, None, &b"at 3"[..]).unwrap();
    s
}

fn built(index: u64, data: &'static [u8]) -> BuiltSnapshot {
    BuiltSnapshot {
        index,
        conf_state: None,
        data: Box::new(data),
    }
}

#[test]
fn without_a_builder_the_stored_snapshot_is_handed_out_whatever_its_conf_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_log(dir.path());
    s.set_conf_state(&voters(&[1, 2])).unwrap();
    let snap = s.snapshot(0, 2).unwrap();
    assert_eq!(snap.get_metadata().index, 3);
    assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1]);
    assert!(temporarily_unavailable(s.snapshot(4, 2)));
    assert!(!s.snapshot_build_status().registered);
}

#[test]
fn a_snapshot_predating_the_conf_state_is_rebuilt_at_the_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_log(dir.path());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    s.set_snapshot_builder(move |req: &SnapshotRequest| {
        c.fetch_add(1, Ordering::SeqCst);
        assert_eq!(req.stored_index, 3);
        let mut v = req.conf_state.voters.clone();
        v.sort_unstable();
        assert_eq!(v, vec![1, 2]);
        Ok(built(8, b"at 8"))
    });
    // The stored snapshot serves while the conf state is the one it records, in any order.
    assert_eq!(s.snapshot(0, 2).unwrap().get_metadata().index, 3);
    s.set_conf_state(&voters(&[1])).unwrap();
    assert_eq!(s.snapshot(2, 2).unwrap().get_metadata().index, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    s.set_conf_state(&voters(&[2, 1])).unwrap();
    assert!(temporarily_unavailable(s.snapshot(0, 2)));
    wait_idle(&s);
    let snap = s.snapshot(0, 2).unwrap();
    assert_eq!(snap.get_metadata().index, 8);
    assert_eq!(snap.get_metadata().term, 1);
    let mut v = snap.get_metadata().get_conf_state().voters.clone();
    v.sort_unstable();
    assert_eq!(v, vec![1, 2]);
    assert_eq!(&snap.data[..], b"at 8");
    // Written with create_snapshot_from: the log is compacted as usual.
    assert_eq!(s.first_index().unwrap(), 9);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let st = s.snapshot_build_status();
    assert_eq!((st.stored, st.failed, st.running), (1, 0, false));
    drop(s);
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.uint(MetaInfo::SnapshotIndex), 8);
}

#[test]
fn a_failing_builder_is_recorded_and_the_next_call_retries() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_log(dir.path());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    s.set_snapshot_builder(
        move |_: &SnapshotRequest| match c.fetch_add(1, Ordering::SeqCst) {
            0 => Err("state machine busy".into()),
            1 => panic!("builder bug"),
            _ => Ok(built(6, b"at 6")),
        },
    );
    s.set_conf_state(&voters(&[1, 2])).unwrap();

    assert!(temporarily_unavailable(s.snapshot(0, 2)));
    wait_idle(&s);
    let st = s.snapshot_build_status();
    assert_eq!((st.stored, st.failed), (0, 1));
    let e = st.last_error.expect("the failure is recorded");
    assert!(matches!(*e, Error::SnapshotBuild { .. }), "{e}");
    assert!(e.to_string().contains("state machine busy"), "{e}");
    assert_eq!(s.uint(MetaInfo::SnapshotIndex), 3, "nothing written");

    // A panicking builder is a failure too; the store goes on.
    assert!(temporarily_unavailable(s.snapshot(0, 2)));
    wait_idle(&s);
    let st = s.snapshot_build_status();
    assert_eq!((st.stored, st.failed), (0, 2));
    assert!(st.last_error.unwrap().to_string().contains("panicked"));

    assert!(temporarily_unavailable(s.snapshot(0, 2)));
    wait_idle(&s);
    let st = s.snapshot_build_status();
    assert_eq!((st.stored, st.failed), (1, 2));
    assert!(st.last_error.is_none());
    assert_eq!(s.snapshot(0, 2).unwrap().get_metadata().index, 6);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// Snapshot data whose first read panics (an application's bug in its reader).
struct PanicsOnRead;

impl Read for PanicsOnRead {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        panic!("the reader's bug")
    }
}

/// A builder whose data reader panics while the store writes it: a failure like a panicking
/// builder (recorded, the next call retries), with no `.tmp` left. The panic once unwound the
/// build thread past its bookkeeping: the status said `running` for ever, and no snapshot was
/// ever built again (found by a review, on an engine group; the code is shared).
#[test]
fn a_builder_whose_data_reader_panics_fails_and_the_next_call_retries() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_log(dir.path());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    s.set_snapshot_builder(move |_: &SnapshotRequest| {
        Ok(match c.fetch_add(1, Ordering::SeqCst) {
            0 => BuiltSnapshot {
                index: 6,
                conf_state: None,
                data: Box::new(PanicsOnRead),
            },
            _ => built(6, b"at 6"),
        })
    });
    s.set_conf_state(&voters(&[1, 2])).unwrap();

    assert!(temporarily_unavailable(s.snapshot(0, 2)));
    let t0 = Instant::now();
    while s.snapshot_build_status().running {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the build still running after 20 s: {:?}",
            s.snapshot_build_status()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = s.snapshot_build_status();
    assert_eq!((st.stored, st.failed), (0, 1));
    assert!(st.last_error.unwrap().to_string().contains("panicked"));
    assert_eq!(s.uint(MetaInfo::SnapshotIndex), 3, "nothing written");
    let snap_dir = dir.path().join("snap");
    let tmp_left = std::fs::read_dir(&snap_dir)
        .map(|rd| {
            rd.filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".tmp")
            })
            .count()
        })
        .unwrap_or(0);
    assert_eq!(tmp_left, 0, "a .tmp left in {}", snap_dir.display());

    assert!(temporarily_unavailable(s.snapshot(0, 2)));
    wait_idle(&s);
    assert_eq!(s.snapshot(0, 2).unwrap().get_metadata().index, 6);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_builder_slower_than_raft_retries_runs_once_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_log(dir.path());
    let (open_gate, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let calls = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (c, r, m) = (calls.clone(), running.clone(), most.clone());
    s.set_snapshot_builder(move |_: &SnapshotRequest| {
        c.fetch_add(1, Ordering::SeqCst);
        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
        m.fetch_max(now, Ordering::SeqCst);
        let _ = gate.lock().unwrap().recv();
        r.fetch_sub(1, Ordering::SeqCst);
        Ok(built(9, b"at 9"))
    });
    s.set_conf_state(&voters(&[1, 2])).unwrap();
    // raft retries on every heartbeat response, from the raft thread and any clone.
    let other = s.clone();
    for i in 0..50 {
        let h = if i % 2 == 0 { &s } else { &other };
        assert!(temporarily_unavailable(h.snapshot(0, 2)));
    }
    assert!(s.snapshot_build_status().running);
    open_gate.send(()).unwrap();
    wait_idle(&s);
    assert_eq!(s.snapshot(0, 2).unwrap().get_metadata().index, 9);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(most.load(Ordering::SeqCst), 1);
}

#[test]
fn a_request_beyond_the_applied_index_waits_for_the_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_log(dir.path());
    let applied = Arc::new(AtomicUsize::new(5));
    let a = Arc::clone(&applied);
    s.set_snapshot_builder(move |_: &SnapshotRequest| {
        Ok(built(a.load(Ordering::SeqCst) as u64, b"sm"))
    });
    // Asked for 8 while the state machine is at 5: a snapshot at 5 is stored (newer than 3),
    // but it does not serve the request.
    assert!(temporarily_unavailable(s.snapshot(8, 2)));
    wait_idle(&s);
    assert_eq!(s.uint(MetaInfo::SnapshotIndex), 5);
    assert!(temporarily_unavailable(s.snapshot(8, 2)));
    wait_idle(&s);
    // Nothing newer to store: the build fails, naming the stored snapshot.
    let st = s.snapshot_build_status();
    assert_eq!((st.stored, st.failed), (1, 1));
    assert!(
        matches!(
            *st.last_error.unwrap(),
            Error::SnapshotOutOfDate {
                index: 5,
                current: 5
            }
        ),
        "a build at the stored index is out of date"
    );
    // The state machine moves on; the next request is served.
    applied.store(9, Ordering::SeqCst);
    assert!(temporarily_unavailable(s.snapshot(8, 2)));
    wait_idle(&s);
    assert_eq!(s.snapshot(8, 2).unwrap().get_metadata().index, 9);

    // A builder answering an index the log does not hold writes nothing.
    applied.store(20, Ordering::SeqCst);
    assert!(temporarily_unavailable(s.snapshot(15, 2)));
    wait_idle(&s);
    let st = s.snapshot_build_status();
    assert!(matches!(
        *st.last_error.unwrap(),
        Error::Unavailable { index: 20, .. }
    ));
    assert_eq!(s.uint(MetaInfo::SnapshotIndex), 9);
}

/// Snapshot files (and temporaries) in a store's `snap/`.
fn snap_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("snap"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn closing_the_store_cancels_a_build_in_the_builder() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_log(dir.path());
    let before = snap_files(dir.path());
    let (started_tx, started) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let sc = Arc::clone(&saw_cancel);
    s.set_snapshot_builder(move |req: &SnapshotRequest| {
        let _ = started_tx.lock().unwrap().send(());
        while !req.cancelled() {
            std::thread::sleep(Duration::from_millis(1));
        }
        sc.store(true, Ordering::SeqCst);
        // Its result comes too late: it is not written.
        Ok(built(9, b"too late"))
    });
    s.set_conf_state(&voters(&[1, 2])).unwrap();
    assert!(temporarily_unavailable(s.snapshot(0, 2)));
    started.recv().unwrap();
    // A clone closed first leaves the store open.
    let other = s.clone();
    other.close().unwrap();
    assert!(matches!(
        DiskStorage::open(dir.path()),
        Err(Error::Locked { .. })
    ));
    s.close().unwrap();
    assert!(
        saw_cancel.load(Ordering::SeqCst),
        "close waited for the builder"
    );
    // The lock is released, nothing of the build was written.
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.uint(MetaInfo::SnapshotIndex), 3);
    assert_eq!(snap_files(dir.path()), before);
}

/// Endless snapshot data that says when it is first read.
struct Endless {
    started: Option<mpsc::Sender<()>>,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(tx) = self.started.take() {
            let _ = tx.send(());
        }
        buf.fill(7);
        Ok(buf.len())
    }
}

#[test]
fn dropping_the_store_stops_a_snapshot_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with_log(dir.path());
    let before = snap_files(dir.path());
    let (started_tx, started) = mpsc::channel::<()>();
    let started_tx = Mutex::new(Some(started_tx));
    s.set_snapshot_builder(move |_: &SnapshotRequest| {
        Ok(BuiltSnapshot {
            index: 9,
            conf_state: None,
            data: Box::new(Endless {
                started: started_tx.lock().unwrap().take(),
            }),
        })
    });
    s.set_conf_state(&voters(&[1, 2])).unwrap();
    assert!(temporarily_unavailable(s.snapshot(0, 2)));
    started.recv().unwrap();
    // The last handle goes while the data streams into snap/: the write stops at its next
    // chunk, its temporary file goes, and the drop returns with the lock released.
    drop(s);
    let s = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(s.uint(MetaInfo::SnapshotIndex), 3);
    assert_eq!(snap_files(dir.path()), before);
    assert_eq!(s.first_index().unwrap(), 4);
}

// ---- Clones -----------------------------------------------------------------------------------

#[test]
fn clones_are_one_store_and_the_last_handle_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let a = DiskStorage::open(dir.path()).unwrap();
    let b = a.clone();
    let t = std::thread::spawn({
        let c = a.clone();
        move || {
            c.save(
                &HardState::default(),
                &[text_entry(1, 1), text_entry(2, 1)],
                &Snapshot::default(),
            )
            .unwrap();
            c.last_index().unwrap()
        }
    });
    assert_eq!(t.join().unwrap(), 2);
    assert_eq!(b.last_index().unwrap(), 2);
    b.set_uint(MetaInfo::CheckpointIndex, 2);
    assert_eq!(a.checkpoint().unwrap(), 2);
    // Closing one handle syncs; the others keep working and keep the lock.
    a.close().unwrap();
    assert!(matches!(
        DiskStorage::open(dir.path()),
        Err(Error::Locked { .. })
    ));
    b.save(
        &HardState::default(),
        &[text_entry(3, 1)],
        &Snapshot::default(),
    )
    .unwrap();
    drop(b);
    let c = DiskStorage::open(dir.path()).unwrap();
    assert_eq!(c.last_index().unwrap(), 3);
    assert_eq!(c.checkpoint().unwrap(), 2);
}

#[test]
fn disk_storage_is_a_clone_send_sync_handle() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<DiskStorage>();
    check::<raftwal::GroupStorage>();
}

// ---- The same builder on an engine group -------------------------------------------------------

/// A group of a fresh engine holding entries 1..=10 and a snapshot at 3 listing voter 1.
fn group_with_log(root: &Path) -> (raftwal::Engine, raftwal::GroupStorage) {
    let engine = raftwal::Engine::open(root).unwrap();
    let g = engine.create_group(7, 1).unwrap();
    let ents: Vec<Entry> = (1..=10).map(|i| text_entry(i, 1)).collect();
    g.save(&HardState::default(), &ents, &Snapshot::default())
        .unwrap();
    g.set_conf_state(&voters(&[1])).unwrap();
    g.create_snapshot(3, None, &b"at 3"[..]).unwrap();
    (engine, g)
}

fn wait_group_idle(g: &raftwal::GroupStorage) {
    let start = Instant::now();
    while g.snapshot_build_status().running {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "a build never ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_group_rebuilds_a_snapshot_predating_its_conf_state() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, g) = group_with_log(dir.path());
    let fail_once = AtomicBool::new(true);
    g.set_snapshot_builder(move |req: &SnapshotRequest| {
        if fail_once.swap(false, Ordering::SeqCst) {
            return Err("not yet".into());
        }
        assert_eq!(req.stored_index, 3);
        Ok(built(8, b"group at 8"))
    });
    assert_eq!(g.snapshot(0, 2).unwrap().get_metadata().index, 3);
    g.set_conf_state(&voters(&[1, 2])).unwrap();
    assert!(temporarily_unavailable(g.snapshot(0, 2)));
    wait_group_idle(&g);
    assert_eq!(g.snapshot_build_status().failed, 1);
    assert!(temporarily_unavailable(g.snapshot(0, 2)));
    wait_group_idle(&g);
    let snap = g.snapshot(0, 2).unwrap();
    assert_eq!(snap.get_metadata().index, 8);
    assert_eq!(&snap.data[..], b"group at 8");
    assert_eq!(g.first_index().unwrap(), 9);
    engine.close().unwrap();
    let engine = raftwal::Engine::open(dir.path()).unwrap();
    assert_eq!(engine.group(7).unwrap().uint(MetaInfo::SnapshotIndex), 8);
}

#[test]
fn closing_the_engine_cancels_a_group_build() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, g) = group_with_log(dir.path());
    let (started_tx, started) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    g.set_snapshot_builder(move |req: &SnapshotRequest| {
        let _ = started_tx.lock().unwrap().send(());
        while !req.cancelled() {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(built(9, b"too late"))
    });
    g.set_conf_state(&voters(&[1, 2])).unwrap();
    assert!(temporarily_unavailable(g.snapshot(0, 2)));
    started.recv().unwrap();
    engine.close().unwrap();
    assert!(!g.snapshot_build_status().running);
    assert!(matches!(g.checkpoint(), Err(Error::Closed { .. })));
    let engine = raftwal::Engine::open(dir.path()).unwrap();
    assert_eq!(engine.group(7).unwrap().uint(MetaInfo::SnapshotIndex), 3);
}
