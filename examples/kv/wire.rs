//! What travels over raftwal-kv's TCP connections, and how it is framed.
//!
//! Every node listens on one port. A connection opens with an 8-byte magic that says what it
//! carries:
//!
//! * [`PEER_MAGIC`]: raft messages from one node to another, one direction only, in typed
//!   frames (below);
//! * [`CLIENT_MAGIC`]: client requests ([`ClientFrame`]) and answers ([`ServerFrame`]) in JSON,
//!   one per frame. Requests carry an id and may be pipelined; answers come back tagged with it,
//!   in any order. A watch answers many times under its request's id;
//! * `raftwal::endpoint::PULL_MAGIC`: `raftwal snapshot save --endpoint` pulling an archive.
//!
//! A frame is a big-endian `u32` length followed by that many bytes, at most a limit:
//! [`MAX_FRAME`] on client connections; on peer connections the node's `--peer-frame-limit`
//! (hidden, for tests; [`MAX_FRAME`] by default), which every node of a cluster shares.
//!
//! On a peer connection the first byte of a frame says what the rest is:
//!
//! * [`FRAME_MESSAGE`] (0): one raft-rs `Message` in protobuf. Every message but one carrying
//!   snapshot data travels so, whole, in one frame;
//! * [`FRAME_SNAPSHOT_HEAD`] (1): a message carrying snapshot data (a `MsgSnapshot`), without
//!   the data: its length (`u64`, big-endian, at most [`MAX_SNAPSHOT`]), its CRC-32C (`u32`,
//!   big-endian), then the `Message` in protobuf with `snapshot.data` empty;
//! * [`FRAME_SNAPSHOT_CHUNK`] (2): the next bytes (at least one) of the data a head announced;
//! * [`FRAME_MESSAGE_HEAD`] (3): a message whose protobuf is larger than a frame (a `MsgAppend`
//!   of large entries, under a small limit): the protobuf's length (`u64`) and CRC-32C (`u32`),
//!   the sender and the addressee (`u64` each), all big-endian; its protobuf follows in chunks.
//!
//! The reader checks the sender and the addressee of every message as soon as it knows them
//! (a head's, before its chunks), and its memory grows with the bytes that arrive, never with
//! what a head announces: a stranger's head is refused before its data is taken in.
//!
//! A head is followed by chunks, and by nothing else, until they add up to the length it
//! announced (none for an empty one). The receiver hands the message on, its data whole, only
//! then and only if the data's CRC-32C is the one announced: raft-rs needs `snapshot.data`
//! whole, and a snapshot is bounded by [`MAX_SNAPSHOT`], not by a frame. A sender cuts the
//! data into chunks as large as a frame allows. Anything else on a peer connection — an empty
//! frame, an unknown kind, a chunk with no head before it, another frame where a chunk is
//! due, an empty chunk, a chunk past the announced length, a head announcing more than
//! [`MAX_SNAPSHOT`], the connection ending inside a frame or a snapshot, a CRC that does not
//! match — is an error, and the receiver drops the connection with what it had of the
//! snapshot.
//!
//! This module owns the byte formats only: it never touches storage, raft state or sockets'
//! lifetimes, and never hands on part of a snapshot.

use std::io;

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::Message;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Peer connections in typed frames. Its first version (`RWKVPEER`) carried every raft message
/// as one untyped frame; a node refuses it.
pub const PEER_MAGIC: [u8; 8] = *b"RWKVPER2";
/// The first version of [`PEER_MAGIC`], named in the error a node logs when it hears it.
pub const PEER_MAGIC_V1: [u8; 8] = *b"RWKVPEER";
pub const CLIENT_MAGIC: [u8; 8] = *b"RWKVCLNT";

/// Largest frame accepted (on peer connections, unless `--peer-frame-limit` lowers it).
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
    read_body(r, buf, len).await?;
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

/// Peer frame kinds (the module comment describes each).
pub const FRAME_MESSAGE: u8 = 0;
pub const FRAME_SNAPSHOT_HEAD: u8 = 1;
pub const FRAME_SNAPSHOT_CHUNK: u8 = 2;
pub const FRAME_MESSAGE_HEAD: u8 = 3;

/// The most snapshot data a head may announce: a sanity bound on the memory a head makes a
/// receiver set aside (it holds the data whole, as raft-rs needs it). A state this large is far
/// past what this service, which holds its state in memory, is made for.
pub const MAX_SNAPSHOT: u64 = 64 << 30;

