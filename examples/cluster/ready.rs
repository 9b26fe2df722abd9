//! The raft-rs 0.7 `Ready` handling of one node on `DiskStorage`, written once for the cluster
//! example, `tests/cluster.rs` and `tests/snapshot_builder.rs` (which include this file).
//!
//! [`handle_ready`] owns what every node does the same way: the order of sends, saves and
//! applies, the saves themselves, conf changes (applied to raft, stored with `set_conf_state`),
//! and the checkpoint (`MetaInfo::CheckpointIndex`, kept at the applied index). What differs
//! between them, their state machine, is an [`Apply`]; the messages go to the caller's queue.

use raft::prelude::*;
use raft::RawNode;
use raftwal::{DiskStorage, MetaInfo};

/// A node's state machine, as the Ready handling sees it.
pub trait Apply {
    /// The error of the node's loop; the Ready handling's own failures arrive as messages.
    type Error: From<String>;

    /// Replaces the state machine with a snapshot raft handed over, once it is saved. The
    /// checkpoint moves to the snapshot's index after this returns.
    fn install(&mut self, snapshot: &Snapshot) -> Result<(), Self::Error>;

    /// Applies one committed entry, in log order. A conf change is applied to raft and stored
    /// before this is called, and `conf` is the conf state it produced (`None` for other
    /// entries).
    fn apply(
        &mut self,
        raw: &RawNode<DiskStorage>,
        entry: Entry,
        conf: Option<&ConfState>,
    ) -> Result<(), Self::Error>;
}

/// Handles one Ready of `raw`, if it has one, the sync way (`sync_writes` makes each save
/// durable): the messages a leader may send before its log is persisted go to `out` at once;
/// snapshot, entries and hard state are persisted with one `save` (snapshot first, hard state
/// last); the snapshot is installed and the committed entries applied; the messages that must
/// wait for persistence (votes, append responses) go to `out`; then `advance`, whose light
/// ready's commit index is saved, its messages sent and its entries applied; `advance_apply`.
///
/// Returns `None` if there was no Ready, else the number of saves it made (0 to 2).
pub fn handle_ready<A: Apply>(
    raw: &mut RawNode<DiskStorage>,
    app: &mut A,
    out: &mut impl Extend<Message>,
) -> Result<Option<u64>, A::Error> {
    if !raw.has_ready() {
        return Ok(None);
    }
    let mut saves = 0;
    let mut rd = raw.ready();
    out.extend(rd.take_messages());
    if !rd.snapshot().is_empty() || !rd.entries().is_empty() || rd.hs().is_some() {
        let hs = rd.hs().cloned().unwrap_or_default();
        raw.store()
            .save(&hs, rd.entries(), rd.snapshot())
            .map_err(|e| format!("save: {e}"))?;
        saves += 1;
    }
    if !rd.snapshot().is_empty() {
        app.install(rd.snapshot())?;
        let index = rd.snapshot().get_metadata().index;
        raw.store().set_uint(MetaInfo::CheckpointIndex, index);
    }
    apply_committed(raw, app, rd.take_committed_entries())?;
    out.extend(rd.take_persisted_messages());
    let mut light = raw.advance(rd);
    if light.commit_index().is_some() {
        let hs = raw.raft.hard_state();
        raw.store()
            .save(&hs, &[], &Snapshot::default())
            .map_err(|e| format!("save(commit): {e}"))?;
        saves += 1;
    }
    out.extend(light.take_messages());
    apply_committed(raw, app, light.take_committed_entries())?;
    raw.advance_apply();
    Ok(Some(saves))
}

/// Applies committed entries in order, conf changes to raft and the store first, then records
/// the last one's index as the checkpoint.
fn apply_committed<A: Apply>(
    raw: &mut RawNode<DiskStorage>,
    app: &mut A,
    entries: Vec<Entry>,
) -> Result<(), A::Error> {
    let Some(last) = entries.last().map(|e| e.index) else {
        return Ok(());
    };
    for e in entries {
        let conf = match e.get_entry_type() {
            EntryType::EntryNormal => None,
            EntryType::EntryConfChange => Some(raw.apply_conf_change(&decode::<ConfChange>(&e)?)),
            EntryType::EntryConfChangeV2 => {
                Some(raw.apply_conf_change(&decode::<ConfChangeV2>(&e)?))
            }
        };
        let conf = conf
            .transpose()
            .map_err(|e| format!("apply_conf_change: {e}"))?;
        if let Some(cs) = &conf {
            raw.store()
                .set_conf_state(cs)
                .map_err(|e| format!("set_conf_state: {e}"))?;
        }
        app.apply(raw, e, conf.as_ref())?;
    }
    raw.store().set_uint(MetaInfo::CheckpointIndex, last);
    Ok(())
}

/// Decodes a conf change entry's data (raft-rs encodes it with rust-protobuf 2).
fn decode<M: protobuf::Message>(e: &Entry) -> Result<M, String> {
    M::parse_from_bytes(&e.data).map_err(|err| format!("decode conf change: {err}"))
}
