//! One node: an `Engine` hosting every group, a raft thread driving one `RawNode<Store>` per
//! group, and a writer thread that persists all groups' Readies with one `Engine::write`.
//!
//! The raft thread's loop (raft-rs async ready, as TiKV's store loop and StoreWriter do it):
//! tick every group on time; step incoming messages and proposals; then, for every group with a
//! Ready: send its messages at once (a leader's, which need no persistence), apply its committed
//! entries (raft hands out only entries it knows are durable here), add its snapshot, entries
//! and hard state to the one `WriteBatch` being collected for all groups, stage them in the
//! group's [`Store`] so that raft can read them, keep its persisted messages and number, and
//! call `advance_append_async`. When the writer is idle the batch goes to it; when the writer
//! reports it durable, every Ready in it gets `on_persist_ready(number)` and its persisted
//! messages are sent (the votes and append responses of followers, which must never leave before
//! what they promise is on disk), in order. A Ready that persists nothing but follows an
//! unfinished write of its group waits for that write in the same way. A group's snapshot
//! (its state machine at the applied index) is taken as it applies, and stored only once a
//! durable hard state commits that index: the hard state that committed the entries is still
//! in the batch when they are applied, and a snapshot durable ahead of it is one a kill leaves
//! past the durable commit, which raft refuses to start from.
//!
//! Both rules are checked as the node runs, so that a run (and `tests/multiraft.rs`) fails when
//! one is broken, which a clean stop and restart never shows: every entry applied must already
//! be in the engine with its term, and every message that promises something on disk (a vote
//! request, a vote, an accepted append or snapshot) must find it durable when it leaves.
//!
//! Owns: the node's engine, raft nodes and state machines, its writer thread, and the node's
//! figures on the [`Board`]. Must never: send a persisted message before the batch holding its
//! Ready is durable, call `step`/`propose` between a group's `ready()` and its
//! `advance_append_async`, store a snapshot past the group's durable commit, or call
//! `Engine::write` from the raft thread.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::prelude::*;
use raft::{Config, RawNode, SnapshotStatus, StateRole, Storage};
use raftwal::{Engine, MetaInfo, WriteBatch};

use crate::cluster::{Board, GroupView, Publication, Reply, Router};
use crate::sm::StateMachine;
use crate::store::Store;

/// The voters of every group.
pub const PEERS: [u64; 3] = [1, 2, 3];

/// Events a node's raft thread handles, in arrival order.
pub enum Event {
    /// Raft messages from another node: (group id, message).
    Raft(Vec<(u64, Message)>),
    /// A client's proposal of a put to a group.
    Propose { group: u64, id: u64, data: Vec<u8> },
    /// The writer made batch `seq` durable (or failed).
    Persisted {
        seq: u64,
        result: Result<(), String>,
        took: Duration,
    },
    /// Stop ticking and refuse proposals (`true`), or resume (`false`).
    Pause(bool),
    /// Stop: finish and persist what is under way, close the engine.
    Stop,
}

/// How a node runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: u64,
    pub root: PathBuf,
    pub groups: u64,
    pub tick: Duration,
    /// Compact a group's log (snapshot of its state machine at the applied index, stored once
    /// that index is committed durably) once this many entries were applied since its last
    /// snapshot; 0: never.
    pub compact_every: u64,
}

/// The raft-rs configuration of node `id` in a group, resuming after `applied`.
fn raft_config(id: u64, applied: u64) -> Config {
    Config {
        id,
        election_tick: 10,
        heartbeat_tick: 2,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        pre_vote: true,
        applied,
        ..Default::default()
    }
}

/// A node's figures, added up over its incarnations.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// `Engine::write` calls.
    pub commits: u64,
    /// Parts (one group's Ready each) written by them.
    pub parts: u64,
    /// Groups with a part in a commit, added up over the commits.
    pub groups: u64,
    /// Commits by the number of groups with a part in them (so that the most in one commit
    /// can be had for a stretch of the run, see `scenario::during`).
    pub groups_per_commit: BTreeMap<u64, u64>,
    pub entries: u64,
    pub bytes: u64,
    /// Time spent inside `Engine::write`.
    pub write_time: Duration,
    /// The last `Engine::open`, and rebuilding every group's raft node after it.
    pub open_time: Duration,
    pub start_time: Duration,
    /// Snapshots this node took of its state machines (compacting their logs), and snapshots
    /// it installed from a leader.
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
}

