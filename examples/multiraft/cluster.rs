//! Three nodes in one process: the channels between them ([`Router`]), what each node shows of
//! itself ([`Board`], which waits are made on), starting, stopping and restarting nodes
//! ([`Cluster`]), and the client that proposes puts to every group's leader.
//!
//! Owns: node lifecycles, the routing of messages and proposals, and the client's bookkeeping
//! (every proposal retried until some node answers that it applied it). Must never: reach into a
//! node's raft state (it sees only what nodes publish on the board), or wait without a bound.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::node::{self, Event, NodeConfig, NodeHandle, Stats, PEERS};
use crate::sm::{payload, StateMachine};

impl Drop for Cluster {
    /// A run that failed half-way still stops its nodes (their engines closed, their roots
    /// unlocked) before the directories go.
    fn drop(&mut self) {
        for &id in &PEERS {
            if self.nodes[(id - 1) as usize].is_some() {
                let _ = self.stop(id);
            }
        }
    }
}

/// What a node answers a client.
#[derive(Debug)]
pub enum Reply {
    /// Proposal `id` was applied by the node that proposed it as leader.
    Applied { id: u64 },
    /// Proposal `id` was not taken (not the leader, deposed, stopping): propose it again.
    Rejected { id: u64 },
}

/// The in-process transport: each node's event channel, `None` while it is down. Raft
/// messages are counted on the board until the receiver has handled them.
pub struct Router {
    nodes: RwLock<Vec<Option<Sender<Event>>>>,
    board: Arc<Board>,
}

impl Router {
    pub fn new(board: Arc<Board>) -> Router {
        Router {
            nodes: RwLock::new(PEERS.iter().map(|_| None).collect()),
            board,
        }
    }

    fn register(&self, id: u64, tx: Sender<Event>) {
        let mut nodes = self.nodes.write();
        self.board.state.lock().0[(id - 1) as usize].in_transit = 0;
        nodes[(id - 1) as usize] = Some(tx);
    }

    /// Node `id` takes no more events (it is stopping).
    pub fn unregister(&self, id: u64) {
        if let Some(n) = self.nodes.write().get_mut((id - 1) as usize) {
            *n = None;
        }
    }

    /// Sends `ev` to node `to`; `false` if it is down.
    pub fn send(&self, to: u64, ev: Event) -> bool {
        let nodes = self.nodes.read();
        let Some(Some(tx)) = to.checked_sub(1).and_then(|i| nodes.get(i as usize)) else {
            return false;
        };
        let raft = matches!(ev, Event::Raft(_));
        if raft {
            self.board.transit(to, 1);
        }
        let sent = tx.send(ev).is_ok();
        if raft && !sent {
            self.board.transit(to, -1);
        }
        sent
    }

    pub fn is_up(&self, id: u64) -> bool {
        let nodes = self.nodes.read();
        matches!(nodes.get((id - 1) as usize), Some(Some(_)))
    }
}

/// One group as a node sees it.
#[derive(Clone, Debug, Default)]
pub struct GroupView {
    pub leader: bool,
    pub leader_id: u64,
    pub term: u64,
    pub commit: u64,
    pub last_index: u64,
    pub applied: u64,
}

/// One node as it last published itself.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    pub up: bool,
    pub groups: Vec<GroupView>,
    pub stats: Stats,
    /// Neither ticking nor taking proposals ([`Event::Pause`] handled).
    pub paused: bool,
    /// A write under way or collected, or a Ready not handled.
    pub busy: bool,
    /// Raft events sent to the node and not yet handled by it (kept by the router and the
    /// node, not replaced by a publication).
    pub in_transit: u64,
}

/// What a node publishes after a round.
pub struct Publication {
    pub groups: Vec<GroupView>,
    pub stats: Stats,
    pub paused: bool,
    pub busy: bool,
    /// Raft events handled since the last publication.
    pub handled: u64,
}

impl NodeView {
    fn group(&self, i: usize) -> Option<&GroupView> {
        self.groups.get(i).filter(|_| self.up)
    }
}

/// What every node publishes after each round; waits on it are woken by every publication.
pub struct Board {
    state: Mutex<(Vec<NodeView>, Vec<String>)>,
    cv: Condvar,
}

impl Board {
    pub fn new(nodes: usize) -> Board {
        Board {
            state: Mutex::new((vec![NodeView::default(); nodes], Vec::new())),
            cv: Condvar::new(),
        }
    }

