//! A raftwal-kv cluster of local processes on loopback, for the demo and the tests: start,
//! SIGKILL, pause (SIGSTOP), resume and restart nodes, and wait for a leader or for the
//! replicas to converge.
//!
//! It owns the child processes (all killed when it is dropped) and their directories under one
//! root; it never reaches into a node except through its port.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::app::peers_arg;
use crate::client::Client;
use crate::wire::NodeStatus;

pub struct LocalCluster {
    /// The program to run as a node, and the arguments before the node's own.
    exe: PathBuf,
    prefix: Vec<String>,
    root: PathBuf,
    peers: BTreeMap<u64, SocketAddr>,
    /// The nodes the cluster was created with; the others join a running cluster.
    initial: Vec<u64>,
    children: BTreeMap<u64, Child>,
    /// Running nodes stopped with SIGSTOP.
    paused: BTreeSet<u64>,
    pub snapshot_every: u64,
    /// Passed to every node as `--peer-frame-limit` (the node's default when `None`).
    pub peer_frame_limit: Option<usize>,
    /// Where the other nodes reach a node, when not at the address it listens on (a proxy
    /// in between, for the tests).
    pub routes: BTreeMap<u64, SocketAddr>,
    /// Where node `from` reaches node `to` (keyed `(from, to)`), over `routes`: a proxy on
    /// one direction of one link, for the tests.
    pub link_routes: BTreeMap<(u64, u64), SocketAddr>,
}

/// A loopback port below the kernel's ephemeral range (so no outgoing connection takes it
/// while its node is down) that nothing listens on now.
pub fn free_port(taken: &[u16]) -> std::io::Result<u16> {
    for _ in 0..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 10_000 + (h.finish() % 20_000) as u16;
        if taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free loopback port found",
    ))
}

impl LocalCluster {
    /// A cluster of `n` nodes under `root` (not started).
    pub fn new(
        exe: PathBuf,
        prefix: Vec<String>,
        root: &Path,
        n: u64,
        snapshot_every: u64,
    ) -> std::io::Result<LocalCluster> {
        let mut ports = Vec::new();
        let mut peers = BTreeMap::new();
        for id in 1..=n {
            let port = free_port(&ports)?;
            ports.push(port);
            peers.insert(id, SocketAddr::from(([127, 0, 0, 1], port)));
        }
        Ok(LocalCluster {
            exe,
            prefix,
            root: root.to_path_buf(),
            initial: peers.keys().copied().collect(),
            peers,
            children: BTreeMap::new(),
            paused: BTreeSet::new(),
            snapshot_every,
            peer_frame_limit: None,
            routes: BTreeMap::new(),
            link_routes: BTreeMap::new(),
        })
    }

    /// Reserves a port for a new node (to add with `Client::add_node`, then `start`, which
    /// starts it with `--join`); returns its id.
    #[allow(dead_code)] // used by tests/kv.rs
    pub fn reserve_node(&mut self) -> std::io::Result<u64> {
        let taken: Vec<u16> = self.peers.values().map(|a| a.port()).collect();
        let port = free_port(&taken)?;
        let id = self.peers.keys().max().map_or(1, |m| m + 1);
        self.peers
            .insert(id, SocketAddr::from(([127, 0, 0, 1], port)));
        Ok(id)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.peers.keys().copied().collect()
    }