impl Stats {
    /// The most groups with a part in one commit.
    pub fn max_groups(&self) -> u64 {
        self.groups_per_commit
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
    }

    /// One `Engine::write` of `parts` parts for `groups` groups, `entries` entries of `bytes`
    /// bytes, that took `took`.
    pub fn record_commit(
        &mut self,
        groups: u64,
        parts: u64,
        entries: u64,
        bytes: u64,
        took: Duration,
    ) {
        self.commits += 1;
        self.parts += parts;
        self.groups += groups;
        *self.groups_per_commit.entry(groups).or_default() += 1;
        self.entries += entries;
        self.bytes += bytes;
        self.write_time += took;
    }
}

/// A running node: its thread, ended by [`Event::Stop`].
pub struct NodeHandle {
    pub id: u64,
    thread: JoinHandle<Result<Vec<StateMachine>, String>>,
}

impl NodeHandle {
    /// Waits for the node's thread; returns every group's final state machine, by group id.
    pub fn join(self) -> Result<Vec<StateMachine>, String> {
        self.thread
            .join()
            .map_err(|_| format!("node {}: its raft thread panicked", self.id))?
    }
}

/// Starts node `cfg.id`: its events arrive on `rx` (registered with the router by the caller),
/// replies to clients go to `replies`.
pub fn start(
    cfg: NodeConfig,
    rx: Receiver<Event>,
    tx: Sender<Event>,
    router: Arc<Router>,
    board: Arc<Board>,
    replies: Sender<Reply>,
) -> NodeHandle {
    let id = cfg.id;
    let thread = std::thread::Builder::new()
        .name(format!("raft-{id}"))
        .spawn(move || {
            let r = Node::open(cfg, tx, router, Arc::clone(&board), replies)
                .and_then(|mut n| n.run(rx));
            if let Err(e) = &r {
                board.fail(id, e.clone());
            }
            r
        })
        .expect("spawn a node's raft thread");
    NodeHandle { id, thread }
}

struct Group {
    id: u64,
    raw: RawNode<Store>,
    sm: StateMachine,
    /// Sequence number of the last batch holding a Ready of this group.
    last_write: u64,
    /// Proposals this node made as leader and has not applied yet.
    proposed: HashSet<u64>,
    /// Index of the group's last snapshot.
    snapshot_index: u64,
    /// The commit index of the group's last durable hard state.
    durable_commit: u64,
    /// The state machine encoded at an applied index, to be stored as the group's snapshot
    /// once a durable hard state commits that index ([`Node::snapshot_if_durable`]).
    staged: Option<(u64, bytes::Bytes)>,
}

/// A Ready handed to (or waiting for) a batch: what to do once the batch is durable.
struct Pending {
    group: usize,
    number: u64,
    messages: Vec<Message>,
    /// The Ready added a part to the batch (else it only waits for the batch).
    wrote: bool,
    /// A snapshot to install into the state machine.
    snapshot: Option<Snapshot>,
    /// The commit index of the hard state the Ready wrote (0: none).
    commit: u64,
}

/// The batch being collected, or the one at the writer.
struct Batch {
    seq: u64,
    wb: WriteBatch,
    readies: Vec<Pending>,
    /// Parts of `wb` (taken when the batch goes to the writer).
    parts: u64,
    entries: u64,
    bytes: u64,
}

impl Batch {
    fn new(seq: u64) -> Batch {
        Batch {
            seq,
            wb: WriteBatch::new(),
            readies: Vec::new(),
            parts: 0,
            entries: 0,
            bytes: 0,
        }
    }

    /// Groups with a part in the batch.
    fn groups(&self) -> u64 {
        let groups: HashSet<usize> = self
            .readies
            .iter()
            .filter(|p| p.wrote)
            .map(|p| p.group)
            .collect();
        groups.len() as u64
    }
}

