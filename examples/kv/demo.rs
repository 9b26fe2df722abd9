//! `kv demo`: a three-node cluster on loopback, written to, broken with SIGKILL, healed, and
//! checked: every acknowledged write must be on every node.
//!
//! It owns the demo's script and report, and its directory: removed when the demo succeeds,
//! kept (and named) when it fails or with `--keep`. The cluster mechanics live in `procs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::client::{Client, ClientError};
use crate::procs::LocalCluster;
use crate::wire::{Consistency, Item};

const CLIENTS: usize = 8;
const SNAPSHOT_EVERY: u64 = 1_000;

/// `kv demo`'s options.
#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// Keep the cluster's directory (nodes' data and logs) after a successful run too; a failed
    /// run always keeps it.
    #[arg(long)]
    pub keep: bool,
    /// New keys written in each of the two write phases.
    #[arg(long, default_value_t = 2_400, value_parser = clap::value_parser!(u64).range(8..))]
    pub writes: u64,
}

type Acked = Arc<Mutex<BTreeMap<String, (String, u64)>>>;

struct Phase {
    writes: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn line(&mut self) -> String {
        self.latencies.sort();
        let q = |p: f64| {
            let i = ((self.latencies.len() as f64 * p) as usize)
                .min(self.latencies.len().saturating_sub(1));
            self.latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        format!(
            "{} writes by {CLIENTS} clients in {:.2} s: {:.0} writes/s, latency p50 {:.2} ms, p99 {:.2} ms",
            self.writes,
            self.elapsed.as_secs_f64(),
            self.writes as f64 / self.elapsed.as_secs_f64(),
            q(0.50),
            q(0.99)
        )
    }
}

/// `CLIENTS` concurrent clients create `writes` new keys under `prefix` between them.
async fn write_phase(
    cluster: &LocalCluster,
    prefix: &str,
    acked: &Acked,
    writes: usize,
) -> Result<Phase, String> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = Client::new(cluster.addrs());
        let acked = acked.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for n in 0..writes / CLIENTS {
                let key = format!("{prefix}/{c}/{n:05}");
                let value = format!("value {n} from client {c}");
                let t = Instant::now();
                // Create-only: a key that exists already would be a lost or doubled write.
                let version = client
                    .write_cas(&key, &value, Some(0))
                    .await
                    .map_err(|e| format!("{key}: {e}"))?;
                lat.push(t.elapsed());
                acked.lock().insert(key, (value, version));
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.map_err(|e| e.to_string())??);
    }
    Ok(Phase {
        writes: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
    })
}

