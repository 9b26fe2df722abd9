//! Fake raft peers around one real raftwal-kv node process: the test plays the other voters, so
//! what the node hears from its cluster (votes, heartbeat answers, append acknowledgements, a
//! newer term) happens exactly when the test says, and a race becomes a script.
//!
//! It owns listeners on the fake nodes' ports and one connection per fake node to the real
//! node. Votes and heartbeats are answered at once (the node wins every election and keeps its
//! leadership); appends are acknowledged only by [`FakePeers::ack`]. It never touches the
//! node's directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::procs::LocalCluster;
use crate::wire::{read_peer_message, write_peer_message, NodeStatus, MAX_FRAME, PEER_MAGIC};

enum Out {
    Send(Message),
    /// The real node restarted: the next message goes on a new connection.
    Reconnect,
}

pub struct FakePeers {
    /// The real node's id.
    node: u64,
    out: BTreeMap<u64, UnboundedSender<Out>>,
}

impl FakePeers {
    /// Listens as every node of `c` but `node` (which the test starts itself).
    pub async fn start(c: &LocalCluster, node: u64) -> Result<FakePeers, String> {
        let mut out = BTreeMap::new();
        for id in c.ids().into_iter().filter(|&i| i != node) {
            let (tx, rx) = unbounded_channel();
            tokio::spawn(to_node(c.addr(node), rx));
            let listener = TcpListener::bind(c.addr(id))
                .await
                .map_err(|e| format!("listen as fake node {id}: {e}"))?;
            tokio::spawn(listen(listener, id, tx.clone()));
            out.insert(id, tx);
        }
        Ok(FakePeers { node, out })
    }

    /// Sends `m` to the real node as fake node `from`.
    pub fn send(&self, from: u64, mut m: Message) {
        m.from = from;
        m.to = self.node;
        if let Some(tx) = self.out.get(&from) {
            let _ = tx.send(Out::Send(m));
        }
    }

    /// Fake node `from` acknowledges the leader's log up to `index` in `term`.
    pub fn ack(&self, from: u64, term: u64, index: u64) {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppendResponse);
        m.term = term;
        m.index = index;
        self.send(from, m);
    }

    /// The real node was restarted: drop the connections to its previous process.
    pub fn node_restarted(&self) {
        for tx in self.out.values() {
            let _ = tx.send(Out::Reconnect);
        }
    }
}

/// Accepts the real node's connections to fake node `id` and answers its votes and heartbeats
/// (everything else it sends is dropped).
async fn listen(listener: TcpListener, id: u64, reply: UnboundedSender<Out>) {
    while let Ok((stream, _)) = listener.accept().await {
        let reply = reply.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(stream);
            let mut magic = [0u8; 8];
            if r.read_exact(&mut magic).await.is_err() || magic != PEER_MAGIC {
                return;
            }
            let mut buf = Vec::new();
            while let Ok(Some(got)) =
                read_peer_message(&mut r, &mut buf, MAX_FRAME, |_, _| true).await
            {
                let m = got.message;
                let answer = match m.get_msg_type() {
                    MessageType::MsgRequestPreVote => Some(MessageType::MsgRequestPreVoteResponse),
                    MessageType::MsgRequestVote => Some(MessageType::MsgRequestVoteResponse),
                    MessageType::MsgHeartbeat => Some(MessageType::MsgHeartbeatResponse),
                    _ => None,
                };
                if let Some(t) = answer {
                    let mut a = Message::default();
                    a.set_msg_type(t);
                    a.term = m.term;
                    a.context = m.context.clone(); // a heartbeat's ReadIndex context
                    a.from = id;
                    a.to = m.from;
                    let _ = reply.send(Out::Send(a));
                }
            }
        });
    }
}

/// Writes a fake node's messages to the real node, reconnecting when told or when a write fails.
async fn to_node(addr: SocketAddr, mut rx: UnboundedReceiver<Out>) {
    let mut conn: Option<BufWriter<TcpStream>> = None;
    while let Some(out) = rx.recv().await {
        let m = match out {
            Out::Send(m) => m,
            Out::Reconnect => {
                conn = None;
                continue;
            }
        };
        if conn.is_none() {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await
            {
                let mut w = BufWriter::new(s);
                if w.write_all(&PEER_MAGIC).await.is_ok() {
                    conn = Some(w);
                }
            }
        }
        let Some(w) = conn.as_mut() else { continue };
        if write_peer_message(w, &m, MAX_FRAME).await.is_err() || w.flush().await.is_err() {
            conn = None;
        }
    }
}

/// Polls node `id`'s status until `good` accepts it.
pub async fn wait_status(
    c: &LocalCluster,
    id: u64,
    what: &str,
    good: impl Fn(&NodeStatus) -> bool,
) -> Result<NodeStatus, String> {
    let start = Instant::now();
    loop {
        let s = c.status(id).await;
        if let Some(s) = s.as_ref().filter(|s| good(s)) {
            return Ok(s.clone());
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "node {id}: {what}: not after 20 s (status {s:?}); its log:\n{}",
                c.log_tail(id, 10)
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
