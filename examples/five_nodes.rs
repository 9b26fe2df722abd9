//! raft-rs's five-node example (`five_mem_node`) on `raftwal::DiskStorage`, then restarted.
//!
//! Run it with `cargo run --release --example five_nodes` (`-- --flow sync|async`, `--dir DIR`).
//!
//! Five `RawNode`s, each on its own thread with a channel as its mailbox. Node 1 starts alone from
//! a bootstrap snapshot (index 1, voter 1); nodes 2 to 5 are added by conf changes, and each one
//! starts its raft node when the first message for it arrives, so it begins from a snapshot. The
//! snapshot raft hands out is built on demand: each node registers a snapshot builder
//! (`DiskStorage::set_snapshot_builder`) that copies its state machine at its applied index, so
//! a new node never receives the bootstrap snapshot, which does not list it and which it would
//! refuse. Then 100 proposals, as in `five_mem_node`; then every node is stopped, its state
//! machine rebuilt from its directory (snapshot, then the log up to the checkpoint) and compared
//! with the one it had; then all five run again from their directories and take 20 more
//! proposals, and the five state machines must be equal.
//!
//! Two flows, the same cluster:
//! * `sync`: `sync_writes` on; each Ready is persisted by one `save` before its persisted
//!   messages go, then `advance` and the LightReady (its commit index saved, its messages sent,
//!   its committed entries applied).
//! * `async`: raft-rs async ready. `sync_writes: false`, so `save` only writes (raft can read the
//!   entries back at once, as `advance_append_async` requires); up to 8 Readies are taken, each
//!   followed by `advance_append_async`, then one `sync()` makes them all durable, and only then
//!   do their persisted messages go and `on_persist_ready` tell raft.
//!
//! `tests/five_nodes.rs` runs both flows.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::prelude::*;
use raft::{GetEntriesContext, RawNode, StateRole, Storage};
use raftwal::{BuiltSnapshot, DiskStorage, MetaInfo, Options, SnapshotRequest};

type Result<T> = std::result::Result<T, String>;

const NODES: u64 = 5;
const TICK: Duration = Duration::from_millis(10);
/// How long any one step may take before the run gives up (a failure, never a measurement).
const PATIENCE: Duration = Duration::from_secs(20);
/// Readies persisted by one `sync()` in the async flow, at most.
const READIES_PER_SYNC: usize = 8;

/// How Readies are persisted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Flow {
    Sync,
    Async,
}

// ---- The state machine ------------------------------------------------------------------------

/// The replicated state: `put key value` commands, the applied index and the conf state there.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Kv {
    pub applied: u64,
    pub conf: ConfState,
    pub pairs: BTreeMap<u16, String>,
}

