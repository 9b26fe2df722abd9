//! What travels over raftwal-kv's TCP connections, and how it is framed.
//!
//! Every node listens on one port. A connection opens with an 8-byte magic that says what it
//! carries:
//!
//! * [`PEER_MAGIC`]: raft messages from one node to another, one direction only; each frame's
//!   body is a raft-rs `Message` in protobuf;
//! * [`CLIENT_MAGIC`]: client requests ([`ClientFrame`]) and answers ([`ServerFrame`]) in JSON.
//!   Requests carry an id and may be pipelined; answers come back tagged with it, in any order.
//!   A watch answers many times under its request's id;
//! * `raftwal::endpoint::PULL_MAGIC`: `raftwal snapshot save --endpoint` pulling an archive.
//!
//! A frame is a big-endian `u32` length followed by that many bytes.
//!
//! This module owns the byte formats only: it never touches storage, raft state or sockets'
//! lifetimes.

use std::io;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const PEER_MAGIC: [u8; 8] = *b"RWKVPEER";
pub const CLIENT_MAGIC: [u8; 8] = *b"RWKVCLNT";

/// Largest frame accepted. Raft messages carrying a snapshot are the largest.
pub const MAX_FRAME: usize = 256 << 20;

/// The smallest frame limit a node takes for its peer connections (`node --peer-frame-limit`).
pub const MIN_PEER_FRAME: usize = 4 << 10;

/// Parses `node --peer-frame-limit`: bytes, from [`MIN_PEER_FRAME`] to [`MAX_FRAME`].
pub fn parse_peer_frame_limit(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(MIN_PEER_FRAME..=MAX_FRAME).contains(&n) {
        return Err(format!(
            "{n}: a peer frame limit is from {MIN_PEER_FRAME} to {MAX_FRAME} bytes"
        ));
    }
    Ok(n)
}

/// Reads one frame of at most `limit` bytes into `buf`. `Ok(false)` on a clean end of stream
/// before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is larger than the {limit}-byte limit"),
        ));
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    Ok(true)
}

/// Writes one frame of at most `limit` bytes (not flushed).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    body: &[u8],
    limit: usize,
) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n as usize <= limit)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {} bytes is larger than the {limit}-byte limit",
                    body.len()
                ),
            )
        })?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(body).await
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Served from the receiving node's state machine as it is: may lag the leader.
    Eventual,
    /// Linearizable: the leader confirms its leadership with a quorum (raft's ReadIndex) and
    /// answers once it has applied up to the index it read.
    Strong,
}

/// Makes retried writes exactly-once: a node applies a client's `seq` at most once and answers
/// a repeat with the first outcome. A client has one write in flight at a time, with growing
/// `seq`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Session {
    pub client: u64,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Read {
        key: String,
        consistency: Consistency,
    },
    List {
        prefix: String,
        consistency: Consistency,
    },
    /// `expected_version`: `None` writes unconditionally, `Some(0)` only if the key is absent,
    /// `Some(v)` only if the key's version is `v`.
    Write {
        key: String,
        value: String,
        expected_version: Option<u64>,
        session: Option<Session>,
    },
    Delete {
        key: String,
        expected_version: Option<u64>,
        session: Option<Session>,
    },
    /// Streams every change under `prefix` applied on this node after the watch starts.
    Watch {
        prefix: String,
    },
    Status,
    /// Adds node `id`, listening on `addr`, as a voter (a raft conf change through the
    /// leader). Start that node with `--join` once the change is applied.
    AddNode {
        id: u64,
        addr: String,
    },
    /// Removes voter `id` (a raft conf change through the leader).
    RemoveNode {
        id: u64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientFrame {
    pub id: u64,
    /// Set by a follower passing the request to the leader: never forwarded again.
    pub forwarded: bool,
    pub request: Request,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerFrame {
    pub id: u64,
    pub response: Response,
}

/// A key's value and version. The version is the raft index of the write that set it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub key: String,
    pub value: String,
    pub version: u64,
}

/// One change seen by a watch: `value: None` is a deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub key: String,
    pub value: Option<String>,
    pub version: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u64,
    pub role: String,
    /// 0 when unknown.
    pub leader: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    pub log_files: usize,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    pub keys: usize,
    pub voters: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// `applied`: the state machine's applied index the answer was read at.
    Value {
        item: Option<Item>,
        applied: u64,
    },
    Items {
        items: Vec<Item>,
        applied: u64,
    },
    /// A write or delete applied at raft index `version`.
    Written {
        version: u64,
    },
    /// A compare-and-swap whose expected version did not match; nothing changed.
    CasFailed {
        key: String,
        expected: u64,
        current: u64,
    },
    /// A conf change applied at raft index `index`; the voters after it.
    Membership {
        index: u64,
        voters: Vec<u64>,
    },
    /// The watch is registered; changes applied after `applied` follow as `Event`s.
    Watching {
        applied: u64,
    },
    Event(WatchEvent),
    Status(NodeStatus),
    /// `retryable`: the request may be sent again (to this or another node); for a write with
    /// a session the retry is safe whether or not the first attempt was applied.
    Error {
        message: String,
        retryable: bool,
    },
}

impl Response {
    pub fn retryable(message: impl Into<String>) -> Response {
        Response::Error {
            message: message.into(),
            retryable: true,
        }
    }

    pub fn fatal(message: impl Into<String>) -> Response {
        Response::Error {
            message: message.into(),
            retryable: false,
        }
    }
}
