//! A three-node raft-rs cluster whose logs live in `raftwal::DiskStorage`.
//!
//! Run it with `cargo run --release --example cluster`.
//!
//! What it shows, step by step:
//!
//! 1. Three `RawNode<DiskStorage>`s, each in its own temporary directory, start with the same
//!    membership (`set_conf_state` on a fresh directory) and elect a leader. Messages travel
//!    through an in-memory queue in one thread; there is no network and no clock, only ticks.
//! 2. The leader takes writes (`key=value` strings) in batches. Every `Ready` is handled the
//!    raft-rs 0.7 way, by `ready.rs` (which the tests share): leader messages go out at once;
//!    snapshot, entries and hard state are persisted with one `DiskStorage::save` (durable:
//!    `sync_writes` is on); committed entries are applied and the applied index is recorded with
//!    `set_uint(MetaInfo::CheckpointIndex, ..)`; then the messages that had to wait for
//!    persistence go out, and `advance` follows.
//! 3. Half-way through, a follower is stopped (its `DiskStorage` is dropped, which flushes it and
//!    releases the directory lock), the others keep writing, then it is reopened from its
//!    directory: its state machine is rebuilt from the log up to the stored checkpoint and raft
//!    resumes with `Config { applied: checkpoint }`, catching up through ordinary appends.
//! 4. At the end it prints, per node, the role, term, applied entries, log bounds and hard state,
//!    and the files in each directory with their sizes (`NNNNN.wal` files are preallocated, so
//!    their length is larger than the bytes written), and checks that the three state machines
//!    are identical.

use std::collections::VecDeque;
use std::error::Error;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raft::prelude::*;
use raft::{GetEntriesContext, RawNode, StateRole, Storage};
use raftwal::{DiskStorage, MetaInfo, Options};

mod ready;
mod shared;

use shared::{config, report_delivery, StateMachine};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const IDS: [u64; 3] = [1, 2, 3];
const WRITES: usize = 2_000;
const BATCH: usize = 50;

// ---- Nodes ------------------------------------------------------------------------------------

struct Node {
    id: u64,
    dir: PathBuf,
    raw: Option<RawNode<DiskStorage>>,
    sm: StateMachine,
    saves: u64,
}

/// Starts a node on an opened directory: bootstraps the membership of a fresh one, rebuilds the
/// state machine from the log up to the stored checkpoint, and starts raft after that checkpoint.
fn start_node(
    id: u64,
    store: DiskStorage,
    log: &slog::Logger,
) -> Result<(RawNode<DiskStorage>, StateMachine)> {
    if !store.initial_state()?.initialized() {
        store.set_conf_state(&ConfState::from((IDS.to_vec(), vec![])))?;
    }
    // Never below the snapshot: one installed from a leader is applied whatever the checkpoint
    // says, and the checkpoint moved to it is durable only with the next flushed write (raft-rs
    // started below its snapshot panics).
    let checkpoint = store.checkpoint()?.max(store.uint(MetaInfo::SnapshotIndex));
    let mut sm = StateMachine::default();
    if store.uint(MetaInfo::SnapshotIndex) > 0 {
        sm = StateMachine::decode(&store.snapshot(0, 0)?.data)?;
    }
    if checkpoint > sm.applied {
        for e in store.entries(
            sm.applied + 1,
            checkpoint + 1,
            None,
            GetEntriesContext::empty(false),
        )? {
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                sm.data.push((e.index, e.data.clone()));
            }
            sm.applied = e.index;
        }
    }
    let raw = RawNode::new(&config(id, checkpoint), store, log)?;
    Ok((raw, sm))
}

/// The example's state machine under the shared Ready handling: data entries must come in
/// order.
impl ready::Apply for StateMachine {
    type Error = Box<dyn Error>;

    fn install(&mut self, snapshot: &Snapshot) -> Result<()> {
        *self = StateMachine::decode(&snapshot.data)?;
        Ok(())
    }