impl Kv {
    /// Snapshot data: applied index, then `key len value` per pair (the conf state travels in
    /// the snapshot's metadata).
    fn encode(&self) -> Vec<u8> {
        let mut out = self.applied.to_le_bytes().to_vec();
        for (k, v) in &self.pairs {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// The inverse of `encode`; empty data (node 1's bootstrap snapshot) is an empty state.
    fn decode(mut b: &[u8], conf: ConfState) -> Result<Kv> {
        if b.is_empty() {
            return Ok(Kv {
                conf,
                ..Kv::default()
            });
        }
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
            if b.len() < n {
                return Err("snapshot data truncated".into());
            }
            let (h, t) = b.split_at(n);
            *b = t;
            Ok(h)
        }
        let applied = u64::from_le_bytes(take(&mut b, 8)?.try_into().map_err(|_| "short")?);
        let mut pairs = BTreeMap::new();
        while !b.is_empty() {
            let k = u16::from_le_bytes(take(&mut b, 2)?.try_into().map_err(|_| "short")?);
            let n = u32::from_le_bytes(take(&mut b, 4)?.try_into().map_err(|_| "short")?);
            let v =
                String::from_utf8(take(&mut b, n as usize)?.to_vec()).map_err(|e| e.to_string())?;
            pairs.insert(k, v);
        }
        Ok(Kv {
            applied,
            conf,
            pairs,
        })
    }

    /// Applies a normal entry's command (`put <key> <value>`; other data is ignored).
    fn put(&mut self, data: &[u8]) {
        let Ok(s) = std::str::from_utf8(data) else {
            return;
        };
        let mut it = s.splitn(3, ' ');
        if let (Some("put"), Some(k), Some(v)) = (it.next(), it.next(), it.next()) {
            if let Ok(k) = k.parse() {
                self.pairs.insert(k, v.to_string());
            }
        }
    }
}

/// Rebuilds a stopped node's state machine from its directory: the snapshot, then the log up to
/// the checkpoint (the applied index the node stored with `set_uint`).
pub fn rebuild(store: &DiskStorage) -> Result<Kv> {
    let err = |e: raft::Error| e.to_string();
    let mut kv = Kv::default();
    if store.uint(MetaInfo::SnapshotIndex) > 0 {
        let snap = store.snapshot(0, 0).map_err(err)?;
        kv = Kv::decode(&snap.data, snap.get_metadata().get_conf_state().clone())?;
        kv.applied = snap.get_metadata().index;
    }
    let checkpoint = store.checkpoint().map_err(|e| e.to_string())?;
    if checkpoint > kv.applied {
        let ctx = GetEntriesContext::empty(false);
        for e in store
            .entries(kv.applied + 1, checkpoint + 1, None, ctx)
            .map_err(err)?
        {
            if e.get_entry_type() == EntryType::EntryNormal {
                kv.put(&e.data);
            }
            kv.applied = e.index;
        }
    }
    // The conf state at the checkpoint: both reach the meta page in the same flush.
    kv.conf = store.initial_state().map_err(err)?.conf_state;
    Ok(kv)
}

// ---- Proposals --------------------------------------------------------------------------------

/// A client's request, queued for whichever node leads (as in `five_mem_node`).
struct Proposal {
    /// The entry's data: a `put <key> <value>` command, or the encoded conf change.
    data: Vec<u8>,
    conf_change: Option<ConfChange>,
    /// The index of the entry the leader appended for it (0: not proposed yet).
    proposed: u64,
    /// Told the index once a node applies that very entry there, `None` if the entry at that
    /// index is another one (the leader that appended it lost its place) or raft dropped it.
    done: SyncSender<Option<u64>>,
}

impl Proposal {
    fn put(key: u16, value: &str) -> (Proposal, Receiver<Option<u64>>) {
        Proposal::new(format!("put {key} {value}").into_bytes(), None)
    }

    fn conf_change(cc: ConfChange) -> Result<(Proposal, Receiver<Option<u64>>)> {
        let data = cc.write_to_bytes().map_err(|e| e.to_string())?;
        Ok(Proposal::new(data, Some(cc)))
    }

    fn new(data: Vec<u8>, cc: Option<ConfChange>) -> (Proposal, Receiver<Option<u64>>) {
        let (done, outcome) = mpsc::sync_channel(1);
        let p = Proposal {
            data,
            conf_change: cc,
            proposed: 0,
            done,
        };
        (p, outcome)
    }
}

type Proposals = Arc<Mutex<VecDeque<Proposal>>>;

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| "a node thread panicked holding a lock".to_string())
}

// ---- A node -----------------------------------------------------------------------------------

/// What a node publishes to the driver.
#[derive(Default)]
struct Board {
    applied: AtomicU64,
    /// Why the node's thread ended early.
    failed: Mutex<Option<String>>,
}

/// What a node thread returns when it stops.
pub struct Stopped {
    pub id: u64,
    pub kv: Kv,
    pub readies: u64,
    pub syncs: u64,
    pub snapshots_built: u64,
}

struct Node {
    id: u64,
    flow: Flow,
    store: DiskStorage,
    /// `None` until the node is part of the cluster (a fresh node 2..5 waits for its first
    /// message from the leader, as in `five_mem_node`).
    raw: Option<RawNode<DiskStorage>>,
    kv: Arc<Mutex<Kv>>,
    mailbox: Receiver<Message>,
    peers: HashMap<u64, Sender<Message>>,
    proposals: Proposals,
    board: Arc<Board>,
    readies: u64,
    syncs: u64,
}

