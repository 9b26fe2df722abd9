//! One group's replicated state machine (an in-memory key-value map of puts) and the proposal
//! payload: `id u64 LE | value`, the key being the proposal id.
//!
//! Owns: the payload format, the deterministic value of a proposal id (so a check can recompute
//! what every acknowledged proposal wrote), and the state machine's snapshot encoding. Must
//! never: look at raft state; it sees committed entries only, in index order.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft::prelude::{Entry, EntryType};

/// The value proposal `id` writes: 64..=1024 pseudo-random bytes, the same for the same id.
pub fn value_of(id: u64) -> Vec<u8> {
    let mut s = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let len = 64 + (splitmix(&mut s) % 961) as usize;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix(&mut s).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The entry data of proposal `id`.
pub fn payload(id: u64) -> Vec<u8> {
    let mut out = id.to_le_bytes().to_vec();
    out.extend_from_slice(&value_of(id));
    out
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateMachine {
    /// Index of the last entry applied (or of the snapshot installed).
    pub applied: u64,
    /// Proposal id -> value.
    pub kv: BTreeMap<u64, Bytes>,
    /// Puts applied, a retried proposal applied twice counting twice.
    pub puts: u64,
}

impl StateMachine {
    /// Applies committed entry `e`, which must be the next one. Returns the proposal id of a
    /// put.
    pub fn apply(&mut self, e: &Entry) -> Result<Option<u64>, String> {
        if e.index != self.applied + 1 {
            return Err(format!(
                "entry {} applied after {}: entries must be applied in order, once",
                e.index, self.applied
            ));
        }
        self.applied = e.index;
        if e.get_entry_type() != EntryType::EntryNormal {
            return Err(format!(
                "entry {} is a conf change: the example has fixed membership",
                e.index
            ));
        }
        if e.data.is_empty() {
            return Ok(None); // a new leader's empty entry
        }
        if e.data.len() < 8 {
            return Err(format!(
                "entry {}: payload of {} bytes",
                e.index,
                e.data.len()
            ));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&e.data[..8]);
        let id = u64::from_le_bytes(id);
        self.kv.insert(id, e.data.slice(8..));
        self.puts += 1;
        Ok(Some(id))
    }

    /// Snapshot payload: applied u64, puts u64, count u64, then (id u64, len u32, value) each.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        for v in [self.applied, self.puts, self.kv.len() as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (id, v) in &self.kv {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        out.into()
    }

    /// The inverse of [`StateMachine::encode`]; a truncated payload or trailing bytes are an
    /// error.
    pub fn decode(b: &[u8]) -> Result<StateMachine, String> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
            if b.len() < n {
                return Err(format!(
                    "snapshot data truncated: need {n}, have {}",
                    b.len()
                ));
            }
            let (h, t) = b.split_at(n);
            *b = t;
            Ok(h)
        }
        fn int(b: &mut &[u8], n: usize) -> Result<u64, String> {
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(take(b, n)?);
            Ok(u64::from_le_bytes(a))
        }
        let mut b = b;
        let applied = int(&mut b, 8)?;
        let puts = int(&mut b, 8)?;
        let n = int(&mut b, 8)?;
        let mut kv = BTreeMap::new();
        for _ in 0..n {
            let id = int(&mut b, 8)?;
            let len = int(&mut b, 4)? as usize;
            kv.insert(id, Bytes::copy_from_slice(take(&mut b, len)?));
        }
        if !b.is_empty() {
            return Err(format!("{} trailing bytes in snapshot data", b.len()));
        }
        Ok(StateMachine { applied, kv, puts })
    }
}