/// Runs the demo in a new temporary directory, with `exe` and `prefix` as the node command.
/// The directory is removed when the demo succeeds without `--keep`; otherwise it is kept and
/// named (on stdout after a success, in the error after a failure).
pub async fn run(exe: PathBuf, prefix: Vec<String>, args: DemoArgs) -> Result<(), String> {
    let root = tempfile::Builder::new()
        .prefix("raftwal-kv-demo-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let result = script(exe, prefix, root.path(), &args).await;
    if result.is_ok() && !args.keep {
        let path = root.path().to_path_buf();
        return root
            .close()
            .map_err(|e| format!("remove {}: {e}", path.display()));
    }
    // Every node process is gone (the cluster was dropped): what they left stays for a look.
    let kept = root.keep();
    match result {
        Ok(()) => {
            println!("kept {} (data and logs of every node)", kept.display());
            Ok(())
        }
        Err(e) => Err(format!(
            "{e}\nthe demo's directory is kept for a look: {} (data and logs of every node)",
            kept.display()
        )),
    }
}

async fn script(
    exe: PathBuf,
    prefix: Vec<String>,
    root: &Path,
    args: &DemoArgs,
) -> Result<(), String> {
    let writes = usize::try_from(args.writes).unwrap_or(usize::MAX);
    let mut cluster = LocalCluster::new(exe, prefix, root, 3, SNAPSHOT_EVERY)
        .map_err(|e| format!("ports: {e}"))?;
    let addrs: Vec<String> = cluster.addrs().iter().map(|a| a.to_string()).collect();
    let fate = if args.keep {
        "kept at the end"
    } else {
        "removed at the end unless the demo fails"
    };
    println!(
        "raftwal-kv demo: 3 node processes on {} (data and logs in {}, {fate})",
        addrs.join(", "),
        root.display()
    );
    let t = Instant::now();
    cluster.start_all().map_err(|e| format!("start: {e}"))?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    println!(
        "  node {leader} elected leader {:.0} ms after start",
        t.elapsed().as_secs_f64() * 1e3
    );

    // A watch on a node that stays up counts every change it sees.
    let victim = leader;
    let watcher_node = cluster
        .ids()
        .into_iter()
        .find(|&i| i != victim)
        .unwrap_or(1);
    let mut w = Client::pinned(cluster.addr(watcher_node));
    let mut watch = w.watch("demo/").await.map_err(|e| e.to_string())?;
    let seen = Arc::new(Mutex::new(0u64));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while watch.next().await.is_some() {
            *seen2.lock() += 1;
        }
    });

    let acked: Acked = Arc::default();
    let mut p1 = write_phase(&cluster, "demo/before", &acked, writes).await?;
    println!("  phase 1, all nodes up: {}", p1.line());

    cluster.kill(victim);
    let t = Instant::now();
    println!("  SIGKILL node {victim} (the leader)");
    let new_leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    println!(
        "  node {new_leader} elected leader {:.0} ms later",
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut p2 = write_phase(&cluster, "demo/during", &acked, writes).await?;
    println!("  phase 2, node {victim} down: {}", p2.line());

    let leader_status = cluster.status(new_leader).await.ok_or("leader status")?;
    let target = leader_status.commit;
    let t = Instant::now();
    cluster.start(victim).map_err(|e| format!("restart: {e}"))?;
    let caught_up = loop {
        cluster.check_alive()?;
        if let Some(s) = cluster.status(victim).await {
            if s.applied >= target {
                break s;
            }
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "node {victim} did not catch up to {target} in 30 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "  restarted node {victim}: caught up to index {target} in {:.0} ms ({} snapshot(s) installed; the leader's log starts at {})",
        t.elapsed().as_secs_f64() * 1e3,
        caught_up.snapshots_installed,
        leader_status.first_index
    );

    // Compare-and-swap, delete and strong reads, as a user sees them.
    let mut c = Client::new(cluster.addrs());
    let key = "demo/cas";
    let v1 = c
        .write_cas(key, "one", Some(0))
        .await
        .map_err(|e| e.to_string())?;
    let stale = c.write_cas(key, "two", Some(v1 - 1)).await;
    match &stale {
        Err(ClientError::CasFailed { .. }) => {}
        other => {
            return Err(format!(
                "a stale compare-and-swap was not refused: {other:?}"
            ))
        }
    }
    let v2 = c
        .write_cas(key, "two", Some(v1))
        .await
        .map_err(|e| e.to_string())?;
    let strong = c
        .read(key, Consistency::Strong)
        .await
        .map_err(|e| e.to_string())?;
    if strong.as_ref().map(|i| (i.value.as_str(), i.version)) != Some(("two", v2)) {
        return Err(format!("strong read after a write saw {strong:?}"));
    }
    c.delete_cas(key, Some(v2))
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "  compare-and-swap: {}; with the right version: ok; strong read: ok; delete_cas: ok",
        stale.err().map(|e| e.to_string()).unwrap_or_default()
    );

    let last = acked.lock().values().map(|(_, v)| *v).max().unwrap_or(0);
    let applied = cluster
        .wait_converged(last, Duration::from_secs(30))
        .await?;
    let acked = acked.lock().clone();
    for id in cluster.ids() {
        let mut pinned = Client::pinned(cluster.addr(id));
        let items = pinned
            .list("demo/", Consistency::Eventual)
            .await
            .map_err(|e| format!("list on node {id}: {e}"))?;
        let got: BTreeMap<String, (String, u64)> = items
            .into_iter()
            .map(
                |Item {
                     key,
                     value,
                     version,
                 }| (key, (value, version)),
            )
            .collect();
        if got != acked {
            let missing = acked.keys().filter(|k| !got.contains_key(*k)).count();
            let extra = got.keys().filter(|k| !acked.contains_key(*k)).count();
            return Err(format!(
                "node {id} differs from the acknowledged writes: {missing} missing, {extra} unexpected, {} total",
                got.len()
            ));
        }
    }
    println!(
        "  check: all {} acknowledged writes are on nodes {:?} with their versions (applied index {applied})",
        acked.len(),
        cluster.ids()
    );
    println!(
        "  the watch on node {watcher_node} saw {} changes",
        *seen.lock()
    );
    for id in cluster.ids() {
        if let Some(s) = cluster.status(id).await {
            println!(
                "  node {id}: {:<9} term {:>2}, applied {:>5}, log {}..{} in {} file(s), snapshot at {} ({} taken, {} installed)",
                s.role, s.term, s.applied, s.first_index, s.last_index, s.log_files, s.snapshot_index, s.snapshots_taken, s.snapshots_installed
            );
        }
    }
    drop(cluster);
    println!("ok");
    Ok(())
}