    pub fn publish(&self, id: u64, p: Publication) {
        let mut s = self.state.lock();
        let v = &mut s.0[(id - 1) as usize];
        *v = NodeView {
            up: true,
            groups: p.groups,
            stats: p.stats,
            paused: p.paused,
            busy: p.busy,
            in_transit: v.in_transit.saturating_sub(p.handled),
        };
        self.cv.notify_all();
    }

    fn transit(&self, to: u64, n: i64) {
        let mut s = self.state.lock();
        let v = &mut s.0[(to - 1) as usize];
        v.in_transit = v.in_transit.saturating_add_signed(n);
    }

    pub fn down(&self, id: u64) {
        self.state.lock().0[(id - 1) as usize].up = false;
        self.cv.notify_all();
    }

    /// A node stopped on an error: every wait fails with it.
    pub fn fail(&self, id: u64, e: String) {
        let mut s = self.state.lock();
        s.0[(id - 1) as usize].up = false;
        s.1.push(format!("node {id}: {e}"));
        self.cv.notify_all();
    }

    pub fn stats(&self, id: u64) -> Stats {
        self.state.lock().0[(id - 1) as usize].stats.clone()
    }

    pub fn views(&self) -> Vec<NodeView> {
        self.state.lock().0.clone()
    }

    fn errors(&self) -> Result<(), String> {
        let s = self.state.lock();
        match s.1.first() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Waits until `done` holds for the views, at most `limit`; returns how long it took.
    pub fn wait(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[NodeView]) -> bool,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let deadline = start + limit;
        let mut s = self.state.lock();
        loop {
            if let Some(e) = s.1.first() {
                return Err(format!("while waiting for {what}: {e}"));
            }
            if done(&s.0) {
                return Ok(start.elapsed());
            }
            if self.cv.wait_until(&mut s, deadline).timed_out() && !done(&s.0) {
                return Err(format!(
                    "gave up waiting for {what} after {limit:?}; {}",
                    describe(&s.0)
                ));
            }
        }
    }
}

/// The leader of group index `i`: the up node that says it leads, with the highest term.
pub fn leader_of(views: &[NodeView], i: usize) -> Option<(u64, &GroupView)> {
    views
        .iter()
        .enumerate()
        .filter_map(|(n, v)| Some((n as u64 + 1, v.group(i)?)))
        .filter(|(_, g)| g.leader)
        .max_by_key(|(_, g)| g.term)
}

/// Every node is up, and every group has a leader that every node follows.
pub fn all_led(views: &[NodeView]) -> bool {
    let groups = views.iter().map(|v| v.groups.len()).max().unwrap_or(0);
    groups > 0
        && views.iter().all(|v| v.up && v.groups.len() == groups)
        && (0..groups).all(|i| {
            leader_of(views, i).is_some_and(|(id, _)| {
                views
                    .iter()
                    .filter_map(|v| v.group(i))
                    .all(|g| g.leader_id == id)
            })
        })
}

/// Node `id` is up and has applied, in every group, everything the group's leader has
/// committed (and at least `floor[i]`).
pub fn caught_up(views: &[NodeView], id: u64, floor: &[u64]) -> bool {
    let Some(node) = views.get((id - 1) as usize).filter(|v| v.up) else {
        return false;
    };
    (0..node.groups.len()).all(|i| {
        let applied = node.groups[i].applied;
        leader_of(views, i).is_some_and(|(_, l)| applied >= l.commit)
            && applied >= floor.get(i).copied().unwrap_or(0)
    })
}

/// Every node is up and, in every group, has applied the leader's whole log.
pub fn settled(views: &[NodeView]) -> bool {
    let groups = views.iter().map(|v| v.groups.len()).max().unwrap_or(0);
    groups > 0
        && views.iter().all(|v| v.up && v.groups.len() == groups)
        && (0..groups).all(|i| {
            leader_of(views, i).is_some_and(|(_, l)| {
                l.commit == l.last_index
                    && views
                        .iter()
                        .all(|v| v.group(i).is_some_and(|g| g.applied == l.commit))
            })
        })
}

/// Nothing can change any more: every node up, paused and idle, no raft message in transit.
pub fn quiet(views: &[NodeView]) -> bool {
    views
        .iter()
        .all(|v| v.up && v.paused && !v.busy && v.in_transit == 0)
}

