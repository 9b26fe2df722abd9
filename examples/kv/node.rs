//! One raftwal-kv node's raft loop: a raft-rs `RawNode` over `raftwal::DiskStorage`, driven by
//! a single thread.
//!
//! It owns the `RawNode` and its storage, recovery at start (snapshot + log replay up to the
//! checkpoint), the Ready cycle (send, persist, apply), writes and ReadIndex reads waiting for
//! their outcome, and snapshots with log compaction. Everything else reaches it as an [`Event`]
//! on one channel, so a burst of proposals shares one `save` (one fdatasync).
//!
//! It never does network I/O (messages go to the peer senders' channels) and never waits on a
//! client: answers go into oneshot channels that may already be closed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use raft::prelude::*;
use raft::{Config as RaftConfig, GetEntriesContext, RawNode, ReadOnlyOption, StateRole, Storage};
use raftwal::{DiskStorage, MetaInfo, SnapshotReader};
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use crate::state::{Command, Op, StateMachine};
use crate::wire::{NodeStatus, Request, Response, Session};

/// How long a write or a strong read may wait inside raft before it is answered "retry".
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Config {
    pub id: u64,
    pub dir: PathBuf,
    /// The nodes this one knows of at start, itself included: id -> the address it listens on.
    /// A new cluster's voters are exactly these; nodes added later are learned from the log.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// This node was added to a running cluster (`Request::AddNode`): it starts with no
    /// membership and waits for the leader's snapshot instead of bootstrapping one.
    pub join: bool,
    /// Snapshot (and compact the log) once this many entries were applied since the last one.
    pub snapshot_every: u64,
    pub tick: Duration,
}

pub enum Event {
    Raft(Box<Message>),
    Propose {
        op: Op,
        session: Option<Session>,
        reply: oneshot::Sender<Response>,
    },
    /// A `Strong` read or list, served after ReadIndex.
    Read {
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    /// Adds voter `id` listening on `addr`, or removes it (`addr: None`); leader only.
    ChangeVoters {
        id: u64,
        addr: Option<SocketAddr>,
        reply: oneshot::Sender<Response>,
    },
    /// A point-in-time snapshot at the applied index, for `raftwal snapshot save --endpoint`.
    PullSnapshot {
        reply: oneshot::Sender<Result<SnapshotReader, String>>,
    },
    /// A snapshot for peer `to` was written out whole (`ok`), or could not be: raft-rs is told
    /// either way (`report_snapshot`), and sends another one later if it must.
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    /// The background snapshot finished: (milliseconds taken, log files left) or the error.
    SnapshotDone {
        index: u64,
        result: Result<(f64, usize), String>,
    },
    Unreachable {
        to: u64,
    },
    /// Nodes a peer knows the address of (for a joining node: see [`learn_peers`]).
    Learned(Vec<(u64, SocketAddr)>),
}

/// The node's `DiskStorage`, shared between raft (which owns a `RawNode<Store>`) and the
/// thread that writes snapshots in the background.
#[derive(Clone)]
pub struct Store(Arc<DiskStorage>);

impl std::ops::Deref for Store {
    type Target = DiskStorage;
    fn deref(&self) -> &DiskStorage {
        &self.0
    }
}

impl Storage for Store {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.0.initial_state()
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.0.entries(low, high, max_size, context)
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.0.term(idx)
    }
    fn first_index(&self) -> raft::Result<u64> {
        self.0.first_index()
    }
    fn last_index(&self) -> raft::Result<u64> {
        self.0.last_index()
    }
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.0.snapshot(request_index, to)
    }
}

/// What the network side reads without going through the raft thread.
pub struct Shared {
    pub id: u64,
    /// Every node this one knows of, itself included; grows as conf changes add nodes.
    pub peers: RwLock<BTreeMap<u64, SocketAddr>>,
    pub sm: RwLock<StateMachine>,
    pub status: Mutex<NodeStatus>,
    /// The leader this node knows of (0: none).
    pub leader: AtomicU64,
    pub events: Sender<Event>,
    /// The largest frame on a peer connection (`node --peer-frame-limit`).
    pub peer_frame_limit: usize,
    /// When each peer last answered this node's heartbeats, appends or (pre-)votes (the
    /// response arrived): a link that keeps sending them and hears no answer is taken for dead
    /// (`server::peer_out`).
    pub answered: Mutex<HashMap<u64, Instant>>,
    /// Peers that connected to this node again (they gave up their link to this node, for
    /// one because it went unanswered): this node's link to each is remade too
    /// (`server::peer_out`), since a connection that went silent one way may have gone
    /// silent the other way as well, which the side that only answers never sees.
    pub reconnected: Mutex<HashSet<u64>>,
    /// Notified when a node this one knows no address of sent it a raft message (one added
    /// while this node was down or before it joined, perhaps leading): [`learn_peers`] asks
    /// the known nodes for the addresses they know.
    pub stranger: tokio::sync::Notify,
}

impl Shared {
    pub fn leader(&self) -> u64 {
        self.leader.load(Ordering::Acquire)
    }
}

type Reply = oneshot::Sender<Response>;

/// The membership change this leader proposed, waiting for its entry to be applied.
///
/// raft-rs does not fail a conf change it refuses (one proposed while an earlier one is
/// unapplied, e.g. right after an election): it appends an empty normal entry in its place. So
/// the change is answered only by the entry at the index raft appended it at, in the term it
/// was appended in, and only if that entry is a conf change making this very change; any other
/// entry applied there means it was not made.
struct PendingConf {
    index: u64,
    term: u64,
    /// As `conf_changes` reads it back from the entry.
    change: Change,
    since: Instant,
    reply: Reply,
}

