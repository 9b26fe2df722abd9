//! A raftwal-kv node's network side (tokio): the listener, the peer links, client requests,
//! forwarding to the leader, and snapshot pulls.
//!
//! It owns sockets and the forwarding connection. It reads the state machine for eventual
//! reads and watches, and hands everything that needs raft (writes, strong reads, raft
//! messages, snapshots) to the raft thread as a [`node::Event`]. It never touches storage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, Notify};

use crate::client::Conn;
use crate::node::{local_read, Event, Shared};
use crate::stall::{Stall, PEER_STALL};
use crate::state::{check_write_size, Op};
use crate::wire::{
    read_frame, read_peer_message, write_frame, write_peer_message, ClientFrame, Consistency,
    PeerMessage, Request, Response, ServerFrame, CLIENT_MAGIC, MAX_FRAME, PEER_MAGIC,
    PEER_MAGIC_V1,
};

/// How long a request may wait for a leader to be known.
const LEADER_WAIT: Duration = Duration::from_secs(3);
/// How long a request may wait inside raft (a bit more than the raft thread's own limit).
const RAFT_WAIT: Duration = Duration::from_secs(7);

pub struct Net {
    shared: Arc<Shared>,
    /// The connection requests are forwarded on, and the leader it goes to.
    forward: tokio::sync::Mutex<Option<(u64, Arc<Conn>)>>,
    /// Each peer's newest incoming connection (its serial number, and how to close it).
    inbound: parking_lot::Mutex<std::collections::HashMap<u64, (u64, Arc<Notify>)>>,
    /// Serial numbers of incoming peer connections.
    serial: std::sync::atomic::AtomicU64,
    /// Peers that have connected to this node since it started.
    connected_before: parking_lot::Mutex<std::collections::HashSet<u64>>,
}

