//! Talking to raftwal-kv nodes.
//!
//! [`Conn`] is one multiplexed connection: many requests in flight, answers matched by id
//! (nodes use it too, to forward to their leader). [`Client`] sits on top: it fails over between
//! nodes, retries what the cluster says is retryable, and gives every write a session sequence
//! number so a retried write is applied exactly once.
//!
//! This module never interprets data beyond the wire types and never holds raft state.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::wire::{
    read_frame, write_frame, ClientFrame, Consistency, Item, NodeStatus, Request, Response,
    ServerFrame, Session, WatchEvent, CLIENT_MAGIC, MAX_FRAME,
};

/// How long a connection may sit idle before the kernel probes the other end ([`keepalive`]).
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between unanswered probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes after which the kernel closes the connection.
pub const KEEPALIVE_PROBES: u32 = 3;

/// Sets TCP keepalive on a connection: every one a node accepts, every [`Conn`]. Whoever waits
/// on a connection whose other end vanished (its host gone, a partition for good: no FIN or
/// RST ever comes) otherwise waits for ever: a node for the next request of a client gone (the
/// connection and its reading task kept for as long as the node runs), a watch for the next
/// event of a node gone. Peers' links are judged by their answers (examples/kv/server.rs) and
/// get it too.
pub fn keepalive(stream: &TcpStream) -> std::io::Result<()> {
    let k = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    socket2::SockRef::from(stream).set_tcp_keepalive(&k)
}

type Pending = Arc<Mutex<HashMap<u64, (UnboundedSender<Response>, bool)>>>;