/// The entry applied at the pending membership change's index.
struct ConfApplied {
    index: u64,
    term: u64,
    /// Its conf changes (none for a normal entry).
    changes: Vec<Change>,
    /// The voters after it, if it was a conf change raft applied.
    voters: Option<Vec<u64>>,
}

/// A write this process proposed, waiting for its entry to be applied.
///
/// It is keyed by the index raft appended it at and holds the term it was appended in: an
/// applied entry answers it only if the entry has that term (and carries this node's id and the
/// request number). One leader per term, and a leader only appends, so a committed entry at
/// (index, term) is the very entry that leader appended there. Request numbers alone restart
/// at 1 in every process: an entry proposed by this node's previous process, committed by this
/// one, would otherwise answer a different write with its outcome.
struct Proposal {
    term: u64,
    req: u64,
    since: Instant,
    reply: Reply,
}

pub struct Node {
    raw: RawNode<Store>,
    shared: Arc<Shared>,
    outbox: HashMap<u64, UnboundedSender<Message>>,
    /// Where peer links run (they are started as nodes are learned).
    rt: tokio::runtime::Handle,
    /// Joined a running cluster and has no membership yet: it must start from the leader's
    /// snapshot, never from an append of the log's first entries.
    uninitialized: bool,
    /// The conf change in flight from this leader.
    pending_conf: Option<PendingConf>,
    /// Snapshot at the next chance whatever the log length (a node was just added).
    snapshot_due: bool,
    /// A background snapshot is being written (at most one at a time).
    snapshot_in_flight: bool,
    /// Snapshot pulls waiting for a snapshot at or above their index.
    pulls: Vec<(u64, oneshot::Sender<Result<SnapshotReader, String>>)>,
    snapshot_every: u64,
    /// Writes proposed by this process, by the index raft appended them at.
    proposals: HashMap<u64, Proposal>,
    /// Numbers this process's proposals (`Command::req`) and ReadIndex contexts.
    next_req: u64,
    /// Strong reads waiting for the quorum's answer to their ReadIndex, by context.
    reads_in_flight: HashMap<u64, (Instant, Request, Reply)>,
    /// Strong reads with a read index, waiting for the state machine to reach it.
    reads_to_apply: Vec<(u64, Request, Reply)>,
    /// Strong reads that came before this leader committed an entry of its term.
    reads_deferred: Vec<(Instant, Request, Reply)>,
    /// The term this node led when the loop last looked (`None`: it was not leading). raft
    /// changes role inside `step` and `tick`, before the Ready that reports it, so a change is
    /// found by comparing with this, never by reading the role twice within one Ready.
    leading: Option<u64>,
    snapshots_taken: u64,
    snapshots_installed: u64,
}

fn raft_config(id: u64, applied: u64) -> RaftConfig {
    RaftConfig {
        id,
        election_tick: 10,
        heartbeat_tick: 2,
        applied,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        read_only_option: ReadOnlyOption::Safe,
        ..Default::default()
    }
}

/// What a node starts from: its storage, its state machine rebuilt to `applied`, and whether
/// it must snapshot at once.
pub struct Recovered {
    pub store: DiskStorage,
    pub sm: StateMachine,
    pub applied: u64,
    /// The stored snapshot (or, with none, the log's start) predates the current membership:
    /// a conf change was replayed. A node added by it must be sent a snapshot that lists it
    /// (raft-rs refuses one that does not), and the snapshot every replica takes after an
    /// AddNode was only asked for in memory by the previous process, so it is asked again.
    pub snapshot_due: bool,
}

/// Whether two conf states name the same members in the same roles.
fn same_membership(a: &ConfState, b: &ConfState) -> bool {
    let sorted = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    };
    sorted(&a.voters) == sorted(&b.voters)
        && sorted(&a.learners) == sorted(&b.learners)
        && sorted(&a.voters_outgoing) == sorted(&b.voters_outgoing)
        && sorted(&a.learners_next) == sorted(&b.learners_next)
        && a.auto_leave == b.auto_leave
}