    fn apply(
        &mut self,
        raw: &RawNode<DiskStorage>,
        e: Entry,
        _conf: Option<&ConfState>,
    ) -> Result<()> {
        if e.index != self.applied + 1 {
            return Err(format!(
                "node {}: entry {} applied after {}",
                raw.raft.id, e.index, self.applied
            )
            .into());
        }
        // Conf changes are raft's (applied by the Ready handling); an empty normal entry is a
        // new leader's.
        if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
            self.data.push((e.index, e.data));
        }
        self.applied = e.index;
        Ok(())
    }
}

impl Node {
    /// Handles one Ready (`ready::handle_ready`), counting its saves. Returns whether there was
    /// one.
    fn handle_ready(&mut self, out: &mut VecDeque<Message>) -> Result<bool> {
        let Node { raw, sm, saves, .. } = self;
        let Some(raw) = raw.as_mut() else {
            return Ok(false);
        };
        match ready::handle_ready(raw, sm, out)? {
            Some(n) => {
                *saves += n;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn raw(&self) -> Result<&RawNode<DiskStorage>> {
        self.raw
            .as_ref()
            .ok_or_else(|| format!("node {} is stopped", self.id).into())
    }
}

struct Cluster {
    nodes: Vec<Node>,
    queue: VecDeque<Message>,
    delivered: u64,
    dropped: u64,
    ticks: u64,
}

impl Cluster {
    fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Handles every Ready and delivers every message until the cluster is quiet.
    fn settle(&mut self) -> Result<()> {
        loop {
            let mut busy = false;
            for n in &mut self.nodes {
                busy |= n.handle_ready(&mut self.queue)?;
            }
            let msgs: Vec<Message> = self.queue.drain(..).collect();
            if !busy && msgs.is_empty() {
                return Ok(());
            }
            for m in msgs {
                let (from, to) = (m.from, m.to);
                let snap = m.get_msg_type() == MessageType::MsgSnapshot;
                let delivered = match self.node(to).raw.as_mut() {
                    Some(raw) => {
                        raw.step(m)?;
                        true
                    }
                    None => false,
                };
                if delivered {
                    self.delivered += 1;
                } else {
                    self.dropped += 1;
                }
                if let Some(sender) = self.node(from).raw.as_mut() {
                    report_delivery(sender, to, delivered, snap);
                }
            }
        }
    }

    fn tick(&mut self) -> Result<()> {
        for n in &mut self.nodes {
            if let Some(raw) = n.raw.as_mut() {
                raw.tick();
            }
        }
        self.ticks += 1;
        self.settle()
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|n| n.raw.as_ref())
            .filter(|r| r.raft.state == StateRole::Leader)
            .max_by_key(|r| r.raft.term)
            .map(|r| r.raft.id)
    }

    /// Ticks until `done`, at most `max` ticks.
    fn run_until(&mut self, max: u64, what: &str, done: impl Fn(&Cluster) -> bool) -> Result<u64> {
        for t in 0..=max {
            if done(self) {
                return Ok(t);
            }
            self.tick()?;
        }
        Err(format!("gave up waiting for {what} after {max} ticks").into())
    }

    /// Proposes `writes` through the leader in batches; returns when the leader applied them all.
    fn write(&mut self, writes: &[String]) -> Result<()> {
        for chunk in writes.chunks(BATCH) {
            let leader = self.leader().ok_or("no leader")?;
            let raw = self.node(leader).raw.as_mut().ok_or("leader stopped")?;
            for w in chunk {
                raw.propose(vec![], w.clone().into_bytes())?;
            }
            self.settle()?;
            self.tick()?;
        }
        let leader = self.leader().ok_or("no leader")?;
        let last = self.nodes[(leader - 1) as usize]
            .raw()?
            .raft
            .raft_log
            .last_index();
        self.run_until(100, "the leader to apply its writes", |c| {
            c.nodes[(leader - 1) as usize].sm.applied >= last
        })?;
        Ok(())
    }

    fn all_caught_up(&self) -> bool {
        let applied: Vec<u64> = self
            .nodes
            .iter()
            .filter(|n| n.raw.is_some())
            .map(|n| n.sm.applied)
            .collect();
        applied.windows(2).all(|w| w[0] == w[1])
    }
}

// ---- Reporting --------------------------------------------------------------------------------

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn list_files(dir: &Path, prefix: &str, out: &mut Vec<(String, u64, u64)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::result::Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let md = e.metadata()?;
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if md.is_dir() {
            list_files(&e.path(), &format!("{name}/"), out)?;
        } else {
            out.push((name, md.len(), md.blocks() * 512));
        }
    }
    Ok(())
}

fn phase(c: &mut Cluster, title: &str, writes: &[String]) -> Result<()> {
    let t = Instant::now();
    let saves: u64 = c.nodes.iter().map(|n| n.saves).sum();
    c.write(writes)?;
    let d = t.elapsed();
    let saves = c.nodes.iter().map(|n| n.saves).sum::<u64>() - saves;
    println!(
        "  {title}: {} writes in {} -> {:.0} writes/s committed and applied by the leader ({saves} durable saves across the cluster)",
        writes.len(),
        ms(d),
        writes.len() as f64 / d.as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<()> {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let tmp: Vec<tempfile::TempDir> = IDS
        .iter()
        .map(|_| tempfile::tempdir())
        .collect::<std::result::Result<_, _>>()?;

    println!("raftwal cluster example: 3 raft-rs nodes on DiskStorage (sync_writes = true), in-memory transport\n");
    let mut nodes = Vec::new();
    for (&id, t) in IDS.iter().zip(&tmp) {
        let store = DiskStorage::open_with(t.path(), Options::default())?;
        let (raw, sm) = start_node(id, store, &log)?;
        println!("  node {id}: {}", t.path().display());
        nodes.push(Node {
            id,
            dir: t.path().to_path_buf(),
            raw: Some(raw),
            sm,
            saves: 0,
        });
    }
    let mut c = Cluster {
        nodes,
        queue: VecDeque::new(),
        delivered: 0,
        dropped: 0,
        ticks: 0,
    };

    // 1. Election.
    let ticks = c.run_until(1_000, "a leader", |c| c.leader().is_some())?;
    c.settle()?;
    let leader = c.leader().ok_or("no leader")?;
    let term = c.node(leader).raw()?.raft.term;
    println!("\n[election] node {leader} became leader at term {term} after {ticks} ticks");

    // 2. Writes, a follower restart in the middle, more writes.
    let writes: Vec<String> = (0..WRITES)
        .map(|i| format!("key-{i:05}=value-{i}"))
        .collect();
    let (first, rest) = writes.split_at(WRITES / 2);
    let (during, after) = rest.split_at(rest.len() / 2);
    let start = Instant::now();

    println!("\n[writes] batches of {BATCH} proposals");
    phase(&mut c, "phase 1, all nodes up     ", first)?;
    c.run_until(50, "followers to catch up", |c| c.all_caught_up())?;

    let follower = IDS
        .into_iter()
        .find(|&id| id != leader)
        .ok_or("no follower")?;
    let applied_at_stop = c.node(follower).sm.applied;
    drop(c.node(follower).raw.take()); // drops the DiskStorage: flush, release the lock
    println!("\n[restart] node {follower} stopped at applied index {applied_at_stop} (RawNode and DiskStorage dropped)");

    phase(&mut c, "phase 2, node down        ", during)?;
    let leader_applied = c.node(leader).sm.applied;
    println!(
        "  node {follower} is now {} entries behind",
        leader_applied - applied_at_stop
    );

    let dir = c.node(follower).dir.clone();
    let t = Instant::now();
    let store = DiskStorage::open_with(
        &dir,
        Options {
            sync_writes: true,
            ..Default::default()
        },
    )?;
    let open_time = t.elapsed();
    let checkpoint = store.checkpoint()?;
    let last = store.last_index()?;
    let hs = store.initial_state()?.hard_state;
    let t = Instant::now();
    let (raw, sm) = start_node(follower, store, &log)?;
    let start_time = t.elapsed();
    println!(
        "  reopened node {follower}: DiskStorage::open took {}; rebuilding its state machine ({} writes read back \
         from the log) and RawNode::new took {}",
        ms(open_time),
        sm.data.len(),
        ms(start_time)
    );
    println!(
        "  found on disk: checkpoint {checkpoint}, last index {last}, hard state term {} vote {} commit {}",
        hs.term, hs.vote, hs.commit
    );
    if sm != c.node(follower).sm {
        return Err(format!(
            "node {follower}: state rebuilt from disk differs from the state at stop"
        )
        .into());
    }
    let n = c.node(follower);
    n.sm = sm;
    n.raw = Some(raw);
    let t = Instant::now();
    let ticks = c.run_until(100, "the restarted node to catch up", |c| {
        c.nodes[(follower - 1) as usize].sm.applied == c.nodes[(leader - 1) as usize].sm.applied
    })?;
    println!(
        "  node {follower} caught up {} entries in {ticks} ticks ({})",
        leader_applied - checkpoint,
        ms(t.elapsed())
    );

    println!();
    phase(&mut c, "phase 3, all nodes up     ", after)?;
    c.run_until(50, "followers to catch up", |c| c.all_caught_up())?;
    for _ in 0..6 {
        c.tick()?; // heartbeats carry the final commit index to the followers
    }
    let total = start.elapsed();
    println!(
        "  overall: {WRITES} writes in {} including the restart -> {:.0} writes/s",
        ms(total),
        WRITES as f64 / total.as_secs_f64()
    );

    // 3. Report.
    println!(
        "\n[nodes] {} ticks, {} messages delivered, {} dropped while node {follower} was down",
        c.ticks, c.delivered, c.dropped
    );
    println!(
        "  {:<5} {:<9} {:>4} {:>8} {:>7} {:>6} {:>6} {:>7} {:>10} {:>8} {:>6}",
        "node",
        "role",
        "term",
        "applied",
        "writes",
        "first",
        "last",
        "commit",
        "checkpoint",
        "entries",
        "files"
    );
    for n in &c.nodes {
        let raw = n.raw()?;
        let s = raw.store();
        let rs = s.initial_state()?;
        println!(
            "  {:<5} {:<9} {:>4} {:>8} {:>7} {:>6} {:>6} {:>7} {:>10} {:>8} {:>6}",
            n.id,
            format!("{:?}", raw.raft.state),
            rs.hard_state.term,
            n.sm.applied,
            n.sm.data.len(),
            s.first_index()?,
            s.last_index()?,
            rs.hard_state.commit,
            s.checkpoint()?,
            s.num_entries(),
            s.num_log_files()
        );
    }

    println!("\n[files] name, length, allocated on disk");
    for n in &c.nodes {
        let mut files = Vec::new();
        list_files(&n.dir, "", &mut files)?;
        println!("  node {} ({}):", n.id, n.dir.display());
        for (name, len, alloc) in files {
            println!("    {name:<14} {:>10}  {:>10}", human(len), human(alloc));
        }
    }

    let reference = &c.nodes[(leader - 1) as usize].sm;
    let same = c.nodes.iter().all(|n| n.sm == *reference);
    let expected: Vec<&[u8]> = writes.iter().map(|w| w.as_bytes()).collect();
    let got: Vec<&[u8]> = reference.data.iter().map(|(_, w)| w.as_ref()).collect();
    println!(
        "\n[check] state machines identical on all 3 nodes: {}; every write applied once, in order: {}",
        if same { "yes" } else { "NO" },
        if got == expected { "yes" } else { "NO" }
    );
    if !same || got != expected {
        return Err("the replicas diverged".into());
    }

    // Dropping the nodes drops their DiskStorages (flush, unlock) before the directories go.
    drop(c);
    Ok(())
}
