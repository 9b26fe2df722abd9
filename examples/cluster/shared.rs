//! What the cluster example shares with `tests/cluster.rs` (which drives the same kind of cluster
//! deterministically): the replicated state machine (every applied data entry, in order, with its
//! index) and its snapshot encoding, the raft-rs `Config` the nodes use, and how a sender hears
//! of a message's fate. The Ready handling they share is in `ready.rs`.

use bytes::Bytes;
use raft::{Config, RawNode, SnapshotStatus, Storage};

/// The raft-rs configuration of node `id`, resuming after `applied`.
pub fn config(id: u64, applied: u64) -> Config {
    Config {
        id,
        election_tick: 10,
        heartbeat_tick: 3,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        applied,
        ..Default::default()
    }
}

/// Tells the sender of a message to `to` what became of it: an undelivered message reports `to`
/// unreachable, and a snapshot message reports its status (raft-rs waits for it).
pub fn report_delivery<S: Storage>(
    sender: &mut RawNode<S>,
    to: u64,
    delivered: bool,
    snapshot: bool,
) {
    if !delivered {
        sender.report_unreachable(to);
    }
    if snapshot {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        sender.report_snapshot(to, status);
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateMachine {
    /// Index of the last entry applied (or of the snapshot installed).
    pub applied: u64,
    /// Every applied non-empty normal entry: (index, data).
    pub data: Vec<(u64, Bytes)>,
}

impl StateMachine {
    /// Snapshot payload: applied u64, count u64, then (index u64, len u32, bytes) per entry.
    #[allow(dead_code)] // the example installs snapshots but never takes one
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(&self.applied.to_le_bytes());
        out.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        for (i, d) in &self.data {
            out.extend_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&(d.len() as u32).to_le_bytes());
            out.extend_from_slice(d);
        }
        out.into()
    }

    /// The inverse of [`StateMachine::encode`]; a truncated payload or trailing bytes are an
    /// error.
    pub fn decode(b: &[u8]) -> Result<StateMachine, String> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
            if b.len() < n {
                return Err(format!(
                    "snapshot data truncated: need {n} bytes, have {}",
                    b.len()
                ));
            }
            let (h, t) = b.split_at(n);
            *b = t;
            Ok(h)
        }
        fn u64_of(b: &mut &[u8]) -> Result<u64, String> {
            let mut a = [0u8; 8];
            a.copy_from_slice(take(b, 8)?);
            Ok(u64::from_le_bytes(a))
        }
        let mut b = b;
        let applied = u64_of(&mut b)?;
        let n = u64_of(&mut b)?;
        let mut data = Vec::new();
        for _ in 0..n {
            let i = u64_of(&mut b)?;
            let mut len = [0u8; 4];
            len.copy_from_slice(take(&mut b, 4)?);
            let len = u32::from_le_bytes(len) as usize;
            data.push((i, Bytes::copy_from_slice(take(&mut b, len)?)));
        }
        if !b.is_empty() {
            return Err(format!("{} trailing bytes in snapshot data", b.len()));
        }
        Ok(StateMachine { applied, data })
    }
}