/// Opens the node's directory and rebuilds its state machine: the snapshot, then the log up
/// to the checkpoint (the applied index persisted by the previous run). Returns what raft
/// starts from.
pub fn recover(cfg: &Config) -> Result<Recovered, String> {
    let ctx = |what: &str, e: raftwal::Error| format!("{}: {what}: {e}", cfg.dir.display());
    let store = DiskStorage::open(&cfg.dir).map_err(|e| ctx("open", e))?;
    match store.uint(MetaInfo::RaftId) {
        0 => store.set_uint(MetaInfo::RaftId, cfg.id),
        id if id != cfg.id => {
            return Err(format!(
                "{} belongs to raft id {id}, not {}",
                cfg.dir.display(),
                cfg.id
            ))
        }
        _ => {}
    }
    let state = store
        .initial_state()
        .map_err(|e| format!("{}: initial state: {e}", cfg.dir.display()))?;
    if !state.initialized() && !cfg.join {
        let voters: Vec<u64> = cfg.peers.keys().copied().collect();
        store
            .set_conf_state(&ConfState::from((voters, vec![])))
            .map_err(|e| ctx("set conf state", e))?;
    }
    let snapshot_index = store.uint(MetaInfo::SnapshotIndex);
    let mut sm = StateMachine::default();
    // The membership the stored snapshot holds (none without a snapshot).
    let mut snapshot_conf = None;
    if snapshot_index > 0 {
        let reader = store.snapshot_reader().map_err(|e| ctx("snapshot", e))?;
        snapshot_conf = Some(reader.metadata().get_conf_state().clone());
        sm = StateMachine::decode(reader)?;
        if sm.applied != snapshot_index {
            return Err(format!(
                "{}: the snapshot at index {snapshot_index} holds a state applied to {}",
                cfg.dir.display(),
                sm.applied
            ));
        }
    }
    let checkpoint = store
        .checkpoint()
        .map_err(|e| ctx("checkpoint", e))?
        .min(state.hard_state.commit)
        .max(snapshot_index);
    let mut replayed_conf_change = false;
    while sm.applied < checkpoint {
        let entries = store
            .entries(
                sm.applied + 1,
                checkpoint + 1,
                Some(4 << 20),
                GetEntriesContext::empty(false),
            )
            .map_err(|e| format!("{}: replay from {}: {e}", cfg.dir.display(), sm.applied + 1))?;
        if entries.is_empty() {
            return Err(format!(
                "{}: no entries from {} although the checkpoint is {checkpoint}",
                cfg.dir.display(),
                sm.applied + 1
            ));
        }
        for e in &entries {
            if let Applied::ConfChange(_) = apply_entry(&mut sm, e) {
                replayed_conf_change = true;
            }
        }
    }
    // The stored conf state is the one after every applied conf change (set as each applied).
    let current = store
        .initial_state()
        .map_err(|e| format!("{}: initial state: {e}", cfg.dir.display()))?
        .conf_state;
    let snapshot_due = match &snapshot_conf {
        Some(cs) => !same_membership(cs, &current),
        None => replayed_conf_change,
    };
    Ok(Recovered {
        store,
        sm,
        applied: checkpoint,
        snapshot_due,
    })
}

/// One change a conf change entry makes: (type, node, context).
type Change = (ConfChangeType, u64, Vec<u8>);