/// Accepts connections until the process ends.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let net = Arc::new(Net {
        shared,
        forward: tokio::sync::Mutex::new(None),
        inbound: Default::default(),
        serial: Default::default(),
        connected_before: Default::default(),
    });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let net = net.clone();
                tokio::spawn(async move { net.connection(stream).await });
            }
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Net {
    async fn connection(self: Arc<Self>, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        if let Err(e) = crate::client::keepalive(&stream) {
            eprintln!("node {}: TCP keepalive not set: {e}", self.shared.id);
        }
        let mut magic = [0u8; 8];
        match tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut magic)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        if magic == PEER_MAGIC {
            self.peer_in(stream).await;
        } else if magic == PEER_MAGIC_V1 {
            eprintln!(
                "node {}: refused a peer connection in the first peer protocol ({}): that node needs an upgrade",
                self.shared.id,
                String::from_utf8_lossy(&PEER_MAGIC_V1)
            );
        } else if magic == CLIENT_MAGIC {
            self.client(stream).await;
        } else if magic == raftwal::endpoint::PULL_MAGIC {
            self.pull(stream).await;
        }
    }

    /// Raft messages from a peer, handed to the raft thread. Peers are trusted as raft-rs trusts
    /// them (no authentication here, as in etcd without TLS): a message must only come from a
    /// listed peer and be addressed to this node, which stops a misdirected connection.
    /// A broken stream (a snapshot cut short or failing its checksum among others, see `wire`)
    /// drops the connection with what it had: raft only ever gets whole messages. So does a
    /// message that stops arriving halfway for [`PEER_STALL`] (a connection gone silent), and
    /// a peer's newer connection closes its older one once it delivers a message: a link
    /// connects again only after giving up the connection before, which a partition may have
    /// left open here, silent between messages, for ever.
    async fn peer_in(&self, stream: TcpStream) {
        let addr = stream
            .peer_addr()
            .map_or_else(|_| "an unknown address".to_string(), |a| a.to_string());
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let replaced = Arc::new(Notify::new());
        let mut from = None;
        self.read_peer(stream, &addr, serial, &replaced, &mut from)
            .await;
        if let Some(from) = from {
            self.unregister(from, serial);
        }
    }

    /// Forgets connection `serial` as peer `from`'s newest, if it still is.
    fn unregister(&self, from: u64, serial: u64) {
        let mut inbound = self.inbound.lock();
        if inbound.get(&from).is_some_and(|(s, _)| *s == serial) {
            inbound.remove(&from);
        }
    }

    /// [`Net::peer_in`]'s loop; `from`: the peer the connection was registered for.
    async fn read_peer(
        &self,
        stream: TcpStream,
        addr: &str,
        serial: u64,
        replaced: &Arc<Notify>,
        from: &mut Option<u64>,
    ) {
        let id = self.shared.id;
        let limit = self.shared.peer_frame_limit;
        let mut r = BufReader::with_capacity(256 << 10, Stall::new(stream, PEER_STALL));
        let mut buf = Vec::new();
        // A message must come from a listed peer, addressed to this node: checked as soon as
        // the reader knows both (a head's, before its chunks are taken in).
        let accept = |from: u64, to: u64| {
            let known = self.shared.peers.read().contains_key(&from);
            if to == id && !known {
                // Maybe a node added while this one was down: see `node::learn_peers`.
                self.shared.stranger.notify_one();
            }
            to == id && known
        };
        loop {
            // Quiet between messages for as long as the peer likes (unless a newer connection
            // of its replaces this one); once one has begun, the rest must keep coming.
            r.get_mut().watch_reads(false);
            let filled = tokio::select! {
                biased;
                () = replaced.notified() => {
                    eprintln!(
                        "node {id}: closed the peer connection from {addr}: node {} connected again",
                        from.unwrap_or(0)
                    );
                    return;
                }
                filled = r.fill_buf() => filled.map(|b| b.is_empty()),
            };
            match filled {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    eprintln!("node {id}: dropped the peer connection from {addr}: {e}");
                    return;
                }
            }
            r.get_mut().watch_reads(true);
            let PeerMessage { message: m, chunks } =
                match read_peer_message(&mut r, &mut buf, limit, accept).await {
                    Ok(Some(got)) => got,
                    Ok(None) => return,
                    Err(e) => {
                        eprintln!("node {id}: dropped the peer connection from {addr}: {e}");
                        return;
                    }
                };
            if m.to != id || !self.shared.peers.read().contains_key(&m.from) {
                eprintln!(
                    "node {id}: dropped a raft message from {} to {}: not a peer's message to this node",
                    m.from, m.to
                );
                return;
            }
            if *from != Some(m.from) {
                // This connection is the peer's newest: the one registered before it goes.
                let older = self
                    .inbound
                    .lock()
                    .insert(m.from, (serial, replaced.clone()));
                if let Some((_, older)) = older.filter(|(s, _)| *s != serial) {
                    older.notify_one();
                }
                // Connected again (the older connection closed or not): see `peer_out`.
                if !self.connected_before.lock().insert(m.from) {
                    self.shared.reconnected.lock().insert(m.from);
                }
                if let Some(before) = from.replace(m.from) {
                    self.unregister(before, serial);
                }
            }
            if matches!(
                m.get_msg_type(),
                MessageType::MsgHeartbeatResponse
                    | MessageType::MsgAppendResponse
                    | MessageType::MsgRequestVoteResponse
                    | MessageType::MsgRequestPreVoteResponse
            ) {
                self.shared.answered.lock().insert(m.from, Instant::now());
            }
            if m.get_msg_type() == MessageType::MsgSnapshot {
                eprintln!(
                    "node {id}: received a snapshot at index {} from node {}: {} bytes in {chunks} chunk(s)",
                    m.get_snapshot().get_metadata().index,
                    m.from,
                    m.get_snapshot().get_data().len()
                );
            }
            if self.shared.events.send(Event::Raft(Box::new(m))).is_err() {
                return;
            }
        }
    }

    async fn client(self: Arc<Self>, stream: TcpStream) {
        let (r, w) = stream.into_split();
        let (tx, mut rx) = unbounded_channel::<ServerFrame>();
        let writer = tokio::spawn(async move {
            let mut w = BufWriter::new(w);
            while let Some(frame) = rx.recv().await {
                let Ok(body) = serde_json::to_vec(&frame) else {
                    continue;
                };
                if write_frame(&mut w, &body, MAX_FRAME).await.is_err() {
                    return;
                }
                // Flush once the queue is drained: answers that are ready together share a write.
                if rx.is_empty() && w.flush().await.is_err() {
                    return;
                }
            }
        });
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        while let Ok(true) = read_frame(&mut r, &mut buf, MAX_FRAME).await {
            let frame: ClientFrame = match serde_json::from_slice(&buf) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.send(ServerFrame {
                        id: 0,
                        response: Response::fatal(format!("bad request frame: {e}")),
                    });
                    break;
                }
            };
            let net = self.clone();
            let tx = tx.clone();
            tokio::spawn(async move { net.request(frame, tx).await });
        }
        drop(tx);
        let _ = writer.await;
    }

    async fn request(&self, frame: ClientFrame, tx: UnboundedSender<ServerFrame>) {
        let id = frame.id;
        if let Request::Watch { prefix } = frame.request {
            self.watch(id, prefix, tx).await;
            return;
        }
        let response = self.answer(frame).await;
        let _ = tx.send(ServerFrame { id, response });
    }

    async fn answer(&self, frame: ClientFrame) -> Response {
        let request = frame.request;
        match &request {
            Request::Status => return Response::Status(self.shared.status.lock().clone()),
            Request::Read {
                consistency: Consistency::Eventual,
                ..
            }
            | Request::List {
                consistency: Consistency::Eventual,
                ..
            } => return local_read(&self.shared.sm.read(), &request),
            _ => {}
        }
        // Refused where it arrives, before it is forwarded or proposed: a key or value the
        // state could not snapshot and restore would stop every node from restarting.
        let size = match &request {
            Request::Write { key, value, .. } => check_write_size(key, Some(value)),
            Request::Delete { key, .. } => check_write_size(key, None),
            _ => Ok(()),
        };
        if let Err(e) = size {
            return Response::fatal(e);
        }
        let leader = match self.wait_leader().await {
            Some(l) => l,
            None => return Response::retryable("no leader is known (an election may be running)"),
        };
        if leader == self.shared.id {
            return self.to_raft(request).await;
        }
        if frame.forwarded {
            return Response::retryable(format!(
                "node {} is not the leader (node {leader} is)",
                self.shared.id
            ));
        }
        self.forward(leader, request).await
    }

    async fn wait_leader(&self) -> Option<u64> {
        let start = Instant::now();
        loop {
            let l = self.shared.leader();
            if l != 0 {
                return Some(l);
            }
            if start.elapsed() > LEADER_WAIT {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn to_raft(&self, request: Request) -> Response {
        let (reply, answer) = oneshot::channel();
        let ev = match request {
            Request::Write {
                key,
                value,
                expected_version,
                session,
            } => Event::Propose {
                op: Op::Put {
                    key,
                    value,
                    expected: expected_version,
                },
                session,
                reply,
            },
            Request::Delete {
                key,
                expected_version,
                session,
            } => Event::Propose {
                op: Op::Delete {
                    key,
                    expected: expected_version,
                },
                session,
                reply,
            },
            Request::RemoveNode { id } => Event::ChangeVoters {
                id,
                addr: None,
                reply,
            },
            Request::AddNode { id, addr } => match addr.parse() {
                Ok(addr) if id > 0 => Event::ChangeVoters {
                    id,
                    addr: Some(addr),
                    reply,
                },
                Ok(_) => return Response::fatal("node ids start at 1"),
                Err(e) => return Response::fatal(format!("bad address {addr:?}: {e}")),
            },
            request @ (Request::Read { .. } | Request::List { .. }) => {
                Event::Read { request, reply }
            }
            other => return Response::fatal(format!("not a raft request: {other:?}")),
        };
        if self.shared.events.send(ev).is_err() {
            return Response::retryable("the node is shutting down");
        }
        match tokio::time::timeout(RAFT_WAIT, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Response::retryable("the node dropped the request"),
            Err(_) => Response::retryable("no outcome in time; a write's outcome is unknown"),
        }
    }

    /// Passes a request to the leader over one connection, re-established when the leader
    /// changes or the connection breaks.
    async fn forward(&self, leader: u64, request: Request) -> Response {
        let Some(addr) = self.shared.peers.read().get(&leader).copied() else {
            return Response::retryable(format!("no address for leader {leader}"));
        };
        let conn = {
            let mut slot = self.forward.lock().await;
            match &*slot {
                Some((l, c)) if *l == leader && !c.is_closed() => c.clone(),
                _ => match Conn::connect(addr, Duration::from_secs(1)).await {
                    Ok(c) => {
                        *slot = Some((leader, c.clone()));
                        c
                    }
                    Err(e) => {
                        return Response::retryable(format!("forward to leader {leader}: {e}"))
                    }
                },
            }
        };
        match conn
            .call(request, true, RAFT_WAIT + Duration::from_secs(1))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                // The leader answers within RAFT_WAIT: a connection that did not (gone silent
                // without closing, as through a partition) is given up, else every request
                // forwarded on it would wait for nothing until the leader changes.
                let mut slot = self.forward.lock().await;
                if slot.as_ref().is_some_and(|(_, c)| Arc::ptr_eq(c, &conn)) {
                    *slot = None;
                }
                Response::retryable(format!(
                    "forwarded to leader {leader}: {e}; a write's outcome is unknown"
                ))
            }
        }
    }

    async fn watch(&self, id: u64, prefix: String, tx: UnboundedSender<ServerFrame>) {
        let (events_tx, mut events) = unbounded_channel();
        let applied = self.shared.sm.write().watch(prefix, events_tx);
        if tx
            .send(ServerFrame {
                id,
                response: Response::Watching { applied },
            })
            .is_err()
        {
            return;
        }
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { return };
                    if tx.send(ServerFrame { id, response: Response::Event(ev) }).is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    }

    /// `raftwal snapshot save --endpoint`: a snapshot at the applied index, as an archive.
    async fn pull(&self, stream: TcpStream) {
        let (reply, answer) = oneshot::channel();
        let reader = if self
            .shared
            .events
            .send(Event::PullSnapshot { reply })
            .is_err()
        {
            Err("the node is shutting down".to_string())
        } else {
            answer
                .await
                .unwrap_or_else(|_| Err("the node dropped the request".to_string()))
        };
        let Ok(stream) = stream.into_std() else {
            return;
        };
        let id = self.shared.id;
        let _ = tokio::task::spawn_blocking(move || {
            if stream.set_nonblocking(false).is_err() {
                return;
            }
            let result = match reader {
                Ok(mut reader) => {
                    raftwal::endpoint::serve_archive(&stream, &mut reader, &mut |_| {}).map(
                        |meta| {
                            eprintln!(
                                "node {id}: served a snapshot archive at index {}",
                                meta.index
                            )
                        },
                    )
                }
                Err(message) => raftwal::endpoint::serve_error(&stream, &message),
            };
            if let Err(e) = result {
                eprintln!("node {id}: snapshot pull: {e}");
            }
        })
        .await;
    }
}

