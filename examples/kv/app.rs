//! Starting a raftwal-kv node process: recover its directory, open its port, link its peers,
//! then run the raft loop on this thread until the process is killed.
//!
//! It owns the wiring between the pieces (runtime, channels, shared state) and nothing else.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::node::{self, Config, Node, Shared};
use crate::server;
use crate::wire::{parse_peer_frame_limit, NodeStatus, MAX_FRAME};

#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// This node's raft id (1, 2, ...).
    #[arg(long)]
    pub id: u64,
    /// Its raftwal directory (created when missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// The addresses of the nodes to start with, this node's included:
    /// `1=127.0.0.1:7001,2=...`. A new cluster's voters are exactly these.
    #[arg(long, value_parser = parse_peers)]
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Join a running cluster that added this node (`kv add-node`): start with no membership
    /// and wait for the leader's snapshot. `--peers` then names a few running nodes and this one.
    #[arg(long)]
    pub join: bool,
    /// Snapshot and compact after this many applied entries.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// Raft tick (election after 10-20 ticks without a leader, heartbeats every 2).
    #[arg(long, default_value_t = 50)]
    pub tick_ms: u64,
    /// Serve the storage metrics (fsync, save, snapshot, recovery durations; entries, bytes,
    /// log files) in Prometheus text format over HTTP at this address (any path, e.g. /metrics).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// The largest frame on a peer connection, in bytes; every node of a cluster must use the
    /// same. Hidden: for tests, which shrink it to show large messages crossing it.
    #[arg(long, hide = true, default_value_t = MAX_FRAME, value_parser = parse_peer_frame_limit)]
    pub peer_frame_limit: usize,
}

/// Histogram buckets of the `*_seconds` metrics: 100 µs to 10 s (an fsync that takes longer
/// than a second is what operators alert on).
const SECONDS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the process-wide metrics recorder and its HTTP listener at `addr` (on a thread of
/// its own), before the store opens, so that its recovery is measured too.
pub fn serve_metrics(addr: SocketAddr) -> Result<(), String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let fail = |e: metrics_exporter_prometheus::BuildError| format!("metrics on {addr}: {e}");
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(raftwal::metrics::ENGINE_COMMIT_WRITES.into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            )
        })
        .map_err(fail)?
        .install()
        .map_err(fail)?;
    raftwal::metrics::describe();
    Ok(())
}

pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, SocketAddr>, String> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected ID=HOST:PORT"))?;
        let id: u64 = id.parse().map_err(|e| format!("{part:?}: bad id: {e}"))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| format!("{part:?}: bad address: {e}"))?;
        if id == 0 || peers.insert(id, addr).is_some() {
            return Err(format!("{part:?}: ids must be unique and above 0"));
        }
    }
    Ok(peers)
}

pub fn peers_arg(peers: &BTreeMap<u64, SocketAddr>) -> String {
    peers
        .iter()
        .map(|(id, a)| format!("{id}={a}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs a node; returns only on a fatal error.
pub fn run_node(args: NodeArgs) -> Result<(), String> {
    let listen = *args
        .peers
        .get(&args.id)
        .ok_or_else(|| format!("--peers has no address for this node's id {}", args.id))?;
    let cfg = Config {
        id: args.id,
        dir: args.dir.clone(),
        peers: args.peers.clone(),
        join: args.join,
        snapshot_every: args.snapshot_every,
        tick: Duration::from_millis(args.tick_ms.max(1)),
    };
    if let Some(addr) = args.metrics_addr {
        serve_metrics(addr)?;
    }
    let started = Instant::now();
    let node::Recovered {
        store,
        sm,
        applied,
        snapshot_due,
    } = node::recover(&cfg)?;
    let recovered = started.elapsed();
    let snapshot_index = store.uint(raftwal::MetaInfo::SnapshotIndex);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let listener = runtime.block_on(bind(listen))?;
    // The nodes named on the command line, and those the state machine learned from conf changes.
    let mut peers = args.peers.clone();
    for (id, addr) in sm.members() {
        match addr.parse() {
            Ok(a) => {
                peers.entry(*id).or_insert(a);
            }
            Err(e) => eprintln!(
                "node {}: member {id} has a bad address {addr:?}: {e}",
                args.id
            ),
        }
    }
    let (events_tx, events_rx) = std::sync::mpsc::channel();
    let shared = Arc::new(Shared {
        id: args.id,
        peers: RwLock::new(peers),
        sm: RwLock::new(sm),
        status: Mutex::new(NodeStatus::default()),
        leader: AtomicU64::new(0),
        events: events_tx,
        peer_frame_limit: args.peer_frame_limit,
        answered: Mutex::new(Default::default()),
        reconnected: Mutex::new(Default::default()),
        stranger: Default::default(),
    });
    runtime.spawn(server::serve(listener, shared.clone()));
    if snapshot_due {
        eprintln!(
            "node {}: its stored snapshot predates its membership: snapshotting at once",
            args.id
        );
    }
    let node = Node::new(
        &cfg,
        store,
        applied,
        snapshot_due,
        shared,
        runtime.handle().clone(),
    )?;
    eprintln!(
        "node {} listening on {listen}: recovered to applied index {applied} (snapshot {snapshot_index}) in {:.1} ms",
        args.id,
        recovered.as_secs_f64() * 1e3
    );
    node.run(events_rx, cfg.tick)
}

/// Binds the node's port, retrying for a while if a previous incarnation still holds it.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let start = Instant::now();
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("bind {addr}: {e}")),
        }
    }
}