/// A batch for the writer thread.
struct Job {
    seq: u64,
    wb: WriteBatch,
}

struct Node {
    id: u64,
    tick: Duration,
    compact_every: u64,
    engine: Option<Arc<Engine>>,
    groups: Vec<Group>,
    writer: Option<(Sender<Job>, JoinHandle<()>)>,
    collecting: Batch,
    in_flight: Option<Batch>,
    /// Every batch up to this one is durable.
    durable: u64,
    router: Arc<Router>,
    board: Arc<Board>,
    replies: Sender<Reply>,
    /// Messages to send at the end of this round: (to, group, message).
    outbox: Vec<(u64, u64, Message)>,
    stats: Stats,
    dirty: bool,
    paused: bool,
    /// Raft events handled since the last publication.
    handled: u64,
}

fn err<E: std::fmt::Display>(what: String) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

impl Node {
    /// Opens (or creates) the node's engine and every group, and starts the writer.
    fn open(
        cfg: NodeConfig,
        tx: Sender<Event>,
        router: Arc<Router>,
        board: Arc<Board>,
        replies: Sender<Reply>,
    ) -> Result<Node, String> {
        let id = cfg.id;
        let t = Instant::now();
        let engine = Engine::open(&cfg.root)
            .map_err(err(format!("node {id}: open {}", cfg.root.display())))?;
        let open_time = t.elapsed();
        let t = Instant::now();
        let fresh = engine.group_ids().is_empty();
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut groups = Vec::new();
        for gid in 1..=cfg.groups {
            let what = || format!("node {id} group {gid}");
            let disk = match engine.group(gid) {
                Some(g) => g,
                None => engine.create_group(gid, id).map_err(err(what()))?,
            };
            // The voters are set whenever the group has none, not only when it was just made:
            // a kill between `create_group` and this left a group with no voters, which
            // raft-rs never lets campaign (it had no leader for good).
            if !disk.initial_state().map_err(err(what()))?.initialized() {
                disk.set_conf_state(&ConfState::from((PEERS.to_vec(), vec![])))
                    .map_err(err(what()))?;
            }
            // The state machine is in memory: it restarts from the group's snapshot (if any)
            // and raft hands it every committed entry after that again.
            let mut sm = StateMachine::default();
            let snapshot_index = disk.uint(MetaInfo::SnapshotIndex);
            if snapshot_index > 0 {
                let snap = disk.snapshot(0, 0).map_err(err(what()))?;
                sm = StateMachine::decode(&snap.data).map_err(err(what()))?;
                sm.applied = snap.get_metadata().index;
            }
            let mut raw = RawNode::new(&raft_config(id, sm.applied), Store::new(disk), &logger)
                .map_err(err(what()))?;
            // A new cluster: each node campaigns for a third of the groups, so leadership
            // starts balanced and without waiting for election timeouts.
            if fresh && (gid - 1) % PEERS.len() as u64 + 1 == id {
                raw.campaign().map_err(err(what()))?;
            }
            // What raft starts from is durable: its commit, the hard state's.
            let durable_commit = raw.raft.hard_state().commit;
            groups.push(Group {
                id: gid,
                raw,
                sm,
                last_write: 0,
                proposed: HashSet::new(),
                snapshot_index,
                durable_commit,
                staged: None,
            });
        }
        let start_time = t.elapsed();
        let engine = Arc::new(engine);
        let (jobs, jobs_rx) = mpsc::channel::<Job>();
        let writer = {
            let engine = Arc::clone(&engine);
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(format!("writer-{id}"))
                .spawn(move || writer(engine, jobs_rx, tx))
                .map_err(err(format!("node {id}: spawn its writer")))?
        };
        let stats = Stats {
            open_time,
            start_time,
            ..board.stats(id)
        };
        let mut node = Node {
            id,
            tick: cfg.tick,
            compact_every: cfg.compact_every,
            engine: Some(engine),
            groups,
            writer: Some((jobs, writer)),
            collecting: Batch::new(1),
            in_flight: None,
            durable: 0,
            router,
            board,
            replies,
            outbox: Vec::new(),
            stats,
            dirty: true,
            paused: false,
            handled: 0,
        };
        node.publish(true);
        Ok(node)
    }