/// A snapshot head's fields before its message: the data's length and CRC-32C.
const HEAD_FIELDS: usize = 12;
/// A message head's fields: the protobuf's length and CRC-32C, the sender and the addressee.
const MESSAGE_HEAD_FIELDS: usize = 28;

/// A raft message read from a peer connection.
#[derive(Debug)]
pub struct PeerMessage {
    pub message: Message,
    /// How many chunk frames its snapshot data came in (0: it came in one frame).
    pub chunks: usize,
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Writes one frame on a peer connection: its length, `kind`, then `fields` and `body`.
async fn write_typed<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    fields: &[u8],
    body: &[u8],
    limit: usize,
) -> io::Result<()> {
    let len = 1 + fields.len() + body.len();
    let len = u32::try_from(len)
        .ok()
        .filter(|&n| n as usize <= limit)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a peer frame of {len} bytes is larger than the {limit}-byte limit"),
            )
        })?;
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&len.to_be_bytes());
    head[4] = kind;
    w.write_all(&head).await?;
    w.write_all(fields).await?;
    w.write_all(body).await
}

/// Writes raft message `m` on a peer connection in frames of at most `limit` bytes (not
/// flushed): one frame; a snapshot head and the data's chunks if it carries snapshot data (the
/// data is never copied into a message buffer: each chunk is written from `m`'s own bytes); a
/// message head and its protobuf's chunks if it is larger than a frame (a `MsgAppend` of large
/// entries). Returns the number of chunks.
pub async fn write_peer_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    m: &Message,
    limit: usize,
) -> io::Result<usize> {
    let encode = |m: &Message| {
        m.write_to_bytes().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("encode a {:?}: {e}", m.get_msg_type()),
            )
        })
    };
    if m.get_snapshot().get_data().is_empty() {
        let body = encode(m)?;
        if body.len() < limit {
            write_typed(w, FRAME_MESSAGE, &[], &body, limit).await?;
            return Ok(0);
        }
        let total = within_limit(body.len(), "message")?;
        let mut fields = [0u8; MESSAGE_HEAD_FIELDS];
        fields[..8].copy_from_slice(&total.to_be_bytes());
        fields[8..12].copy_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        fields[12..20].copy_from_slice(&m.from.to_be_bytes());
        fields[20..].copy_from_slice(&m.to.to_be_bytes());
        write_typed(w, FRAME_MESSAGE_HEAD, &fields, &[], limit).await?;
        return write_chunks(w, &body, limit).await;
    }
    // The message without its data (sharing, not copying, the data's buffer).
    let mut head = m.clone();
    let data: Bytes = head.mut_snapshot().take_data();
    let total = within_limit(data.len(), "snapshot")?;
    let mut fields = [0u8; HEAD_FIELDS];
    fields[..8].copy_from_slice(&total.to_be_bytes());
    fields[8..].copy_from_slice(&crc32c::crc32c(&data).to_be_bytes());
    write_typed(w, FRAME_SNAPSHOT_HEAD, &fields, &encode(&head)?, limit).await?;
    write_chunks(w, &data, limit).await
}

/// `len` bytes of a `what` sent as a head and chunks, as the head's length field, refused past
/// [`MAX_SNAPSHOT`].
fn within_limit(len: usize, what: &str) -> io::Result<u64> {
    let total = len as u64;
    if total > MAX_SNAPSHOT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a {what} of {total} bytes is over the {MAX_SNAPSHOT}-byte limit"),
        ));
    }
    Ok(total)
}

/// Writes `bytes` as chunk frames of at most `limit` bytes; returns how many.
async fn write_chunks<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    limit: usize,
) -> io::Result<usize> {
    let mut chunks = 0;
    for part in bytes.chunks(limit.saturating_sub(1).max(1)) {
        write_typed(w, FRAME_SNAPSHOT_CHUNK, &[], part, limit).await?;
        chunks += 1;
    }
    Ok(chunks)
}