/// A short account of the views for a failed wait: per node, groups led, and the groups lagging.
fn describe(views: &[NodeView]) -> String {
    let mut out = Vec::new();
    for (n, v) in views.iter().enumerate() {
        if !v.up {
            out.push(format!("node {} down", n + 1));
            continue;
        }
        let led = v.groups.iter().filter(|g| g.leader).count();
        let state = format!(
            "{}{}{} in transit",
            if v.paused { "paused, " } else { "" },
            if v.busy { "busy, " } else { "" },
            v.in_transit
        );
        let lagging: Vec<String> = (0..v.groups.len())
            .filter_map(|i| {
                let l = leader_of(views, i).map_or(0, |(_, l)| l.commit);
                let g = &v.groups[i];
                (g.applied < l).then(|| format!("g{}:{}<{}", i + 1, g.applied, l))
            })
            .take(5)
            .collect();
        out.push(format!(
            "node {}: leads {led}, {state}, lagging {:?}",
            n + 1,
            lagging
        ));
    }
    let leaderless = (0..views.iter().map(|v| v.groups.len()).max().unwrap_or(0))
        .filter(|&i| leader_of(views, i).is_none())
        .count();
    format!("{}; {leaderless} groups without a leader", out.join("; "))
}

/// How proposals went in one phase.
#[derive(Clone, Debug, Default)]
pub struct Phase {
    pub proposals: u64,
    pub took: Duration,
    /// Proposals sent again (refused, or unanswered for a while).
    pub retries: u64,
}

/// The three nodes, the transport and the client.
pub struct Cluster {
    pub root: PathBuf,
    pub groups: u64,
    tick: Duration,
    compact_every: u64,
    pub router: Arc<Router>,
    pub board: Arc<Board>,
    nodes: Vec<Option<NodeHandle>>,
    replies_tx: Sender<Reply>,
    replies: Receiver<Reply>,
    /// Every proposal some node answered as applied.
    pub acked: HashSet<u64>,
}

/// A proposal unanswered this long is sent again (its leader may have lost it).
const RESEND_AFTER: Duration = Duration::from_secs(2);

impl Cluster {
    /// Starts three nodes with `groups` groups each under `root` (`root/node<id>`).
    pub fn start(root: PathBuf, groups: u64, tick: Duration, compact_every: u64) -> Cluster {
        let (replies_tx, replies) = mpsc::channel();
        let board = Arc::new(Board::new(PEERS.len()));
        let mut c = Cluster {
            root,
            groups,
            tick,
            compact_every,
            router: Arc::new(Router::new(Arc::clone(&board))),
            board,
            nodes: PEERS.iter().map(|_| None).collect(),
            replies_tx,
            replies,
            acked: HashSet::new(),
        };
        // Every node's channel is registered before any node runs: no early vote is lost.
        let chans: Vec<_> = PEERS
            .iter()
            .map(|&id| {
                let (tx, rx) = mpsc::channel();
                c.router.register(id, tx.clone());
                (id, tx, rx)
            })
            .collect();
        for (id, tx, rx) in chans {
            c.spawn(id, tx, rx);
        }
        c
    }

    pub fn node_root(&self, id: u64) -> PathBuf {
        self.root.join(format!("node{id}"))
    }

    fn spawn(&mut self, id: u64, tx: Sender<Event>, rx: Receiver<Event>) {
        let cfg = NodeConfig {
            id,
            root: self.node_root(id),
            groups: self.groups,
            tick: self.tick,
            compact_every: self.compact_every,
        };
        let h = node::start(
            cfg,
            rx,
            tx,
            Arc::clone(&self.router),
            Arc::clone(&self.board),
            self.replies_tx.clone(),
        );
        self.nodes[(id - 1) as usize] = Some(h);
    }

    /// Stops node `id` (its engine closed, its raft nodes dropped); returns its state machines.
    pub fn stop(&mut self, id: u64) -> Result<Vec<StateMachine>, String> {
        let h = self.nodes[(id - 1) as usize]
            .take()
            .ok_or_else(|| format!("node {id} is not running"))?;
        self.router.send(id, Event::Stop);
        h.join()
    }

    /// Starts node `id` again from its root.
    pub fn restart(&mut self, id: u64) {
        let (tx, rx) = mpsc::channel();
        self.router.register(id, tx.clone());
        self.spawn(id, tx, rx);
    }

    /// Stops every node; returns their state machines, by node.
    pub fn stop_all(&mut self) -> Result<Vec<Vec<StateMachine>>, String> {
        PEERS.iter().map(|&id| self.stop(id)).collect()
    }