    fn run(&mut self, rx: Receiver<Event>) -> Result<Vec<StateMachine>, String> {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            let now = Instant::now();
            if now >= next_tick && !self.paused {
                for g in &mut self.groups {
                    g.raw.tick();
                }
                next_tick += self.tick;
                if next_tick < now {
                    next_tick = now + self.tick; // fell behind: do not tick in a burst
                }
            }
            let mut stop = false;
            match rx.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
                Ok(ev) => stop |= self.handle(ev)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            // Everything already queued joins this round (bounded, so ticks stay on time).
            for _ in 0..4096 {
                match rx.try_recv() {
                    Ok(ev) => stop |= self.handle(ev)?,
                    Err(_) => break,
                }
            }
            if stop {
                return self.shutdown(rx);
            }
            self.round()?;
        }
    }

    /// Handles one event; `true` for [`Event::Stop`].
    fn handle(&mut self, ev: Event) -> Result<bool, String> {
        match ev {
            Event::Raft(msgs) => {
                self.handled += 1;
                for (gid, m) in msgs {
                    let Some(g) = self.group_mut(gid) else {
                        continue;
                    };
                    // A stale or unexpected message is raft's to ignore; its error is not ours.
                    let _ = g.raw.step(m);
                }
            }
            Event::Propose { group, id, data } => {
                let paused = self.paused;
                let accepted = match self.group_mut(group) {
                    Some(g) if g.raw.raft.state == StateRole::Leader && !paused => {
                        let ok = g.raw.propose(vec![], data).is_ok();
                        if ok {
                            g.proposed.insert(id); // a retry of a pending id counts once
                        }
                        ok
                    }
                    _ => false,
                };
                if !accepted {
                    let _ = self.replies.send(Reply::Rejected { id });
                }
            }
            Event::Persisted { seq, result, took } => self.persisted(seq, result, took)?,
            Event::Pause(p) => self.paused = p,
            Event::Stop => return Ok(true),
        }
        self.dirty = true;
        Ok(false)
    }

    fn group_mut(&mut self, gid: u64) -> Option<&mut Group> {
        let i = gid.checked_sub(1)? as usize;
        self.groups.get_mut(i)
    }

    /// One round after the events: every group's Ready, the batch to the writer if it is idle,
    /// the messages out, the board.
    fn round(&mut self) -> Result<(), String> {
        for i in 0..self.groups.len() {
            if self.groups[i].raw.has_ready() {
                self.ready(i)?;
                self.dirty = true;
            }
        }
        // Messages first: what they promise is then checked against the engine while nothing
        // of their groups is at the writer (see `flush`).
        self.flush()?;
        self.submit()?;
        self.publish(false);
        Ok(())
    }

    /// Handles group `i`'s Ready (see the module comment for the order).
    fn ready(&mut self, i: usize) -> Result<(), String> {
        let g = &mut self.groups[i];
        let gid = g.id;
        let mut rd = g.raw.ready();
        for m in rd.take_messages() {
            self.outbox.push((m.to, gid, m));
        }
        if let Some(ss) = rd.ss() {
            if ss.raft_state != StateRole::Leader {
                // Deposed (or never leader): the client retries elsewhere. A proposal that
                // still commits is applied twice; a put of the same value, so harmless.
                for id in g.proposed.drain() {
                    let _ = self.replies.send(Reply::Rejected { id });
                }
            }
        }
        let committed = rd.take_committed_entries();
        apply(self.id, g, &committed, &self.replies)?;

        let number = rd.number();
        let messages = rd.take_persisted_messages();
        let writes = !rd.snapshot().is_empty() || !rd.entries().is_empty() || rd.hs().is_some();
        if writes {
            let b = &mut self.collecting;
            let hs = rd.hs().cloned().unwrap_or_default();
            b.wb.save(gid, &hs, rd.entries(), rd.snapshot());
            b.parts += 1;
            b.entries += rd.entries().len() as u64;
            b.bytes += rd
                .entries()
                .iter()
                .map(|e| e.data.len() as u64)
                .sum::<u64>();
            g.raw.mut_store().stage(b.seq, rd.snapshot(), rd.entries());
            g.last_write = b.seq;
            let snapshot = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
            b.readies.push(Pending {
                group: i,
                number,
                messages,
                wrote: true,
                snapshot,
                commit: hs.commit,
            });
            g.raw.advance_append_async(rd);
        } else if g.last_write > self.durable {
            // Nothing to write, but an earlier write of the group is not durable yet.
            let pending = Pending {
                group: i,
                number,
                messages,
                wrote: false,
                snapshot: None,
                commit: 0,
            };
            match self.in_flight.as_mut() {
                Some(b) if b.seq == g.last_write => b.readies.push(pending),
                _ => self.collecting.readies.push(pending),
            }
            g.raw.advance_append_async(rd);
        } else {
            g.raw.advance_append_async(rd);
            g.raw.on_persist_ready(number);
            for m in messages {
                self.outbox.push((m.to, gid, m));
            }
        }
        if !committed.is_empty() {
            g.raw.advance_apply_to(g.sm.applied);
            let due = g.sm.applied >= g.snapshot_index + self.compact_every;
            if self.compact_every > 0 && due && g.staged.is_none() {
                // Taken now (the state at the applied index), stored once it is committed
                // durably: the hard state committing these entries is only in the batch.
                g.staged = Some((g.sm.applied, g.sm.encode()));
            }
            self.snapshot_if_durable(i)?;
        }
        Ok(())
    }

    /// Stores group `i`'s staged snapshot once a durable hard state commits its index. A
    /// snapshot stored past the durable commit is one a kill can leave behind it, and raft
    /// refuses to start from that ("hs.commit is out of range"); one a received snapshot has
    /// overtaken is dropped. The group's storage says which snapshot it holds: the batch that
    /// made the commit durable may also have installed a leader's snapshot, whose Ready is
    /// handled after this one's (`persisted`), and storing an older one fails.
    fn snapshot_if_durable(&mut self, i: usize) -> Result<(), String> {
        let g = &mut self.groups[i];
        let Some(index) = g.staged.as_ref().map(|(index, _)| *index) else {
            return Ok(());
        };
        let stored = g.raw.store().disk().uint(MetaInfo::SnapshotIndex);
        if index <= g.snapshot_index.max(stored) {
            g.staged = None;
        } else if index <= g.durable_commit {
            if let Some((index, data)) = g.staged.take() {
                // Committed durably, so its entries are durable and in the log. Checked against
                // the engine's own durable hard state as well (the runs' tests rely on it).
                let disk = g.raw.store().disk();
                let durable = disk
                    .initial_state()
                    .map_err(|e| format!("node {} group {}: {e}", self.id, g.id))?
                    .hard_state
                    .commit;
                if durable < index {
                    return Err(format!(
                        "node {} group {}: a snapshot at {index} past the durable commit {durable}",
                        self.id, g.id
                    ));
                }
                disk.create_snapshot(index, None, data).map_err(|e| {
                    format!("node {} group {}: create_snapshot: {e}", self.id, g.id)
                })?;
                g.snapshot_index = index;
                self.stats.snapshots_taken += 1;
            }
        }
        Ok(())
    }

    /// Hands the collected batch to the writer if none is there.
    fn submit(&mut self) -> Result<(), String> {
        if self.in_flight.is_some() || self.collecting.readies.is_empty() {
            return Ok(());
        }
        let next = Batch::new(self.collecting.seq + 1);
        let mut b = std::mem::replace(&mut self.collecting, next);
        let job = Job {
            seq: b.seq,
            wb: std::mem::take(&mut b.wb),
        };
        let (jobs, _) = self.writer.as_ref().ok_or("the writer is gone")?;
        jobs.send(job)
            .map_err(|_| format!("node {}: its writer thread ended", self.id))?;
        self.in_flight = Some(b);
        Ok(())
    }

    /// Batch `seq` is durable: its Readies are persisted, their messages go.
    fn persisted(
        &mut self,
        seq: u64,
        result: Result<(), String>,
        took: Duration,
    ) -> Result<(), String> {
        result.map_err(|e| format!("node {}: Engine::write of batch {seq}: {e}", self.id))?;
        let b = self
            .in_flight
            .take()
            .filter(|b| b.seq == seq)
            .ok_or_else(|| format!("node {}: batch {seq} reported, not the one sent", self.id))?;
        self.durable = seq;
        let groups = b.groups();
        self.stats
            .record_commit(groups, b.parts, b.entries, b.bytes, took);
        for p in b.readies {
            let g = &mut self.groups[p.group];
            g.durable_commit = g.durable_commit.max(p.commit);
            g.raw.mut_store().persisted(seq);
            g.raw.on_persist_ready(p.number);
            if let Some(snap) = p.snapshot {
                let mut sm = StateMachine::decode(&snap.data)
                    .map_err(|e| format!("node {} group {}: snapshot data: {e}", self.id, g.id))?;
                sm.applied = snap.get_metadata().index;
                g.sm = sm;
                g.snapshot_index = g.sm.applied;
                g.raw.advance_apply_to(g.sm.applied);
                self.stats.snapshots_installed += 1;
            }
            for m in p.messages {
                self.outbox.push((m.to, g.id, m));
            }
            self.snapshot_if_durable(p.group)?;
        }
        Ok(())
    }

    /// Sends the outbox, one event per destination; a down node is reported unreachable. Every
    /// message that promises something on disk (a vote, a vote request, an append or snapshot
    /// accepted) is first checked against the group's durable state ([`check_durable`]): an error
    /// stops the node, and the run fails.
    fn flush(&mut self) -> Result<(), String> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        for (_, gid, m) in &self.outbox {
            if let Some(g) = self.groups.get((*gid - 1) as usize) {
                check_durable(g.raw.store().disk(), m)
                    .map_err(|e| format!("node {} group {gid}: {e}", self.id))?;
            }
        }
        let mut by_node: Vec<Vec<(u64, Message)>> = vec![Vec::new(); PEERS.len()];
        let mut snapshots = Vec::new();
        for (to, gid, m) in self.outbox.drain(..) {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                snapshots.push((to, gid));
            }
            if let Some(v) = to.checked_sub(1).and_then(|i| by_node.get_mut(i as usize)) {
                v.push((gid, m));
            }
        }
        for (i, msgs) in by_node.into_iter().enumerate() {
            if msgs.is_empty() {
                continue;
            }
            let to = i as u64 + 1;
            let gids: Vec<u64> = msgs.iter().map(|(g, _)| *g).collect();
            if !self.router.send(to, Event::Raft(msgs)) {
                for gid in gids {
                    if let Some(g) = self.group_mut(gid) {
                        g.raw.report_unreachable(to);
                    }
                }
            }
        }
        // The transport hands a snapshot over whole or not at all.
        for (to, gid) in snapshots {
            let status = if self.router.is_up(to) {
                SnapshotStatus::Finish
            } else {
                SnapshotStatus::Failure
            };
            if let Some(g) = self.group_mut(gid) {
                g.raw.report_snapshot(to, status);
            }
        }
        Ok(())
    }

    /// Puts every group's view and the node's figures on the board.
    fn publish(&mut self, force: bool) {
        if !self.dirty && !force {
            return;
        }
        self.dirty = false;
        let views = self
            .groups
            .iter()
            .map(|g| GroupView {
                leader: g.raw.raft.state == StateRole::Leader,
                leader_id: g.raw.raft.leader_id,
                term: g.raw.raft.term,
                commit: g.raw.raft.raft_log.committed,
                last_index: g.raw.raft.raft_log.last_index(),
                applied: g.sm.applied,
            })
            .collect();
        let busy = self.in_flight.is_some()
            || !self.collecting.readies.is_empty()
            || self.groups.iter().any(|g| g.raw.has_ready());
        self.board.publish(
            self.id,
            Publication {
                groups: views,
                stats: self.stats.clone(),
                paused: self.paused,
                busy,
                handled: std::mem::take(&mut self.handled),
            },
        );
    }

    /// Stops: what is collected and under way is persisted (raft messages arriving meanwhile
    /// are dropped, proposals refused), the writer ends, the engine is closed.
    fn shutdown(&mut self, rx: Receiver<Event>) -> Result<Vec<StateMachine>, String> {
        self.router.unregister(self.id);
        loop {
            // Settle: every Ready persisted and handled, until raft has nothing more.
            for i in 0..self.groups.len() {
                if self.groups[i].raw.has_ready() {
                    self.ready(i)?;
                }
            }
            self.flush()?;
            self.submit()?;
            if self.in_flight.is_none() {
                break;
            }
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(Event::Persisted { seq, result, took }) => self.persisted(seq, result, took)?,
                Ok(Event::Propose { id, .. }) => {
                    let _ = self.replies.send(Reply::Rejected { id });
                }
                Ok(_) => {}
                Err(_) => return Err(format!("node {}: no word from its writer", self.id)),
            }
        }
        self.publish(true);
        if let Some((jobs, thread)) = self.writer.take() {
            drop(jobs);
            thread
                .join()
                .map_err(|_| format!("node {}: its writer panicked", self.id))?;
        }
        let sms = self.groups.iter().map(|g| g.sm.clone()).collect();
        self.groups.clear(); // the RawNodes and their GroupStorage handles
        let engine = self.engine.take().ok_or("the engine is gone")?;
        let engine = Arc::try_unwrap(engine)
            .map_err(|_| format!("node {}: the engine is still shared", self.id))?;
        engine
            .close()
            .map_err(err(format!("node {}: close the engine", self.id)))?;
        self.board.down(self.id);
        Ok(sms)
    }
}

