//! The replicated state machine: an ordered map of versioned values, the client sessions that
//! make retried writes exactly-once, and the watches fed by every applied change.
//!
//! It owns applying commands in index order and its snapshot encoding (streamed out while the
//! engine writes it, streamed back in on restart or from a leader). It never touches raft,
//! storage or sockets: watch events go into channels, and a closed channel drops its watch.
//!
//! Snapshot encoding, all integers little-endian:
//!
//! ```text
//! "RWKVSM02" | applied u64 | sessions u64 | sessions x (client u64, seq u64, outcome)
//!            | members u64 | members x (id u64, addr_len u32, addr)
//!            | items u64 | items x (key_len u32, key, value_len u32, value, version u64)
//! outcome = 0u8, version u64 | 1u8, expected u64, current u64, key_len u32, key
//! ```

use std::collections::BTreeMap;
use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use crate::wire::{Item, Response, Session, WatchEvent};

const SNAPSHOT_MAGIC: &[u8; 8] = b"RWKVSM02";
/// Largest key or value (or any other string field) the state holds: a write over it is refused
/// when received (`Op::check_size`), a snapshot never encodes one, and decoding refuses to
/// declare one (a damaged length must not allocate wildly). One constant for all three, so a
/// state that was accepted is always one its snapshot can restore.
pub const MAX_FIELD: usize = 64 << 20;

/// A write, as proposed and stored in the raft log (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The node that proposed it, which answers the client, and the proposal's number in the
    /// proposing process. Numbers restart at 1 in every process, so they name a proposal only
    /// together with the entry's place in the log (see `node::Proposal`).
    pub origin: u64,
    pub req: u64,
    pub session: Option<Session>,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        value: String,
        expected: Option<u64>,
    },
    Delete {
        key: String,
        expected: Option<u64>,
    },
}

impl Op {
    /// Refuses a key or value the state could not snapshot and restore (over [`MAX_FIELD`]).
    pub fn check_size(&self) -> Result<(), String> {
        match self {
            Op::Put { key, value, .. } => check_write_size(key, Some(value)),
            Op::Delete { key, .. } => check_write_size(key, None),
        }
    }
}

/// Refuses a write whose key or value is over [`MAX_FIELD`]. Every string a write stores — its
/// key, its value, and the key a failed compare-and-swap keeps in its session's outcome — is
/// one of these.
pub fn check_write_size(key: &str, value: Option<&str>) -> Result<(), String> {
    for (what, s) in [("key", Some(key)), ("value", value)] {
        if let Some(s) = s.filter(|s| s.len() > MAX_FIELD) {
            return Err(format!(
                "the {what} is {} bytes, over the {MAX_FIELD}-byte limit on a key or value; nothing was written",
                s.len()
            ));
        }
    }
    Ok(())
}

/// What applying a write did; kept per session so a retry gets the same answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Written {
        version: u64,
    },
    CasFailed {
        key: String,
        expected: u64,
        current: u64,
    },
}