/// The changes a conf change entry makes.
fn conf_changes(e: &Entry) -> Vec<Change> {
    use protobuf::Message as _;
    match e.get_entry_type() {
        EntryType::EntryConfChange => ConfChange::parse_from_bytes(&e.data)
            .map(|cc| vec![(cc.get_change_type(), cc.node_id, cc.context.to_vec())])
            .unwrap_or_default(),
        EntryType::EntryConfChangeV2 => ConfChangeV2::parse_from_bytes(&e.data)
            .map(|cc| {
                let ctx = cc.context.to_vec();
                cc.get_changes()
                    .iter()
                    .map(|c| (c.get_change_type(), c.node_id, ctx.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        EntryType::EntryNormal => Vec::new(),
    }
}

/// A conf change's effect on who the peers are.
#[derive(Clone, Debug, PartialEq, Eq)]
enum MemberChange {
    /// Node `id` joins, listening at the address its change carried in its context.
    Added(u64, String),
    Removed(u64),
}

/// The member a conf change entry adds (with an address) or removes, if any.
fn member_change(e: &Entry) -> Option<MemberChange> {
    conf_changes(e)
        .into_iter()
        .find_map(|(ty, id, ctx)| match ty {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode if !ctx.is_empty() => {
                String::from_utf8(ctx)
                    .ok()
                    .map(|a| MemberChange::Added(id, a))
            }
            ConfChangeType::RemoveNode => Some(MemberChange::Removed(id)),
            _ => None,
        })
}

/// What applying an entry to the state machine leaves for the node to do.
enum Applied {
    Nothing,
    /// A command: the node that proposed it answers its client.
    Command {
        origin: u64,
        req: u64,
        response: Response,
    },
    /// A conf change: raft must apply it, and the peer links follow the member change.
    ConfChange(Option<MemberChange>),
}

/// Applies one committed entry to the state machine — commands, and the member addresses conf
/// changes carry — the same way on replay at start and live.
fn apply_entry(sm: &mut StateMachine, e: &Entry) -> Applied {
    match e.get_entry_type() {
        EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
            let change = member_change(e);
            match &change {
                Some(MemberChange::Added(id, addr)) => sm.add_member(*id, addr.clone()),
                Some(MemberChange::Removed(id)) => sm.remove_member(*id),
                None => {}
            }
            sm.apply_other(e.index);
            Applied::ConfChange(change)
        }
        EntryType::EntryNormal if e.data.is_empty() => {
            sm.apply_other(e.index); // a new leader's empty entry
            Applied::Nothing
        }
        EntryType::EntryNormal => match serde_json::from_slice::<Command>(&e.data) {
            Ok(cmd) => {
                let outcome = sm.apply(e.index, &cmd);
                Applied::Command {
                    origin: cmd.origin,
                    req: cmd.req,
                    response: outcome.response(),
                }
            }
            Err(err) => {
                // Every replica skips the same bytes the same way, so they stay identical.
                eprintln!("entry {}: not a command ({err}); skipped", e.index);
                sm.apply_other(e.index);
                Applied::Nothing
            }
        },
    }
}

impl Node {
    pub fn new(
        cfg: &Config,
        store: DiskStorage,
        applied: u64,
        snapshot_due: bool,
        shared: Arc<Shared>,
        rt: tokio::runtime::Handle,
    ) -> Result<Node, String> {
        let uninitialized = !store
            .initial_state()
            .map_err(|e| format!("initial state: {e}"))?
            .initialized();
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(
            &raft_config(cfg.id, applied),
            Store(Arc::new(store)),
            &logger,
        )
        .map_err(|e| format!("start raft: {e}"))?;
        let mut node = Node {
            raw,
            shared,
            outbox: HashMap::new(),
            rt,
            uninitialized,
            pending_conf: None,
            snapshot_due,
            snapshot_in_flight: false,
            pulls: Vec::new(),
            snapshot_every: cfg.snapshot_every.max(1),
            proposals: HashMap::new(),
            next_req: 1,
            reads_in_flight: HashMap::new(),
            reads_to_apply: Vec::new(),
            reads_deferred: Vec::new(),
            leading: None,
            snapshots_taken: 0,
            snapshots_installed: 0,
        };
        let known: Vec<(u64, SocketAddr)> = node
            .shared
            .peers
            .read()
            .iter()
            .map(|(&id, &a)| (id, a))
            .collect();
        for (id, addr) in known {
            node.link(id, addr);
        }
        node.publish_status();
        node.rt.spawn(learn_peers(node.shared.clone()));
        Ok(node)
    }

    /// Starts the link to peer `id` unless there is one (or it is this node).
    fn link(&mut self, id: u64, addr: SocketAddr) {
        if id == self.shared.id || self.outbox.contains_key(&id) {
            return;
        }
        self.shared.peers.write().insert(id, addr);
        let _guard = self.rt.enter();
        let tx = crate::server::peer_link(self.shared.clone(), id, addr);
        self.outbox.insert(id, tx);
    }

    /// Runs until the event channel closes (the process is being torn down) or storage fails.
    pub fn run(mut self, events: Receiver<Event>, tick: Duration) -> Result<(), String> {
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match events.recv_timeout(wait) {
                Ok(ev) => {
                    self.handle(ev);
                    // Take everything already queued, so one Ready (one fsync) covers it all.
                    while let Ok(ev) = events.try_recv() {
                        self.handle(ev);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                next_tick += tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick;
                }
                self.expire();
            }
            self.on_ready()?;
            self.maybe_snapshot()?;
        }
    }

    /// Leads, as a voter. raft-rs keeps a leader that removed itself leading (it does not step
    /// down; check-quorum deposes it later) and, when the one voter left is another node,
    /// answers its ReadIndex at once as a lone voter's, asking no one, although that voter may
    /// lead a newer term already. Such a node serves nothing as leader: no write, no strong
    /// read, no membership change.
    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader && self.is_voter()
    }

    fn is_voter(&self) -> bool {
        self.raw.raft.prs().conf().voters().contains(self.shared.id)
    }

    /// The answer to what only a leader serves, when this node is not one.
    fn not_leading(&self) -> Response {
        let id = self.shared.id;
        Response::retryable(if self.is_voter() {
            format!(
                "node {id} is not the leader (leader: {})",
                self.raw.raft.leader_id
            )
        } else {
            format!("node {id} is not a voter (it was removed or has not joined yet)")
        })
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Raft(m) => {
                // With an empty log this node rejects appends that start past index 1, which
                // walks the leader back to its compacted start and makes it send a snapshot.
                // One starting at index 1 would be accepted, but the log from index 1 lacks
                // the bootstrap membership (it lives in the snapshot or the meta page, not in
                // an entry): wait for a snapshot instead.
                if self.uninitialized && m.get_msg_type() == MessageType::MsgAppend && m.index == 0
                {
                    return;
                }
                if let Err(e) = self.raw.step(*m) {
                    eprintln!("node {}: step: {e}", self.shared.id);
                }
            }
            Event::Propose { op, session, reply } => {
                if !self.is_leader() {
                    let _ = reply.send(self.not_leading());
                    return;
                }
                // Checked where the request arrived too; never proposed past the limit.
                if let Err(e) = op.check_size() {
                    let _ = reply.send(Response::fatal(e));
                    return;
                }
                let req = self.next_req;
                self.next_req += 1;
                let cmd = Command {
                    origin: self.shared.id,
                    req,
                    session,
                    op,
                };
                let data = match serde_json::to_vec(&cmd) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = reply.send(Response::fatal(format!("encode command: {e}")));
                        return;
                    }
                };
                match self.raw.propose(vec![], data) {
                    Ok(()) => {
                        // raft appended it to this leader's log, last, in its current term.
                        let index = self.raw.raft.raft_log.last_index();
                        let proposal = Proposal {
                            term: self.raw.raft.term,
                            req,
                            since: Instant::now(),
                            reply,
                        };
                        if let Some(old) = self.proposals.insert(index, proposal) {
                            let _ = old.reply.send(Response::retryable(format!(
                                "index {index} was proposed again before this write was applied there (retry with its session)"
                            )));
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Response::retryable(format!("proposal dropped: {e}")));
                    }
                }
            }
            Event::Read { request, reply } => {
                if !self.is_leader() {
                    let _ = reply.send(self.not_leading());
                } else if !self.raw.raft.commit_to_current_term() {
                    // raft-rs drops a ReadIndex until the leader has committed in its term.
                    self.reads_deferred.push((Instant::now(), request, reply));
                } else {
                    self.read_index(Instant::now(), request, reply);
                }
            }
            Event::ChangeVoters { id, addr, reply } => self.change_voters(id, addr, reply),
            Event::PullSnapshot { reply } => {
                // Served from a snapshot at least as new as what is applied now.
                let applied = self.shared.sm.read().applied;
                self.pulls.push((applied, reply));
                self.serve_pulls();
            }
            Event::SnapshotSent { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            Event::Unreachable { to } => self.raw.report_unreachable(to),
            Event::Learned(peers) => {
                for (id, addr) in peers {
                    self.link(id, addr);
                }
            }
            Event::SnapshotDone { index, result } => {
                self.snapshot_in_flight = false;
                if let Err(e) = &result {
                    // Pulls waiting for a snapshot that could not be written are told why
                    // (unless a newer snapshot serves them anyway, below).
                    let stored = self.raw.store().uint(MetaInfo::SnapshotIndex);
                    let (failed, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pulls)
                        .into_iter()
                        .partition(|(min, _)| *min > stored);
                    self.pulls = keep;
                    for (_, reply) in failed {
                        let _ = reply.send(Err(format!("snapshot at index {index}: {e}")));
                    }
                }
                self.serve_pulls();
                self.publish_status();
                match result {
                    Ok((ms, files)) => {
                        self.snapshots_taken += 1;
                        eprintln!(
                            "node {}: snapshot at index {index} in {ms:.1} ms (in the background); {files} log file(s) left",
                            self.shared.id
                        );
                    }
                    // E.g. a newer snapshot from the leader was installed meanwhile.
                    Err(e) => eprintln!("node {}: snapshot at index {index}: {e}", self.shared.id),
                }
            }
        }
    }

    /// Proposes adding voter `id` at `addr`. Once it is applied every replica snapshots, so the
    /// new node starts from a snapshot whose membership includes it (raft-rs refuses one that
    /// does not), whichever node leads by then.
    /// Removing a voter (`addr: None`) drops its link once applied; a leader that removes
    /// itself serves nothing more as leader (see [`Node::is_leader`]) until check-quorum
    /// deposes it.
    fn change_voters(&mut self, id: u64, addr: Option<SocketAddr>, reply: Reply) {
        if !self.is_leader() {
            let _ = reply.send(self.not_leading());
            return;
        }
        if self.pending_conf.is_some() {
            let _ = reply.send(Response::retryable(
                "another membership change is in flight",
            ));
            return;
        }
        let mut cc = ConfChange::default();
        cc.node_id = id;
        match addr {
            Some(addr) => {
                cc.set_change_type(ConfChangeType::AddNode);
                cc.context = addr.to_string().into_bytes().into();
            }
            None => cc.set_change_type(ConfChangeType::RemoveNode),
        }
        let change = (cc.get_change_type(), id, cc.context.to_vec());
        match self.raw.propose_conf_change(vec![], cc) {
            Ok(()) => {
                // raft appended an entry last in its log, in its current term: this change,
                // or an empty normal entry if it refused the change.
                let log = &self.raw.raft.raft_log;
                let index = log.last_index();
                let appended = log
                    .entries(index, None, GetEntriesContext::empty(false))
                    .ok()
                    .and_then(|mut es| es.pop().filter(|e| e.index == index));
                if appended.is_some_and(|e| conf_changes(&e) == [change.clone()]) {
                    self.pending_conf = Some(PendingConf {
                        index,
                        term: self.raw.raft.term,
                        change,
                        since: Instant::now(),
                        reply,
                    });
                } else {
                    let _ = reply.send(Response::retryable(format!(
                        "raft refused the membership change (an earlier one, at index {}, is not applied yet); nothing was changed: retry",
                        self.raw.raft.pending_conf_index
                    )));
                }
            }
            Err(e) => {
                let _ = reply.send(Response::retryable(format!("conf change dropped: {e}")));
            }
        }
    }

    fn read_index(&mut self, since: Instant, request: Request, reply: Reply) {
        let ctx = self.next_req;
        self.next_req += 1;
        self.raw.read_index(ctx.to_be_bytes().to_vec());
        self.reads_in_flight.insert(ctx, (since, request, reply));
    }

    /// Answers "retry" to everything that waited too long inside raft.
    fn expire(&mut self) {
        let now = Instant::now();
        let late = |t: &Instant| now.duration_since(*t) > REQUEST_TIMEOUT;
        let old: Vec<u64> = self
            .proposals
            .iter()
            .filter(|(_, p)| late(&p.since))
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            if let Some(p) = self.proposals.remove(&k) {
                let _ = p.reply.send(Response::retryable(
                    "the write was not applied in time; its outcome is unknown (retry with its session)",
                ));
            }
        }
        let old: Vec<u64> = self
            .reads_in_flight
            .iter()
            .filter(|(_, (t, _, _))| late(t))
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            if let Some((_, _, reply)) = self.reads_in_flight.remove(&k) {
                let _ = reply.send(Response::retryable(
                    "the leader could not confirm its leadership for a read in time",
                ));
            }
        }
        if self.pending_conf.as_ref().is_some_and(|p| late(&p.since)) {
            if let Some(p) = self.pending_conf.take() {
                let _ = p.reply.send(Response::retryable(
                    "the membership change was not applied in time; check the status before retrying",
                ));
            }
        }
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_deferred)
            .into_iter()
            .partition(|(t, _, _)| late(t));
        self.reads_deferred = keep;
        for (_, _, reply) in old {
            let _ = reply.send(Response::retryable(
                "the new leader did not commit an entry of its term in time",
            ));
        }
    }

    /// Logs leadership taken or lost since the last look; a lost one fails what was in flight.
    fn notice_role_change(&mut self) {
        let now = self.is_leader().then_some(self.raw.raft.term);
        if now == self.leading {
            return;
        }
        if let Some(term) = self.leading {
            eprintln!(
                "node {}: no longer leader of term {term} (now {:?}{} in term {}): failing {} pending write(s) and {} read(s)",
                self.shared.id,
                self.raw.raft.state,
                if self.is_voter() { "" } else { ", not a voter" },
                self.raw.raft.term,
                self.proposals.len(),
                self.reads_in_flight.len() + self.reads_to_apply.len() + self.reads_deferred.len()
            );
            self.lost_leadership();
        }
        if let Some(term) = now {
            eprintln!("node {}: leader at term {term}", self.shared.id);
        }
        self.leading = now;
    }

    /// Everything in flight fails when leadership is lost: nothing here can complete it.
    fn lost_leadership(&mut self) {
        let msg = format!(
            "node {} lost leadership before answering; a write's outcome is unknown (retry with its session)",
            self.shared.id
        );
        for (_, p) in self.proposals.drain() {
            let _ = p.reply.send(Response::retryable(msg.clone()));
        }
        for (_, (_, _, reply)) in self.reads_in_flight.drain() {
            let _ = reply.send(Response::retryable(msg.clone()));
        }
        for (_, _, reply) in self.reads_to_apply.drain(..) {
            let _ = reply.send(Response::retryable(msg.clone()));
        }
        for (_, _, reply) in self.reads_deferred.drain(..) {
            let _ = reply.send(Response::retryable(msg.clone()));
        }
        if let Some(p) = self.pending_conf.take() {
            let _ = p.reply.send(Response::retryable(msg.clone()));
        }
    }

    /// Hands each message to its peer's link. A snapshot that cannot reach one is reported
    /// failed (through the event channel, so after this Ready): raft-rs sends a peer it sent a
    /// snapshot no entries and no other snapshot until it hears how that one went.
    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let handed = match self.outbox.get(&to) {
                Some(tx) => tx.send(m).is_ok(),
                None => {
                    eprintln!("node {}: no address for node {to}", self.shared.id);
                    false
                }
            };
            if !handed {
                self.raw.report_unreachable(to);
                if snapshot {
                    let _ = self
                        .shared
                        .events
                        .send(Event::SnapshotSent { to, ok: false });
                }
            }
        }
    }

    fn on_ready(&mut self) -> Result<(), String> {
        if !self.raw.has_ready() {
            self.notice_role_change();
            self.serve_reads();
            return Ok(());
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            self.shared.leader.store(ss.leader_id, Ordering::Release);
        }
        let msgs = rd.take_messages();
        self.send(msgs);
        for rs in rd.take_read_states() {
            let ctx = <[u8; 8]>::try_from(rs.request_ctx.as_slice()).map(u64::from_be_bytes);
            if let Some((_, request, reply)) =
                ctx.ok().and_then(|c| self.reads_in_flight.remove(&c))
            {
                self.reads_to_apply.push((rs.index, request, reply));
            }
        }
        let snapshot = rd.snapshot().clone();
        if !snapshot.is_empty() || !rd.entries().is_empty() || rd.hs().is_some() {
            let hs = rd.hs().cloned().unwrap_or_default();
            self.raw
                .store()
                .save(&hs, rd.entries(), &snapshot)
                .map_err(|e| format!("save: {e}"))?;
        }
        if !snapshot.is_empty() {
            self.install(&snapshot)?;
        }
        let committed = rd.take_committed_entries();
        self.apply(committed);
        let msgs = rd.take_persisted_messages();
        self.send(msgs);
        let mut light = self.raw.advance(rd);
        if light.commit_index().is_some() {
            // A commit raft reports here (a lone voter's, or after a conf change) is in no
            // later Ready's hard state: saved now, before its entries are applied, or a
            // restart would find a checkpoint and a snapshot past the durable commit, which
            // raft refuses.
            let hs = self.raw.raft.hard_state();
            self.raw
                .store()
                .save(&hs, &[], &Snapshot::default())
                .map_err(|e| format!("save(commit): {e}"))?;
        }
        let msgs = light.take_messages();
        self.send(msgs);
        let committed = light.take_committed_entries();
        self.apply(committed);
        self.raw.advance_apply();
        // After applying: writes whose entries this Ready committed got their outcome first.
        self.notice_role_change();
        if self.is_leader()
            && !self.reads_deferred.is_empty()
            && self.raw.raft.commit_to_current_term()
        {
            for (since, request, reply) in std::mem::take(&mut self.reads_deferred) {
                self.read_index(since, request, reply);
            }
        }
        self.serve_reads();
        self.publish_status();
        Ok(())
    }

    fn install(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let index = snapshot.get_metadata().index;
        let new = StateMachine::decode(&snapshot.data[..])
            .map_err(|e| format!("snapshot at {index} from the leader: {e}"))?;
        let members: Vec<(u64, String)> =
            new.members().iter().map(|(&i, a)| (i, a.clone())).collect();
        self.shared.sm.write().replace(new);
        self.raw.store().set_uint(MetaInfo::CheckpointIndex, index);
        self.uninitialized = false;
        for (id, addr) in members {
            if let Ok(addr) = addr.parse() {
                self.link(id, addr);
            }
        }
        self.snapshots_installed += 1;
        eprintln!(
            "node {}: installed a snapshot at index {index} ({} bytes)",
            self.shared.id,
            snapshot.data.len()
        );
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|e| e.index) else {
            return;
        };
        // Applied entries at the indexes of writes proposed here: (index, term, what the entry
        // was: (origin, req, outcome) for a command).
        let mut settled = Vec::new();
        // The entry applied at the pending membership change's index: (index, term, its
        // changes, the voters after it if it was a conf change raft applied).
        let mut conf_settled = None;
        {
            let shared = self.shared.clone();
            let mut sm = shared.sm.write();
            for e in &entries {
                if e.index <= sm.applied {
                    continue; // already in the state (restored from a snapshot or replayed)
                }
                let applied = apply_entry(&mut sm, e);
                if self.proposals.contains_key(&e.index) {
                    let command = match &applied {
                        Applied::Command {
                            origin,
                            req,
                            response,
                        } => Some((*origin, *req, response.clone())),
                        _ => None,
                    };
                    settled.push((e.index, e.term, command));
                }
                // A conf change: (its changes, the voters after it if raft applied it).
                let conf = match applied {
                    Applied::Nothing | Applied::Command { .. } => None,
                    Applied::ConfChange(change) => {
                        match &change {
                            Some(MemberChange::Added(id, addr)) => {
                                if let Ok(addr) = addr.parse() {
                                    self.link(*id, addr);
                                }
                            }
                            // Dropping the sender ends the link's task.
                            Some(MemberChange::Removed(id)) => {
                                self.outbox.remove(id);
                            }
                            None => {}
                        }
                        let voters = self.apply_conf_change(e, change.as_ref());
                        Some((conf_changes(e), voters))
                    }
                };
                if self
                    .pending_conf
                    .as_ref()
                    .is_some_and(|p| p.index == e.index)
                {
                    let (changes, voters) = conf.unwrap_or_default();
                    conf_settled = Some(ConfApplied {
                        index: e.index,
                        term: e.term,
                        changes,
                        voters,
                    });
                }
            }
        }
        self.raw.store().set_uint(MetaInfo::CheckpointIndex, last);
        self.settle_conf(conf_settled);
        for (index, term, command) in settled {
            let Some(p) = self.proposals.remove(&index) else {
                continue;
            };
            let response = match command {
                Some((origin, req, response))
                    if term == p.term && origin == self.shared.id && req == p.req =>
                {
                    response
                }
                _ => {
                    if term == p.term {
                        // Cannot happen: this process appended this very entry.
                        eprintln!(
                            "node {}: entry {index} of term {term} is not the write proposed there",
                            self.shared.id
                        );
                    }
                    Response::retryable(format!(
                        "another entry (term {term}) was committed at index {index}, where this write was proposed in term {}: it was not applied there (retry with its session)",
                        p.term
                    ))
                }
            };
            let _ = p.reply.send(response);
        }
    }

    /// Answers the pending membership change once the entry at its index is applied (or the
    /// state went past its index without it): with the new voters only if that entry is the
    /// change proposed, in the term it was proposed in.
    fn settle_conf(&mut self, settled: Option<ConfApplied>) {
        let applied = self.shared.sm.read().applied;
        let Some(p) = self.pending_conf.take_if(|p| p.index <= applied) else {
            return;
        };
        let response = match settled {
            Some(a) if a.index != p.index || a.term != p.term || a.changes != [p.change.clone()] => {
                Response::retryable(format!(
                    "another entry (term {}) was applied at index {}, where this membership change was proposed in term {}: nothing was changed by it (retry)",
                    a.term, a.index, p.term
                ))
            }
            Some(ConfApplied {
                index,
                voters: Some(voters),
                ..
            }) => Response::Membership { index, voters },
            Some(a) => Response::fatal(format!(
                "the membership change was committed at index {} but raft or storage refused to apply it (see the node's log)",
                a.index
            )),
            None => Response::retryable(format!(
                "the state went past index {} without applying this membership change there (retry)",
                p.index
            )),
        };
        let _ = p.reply.send(response);
    }

    /// Applies a committed conf change to raft and stores the new conf state; returns the
    /// voters after it, or `None` if raft or storage refused it.
    fn apply_conf_change(&mut self, e: &Entry, change: Option<&MemberChange>) -> Option<Vec<u64>> {
        use protobuf::Message as _;
        let cs = if e.get_entry_type() == EntryType::EntryConfChange {
            ConfChange::parse_from_bytes(&e.data)
                .map_err(|err| err.to_string())
                .and_then(|cc| {
                    self.raw
                        .apply_conf_change(&cc)
                        .map_err(|err| err.to_string())
                })
        } else {
            ConfChangeV2::parse_from_bytes(&e.data)
                .map_err(|err| err.to_string())
                .and_then(|cc| {
                    self.raw
                        .apply_conf_change(&cc)
                        .map_err(|err| err.to_string())
                })
        };
        let result = cs.and_then(|cs| {
            self.raw
                .store()
                .set_conf_state(&cs)
                .map(|()| {
                    let mut v = cs.voters.clone();
                    v.sort_unstable();
                    v
                })
                .map_err(|err| err.to_string())
        });
        match result {
            Ok(voters) => {
                eprintln!(
                    "node {}: membership at index {}: voters {voters:?}",
                    self.shared.id, e.index
                );
                // Every replica snapshots past the change, so whichever becomes leader can
                // send the new node a snapshot it accepts.
                if matches!(change, Some(MemberChange::Added(..))) {
                    self.snapshot_due = true;
                }
                Some(voters)
            }
            Err(err) => {
                eprintln!("node {}: conf change at {}: {err}", self.shared.id, e.index);
                None
            }
        }
    }

    fn serve_reads(&mut self) {
        if self.reads_to_apply.is_empty() {
            return;
        }
        let sm = self.shared.sm.read();
        let applied = sm.applied;
        let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_to_apply)
            .into_iter()
            .partition(|(index, _, _)| *index <= applied);
        self.reads_to_apply = wait;
        for (_, request, reply) in ready {
            let _ = reply.send(local_read(&sm, &request));
        }
    }

    /// Snapshots the state machine through the engine once enough was applied since the last
    /// one; the engine compacts the log below it and removes the files it no longer needs.
    /// The state is copied at its applied index here (a pause proportional to its size, not
    /// to the disk) and streamed to disk by a background thread while raft keeps running: the
    /// engine holds no lock while it writes, and checks the index again before it commits.
    fn maybe_snapshot(&mut self) -> Result<(), String> {
        if self.snapshot_in_flight {
            return Ok(());
        }
        let applied = self.shared.sm.read().applied;
        let last = self.raw.store().uint(MetaInfo::SnapshotIndex);
        if applied <= last || (applied < last + self.snapshot_every && !self.snapshot_due) {
            return Ok(());
        }
        self.snapshot_due = false;
        let copy = self.shared.sm.read().snapshot_copy();
        let index = copy.applied;
        // The conf state as of the copy's index, read here, on the thread that applies conf
        // changes: read by the snapshot thread later (`None`), it could be that of a conf
        // change applied after the copy.
        let conf_state = raft::Storage::initial_state(self.raw.store())
            .map_err(|e| format!("read the conf state for the snapshot at {index}: {e}"))?
            .conf_state;
        let store = self.raw.store().clone();
        let events = self.shared.events.clone();
        self.snapshot_in_flight = true;
        let spawned = std::thread::Builder::new()
            .name(format!("snapshot-{index}"))
            .spawn(move || {
                let started = Instant::now();
                let result = store
                    .create_snapshot_from(index, Some(&conf_state), copy.snapshot_stream())
                    .map(|()| (started.elapsed().as_secs_f64() * 1e3, store.num_log_files()))
                    .map_err(|e| e.to_string());
                let _ = events.send(Event::SnapshotDone { index, result });
            });
        if let Err(e) = spawned {
            self.snapshot_in_flight = false;
            return Err(format!("start the snapshot thread: {e}"));
        }
        Ok(())
    }

    /// Answers the pulls the stored snapshot is new enough for; asks for a snapshot for the
    /// others.
    fn serve_pulls(&mut self) {
        if self.pulls.is_empty() {
            return;
        }
        let stored = self.raw.store().uint(MetaInfo::SnapshotIndex);
        let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pulls)
            .into_iter()
            .partition(|(min, _)| *min <= stored);
        self.pulls = wait;
        for (_, reply) in ready {
            let _ = reply.send(
                self.raw
                    .store()
                    .snapshot_reader()
                    .map_err(|e| e.to_string()),
            );
        }
        if !self.pulls.is_empty() {
            self.snapshot_due = true;
        }
    }

    fn publish_status(&self) {
        let r = &self.raw.raft;
        let store = self.raw.store();
        let sm = self.shared.sm.read();
        let status = NodeStatus {
            id: self.shared.id,
            role: format!("{:?}", r.state),
            leader: r.leader_id,
            term: r.term,
            commit: r.raft_log.committed,
            applied: sm.applied,
            first_index: store.first_index().unwrap_or(0),
            last_index: store.last_index().unwrap_or(0),
            snapshot_index: store.uint(MetaInfo::SnapshotIndex),
            log_files: store.num_log_files(),
            snapshots_taken: self.snapshots_taken,
            snapshots_installed: self.snapshots_installed,
            keys: sm.len(),
            voters: {
                let mut v: Vec<u64> = r.prs().conf().voters().ids().iter().collect();
                v.sort_unstable();
                v
            },
            peers: self.shared.peers.read().clone(),
        };
        drop(sm);
        *self.shared.status.lock() = status;
    }
}