/// Reads the length and kind of the next frame on a peer connection; `None` on a clean end
/// of stream, before the frame's first byte. Returns the kind and the length after it.
async fn read_typed_head<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> io::Result<Option<(u8, usize)>> {
    let mut len = [0u8; 4];
    if r.read(&mut len[..1]).await? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[1..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 {
        return Err(invalid_data("an empty peer frame (no kind)".into()));
    }
    if len > limit {
        return Err(invalid_data(format!(
            "a peer frame of {len} bytes is larger than the {limit}-byte limit"
        )));
    }
    let mut kind = [0u8];
    r.read_exact(&mut kind).await?;
    Ok(Some((kind[0], len - 1)))
}

fn decode(body: &[u8], what: &str) -> io::Result<Message> {
    Message::parse_from_bytes(body)
        .map_err(|e| invalid_data(format!("{what}: bad raft message: {e}")))
}

/// Reads the next raft message from a peer connection whose frames are at most `limit` bytes,
/// its snapshot data (or, for a message larger than a frame, its protobuf) reassembled and
/// checked. `accept(from, to)` is asked of every message as soon as its sender and addressee
/// are known, before any chunk is read: a message it refuses is an error, so that a stranger's
/// head never makes the reader take in the data it announces. `Ok(None)` on a clean end of
/// stream between messages; an error (the connection must then be dropped) on anything the
/// module comment does not allow. `buf` is scratch space, kept between calls.
pub async fn read_peer_message<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
    accept: impl Fn(u64, u64) -> bool,
) -> io::Result<Option<PeerMessage>> {
    let Some((kind, len)) = read_typed_head(r, limit).await? else {
        return Ok(None);
    };
    let refused = |from: u64, to: u64| {
        invalid_data(format!(
            "a raft message from {from} to {to}: not a peer's message to this node"
        ))
    };
    match kind {
        FRAME_MESSAGE => {
            read_body(r, buf, len).await?;
            let message = decode(buf, "a message frame")?;
            if !accept(message.from, message.to) {
                return Err(refused(message.from, message.to));
            }
            Ok(Some(PeerMessage { message, chunks: 0 }))
        }
        FRAME_SNAPSHOT_HEAD => read_snapshot(r, buf, len, limit, &accept, &refused)
            .await
            .map(Some),
        FRAME_MESSAGE_HEAD => {
            if len != MESSAGE_HEAD_FIELDS {
                return Err(invalid_data(format!(
                    "a message head of {len} bytes, not its {MESSAGE_HEAD_FIELDS}"
                )));
            }
            read_body(r, buf, len).await?;
            let u64_at = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[at..at + 8]);
                u64::from_be_bytes(b)
            };
            let (total, from, to) = (u64_at(0), u64_at(12), u64_at(20));
            let mut crc = [0u8; 4];
            crc.copy_from_slice(&buf[8..12]);
            let crc = u32::from_be_bytes(crc);
            if !accept(from, to) {
                return Err(refused(from, to));
            }
            let context = |e: io::Error| {
                io::Error::new(
                    e.kind(),
                    format!("a message from node {from} in chunks: {e}"),
                )
            };
            let (body, chunks) = read_chunks(r, total, crc, limit, &context).await?;
            let message = decode(&body, "a message in chunks")?;
            if (message.from, message.to) != (from, to) {
                return Err(context(invalid_data(format!(
                    "its head says from {from} to {to}, the message from {} to {}",
                    message.from, message.to
                ))));
            }
            Ok(Some(PeerMessage { message, chunks }))
        }
        FRAME_SNAPSHOT_CHUNK => Err(invalid_data(
            "a snapshot chunk with no snapshot head before it".into(),
        )),
        other => Err(invalid_data(format!(
            "a peer frame of unknown kind {other}"
        ))),
    }
}

/// Reads a body of `len` bytes into `buf` (emptied first).
async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    len: usize,
) -> io::Result<()> {
    buf.clear();
    read_appending(r, buf, len).await
}

/// Appends exactly `len` bytes from `r` to `buf`, which grows with the bytes that arrive, never
/// with what a head announced: a head alone, its body never sent, once made the node allocate
/// the whole length (up to `MAX_FRAME`) and hold it while the connection stayed open.
async fn read_appending<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    len: usize,
) -> io::Result<()> {
    buf.reserve(len.min(64 << 10));
    let got = (&mut *r).take(len as u64).read_to_end(buf).await?;
    if got < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection ended inside a frame",
        ));
    }
    Ok(())
}