/// One client connection to one node.
pub struct Conn {
    pub addr: SocketAddr,
    writer: tokio::sync::Mutex<BufWriter<OwnedWriteHalf>>,
    pending: Pending,
    next: AtomicU64,
    closed: Arc<AtomicBool>,
    /// The task reading answers. It holds the socket's read half: dropping the writer alone
    /// only shuts the socket for writing, and on a connection gone silent (no FIN, no RST
    /// ever comes) the read would wait, task and socket kept, for as long as the process runs.
    reader: tokio::task::AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Conn {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Arc<Conn>, String> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connect to {addr}: timed out"))?
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        keepalive(&stream).map_err(|e| format!("{addr}: TCP keepalive: {e}"))?;
        let (r, w) = stream.into_split();
        let mut writer = BufWriter::new(w);
        writer
            .write_all(&CLIENT_MAGIC)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (p, c) = (pending.clone(), closed.clone());
        let reader = tokio::spawn(async move {
            let mut r = BufReader::new(r);
            let mut buf = Vec::new();
            while let Ok(true) = read_frame(&mut r, &mut buf, MAX_FRAME).await {
                let Ok(frame) = serde_json::from_slice::<ServerFrame>(&buf) else {
                    break;
                };
                let mut p = p.lock();
                let keep = match p.get(&frame.id) {
                    Some((tx, streaming)) => tx.send(frame.response).is_ok() && *streaming,
                    None => true,
                };
                if !keep {
                    p.remove(&frame.id);
                }
            }
            c.store(true, Ordering::Release);
            p.lock().clear(); // every waiter sees its channel close
        })
        .abort_handle();
        Ok(Arc::new(Conn {
            addr,
            writer: tokio::sync::Mutex::new(writer),
            pending,
            next: AtomicU64::new(1),
            closed,
            reader,
        }))
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    async fn send(
        &self,
        request: Request,
        forwarded: bool,
        streaming: bool,
    ) -> Result<(u64, UnboundedReceiver<Response>), String> {
        if self.is_closed() {
            return Err(format!("{}: connection closed", self.addr));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = unbounded_channel();
        self.pending.lock().insert(id, (tx, streaming));
        let frame = ClientFrame {
            id,
            forwarded,
            request,
        };
        let body = serde_json::to_vec(&frame).map_err(|e| format!("encode request: {e}"))?;
        let mut w = self.writer.lock().await;
        let sent = async {
            write_frame(&mut *w, &body, MAX_FRAME).await?;
            w.flush().await
        }
        .await;
        if let Err(e) = sent {
            self.pending.lock().remove(&id);
            return Err(format!("{}: send: {e}", self.addr));
        }
        Ok((id, rx))
    }

    /// Sends `request` and waits for its answer. Transport failures and timeouts are `Err`.
    pub async fn call(
        &self,
        request: Request,
        forwarded: bool,
        timeout: Duration,
    ) -> Result<Response, String> {
        let (id, mut rx) = self.send(request, forwarded, false).await?;
        let answer = tokio::time::timeout(timeout, rx.recv()).await;
        self.pending.lock().remove(&id);
        match answer {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(format!(
                "{}: connection closed before the answer",
                self.addr
            )),
            Err(_) => Err(format!("{}: no answer within {timeout:?}", self.addr)),
        }
    }

    /// Sends `request` and returns every answer it gets (a watch).
    pub async fn stream(&self, request: Request) -> Result<UnboundedReceiver<Response>, String> {
        Ok(self.send(request, false, true).await?.1)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The compare-and-swap's expected version did not match; nothing changed.
    CasFailed {
        key: String,
        expected: u64,
        current: u64,
    },
    /// The cluster refused the request for good.
    Refused(String),
    /// No definite answer before the deadline: a write's outcome is unknown.
    GaveUp(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::CasFailed {
                key,
                expected,
                current,
            } => write!(
                f,
                "compare-and-swap failed on {key:?}: expected version {expected}, current version {current}"
            ),
            ClientError::Refused(m) => write!(f, "refused: {m}"),
            ClientError::GaveUp(m) => write!(f, "no definite answer: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A random client id (a session must not collide with another client's).
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// A cluster client: fails over between `addrs`, retries retryable answers until `deadline`
/// per operation, and makes writes exactly-once with a session.
pub struct Client {
    addrs: Vec<SocketAddr>,
    current: usize,
    conn: Option<Arc<Conn>>,
    session: Session,
    /// How long one operation may keep retrying.
    pub deadline: Duration,
    /// How long one attempt may wait for its answer.
    pub attempt_timeout: Duration,
    /// Attempts that had to be retried (for reports).
    pub retries: u64,
}

impl Client {
    pub fn new(addrs: Vec<SocketAddr>) -> Client {
        Client {
            current: (random_u64() as usize) % addrs.len().max(1),
            addrs,
            conn: None,
            session: Session {
                client: random_u64(),
                seq: 0,
            },
            deadline: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(8),
            retries: 0,
        }
    }

    /// A client that only ever talks to `addr` (it still forwards through that node).
    pub fn pinned(addr: SocketAddr) -> Client {
        let mut c = Client::new(vec![addr]);
        c.current = 0;
        c
    }

    async fn conn(&mut self) -> Result<Arc<Conn>, String> {
        if let Some(c) = &self.conn {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        self.conn = None;
        let addr = *self
            .addrs
            .get(self.current % self.addrs.len().max(1))
            .ok_or("no node addresses")?;
        let c = Conn::connect(addr, Duration::from_secs(1)).await?;
        self.conn = Some(c.clone());
        Ok(c)
    }

    fn next_node(&mut self) {
        self.conn = None;
        self.current = (self.current + 1) % self.addrs.len().max(1);
    }

    /// Sends until a definite answer (anything but a retryable error) or the deadline.
    pub async fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        let start = Instant::now();
        let mut last = String::new();
        let mut attempt = 0u32;
        while start.elapsed() < self.deadline {
            if attempt > 0 {
                self.retries += 1;
                let backoff = Duration::from_millis(20 * u64::from(attempt.min(10)));
                tokio::time::sleep(backoff).await;
            }
            attempt += 1;
            let conn = match self.conn().await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    self.next_node();
                    continue;
                }
            };
            match conn
                .call(request.clone(), false, self.attempt_timeout)
                .await
            {
                Ok(Response::Error {
                    message,
                    retryable: true,
                }) => {
                    last = format!("{}: {message}", conn.addr);
                    if attempt.is_multiple_of(3) {
                        self.next_node();
                    }
                }
                Ok(Response::Error {
                    message,
                    retryable: false,
                }) => return Err(ClientError::Refused(message)),
                Ok(r) => return Ok(r),
                Err(e) => {
                    last = e;
                    self.next_node();
                }
            }
        }
        Err(ClientError::GaveUp(format!(
            "{:?} after {attempt} attempts in {:?}; last: {last}",
            request,
            start.elapsed()
        )))
    }

    pub async fn read(
        &mut self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<Item>, ClientError> {
        match self
            .call(Request::Read {
                key: key.to_string(),
                consistency,
            })
            .await?
        {
            Response::Value { item, .. } => Ok(item),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list(
        &mut self,
        prefix: &str,
        consistency: Consistency,
    ) -> Result<Vec<Item>, ClientError> {
        match self
            .call(Request::List {
                prefix: prefix.to_string(),
                consistency,
            })
            .await?
        {
            Response::Items { items, .. } => Ok(items),
            other => Err(unexpected(other)),
        }
    }

    /// Writes `value` if the key's version is `expected` (`None`: unconditionally; `Some(0)`:
    /// only if absent). Returns the new version.
    pub async fn write_cas(
        &mut self,
        key: &str,
        value: &str,
        expected: Option<u64>,
    ) -> Result<u64, ClientError> {
        self.session.seq += 1;
        let r = self
            .call(Request::Write {
                key: key.to_string(),
                value: value.to_string(),
                expected_version: expected,
                session: Some(self.session),
            })
            .await?;
        written(r)
    }

    /// Deletes the key if its version is `expected` (`None`: unconditionally).
    pub async fn delete_cas(
        &mut self,
        key: &str,
        expected: Option<u64>,
    ) -> Result<u64, ClientError> {
        self.session.seq += 1;
        let r = self
            .call(Request::Delete {
                key: key.to_string(),
                expected_version: expected,
                session: Some(self.session),
            })
            .await?;
        written(r)
    }

    /// Adds node `id` listening on `addr` as a voter; returns the conf change's index and the
    /// voters after it. Start the node with `--join` afterwards.
    pub async fn add_node(&mut self, id: u64, addr: &str) -> Result<(u64, Vec<u64>), ClientError> {
        match self
            .call(Request::AddNode {
                id,
                addr: addr.to_string(),
            })
            .await?
        {
            Response::Membership { index, voters } => Ok((index, voters)),
            other => Err(unexpected(other)),
        }
    }

    /// Removes voter `id`; returns the conf change's index and the voters after it.
    pub async fn remove_node(&mut self, id: u64) -> Result<(u64, Vec<u64>), ClientError> {
        match self.call(Request::RemoveNode { id }).await? {
            Response::Membership { index, voters } => Ok((index, voters)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn status(&mut self) -> Result<NodeStatus, ClientError> {
        match self.call(Request::Status).await? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Watches `prefix` on the node this client talks to: every change applied there after
    /// the returned index. The stream ends when that node goes away.
    pub async fn watch(&mut self, prefix: &str) -> Result<Watch, ClientError> {
        let conn = self.conn().await.map_err(ClientError::GaveUp)?;
        let mut rx = conn
            .stream(Request::Watch {
                prefix: prefix.to_string(),
            })
            .await
            .map_err(ClientError::GaveUp)?;
        match rx.recv().await {
            Some(Response::Watching { applied }) => Ok(Watch {
                applied,
                rx,
                _conn: conn,
            }),
            Some(other) => Err(unexpected(other)),
            None => Err(ClientError::GaveUp("the watch closed at once".into())),
        }
    }
}

fn written(r: Response) -> Result<u64, ClientError> {
    match r {
        Response::Written { version } => Ok(version),
        Response::CasFailed {
            key,
            expected,
            current,
        } => Err(ClientError::CasFailed {
            key,
            expected,
            current,
        }),
        other => Err(unexpected(other)),
    }
}

fn unexpected(r: Response) -> ClientError {
    ClientError::Refused(format!("unexpected answer {r:?}"))
}

pub struct Watch {
    /// Changes applied after this index follow.
    pub applied: u64,
    rx: UnboundedReceiver<Response>,
    _conn: Arc<Conn>,
}

impl Watch {
    /// The next change; `None` when the node closed the stream.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            match self.rx.recv().await? {
                Response::Event(e) => return Some(e),
                Response::Error { .. } => return None,
                _ => continue,
            }
        }
    }
}