fn config(id: u64, applied: u64) -> Config {
    Config {
        id,
        election_tick: 10,
        heartbeat_tick: 3,
        applied,
        ..Default::default()
    }
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// A message that may start a fresh node's raft (as `five_mem_node` decides).
fn is_initial_msg(m: &Message) -> bool {
    let t = m.get_msg_type();
    t == MessageType::MsgRequestVote
        || t == MessageType::MsgRequestPreVote
        || (t == MessageType::MsgHeartbeat && m.commit == 0)
}

impl Node {
    /// Opens node `id`'s directory: node 1 bootstraps a fresh one with a snapshot listing only
    /// itself; a directory that holds a node starts its raft at once, from its checkpoint.
    fn open(
        id: u64,
        dir: &Path,
        flow: Flow,
        mailbox: Receiver<Message>,
        peers: HashMap<u64, Sender<Message>>,
        proposals: Proposals,
        board: Arc<Board>,
    ) -> Result<Node> {
        let opts = Options {
            sync_writes: flow == Flow::Sync,
            ..Default::default()
        };
        let store = DiskStorage::open_with(dir, opts).map_err(|e| e.to_string())?;
        let initialized = store
            .initial_state()
            .map_err(|e| e.to_string())?
            .initialized();
        if id == 1 && !initialized {
            let mut s = Snapshot::default();
            s.mut_metadata().index = 1;
            s.mut_metadata().term = 1;
            s.mut_metadata().mut_conf_state().voters = vec![1];
            store
                .save(&HardState::default(), &[], &s)
                .map_err(|e| e.to_string())?;
            store.sync().map_err(|e| e.to_string())?;
        }
        let kv = Arc::new(Mutex::new(rebuild(&store)?));
        // Raft asks for a snapshot when a follower needs one; the builder copies the state
        // machine at its applied index, with the conf state there, on the store's build thread.
        let shared = Arc::clone(&kv);
        store.set_snapshot_builder(move |_: &SnapshotRequest| {
            let kv = shared.lock().map_err(|_| "state machine lock poisoned")?;
            Ok(BuiltSnapshot {
                index: kv.applied,
                conf_state: Some(kv.conf.clone()),
                data: Box::new(Cursor::new(kv.encode())),
            })
        });
        let mut node = Node {
            id,
            flow,
            store,
            raw: None,
            kv,
            mailbox,
            peers,
            proposals,
            board,
            readies: 0,
            syncs: 0,
        };
        if id == 1 || initialized {
            node.start_raft()?;
        }
        Ok(node)
    }

    fn start_raft(&mut self) -> Result<()> {
        let applied = lock(&self.kv)?.applied;
        let raw = RawNode::new(&config(self.id, applied), self.store.clone(), &logger())
            .map_err(|e| format!("node {}: {e}", self.id))?;
        self.raw = Some(raw);
        Ok(())
    }

    fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            // A stopped peer's mailbox is gone: raft resends what matters.
            if let Some(tx) = self.peers.get(&m.to) {
                let _ = tx.send(m);
            }
        }
    }

    /// Steps a message, starting a fresh node's raft on its first initial message.
    fn step(&mut self, m: Message) -> Result<()> {
        if self.raw.is_none() {
            if !is_initial_msg(&m) {
                return Ok(());
            }
            self.start_raft()?;
        }
        if let Some(raw) = self.raw.as_mut() {
            // Messages from a stale term or an unknown peer are refused: raft resends.
            let _ = raw.step(m);
        }
        Ok(())
    }

    /// The leader proposes what the queue holds that is not proposed yet.
    fn propose(&mut self) -> Result<()> {
        let Some(raw) = self.raw.as_mut() else {
            return Ok(());
        };
        if raw.raft.state != StateRole::Leader {
            return Ok(());
        }
        let mut queue = lock(&self.proposals)?;
        for p in queue.iter_mut().filter(|p| p.proposed == 0) {
            let before = raw.raft.raft_log.last_index();
            let r = match &p.conf_change {
                None => raw.propose(vec![], p.data.clone()),
                Some(cc) => raw.propose_conf_change(vec![], cc.clone()),
            };
            let after = raw.raft.raft_log.last_index();
            if r.is_err() || after == before {
                let _ = p.done.send(None);
                p.proposed = u64::MAX; // answered; removed below
            } else {
                p.proposed = after;
            }
        }
        queue.retain(|p| p.proposed != u64::MAX);
        Ok(())
    }

    /// Applies committed entries; the leader answers the proposals they carry.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        let Some(raw) = self.raw.as_mut() else {
            return Ok(());
        };
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        for e in entries {
            let mut kv = lock(&self.kv)?;
            let conf_change = e.get_entry_type() == EntryType::EntryConfChange;
            if conf_change {
                let cc = ConfChange::parse_from_bytes(&e.data).map_err(|e| e.to_string())?;
                let cs = raw.apply_conf_change(&cc).map_err(|e| e.to_string())?;
                // The conf state `initial_state()` returns, and the one a snapshot built now
                // must record: a node added here is listed in it.
                self.store.set_conf_state(&cs).map_err(|e| e.to_string())?;
                kv.conf = cs;
            } else if !e.data.is_empty() {
                kv.put(&e.data);
            }
            kv.applied = e.index;
            drop(kv);
            // The first node to apply the index answers (every node applies the same entry
            // there): the proposal succeeded if it is that very entry.
            let mut queue = lock(&self.proposals)?;
            if let Some(pos) = queue.iter().position(|p| p.proposed == e.index) {
                if let Some(p) = queue.remove(pos) {
                    let _ = p.done.send((p.data[..] == e.data[..]).then_some(e.index));
                }
            }
        }
        // The applied index, durable with the next flush (a rebuild replays the log up to it).
        self.store.set_uint(MetaInfo::CheckpointIndex, last);
        self.board.applied.store(last, Ordering::Release);
        Ok(())
    }

    /// A snapshot from the leader replaced the state machine.
    fn install(&mut self, snap: &Snapshot) -> Result<()> {
        let md = snap.get_metadata();
        let mut kv = Kv::decode(&snap.data, md.get_conf_state().clone())?;
        kv.applied = md.index;
        *lock(&self.kv)? = kv;
        self.store.set_uint(MetaInfo::CheckpointIndex, md.index);
        self.board.applied.store(md.index, Ordering::Release);
        Ok(())
    }

    /// The sync flow: one Ready, persisted by `save` before anything that must wait for it.
    fn on_ready_sync(&mut self) -> Result<()> {
        let Some(raw) = self.raw.as_mut() else {
            return Ok(());
        };
        if !raw.has_ready() {
            return Ok(());
        }
        let mut rd = raw.ready();
        self.readies += 1;
        let msgs = rd.take_messages();
        self.send(msgs);
        let raw = self.raw.as_mut().ok_or("raft gone")?;
        // Snapshot (if any), entries and hard state, durable when `save` returns.
        let hs = rd.hs().cloned().unwrap_or_default();
        self.store
            .save(&hs, rd.entries(), rd.snapshot())
            .map_err(|e| format!("node {}: save: {e}", self.id))?;
        let snap = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
        let committed = rd.take_committed_entries();
        let persisted = rd.take_persisted_messages();
        let _ = raw;
        if let Some(snap) = snap {
            self.install(&snap)?;
        }
        self.apply(committed)?;
        self.send(persisted);
        let raw = self.raw.as_mut().ok_or("raft gone")?;
        let mut light = raw.advance(rd);
        // The commit index a LightReady brings is part of the hard state: save it too.
        if let Some(commit) = light.commit_index() {
            let mut hs = raw.raft.hard_state();
            hs.commit = commit;
            self.store
                .save(&hs, &[], &Snapshot::default())
                .map_err(|e| format!("node {}: save: {e}", self.id))?;
        }
        let msgs = light.take_messages();
        let committed = light.take_committed_entries();
        self.send(msgs);
        self.apply(committed)?;
        self.raw.as_mut().ok_or("raft gone")?.advance_apply();
        Ok(())
    }

    /// The async flow: several Readies written (not flushed), each handed back with
    /// `advance_append_async`; one `sync()`; then their persisted messages and
    /// `on_persist_ready`.
    fn on_ready_async(&mut self) -> Result<()> {
        let mut persisted = Vec::new();
        let mut last_number = None;
        let mut installed = None;
        while persisted.len() < READIES_PER_SYNC {
            // Messages that arrived meanwhile join this batch of Readies.
            self.drain_mailbox()?;
            let Some(raw) = self.raw.as_mut() else {
                return Ok(());
            };
            if !raw.has_ready() {
                break;
            }
            let mut rd = raw.ready();
            self.readies += 1;
            let msgs = rd.take_messages();
            self.send(msgs);
            let hs = rd.hs().cloned().unwrap_or_default();
            // Written to the page cache: raft can read the entries back from `Storage` at once,
            // which `advance_append_async` requires. A snapshot is installed durably.
            self.store
                .save(&hs, rd.entries(), rd.snapshot())
                .map_err(|e| format!("node {}: save: {e}", self.id))?;
            if !rd.snapshot().is_empty() {
                let snap = rd.snapshot().clone();
                self.install(&snap)?;
                // It counts as applied once it is persisted (after the sync below).
                installed = Some(snap.get_metadata().index);
            }
            // Committed entries a Ready brings are already persisted (raft holds back the
            // others until `on_persist_ready`).
            let committed = rd.take_committed_entries();
            let applies = !committed.is_empty();
            self.apply(committed)?;
            persisted.push(rd.take_persisted_messages());
            last_number = Some(rd.number());
            let applied = lock(&self.kv)?.applied;
            let raw = self.raw.as_mut().ok_or("raft gone")?;
            raw.advance_append_async(rd);
            if applies {
                raw.advance_apply_to(applied);
            }
        }
        let Some(number) = last_number else {
            return Ok(());
        };
        // One flush for every Ready above: the log, then the meta page (hard state, conf state,
        // checkpoint). Only now may their persisted messages (votes, append responses) go.
        self.store
            .sync()
            .map_err(|e| format!("node {}: sync: {e}", self.id))?;
        self.syncs += 1;
        for msgs in persisted {
            self.send(msgs);
        }
        let raw = self.raw.as_mut().ok_or("raft gone")?;
        raw.on_persist_ready(number);
        if let Some(index) = installed {
            raw.advance_apply_to(index);
        }
        Ok(())
    }

    fn drain_mailbox(&mut self) -> Result<()> {
        while let Ok(m) = self.mailbox.try_recv() {
            self.step(m)?;
        }
        Ok(())
    }

    /// The node's loop until `stop`: messages, ticks, proposals, Readies.
    fn run(mut self, stop: Arc<AtomicBool>) -> Result<Stopped> {
        let mut next_tick = Instant::now() + TICK;
        while !stop.load(Ordering::Acquire) {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.mailbox.recv_timeout(wait) {
                Ok(m) => self.step(m)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.drain_mailbox()?;
            if Instant::now() >= next_tick {
                if let Some(raw) = self.raw.as_mut() {
                    raw.tick();
                }
                next_tick = Instant::now() + TICK;
            }
            self.propose()?;
            match self.flow {
                Flow::Sync => self.on_ready_sync()?,
                Flow::Async => self.on_ready_async()?,
            }
        }
        let kv = lock(&self.kv)?.clone();
        let snapshots_built = self.store.snapshot_build_status().stored;
        // Dropping the raft node and the store (its last handle) flushes and unlocks it.
        Ok(Stopped {
            id: self.id,
            kv,
            readies: self.readies,
            syncs: self.syncs,
            snapshots_built,
        })
    }
}