    /// Node `id`'s address (an unused loopback port for an id the cluster does not have).
    pub fn addr(&self, id: u64) -> SocketAddr {
        self.peers
            .get(&id)
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9)))
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.peers.values().copied().collect()
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.root.join(format!("node-{id}"))
    }

    pub fn log(&self, id: u64) -> PathBuf {
        self.root.join(format!("node-{id}.log"))
    }

    /// The last `n` lines of node `id`'s log (for error messages).
    #[allow(dead_code)] // used by tests/kv.rs
    pub fn log_tail(&self, id: u64, n: usize) -> String {
        let log = fs::read_to_string(self.log(id)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Node `id`'s process id, while it runs.
    #[allow(dead_code)] // used by tests/kv.rs
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children.get(&id).map(Child::id)
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.children.contains_key(&id)
    }

    pub fn start_all(&mut self) -> std::io::Result<()> {
        for id in self.ids() {
            self.start(id)?;
        }
        Ok(())
    }

    pub fn start(&mut self, id: u64) -> std::io::Result<()> {
        if self.is_running(id) {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(id))?;
        // The initial nodes and this one; nodes added later are learned from the log. The
        // others by their routes; this one by the address it listens on.
        let peers: BTreeMap<u64, SocketAddr> = self
            .peers
            .iter()
            .filter(|(i, _)| self.initial.contains(i) || **i == id)
            .map(|(i, a)| {
                let route = self.link_routes.get(&(id, *i)).or(self.routes.get(i));
                match route {
                    Some(route) if *i != id => (*i, *route),
                    _ => (*i, *a),
                }
            })
            .collect();
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.prefix)
            .arg("--id")
            .arg(id.to_string())
            .arg("--dir")
            .arg(self.dir(id))
            .arg("--peers")
            .arg(peers_arg(&peers));
        if !self.initial.contains(&id) {
            cmd.arg("--join");
        }
        if let Some(limit) = self.peer_frame_limit {
            cmd.arg("--peer-frame-limit").arg(limit.to_string());
        }
        let child = cmd
            .arg("--snapshot-every")
            .arg(self.snapshot_every.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.children.insert(id, child);
        Ok(())
    }

    /// SIGKILL: no flush, no goodbye (a paused node too).
    pub fn kill(&mut self, id: u64) {
        self.paused.remove(&id);
        if let Some(mut c) = self.children.remove(&id) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the node freezes where it is, sockets open, until [`LocalCluster::resume`].
    #[allow(dead_code)] // used by tests/kv.rs
    pub fn pause(&mut self, id: u64) -> std::io::Result<()> {
        self.signal(id, libc::SIGSTOP)?;
        self.paused.insert(id);
        Ok(())
    }

    /// SIGCONT: a paused node goes on from where it stopped.
    #[allow(dead_code)] // used by tests/kv.rs
    pub fn resume(&mut self, id: u64) -> std::io::Result<()> {
        self.signal(id, libc::SIGCONT)?;
        self.paused.remove(&id);
        Ok(())
    }

    pub fn is_paused(&self, id: u64) -> bool {
        self.paused.contains(&id)
    }

    fn signal(&self, id: u64, signal: libc::c_int) -> std::io::Result<()> {
        let Some(child) = self.children.get(&id) else {
            return Err(std::io::Error::other(format!("node {id} is not running")));
        };
        let pid = libc::pid_t::try_from(child.id()).map_err(std::io::Error::other)?;
        // SAFETY: kill(2) takes two integers and touches no memory of ours. The child is not
        // reaped while we hold its `Child`, so its pid cannot belong to another process.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Fails if a node process exited on its own (it should run until killed).
    pub fn check_alive(&mut self) -> Result<(), String> {
        for (id, c) in self.children.iter_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                let log = fs::read_to_string(self.root.join(format!("node-{id}.log")))
                    .unwrap_or_default();
                // From the panic message on when there is one, else the last lines.
                let lines: Vec<&str> = log.lines().collect();
                let from = lines
                    .iter()
                    .rposition(|l| l.contains("panicked at"))
                    .unwrap_or(lines.len().saturating_sub(15));
                let end = lines.len().min(from + 15);
                return Err(format!(
                    "node {id} exited by itself ({status}); its log:\n{}",
                    lines[from..end].join("\n")
                ));
            }
        }
        Ok(())
    }

    pub async fn status(&self, id: u64) -> Option<NodeStatus> {
        let mut c = Client::pinned(self.addr(id));
        c.deadline = Duration::from_millis(500);
        c.attempt_timeout = Duration::from_millis(500);
        c.status().await.ok()
    }

    /// Waits until every running node that is not paused names the same leader, itself running
    /// and not paused.
    pub async fn wait_leader(&mut self, timeout: Duration) -> Result<u64, String> {
        self.poll(
            timeout,
            "no agreed leader",
            |s| s.leader,
            |c, l| l != 0 && c.is_running(l) && !c.is_paused(l),
        )
        .await
    }

    /// Waits until every running node that is not paused has applied the same index, at least
    /// `at_least`.
    pub async fn wait_converged(
        &mut self,
        at_least: u64,
        timeout: Duration,
    ) -> Result<u64, String> {
        let what = format!("replicas did not converge to >= {at_least}");
        self.poll(timeout, &what, |s| s.applied, |_, a| a >= at_least)
            .await
    }

    /// Polls the `field` of every running node that is not paused (0 for a node that does not
    /// answer) until all agree on one value that `good` accepts, and returns it; `what` heads the
    /// error after `timeout`.
    async fn poll(
        &mut self,
        timeout: Duration,
        what: &str,
        field: impl Fn(&NodeStatus) -> u64,
        good: impl Fn(&LocalCluster, u64) -> bool,
    ) -> Result<u64, String> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let mut seen = Vec::new();
            for id in self.children.keys().filter(|id| !self.paused.contains(id)) {
                seen.push(self.status(*id).await.as_ref().map_or(0, &field));
            }
            if let Some(&v) = seen.first() {
                if good(self, v) && seen.iter().all(|&x| x == v) {
                    return Ok(v);
                }
            }
            if start.elapsed() > timeout {
                return Err(format!("{what} after {timeout:?}: {seen:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }
}