/// A node knows the nodes `--peers` named and those the conf changes it applied added. One
/// that joins a running cluster, or was down while nodes were added, may not know the leader:
/// it takes raft messages from known nodes only, and could not answer the others. So while it
/// has no membership (joining, until the leader's snapshot), every half second, and whenever a
/// stranger sent it a raft message, at most every half second, it asks the nodes it knows for
/// the addresses they know, and links those.
async fn learn_peers(shared: Arc<Shared>) {
    loop {
        if !shared.status.lock().voters.is_empty() {
            shared.stranger.notified().await;
        }
        let known: Vec<SocketAddr> = shared
            .peers
            .read()
            .iter()
            .filter(|(&id, _)| id != shared.id)
            .map(|(_, &addr)| addr)
            .collect();
        for addr in known {
            let mut c = crate::client::Client::pinned(addr);
            c.deadline = Duration::from_millis(500);
            c.attempt_timeout = Duration::from_millis(500);
            let Ok(status) = c.status().await else {
                continue;
            };
            let new: Vec<(u64, SocketAddr)> = {
                let peers = shared.peers.read();
                status
                    .peers
                    .into_iter()
                    .filter(|(id, _)| !peers.contains_key(id))
                    .collect()
            };
            if !new.is_empty() {
                eprintln!(
                    "node {}: learned the addresses of nodes {:?} from {addr}",
                    shared.id,
                    new.iter().map(|(id, _)| id).collect::<Vec<_>>()
                );
                if shared.events.send(Event::Learned(new)).is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Answers a read or list from the local state machine.
pub fn local_read(sm: &StateMachine, request: &Request) -> Response {
    match request {
        Request::Read { key, .. } => Response::Value {
            item: sm.get(key),
            applied: sm.applied,
        },
        Request::List { prefix, .. } => Response::Items {
            items: sm.list(prefix),
            applied: sm.applied,
        },
        other => Response::fatal(format!("not a read: {other:?}")),
    }
}