/// Starts the link that carries raft messages to peer `to`: connects (and reconnects) and
/// writes each message in peer frames (one, or a snapshot's head and chunks: see `wire`).
/// While the peer is unreachable its messages are dropped and raft is told, so it probes again
/// later instead of waiting; a snapshot's outcome, written out whole or not, is reported to
/// raft either way. A connection that takes no byte for [`PEER_STALL`] counts as broken (one
/// gone silent without closing would otherwise hold the link until TCP gives up on it).
pub fn peer_link(shared: Arc<Shared>, to: u64, addr: SocketAddr) -> UnboundedSender<Message> {
    let (tx, rx) = unbounded_channel();
    tokio::spawn(peer_out(shared, to, addr, rx));
    tx
}

async fn peer_out(
    shared: Arc<Shared>,
    to: u64,
    addr: SocketAddr,
    mut rx: UnboundedReceiver<Message>,
) {
    let mut conn: Option<BufWriter<Stall<TcpStream>>> = None;
    let mut retry_at = Instant::now();
    // The first heartbeat or append written on this connection since the peer last answered
    // one (`Shared::answered`).
    let mut unanswered_since: Option<Instant> = None;
    // When this link was last remade because the peer connected to this node again.
    let mut remade_for_peer: Option<Instant> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        // The peer took its link to this node for dead and connected again: this link may
        // be dead too without this node seeing it (a follower only answers, and answers are
        // not answered). Once per two stall limits at most: the peer sees this link's new
        // connection replace the older one and may remake its own again, once.
        if shared.reconnected.lock().remove(&to)
            && conn.is_some()
            && remade_for_peer.is_none_or(|at| at.elapsed() >= PEER_STALL * 2)
        {
            eprintln!(
                "node {}: remade the connection to node {to} ({addr}): it connected to this node again",
                shared.id
            );
            conn = None;
            unanswered_since = None;
            remade_for_peer = Some(Instant::now());
        }
        // A link whose heartbeats, appends or votes go unanswered for PEER_STALL is taken for dead,
        // however few bytes they are: a connection gone silent (a partition) takes them into
        // its socket buffer without a word, and a quiet cluster's never fill it for the stall
        // to show. The peer may be down or cut off; a new connection costs nothing then.
        if let (Some(since), Some(_)) = (unanswered_since, conn.as_ref()) {
            let answered = shared.answered.lock().get(&to).copied();
            if answered.is_some_and(|at| at >= since) {
                unanswered_since = None;
            } else if since.elapsed() >= PEER_STALL {
                eprintln!(
                    "node {}: dropped the connection to node {to} ({addr}): no answer to its heartbeats, appends or votes for {PEER_STALL:?}",
                    shared.id
                );
                conn = None;
                unanswered_since = None;
                let _ = shared.events.send(Event::Unreachable { to });
            }
        }
        if conn.is_none() && Instant::now() >= retry_at {
            conn = connect_peer(addr).await;
            if conn.is_none() {
                retry_at = Instant::now() + Duration::from_millis(200);
            }
        }
        // A candidate's (pre-)votes are asks too: between two followers no heartbeat ever
        // flows, so a connection of theirs that went silent was only found (never) by the
        // votes of the election it then failed.
        let asks = batch.iter().any(|m| {
            matches!(
                m.get_msg_type(),
                MessageType::MsgHeartbeat
                    | MessageType::MsgAppend
                    | MessageType::MsgRequestVote
                    | MessageType::MsgRequestPreVote
            )
        });
        if !asks {
            // A leader's batches carry heartbeats every few ticks, a candidate's its votes:
            // one without them is a node that no longer leads or campaigns (its earlier asks
            // are not this link's to judge any more).
            unanswered_since = None;
        }
        let ok = match conn.as_mut() {
            Some(w) => match write_batch(w, &batch, shared.peer_frame_limit).await {
                Ok(snapshots) => {
                    for (index, bytes, chunks) in snapshots {
                        eprintln!(
                            "node {}: sent a snapshot at index {index} to node {to}: {bytes} bytes in {chunks} chunk(s)",
                            shared.id
                        );
                    }
                    true
                }
                Err(e) => {
                    eprintln!(
                        "node {}: dropped the connection to node {to} ({addr}): {e}",
                        shared.id
                    );
                    // As after a failed connect: something that takes connections for a dead
                    // peer (a proxy, a load balancer) and resets them would otherwise be
                    // connected to again at every batch (every strong read makes one).
                    retry_at = Instant::now() + Duration::from_millis(200);
                    false
                }
            },
            None => false,
        };
        if !ok {
            conn = None;
            unanswered_since = None;
            let _ = shared.events.send(Event::Unreachable { to });
        } else if asks && unanswered_since.is_none() {
            // From when the asks are written out: a long write (a snapshot ahead of them) is
            // not the peer's silence.
            unanswered_since = Some(Instant::now());
        }
        for m in &batch {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                let _ = shared.events.send(Event::SnapshotSent { to, ok });
            }
        }
    }
}

async fn connect_peer(addr: SocketAddr) -> Option<BufWriter<Stall<TcpStream>>> {
    let stream = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    let mut w = BufWriter::with_capacity(256 << 10, Stall::new(stream, PEER_STALL));
    w.write_all(&PEER_MAGIC).await.ok()?;
    Some(w)
}

/// Writes and flushes a batch of raft messages; returns the snapshots in it: (index, bytes,
/// chunks).
async fn write_batch(
    w: &mut BufWriter<Stall<TcpStream>>,
    batch: &[Message],
    limit: usize,
) -> std::io::Result<Vec<(u64, usize, usize)>> {
    let mut snapshots = Vec::new();
    for m in batch {
        let chunks = write_peer_message(w, m, limit).await?;
        if m.get_msg_type() == MessageType::MsgSnapshot {
            let s = m.get_snapshot();
            snapshots.push((s.get_metadata().index, s.get_data().len(), chunks));
        }
    }
    w.flush().await?;
    Ok(snapshots)
}