// ---- The cluster ------------------------------------------------------------------------------

struct Cluster {
    threads: Vec<JoinHandle<Result<Stopped>>>,
    boards: Vec<Arc<Board>>,
    proposals: Proposals,
    stop: Arc<AtomicBool>,
}

impl Cluster {
    /// Starts the five nodes on their directories under `root`.
    fn start(root: &Path, flow: Flow) -> Result<Cluster> {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..NODES).map(|_| mpsc::channel()).unzip();
        let proposals: Proposals = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut boards = Vec::new();
        for (i, rx) in rxs.into_iter().enumerate() {
            let id = i as u64 + 1;
            let peers = (1..=NODES).zip(txs.iter().cloned()).collect();
            let board = Arc::new(Board::default());
            let node = Node::open(
                id,
                &root.join(format!("node-{id}")),
                flow,
                rx,
                peers,
                Arc::clone(&proposals),
                Arc::clone(&board),
            )?;
            let stop = Arc::clone(&stop);
            let b = Arc::clone(&board);
            threads.push(std::thread::spawn(move || {
                let r = node.run(stop);
                if let (Err(e), Ok(mut f)) = (&r, b.failed.lock()) {
                    *f = Some(e.clone());
                }
                r
            }));
            boards.push(board);
        }
        Ok(Cluster {
            threads,
            boards,
            proposals,
            stop,
        })
    }

    /// An error if a node's thread has ended.
    fn check_alive(&self) -> Result<()> {
        for (i, t) in self.threads.iter().enumerate() {
            if t.is_finished() {
                let why = lock(&self.boards[i].failed)?.clone();
                return Err(format!(
                    "node {} stopped: {}",
                    i + 1,
                    why.unwrap_or_else(|| "its thread panicked".into())
                ));
            }
        }
        Ok(())
    }

    /// Waits for a proposal's outcome while every node runs.
    fn outcome(&self, o: &Receiver<Option<u64>>) -> Result<Option<u64>> {
        let start = Instant::now();
        loop {
            match o.recv_timeout(Duration::from_millis(20)) {
                Ok(ok) => return Ok(ok),
                Err(RecvTimeoutError::Disconnected) => return Err("a proposal was lost".into()),
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.check_alive()?;
            if start.elapsed() > PATIENCE {
                return Err("a proposal was not applied in time".into());
            }
        }
    }

    /// Waits until every node applied `index` at least.
    fn wait_applied(&self, index: u64) -> Result<()> {
        let start = Instant::now();
        loop {
            let applied: Vec<u64> = self
                .boards
                .iter()
                .map(|b| b.applied.load(Ordering::Acquire))
                .collect();
            if applied.iter().all(|&a| a >= index) {
                return Ok(());
            }
            self.check_alive()?;
            if start.elapsed() > PATIENCE {
                return Err(format!(
                    "waiting for every node to apply index {index}: applied {applied:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Adds nodes 2..=5 one conf change at a time (retried if raft drops one); returns the
    /// index of the last.
    fn add_followers(&self) -> Result<u64> {
        let mut index = 0;
        for id in 2..=NODES {
            let mut cc = ConfChange::default();
            cc.node_id = id;
            cc.set_change_type(ConfChangeType::AddNode);
            let start = Instant::now();
            loop {
                let (p, outcome) = Proposal::conf_change(cc.clone())?;
                lock(&self.proposals)?.push_back(p);
                if let Some(i) = self.outcome(&outcome)? {
                    index = i;
                    break;
                }
                if start.elapsed() > PATIENCE {
                    return Err(format!("adding node {id} kept failing"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(index)
    }

    /// Puts `keys` (value `hello, world <round>`), all queued at once, each retried until it
    /// is applied; returns the highest index they were applied at.
    fn put(&self, keys: std::ops::Range<u16>, round: u32) -> Result<u64> {
        let value = format!("hello, world {round}");
        let mut waiting: Vec<(u16, Receiver<Option<u64>>)> = Vec::new();
        let mut queue = |k: u16| -> Result<(u16, Receiver<Option<u64>>)> {
            let (p, outcome) = Proposal::put(k, &value);
            lock(&self.proposals)?.push_back(p);
            Ok((k, outcome))
        };
        for k in keys {
            waiting.push(queue(k)?);
        }
        let (mut index, start) = (0, Instant::now());
        while !waiting.is_empty() {
            let mut again = Vec::new();
            for (k, o) in waiting {
                match self.outcome(&o)? {
                    Some(i) => index = index.max(i),
                    None if start.elapsed() > PATIENCE => {
                        return Err(format!("put {k} kept being dropped"))
                    }
                    None => again.push(k),
                }
            }
            waiting = again.into_iter().map(&mut queue).collect::<Result<_>>()?;
        }
        Ok(index)
    }

    fn stop(self) -> Result<Vec<Stopped>> {
        self.stop.store(true, Ordering::Release);
        self.threads
            .into_iter()
            .map(|t| t.join().map_err(|_| "a node thread panicked".to_string())?)
            .collect()
    }
}

/// What a run saw.
pub struct Report {
    pub flow: Flow,
    pub first: Vec<Stopped>,
    pub second: Vec<Stopped>,
    pub took: Duration,
}

/// The whole flow in `root` (which must be new or empty).
pub fn run(root: &Path, flow: Flow, out: &mut impl FnMut(String)) -> Result<Report> {
    let t = Instant::now();
    let c = Cluster::start(root, flow)?;
    let index = c.add_followers()?;
    // Every node applied the last conf change: each joined (from a snapshot that lists it).
    c.wait_applied(index)?;
    out(format!(
        "  nodes 2..5 added by conf changes ({} ms); every node has joined",
        t.elapsed().as_millis()
    ));
    let index = c.put(0..100, 1)?;
    c.wait_applied(index)?;
    out(format!(
        "  100 proposals applied on all five nodes (index {index}, {} ms)",
        t.elapsed().as_millis()
    ));
    let first = c.stop()?;

    // Every directory rebuilds exactly the state its node had.
    for s in &first {
        let store = DiskStorage::open(root.join(format!("node-{}", s.id)))
            .map_err(|e| format!("reopen node {}: {e}", s.id))?;
        let kv = rebuild(&store)?;
        if kv != s.kv {
            return Err(format!(
                "node {}: state rebuilt from its directory differs: applied {} vs {}, {} vs {} pairs, conf {:?} vs {:?}",
                s.id,
                kv.applied,
                s.kv.applied,
                kv.pairs.len(),
                s.kv.pairs.len(),
                kv.conf.voters,
                s.kv.conf.voters
            ));
        }
        if kv.pairs.len() != 100 || kv.conf.voters.len() != NODES as usize {
            return Err(format!(
                "node {}: {} pairs, voters {:?}",
                s.id,
                kv.pairs.len(),
                kv.conf.voters
            ));
        }
    }
    out(
        "  all five stopped; each directory rebuilds its node's state (100 pairs, 5 voters)".into(),
    );

    let c = Cluster::start(root, flow)?;
    let index = c.put(100..120, 2)?;
    c.wait_applied(index)?;
    let second = c.stop()?;
    let want = &second[0].kv;
    for s in &second {
        if s.kv.pairs != want.pairs || s.kv.pairs.len() != 120 {
            return Err(format!(
                "after the restart node {} has {} pairs, node 1 {}",
                s.id,
                s.kv.pairs.len(),
                want.pairs.len()
            ));
        }
    }
    out(format!(
        "  restarted from their directories: 20 more proposals, five equal state machines (120 pairs, index {index})"
    ));
    Ok(Report {
        flow,
        first,
        second,
        took: t.elapsed(),
    })
}

fn describe(r: &Report) -> String {
    let mut s = String::new();
    for (a, b) in r.first.iter().zip(&r.second) {
        let syncs = if r.flow == Flow::Async {
            format!(", {} sync() calls", a.syncs + b.syncs)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "  node {}: {} Readies{syncs}, {} snapshot(s) built for raft\n",
            a.id,
            a.readies + b.readies,
            a.snapshots_built + b.snapshots_built
        ));
    }
    s
}

#[allow(dead_code)] // tests/five_nodes.rs includes this file for `run`
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let flows = match arg("--flow").as_deref() {
        None => vec![Flow::Sync, Flow::Async],
        Some("sync") => vec![Flow::Sync],
        Some("async") => vec![Flow::Async],
        Some(other) => {
            eprintln!("five_nodes: --flow is sync or async, not {other}");
            return std::process::ExitCode::from(2);
        }
    };
    let (_tmp, base): (Option<tempfile::TempDir>, PathBuf) = match arg("--dir") {
        Some(d) => (None, PathBuf::from(d)),
        None => match tempfile::tempdir() {
            Ok(t) => {
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
            Err(e) => {
                eprintln!("five_nodes: a temporary directory: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    for flow in flows {
        let root = base.join(format!("{flow:?}").to_lowercase());
        println!(
            "five nodes, {} flow, directories under {}",
            format!("{flow:?}").to_lowercase(),
            root.display()
        );
        match run(&root, flow, &mut |line| println!("{line}")) {
            Ok(r) => {
                print!("{}", describe(&r));
                println!("  ok in {} ms", r.took.as_millis());
            }
            Err(e) => {
                eprintln!("five_nodes: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