    fn pause(&self, paused: bool) {
        for &id in &PEERS {
            self.router.send(id, Event::Pause(paused));
        }
    }

    /// Brings the cluster to a state that can no longer change, with every node having applied
    /// every group's whole log: settled (ticking), then paused (no ticks, no proposals) until
    /// idle with nothing in transit. An election that started just before the pause can leave a
    /// group without a settled log and nothing to finish it; then ticks resume and it is tried
    /// again. Returns the attempts it took.
    pub fn quiesce(&self, limit: Duration) -> Result<u32, String> {
        let mut last = String::new();
        for attempt in 1..=5 {
            self.board
                .wait("every node to apply every leader's log", limit, settled)?;
            self.pause(true);
            match self
                .board
                .wait("the paused cluster to be quiet", limit / 4, |v| {
                    quiet(v) && settled(v)
                }) {
                Ok(_) => return Ok(attempt),
                Err(e) => last = e,
            }
            self.pause(false);
        }
        Err(last)
    }

    /// Proposes puts `ids` (proposal `id` goes to group `id % groups + 1`), at most `window`
    /// outstanding per group, each to its group's current leader and again until some node
    /// answers that it applied it. Fails after `limit`.
    pub fn propose(
        &mut self,
        ids: Range<u64>,
        window: usize,
        limit: Duration,
    ) -> Result<Phase, String> {
        let start = Instant::now();
        let groups = self.groups as usize;
        let group_of = |id: u64| (id % groups as u64) as usize;
        let mut queues: Vec<VecDeque<u64>> = vec![VecDeque::new(); groups];
        for id in ids.clone() {
            queues[group_of(id)].push_back(id);
        }
        let mut outstanding: HashMap<u64, Instant> = HashMap::new();
        let mut per_group = vec![0usize; groups];
        let mut done = 0u64;
        let total = ids.end - ids.start;
        let mut retries = 0u64;
        let mut leaders: Vec<Option<u64>> = vec![None; groups];
        let mut looked = Instant::now() - Duration::from_secs(1);
        let mut scanned = Instant::now();
        while done < total {
            if start.elapsed() > limit {
                return Err(format!(
                    "{done} of {total} proposals applied after {limit:?} ({} outstanding); {}",
                    outstanding.len(),
                    describe(&self.board.views())
                ));
            }
            self.board.errors()?;
            if looked.elapsed() >= Duration::from_millis(5) {
                let views = self.board.views();
                for (i, l) in leaders.iter_mut().enumerate() {
                    *l = leader_of(&views, i).map(|(id, _)| id);
                }
                looked = Instant::now();
            }
            for g in 0..groups {
                let Some(to) = leaders[g] else { continue };
                while per_group[g] < window {
                    let Some(id) = queues[g].pop_front() else {
                        break;
                    };
                    let ev = Event::Propose {
                        group: g as u64 + 1,
                        id,
                        data: payload(id),
                    };
                    if !self.router.send(to, ev) {
                        queues[g].push_front(id);
                        leaders[g] = None;
                        break;
                    }
                    outstanding.insert(id, Instant::now());
                    per_group[g] += 1;
                }
            }
            let mut reply = match self.replies.recv_timeout(Duration::from_millis(5)) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Err("no node can answer".into()),
            };
            while let Some(r) = reply {
                match r {
                    Reply::Applied { id } => {
                        if outstanding.remove(&id).is_some() {
                            per_group[group_of(id)] -= 1;
                        }
                        if self.acked.insert(id) && ids.contains(&id) {
                            done += 1;
                        }
                    }
                    Reply::Rejected { id } => {
                        if outstanding.remove(&id).is_some() {
                            per_group[group_of(id)] -= 1;
                            if !self.acked.contains(&id) {
                                queues[group_of(id)].push_back(id);
                                retries += 1;
                            }
                        }
                    }
                }
                reply = self.replies.try_recv().ok();
            }
            if scanned.elapsed() >= Duration::from_millis(100) {
                scanned = Instant::now();
                let stale: Vec<u64> = outstanding
                    .iter()
                    .filter(|(_, t)| t.elapsed() >= RESEND_AFTER)
                    .map(|(id, _)| *id)
                    .collect();
                for id in stale {
                    outstanding.remove(&id);
                    per_group[group_of(id)] -= 1;
                    queues[group_of(id)].push_back(id);
                    retries += 1;
                }
            }
        }
        Ok(Phase {
            proposals: total,
            took: start.elapsed(),
            retries,
        })
    }
}