impl Outcome {
    pub fn response(&self) -> Response {
        match self {
            Outcome::Written { version } => Response::Written { version: *version },
            Outcome::CasFailed {
                key,
                expected,
                current,
            } => Response::CasFailed {
                key: key.clone(),
                expected: *expected,
                current: *current,
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Value {
    value: String,
    version: u64,
}

struct Watcher {
    prefix: String,
    tx: UnboundedSender<WatchEvent>,
}

#[derive(Default)]
pub struct StateMachine {
    /// Index of the last entry applied (or of the snapshot it was restored from).
    pub applied: u64,
    map: BTreeMap<String, Value>,
    /// client -> (last applied seq, its outcome)
    sessions: BTreeMap<u64, (u64, Outcome)>,
    /// Addresses of the nodes added by conf changes (id -> `host:port`), so that every
    /// replica, and a node restored from a snapshot, knows where its peers listen.
    members: BTreeMap<u64, String>,
    watchers: Vec<Watcher>,
}

impl StateMachine {
    /// The sessions, for comparing two states.
    #[allow(dead_code)] // used by tests/kv.rs
    pub fn sessions(&self) -> Vec<(u64, u64)> {
        self.sessions.iter().map(|(c, (s, _))| (*c, *s)).collect()
    }

    pub fn get(&self, key: &str) -> Option<Item> {
        self.map.get(key).map(|v| Item {
            key: key.to_string(),
            value: v.value.clone(),
            version: v.version,
        })
    }

    pub fn list(&self, prefix: &str) -> Vec<Item> {
        self.map
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| Item {
                key: k.clone(),
                value: v.value.clone(),
                version: v.version,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// A copy of the replicated data (not the watches), for a snapshot written while this
    /// one keeps applying.
    pub fn snapshot_copy(&self) -> StateMachine {
        StateMachine {
            applied: self.applied,
            map: self.map.clone(),
            sessions: self.sessions.clone(),
            members: self.members.clone(),
            watchers: Vec::new(),
        }
    }

    /// Records where node `id` listens (from an applied conf change adding it).
    pub fn add_member(&mut self, id: u64, addr: String) {
        self.members.insert(id, addr);
    }

    /// Forgets node `id` (a conf change removed it).
    pub fn remove_member(&mut self, id: u64) {
        self.members.remove(&id);
    }

    pub fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }

    /// Registers a watch; it sees every change applied after the returned index.
    pub fn watch(&mut self, prefix: String, tx: UnboundedSender<WatchEvent>) -> u64 {
        self.watchers.push(Watcher { prefix, tx });
        self.applied
    }

    /// An entry that carries no command (a new leader's empty entry, a conf change).
    pub fn apply_other(&mut self, index: u64) {
        self.applied = index;
    }

    /// Applies `cmd` at `index` (which must follow `applied`).
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Outcome {
        self.applied = index;
        if let Some(s) = cmd.session {
            if let Some((seq, outcome)) = self.sessions.get(&s.client) {
                if s.seq <= *seq {
                    // A retry of a write already applied (or older): answer as the first time.
                    return outcome.clone();
                }
            }
        }
        let outcome = match &cmd.op {
            Op::Put {
                key,
                value,
                expected,
            } => match self.check(key, *expected) {
                Err(o) => o,
                Ok(_) => {
                    self.map.insert(
                        key.clone(),
                        Value {
                            value: value.clone(),
                            version: index,
                        },
                    );
                    self.notify(key, Some(value), index);
                    Outcome::Written { version: index }
                }
            },
            Op::Delete { key, expected } => match self.check(key, *expected) {
                Err(o) => o,
                Ok(current) => {
                    if current > 0 {
                        self.map.remove(key);
                        self.notify(key, None, index);
                    }
                    Outcome::Written { version: index }
                }
            },
        };
        if let Some(s) = cmd.session {
            self.sessions.insert(s.client, (s.seq, outcome.clone()));
        }
        outcome
    }

    /// The key's current version (0 when absent), or the failed outcome.
    fn check(&self, key: &str, expected: Option<u64>) -> Result<u64, Outcome> {
        let current = self.map.get(key).map_or(0, |v| v.version);
        match expected {
            Some(e) if e != current => Err(Outcome::CasFailed {
                key: key.to_string(),
                expected: e,
                current,
            }),
            _ => Ok(current),
        }
    }

    fn notify(&mut self, key: &str, value: Option<&String>, version: u64) {
        if self.watchers.is_empty() {
            return;
        }
        self.watchers.retain(|w| {
            if !key.starts_with(&w.prefix) {
                return !w.tx.is_closed();
            }
            w.tx.send(WatchEvent {
                key: key.to_string(),
                value: value.cloned(),
                version,
            })
            .is_ok()
        });
    }

    /// Replaces the data with a snapshot's; watches stay and see the difference as changes.
    pub fn replace(&mut self, new: StateMachine) {
        let old = std::mem::replace(&mut self.map, new.map);
        self.sessions = new.sessions;
        self.members = new.members;
        self.applied = new.applied;
        if self.watchers.is_empty() {
            return;
        }
        let mut changes = Vec::new();
        for (k, v) in &self.map {
            if old.get(k) != Some(v) {
                changes.push((k.clone(), Some(v.value.clone()), v.version));
            }
        }
        for k in old.keys() {
            if !self.map.contains_key(k) {
                changes.push((k.clone(), None, self.applied));
            }
        }
        for (k, v, version) in changes {
            self.notify(&k, v.as_ref(), version);
        }
    }

    /// The state as snapshot bytes, produced as they are read: the map is never copied whole.
    pub fn snapshot_stream(&self) -> SnapshotStream<'_> {
        let mut buf = Vec::with_capacity(64 << 10);
        let mut failed = None;
        buf.extend_from_slice(SNAPSHOT_MAGIC);
        buf.extend_from_slice(&self.applied.to_le_bytes());
        buf.extend_from_slice(&(self.sessions.len() as u64).to_le_bytes());
        for (client, (seq, outcome)) in &self.sessions {
            buf.extend_from_slice(&client.to_le_bytes());
            buf.extend_from_slice(&seq.to_le_bytes());
            match outcome {
                Outcome::Written { version } => {
                    buf.push(0);
                    buf.extend_from_slice(&version.to_le_bytes());
                }
                Outcome::CasFailed {
                    key,
                    expected,
                    current,
                } => {
                    buf.push(1);
                    buf.extend_from_slice(&expected.to_le_bytes());
                    buf.extend_from_slice(&current.to_le_bytes());
                    if let Err(e) = put_str(&mut buf, key) {
                        failed.get_or_insert(e.to_string());
                    }
                }
            }
        }
        buf.extend_from_slice(&(self.members.len() as u64).to_le_bytes());
        for (id, addr) in &self.members {
            buf.extend_from_slice(&id.to_le_bytes());
            if let Err(e) = put_str(&mut buf, addr) {
                failed.get_or_insert(e.to_string());
            }
        }
        buf.extend_from_slice(&(self.map.len() as u64).to_le_bytes());
        SnapshotStream {
            buf,
            pos: 0,
            items: self.map.iter(),
            failed,
        }
    }

    /// Reads a state written by [`StateMachine::snapshot_stream`].
    pub fn decode<R: Read>(r: R) -> Result<StateMachine, String> {
        let mut r = io::BufReader::with_capacity(64 << 10, r);
        let bad = |what: &str, e: io::Error| format!("kv snapshot: reading {what}: {e}");
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(|e| bad("magic", e))?;
        if &magic != SNAPSHOT_MAGIC {
            return Err(format!(
                "kv snapshot: unknown format {:?} (want {:?})",
                String::from_utf8_lossy(&magic),
                String::from_utf8_lossy(SNAPSHOT_MAGIC)
            ));
        }
        let mut sm = StateMachine {
            applied: get_u64(&mut r).map_err(|e| bad("applied index", e))?,
            ..Default::default()
        };
        let sessions = get_u64(&mut r).map_err(|e| bad("session count", e))?;
        for i in 0..sessions {
            let what = format!("session {i}");
            let client = get_u64(&mut r).map_err(|e| bad(&what, e))?;
            let seq = get_u64(&mut r).map_err(|e| bad(&what, e))?;
            let mut kind = [0u8];
            r.read_exact(&mut kind).map_err(|e| bad(&what, e))?;
            let outcome = match kind[0] {
                0 => Outcome::Written {
                    version: get_u64(&mut r).map_err(|e| bad(&what, e))?,
                },
                1 => {
                    let expected = get_u64(&mut r).map_err(|e| bad(&what, e))?;
                    let current = get_u64(&mut r).map_err(|e| bad(&what, e))?;
                    let key = get_str(&mut r).map_err(|e| bad(&what, e))?;
                    Outcome::CasFailed {
                        key,
                        expected,
                        current,
                    }
                }
                k => return Err(format!("kv snapshot: {what} has unknown outcome kind {k}")),
            };
            sm.sessions.insert(client, (seq, outcome));
        }
        let members = get_u64(&mut r).map_err(|e| bad("member count", e))?;
        for i in 0..members {
            let what = format!("member {i}");
            let id = get_u64(&mut r).map_err(|e| bad(&what, e))?;
            let addr = get_str(&mut r).map_err(|e| bad(&what, e))?;
            sm.members.insert(id, addr);
        }
        let items = get_u64(&mut r).map_err(|e| bad("item count", e))?;
        for i in 0..items {
            let what = format!("item {i}");
            let key = get_str(&mut r).map_err(|e| bad(&what, e))?;
            let value = get_str(&mut r).map_err(|e| bad(&what, e))?;
            let version = get_u64(&mut r).map_err(|e| bad(&what, e))?;
            sm.map.insert(key, Value { value, version });
        }
        let mut probe = [0u8];
        match r.read(&mut probe) {
            Ok(0) => Ok(sm),
            Ok(_) => Err("kv snapshot: bytes after the last item".to_string()),
            Err(e) => Err(bad("the end", e)),
        }
    }

    /// A digest of the data two replicas must agree on: (applied index, hash of the map).
    #[allow(dead_code)] // used by tests/kv.rs
    pub fn fingerprint(&self) -> (u64, u64) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (k, v) in &self.map {
            k.hash(&mut h);
            v.value.hash(&mut h);
            v.version.hash(&mut h);
        }
        (self.applied, h.finish())
    }
}

/// Appends a string field; refuses one the decoder would refuse (over [`MAX_FIELD`]).
fn put_str(buf: &mut Vec<u8>, s: &str) -> io::Result<()> {
    if s.len() > MAX_FIELD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a field of {} bytes is over the {MAX_FIELD}-byte limit: no snapshot could restore it",
                s.len()
            ),
        ));
    }
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
    Ok(())
}

fn get_u64<R: Read>(r: &mut R) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn get_str<R: Read>(r: &mut R) -> io::Result<String> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    let len = u32::from_le_bytes(b) as usize;
    if len > MAX_FIELD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a field of {len} bytes is over the {MAX_FIELD}-byte limit"),
        ));
    }
    let mut s = vec![0u8; len];
    r.read_exact(&mut s)?;
    String::from_utf8(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// [`Read`] over a state machine's snapshot encoding, produced item by item.
pub struct SnapshotStream<'a> {
    buf: Vec<u8>,
    pos: usize,
    items: std::collections::btree_map::Iter<'a, String, Value>,
    /// A field the decoder would refuse: the stream fails rather than end in a snapshot that
    /// cannot be restored.
    failed: Option<String>,
}

impl Read for SnapshotStream<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.clone()));
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            for (k, v) in self.items.by_ref() {
                put_str(&mut self.buf, k)?;
                put_str(&mut self.buf, &v.value)?;
                self.buf.extend_from_slice(&v.version.to_le_bytes());
                if self.buf.len() >= 64 << 10 {
                    break;
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