/// What a message promises about its sender's disk is durable there (raft-rs: persisted
/// messages leave only after the Ready holding them is persisted): a vote request or a granted
/// vote needs the hard state with that term and vote, an accepted append (or snapshot) needs the
/// log up to the index it acknowledges, any of them the term it carries. Called with nothing of
/// the group at the writer, so the group's storage shows exactly what is durable.
fn check_durable(disk: &raftwal::GroupStorage, m: &Message) -> Result<(), String> {
    let (vote, index) = match m.get_msg_type() {
        MessageType::MsgRequestVote => (Some(m.from), None),
        MessageType::MsgRequestVoteResponse if !m.reject => (Some(m.to), None),
        MessageType::MsgAppendResponse if !m.reject => (None, Some(m.index)),
        _ => return Ok(()),
    };
    let hs = disk
        .initial_state()
        .map_err(|e| format!("read the hard state: {e}"))?
        .hard_state;
    let bad = |what: String| {
        Err(format!(
            "{:?} to {} (term {}, index {}) sent before {what} is durable",
            m.get_msg_type(),
            m.to,
            m.term,
            m.index
        ))
    };
    if hs.term < m.term {
        return bad(format!("term {} (durable: {})", m.term, hs.term));
    }
    if let Some(v) = vote {
        if hs.term == m.term && hs.vote != v {
            return bad(format!("the vote for {v} (durable: {})", hs.vote));
        }
    }
    if let Some(i) = index {
        let last = disk
            .last_index()
            .map_err(|e| format!("read the last index: {e}"))?;
        if last < i {
            return bad(format!("the log up to {i} (durable: {last})"));
        }
    }
    Ok(())
}