/// Reads a snapshot head of `len` bytes (after its kind), then the chunks of its data.
async fn read_snapshot<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    len: usize,
    limit: usize,
    accept: &impl Fn(u64, u64) -> bool,
    refused: &impl Fn(u64, u64) -> io::Error,
) -> io::Result<PeerMessage> {
    if len < HEAD_FIELDS {
        return Err(invalid_data(format!(
            "a snapshot head of {len} bytes, short of its {HEAD_FIELDS} bytes of length and CRC"
        )));
    }
    read_body(r, buf, len).await?;
    let mut total = [0u8; 8];
    total.copy_from_slice(&buf[..8]);
    let total = u64::from_be_bytes(total);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&buf[8..HEAD_FIELDS]);
    let crc = u32::from_be_bytes(crc);
    let mut message = decode(&buf[HEAD_FIELDS..], "a snapshot head")?;
    if !accept(message.from, message.to) {
        return Err(refused(message.from, message.to));
    }
    let (index, from) = (message.get_snapshot().get_metadata().index, message.from);
    let context = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("the snapshot at index {index} from node {from}: {e}"),
        )
    };
    if !message.has_snapshot() || !message.get_snapshot().get_data().is_empty() {
        return Err(context(invalid_data(
            "its head holds no snapshot, or data of its own".into(),
        )));
    }
    let (data, chunks) = read_chunks(r, total, crc, limit, &context).await?;
    message.mut_snapshot().set_data(Bytes::from(data));
    Ok(PeerMessage { message, chunks })
}