/// Applies committed entries to a group's state machine and answers the proposals this node
/// made among them.
fn apply(
    node: u64,
    g: &mut Group,
    entries: &[Entry],
    replies: &Sender<Reply>,
) -> Result<(), String> {
    for e in entries {
        // raft-rs hands out only entries persisted here (on_persist_ready after the batch was
        // durable): the engine must already hold each one, with its term.
        match g.raw.store().disk().term(e.index) {
            Ok(t) if t == e.term => {}
            other => {
                return Err(format!(
                    "node {node} group {}: entry {} (term {}) applied before it is durable here \
                     (the engine has {other:?})",
                    g.id, e.index, e.term
                ))
            }
        }
        let put =
            g.sm.apply(e)
                .map_err(|err| format!("node {node} group {}: {err}", g.id))?;
        if let Some(id) = put {
            if g.proposed.remove(&id) {
                let _ = replies.send(Reply::Applied { id });
            }
        }
    }
    Ok(())
}

/// The writer thread: one `Engine::write` per batch, reported to the raft thread.
fn writer(engine: Arc<Engine>, jobs: Receiver<Job>, tx: Sender<Event>) {
    while let Ok(mut job) = jobs.recv() {
        let t = Instant::now();
        let result = engine.write(&mut job.wb).map_err(|e| e.to_string());
        let took = t.elapsed();
        if tx
            .send(Event::Persisted {
                seq: job.seq,
                result,
                took,
            })
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: MessageType, term: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        (m.from, m.to, m.term) = (1, 2, term);
        m
    }

    /// Waits for the writer's report of the batch at the writer and hands it to the node.
    fn persisted(n: &mut Node, rx: &Receiver<Event>) -> Result<(), String> {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(ev @ Event::Persisted { .. }) => n.handle(ev).map(|_| ()),
            Ok(_) => Err("an event other than the writer's report".into()),
            Err(e) => Err(format!("no report from the writer: {e}")),
        }
    }

    /// A follower's snapshot, taken as it applied up to 8 and waiting for a durable commit of 8,
    /// and the leader's snapshot at 20 in the same batch as the hard state committing 8 (the
    /// writer was busy while both Readies came). The batch is durable with the leader's snapshot
    /// stored; the follower's own, now older than the group's snapshot, must be dropped, not
    /// stored (the engine refuses it, SnapshotOutOfDate, and the node used to stop on that).
    #[test]
    fn a_staged_snapshot_overtaken_in_the_same_batch_is_dropped() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let board = Arc::new(Board::new(PEERS.len()));
        let router = Arc::new(Router::new(Arc::clone(&board)));
        let (tx, rx) = mpsc::channel();
        let (replies, _replies_rx) = mpsc::channel();
        let cfg = NodeConfig {
            id: 2, // group 1 is node 1's to campaign for: node 2 waits as a follower
            root: dir.path().join("node2"),
            groups: 1,
            tick: Duration::from_millis(20),
            compact_every: 5,
        };
        let mut n = Node::open(cfg, tx, router, board, replies).expect("open node 2");

        // Leader 1, term 2, appends 1..=8; the batch holding them is durable.
        let mut app = msg(MessageType::MsgAppend, 2);
        app.set_entries(
            (1..=8)
                .map(|i| {
                    let mut e = Entry::default();
                    (e.index, e.term) = (i, 2);
                    e
                })
                .collect(),
        );
        n.handle(Event::Raft(vec![(1, app)])).unwrap();
        n.round().unwrap();
        persisted(&mut n, &rx).unwrap();
        n.round().unwrap();

        // A heartbeat commits 8: applied at once (durable here), the group's snapshot taken at 8
        // and kept until the hard state committing 8 is durable. The batch is still collecting.
        let mut hb = msg(MessageType::MsgHeartbeat, 2);
        hb.commit = 8;
        n.handle(Event::Raft(vec![(1, hb)])).unwrap();
        n.ready(0).unwrap();
        assert_eq!(n.groups[0].sm.applied, 8);
        assert_eq!(n.groups[0].staged.as_ref().map(|s| s.0), Some(8));
        assert!(n.in_flight.is_none());

        // The leader's snapshot at 20 joins the same batch.
        let mut snap = msg(MessageType::MsgSnapshot, 2);
        let sm = StateMachine {
            applied: 20,
            ..Default::default()
        };
        let s = snap.mut_snapshot();
        s.data = sm.encode();
        let md = s.mut_metadata();
        (md.index, md.term) = (20, 2);
        md.set_conf_state(ConfState::from((PEERS.to_vec(), vec![])));
        n.handle(Event::Raft(vec![(1, snap)])).unwrap();
        n.ready(0).unwrap();
        n.submit().unwrap();
        persisted(&mut n, &rx).expect("the batch with the leader's snapshot is handled");

        let g = &n.groups[0];
        assert_eq!(g.sm.applied, 20, "the leader's snapshot is installed");
        assert!(g.staged.is_none(), "the overtaken snapshot is dropped");
        assert_eq!(g.raw.store().disk().uint(MetaInfo::SnapshotIndex), 20);
        n.shutdown(rx).expect("stop");
    }
}