/// Reads the chunks of `total` bytes a head announced (at most [`MAX_SNAPSHOT`]) and checks
/// their CRC-32C against `crc`; errors go through `context`. Memory grows with the bytes that
/// arrive, never with what a head announces.
async fn read_chunks<R: AsyncRead + Unpin>(
    r: &mut R,
    total: u64,
    crc: u32,
    limit: usize,
    context: &impl Fn(io::Error) -> io::Error,
) -> io::Result<(Vec<u8>, usize)> {
    if total > MAX_SNAPSHOT {
        return Err(context(invalid_data(format!(
            "a head announcing {total} bytes, over the {MAX_SNAPSHOT}-byte limit"
        ))));
    }
    let total = usize::try_from(total)
        .map_err(|_| context(invalid_data(format!("{total} bytes do not fit in memory"))))?;
    let mut data = Vec::new();
    let mut chunks = 0;
    while data.len() < total {
        let got = data.len();
        let at = |e: io::Error| {
            let what = match e.kind() {
                io::ErrorKind::UnexpectedEof => "the connection ended".to_string(),
                _ => e.to_string(),
            };
            context(io::Error::new(
                e.kind(),
                format!("after {got} of its {total} bytes: {what}"),
            ))
        };
        let (kind, n) = match read_typed_head(r, limit).await {
            Ok(Some(head)) => head,
            Ok(None) => {
                return Err(at(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection ended",
                )))
            }
            Err(e) => return Err(at(e)),
        };
        if kind != FRAME_SNAPSHOT_CHUNK {
            return Err(at(invalid_data(format!(
                "a frame of kind {kind} where a chunk was due"
            ))));
        }
        if n == 0 {
            return Err(at(invalid_data("an empty chunk".into())));
        }
        if n > total - got {
            return Err(at(invalid_data(format!(
                "a chunk of {n} bytes where {} were left: past the announced length",
                total - got
            ))));
        }
        if let Err(e) = read_appending(r, &mut data, n).await {
            return Err(at(e));
        }
        chunks += 1;
    }
    let actual = crc32c::crc32c(&data);
    if actual != crc {
        return Err(context(invalid_data(format!(
            "its {total} bytes have CRC-32C {actual:#010x}, its head announced {crc:#010x}"
        ))));
    }
    Ok((data, chunks))
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
    /// Every node this one knows the address of, itself included (a node joining the cluster
    /// learns the others' from it: see `node::learn_peers`).
    #[serde(default)]
    pub peers: std::collections::BTreeMap<u64, std::net::SocketAddr>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::MessageType;

    fn heartbeat(term: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.from = 1;
        m.to = 2;
        m.term = term;
        m
    }

    /// A MsgSnapshot from node 1 to node 2 carrying `len` bytes of data that differ from byte
    /// to byte (so a moved or dropped byte changes the checksum).
    fn snapshot(len: usize) -> Message {
        let mut m = heartbeat(3);
        m.set_msg_type(MessageType::MsgSnapshot);
        let s = m.mut_snapshot();
        s.mut_metadata().index = 7;
        s.mut_metadata().term = 3;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2];
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        s.set_data(data.into());
        m
    }

    /// The bytes `write_peer_message` sends for `msgs`, and the chunks of each.
    async fn encode(msgs: &[Message], limit: usize) -> io::Result<(Vec<u8>, Vec<usize>)> {
        let mut out = Vec::new();
        let mut chunks = Vec::new();
        for m in msgs {
            chunks.push(write_peer_message(&mut out, m, limit).await?);
        }
        Ok((out, chunks))
    }

    /// Reads messages from `bytes` until the end or an error; returns those read and the
    /// error, if any.
    async fn decode_all(mut bytes: &[u8], limit: usize) -> (Vec<PeerMessage>, Option<io::Error>) {
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_peer_message(&mut bytes, &mut buf, limit, |_, _| true).await {
                Ok(Some(m)) => got.push(m),
                Ok(None) => return (got, None),
                Err(e) => return (got, Some(e)),
            }
        }
    }

    /// One frame of `kind` with `body`, its length as given.
    fn frame(len: u32, kind: u8, body: &[u8]) -> Vec<u8> {
        [&len.to_be_bytes()[..], &[kind], body].concat()
    }

    /// A snapshot head frame announcing `total` bytes with checksum `crc` for message `m`.
    fn head(total: u64, crc: u32, m: &Message) -> io::Result<Vec<u8>> {
        let body = m.write_to_bytes().map_err(io::Error::other)?;
        let fields = [&total.to_be_bytes()[..], &crc.to_be_bytes()].concat();
        let len = (1 + fields.len() + body.len()) as u32;
        Ok([frame(len, FRAME_SNAPSHOT_HEAD, &fields), body].concat())
    }

    /// `snapshot(len)`'s message without its data, and the data.
    fn split(len: usize) -> (Message, Vec<u8>) {
        let mut m = snapshot(len);
        let data = m.mut_snapshot().take_data().to_vec();
        (m, data)
    }

    /// Checks that reading `bytes` gives no message at all and an error of `kind` whose text
    /// contains `says`.
    async fn refused(bytes: &[u8], limit: usize, kind: io::ErrorKind, says: &str) {
        let (got, err) = decode_all(bytes, limit).await;
        assert!(got.is_empty(), "{says}: messages handed on: {got:?}");
        let err = err.unwrap_or_else(|| panic!("{says}: no error"));
        assert_eq!(err.kind(), kind, "{says}: {err}");
        assert!(err.to_string().contains(says), "{says}: {err}");
    }

    #[tokio::test]
    async fn messages_and_snapshots_round_trip_at_any_frame_limit() -> io::Result<()> {
        for limit in [64, 65, 1000, 1 << 20] {
            let chunk = limit - 1;
            for len in [
                0,
                1,
                chunk - 1,
                chunk,
                chunk + 1,
                2 * chunk,
                2 * chunk + 1,
                5000,
            ] {
                let msgs = [heartbeat(1), snapshot(len), heartbeat(2), snapshot(len + 1)];
                let (bytes, chunks) = encode(&msgs, limit).await?;
                let want: Vec<usize> = msgs
                    .iter()
                    .map(|m| m.get_snapshot().get_data().len().div_ceil(chunk))
                    .collect();
                assert_eq!(chunks, want, "limit {limit}, {len} bytes");
                let (got, err) = decode_all(&bytes, limit).await;
                assert!(err.is_none(), "limit {limit}, {len} bytes: {err:?}");
                let back: Vec<&Message> = got.iter().map(|p| &p.message).collect();
                assert_eq!(back, msgs.iter().collect::<Vec<_>>());
                assert_eq!(got.iter().map(|p| p.chunks).collect::<Vec<_>>(), want);
            }
        }
        // A head has to fit a frame: a sender refuses a limit too small for it.
        let err = encode(&[snapshot(1000)], 8).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
        Ok(())
    }

    #[tokio::test]
    async fn an_ordinary_message_costs_one_byte_more_than_its_protobuf() -> io::Result<()> {
        let m = heartbeat(5);
        let (bytes, _) = encode(std::slice::from_ref(&m), MAX_FRAME).await?;
        let body = m.write_to_bytes().map_err(io::Error::other)?;
        assert_eq!(bytes, frame(body.len() as u32 + 1, FRAME_MESSAGE, &body));
        Ok(())
    }

    #[tokio::test]
    async fn a_stream_cut_anywhere_hands_on_only_whole_messages() -> io::Result<()> {
        let msgs = [heartbeat(1), snapshot(300), heartbeat(2)];
        let (bytes, _) = encode(&msgs, 64).await?;
        // Where each message's frames end.
        let mut ends = Vec::new();
        for i in 1..=msgs.len() {
            ends.push(encode(&msgs[..i], 64).await?.0.len());
        }
        for cut in 0..bytes.len() {
            let (got, err) = decode_all(&bytes[..cut], 64).await;
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(got.len(), whole, "cut at {cut}");
            for (p, m) in got.iter().zip(&msgs) {
                assert_eq!(&p.message, m, "cut at {cut}");
            }
            match err {
                None => assert!(cut == 0 || ends.contains(&cut), "cut at {cut}: no error"),
                Some(e) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}: {e}"),
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_snapshot_whose_bytes_changed_is_refused() -> io::Result<()> {
        let (bytes, _) = encode(&[snapshot(300)], 64).await?;
        let (head_frame, _) = encode(&[split(300).0], 64).await?;
        // The message without its data travels in one frame, its head's length less the fields.
        let data_from = head_frame.len() + HEAD_FIELDS + 5;
        for at in [data_from, data_from + 150, bytes.len() - 1] {
            let mut changed = bytes.clone();
            changed[at] ^= 0x20;
            refused(&changed, 64, io::ErrorKind::InvalidData, "CRC-32C").await;
        }
        // The announced checksum itself (after the length, the kind and the total).
        let mut changed = bytes.clone();
        changed[4 + 1 + 8] ^= 1;
        refused(&changed, 64, io::ErrorKind::InvalidData, "CRC-32C").await;
        Ok(())
    }

    #[tokio::test]
    async fn chunks_that_do_not_add_up_to_the_announced_length_are_refused() -> io::Result<()> {
        let (m, data) = split(100);
        let crc = crc32c::crc32c(&data);
        let chunk = |part: &[u8]| frame(part.len() as u32 + 1, FRAME_SNAPSHOT_CHUNK, part);
        // One byte short, then the end of the stream.
        let short = [head(100, crc, &m)?, chunk(&data[..99])].concat();
        refused(
            &short,
            1024,
            io::ErrorKind::UnexpectedEof,
            "after 99 of its 100",
        )
        .await;
        // Announced one byte less than the chunks carry.
        let long = [head(99, crc, &m)?, chunk(&data)].concat();
        refused(
            &long,
            1024,
            io::ErrorKind::InvalidData,
            "a chunk of 100 bytes where 99 were left",
        )
        .await;
        // Another message where a chunk is due.
        let (hb, _) = encode(&[heartbeat(1)], 1024).await?;
        let interleaved = [head(100, crc, &m)?, chunk(&data[..50]), hb].concat();
        refused(
            &interleaved,
            1024,
            io::ErrorKind::InvalidData,
            "where a chunk was due",
        )
        .await;
        // An empty chunk (which would let a stream go on forever without progress).
        let empty = [head(100, crc, &m)?, frame(1, FRAME_SNAPSHOT_CHUNK, &[])].concat();
        refused(&empty, 1024, io::ErrorKind::InvalidData, "an empty chunk").await;
        Ok(())
    }

    #[tokio::test]
    async fn malformed_frames_and_heads_are_refused() -> io::Result<()> {
        use io::ErrorKind::{InvalidData, UnexpectedEof};
        let (m, data) = split(10);
        let crc = crc32c::crc32c(&data);
        let with_data = snapshot(10);
        let cases: Vec<(Vec<u8>, io::ErrorKind, &str)> = vec![
            (
                frame(4, FRAME_SNAPSHOT_CHUNK, b"abc"),
                InvalidData,
                "no snapshot head before it",
            ),
            (
                head(MAX_SNAPSHOT + 1, 0, &m)?,
                InvalidData,
                "over the 68719476736-byte limit",
            ),
            (
                head(u64::MAX, 0, &m)?,
                InvalidData,
                "over the 68719476736-byte limit",
            ),
            (
                0u32.to_be_bytes().to_vec(),
                InvalidData,
                "an empty peer frame",
            ),
            (frame(2, 9, b"x"), InvalidData, "unknown kind 9"),
            (
                frame(2000, FRAME_MESSAGE, b""),
                InvalidData,
                "larger than the 1024-byte limit",
            ),
            (
                frame(5, FRAME_SNAPSHOT_HEAD, b"abcd"),
                InvalidData,
                "short of its 12 bytes",
            ),
            (
                frame(5, FRAME_MESSAGE, &[0xff; 4]),
                InvalidData,
                "bad raft message",
            ),
            // A head whose message carries its data inline, or carries no snapshot at all.
            (head(0, 0, &with_data)?, InvalidData, "data of its own"),
            (
                head(10, crc, &heartbeat(1))?,
                InvalidData,
                "holds no snapshot",
            ),
            // Cut inside a frame's length, and inside its body.
            (vec![0, 0], UnexpectedEof, ""),
            (frame(100, FRAME_MESSAGE, b"abc"), UnexpectedEof, ""),
        ];
        for (bytes, kind, says) in cases {
            refused(&bytes, 1024, kind, says).await;
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_broken_stream_leaves_the_next_one_whole() -> io::Result<()> {
        let m = snapshot(500);
        let (bytes, _) = encode(std::slice::from_ref(&m), 100).await?;
        let mut buf = Vec::new();
        let mut cut = &bytes[..bytes.len() / 2];
        assert!(read_peer_message(&mut cut, &mut buf, 100, |_, _| true)
            .await
            .is_err());
        // A new connection, the same scratch buffer.
        let mut whole = &bytes[..];
        let got = read_peer_message(&mut whole, &mut buf, 100, |_, _| true).await?;
        assert_eq!(got.map(|p| p.message), Some(m));
        Ok(())
    }

    /// A message larger than a frame (a `MsgAppend` of large entries under a small limit) goes
    /// as a message head and chunks and reads back whole; it once could not be sent at all, and
    /// the link dropped the connection and raft sent it again, for ever (found by a review).
    #[tokio::test]
    async fn a_message_larger_than_a_frame_travels_in_chunks() -> io::Result<()> {
        let mut m = heartbeat(4);
        m.set_msg_type(MessageType::MsgAppend);
        let mut e = raft::eraftpb::Entry::default();
        (e.index, e.term) = (5, 4);
        e.data = vec![0xab; 20_000].into();
        m.mut_entries().push(e);
        let (bytes, chunks) = encode(&[m.clone(), heartbeat(4)], MIN_PEER_FRAME).await?;
        assert!(chunks[0] >= 5, "{chunks:?}");
        let (got, err) = decode_all(&bytes, MIN_PEER_FRAME).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got.len(), 2);
        assert_eq!((&got[0].message, got[0].chunks), (&m, chunks[0]));
        assert_eq!(got[1].message, heartbeat(4));
        Ok(())
    }

    /// A head from a sender the reader does not accept (a stranger, or not addressed to it) is
    /// refused as soon as it is read, before any chunk: given the head alone, the reader fails
    /// on the sender, not on the missing data. A snapshot stream's data was once all taken in
    /// (its announced length reserved) before the sender was checked (found by a review).
    #[tokio::test]
    async fn a_strangers_head_is_refused_before_its_chunks() -> io::Result<()> {
        let mut stranger = snapshot(50_000);
        stranger.from = 99;
        let mut big = heartbeat(4);
        big.from = 99;
        big.set_msg_type(MessageType::MsgAppend);
        let mut e = raft::eraftpb::Entry::default();
        (e.index, e.term) = (5, 4);
        e.data = vec![1; 20_000].into();
        big.mut_entries().push(e);
        for m in [stranger, big] {
            let (bytes, _) = encode(&[m], MIN_PEER_FRAME).await?;
            let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            let mut head_only = &bytes[..4 + len];
            let mut buf = Vec::new();
            let accept = |from: u64, to: u64| from != 99 && to == 2;
            let err = read_peer_message(&mut head_only, &mut buf, MIN_PEER_FRAME, accept)
                .await
                .expect_err("a stranger's head");
            assert!(err.to_string().contains("not a peer's message"), "{err}");
        }
        Ok(())
    }
}
